//! The logging layer: one `tracing` span per outbound call and one event when it ends,
//! with OpenTelemetry field names and secrets kept out.
//!
//! # What is recorded
//!
//! The span, named `http.client`, is an OpenTelemetry client span (`otel.kind = "client"`,
//! `otel.name` = `{method} {url.template}`, as the HTTP conventions name it, for an
//! exporter such as `tracing-opentelemetry`) and carries `http.request.method`, `server.address`,
//! `server.port`, `url.template`, `blueprint.connection_id` and, once known,
//! `http.response.status_code`, `http.request.resend_count`, `error.type` and
//! `duration_ms`. `url.template` is the call's route (`/contacts/{id}`) when the stack
//! resolved it (the request's [`Target`](blueprint_core::Target)), else the path with every
//! segment that may be an id (it holds a digit or a percent-encoded byte, or is longer than
//! 32 bytes) written `{}`: raw ids are not logged unless asked for with
//! [`TraceLayer::log_raw_path`]. The origin comes from the `Target` too when there is one. Every event an inner layer
//! emits while the call runs (retries, rate-limit waits, token refreshes) falls inside it.
//!
//! When the response headers arrive, or the call fails, one event is emitted at a level
//! that depends on the outcome: [`Level::DEBUG`] for success, [`Level::WARN`] for a 4xx,
//! [`Level::ERROR`] for a 5xx or an error. All four are configurable with
//! [`TraceLayer::levels`]. The event carries the status, the duration and, for an error,
//! its message.
//!
//! # What is never recorded
//!
//! - Headers, unless asked for with [`TraceLayer::log_request_headers`] or
//!   [`TraceLayer::log_response_headers`]; even then the values of `Authorization`,
//!   `Proxy-Authorization`, `Cookie`, `Set-Cookie`, every header marked sensitive
//!   ([`http::HeaderValue::set_sensitive`], which the auth layer sets on the token it adds)
//!   and any name given to [`TraceLayer::redact_header`] are printed as `[redacted]`.
//! - The query string, unless parameters are listed with [`TraceLayer::show_query_params`];
//!   then those are shown and the values of all others are `[redacted]`.
//!
//! # Why not `tower_http::trace`
//!
//! tower-http's `Trace` wraps the response body in its own type (so every layer above sees a
//! different body type), calls both `on_response` and `on_failure` for a 5xx (two events
//! for one outcome), takes seven type parameters, and has no notion of redaction of
//! sensitive header values or query parameters. This layer keeps the response type as it is,
//! emits exactly one event, and allocates nothing per request unless header or query
//! logging is turned on.
//!
//! # Example
//!
//! ```
//! use blueprint_core::BoxError;
//! use blueprint_trace::TraceLayer;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tracing::Level;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let client = service_fn(|_req: Request<()>| async {
//!     Ok::<_, BoxError>(Response::builder().status(StatusCode::NOT_FOUND).body(())?)
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(
//!         TraceLayer::new()
//!             .client_error_level(Level::INFO) // a 404 is expected here
//!             .show_query_params(["per_page"]),
//!     )
//!     .service(client);
//!
//! let response = service
//!     .oneshot(Request::get("https://api.example.com/contacts?per_page=5&email=a@b.c").body(())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! # Ok(())
//! # }
//! ```

mod future;
mod layer;
mod redact;

pub use future::ResponseFuture;
pub use layer::{Levels, Trace, TraceLayer};
pub use tracing::Level;
