//! The OAuth2 token source: a per-connection cache in front of a [`TokenStore`] that
//! refreshes through the provider's token endpoint, one refresh at a time.
//!
//! - `cache`: what is held per connection (bounded);
//! - `flight`: the one refresh (or load) per connection in this process;
//! - `lease`: the one refresh per connection across processes sharing a store;
//! - `follow`: what other processes change in the store, this one forgets.

mod cache;
mod flight;
mod follow;
mod lease;
mod unstored;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint_core::{AccessToken, ConnectionId, EventSink, TokenError, TokenFuture, TokenSource};
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::store::{StoreError, StoreKey, TokenRecord, TokenStatus, TokenStore};
use crate::{Clock, HttpClient, Provider, SystemClock};

use cache::{Cached, Conn, Connections};

/// Tokens are refreshed this long before they expire, by default (plus jitter), but never
/// more than half their lifetime before.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Up to this much is added to the margin, at random per connection, by default, so that
/// connections issued together are not all refreshed in the same second.
pub const DEFAULT_REFRESH_JITTER: Duration = Duration::from_secs(30);
/// After a refresh fails for a reason that may pass, calls fail fast for this long.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
/// After a connection was found to need re-authorization (or to have no credentials),
/// the store is read again at most this often, to notice a new authorization.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(5);
/// After the store failed, it is tried again for a connection after this long.
pub const DEFAULT_STORE_RETRY: Duration = Duration::from_secs(1);
/// How long a refresh lease holds if its holder never finishes. The token-endpoint call
/// of a refresh is bounded by [`lease_call_bound`] of it, so that a live holder finishes
/// (and writes) before its lease lapses.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How often a source waiting for another process's refresh reads the store (it also reads
/// it as soon as the store's change feed reports a write of the record).
pub const DEFAULT_LEASE_POLL: Duration = Duration::from_millis(100);
/// The most connections a source holds in memory, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The longest wait between two tries of writing refreshed credentials that the store
/// failed to take (the first comes after [`DEFAULT_STORE_RETRY`], each next twice later).
pub const WRITE_RETRY_MAX: Duration = Duration::from_secs(30);

/// The longest a refresh's token-endpoint call may take under a lease of `lease`: three
/// quarters of it, leaving the last quarter for writing the new credentials. A client
/// whose own timeout is shorter keeps it.
pub fn lease_call_bound(lease: Duration) -> Duration {
    lease.saturating_mul(3) / 4
}

