//! The Blueprint engine: describe an API as data, and get the whole stack of Blueprint
//! layers around any HTTP service in one call.
//!
//! - [`Blueprint`]: an API as data — base URL and regions, default headers, OAuth2
//!   endpoints, rate-limit headers, retry settings and per-path retry rules, whether tokens
//!   expire.
//! - [`StackBuilder`]: resolves each call's target once (base URL, route), then composes
//!   logging, retry, rate-limit pacing, token refresh, auth injection, attempt timeout
//!   and the API's default headers (in that order, outermost first) around a hyper-util
//!   client, an axum `Router` or a test double. The result is a `Clone + Send`
//!   tower service whose [`Error`] has predicates (`is_timeout()`, `is_rate_limited()`,
//!   `retry_after()`, `needs_reauthorization()`, …).
//! - [`default_client`]: hyper-util with rustls (ring, webpki roots), HTTP/1.1 and HTTP/2.
//! - [`Integrations`] and [`Registry`]: `integrations.yaml`, the configuration format
//!   Nango users know, with `${VAR}` expansion and errors that name file, line and column.
//!
//! # Example
//!
//! ```no_run
//! use blueprint::{Blueprint, StackBuilder, StackBody, default_client};
//! use blueprint_auth::StaticToken;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let api = Blueprint::new("acme", "v1", "https://api.acme.test")?
//!     .default_header("accept", "application/json")?;
//! let client = StackBuilder::new(api, StaticToken::new(std::env::var("ACME_TOKEN")?)?)
//!     .service(default_client::<StackBody<Full<Bytes>>>()?)?;
//! let response = client.oneshot(http::Request::get("/me").body(Full::default())?).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```

mod base_url;
mod blueprint;
mod client;
mod config;
mod connection;
mod error;
mod headers;
mod stack;
mod target;
mod template;

pub use base_url::{BaseUrl, InvalidBaseUrl, InvalidPath};
pub use blueprint::{
    Blueprint, BlueprintError, ClientAuth, ConnectionParam, DEFAULT_MAX_SERVER_WAIT, OAuthSettings,
    ParamSource, RateLimitHeaders, RateLimitRule, Region, ResetFormat, RetryRule, RetrySettings,
    Route, WaitFrom,
};
pub use client::{ClientError, HttpsClient, SharedClient, default_client, default_hyper_client};
pub use config::{
    BlueprintSource, ClientSecret, ConfigError, ConfigErrorKind, Integration, Integrations,
    Registry,
};
pub use connection::BlueprintUrls;
pub use error::Error;
pub use headers::{DefaultHeadersLayer, SetDefaultHeaders};
pub use stack::{
    BlueprintLayer, BlueprintPolicy, BlueprintService, ResponseFuture, SharedTokenSource,
    StackBody, StackBuilder,
};
pub use target::{BaseUrlFuture, BaseUrlLayer, Routes, SetBaseUrl};
