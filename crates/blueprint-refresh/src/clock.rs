//! Wall-clock time, injectable so that tests with a paused tokio clock see expiries move.

use std::fmt;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Where the token source reads the wall-clock time that token expiries are compared with.
///
/// Expiries are wall-clock times because they are stored and shared between processes.
/// [`SystemClock`] is the default; [`TokioClock`] follows `tokio::time`, so a test that
/// pauses and advances the tokio clock moves expiries too.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock that advances with `tokio::time`: the system time when it was made plus
/// the tokio time elapsed since. Meant for tests that use `tokio::time::pause`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: SystemTime,
    start: Instant,
}

impl TokioClock {
    /// A clock that reads the system time now and then follows tokio time.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A clock that reads `wall` now and then follows tokio time.
    pub fn starting_at(wall: SystemTime) -> Self {
        TokioClock {
            wall,
            start: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        let elapsed: Duration = self.start.elapsed();
        self.wall.checked_add(elapsed).unwrap_or(self.wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = TokioClock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + Duration::from_secs(90));
    }
}

/// When a token granted `now` for `expires_in` expires: `None` when the provider's number
/// would overflow the clock (treated as no expiry), and never more than ten years away.
pub(crate) fn expiry_after(now: SystemTime, expires_in: Duration) -> Option<SystemTime> {
    const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    now.checked_add(expires_in.min(TEN_YEARS))
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    #[test]
    fn absurd_expiries_neither_panic_nor_run_forever() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            expiry_after(now, Duration::from_secs(3600)),
            Some(now + Duration::from_secs(3600))
        );
        let capped = expiry_after(now, Duration::from_secs(u64::MAX));
        assert_eq!(
            capped,
            Some(now + Duration::from_secs(10 * 365 * 24 * 3600))
        );
    }
}