/// A [`TokenSource`] for OAuth2 connections: caches each connection's token, refreshes it
/// before it expires, and stores what it gets.
///
/// - **Cached:** a fresh token is handed out at once, allocating nothing.
/// - **Proactive:** a token that expires within the margin (default 60 s, plus up to 30 s
///   of jitter) is refreshed in the background while the still-valid one keeps being
///   handed out; an expired one is waited for.
/// - **Single-flight:** every concurrent caller for one connection shares one refresh,
///   run on its own task so that a cancelled caller cannot lose a rotated refresh token.
/// - **One refresh across processes:** with a store shared by several processes
///   (replicas), the refresher first takes a *lease* on the record by compare-and-swap on
///   its version (the version is the fencing token; the lease names a holder id drawn per
///   flight and lapses after [`OAuth2TokenSourceBuilder::lease`], default 60 s). The
///   others wait until the new token is there, and never call the token endpoint
///   meanwhile: they read the store again when its [change feed](crate::TokenStore::changes)
///   reports the holder's write (when the source
///   [follows changes](OAuth2TokenSourceBuilder::follow_changes)), and every poll interval
///   (default 100 ms) regardless. A holder that died is replaced
///   once its lease lapses; a live one cannot outlive it, since its token-endpoint call is
///   bounded by [`lease_call_bound`] (¾ of the lease). A lease lapses for another process
///   only when both clocks say so: the wall-clock expiry its holder wrote, and this
///   process's monotonic clock a whole lease (its own setting) after it first saw the
///   lease. A replica whose wall clock runs ahead therefore never takes a lease early;
///   one whose clock runs behind takes over late, as late as its clock is behind.
/// - **What other processes change:** the source follows the store's
///   [change feed](TokenStore::changes) (PostgreSQL: `LISTEN`/`NOTIFY`; SQLite: a poll of
///   the store's change log every [`SQLITE_CHANGE_POLL`](crate::SQLITE_CHANGE_POLL)) and
///   forgets the cached token of a connection another process deleted, imported or
///   refreshed; the next call reads the store. When the feed may have missed changes (its
///   connection dropped, it fell behind) it says so once it is tracking again and every
///   cached token is read again. A store without a feed (the trait's default) gives no
///   such promise.
/// - **On a 401:** the refused token is never handed out again, and the store is read
///   before refreshing: another process may already have rotated it.
/// - **Rotation:** a new refresh token replaces the old; an answer without one keeps it.
///   The new credentials are written by compare-and-swap *before* the new access token is
///   handed out. If that write fails because the store is away, the token is served
///   anyway and the write is retried in the background (with backoff, up to
///   [`WRITE_RETRY_MAX`] apart) until it lands or newer credentials are stored, for up to
///   an hour. A process about to stop calls
///   [`flush_unstored`](OAuth2TokenSource::flush_unstored) to try those writes at once and
///   wait for them (`blueprint-proxy` does, within its shutdown grace).
///
///   **If the process dies between the token endpoint's answer and the write** (or while
///   the background retry still waits for the store), the rotated refresh token dies with
///   it: the store still holds the old refresh token, with this process's lease. Once the
///   lease lapses another process refreshes with the old refresh token: a provider that
///   does not rotate (or that accepts a recently replaced token) answers as usual; one
///   that rotates strictly refuses it, and the connection is marked
///   [`TokenStatus::NeedsReauthorization`]. No other token is lost, and no two processes
///   ever write different credentials over each other: the one whose compare-and-swap
///   fails keeps what the store holds.
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
    /// This source's id: a lease's holder is `<id>-<flight number>`.
    holder: String,
    flights: AtomicU64,
    connections: Connections,
    events: EventSink,
    follower: OnceLock<Option<follow::Follower>>,
    unstored: Arc<unstored::Unstored>,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    margin: Duration,
    jitter: Duration,
    cooldown: Duration,
    recheck: Duration,
    store_retry: Duration,
    lease: Duration,
    lease_poll: Duration,
    max_connections: usize,
    follow_changes: bool,
}

/// What a flight found: the token and when to look again.
struct Fresh {
    token: AccessToken,
    expires_at: Option<SystemTime>,
    refresh_at: Option<SystemTime>,
    can_refresh: bool,
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

/// Builds an [`OAuth2TokenSource`]; from [`OAuth2TokenSource::builder`].
#[derive(Debug)]
pub struct OAuth2TokenSourceBuilder {
    provider: Provider,
    store: Arc<dyn TokenStore>,
    integration: Arc<str>,
    http: Option<HttpClient>,
    clock: Arc<dyn Clock>,
    config: Config,
    events: EventSink,
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
    /// how often waiters read the store (default [`DEFAULT_LEASE_POLL`]; a source that
    /// follows the store's changes also reads it as soon as the feed reports a write).
    ///
    /// The token-endpoint call of a refresh is bounded by [`lease_call_bound`] of `lease`
    /// (¾), or by the client's own timeout if that is shorter, so that a live holder
    /// finishes before its lease lapses. (A client built with `timeout(None)` is not
    /// bounded: then a holder stalled past its lease may be replaced while it waits.)
    #[must_use]
    pub fn lease(mut self, lease: Duration, poll: Duration) -> Self {
        self.config.lease = lease;
        self.config.lease_poll = poll;
        self
    }

