//! Pure functions that read rate-limit headers. None of them panics, whatever the server sent:
//! a value that is missing, not text, not a number, negative or too large for a `u64` is
//! treated as absent.
//!
//! Three families of headers are read, in this order of precedence (per field):
//!
//! 1. the configured names ([`HeaderConfig`]), by default `X-RateLimit-Limit`,
//!    `X-RateLimit-Remaining` and `X-RateLimit-Reset`, with the reset in the configured
//!    [`ResetFormat`];
//! 2. the IETF headers `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//!    (delta seconds);
//! 3. the structured IETF fields `RateLimit` (`"default";r=50;t=30`, or the older
//!    `limit=100, remaining=50, reset=30`) and `RateLimit-Policy` (`"default";q=100;w=60`).
//!
//! `Retry-After` (delta seconds or HTTP-date) is read on error responses.
//!
//! A reset in the past is ignored (it describes a window that is over); one further away
//! than [`HeaderConfig::max_reset`] is brought back to it, so that a server's typo cannot
//! hold requests for days.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use blueprint_core::RateLimit;
use http::header::{HeaderName, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::clock::WallClock;
use crate::memo::ResetMemo;

pub use blueprint_core::parse_retry_after;

/// How a server writes the instant its rate-limit window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetFormat {
    /// UNIX time in seconds (Intercom, GitHub): `1700000000`.
    EpochSeconds,
    /// UNIX time in milliseconds: `1700000000000`.
    EpochMillis,
    /// Seconds from now (the IETF headers): `30`.
    DeltaSeconds,
    /// Guessed from the size of the number: below 10⁹ it is delta seconds, below 10¹¹
    /// epoch seconds, above that epoch milliseconds. No API's window is 31 years long, and
    /// no epoch-seconds value is that small after 2001, so the guess is safe.
    Auto,
}

/// Which headers carry an API's rate limit and how its reset is written.
///
/// The IETF headers and `Retry-After` are always read as well, after the configured ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderConfig {
    limit: HeaderName,
    remaining: HeaderName,
    reset: HeaderName,
    format: ResetFormat,
    max_reset: Duration,
}

/// The furthest a reset or `Retry-After` is believed by default: one hour.
pub const DEFAULT_MAX_RESET: Duration = Duration::from_secs(3600);

static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static IETF_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static IETF_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static IETF_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static IETF_FIELD: HeaderName = HeaderName::from_static("ratelimit");
static IETF_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

impl HeaderConfig {
    /// Reads `limit`, `remaining` and `reset` under these names, the reset written as `format`.
    pub fn new(
        limit: HeaderName,
        remaining: HeaderName,
        reset: HeaderName,
        format: ResetFormat,
    ) -> Self {
        HeaderConfig {
            limit,
            remaining,
            reset,
            format,
            max_reset: DEFAULT_MAX_RESET,
        }
    }

    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` with the reset in `format`.
    pub fn x_ratelimit(format: ResetFormat) -> Self {
        Self::new(
            X_LIMIT.clone(),
            X_REMAINING.clone(),
            X_RESET.clone(),
            format,
        )
    }

    /// Intercom's headers: `X-RateLimit-*`, the reset in epoch seconds.
    pub fn intercom() -> Self {
        Self::x_ratelimit(ResetFormat::EpochSeconds)
    }

    /// The IETF headers only: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`
    /// (delta seconds), and the structured `RateLimit` / `RateLimit-Policy` fields.
    pub fn ietf() -> Self {
        Self::new(
            IETF_LIMIT.clone(),
            IETF_REMAINING.clone(),
            IETF_RESET.clone(),
            ResetFormat::DeltaSeconds,
        )
    }

    /// Believes a reset or `Retry-After` at most this far away; further ones are brought
    /// back to it. Default: [`DEFAULT_MAX_RESET`].
    #[must_use]
    pub fn max_reset(mut self, max: Duration) -> Self {
        self.max_reset = max;
        self
    }

    /// The header holding the limit per window.
    pub fn limit_header(&self) -> &HeaderName {
        &self.limit
    }

    /// The header holding what is left in the window.
    pub fn remaining_header(&self) -> &HeaderName {
        &self.remaining
    }

