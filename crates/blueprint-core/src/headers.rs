//! Parsers for the headers more than one layer reads.

use std::time::{Duration, SystemTime};

use http::HeaderValue;

/// How long `Retry-After` asks to wait, measured from `now` (the wall clock).
///
/// Accepts delta-seconds (`"120"`) and an HTTP-date (`"Wed, 21 Oct 2026 07:28:00 GMT"`);
/// a date in the past means "now" (`Duration::ZERO`). Anything else — empty, negative,
/// fractional, too large for a `u64`, not text — is `None`: treated as absent, never a panic.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use blueprint_core::parse_retry_after;
/// use http::HeaderValue;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("7"), now), Some(Duration::from_secs(7)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("-1"), now), None);
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn delta_seconds_and_dates() {
        let now = at(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        let parse = |s: &'static str| parse_retry_after(&HeaderValue::from_static(s), now);
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        for bad in ["", "-5", "1.5", "soon", "99999999999999999999999", "0x10"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_retry_after(&HeaderValue::from_bytes(b"\xff\xfe").unwrap(), now),
            None
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64), now in any::<u32>()) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let _ = parse_retry_after(&value, at(u64::from(now)));
            }
        }

        #[test]
        fn never_panics_on_date_like_text(s in "[A-Za-z]{3}, [0-9]{1,2} [A-Za-z]{3} [0-9]{1,5} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2} GMT", now in any::<u64>()) {
            if let Ok(value) = HeaderValue::from_str(&s) {
                let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(now % (1 << 40))).unwrap_or(SystemTime::UNIX_EPOCH);
                let _ = parse_retry_after(&value, now);
            }
        }

        #[test]
        fn delta_seconds_round_trip(n in any::<u64>()) {
            let value = HeaderValue::from_str(&n.to_string()).unwrap();
            prop_assert_eq!(parse_retry_after(&value, at(0)), Some(Duration::from_secs(n)));
        }
    }
}