    /// Holds at most this many connections in memory (default
    /// [`DEFAULT_MAX_CONNECTIONS`]). When full, the least recently used are forgotten,
    /// those without a token first (a caller naming ids that do not exist cannot make the
    /// source grow); a forgotten connection is read from the store when next used.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// After the store fails, calls for the connection fail fast this long before the
    /// store is tried again (default [`DEFAULT_STORE_RETRY`]); short, so that calls work
    /// again soon after the store is back.
    #[must_use]
    pub fn store_retry(mut self, wait: Duration) -> Self {
        self.config.store_retry = wait;
        self
    }

    /// Whether the source follows the store's [change feed](TokenStore::changes), so that
    /// what other processes change is seen here (default `true`; it costs one task per
    /// source, and for SQLite one small query per [`SQLITE_CHANGE_POLL`](crate::SQLITE_CHANGE_POLL)).
    #[must_use]
    pub fn follow_changes(mut self, follow: bool) -> Self {
        self.config.follow_changes = follow;
        self
    }

    /// Where the source reports each refresh and its outcome
    /// ([`Event::TokenRefresh`](blueprint_core::Event::TokenRefresh)), for metrics.
    #[must_use]
    pub fn events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// The source.
    ///
    /// Inside a tokio runtime it starts following the store's changes at once; outside
    /// one, with its first refresh or load.
    pub fn build(self) -> OAuth2TokenSource {
        let http = self
            .http
            .unwrap_or_default()
            .timeout_at_most(lease_call_bound(self.config.lease));
        let inner = Arc::new(Inner {
            integration: self.integration,
            provider: self.provider,
            http,
            store: self.store,
            clock: self.clock,
            config: self.config,
            holder: format!("{:016x}", fastrand::u64(..)),
            flights: AtomicU64::new(0),
            connections: Connections::new(self.config.max_connections),
            events: self.events,
            follower: OnceLock::new(),
            unstored: Arc::default(),
        });
        inner.follow_changes();
        OAuth2TokenSource { inner }
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
                store_retry: DEFAULT_STORE_RETRY,
                lease: DEFAULT_LEASE,
                lease_poll: DEFAULT_LEASE_POLL,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                follow_changes: true,
            },
            events: EventSink::none(),
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
        self.inner.follow_changes();
        let conn = self.inner.conn(connection);
        // Said before the write, so that the store's report of it is known for this
        // process's own.
        conn.lock().seen = Some(record.access_token.clone());
        self.inner.store.put(&key, record.clone()).await?;
        let fresh = self.inner.fresh(conn.jitter, &record);
        let mut state = conn.lock();
        state.seen = Some(record.access_token.clone());
        state.cached = Some(fresh.into_cached());
        state.failure = None;
        Ok(())
    }

    /// Forgets what this source holds in memory for `connection` (its cached token, a
    /// cooldown); the next call reads the store.
    pub fn forget(&self, connection: &ConnectionId) {
        self.inner.connections.remove(connection);
    }

    /// Forgets every connection held in memory (those being refreshed finish first); the
    /// next call for each reads the store. For a store that lost track of what other
    /// processes changed.
    pub fn forget_all(&self) {
        self.inner.connections.clear();
    }

    /// Whether the source follows its store's change feed now (see
    /// [`OAuth2TokenSourceBuilder::follow_changes`]): `false` for a store without a feed,
    /// or before the source met a runtime.
    pub fn follows_changes(&self) -> bool {
        self.inner.follower.get().is_some_and(Option::is_some)
    }

    /// How many connections have refreshed credentials that the store failed to take and
    /// that a background write still retries (see [`flush_unstored`](Self::flush_unstored)).
    pub fn unstored(&self) -> usize {
        self.inner.unstored.len()
    }

    /// Tries every background write of refreshed credentials now (and again every 100 ms),
    /// and waits up to `within` for all of them to land. For a process about to stop: its
    /// runtime would drop those writes, and a rotated refresh token that only this process
    /// holds would be lost with them. Returns the connections still not stored, each also
    /// logged at ERROR; empty when there were none or all landed.
    pub async fn flush_unstored(&self, within: Duration) -> Vec<StoreKey> {
        self.inner.unstored.flush(within).await
    }

