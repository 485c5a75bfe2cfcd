//! Token refresh for the Blueprint stack: a tower layer, an OAuth2 token source that
//! refreshes one connection at a time, token stores, and the authorization-code flow.
//!
//! Refresh races are the most reported bug class of OAuth2 proxies: concurrent requests
//! each refreshing (and a rotating refresh token invalidating all but one of them), a
//! failing token endpoint hammered on every request, a revoked grant retried forever.
//! This crate is built so that none of those can happen:
//!
//! - [`OAuth2TokenSource`] (a [`TokenSource`]) caches each connection's token and hands it
//!   out without allocating; it refreshes proactively (60 s before expiry, plus jitter)
//!   through the [`oauth2`] crate with its own [`HttpClient`] that follows no redirects.
//!   All concurrent callers for one connection share **one** refresh; across processes
//!   sharing a [`SqliteStore`], a lease taken by compare-and-swap makes it one refresh
//!   between them. A rotated refresh token replaces the old one (an answer without one
//!   keeps it). `invalid_grant` marks the connection as needing re-authorization and is
//!   never retried; a 5xx or network failure starts a cooldown during which calls fail
//!   fast. Tokens without expiry and refresh token (Intercom's) are never refreshed.
//! - [`RefreshLayer`] sits above the auth-injection layer, which gets its token from the
//!   same source, once per attempt, and names the token it sent on a 401
//!   ([`SentToken`](blueprint_core::SentToken)). On a 401 the layer marks exactly that
//!   token stale (only if it is still the current one, so a burst of 401s makes one
//!   refresh), waits for a fresh one and has the request replayed once, body included: by
//!   itself from its own copy ([`replay::OwnCopy`], the default), or, under a retry layer
//!   that keeps the stack's only copy, by marking the 401
//!   [`CredentialsRefreshed`](blueprint_core::CredentialsRefreshed) for the retry layer to
//!   replay ([`RefreshLayer::replay_by_retry`], what the engine does). If no refresh is
//!   possible, or the replay gets a 401 too, the 401 comes back with a
//!   [`NeedsReauthorization`] extension. A token that cannot be refreshed (no refresh
//!   token: Intercom's) costs no copy at all ([`TokenSource::can_refresh`]).
//! - [`TokenStore`]: [`MemoryStore`], [`SqliteStore`] (WAL, migrations, safe for several
//!   processes on one machine) and, with feature `postgres`, `PostgresStore` (shared by
//!   replicas on many machines); the last two optionally encrypt tokens with AES-256-GCM.
//!   Each reports what any process sharing it writes through a [`ChangeFeed`].
//! - [`AuthorizationFlow`]: authorization URL with a random state and PKCE, pending
//!   authorizations that expire and work once, code exchange, credentials stored.
//!
//! Secrets (access and refresh tokens, client secrets, codes, keys) never appear in
//! `Debug`, `Display`, errors or logs: they are [`AccessToken`]s and [`Secret`]s, and
//! errors keep only a provider's error code, never its answer.
//!
//! # Example
//!
//! ```
//! use std::time::SystemTime;
//!
//! use blueprint_core::{
//!     AccessToken, BoxError, ConnectionId, NeedsReauthorization, ReplayBody, SentToken,
//!     TokenSource,
//! };
//! use blueprint_refresh::{
//!     MemoryStore, OAuth2TokenSource, Provider, ProviderConfig, RefreshLayer, StoreKey,
//!     TokenRecord, TokenStore,
//! };
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let provider = Provider::new(ProviderConfig {
//!     client_id: "my-app".into(),
//!     client_secret: Some("app-secret".into()),
//!     auth_url: Some("https://app.intercom.com/oauth".into()),
//!     token_url: "https://api.intercom.io/auth/eagle/token".into(),
//!     ..ProviderConfig::default()
//! })?;
//!
//! // An Intercom connection: a token with no expiry and no refresh token.
//! let store = MemoryStore::new();
//! let acme = ConnectionId::new("acme");
//! let record = TokenRecord::new(AccessToken::new("tok_acme")?, SystemTime::now());
//! store.put(&StoreKey::new("intercom", acme.clone()), record).await?;
//! let source = OAuth2TokenSource::builder(provider, store).integration("intercom").build();
//!
//! // Stands in for the auth layer and the HTTP client: it sends the source's token and
//! // the server refuses it; like the auth layer, it names the token it sent on the 401.
//! let client = service_fn({
//!     let source = source.clone();
//!     move |request: Request<ReplayBody<Full<Bytes>>>| {
//!         let source = source.clone();
//!         async move {
//!             let connection = ConnectionId::of(&request);
//!             let token = source.token(&connection).await?;
//!             let mut response = Response::new(());
//!             *response.status_mut() = StatusCode::UNAUTHORIZED;
//!             response.extensions_mut().insert(SentToken { token, connection });
//!             Ok::<_, BoxError>(response)
//!         }
//!     }
//! });
//! let service = ServiceBuilder::new()
//!     .layer(RefreshLayer::new(source.clone()))
//!     .service(client);
//!
//! let mut request = Request::get("https://api.intercom.io/me").body(Full::new(Bytes::new()))?;
//! request.extensions_mut().insert(acme.clone());
//! let response = service.oneshot(request).await?;
//!
//! // Nothing to refresh with: the 401 says a person must authorize the connection again.
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! let marker = response.extensions().get::<NeedsReauthorization>();
//! assert_eq!(marker.map(|m| &m.connection), Some(&acme));
//! # Ok(())
//! # }
//! ```

mod clock;
mod error;
mod flow;
mod future;
mod http_client;
mod layer;
mod provider;
mod source;
mod store;

pub use blueprint_core::{
    AccessToken, ConnectionId, NeedsReauthorization, ReplayBody, Secret, TokenSource,
};
pub use clock::{Clock, SystemClock, TokioClock};
pub use error::TokenUnavailableError;
pub use flow::{
    AuthorizationFlow, AuthorizationRequest, AuthorizeError, Authorized, CallbackError,
    CallbackParams, DEFAULT_PENDING_TTL, MAX_PENDING, Pending, PendingAuthorizations,
};
pub use future::{ReplayingFuture, ResponseFuture};
pub use http_client::{DEFAULT_TOKEN_TIMEOUT, HttpClient, HttpClientError};
pub use layer::{Refresh, RefreshLayer, replay};
pub use provider::{
    ClientAuth, MAX_PARAM_LEN, ParamError, PerConnection, Provider, ProviderConfig,
    ProviderConfigError, ProviderUrls, TokenEndpointError,
};
pub use source::{
    DEFAULT_COOLDOWN, DEFAULT_LEASE, DEFAULT_LEASE_POLL, DEFAULT_MAX_CONNECTIONS, DEFAULT_RECHECK,
    DEFAULT_REFRESH_JITTER, DEFAULT_REFRESH_MARGIN, DEFAULT_STORE_RETRY, OAuth2TokenSource,
    OAuth2TokenSourceBuilder, WRITE_RETRY_MAX, lease_call_bound,
};
pub use store::{
    Change, ChangeBroadcast, ChangeFeed, ConnectionParams, DecryptError, EncryptionCheck,
    EncryptionKey, InvalidKeyError, Lease, MemoryStore, MissingKeyError, SQLITE_CHANGE_POLL,
    SqliteStore, StoreError, StoreFuture, StoreKey, StoredToken, Swap, TokenRecord, TokenStatus,
    TokenStore,
};
#[cfg(feature = "postgres")]
pub use store::{PostgresOptions, PostgresStore};
