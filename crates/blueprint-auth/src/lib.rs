//! The auth-injection layer: puts a connection's bearer token on every request, and only on
//! requests for the configured origin.
//!
//! For each request, [`AddAuthorization`] reads the request's [`ConnectionId`] extension
//! (the default connection when absent), asks its [`TokenSource`] for that connection's
//! token and sets `Authorization: Bearer …`, marked sensitive so that logging layers which
//! honour the flag never print it.
//!
//! Why the origin check: a token is a password. A redirect that was followed, a URL taken
//! from a response (`pages.next`), a typo in a base URL: any of these would otherwise hand
//! the token to another host. So a request for another scheme, host or port is refused
//! with [`ForeignOriginError`] before anything is sent, unless
//! [`AuthLayer::send_foreign_without_credentials`] lets it through untouched. The check
//! reads the request's absolute URI itself (no allocation): whether a token may be sent
//! must not depend on an extension any layer could insert, nor on a `Host` header. A
//! relative URI (`/contacts`) counts as foreign, since where it goes is decided below this
//! layer: put the base-URL step (the engine's stack resolves paths at the top) above it.
//!
//! On a 401, the response carries a [`SentToken`](blueprint_core::SentToken) extension
//! naming the token this layer sent and its connection, so that the token-refresh layer
//! above invalidates exactly that token (a background refresh may have replaced the
//! source's current one meanwhile). The token is fetched once per attempt, here.
//!
//! A caller's own `Authorization` header is kept unless [`AuthLayer::override_existing`]
//! is set. When the token source fails, the error is a [`TokenSourceError`] that names
//! the connection and never the secret.
//!
//! The service allocates nothing per request when the token source answers at once
//! (a static token, a map, a cached OAuth2 token): the header value is built when the
//! token is made and shared by reference count.
//!
//! # Example
//!
//! ```
//! use blueprint_auth::{AuthLayer, StaticToken};
//! use blueprint_core::{BoxError, ConnectionId};
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // Stands in for an HTTP client: answers with the Authorization header it was sent.
//! let client = service_fn(|req: Request<()>| async move {
//!     let auth = req.headers().get("authorization").cloned();
//!     Ok::<_, BoxError>(Response::new(auth))
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(AuthLayer::new("https://api.example.com", StaticToken::new("s3cr3t")?)?)
//!     .service(client);
//!
//! let response = service
//!     .clone()
//!     .oneshot(Request::get("https://api.example.com/me").body(())?)
//!     .await?;
//! assert_eq!(response.body().as_ref().unwrap(), "Bearer s3cr3t");
//!
//! // Another host never sees the token.
//! let err = service
//!     .oneshot(Request::get("https://evil.example.net/").body(())?)
//!     .await
//!     .unwrap_err();
//! assert!(err.is::<blueprint_auth::ForeignOriginError>());
//! # Ok(())
//! # }
//! ```

mod error;
mod future;
mod layer;
mod source;

pub use blueprint_core::{AccessToken, ConnectionId, Origin, TokenSource};
pub use error::{ForeignOriginError, TokenSourceError};
pub use future::ResponseFuture;
pub use layer::{AddAuthorization, AuthLayer, ExistingAuthorization, ForeignOrigin};
pub use source::{FnTokenSource, StaticToken, TokenMap, from_fn};

#[cfg(test)]
mod tests;