    /// How many connections this source holds in memory (at most
    /// [`OAuth2TokenSourceBuilder::max_connections`]).
    pub fn connections_held(&self) -> usize {
        self.inner.connections.len()
    }
}

impl fmt::Debug for OAuth2TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2TokenSource")
            .field("integration", &self.inner.integration)
            .field("token_url", &self.inner.provider.token_url())
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .field("connections", &self.inner.connections.len())
            .finish()
    }
}

impl TokenSource for OAuth2TokenSource {
    fn token(&self, connection: &ConnectionId) -> TokenFuture {
        let conn = self.inner.conn(connection);
        Inner::token_for(&self.inner, connection, &conn)
    }

    fn invalidate(&self, connection: &ConnectionId, stale: &AccessToken) {
        if let Some(conn) = self.inner.connections.get(connection) {
            let mut state = conn.lock();
            if let Some(cached) = state.cached.as_mut() {
                if cached.token == *stale {
                    cached.stale = true;
                }
            }
        }
    }

    /// `false` for a connection known to hold a token without a refresh token (such as
    /// Intercom's, which never expire): a 401 for it cannot be fixed by a refresh, so no
    /// copy of the request is kept for a replay. `true` otherwise (also for a connection
    /// not read yet).
    fn can_refresh(&self, connection: &ConnectionId) -> bool {
        let Some(conn) = self.inner.connections.get(connection) else {
            return true;
        };
        let state = conn.lock();
        state
            .cached
            .as_ref()
            .is_none_or(|cached| cached.can_refresh)
    }
}

impl Inner {
    fn conn(&self, connection: &ConnectionId) -> Arc<Conn> {
        self.connections
            .get_or_insert(connection, || self.random_jitter())
    }

    fn random_jitter(&self) -> Duration {
        let max = u64::try_from(self.config.jitter.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=max))
    }

    /// The hot path: the cached token if it is good, else a shared flight.
    pub(super) fn token_for(
        inner: &Arc<Inner>,
        connection: &ConnectionId,
        conn: &Arc<Conn>,
    ) -> TokenFuture {
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

    /// When a token expiring at `expires_at` (issued at `issued_at`) is refreshed: the
    /// margin plus this connection's jitter before expiry, but never more than half the
    /// token's lifetime before, so that a token that lives minutes is refreshed once, late
    /// in its life, not on every call.
    fn refresh_at(
        &self,
        issued_at: SystemTime,
        expires_at: SystemTime,
        jitter: Duration,
    ) -> SystemTime {
        let lifetime = expires_at
            .duration_since(issued_at)
            .unwrap_or(Duration::ZERO);
        let early = self.config.margin.saturating_add(jitter).min(lifetime / 2);
        expires_at.checked_sub(early).unwrap_or(UNIX_EPOCH)
    }

    fn fresh(&self, jitter: Duration, record: &TokenRecord) -> Fresh {
        Fresh {
            token: record.access_token.clone(),
            expires_at: record.expires_at,
            refresh_at: record
                .expires_at
                .map(|at| self.refresh_at(record.updated_at, at, jitter)),
            can_refresh: record.refresh_token.is_some()
                && record.status != TokenStatus::NeedsReauthorization,
        }
    }

    /// A failure of the store as a token error: `Unavailable`, retried after the
    /// store-retry wait, with the [`StoreError`] as its source (so that a caller can tell
    /// "the store is down" from "the token endpoint is down").
    fn store_failed(&self, error: StoreError) -> TokenError {
        TokenError::new(
            blueprint_core::TokenErrorKind::Unavailable,
            format!("the token store failed: {error}"),
        )
        .with_retry_after(self.config.store_retry)
        .with_source(error)
    }

    /// A new lease holder id, for one flight.
    fn flight_holder(&self) -> String {
        let n = self.flights.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.holder)
    }
}

/// `instant + wait`, or far ahead if that overflows.
fn later(instant: Instant, wait: Duration) -> Instant {
    instant
        .checked_add(wait)
        .or_else(|| instant.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(instant)
}
