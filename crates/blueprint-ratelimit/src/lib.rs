//! The rate-limit-detect layer: reads every rate-limit header a server sends, and spends the
//! budget it announces to the last call without tripping the limit.
//!
//! # Detection
//!
//! After each response, [`RateLimiting`] reads `X-RateLimit-Limit` / `-Remaining` / `-Reset`
//! (names and the reset's [`ResetFormat`] configurable: [`HeaderConfig`]), the IETF
//! `RateLimit-*` headers and `RateLimit` / `RateLimit-Policy` fields, and `Retry-After`
//! (see [`parse`]). Whatever they say goes into a [`RateLimit`] extension on the response,
//! with the reset as a tokio [`Instant`](tokio::time::Instant) and `limited` set for a 429;
//! the retry layer and the logging layer read it. Garbage is treated as absent, never a
//! panic; a reset in the past is ignored and one further than an hour is brought back to
//! an hour ([`RateLimitLayer::max_reset`]). Wall-clock values are measured against an
//! injectable [`WallClock`], so tests with paused tokio time stay consistent
//! ([`TokioClock`]).
//!
//! # Pacing
//!
//! The layer keeps a budget per key = (origin, [`ConnectionId`]), shared by every clone of
//! the service, in bounded memory. Before a request is sent:
//!
//! - a key the server has said nothing about is never held;
//! - after a 429, or while the server says nothing is left and the reset is ahead, requests
//!   are held until the reset (or `Retry-After`), each then waiting a small random extra
//!   ([`RateLimitLayer::spread`]) so they do not all fire at once; requests in flight count
//!   against what is left;
//! - when the request's [`Deadline`](blueprint_core::Deadline) comes before the budget frees
//!   up, nothing is sent and the call fails with [`RateLimitedError`], which says when to
//!   come back;
//! - with smoothing (on by default), when what is left is small for the time left in the
//!   window, requests are spaced so that it lasts to the reset;
//! - a server whose windows turn later than the reset it writes (a reset truncated to the
//!   second, a clock behind ours) answers 429 right after that reset: the key is then held
//!   100 ms at a time and probed with one request at a time, and the lag found is added to
//!   every later reset of the key, so the next windows cost no 429.
//!
//! A 429 that names neither a reset nor `Retry-After`, or that says budget is left (a cap on
//! concurrent jobs, like Intercom's "5 pending exports"), holds nothing: waiting for a reset
//! would not clear it, and the layer does not invent a wait. Holding and resuming emit
//! `tracing` events with the connection, the origin and the wait.
//!
//! # Several processes
//!
//! Each process keeps its own budgets: replicas in front of one API would each spend the
//! whole budget. [`RateLimitLayer::shared`] makes every replica admit against one budget
//! per key in a store they share, the trait [`SharedBudgets`] (see [`shared`]); with the
//! cargo feature `redis`, `RedisBudgets` keeps them in Redis (one Lua script, one round
//! trip per call). While the store does not answer, each process paces on its own, as
//! above, and reports it ([`Event::Fallback`](blueprint_core::Event::Fallback)); no call
//! fails for it. Retry budgets stay per process.
//!
//! In the Blueprint stack this layer sits under the retry layer (which sets the deadline
//! and reads the extension) and above token refresh. Waiting needs a tokio runtime with
//! time enabled.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use blueprint_core::{BoxError, Deadline, RateLimit};
//! use blueprint_ratelimit::{RateLimitLayer, RateLimitedError};
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // Stands in for an API that has spent its budget until 30 seconds from now.
//! let api = service_fn(|_req: Request<()>| async {
//!     Ok::<_, BoxError>(
//!         Response::builder()
//!             .header("ratelimit-limit", "100")
//!             .header("ratelimit-remaining", "0")
//!             .header("ratelimit-reset", "30")
//!             .body(())?,
//!     )
//! });
//! let service = ServiceBuilder::new().layer(RateLimitLayer::ietf()).service(api);
//!
//! let response = service.clone().oneshot(Request::get("https://api.example.com/a").body(())?).await?;
//! let limit = response.extensions().get::<RateLimit>().unwrap();
//! assert_eq!((limit.limit, limit.remaining), (Some(100), Some(0)));
//!
//! // The budget is spent for 30 s: a request that must be done in 5 s is not sent.
//! let mut request = Request::get("https://api.example.com/b").body(())?;
//! request.extensions_mut().insert(Deadline::after(Duration::from_secs(5)));
//! let error = service.oneshot(request).await.unwrap_err();
//! let error = error.downcast_ref::<RateLimitedError>().unwrap();
//! assert_eq!(error.retry_after(), Duration::from_secs(30));
//! # Ok(())
//! # }
//! ```

mod clock;
mod error;
mod future;
mod layer;
mod memo;
pub mod parse;
#[cfg(feature = "redis")]
mod redis;
pub mod shared;
mod signal;
mod state;

pub use blueprint_core::{ConnectionId, Origin, RateLimit};
pub use clock::{SystemClock, TokioClock, WallClock};
pub use error::RateLimitedError;
pub use future::ResponseFuture;
pub use layer::{DEFAULT_MAX_KEYS, DEFAULT_SPREAD, RateLimitLayer, RateLimiting};
pub use parse::{HeaderConfig, ResetFormat};
#[cfg(feature = "redis")]
pub use redis::{
    DEFAULT_PREFIX, DEFAULT_PROBE_INTERVAL, DEFAULT_REDIS_TIMEOUT, RedisBudgets,
    RedisBudgetsBuilder, RedisStats, RedisUrlError,
};
pub use shared::SharedBudgets;
pub use signal::{RateLimitRule, WaitFrom};

#[cfg(test)]
mod tests;