    /// The header holding when the window resets.
    pub fn reset_header(&self) -> &HeaderName {
        &self.reset
    }

    /// How the reset is written.
    pub fn reset_format(&self) -> ResetFormat {
        self.format
    }

    /// The furthest a reset is believed.
    pub fn max_reset_duration(&self) -> Duration {
        self.max_reset
    }
}

/// `X-RateLimit-*` with the reset format guessed ([`ResetFormat::Auto`]).
impl Default for HeaderConfig {
    fn default() -> Self {
        Self::x_ratelimit(ResetFormat::Auto)
    }
}

/// Everything the rate-limit headers of one response say, as the layer reads it, as a
/// [`RateLimit`] extension; `None` when they say nothing.
///
/// `wall_now` is the wall clock (for epoch resets and HTTP-dates) and `now` the tokio clock
/// the instants are expressed in; both are read at the same moment. `limited` is left
/// `false`: it depends on the status, not the headers (see [`parse_response`]).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use blueprint_ratelimit::parse::{parse_headers, HeaderConfig};
/// use http::HeaderMap;
/// use tokio::time::Instant;
///
/// let wall_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let now = Instant::now();
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-limit", "166".parse()?);
/// headers.insert("x-ratelimit-remaining", "12".parse()?);
/// headers.insert("x-ratelimit-reset", "1700000007".parse()?);
///
/// let limit = parse_headers(&headers, &HeaderConfig::intercom(), wall_now, now).unwrap();
/// assert_eq!(limit.limit, Some(166));
/// assert_eq!(limit.remaining, Some(12));
/// assert_eq!(limit.reset, Some(now + Duration::from_secs(7)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_headers(
    headers: &HeaderMap,
    config: &HeaderConfig,
    wall_now: SystemTime,
    now: Instant,
) -> Option<RateLimit> {
    Observation::read(headers, false, config, &Wall::fixed(wall_now), now).to_extension(false)
}

/// Like [`parse_headers`] for a whole response: reads `Retry-After` on error statuses and
/// sets `limited` for a 429. A 429 always yields a [`RateLimit`], even with no header.
pub fn parse_response(
    status: StatusCode,
    headers: &HeaderMap,
    config: &HeaderConfig,
    wall_now: SystemTime,
    now: Instant,
) -> Option<RateLimit> {
    let limited = status == StatusCode::TOO_MANY_REQUESTS;
    let wall = Wall::fixed(wall_now);
    Observation::read(headers, reads_retry_after(status), config, &wall, now).to_extension(limited)
}

/// The first value of each of `names` in `headers`, as `HeaderMap::get` gives it, found in
/// one pass over the headers instead of one hashed lookup per name: a response carries a
/// handful of headers, and comparing names (their lengths first) costs less than hashing
/// each of ours. The pass ends once every name is found.
fn first_values<'h, const N: usize>(
    headers: &'h HeaderMap,
    names: [&HeaderName; N],
) -> [Option<&'h HeaderValue>; N] {
    let mut found = [None; N];
    let mut missing = N;
    for (name, value) in headers {
        for (slot, wanted) in found.iter_mut().zip(names) {
            if slot.is_none() && name == wanted {
                *slot = Some(value);
                missing -= 1;
            }
        }
        if missing == 0 {
            break;
        }
    }
    found
}

/// `Retry-After` means "come back later" on errors; on a 3xx it is about redirects.
pub(crate) fn reads_retry_after(status: StatusCode) -> bool {
    status.is_client_error() || status.is_server_error()
}

/// A count (`X-RateLimit-Limit`, `-Remaining`): a non-negative integer. Of a list
/// (`100, 100;w=60`) the first member counts, without its parameters.
///
/// ```
/// use blueprint_ratelimit::parse::parse_count;
/// use http::HeaderValue;
///
/// assert_eq!(parse_count(&HeaderValue::from_static(" 42 ")), Some(42));
/// assert_eq!(parse_count(&HeaderValue::from_static("100;w=60, 1000;w=3600")), Some(100));
/// assert_eq!(parse_count(&HeaderValue::from_static("-1")), None);
/// ```
pub fn parse_count(value: &HeaderValue) -> Option<u64> {
    // The common case, digits and nothing else, without searching for separators.
    if let Some(n) = digits(value.as_bytes()) {
        return Some(n);
    }
    let text = value.to_str().ok()?;
    let first = text.split([',', ';']).next()?;
    parse_uint(first.trim())
}

