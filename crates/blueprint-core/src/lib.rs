//! The vocabulary shared by the Blueprint layers.
//!
//! Each Blueprint layer (auth-injection, token-refresh, rate-limit-detect, retry-timeout,
//! logging) is its own crate, and no layer crate depends on another. They cooperate only
//! through the small types defined here, carried in request and response extensions:
//!
//! - [`ConnectionId`] (request extension): whose credentials and budget a request uses;
//!   absent means [`ConnectionId::default`].
//! - [`AccessToken`]: a bearer token whose `Debug` and `Display` never show the secret.
//! - [`Origin`]: scheme, host and port; credentials are only sent to the configured one.
//! - [`Deadline`] (request): when the whole call must be done; [`Attempt`] (request and
//!   response): which attempt this is, or how many were made; [`RetrySafe`] (request): the
//!   caller's word that a non-idempotent request may be resent.
//! - [`Target`] (request): the call's origin and route template, resolved once at the top.
//! - [`RateLimit`] (response): what the server said about its rate limit.
//! - [`SentToken`], [`CredentialsRefreshed`] (response) and [`ReplayAfterRefresh`]
//!   (request): how the auth, token-refresh and retry layers agree on a 401: the token sent
//!   is the one invalidated, and the retry layer's copy of the request is the one replayed.
//! - [`ReplayBody`]: a request body recorded as it is sent, so that it can be sent again;
//!   [`KeptRequest`]: the cheap copy of a request that a layer keeps to resend it.
//! - [`TokenSource`]: where the auth layer gets a connection's token, and where a token found
//!   stale is reported.
//! - [`Secret`]: the one type for secrets (refresh tokens, client secrets, keys).
//! - [`Event`], [`EventSink`]: what the layers report for metrics, typed.
//!
//! # Example
//!
//! A token source that always hands out one token:
//!
//! ```
//! use blueprint_core::{AccessToken, ConnectionId, TokenFuture, TokenSource};
//!
//! struct OneToken(AccessToken);
//!
//! impl TokenSource for OneToken {
//!     fn token(&self, _connection: &ConnectionId) -> TokenFuture {
//!         TokenFuture::ready(Ok(self.0.clone()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = OneToken(AccessToken::new("s3cr3t")?);
//! let token = source.token(&ConnectionId::default()).await?;
//! assert_eq!(token.secret(), "s3cr3t");
//! assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
//! # Ok(())
//! # }
//! ```

mod call;
mod connection;
mod events;
mod headers;
mod kept;
mod origin;
mod replay;
mod secret;
mod target;
mod token;

pub use call::{
    Attempt, AttemptCount, CredentialsRefreshed, Deadline, NeedsReauthorization, RateLimit,
    ReplayAfterRefresh, RetrySafe, instant_after,
};
pub use events::{Event, EventSink, Events, HoldReason, RefreshOutcome, RetryReason, RetryStop};
pub use kept::KeptRequest;
pub use replay::{DEFAULT_REPLAY_CAP, Replay, ReplayBody};
pub use secret::Secret;
pub use target::Target;

pub use connection::ConnectionId;
pub use headers::parse_retry_after;
pub use origin::{InvalidOrigin, Origin};
pub use token::{
    AccessToken, InvalidToken, SentToken, TokenError, TokenErrorKind, TokenFuture, TokenSource,
    TokenUnavailable,
};

/// The error type the Blueprint layers return: a boxed error to downcast to the typed
/// errors each layer documents (the same convention as `tower`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
