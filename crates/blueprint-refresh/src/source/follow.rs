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
use crate::store::{Change, ChangeFeed};

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

async fn follow(inner: Weak<Inner>, mut feed: ChangeFeed) {
    loop {
        let change = feed.recv().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match change {
            Some(Change::Key(key)) => {
                if key.integration() == &*inner.integration {
                    inner.connections.changed(key.connection());
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
