//! `blueprint-proxy`: the ready-to-run server. It holds OAuth connections and forwards
//! calls to any endpoint of an integration's API through the Blueprint stack (logging,
//! retries with deadlines, rate-limit pacing, token refresh, auth injection), so that
//! programs in any language can call Intercom without writing Rust.
//!
//! ```sh
//! BLUEPRINT_SECRET_KEY=$(openssl rand -hex 32) INTERCOM_CLIENT_SECRET=… \
//!     cargo run -p blueprint-proxy -- --config examples/integrations.yaml
//! ```
//!
//! # Routes
//!
//! | route | what |
//! |---|---|
//! | `ANY /proxy/{path}` | with `Provider-Config-Key: <integration>` and `Connection-Id: <id>`: the call, with the connection's token, to the integration's base URL; the answer streamed back as the provider sent it (`TRACE` and `CONNECT` refused; `Forwarded` and `X-Forwarded-Host` dropped unless [`ProxyBuilder::forward_host_headers`]) |
//! | `POST /connect/sessions` | `{"integration", "connection_id", "expires_in"?, "params"?}` → 201 `{"token", "url", "expires_at"}`: a connect session (see below) |
//! | `GET /connect?session=<token>` | a live session's `url`: 302 to the provider's authorization page (random single-use `state`, PKCE where the blueprint says so); parameters the blueprint takes from the connect URL may follow (`&subdomain=acme`) |
//! | `GET /oauth/callback` | exchanges the code, stores the credentials, uses the session up, answers a small HTML page |
//! | `ANY /oauth/connect/{integration}` | retired: 410 `gone`, pointing to connect sessions |
//! | `PUT /connections/{integration}/{id}` | imports `{"access_token", "refresh_token"?, "expires_at"?, "params"?}` (`params`: the connection's parameters, such as `{"subdomain": "acme"}`) |
//! | `GET /connections` | every connection with its status (`ok`, `needs_reauthorization`, `refresh_failing`), last error and parameters (not secrets), no secret; `?integration=` and `?connection_id=` filter |
//! | `DELETE /connections/{integration}/{id}` | forgets a connection |
//! | `GET /integrations` | the integrations of the configuration: `{"integrations": [{"name", "oauth_app"}]}` (`oauth_app`: connect sessions work) |
//! | `GET /` | the connections page (HTML, its script and style under `/assets/`): lists, connects, imports and deletes connections from a browser; see below |
//! | `GET /healthz` | liveness: `ok` while the process serves |
//! | `GET /readyz` | readiness: `ready` while the token store answers (asked at most once a second, within 2 s); 503 `not_ready` while it fails or does not answer, and once shutdown has begun ([`Proxy::begin_shutdown`]) |
//! | `GET /metrics` | OpenMetrics text (Prometheus scrapes it): every metric is in the table of [`Metrics`] |
//!
//! Every route but `/healthz`, `/readyz`, `/connect`, `/oauth/callback`, the retired
//! `/oauth/connect/{integration}` and the page (`/`, `/assets/page.js`, `/assets/page.css`)
//! needs `Authorization: Bearer <BLUEPRINT_SECRET_KEY>`, compared in constant time. Every answer the proxy writes itself
//! (axum's rejections included) is JSON `{"error":{"code":"…","message":"…"}}` ([`ApiError`]
//! lists the codes); only the pages a person sees after `/connect` and `/oauth/callback`
//! are HTML.
//!
//! # Connecting an account
//!
//! The application's backend calls `POST /connect/sessions` with the secret key and sends
//! the person's browser to the `url` it answers; the proxy sends them on to the provider
//! and takes them back at `/oauth/callback`. A session names one integration and one
//! connection id; it lives `expires_in` seconds (60 to 86,400; default 1,800), is used up
//! by its callback whatever the outcome, and its token (256 random bits, kept only as a
//! SHA-256) is never logged. Without a live session nothing is started or stored, and every
//! invalid link gets the same answer. At most [`MAX_SESSIONS`] are live at once; past that,
//! new ones are refused with 503 `too_many_sessions` and a `Retry-After`.
//!
//! # The connections page
//!
//! `GET /` serves a page for people: the integrations and their connections with status,
//! last error, expiry and last update; **Connect** (a connect session, then the provider's
//! page), **Import token** and **Delete**. It asks for the secret key once and keeps it in
//! the tab's `sessionStorage` only (no cookie, so no CSRF), calls the JSON API above with
//! it, renders every value as text, and is served with a strict `Content-Security-Policy`
//! (no inline script, Trusted Types required), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` and `Cache-Control: no-store`. It holds no secret, so it
//! loads without the key.
//!
//! # Connection ids
//!
//! One rule everywhere (the `Connection-Id` header, `/connections/{integration}/{id}`, the
//! `connection_id` filter of `GET /connections`, connect sessions): 1 to 256 characters,
//! each an ASCII letter, digit, or one of `.` `_` `:` `@` `-`; never trimmed. Anything else
//! is 400 `invalid_connection_id`.
//!
//! # Hostile clients
//!
//! [`serve_with`] closes a connection that has not sent a whole request head within the
//! header-read timeout (10 s), or has had no call in flight for the keep-alive timeout
//! (5 s); serves at most [`Limits::max_connections`] at once (512; beyond it new
//! connections are closed at once); and, out of file descriptors, closes the connections
//! waiting to be accepted while it serves the open ones. A request body that stalls for
//! 30 s between two pieces is answered 408 `request_timeout`; one that cannot be read
//! (malformed chunked encoding) 400 `invalid_body`; a `/proxy` call's body larger than
//! [`ProxyBuilder::max_request_body`] (no cap by default) 413 `body_too_large`. The
//! binary's flags set each of these.
//!
//! # Metrics and traces
//!
//! `GET /metrics` is written by prometheus-client through [`blueprint_metrics`], the same
//! adapter a program using the crates without the proxy registers into its own registry;
//! [`Metrics`] has the table of every metric, and [`Metrics::with_registry`] adds a
//! registry of yours. With the `otlp` cargo feature, the binary's `--otlp-endpoint URL`
//! (or `OTEL_EXPORTER_OTLP_ENDPOINT`) exports each call's client span over OTLP/HTTP.
//!
//! # How a call goes through
//!
//! The proxy builds one stack per integration with
//! [`StackBuilder::with_shared_tokens`](blueprint::StackBuilder::with_shared_tokens) over
//! one shared hyper client; each stack's token source is an
//! [`OAuth2TokenSource`](blueprint_refresh::OAuth2TokenSource) over the one shared store,
//! so imported tokens and OAuth tokens come from the same place. The request goes into the
//! stack with a *relative* target built from the raw, still percent-encoded path (`/me?x=1`);
//! the engine's base-URL layer joins it onto the integration's base URL and refuses any
//! path that would leave it (`..`, `%2e%2e`, `%2f`, backslashes, absolute URLs), which the
//! proxy answers with 400 `invalid_path`. The caller's body is streamed (the retry and
//! refresh layers keep up to 64 KiB to send again), and so is the answer.
//!
//! # Example
//!
//! ```
//! use blueprint::Integrations;
//! use blueprint_proxy::{Proxy, SecretKey, registry};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let yaml = "integrations:\n  intercom:\n    extends_blueprint: intercom\n";
//! let integrations = Integrations::parse(yaml, "integrations.yaml", &registry()?, |_| None)?;
//! let proxy = Proxy::builder(integrations, SecretKey::new("a-key-of-16-chars-or-more")?).build()?;
//!
//! let request = http::Request::get("/proxy/me")
//!     .header("provider-config-key", "intercom")
//!     .header("connection-id", "acme")
//!     .body(axum::body::Body::empty())?;
//! let response = proxy.router().oneshot(request).await?;
//! assert_eq!(response.status(), 401); // no `Authorization: Bearer <key>`
//! # Ok(())
//! # }
//! ```

mod app;
mod auth;
mod body;
pub mod cli;
mod connections;
mod edge;
mod error;
mod ids;
mod logfmt;
mod logwriter;
mod metrics;
mod oauth;
#[cfg(feature = "otlp")]
mod otlp;
mod page;
mod params;
mod proxy;
mod ready;
mod server;
mod sessions;
mod stacks;
mod time;

pub use app::{BuildError, Proxy, ProxyBuilder, check, registry};
pub use auth::{MIN_SECRET_KEY_LEN, SECRET_KEY_VAR, SecretKey, SecretKeyError};
pub use error::ApiError;
pub use metrics::{IntegrationMetrics, Metrics};
pub use proxy::{CONNECTION_ID, PROVIDER_CONFIG_KEY};
pub use server::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Limits,
    serve, serve_with, shutdown_signal,
};
pub use sessions::MAX_SESSIONS;
