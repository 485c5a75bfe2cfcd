//! The retry-timeout layer: retries that never duplicate a `POST`, waits the server asks
//! for, a budget that prevents retry storms, a deadline for the whole call, and a timeout
//! for each attempt.
//!
//! # The default policy, and why `POST` is different
//!
//! A request is retried after a transport error, an [attempt timeout](AttemptTimeoutLayer),
//! or a 408, 429, 500, 502, 503 or 504 — when sending it twice cannot do anything twice.
//! That holds for the idempotent methods (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`,
//! `TRACE`). A `POST` that got a 503 or timed out may have created a conversation or sent a
//! message before the failure; sending it again would do it again. So `POST` and `PATCH`
//! are retried only when the failure proves the server did not act: the connection could
//! not be made (nothing was written), or the server answered 429 (it refused the request).
//! A caller who knows better (an upsert) puts [`RetrySafe`](blueprint_core::RetrySafe)
//! in the request's extensions. The whole policy can be replaced: any
//! `Fn(&RequestInfo, &Outcome) -> Option<RetryReason>` is a [`RetryPolicy`].
//!
//! A response the rate-limit layer marked rate limited
//! ([`RateLimit::limited`](blueprint_core::RateLimit), for APIs that say so with another
//! status: GitHub's 403 with `X-RateLimit-Remaining: 0`) is classified as a 429.
//!
//! # Waits
//!
//! - Backoff: exponential with full jitter, 100 ms doubling up to 10 s, 3 attempts in all
//!   ([`Backoff`]; all configurable).
//! - Server-directed waits win: the [`RateLimit`](blueprint_core::RateLimit) extension the
//!   rate-limit layer puts on a response, else the response's `Retry-After`
//!   (delta-seconds or HTTP-date). The layer waits exactly that long plus a small jitter,
//!   never less, and not longer than [`RetryBuilder::max_server_wait`] (60 s by default):
//!   beyond that the response is handed back.
//!
//! # Deadline
//!
//! [`RetryBuilder::deadline`] sets a time budget for the whole call, retries and waits
//! included, and puts it in the request as a [`Deadline`](blueprint_core::Deadline) for the
//! layers below (a caller's tighter `Deadline` wins). When a wait would pass it, the layer
//! stops and hands back the last response as it is — the caller sees the 429 and its
//! `RateLimit`/`Retry-After`, so it knows when to come back. When the deadline passes during
//! an attempt, the call fails with [`DeadlineExceeded`].
//!
//! # Budget
//!
//! Retries from every clone of the service draw on one [`RetryBudget`]: over a sliding
//! window of 10 s, they may add 20% on top of first attempts, plus 10 retries per second.
//! When the upstream is down for everyone, the extra load stays near 20% instead of
//! tripling; the retries that are refused are logged and the last result is returned.
//!
//! # Bodies
//!
//! The inner service receives `Request<ReplayBody<B>>`. As the first attempt streams the
//! request body, up to 64 KiB of it ([`RetryBuilder::replay_cap`]) is recorded (reference
//! counted, not copied); a body sent to its end within the cap is sent again byte for byte,
//! trailers included, so a chunked upload is retried like any other. A body that passes the
//! cap is sent once and that request is not retried (logged at DEBUG). An empty body, or
//! one already in memory, costs no allocation.
//!
//! # Replays after a token refresh
//!
//! This layer keeps the stack's only copy of a request. When the token-refresh layer below
//! answers a 401 with [`CredentialsRefreshed`](blueprint_core::CredentialsRefreshed) (it
//! renewed the connection's token), the request is sent again at once, whatever its method —
//! a 401 proves it was not processed — once per call, besides `max_attempts`, with
//! [`ReplayAfterRefresh`](blueprint_core::ReplayAfterRefresh) on the new attempt
//! ([`RetryBuilder::replay_after_refresh`]).
//!
//! # Events
//!
//! Besides its log lines, the layer reports each retry, each retry it declined and each
//! replay after a refresh as a typed [`Event`](blueprint_core::Event) to the
//! [`EventSink`](blueprint_core::EventSink) given to [`RetryBuilder::events`].
//!
//! # Attempts
//!
//! The inner service is polled ready again before every retry. Each retry's request
//! carries its [`Attempt`](blueprint_core::Attempt) number and emits an INFO event
//! (attempt, reason, wait); a response that took more than one attempt carries an
//! `Attempt` extension with the number of attempts made (absent means one). A retry's
//! request carries the first one's method, URI, headers and extensions; to keep the common
//! call cheap, the extensions are copied as a map only when the caller put extensions of
//! its own on the request (the Blueprint ones are kept as plain values).
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use blueprint_core::{BoxError, ReplayBody};
//! use blueprint_retry::{AttemptTimeoutLayer, RetryLayer};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // An upstream that fails once with 503, then answers.
//! let calls = Arc::new(AtomicUsize::new(0));
//! let upstream = service_fn({
//!     let calls = calls.clone();
//!     move |_req: Request<ReplayBody<Full<Bytes>>>| {
//!         let n = calls.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!             Ok::<_, BoxError>(Response::builder().status(status).body(())?)
//!         }
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .max_attempts(4)
//!             .deadline(Duration::from_secs(30))
//!             .build()?,
//!     )
//!     .layer(AttemptTimeoutLayer::new(Duration::from_secs(10)))
//!     .service(upstream);
//!
//! let response = client
//!     .oneshot(Request::get("https://api.example.com/contacts").body(Full::default())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # Ok(())
//! # }
//! ```

mod budget;
mod config;
mod error;
mod future;
mod layer;
mod policy;
mod timeout;

pub use budget::RetryBudget;
pub use config::{Backoff, InvalidConfig};
pub use error::DeadlineExceeded;
pub use future::ResponseFuture;
pub use layer::{Retry, RetryBuilder, RetryLayer};
pub use policy::{DefaultPolicy, Outcome, RequestInfo, RetryPolicy, RetryReason, classify_error};
pub use timeout::{AttemptTimeout, AttemptTimeoutError, AttemptTimeoutLayer, TimeoutFuture};
