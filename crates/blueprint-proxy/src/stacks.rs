//! Stacks per connection, for integrations whose base URL or headers name connection
//! parameters (Zendesk's `https://${connection.subdomain}.zendesk.com`): each connection's
//! stack sends to its own base URL, and the auth layer sends its token to that origin only.
//!
//! A connection's stack is built from its stored parameters the first time it is called
//! and kept (at most [`MAX_STACKS`] per integration); its parameters are read from the
//! store again at most every [`RECHECK`], so that a change another replica made is seen
//! within that bound, and at once for a change this proxy made. Every stack of an
//! integration shares one rate-limit layer (budgets are per origin and connection).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use blueprint::StackBuilder;
use blueprint_core::ConnectionId;
use blueprint_refresh::{ConnectionParams, StoreKey, TokenStore};
use http::StatusCode;
use tokio::time::Instant;

use crate::app::{Client, Stack};
use crate::error::{ApiError, printable};

/// How long a connection's parameters are trusted before the store is read again.
pub(crate) const RECHECK: Duration = Duration::from_secs(5);
/// The most connection stacks kept per integration; past it, the least recently checked
/// goes.
pub(crate) const MAX_STACKS: usize = 10_000;

/// The stacks of one integration's connections.
pub(crate) struct ConnectionStacks {
    builder: StackBuilder,
    client: Client,
    stacks: Mutex<HashMap<ConnectionId, Kept>>,
}

struct Kept {
    params: ConnectionParams,
    stack: Stack,
    checked: Instant,
}

impl fmt::Debug for ConnectionStacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionStacks")
            .field("kept", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl ConnectionStacks {
    /// Stacks from `builder` (whose rate-limit layer is then shared by all) around `client`.
    pub(crate) fn new(builder: StackBuilder, client: Client) -> Self {
        ConnectionStacks {
            builder: builder.share_rate_limit(),
            client,
            stacks: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConnectionId, Kept>> {
        self.stacks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets `connection`'s stack: its parameters are read again on its next call.
    pub(crate) fn forget(&self, connection: &ConnectionId) {
        self.lock().remove(connection);
    }

    /// The stack of the connection at `key`.
    ///
    /// # Errors
    ///
    /// 404 `unknown_connection` without a record, 424 `missing_connection_param` naming a
    /// parameter the connection lacks (or whose value no longer fits), or the store's error.
    pub(crate) async fn stack(
        &self,
        store: &dyn TokenStore,
        key: &StoreKey,
    ) -> Result<Stack, ApiError> {
        let connection = key.connection();
        let now = Instant::now();
        if let Some(kept) = self.lock().get(connection) {
            if now.saturating_duration_since(kept.checked) < RECHECK {
                return Ok(kept.stack.clone());
            }
        }
        let stored = store
            .get(key)
            .await
            .map_err(|e| ApiError::store(&e))?
            .ok_or_else(|| ApiError::unknown_connection(key.integration(), connection.as_str()))?;
        let params = stored.record.params;
        let mut stacks = self.lock();
        if let Some(kept) = stacks.get_mut(connection) {
            if kept.params == params {
                kept.checked = now;
                return Ok(kept.stack.clone());
            }
        }
        let builder = self
            .builder
            .for_connection(|name| params.get(name).cloned())
            .map_err(|e| missing_param(key, e.message()))?;
        let stack = builder
            .service(self.client.clone())
            .map_err(|e| missing_param(key, e.message()))?;
        if stacks.len() >= MAX_STACKS && !stacks.contains_key(connection) {
            let oldest = stacks
                .iter()
                .min_by_key(|(_, kept)| kept.checked)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                stacks.remove(&oldest);
            }
        }
        stacks.insert(
            connection.clone(),
            Kept {
                params,
                stack: stack.clone(),
                checked: now,
            },
        );
        Ok(stack)
    }
}

/// 424 `missing_connection_param`: the connection cannot be called until its parameters
/// are set.
fn missing_param(key: &StoreKey, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FAILED_DEPENDENCY,
        "missing_connection_param",
        format!(
            "connection `{}` of `{}` cannot be called, nothing was sent: {why}; import it \
             again with its \"params\" (PUT /connections/{}/…) or authorize it again",
            printable(key.connection().as_str()),
            key.integration(),
            key.integration()
        ),
    )
}
