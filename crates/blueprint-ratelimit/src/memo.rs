//! The instant of the last epoch reset read, so that the answers of one window, which all
//! write the same reset, do not each read the wall clock and convert it again.
//!
//! Read on every answer by every thread, written about once per window: a sequence lock of
//! atomics. Readers only load (no cache line changes hands while the window lasts), a
//! reader that overlaps a write misses and converts as if there were no memo, and writers
//! take turns (a writer that finds another one writing simply does not write).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

use tokio::time::Instant;

/// One epoch value (seconds or milliseconds) and the instant it names on this process's
/// clock, as first converted.
#[derive(Debug)]
pub(crate) struct ResetMemo {
    /// Instants are kept as nanoseconds after this one (the memo's making).
    base: Instant,
    /// Even: `key` and `at` agree; odd: a writer is changing them.
    seq: AtomicU64,
    /// The value as written, shifted left once, with the low bit set for milliseconds; 0:
    /// nothing kept.
    key: AtomicU64,
    at: AtomicU64,
    writer: Mutex<()>,
}

impl ResetMemo {
    pub(crate) fn new() -> Self {
        ResetMemo {
            base: Instant::now(),
            seq: AtomicU64::new(0),
            key: AtomicU64::new(0),
            at: AtomicU64::new(0),
            writer: Mutex::new(()),
        }
    }

    /// The key of an epoch value: `None` for one too large to keep (no real reset is).
    pub(crate) fn key(value: u64, millis: bool) -> Option<u64> {
        let shifted = value.checked_mul(2)?;
        Some(shifted | u64::from(millis)).filter(|k| *k != 0)
    }

    /// The instant of `key`, if it is the value kept.
    pub(crate) fn get(&self, key: u64) -> Option<Instant> {
        let before = self.seq.load(Ordering::Acquire);
        if before & 1 == 1 {
            return None;
        }
        let kept = self.key.load(Ordering::Relaxed);
        let at = self.at.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != before || kept != key {
            return None;
        }
        self.base.checked_add(Duration::from_nanos(at))
    }

    /// Keeps `key` as naming `instant`; does nothing for an instant before the memo was
    /// made, or while another writer is at it.
    pub(crate) fn set(&self, key: u64, instant: Instant) {
        let Some(at) = instant
            .checked_duration_since(self.base)
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
        else {
            return;
        };
        let Ok(_writing) = self.writer.try_lock() else {
            return;
        };
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.key.store(key, Ordering::Relaxed);
        self.at.store(at, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_value_is_found_only_as_it_was_kept() {
        let memo = ResetMemo::new();
        let key = ResetMemo::key(1_700_000_000, false).unwrap();
        let millis = ResetMemo::key(1_700_000_000, true).unwrap();
        assert_eq!(memo.get(key), None);
        let at = Instant::now() + Duration::from_secs(7);
        memo.set(key, at);
        assert_eq!(memo.get(key), Some(at));
        // The same digits as milliseconds are another value.
        assert_eq!(memo.get(millis), None);
        assert_eq!(
            memo.get(ResetMemo::key(1_700_000_010, false).unwrap()),
            None
        );
        // A newer value replaces it.
        let next = at + Duration::from_secs(10);
        memo.set(millis, next);
        assert_eq!(memo.get(millis), Some(next));
        assert_eq!(memo.get(key), None);
        // Before the memo was made: not kept.
        let earlier = memo.base.checked_sub(Duration::from_secs(1));
        if let Some(earlier) = earlier {
            memo.set(key, earlier);
            assert_eq!(memo.get(key), None);
        }
        assert_eq!(ResetMemo::key(u64::MAX, false), None);
        assert_eq!(ResetMemo::key(0, false), None);
    }

    /// Readers racing writers never see one value's key with another value's instant.
    #[test]
    fn a_reader_never_pairs_a_value_with_another_ones_instant() {
        let memo = Arc::new(ResetMemo::new());
        let base = memo.base;
        // Value `v` always names `base + v` seconds, so a pairing is checkable.
        let instant_of = move |v: u64| base + Duration::from_secs(v);
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let memo = Arc::clone(&memo);
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let v = 1 + (i * 2 + w) % 97;
                        memo.set(ResetMemo::key(v, false).unwrap(), instant_of(v));
                    }
                })
            })
            .collect();
        for i in 0..200_000u64 {
            let v = 1 + i % 97;
            if let Some(at) = memo.get(ResetMemo::key(v, false).unwrap()) {
                assert_eq!(at, instant_of(v), "value {v}");
            }
        }
        for writer in writers {
            writer.join().unwrap();
        }
        // Once the writers are done, the last value written is there to read.
        let found = (1..=97).filter_map(|v| {
            memo.get(ResetMemo::key(v, false).unwrap())
                .map(|at| (v, at))
        });
        let found: Vec<_> = found.collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, instant_of(found[0].0));
    }
}
