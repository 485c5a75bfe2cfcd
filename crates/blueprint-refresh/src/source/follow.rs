//! What another process changes, this one sees: the source follows its store's
//! [change feed](crate::TokenStore::changes) and forgets the cached token of every
//! connection another process deleted, imported or refreshed, and every cached token when
//! the feed says it may have missed changes ([`Change::Resync`]).
//!
//! The follower is one task per source, started with the first flight (or at build, in a
//! runtime); it holds the source weakly and is stopped when the source is dropped.

use std::sync::{Arc, Weak};

use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use super::Inner;
use crate::store::{Change, ChangeFeed, StoreKey};

/// The task following the store's changes; stopped when dropped (with the source).
pub(super) struct Follower(AbortHandle);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Inner {
    /// Starts following the store's changes, once, if there is a runtime and the store has
    /// a feed.
    pub(super) fn follow_changes(self: &Arc<Self>) {
        if !self.config.follow_changes || self.follower.get().is_some() {
            return;
        }
        let Ok(handle) = Handle::try_current() else {
            return;
        };
        self.follower.get_or_init(|| {
            let feed = self.store.changes()?;
            let task = handle.spawn(follow(Arc::downgrade(self), feed));
            Some(Follower(task.abort_handle()))
        });
    }
}

impl Inner {
    /// The store reported a write or delete of `key`. A flight in progress is told (it
    /// checks the store before it caches what it read). Otherwise the record is read: if it
    /// holds the access token this process last saw, the write was this process's own (a
    /// lease, a status) or changed nothing that is sent, and the cache stays; if it holds
    /// another, or is gone, or cannot be read, the cached token (and any failure) is
    /// forgotten and the next call reads the store.
    async fn key_changed(&self, key: &StoreKey) {
        let Some(conn) = self.connections.peek(key.connection()) else {
            return;
        };
        // A flight waiting for another process's refresh reads the store again now.
        conn.wake_on_change();
        {
            let mut state = conn.lock();
            if state.flight.is_some() {
                state.generation = state.generation.wrapping_add(1);
                return;
            }
            if state.cached.is_none() && state.failure.is_none() && state.seen.is_none() {
                return;
            }
        }
        let stored = self.store.get(key).await;
        let mut state = conn.lock();
        if state.flight.is_some() {
            state.generation = state.generation.wrapping_add(1);
            return;
        }
        let unchanged = match &stored {
            Ok(Some(stored)) => state.seen.as_ref() == Some(&stored.record.access_token),
            Ok(None) => state.seen.is_none() && state.cached.is_none(),
            Err(_) => false,
        };
        if !unchanged {
            state.changed();
        }
    }
}

async fn follow(inner: Weak<Inner>, mut feed: ChangeFeed) {
    loop {
        let change = feed.recv().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match change {
            Some(Change::Key(key)) => {
                if key.integration() == &*inner.integration {
                    inner.key_changed(&key).await;
                }
            }
            Some(Change::Resync) => {
                tracing::debug!(integration = %inner.integration, "the token store's change feed resynced; every cached token is read again");
                inner.connections.changed_all();
            }
            // The store was closed.
            None => return,
        }
    }
}
