//! The wall clock, injectable: servers write resets as UNIX time, the layer waits in tokio
//! time, and tests with a paused tokio clock need a wall clock that pauses with it.

use std::fmt;
use std::time::SystemTime;

use tokio::time::Instant;

/// Where the layer reads the wall-clock time that epoch resets and HTTP-dates are measured
/// against.
///
/// Closures `Fn() -> SystemTime` are wall clocks too.
pub trait WallClock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

impl<F> WallClock for F
where
    F: Fn() -> SystemTime + Send + Sync + 'static,
{
    fn now(&self) -> SystemTime {
        self()
    }
}

/// The system's clock, [`SystemTime::now`]; the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock that moves with tokio's clock: `base` plus the tokio time elapsed since the
/// clock was made. Under `tokio::time::pause()` it stands still and jumps with
/// `tokio::time::advance`, so a fake server and the layer agree on what "now" is.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use blueprint_ratelimit::{TokioClock, WallClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let clock = TokioClock::starting_at(start);
/// tokio::time::advance(Duration::from_secs(5)).await;
/// assert_eq!(clock.now(), start + Duration::from_secs(5));
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct TokioClock {
    base: SystemTime,
    start: Instant,
}

impl TokioClock {
    /// A clock that reads `base` now and runs with tokio's clock from here.
    pub fn starting_at(base: SystemTime) -> Self {
        TokioClock {
            base,
            start: Instant::now(),
        }
    }

    /// A clock that reads the system time now and runs with tokio's clock from here.
    pub fn from_system() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// The wall-clock time of a tokio instant (before the clock was made: its start).
    pub fn at(&self, instant: Instant) -> SystemTime {
        let elapsed = instant.saturating_duration_since(self.start);
        self.base.checked_add(elapsed).unwrap_or(self.base)
    }
}

impl WallClock for TokioClock {
    fn now(&self) -> SystemTime {
        self.at(Instant::now())
    }
}

impl fmt::Debug for TokioClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioClock")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}
