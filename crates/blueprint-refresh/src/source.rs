//! The OAuth2 token source: a per-connection cache in front of a [`TokenStore`] that
//! refreshes through the provider's token endpoint, one refresh at a time.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint_core::{
    AccessToken, ConnectionId, TokenError, TokenErrorKind, TokenFuture, TokenSource,
};
use futures_util::FutureExt as _;
use futures_util::future::Shared;
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::provider::{Granted, TokenEndpointError};
use crate::store::{
    Lease, StoreError, StoreKey, StoredToken, Swap, TokenRecord, TokenStatus, TokenStore,
};
use crate::{Clock, HttpClient, Provider, SystemClock};

/// Tokens are refreshed this long before they expire, by default (plus jitter).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Up to this much is added to the margin, at random per connection, by default, so that
/// connections issued together are not all refreshed in the same second.
pub const DEFAULT_REFRESH_JITTER: Duration = Duration::from_secs(30);
/// After a refresh fails for a reason that may pass, calls fail fast for this long.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// After a connection was found to need re-authorization (or to have no credentials),
/// the store is read again at most this often, to notice a new authorization.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(5);
/// How long a refresh lease holds if its holder never finishes; longer than the token
/// endpoint's timeout.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How often a source waiting for another process's refresh reads the store.
pub const DEFAULT_LEASE_POLL: Duration = Duration::from_millis(100);

type Flight = Shared<Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send>>>;

/// A [`TokenSource`] for OAuth2 connections: caches each connection's token, refreshes it
/// before it expires, and stores what it gets.
///
/// - **Cached:** a fresh token is handed out at once, allocating nothing.
/// - **Proactive:** a token that expires within the margin (default 60 s, plus up to 30 s
///   of jitter) is refreshed in the background while the still-valid one keeps being
///   handed out; an expired one is waited for.
/// - **Single-flight:** every concurrent caller for one connection shares one refresh,
///   run on its own task so that a cancelled caller cannot lose a rotated refresh token.
///   Across processes sharing a store, the refresher first takes a lease on the record by
///   compare-and-swap; the others wait for its token.
/// - **Rotation:** a new refresh token replaces the old; an answer without one keeps it.
/// - **Refusals:** `invalid_grant` (or another refusal) marks the connection
///   [`TokenStatus::NeedsReauthorization`] and is not retried; other failures (5xx,
///   network) start a cooldown (default 30 s) during which calls fail fast with a
///   [`TokenError`] of kind `Unavailable` that says when to try again.
/// - **No expiry, no refresh token** (Intercom): used until the server refuses it; then
///   the connection needs re-authorization.
///
/// Cloning is cheap; clones share the cache.
#[derive(Clone)]
pub struct OAuth2TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    integration: Arc<str>,
    provider: Provider,
    http: HttpClient,
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    config: Config,
    holder: String,
    connections: RwLock<HashMap<ConnectionId, Arc<Conn>>>,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    margin: Duration,
    jitter: Duration,
    cooldown: Duration,
    recheck: Duration,
    lease: Duration,
    lease_poll: Duration,
}

struct Conn {
    /// This connection's share of the jitter, drawn once.
    jitter: Duration,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    cached: Option<Cached>,
    failure: Option<Failure>,
    flight: Option<Flight>,
}

struct Cached {
    token: AccessToken,
    expires_at: Option<SystemTime>,
    refresh_at: Option<SystemTime>,
    can_refresh: bool,
    /// Refused by the server (a 401): never handed out again.
    stale: bool,
}

struct Failure {
    error: TokenError,
    until: Instant,
}

/// What a flight found: the token and when to look again.
struct Fresh {
    token: AccessToken,
    expires_at: Option<SystemTime>,
    refresh_at: Option<SystemTime>,
    can_refresh: bool,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Builds an [`OAuth2TokenSource`]; from [`OAuth2TokenSource::builder`].
#[derive(Debug)]
pub struct OAuth2TokenSourceBuilder {
    provider: Provider,
    store: Arc<dyn TokenStore>,
    integration: Arc<str>,
    http: Option<HttpClient>,
    clock: Arc<dyn Clock>,
    config: Config,
}

impl OAuth2TokenSourceBuilder {
    /// The integration's name, the first half of every store key (default `"default"`).
    #[must_use]
    pub fn integration(mut self, name: impl Into<Arc<str>>) -> Self {
        self.integration = name.into();
        self
    }

    /// The client for the token endpoint (default: [`HttpClient::new`], plain HTTP only).
    #[must_use]
    pub fn http_client(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }

