//! One refresh per connection across processes sharing a store: the refresher takes a
//! lease on the record by compare-and-swap on its version (a fencing token: a process whose
//! lease lapsed cannot write over a newer record), calls the token endpoint, and writes the
//! new credentials by compare-and-swap before they are used. The others wait for the new
//! token in the store.
//!
//! Each flight takes the lease under a holder id of its own, so that even two flights of
//! one process never both count as the holder.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use blueprint_core::{
    AccessToken, ConnectionId, Event, RefreshOutcome, TokenError, TokenErrorKind,
};
use tokio::time::Instant;

use super::cache::{Conn, SeenLease};
use super::unstored::Held;
use super::{Fresh, Inner, later};
use crate::Secret;
use crate::provider::{Granted, TokenEndpointError};
use crate::store::{
    Lease, StoreError, StoreKey, StoredToken, Swap, TokenRecord, TokenStatus, TokenStore,
};

/// For how long refreshed credentials that the store failed to take are retried in the
/// background: about the life of a typical access token.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(3600);

impl Inner {
    /// Loads the connection's record and, when its token is due or was refused, refreshes it
    /// under a lease. Runs once per connection at a time in this process; the lease makes it
    /// once at a time across processes sharing the store.
    pub(super) async fn run_flight(
        &self,
        connection: &ConnectionId,
        conn: &Conn,
        stale: Option<AccessToken>,
    ) -> Result<Fresh, TokenError> {
        let key = StoreKey::new(Arc::clone(&self.integration), connection.clone());
        let give_up = later(Instant::now(), self.config.lease.saturating_mul(2));
        let holder = self.flight_holder();
        let mut waited = false;
        loop {
            // Enabled before the store is read: a change the feed reports from here on
            // ends the wait below, even one reported before the wait begins.
            let changed = conn.store_change();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let Some(current) = self
                .store
                .get(&key)
                .await
                .map_err(|e| self.store_failed(e))?
            else {
                conn.lock().seen = None;
                return Err(TokenError::not_found());
            };
            conn.lock().seen = Some(current.record.access_token.clone());
            let now = self.clock.now();
            let record = &current.record;
            let refused = stale.as_ref() == Some(&record.access_token);
            let expired = record.expires_at.is_some_and(|at| now >= at);
            let usable = !refused && !expired;
            let due = record
                .expires_at
                .is_some_and(|at| now >= self.refresh_at(record.updated_at, at, conn.jitter));
            if usable && !due {
                if waited {
                    // Another process refreshed meanwhile: its credentials are taken.
                    self.events.emit(&Event::TokenRefresh {
                        connection,
                        outcome: RefreshOutcome::FromStore,
                        duration: Duration::ZERO,
                    });
                }
                return Ok(self.fresh(conn.jitter, record));
            }
            if record.refresh_token.is_none() || record.status == TokenStatus::NeedsReauthorization
            {
                if usable {
                    return Ok(self.fresh(conn.jitter, record));
                }
                return self.mark_dead(&key, &current, refused).await;
            }
            if let Some(lease) = record.lease.as_ref().filter(|l| l.holder != holder) {
                // Held by another flight (here or in another process) that has not lapsed.
                if !self.lapsed(conn, lease, now) {
                    if usable {
                        // Another process is refreshing; this token is still good meanwhile.
                        let mut fresh = self.fresh(conn.jitter, record);
                        fresh.refresh_at = now.checked_add(self.config.lease_poll);
                        return Ok(fresh);
                    }
                    if Instant::now() >= give_up {
                        return Err(TokenError::new(
                            TokenErrorKind::Unavailable,
                            "another process has been refreshing this connection's token for too long",
                        )
                        .with_retry_after(self.config.cooldown));
                    }
                    // The holder's write ends the wait as soon as the store's change feed
                    // reports it; the poll covers a store without a feed, or a lost
                    // notification.
                    let _ = tokio::time::timeout(self.config.lease_poll, changed).await;
                    waited = true;
                    continue;
                }
            }
            let mut leased = record.clone();
            leased.lease = Some(Lease {
                holder: holder.clone(),
                until: now
                    .checked_add(self.config.lease)
                    .unwrap_or(std::time::UNIX_EPOCH),
            });
            match self
                .store
                .compare_and_swap(&key, Some(current.version), leased.clone())
                .await
                .map_err(|e| self.store_failed(e))?
            {
                Swap::Swapped(version) => return self.refresh(&key, conn, leased, version).await,
                Swap::Conflict => {}
            }
        }
    }

