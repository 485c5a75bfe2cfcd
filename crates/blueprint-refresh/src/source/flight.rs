//! The one refresh (or load) of a connection at a time in this process: every concurrent
//! caller shares it, and it runs on its own task so that a cancelled caller cannot lose a
//! rotated refresh token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use blueprint_core::{AccessToken, ConnectionId, TokenError, TokenErrorKind};
use futures_util::FutureExt as _;
use futures_util::future::Shared;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::cache::{Conn, ConnState, Failure};
use super::{Fresh, Inner, later};

/// A refresh shared by every caller for one connection.
pub(super) type Flight =
    Shared<Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send>>>;

impl Inner {
    /// Starts the one refresh (or load) of `connection`, on its own task when there is a
    /// runtime, and records it in `state` so that every caller shares it.
    pub(super) fn start_flight(
        self: &Arc<Self>,
        connection: &ConnectionId,
        conn: &Arc<Conn>,
        stale: Option<AccessToken>,
        state: &mut ConnState,
    ) -> Flight {
        let inner = Arc::clone(self);
        let task_conn = Arc::clone(conn);
        let connection = connection.clone();
        let generation = state.generation;
        inner.follow_changes();
        let work = async move {
            let result = inner.run_flight(&connection, &task_conn, stale).await;
            let keep = inner
                .still_current(&connection, &task_conn, generation, &result)
                .await;
            inner.finish(&task_conn, keep, result)
        };
        let future: Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send>> =
            match Handle::try_current() {
                Ok(handle) => {
                    let task = handle.spawn(work);
                    let inner = Arc::clone(self);
                    let conn = Arc::clone(conn);
                    Box::pin(async move {
                        match task.await {
                            Ok(result) => result,
                            // The task panicked or its runtime shut down: clear the flight
                            // so that the next caller starts another.
                            Err(_) => inner.finish(
                                &conn,
                                true,
                                Err(TokenError::new(
                                    TokenErrorKind::Other,
                                    "the token refresh task stopped before it finished",
                                )),
                            ),
                        }
                    })
                }
                Err(_) => Box::pin(work),
            };
        let flight = future.shared();
        state.flight = Some(flight.clone());
        flight
    }

    /// Whether what a flight started at `generation` came to may be cached. When the store
    /// reported no change to the connection meanwhile, yes; otherwise (another process may
    /// have deleted or replaced what the flight read, or the change was this flight's own
    /// write) the store is read once more, and the result is kept only if the store still
    /// holds the same token. A failure of the token endpoint is always kept, so that its
    /// cooldown holds.
    async fn still_current(
        &self,
        connection: &ConnectionId,
        conn: &Conn,
        generation: u64,
        result: &Result<Fresh, TokenError>,
    ) -> bool {
        let expected = {
            let state = conn.lock();
            if state.generation == generation {
                return true;
            }
            match result {
                Ok(fresh) => Some(fresh.token.clone()),
                Err(error)
                    if matches!(
                        error.kind(),
                        TokenErrorKind::Unavailable | TokenErrorKind::Other
                    ) =>
                {
                    return true;
                }
                Err(_) => state.seen.clone(),
            }
        };
        let key = crate::store::StoreKey::new(
            std::sync::Arc::clone(&self.integration),
            connection.clone(),
        );
        match self.store.get(&key).await {
            Ok(Some(stored)) => expected.as_ref() == Some(&stored.record.access_token),
            Ok(None) => expected.is_none() && result.is_err(),
            Err(_) => false,
        }
    }

    /// Records what the flight came to; `keep`: whether it may be cached (see
    /// [`Inner::still_current`]). A result not kept still goes to the callers that waited
    /// for it; the next call reads the store again.
    fn finish(
        &self,
        conn: &Conn,
        keep: bool,
        result: Result<Fresh, TokenError>,
    ) -> Result<AccessToken, TokenError> {
        let mut state = conn.lock();
        state.flight = None;
        match result {
            Ok(fresh) => {
                let token = fresh.token.clone();
                if keep {
                    state.seen = Some(token.clone());
                    state.cached = Some(fresh.into_cached());
                } else {
                    state.seen = None;
                    state.cached = None;
                }
                state.failure = None;
                Ok(token)
            }
            Err(error) if !keep => Err(error),
            Err(error) => {
                let wait = match error.kind() {
                    // The store failed: try it again soon (it says so in its retry_after).
                    TokenErrorKind::Unavailable => {
                        error.retry_after().unwrap_or(self.config.cooldown)
                    }
                    TokenErrorKind::Other => self.config.cooldown,
                    _ => self.config.recheck,
                };
                state.failure = Some(Failure {
                    error: error.clone(),
                    until: later(Instant::now(), wait),
                });
                Err(error)
            }
        }
    }
}