/// How long until a reset written as `format`, from `wall_now`; `None` when absent,
/// garbage, or not in the future. Not capped (the layer caps with
/// [`HeaderConfig::max_reset`]).
///
/// Decimal values are accepted (`1700000000.250`, `0.5`).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use blueprint_ratelimit::parse::{parse_reset, ResetFormat};
/// use http::HeaderValue;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let v = |s| HeaderValue::from_static(s);
/// assert_eq!(parse_reset(&v("1700000010"), ResetFormat::EpochSeconds, now), Some(Duration::from_secs(10)));
/// assert_eq!(parse_reset(&v("1700000000500"), ResetFormat::EpochMillis, now), Some(Duration::from_millis(500)));
/// assert_eq!(parse_reset(&v("30"), ResetFormat::DeltaSeconds, now), Some(Duration::from_secs(30)));
/// assert_eq!(parse_reset(&v("1699999990"), ResetFormat::EpochSeconds, now), None); // past
/// ```
pub fn parse_reset(
    value: &HeaderValue,
    format: ResetFormat,
    wall_now: SystemTime,
) -> Option<Duration> {
    match reset_in(value, format, &Wall::fixed(wall_now))?.0 {
        Until::Future(d) => Some(d),
        Until::Past(_) => None,
    }
}

/// When a reset falls, as read, before it is turned into an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    Future(Duration),
    /// This long ago (zero: now).
    Past(Duration),
}

/// How precisely a reset was given: an epoch value names the same instant on every response
/// of a window, a delta in whole seconds drifts by up to a second from one to the next.
const EPOCH_PRECISION: Duration = Duration::from_millis(50);
const DELTA_PRECISION: Duration = Duration::from_millis(1050);

fn reset_in(
    value: &HeaderValue,
    format: ResetFormat,
    wall: &Wall<'_>,
) -> Option<(Until, Duration)> {
    // The common case, an integer, without checking the value is text and trimming it.
    let number = match digits(value.as_bytes()) {
        Some(int) => Decimal { int, nanos: 0 },
        None => Decimal::parse(value.to_str().ok()?.trim())?,
    };
    let format = match format {
        ResetFormat::Auto if number.int < 1_000_000_000 => ResetFormat::DeltaSeconds,
        ResetFormat::Auto if number.int < 100_000_000_000 => ResetFormat::EpochSeconds,
        ResetFormat::Auto => ResetFormat::EpochMillis,
        other => other,
    };
    let (at_epoch, delta) = match format {
        ResetFormat::DeltaSeconds => (None, number.seconds()),
        ResetFormat::EpochMillis => (Some(number.millis()?), Duration::ZERO),
        _ => (Some(number.seconds()), Duration::ZERO),
    };
    let Some(since_epoch) = at_epoch else {
        let until = if delta.is_zero() {
            Until::Past(Duration::ZERO)
        } else {
            Until::Future(delta)
        };
        return Some((until, DELTA_PRECISION));
    };
    // The answers of one window all write the same reset: its instant, once converted, is
    // kept, and the wall clock is not read again until the value changes.
    let memo = wall.memo.and_then(|(memo, now)| {
        let key = (number.nanos == 0)
            .then(|| ResetMemo::key(number.int, format == ResetFormat::EpochMillis))??;
        Some((memo, now, key))
    });
    if let Some((memo, now, key)) = memo {
        if let Some(at) = memo.get(key) {
            let until = match at.checked_duration_since(now) {
                Some(d) if !d.is_zero() => Until::Future(d),
                _ => Until::Past(now.saturating_duration_since(at)),
            };
            return Some((until, EPOCH_PRECISION));
        }
    }
    let at = SystemTime::UNIX_EPOCH.checked_add(since_epoch)?;
    let until = match at.duration_since(wall.now()) {
        Ok(d) if !d.is_zero() => Until::Future(d),
        Ok(_) => Until::Past(Duration::ZERO),
        Err(ago) => Until::Past(ago.duration()),
    };
    if let Some((memo, now, key)) = memo {
        let instant = match until {
            Until::Future(d) => now.checked_add(d),
            Until::Past(ago) => now.checked_sub(ago),
        };
        if let Some(instant) = instant {
            memo.set(key, instant);
        }
    }
    Some((until, EPOCH_PRECISION))
}

