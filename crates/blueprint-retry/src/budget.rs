//! The retry budget: retries may add only a fraction on top of first attempts.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::InvalidConfig;

/// One retry costs this many units; a first attempt deposits `ratio` of it.
const RETRY_COST: i64 = 1000;
const SLOTS: usize = 10;
/// Deposits go to the calling thread's shard, so threads depositing at once do not fight
/// over one cache line; a withdrawal (rare) sums every shard.
const SHARDS: usize = 8;

/// One thread group's counters, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    slots: [AtomicI64; SLOTS],
}

/// The shard of the current thread: threads take shards in turn as they first deposit.
fn my_shard() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD.with(|shard| {
        shard.get().unwrap_or_else(|| {
            let assigned = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(Some(assigned));
            assigned
        })
    })
}

/// Limits retries to a fraction of first attempts over a sliding window, plus a small floor.
///
/// Every call deposits `ratio` of a retry (0.2 by default: five calls earn one retry);
/// every retry withdraws one. Deposits expire after the window (10 s by default), so the
/// budget follows recent traffic. On top of that, `min_per_sec` retries per second are
/// always allowed (10 by default), so a service with little traffic can still retry.
///
/// When the upstream fails for everyone, retries stop at about `ratio` extra load instead
/// of multiplying it by the number of attempts: no retry storm. The budget is lock-free
/// (atomics only) and shared by every clone of the service that holds it.
pub struct RetryBudget {
    start: Instant,
    slot_width: Duration,
    shards: [Shard; SHARDS],
    /// How many slot widths after `start` the newest slot begins.
    generation: AtomicU64,
    deposit: i64,
    reserve: i64,
    ratio: f64,
    min_per_sec: f64,
    window: Duration,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per call over `window`, plus `min_per_sec`.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] when `ratio` or `min_per_sec` is negative or not finite, or
    /// `window` is shorter than 10 ms.
    pub fn new(ratio: f64, min_per_sec: f64, window: Duration) -> Result<Self, InvalidConfig> {
        if !ratio.is_finite() || !(0.0..=100.0).contains(&ratio) {
            return Err(InvalidConfig::new(
                "budget_ratio",
                format!("must be a number from 0 to 100 (got {ratio})"),
            ));
        }
        if !min_per_sec.is_finite() || min_per_sec < 0.0 {
            return Err(InvalidConfig::new(
                "min_retries_per_sec",
                format!("must be a number of 0 or more (got {min_per_sec})"),
            ));
        }
        if window < Duration::from_millis(10) {
            return Err(InvalidConfig::new(
                "budget_window",
                format!("must be at least 10 ms (got {window:?})"),
            ));
        }
        #[allow(clippy::cast_possible_truncation)]
        let deposit = (ratio * RETRY_COST as f64).round() as i64;
        #[allow(clippy::cast_possible_truncation)]
        let reserve = (min_per_sec * window.as_secs_f64() * RETRY_COST as f64).round() as i64;
        Ok(RetryBudget {
            start: Instant::now(),
            slot_width: window / SLOTS as u32,
            shards: Default::default(),
            generation: AtomicU64::new(0),
            deposit,
            reserve,
            ratio,
            min_per_sec,
            window,
        })
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// [`RetryBudget::deposit`] with a clock reading the caller already made.
    pub(crate) fn deposit_at(&self, now: Instant) {
        if self.deposit > 0 {
            self.slot_at(now).fetch_add(self.deposit, Ordering::AcqRel);
        }
    }

    /// Takes one retry from the budget; `false` (and nothing taken) when it is spent.
    pub fn withdraw(&self) -> bool {
        let slot = self.current();
        slot.fetch_sub(RETRY_COST, Ordering::AcqRel);
        if self.balance() + self.reserve >= 0 {
            true
        } else {
            slot.fetch_add(RETRY_COST, Ordering::AcqRel);
            false
        }
    }

    /// How many retries could be taken now.
    pub fn available(&self) -> u64 {
        let _ = self.current();
        u64::try_from((self.balance() + self.reserve) / RETRY_COST).unwrap_or(0)
    }

    fn balance(&self) -> i64 {
        self.shards
            .iter()
            .flat_map(|shard| &shard.slots)
            .map(|s| s.load(Ordering::Acquire))
            .sum()
    }

    /// This thread's counter for now, clearing slots that fell out of the window.
    fn current(&self) -> &AtomicI64 {
        self.slot_at(Instant::now())
    }

    fn slot_at(&self, now: Instant) -> &AtomicI64 {
        let elapsed = now.saturating_duration_since(self.start);
        // In 64 bits (585 years of nanoseconds): a 128-bit division costs more than the
        // rest of the deposit.
        let elapsed = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let width = u64::try_from(self.slot_width.as_nanos()).unwrap_or(u64::MAX);
        let now_gen = elapsed / width.max(1);
        let mut seen = self.generation.load(Ordering::Acquire);
        while now_gen > seen {
            match self.generation.compare_exchange(
                seen,
                now_gen,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let stale = (now_gen - seen).min(SLOTS as u64);
                    for g in (now_gen - stale + 1)..=now_gen {
                        for shard in &self.shards {
                            shard.slots[slot_index(g)].store(0, Ordering::Release);
                        }
                    }
                    break;
                }
                Err(actual) => seen = actual,
            }
        }
        &self.shards[my_shard()].slots[slot_index(now_gen)]
    }
}

fn slot_index(generation: u64) -> usize {
    usize::try_from(generation % SLOTS as u64).unwrap_or(0)
}

impl Default for RetryBudget {
    /// 20% on top of first attempts over 10 s, plus 10 retries per second.
    fn default() -> Self {
        let deposit = 200;
        let reserve = 10 * 10 * RETRY_COST;
        RetryBudget {
            start: Instant::now(),
            slot_width: Duration::from_secs(1),
            shards: Default::default(),
            generation: AtomicU64::new(0),
            deposit,
            reserve,
            ratio: 0.2,
            min_per_sec: 10.0,
            window: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .field("window", &self.window)
            .field("available", &self.available())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_fraction_of_calls_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 1.0, Duration::from_secs(10)).unwrap();
        // The floor alone: 1/s over 10 s.
        assert_eq!(budget.available(), 10);
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 30);
        let taken = (0..1000).filter(|_| budget.withdraw()).count();
        assert_eq!(taken, 30);
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_window() {
        let budget = RetryBudget::new(0.5, 0.0, Duration::from_secs(10)).unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(budget.available(), 5);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(budget.available(), 0);
        assert!(!budget.withdraw());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(RetryBudget::new(-0.1, 1.0, Duration::from_secs(1)).is_err());
        assert!(RetryBudget::new(f64::NAN, 1.0, Duration::from_secs(1)).is_err());
        assert!(RetryBudget::new(0.2, -1.0, Duration::from_secs(1)).is_err());
        assert!(RetryBudget::new(0.2, 1.0, Duration::ZERO).is_err());
    }
}