    /// Whether another flight's lease has lapsed: by the wall clock it was written with,
    /// and by this process's own clock a whole lease after this process first saw it. The
    /// second keeps a replica whose wall clock runs ahead of the holder's from taking a
    /// lease that is still held (two refreshes, and with rotating refresh tokens a lost
    /// connection); it never lets a lease go earlier than its writer said.
    fn lapsed(&self, conn: &Conn, lease: &Lease, now: std::time::SystemTime) -> bool {
        let here = Instant::now();
        let first_seen = {
            let mut state = conn.lock();
            match &state.lease_seen {
                Some(seen) if seen.holder == lease.holder && seen.until == lease.until => seen.at,
                _ => {
                    state.lease_seen = Some(SeenLease {
                        holder: lease.holder.clone(),
                        until: lease.until,
                        at: here,
                    });
                    here
                }
            }
        };
        lease.until <= now && here >= later(first_seen, self.config.lease)
    }

    /// The token was refused or has expired and cannot be refreshed: the connection needs
    /// a person to authorize it again. Says so in the store (once).
    async fn mark_dead(
        &self,
        key: &StoreKey,
        current: &StoredToken,
        refused: bool,
    ) -> Result<Fresh, TokenError> {
        let record = &current.record;
        let message = if record.status == TokenStatus::NeedsReauthorization {
            record
                .last_error
                .clone()
                .unwrap_or_else(|| String::from("the connection must be authorized again"))
        } else if refused {
            String::from(
                "the provider refused the access token and there is no refresh token: the connection must be authorized again",
            )
        } else {
            String::from(
                "the access token expired and there is no refresh token: the connection must be authorized again",
            )
        };
        if record.status != TokenStatus::NeedsReauthorization {
            let mut dead = record.clone();
            dead.status = TokenStatus::NeedsReauthorization;
            dead.last_error = Some(message.clone());
            dead.updated_at = self.clock.now();
            self.write_outcome(key, current.version, dead).await;
        }
        Err(TokenError::new(
            TokenErrorKind::NeedsReauthorization,
            message,
        ))
    }

    /// Calls the token endpoint holding the lease (`leased` at `version`) and writes what
    /// came of it.
    async fn refresh(
        &self,
        key: &StoreKey,
        conn: &Conn,
        leased: TokenRecord,
        version: u64,
    ) -> Result<Fresh, TokenError> {
        let Some(refresh_token) = leased.refresh_token.clone() else {
            return Err(TokenError::new(TokenErrorKind::Other, "no refresh token"));
        };
        tracing::debug!(connection = %key, "refreshing the access token");
        let started = Instant::now();
        let outcome = self
            .provider
            .refresh(&self.http, &refresh_token, &leased.params)
            .await;
        let now = self.clock.now();
        self.events.emit(&Event::TokenRefresh {
            connection: key.connection(),
            outcome: match &outcome {
                Ok(_) => RefreshOutcome::Refreshed,
                Err(error) if error.is_refused() => RefreshOutcome::Refused,
                Err(_) => RefreshOutcome::Failed,
            },
            duration: started.elapsed(),
        });
        match outcome {
            Ok(granted) => {
                let Granted {
                    access_token,
                    refresh_token: rotated,
                    expires_in,
                    token_type,
                    scopes,
                    params,
                } = granted;
                let record = TokenRecord {
                    access_token,
                    // Rotation: a new refresh token replaces the old; none keeps the old.
                    refresh_token: rotated.or(Some(refresh_token.clone())),
                    expires_at: expires_in.and_then(|d| crate::clock::expiry_after(now, d)),
                    token_type,
                    scopes: scopes.unwrap_or(leased.scopes),
                    status: TokenStatus::Ok,
                    last_error: None,
                    updated_at: now,
                    lease: None,
                    params,
                };
                let fresh = self.fresh(conn.jitter, &record);
                // Said before the write, so that the store's report of it is known for
                // this process's own.
                conn.lock().seen = Some(record.access_token.clone());
                self.write_refreshed(key, version, record, &refresh_token)
                    .await;
                Ok(fresh)
            }
            Err(error) => {
                let refused = error.is_refused();
                let message = match &error {
                    TokenEndpointError::Refused { .. } => {
                        format!("{error}: the connection must be authorized again")
                    }
                    TokenEndpointError::Unavailable { .. } => format!(
                        "could not refresh the access token: {error}; not trying again for {} s",
                        self.config.cooldown.as_secs()
                    ),
                };
                tracing::warn!(connection = %key, error = %message, "token refresh failed");
                let mut failed = leased;
                failed.status = if refused {
                    TokenStatus::NeedsReauthorization
                } else {
                    TokenStatus::RefreshFailing
                };
                failed.last_error = Some(message.clone());
                failed.lease = None;
                failed.updated_at = now;
                self.write_outcome(key, version, failed).await;
                Err(if refused {
                    TokenError::new(TokenErrorKind::NeedsReauthorization, message)
                } else {
                    TokenError::new(TokenErrorKind::Unavailable, message)
                        .with_retry_after(self.config.cooldown)
                })
            }
        }
    }