/// The wall-clock time for epoch resets and HTTP-dates, read at most once per answer and
/// only if a header needs it; with the layer's memo of the last epoch reset converted.
pub(crate) struct Wall<'a> {
    clock: Option<&'a dyn WallClock>,
    read: Cell<Option<SystemTime>>,
    /// The memo and the tokio clock's reading it is relative to.
    memo: Option<(&'a ResetMemo, Instant)>,
}

impl<'a> Wall<'a> {
    /// A wall clock that reads `now`.
    pub(crate) fn fixed(now: SystemTime) -> Self {
        Wall {
            clock: None,
            read: Cell::new(Some(now)),
            memo: None,
        }
    }

    /// `clock`, read when first needed; epoch resets go through `memo`, relative to `now`.
    pub(crate) fn clock(clock: &'a dyn WallClock, memo: &'a ResetMemo, now: Instant) -> Self {
        Wall {
            clock: Some(clock),
            read: Cell::new(None),
            memo: Some((memo, now)),
        }
    }

    fn now(&self) -> SystemTime {
        if let Some(now) = self.read.get() {
            return now;
        }
        // Only a clock has no reading yet (a fixed wall clock is made with one).
        let now = self.clock.map_or(SystemTime::UNIX_EPOCH, WallClock::now);
        self.read.set(Some(now));
        now
    }
}

/// A non-negative decimal number: an integer part and up to nine fractional digits.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    int: u64,
    /// The fraction of one unit, in billionths.
    nanos: u32,
}

impl Decimal {
    fn parse(text: &str) -> Option<Decimal> {
        // The common case, an integer (epoch seconds), without searching for the point.
        if let Some(int) = digits(text.as_bytes()) {
            return Some(Decimal { int, nanos: 0 });
        }
        let (int, frac) = match text.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (text, None),
        };
        let int = parse_uint(int)?;
        let mut nanos = 0u32;
        if let Some(frac) = frac {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let mut scale = 100_000_000u32;
            for digit in frac.bytes().take(9) {
                nanos += u32::from(digit - b'0') * scale;
                scale /= 10;
            }
        }
        Some(Decimal { int, nanos })
    }

    fn seconds(self) -> Duration {
        Duration::new(self.int, self.nanos)
    }

    fn millis(self) -> Option<Duration> {
        Duration::from_millis(self.int)
            .checked_add(Duration::from_nanos(u64::from(self.nanos / 1000)))
    }
}

/// The value of 1 to 19 ASCII digits (19 always fit in a `u64`), read in one pass; `None`
/// for anything else, which the callers' general paths handle.
#[inline]
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for b in bytes {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n = n * 10 + u64::from(digit);
    }
    Some(n)
}

/// Digits only: no sign, no spaces, no exponent; `None` past `u64::MAX`.
fn parse_uint(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod count_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_digit_fast_path_agrees_with_the_general_parse(n in any::<u64>(), pad in 0usize..3) {
            let text = format!("{}{n}", "0".repeat(pad));
            let value = HeaderValue::from_str(&text).unwrap();
            prop_assert_eq!(parse_count(&value), text.parse::<u64>().ok());
        }
    }

    proptest! {
        #[test]
        fn one_pass_finds_what_get_finds(
            entries in proptest::collection::vec((0usize..6, 0u32..1000), 0..12)
        ) {
            const NAMES: [&str; 6] = [
                "x-ratelimit-limit", "x-ratelimit-reset", "x-ratelimit-remaining",
                "content-type", "x-request-id", "date",
            ];
            let mut headers = HeaderMap::new();
            for (name, value) in &entries {
                headers.append(NAMES[*name], HeaderValue::from(*value));
            }
            let wanted: Vec<HeaderName> = NAMES[..3]
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect();
            let found = first_values(&headers, [&wanted[0], &wanted[1], &wanted[2], &wanted[0]]);
            for (slot, name) in found.iter().zip([&wanted[0], &wanted[1], &wanted[2], &wanted[0]]) {
                prop_assert_eq!(*slot, headers.get(name));
            }
        }
    }

    #[test]
    fn nineteen_digits_fit_and_more_fall_back() {
        let max19 = HeaderValue::from_static("9999999999999999999");
        assert_eq!(parse_count(&max19), Some(9_999_999_999_999_999_999));
        let too_big = HeaderValue::from_static("99999999999999999999");
        assert_eq!(parse_count(&too_big), None);
    }
}

