//! Settings of the retry layer and their validation.

use std::fmt;
use std::time::Duration;

/// A retry setting that cannot work; returned when the layer is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    field: &'static str,
    reason: String,
}

impl InvalidConfig {
    pub(crate) fn new(field: &'static str, reason: String) -> Self {
        InvalidConfig { field, reason }
    }

    /// The setting at fault, e.g. `max_attempts`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry setting `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidConfig {}

/// Exponential backoff with full jitter: before retry `n` (from 1), wait a random time
/// between zero and `min(cap, base × 2^(n-1))`.
///
/// Full jitter spreads clients that failed together over the whole interval, so they do
/// not come back in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    /// Base 100 ms, cap 10 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// A backoff from `base` doubling up to `cap`.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] when `base` is zero or above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Result<Self, InvalidConfig> {
        if base.is_zero() {
            return Err(InvalidConfig::new(
                "base_delay",
                "must be more than zero (a zero base retries in a tight loop)".into(),
            ));
        }
        if base > cap {
            return Err(InvalidConfig::new(
                "base_delay",
                format!("must not be above max_delay (base {base:?}, cap {cap:?})"),
            ));
        }
        Ok(Backoff { base, cap })
    }

    /// The most retry `n` (from 1) may wait.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random wait before retry `n` (from 1), from zero to [`Backoff::ceiling`].
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=ceiling))
    }
}

/// A small random addition to a server-directed wait, so that clients told the same
/// instant do not all come back at once: up to a tenth of the wait plus 20 ms, at most 1 s.
pub(crate) fn server_wait_jitter(wait: Duration) -> Duration {
    let most = (wait / 10 + Duration::from_millis(20)).min(Duration::from_secs(1));
    Duration::from_nanos(fastrand::u64(
        0..=u64::try_from(most.as_nanos()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_jitters_below_it() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(200), Duration::from_secs(1));
        for n in 1..10 {
            assert!(b.delay(n) <= b.ceiling(n));
        }
    }

    #[test]
    fn invalid_backoffs_are_refused() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::from_secs(1)).map_err(|e| e.field()),
            Err("base_delay")
        );
        let err = Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string().contains("must not be above max_delay"),
            "{err}"
        );
    }
}