    /// Where the wall-clock time comes from (default [`SystemClock`]).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refresh this long before expiry (default [`DEFAULT_REFRESH_MARGIN`]).
    #[must_use]
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.config.margin = margin;
        self
    }

    /// Add up to this much to the margin, drawn once per connection (default
    /// [`DEFAULT_REFRESH_JITTER`]).
    #[must_use]
    pub fn refresh_jitter(mut self, jitter: Duration) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// Fail fast this long after a refresh failed for a reason that may pass (default
    /// [`DEFAULT_COOLDOWN`]).
    #[must_use]
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.config.cooldown = cooldown;
        self
    }

    /// Read the store again at most this often for a connection that needs
    /// re-authorization or has no credentials (default [`DEFAULT_RECHECK`]).
    #[must_use]
    pub fn recheck(mut self, recheck: Duration) -> Self {
        self.config.recheck = recheck;
        self
    }

    /// How long a refresh lease lasts if its holder dies (default [`DEFAULT_LEASE`]) and
    /// how often waiters read the store (default [`DEFAULT_LEASE_POLL`]).
    #[must_use]
    pub fn lease(mut self, lease: Duration, poll: Duration) -> Self {
        self.config.lease = lease;
        self.config.lease_poll = poll;
        self
    }

    /// The source.
    pub fn build(self) -> OAuth2TokenSource {
        OAuth2TokenSource {
            inner: Arc::new(Inner {
                integration: self.integration,
                provider: self.provider,
                http: self.http.unwrap_or_default(),
                store: self.store,
                clock: self.clock,
                config: self.config,
                holder: format!("{:016x}", fastrand::u64(..)),
                connections: RwLock::default(),
            }),
        }
    }
}

impl OAuth2TokenSource {
    /// A builder for a source that refreshes through `provider` and keeps tokens in `store`.
    pub fn builder(provider: Provider, store: impl TokenStore) -> OAuth2TokenSourceBuilder {
        Self::builder_shared(provider, Arc::new(store))
    }

    /// Like [`OAuth2TokenSource::builder`], with a store shared with others.
    pub fn builder_shared(
        provider: Provider,
        store: Arc<dyn TokenStore>,
    ) -> OAuth2TokenSourceBuilder {
        OAuth2TokenSourceBuilder {
            provider,
            store,
            integration: Arc::from("default"),
            http: None,
            clock: Arc::new(SystemClock),
            config: Config {
                margin: DEFAULT_REFRESH_MARGIN,
                jitter: DEFAULT_REFRESH_JITTER,
                cooldown: DEFAULT_COOLDOWN,
                recheck: DEFAULT_RECHECK,
                lease: DEFAULT_LEASE,
                lease_poll: DEFAULT_LEASE_POLL,
            },
        }
    }

    /// The integration's name.
    pub fn integration(&self) -> &str {
        &self.inner.integration
    }

    /// The provider.
    pub fn provider(&self) -> &Provider {
        &self.inner.provider
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.inner.store
    }

    /// The token-endpoint client.
    pub fn http_client(&self) -> &HttpClient {
        &self.inner.http
    }

    /// The wall clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The store key of `connection`.
    pub fn key(&self, connection: &ConnectionId) -> StoreKey {
        StoreKey::new(Arc::clone(&self.inner.integration), connection.clone())
    }

    /// Stores new credentials for `connection` (after an authorization) and uses them at once.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot write them.
    pub async fn put_credentials(
        &self,
        connection: &ConnectionId,
        record: TokenRecord,
    ) -> Result<(), StoreError> {
        let key = self.key(connection);
        self.inner.store.put(&key, record.clone()).await?;
        let conn = self.inner.conn(connection);
        let fresh = self.inner.fresh(conn.jitter, &record);
        let mut state = conn.lock();
        state.cached = Some(fresh.into_cached());
        state.failure = None;
        Ok(())
    }

    /// Forgets what this source holds in memory for `connection` (its cached token, a
    /// cooldown); the next call reads the store.
    pub fn forget(&self, connection: &ConnectionId) {
        self.inner
            .connections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(connection);
    }
}

impl fmt::Debug for OAuth2TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let connections = self
            .inner
            .connections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("OAuth2TokenSource")
            .field("integration", &self.inner.integration)
            .field("token_url", &self.inner.provider.token_url())
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .field("connections", &connections)
            .finish()
    }
}