/// What one response said, as the layer keeps it: like [`RateLimit`], but it remembers a
/// reset that was in the past (a late answer from a window that is over) and how precise
/// the reset was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Observation {
    pub(crate) limit: Option<u64>,
    pub(crate) remaining: Option<u64>,
    pub(crate) reset: Reset,
    pub(crate) retry_after: Option<Instant>,
    /// A reset or `Retry-After` further away than the cap, brought back to it: the longest
    /// wait the server asked for, as written.
    pub(crate) capped: Option<Duration>,
    /// Where the wait of a rate-limited answer comes from.
    pub(crate) wait_from: crate::WaitFrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Reset {
    #[default]
    Absent,
    /// The window the answer speaks of is already over, as written: it ended at `instant`
    /// (`None` if that is too long ago to name). A server seen to lag behind its own
    /// resets may still be in it.
    Past {
        instant: Option<Instant>,
        precision: Duration,
    },
    /// The window ends then; `precision` is how far two answers of one window may disagree.
    At {
        instant: Instant,
        precision: Duration,
    },
}

impl Observation {
    pub(crate) fn read(
        headers: &HeaderMap,
        retry_after: bool,
        config: &HeaderConfig,
        wall: &Wall<'_>,
        now: Instant,
    ) -> Observation {
        let mut seen = Observation::default();
        if headers.is_empty() {
            return seen;
        }
        let count = |name: &HeaderName| headers.get(name).and_then(parse_count);
        let [limit, remaining, reset] =
            first_values(headers, [&config.limit, &config.remaining, &config.reset]);
        let mut reset = reset.and_then(|v| reset_in(v, config.format, wall));
        seen.limit = limit.and_then(parse_count);
        seen.remaining = remaining.and_then(parse_count);

        if seen.limit.is_none() || seen.remaining.is_none() || reset.is_none() {
            seen.limit = seen.limit.or_else(|| count(&IETF_LIMIT));
            seen.remaining = seen.remaining.or_else(|| count(&IETF_REMAINING));
            reset = reset.or_else(|| {
                headers
                    .get(&IETF_RESET)
                    .and_then(|v| reset_in(v, ResetFormat::Auto, wall))
            });
        }
        if seen.limit.is_none() || seen.remaining.is_none() || reset.is_none() {
            if let Some(field) = headers.get(&IETF_FIELD).and_then(|v| v.to_str().ok()) {
                let policy = headers.get(&IETF_POLICY).and_then(|v| v.to_str().ok());
                let structured = Structured::read(field, policy);
                seen.limit = seen.limit.or(structured.limit);
                seen.remaining = seen.remaining.or(structured.remaining);
                reset = reset.or_else(|| {
                    structured.reset.map(|d| {
                        let until = if d.is_zero() {
                            Until::Past(Duration::ZERO)
                        } else {
                            Until::Future(d)
                        };
                        (until, DELTA_PRECISION)
                    })
                });
            } else if seen.limit.is_none() {
                seen.limit = headers
                    .get(&IETF_POLICY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|policy| Structured::read("", Some(policy)).limit);
            }
        }

        seen.reset = match reset {
            None => Reset::Absent,
            Some((Until::Past(ago), precision)) => Reset::Past {
                instant: now.checked_sub(ago),
                precision,
            },
            Some((Until::Future(d), precision)) => {
                if d > config.max_reset {
                    seen.capped = Some(d);
                }
                match now.checked_add(d.min(config.max_reset)) {
                    Some(instant) => Reset::At { instant, precision },
                    None => Reset::Absent,
                }
            }
        };
        if retry_after {
            let wait = headers
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, wall.now()));
            if let Some(d) = wait.filter(|d| *d > config.max_reset) {
                seen.capped = Some(seen.capped.map_or(d, |c| c.max(d)));
            }
            seen.retry_after = wait.and_then(|d| now.checked_add(d.min(config.max_reset)));
        }
        seen
    }

    /// Whether the headers said anything the layer can use.
    pub(crate) fn has_info(&self) -> bool {
        self.limit.is_some()
            || self.remaining.is_some()
            || matches!(self.reset, Reset::At { .. })
            || self.retry_after.is_some()
    }

    /// The public extension; `None` when there is nothing to say.
    pub(crate) fn to_extension(self, limited: bool) -> Option<RateLimit> {
        if !limited && !self.has_info() {
            return None;
        }
        Some(RateLimit {
            limit: self.limit,
            remaining: self.remaining,
            reset: match self.reset {
                Reset::At { instant, .. } => Some(instant),
                Reset::Absent | Reset::Past { .. } => None,
            },
            retry_after: self.retry_after,
            limited,
        })
    }
}

