//! RFC 3339 timestamps, read and written with `chrono` (already in the build through
//! `oauth2`, so it adds no crate): strict RFC 3339 with offsets, as the store and the API
//! need, where `humantime` reads only UTC and `time` or `jiff` would add crates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};

/// The last second `format_rfc3339` writes: 9999-12-31T23:59:59Z.
const LAST_SECOND: u64 = 253_402_300_799;

/// Reads an RFC 3339 timestamp (`2025-06-01T12:00:00Z`, `2025-06-01T14:00:00.5+02:00`);
/// `None` for anything else, and for instants before 1970.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let time = DateTime::parse_from_rfc3339(text).ok()?;
    let secs = u64::try_from(time.timestamp()).ok()?;
    // A leap second (`:60`) has its nanoseconds past one second: it counts as the next.
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))?
        .checked_add(Duration::from_nanos(u64::from(
            time.timestamp_subsec_nanos(),
        )))
}

/// Writes `time` as RFC 3339 in UTC, to the second (`2025-06-01T12:00:00Z`); instants
/// before 1970 are written as 1970-01-01T00:00:00Z, after 9999 as the last second of 9999.
pub(crate) fn format_rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(LAST_SECOND);
    i64::try_from(secs)
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or(DateTime::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Option<u64> {
        parse_rfc3339(text).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    #[test]
    fn reads_utc_offsets_and_fractions() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(secs("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(secs("2024-02-29T14:34:56+02:00"), Some(1_709_210_096));
        assert_eq!(secs("2024-02-29T07:04:56-05:30"), Some(1_709_210_096));
        assert_eq!(secs("2024-02-29t12:34:56.999z"), Some(1_709_210_096));
        let t = parse_rfc3339("2024-02-29T12:34:56.25Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().subsec_millis(), 250);
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0200",
            "2024-01-01T00:00:00.Z",
            "1969-12-31T23:59:59Z",
            "tomorrow",
            "2024-01-01T00:00:00Z trailing",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn reads_a_leap_second_as_the_second_after() {
        assert_eq!(secs("2016-12-31T23:59:60Z"), Some(1_483_228_800));
    }

    #[test]
    fn writes_what_it_reads() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "2024-12-31T00:00:01Z",
            "2100-03-01T10:00:00Z",
        ] {
            assert_eq!(format_rfc3339(parse_rfc3339(text).unwrap()), text);
        }
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(LAST_SECOND * 2)),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_millis(1_709_210_096_999)),
            "2024-02-29T12:34:56Z"
        );
    }
}