    /// Writes refreshed credentials over the leased record (see [`write_over`]). When the
    /// store fails, the credentials are served anyway and the write is retried in the
    /// background: the rotated refresh token lives only in this process until it lands.
    async fn write_refreshed(
        &self,
        key: &StoreKey,
        version: u64,
        record: TokenRecord,
        used: &Secret,
    ) {
        let Written::Failed { error, expected } =
            write_over(&*self.store, key, version, &record, used).await
        else {
            return;
        };
        tracing::error!(connection = %key, %error, "could not store refreshed credentials; using them and retrying the write in the background");
        if let Ok(handle) = Handle::try_current() {
            let held = self.unstored.hold(key);
            handle.spawn(retry_write(
                held,
                Arc::clone(&self.store),
                key.clone(),
                expected,
                record,
                used.clone(),
                self.config.store_retry,
            ));
        }
    }

    /// Writes a status change; a conflict means someone wrote newer credentials, which win.
    async fn write_outcome(&self, key: &StoreKey, version: u64, record: TokenRecord) {
        if let Err(error) = self
            .store
            .compare_and_swap(key, Some(version), record)
            .await
        {
            tracing::warn!(connection = %key, %error, "could not record the connection's status");
        }
    }
}

/// What [`write_over`] did.
enum Written {
    /// The refreshed credentials are stored.
    Stored,
    /// Newer credentials are stored (a re-authorization, another refresher): they win.
    Superseded,
    /// The store failed; the write should be tried again over `expected`.
    Failed { error: StoreError, expected: u64 },
}

/// Writes refreshed credentials over the leased record at `version`. If the record changed
/// meanwhile but still holds the refresh token that was `used` (someone took over a lapsed
/// lease without finishing, or marked it failed), writes over that: the refresh token the
/// store holds is spent, the new one is the only one that works. If it holds another one
/// (a re-authorization, or another refresher finished), leaves it.
async fn write_over(
    store: &dyn TokenStore,
    key: &StoreKey,
    version: u64,
    record: &TokenRecord,
    used: &Secret,
) -> Written {
    let mut expected = version;
    for _ in 0..3 {
        match store
            .compare_and_swap(key, Some(expected), record.clone())
            .await
        {
            Ok(Swap::Swapped(_)) => return Written::Stored,
            Ok(Swap::Conflict) => match store.get(key).await {
                Ok(Some(current))
                    if current
                        .record
                        .refresh_token
                        .as_ref()
                        .is_some_and(|t| t.expose() == used.expose()) =>
                {
                    expected = current.version;
                }
                Ok(_) => {
                    tracing::warn!(connection = %key, "credentials changed during a refresh; kept the stored ones");
                    return Written::Superseded;
                }
                Err(error) => return Written::Failed { error, expected },
            },
            Err(error) => return Written::Failed { error, expected },
        }
    }
    tracing::warn!(connection = %key, "the credentials kept changing during a refresh; kept the stored ones");
    Written::Superseded
}

/// Tries [`write_over`] again, `first_wait` after the failure and then twice as long each
/// time (at most [`WRITE_RETRY_MAX`](super::WRITE_RETRY_MAX) apart), until the
/// credentials are stored or superseded, for at most an hour.
async fn retry_write(
    // Counts the write as unstored until it ends, however it ends.
    held: Held,
    store: Arc<dyn TokenStore>,
    key: StoreKey,
    mut expected: u64,
    record: TokenRecord,
    used: Secret,
    first_wait: Duration,
) {
    let give_up = later(Instant::now(), WRITE_RETRY_FOR);
    let mut wait = first_wait.max(Duration::from_millis(10));
    loop {
        held.pause(wait).await;
        match write_over(&*store, &key, expected, &record, &used).await {
            Written::Stored => {
                tracing::info!(connection = %key, "stored the refreshed credentials after the store came back");
                return;
            }
            Written::Superseded => return,
            Written::Failed {
                error,
                expected: next,
            } => {
                if Instant::now() >= give_up {
                    tracing::error!(connection = %key, %error, "gave up storing refreshed credentials; the connection may need to be authorized again");
                    return;
                }
                expected = next;
                wait = wait.saturating_mul(2).min(super::WRITE_RETRY_MAX);
            }
        }
    }
}