/// What the structured `RateLimit` and `RateLimit-Policy` fields say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Structured {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<Duration>,
}

impl Structured {
    /// Of several policies, the one with the least remaining rules; its limit comes from the
    /// policy of the same name, else from the first policy.
    fn read(field: &str, policy: Option<&str>) -> Structured {
        let mut found = Structured::default();
        let mut name: Option<&str> = None;
        for member in Split::new(field, b',') {
            let mut parts = Split::new(member, b';');
            let head = parts.next().unwrap_or_default().trim();
            match head.split_once('=') {
                // The older dictionary form: `limit=100, remaining=50, reset=30`.
                Some((key, value)) if !head.starts_with('"') => match key.trim() {
                    "limit" => found.limit = found.limit.or(parse_uint(value.trim())),
                    "remaining" => found.remaining = found.remaining.or(parse_uint(value.trim())),
                    "reset" => found.reset = found.reset.or(delta(value)),
                    _ => {}
                },
                // The item form: `"name";r=50;t=30`.
                _ => {
                    let mut remaining = None;
                    let mut reset = None;
                    for param in parts {
                        match param.split_once('=') {
                            Some((k, v)) if k.trim() == "r" => remaining = parse_uint(v.trim()),
                            Some((k, v)) if k.trim() == "t" => reset = delta(v),
                            _ => {}
                        }
                    }
                    let Some(remaining) = remaining else { continue };
                    if found.remaining.is_none_or(|least| remaining < least) {
                        found.remaining = Some(remaining);
                        found.reset = reset;
                        name = Some(unquote(head));
                    }
                }
            }
        }
        if found.limit.is_none() {
            found.limit = policy.and_then(|policy| policy_quota(policy, name));
        }
        found
    }
}

fn delta(value: &str) -> Option<Duration> {
    Decimal::parse(value.trim()).map(Decimal::seconds)
}

/// The quota `q` of the policy named `name`, else of the first policy. The older form
/// writes the quota as the item itself (`100;w=60`).
fn policy_quota(policy: &str, name: Option<&str>) -> Option<u64> {
    let mut first = None;
    for member in Split::new(policy, b',') {
        let mut parts = Split::new(member, b';');
        let head = parts.next().unwrap_or_default().trim();
        let quota = parse_uint(head).or_else(|| {
            parts.find_map(|p| match p.split_once('=') {
                Some((k, v)) if k.trim() == "q" => parse_uint(v.trim()),
                _ => None,
            })
        });
        let Some(quota) = quota else { continue };
        if name.is_some_and(|n| n == unquote(head)) {
            return Some(quota);
        }
        first = first.or(Some(quota));
    }
    first
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Splits on `sep` outside double-quoted strings (which may hold `\"`).
struct Split<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Split<'a> {
    fn new(text: &'a str, sep: u8) -> Self {
        Split {
            rest: Some(text),
            sep,
        }
    }
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, b) in text.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b if b == self.sep && !quoted => {
                    // `sep` is ASCII, so `i` and `i + 1` are character boundaries.
                    self.rest = text.get(i + 1..);
                    return text.get(..i);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(text)
    }
}

#[cfg(test)]
mod tests;
