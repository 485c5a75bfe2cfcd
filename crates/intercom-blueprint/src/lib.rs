//! Intercom's REST API through the Blueprint stack: built-in OAuth2, automatic token
//! refresh (Intercom's tokens do not expire, so a 401 means re-authorize), rate-limit
//! pacing from `X-RateLimit-*`, retries that never duplicate a creating `POST`, logging
//! with secrets redacted — for any endpoint of the API.
//!
//! - [`intercom()`]: the blueprint (`intercom:v0`): hosts per region, OAuth endpoints,
//!   `Accept: application/json`, `Intercom-Version` pinned to [`API_VERSION`], rate-limit
//!   headers, the `POST` endpoints that are safe to retry.
//! - [`IntercomLayer`]: the whole stack as one tower layer, for any hyper client or axum app.
//! - [`IntercomClient`]: `get`/`post`/`put`/`delete` with serde JSON, relative paths,
//!   per-call connection, version and deadline; [`IntercomClient::list`],
//!   [`IntercomClient::search`] and [`IntercomClient::scroll_companies`] stream every item.
//! - [`IntercomError`]: Intercom's `error.list` parsed (status, codes, request id), non-JSON
//!   bodies kept, and rate-limited / needs-re-authorization / timeout / transport cases.
//! - [`path!`] and [`ApiPath`]: request paths with ids from outside percent-encoded as one
//!   segment each (`path!("/contacts/{}", id)`), so an id holding `?`, `#`, `%` or a space
//!   still names the resource meant.
//! - [`webhook`]: a server-side layer that verifies `X-Hub-Signature`.
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use intercom_blueprint::IntercomClient;
//! use serde_json::{json, Value};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let intercom = IntercomClient::new(&std::env::var("INTERCOM_TOKEN")?)?;
//!
//! let mut contacts = intercom.list("/contacts").per_page(150).items::<Value>();
//! while let Some(contact) = contacts.next().await {
//!     println!("{}", contact?["email"]);
//! }
//!
//! match intercom.post::<_, Value>("/contacts", &json!({"email": "ada@example.com"})).await {
//!     Ok(contact) => println!("created {}", contact["id"]),
//!     Err(e) if e.is_rate_limited() => println!("come back in {:?}", e.retry_after()),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod definition;
mod error;
mod pagination;
mod path;
pub mod webhook;

pub use client::{
    BuildError, Call, DEFAULT_MAX_RESPONSE_BODY, IntercomBuilder, IntercomClient, IntercomLayer,
};
pub use definition::{API_VERSION, BLUEPRINT_ID, IntercomRegion, US_BASE_URL, intercom};
pub use error::{ApiError, ErrorItem, IntercomError};
pub use pagination::Paginate;
pub use path::{ApiPath, InvalidSegment};

/// The repository README's Rust examples, compiled as doc tests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
