//! Refreshed credentials the store has not taken yet: their writes are retried in the
//! background (`lease::retry_write`), and a process about to stop can try them all at once
//! and wait for them ([`OAuth2TokenSource::flush_unstored`](super::OAuth2TokenSource::flush_unstored))
//! before its runtime drops the tasks, and with them the only copy of a rotated refresh
//! token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::StoreKey;

/// While a flush waits, a write that failed is tried again this soon (instead of its
/// backoff, up to [`WRITE_RETRY_MAX`](super::WRITE_RETRY_MAX) apart).
pub(super) const FLUSH_RETRY: Duration = Duration::from_millis(100);

/// The connections whose refreshed credentials a background write still holds.
#[derive(Debug, Default)]
pub(super) struct Unstored {
    // Per connection, how many background writes hold its credentials (a later refresh
    // may fail to be written too). At most one entry per connection the source knows.
    keys: Mutex<HashMap<StoreKey, usize>>,
    // Woken when a write ends (stored, superseded, given up or dropped).
    ended: Notify,
    // Woken when a flush starts: the writes waiting for their next try try now.
    flush: Notify,
    // Flushes in progress: while any is, a failed write is tried again every FLUSH_RETRY.
    flushing: AtomicUsize,
}

impl Unstored {
    fn keys(&self) -> MutexGuard<'_, HashMap<StoreKey, usize>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a background write of `key`'s credentials until the returned guard drops.
    pub(super) fn hold(self: &Arc<Self>, key: &StoreKey) -> Held {
        *self.keys().entry(key.clone()).or_insert(0) += 1;
        Held {
            unstored: Arc::clone(self),
            key: key.clone(),
        }
    }

    /// How many connections have credentials not stored yet.
    pub(super) fn len(&self) -> usize {
        self.keys().len()
    }

    /// Waits for the next try of a write that failed: `wait`, or less once a flush starts.
    pub(super) async fn pause(&self, wait: Duration) {
        let flush = self.flush.notified();
        tokio::pin!(flush);
        // Registered before the flag is read: a flush that starts after the read wakes it.
        flush.as_mut().enable();
        if self.flushing.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(wait.min(FLUSH_RETRY)).await;
            return;
        }
        // Either way, the write is tried next.
        let _ = tokio::time::timeout(wait, flush).await;
    }

    /// Has every write try now and again every [`FLUSH_RETRY`], and waits up to `within`
    /// for all of them to end. The connections still not stored, logged at ERROR each.
    pub(super) async fn flush(&self, within: Duration) -> Vec<StoreKey> {
        self.flushing.fetch_add(1, Ordering::SeqCst);
        self.flush.notify_waiters();
        let until = super::later(Instant::now(), within);
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.keys().is_empty() {
                break;
            }
            if tokio::time::timeout_at(until, ended).await.is_err() {
                break;
            }
        }
        self.flushing.fetch_sub(1, Ordering::SeqCst);
        let left: Vec<StoreKey> = self.keys().keys().cloned().collect();
        for key in &left {
            tracing::error!(connection = %key, "refreshed credentials are still not stored; if this process stops now, the connection may need to be authorized again");
        }
        left
    }
}

/// A background write in progress; see [`Unstored::hold`].
#[derive(Debug)]
pub(super) struct Held {
    unstored: Arc<Unstored>,
    key: StoreKey,
}

impl Held {
    /// Waits for the write's next try; see [`Unstored::pause`].
    pub(super) async fn pause(&self, wait: Duration) {
        self.unstored.pause(wait).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        {
            let mut keys = self.unstored.keys();
            if let Some(count) = keys.get_mut(&self.key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    keys.remove(&self.key);
                }
            }
        }
        self.unstored.ended.notify_waiters();
    }
}