impl TokenSource for OAuth2TokenSource {
    fn token(&self, connection: &ConnectionId) -> TokenFuture {
        {
            let connections = self
                .inner
                .connections
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(conn) = connections.get(connection) {
                return Inner::token_for(&self.inner, connection, conn);
            }
        }
        let conn = self.inner.conn(connection);
        Inner::token_for(&self.inner, connection, &conn)
    }

    fn invalidate(&self, connection: &ConnectionId, stale: &AccessToken) {
        let connections = self
            .inner
            .connections
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = connections.get(connection) {
            let mut state = conn.lock();
            if let Some(cached) = state.cached.as_mut() {
                if cached.token == *stale {
                    cached.stale = true;
                }
            }
        }
    }
}

impl Fresh {
    fn into_cached(self) -> Cached {
        Cached {
            token: self.token,
            expires_at: self.expires_at,
            refresh_at: self.refresh_at,
            can_refresh: self.can_refresh,
            stale: false,
        }
    }
}

impl Inner {
    fn conn(&self, connection: &ConnectionId) -> Arc<Conn> {
        let mut connections = self
            .connections
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let conn = connections.entry(connection.clone()).or_insert_with(|| {
            Arc::new(Conn {
                jitter: self.random_jitter(),
                state: Mutex::default(),
            })
        });
        Arc::clone(conn)
    }

