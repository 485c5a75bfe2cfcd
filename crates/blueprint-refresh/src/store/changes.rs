//! The change feed: what other processes sharing a store wrote or deleted.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt as _};
use tokio::sync::broadcast;

use super::StoreKey;

/// One change a [`ChangeFeed`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The record of this key was written or deleted, by this process or another.
    Key(StoreKey),
    /// The feed may have missed changes (it lost its connection, a poll failed, its reader
    /// fell behind): drop every record cached from the store and read them again.
    Resync,
}

/// The changes to a store's records, as [`TokenStore::changes`](super::TokenStore::changes)
/// describes: [`ChangeFeed::recv`] them one by one, or use the feed as a [`Stream`].
///
/// ```
/// use blueprint_core::{AccessToken, ConnectionId};
/// use blueprint_refresh::{Change, MemoryStore, StoreKey, TokenRecord, TokenStore};
/// use std::time::SystemTime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let mut feed = store.changes().expect("a memory store reports its changes");
/// let key = StoreKey::new("intercom", ConnectionId::new("acme"));
/// let record = TokenRecord::new(AccessToken::new("tok")?, SystemTime::now());
/// store.put(&key, record).await?; // here, or in another process sharing the store
/// assert_eq!(feed.recv().await, Some(Change::Key(key.clone())));
/// assert!(store.delete(&key).await?);
/// assert_eq!(feed.recv().await, Some(Change::Key(key)));
/// # Ok(())
/// # }
/// ```
pub struct ChangeFeed {
    stream: Pin<Box<dyn Stream<Item = Change> + Send>>,
}

impl ChangeFeed {
    /// A feed that reports what `stream` yields: for stores implemented outside this crate.
    /// The stream should keep the promises of
    /// [`TokenStore::changes`](super::TokenStore::changes), a bounded buffer included.
    pub fn from_stream(stream: impl Stream<Item = Change> + Send + 'static) -> Self {
        ChangeFeed {
            stream: Box::pin(stream),
        }
    }

    /// The next change; `None` once the store is closed or dropped.
    ///
    /// Cancel-safe: dropping the future (in a `select!`) loses no change.
    pub async fn recv(&mut self) -> Option<Change> {
        self.stream.next().await
    }
}

impl Stream for ChangeFeed {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        self.stream.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeFeed").finish_non_exhaustive()
    }
}

/// Fans changes out to any number of [`ChangeFeed`]s through one bounded buffer: a feed
/// that falls more than the capacity behind gets [`Change::Resync`] instead of the changes
/// it missed, so memory stays bounded whether or not anybody reads.
///
/// What [`MemoryStore`](super::MemoryStore) and `PostgresStore` use; public for stores
/// implemented elsewhere.
#[derive(Clone)]
pub struct ChangeBroadcast {
    sender: broadcast::Sender<Change>,
}

impl ChangeBroadcast {
    /// The buffer of the stores in this crate, in changes.
    pub const DEFAULT_CAPACITY: usize = 256;

    /// A broadcast that buffers up to `capacity` changes (at least 1, at most 65 536).
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.clamp(1, 1 << 16));
        ChangeBroadcast { sender }
    }

    /// Reports `change` to every feed subscribed now; nothing happens when there is none.
    pub fn send(&self, change: Change) {
        // An error only means that nobody listens.
        let _ = self.sender.send(change);
    }

    /// A new feed of the changes sent from now on. It ends when every clone of this
    /// broadcast is dropped.
    pub fn subscribe(&self) -> ChangeFeed {
        let receiver = self.sender.subscribe();
        ChangeFeed::from_stream(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move {
                match receiver.recv().await {
                    Ok(change) => Some((change, receiver)),
                    // Changes were dropped from the buffer before this feed read them.
                    Err(broadcast::error::RecvError::Lagged(_)) => Some((Change::Resync, receiver)),
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        ))
    }

    /// How many feeds are subscribed.
    pub fn feeds(&self) -> usize {
        self.sender.receiver_count()
    }
}

impl Default for ChangeBroadcast {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for ChangeBroadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeBroadcast")
            .field("feeds", &self.feeds())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use blueprint_core::ConnectionId;

    use super::*;

    fn key(id: &str) -> StoreKey {
        StoreKey::new("intercom", ConnectionId::new(id))
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_one_resync_then_the_newest_changes() {
        let broadcast = ChangeBroadcast::new(4);
        let mut feed = broadcast.subscribe();
        for n in 0..100 {
            broadcast.send(Change::Key(key(&n.to_string())));
        }
        assert_eq!(feed.recv().await, Some(Change::Resync));
        for n in 96..100 {
            assert_eq!(feed.recv().await, Some(Change::Key(key(&n.to_string()))));
        }
        drop(broadcast);
        assert_eq!(feed.recv().await, None, "the feed ends with its store");
    }

    #[tokio::test]
    async fn sending_with_nobody_listening_is_fine_and_a_late_feed_sees_only_later_changes() {
        let broadcast = ChangeBroadcast::default();
        broadcast.send(Change::Key(key("early")));
        let mut feed = broadcast.subscribe();
        assert_eq!(broadcast.feeds(), 1);
        broadcast.send(Change::Key(key("late")));
        assert_eq!(feed.recv().await, Some(Change::Key(key("late"))));
    }
}