    fn random_jitter(&self) -> Duration {
        let max = u64::try_from(self.config.jitter.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=max))
    }

    /// The hot path: the cached token if it is good, else a shared flight.
    fn token_for(inner: &Arc<Inner>, connection: &ConnectionId, conn: &Arc<Conn>) -> TokenFuture {
        let now = inner.clock.now();
        let mut state = conn.lock();
        if let Some(cached) = state.cached.as_ref().filter(|c| !c.stale) {
            let expired = cached.expires_at.is_some_and(|at| now >= at);
            if !expired {
                let token = cached.token.clone();
                let due = cached.can_refresh && cached.refresh_at.is_some_and(|at| now >= at);
                if due && state.flight.is_none() && Handle::try_current().is_ok() {
                    let cooling = state
                        .failure
                        .as_ref()
                        .is_some_and(|f| Instant::now() < f.until);
                    if !cooling {
                        // Refresh in the background; this caller goes on with the valid token.
                        drop(inner.start_flight(connection, conn, None, &mut state));
                    }
                }
                return TokenFuture::ready(Ok(token));
            }
        }
        if let Some(failure) = &state.failure {
            let now = Instant::now();
            if now < failure.until {
                return TokenFuture::ready(Err(failure
                    .error
                    .clone()
                    .with_retry_after(failure.until - now)));
            }
        }
        state.failure = None;
        if let Some(flight) = &state.flight {
            return TokenFuture::new(flight.clone());
        }
        let stale = state
            .cached
            .as_ref()
            .filter(|c| c.stale)
            .map(|c| c.token.clone());
        TokenFuture::new(inner.start_flight(connection, conn, stale, &mut state))
    }

    /// Starts the one refresh (or load) of `connection`, on its own task when there is a
    /// runtime, and records it in `state` so that every caller shares it.
    fn start_flight(
        self: &Arc<Self>,
        connection: &ConnectionId,
        conn: &Arc<Conn>,
        stale: Option<AccessToken>,
        state: &mut ConnState,
    ) -> Flight {
        let inner = Arc::clone(self);
        let task_conn = Arc::clone(conn);
        let connection = connection.clone();
        let work = async move {
            let result = inner.run_flight(&connection, &task_conn, stale).await;
            inner.finish(&task_conn, result)
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

    fn finish(
        &self,
        conn: &Conn,
        result: Result<Fresh, TokenError>,
    ) -> Result<AccessToken, TokenError> {
        let mut state = conn.lock();
        state.flight = None;
        match result {
            Ok(fresh) => {
                let token = fresh.token.clone();
                state.cached = Some(fresh.into_cached());
                state.failure = None;
                Ok(token)
            }
            Err(error) => {
                let wait = match error.kind() {
                    TokenErrorKind::Unavailable | TokenErrorKind::Other => self.config.cooldown,
                    _ => self.config.recheck,
                };
                state.failure = Some(Failure {
                    error: error.clone(),
                    until: Instant::now() + wait,
                });
                Err(error)
            }
        }
    }

    fn refresh_at(&self, expires_at: SystemTime, jitter: Duration) -> SystemTime {
        expires_at
            .checked_sub(self.config.margin + jitter)
            .unwrap_or(UNIX_EPOCH)
    }

    fn fresh(&self, jitter: Duration, record: &TokenRecord) -> Fresh {
        Fresh {
            token: record.access_token.clone(),
            expires_at: record.expires_at,
            refresh_at: record.expires_at.map(|at| self.refresh_at(at, jitter)),
            can_refresh: record.refresh_token.is_some()
                && record.status != TokenStatus::NeedsReauthorization,
        }
    }

    fn store_failed(&self, error: &StoreError) -> TokenError {
        TokenError::new(
            TokenErrorKind::Unavailable,
            format!("the token store failed: {error}"),
        )
        .with_retry_after(self.config.cooldown)
    }

    /// Loads the connection's record and, when its token is due or was refused, refreshes it
    /// under a lease. Runs once per connection at a time in this process; the lease makes it
    /// once at a time across processes sharing the store.
    async fn run_flight(
        &self,
        connection: &ConnectionId,
        conn: &Conn,
        stale: Option<AccessToken>,
    ) -> Result<Fresh, TokenError> {
        let key = StoreKey::new(Arc::clone(&self.integration), connection.clone());
        let give_up = Instant::now() + self.config.lease * 2;
        loop {
            let Some(current) = self
                .store
                .get(&key)
                .await
                .map_err(|e| self.store_failed(&e))?
            else {
                return Err(TokenError::not_found());
            };
            let now = self.clock.now();
            let record = &current.record;
            let refused = stale.as_ref() == Some(&record.access_token);
            let expired = record.expires_at.is_some_and(|at| now >= at);
            let usable = !refused && !expired;
            let due = record
                .expires_at
                .is_some_and(|at| now >= self.refresh_at(at, conn.jitter));
            if usable && !due {
                return Ok(self.fresh(conn.jitter, record));
            }
            if record.refresh_token.is_none() || record.status == TokenStatus::NeedsReauthorization
            {
                if usable {
                    return Ok(self.fresh(conn.jitter, record));
                }
                return self.mark_dead(&key, &current, refused).await;
            }
            if let Some(lease) = &record.lease {
                if lease.holder != self.holder && lease.until > now {
                    if usable {
                        // Another process is refreshing; this token is still good meanwhile.
                        let mut fresh = self.fresh(conn.jitter, record);
                        fresh.refresh_at = Some(now + self.config.lease_poll);
                        return Ok(fresh);
                    }
                    if Instant::now() >= give_up {
                        return Err(TokenError::new(
                            TokenErrorKind::Unavailable,
                            "another process has been refreshing this connection's token for too long",
                        )
                        .with_retry_after(self.config.cooldown));
                    }
                    tokio::time::sleep(self.config.lease_poll).await;
                    continue;
                }
            }
            let mut leased = record.clone();
            leased.lease = Some(Lease {
                holder: self.holder.clone(),
                until: now + self.config.lease,
            });
            match self
                .store
                .compare_and_swap(&key, Some(current.version), leased.clone())
                .await
                .map_err(|e| self.store_failed(&e))?
            {
                Swap::Swapped(version) => return self.refresh(&key, conn, leased, version).await,
                Swap::Conflict => {}
            }
        }
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
        let outcome = self.provider.refresh(&self.http, &refresh_token).await;
        let now = self.clock.now();
        match outcome {
            Ok(granted) => {
                let Granted {
                    access_token,
                    refresh_token: rotated,
                    expires_in,
                    token_type,
                    scopes,
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
                };
                let fresh = self.fresh(conn.jitter, &record);
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

    /// Writes refreshed credentials over the leased record. If the record changed meanwhile
    /// but still holds the refresh token that was used (someone took over a lapsed lease
    /// without finishing), writes over that; if it holds another one (a re-authorization or
    /// another refresher finished), leaves it.
    async fn write_refreshed(
        &self,
        key: &StoreKey,
        version: u64,
        record: TokenRecord,
        used: &crate::Secret,
    ) {
        let mut expected = version;
        for _ in 0..3 {
            match self
                .store
                .compare_and_swap(key, Some(expected), record.clone())
                .await
            {
                Ok(Swap::Swapped(_)) => return,
                Ok(Swap::Conflict) => match self.store.get(key).await {
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
                        return;
                    }
                    Err(error) => {
                        tracing::error!(connection = %key, %error, "could not store refreshed credentials");
                        return;
                    }
                },
                Err(error) => {
                    tracing::error!(connection = %key, %error, "could not store refreshed credentials");
                    return;
                }
            }
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
