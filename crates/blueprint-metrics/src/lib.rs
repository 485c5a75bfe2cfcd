//! Prometheus metrics from the Blueprint layers' typed events, recorded into a
//! [`prometheus_client`] registry of your own: the metrics `blueprint-proxy` exports on
//! `/metrics`, for a stack used without the proxy.
//!
//! [`EventMetrics`] registers the counters of what the layers report
//! ([`blueprint_core::Event`]: retries, rate-limit waits, token refreshes, fallbacks) and
//! gives one [`EventSink`](blueprint_core::EventSink) per integration for its stack and
//! token source; [`ClientMetrics`] times each call through a stack
//! (`http_client_request_duration_seconds`).
//!
//! # Why prometheus-client
//!
//! [prometheus-client](https://docs.rs/prometheus-client) is the Prometheus project's own
//! Rust client: typed metric families, label sets as types, the OpenMetrics text format
//! (escaping, `_total` and unit suffixes, `# EOF`) written by a maintained encoder, and
//! **no global registry**: you register into the [`Registry`] you own and serve, beside
//! your own metrics. The `metrics` facade with `metrics-exporter-prometheus` installs one
//! global recorder per process, so a library that records into it decides for its users
//! where their numbers go; that is the wrong default for crates meant to sit in someone
//! else's stack.
//!
//! # What recording costs
//!
//! A `Family` finds a label set's metric with a hash-map lookup under a read lock. Nothing
//! here does that per request: [`EventMetrics::sink`] resolves every label set of an
//! integration once, so counting an event is one atomic addition, and
//! [`CallDurations`] keeps the series of each method once it is made. Latencies go into
//! [`DurationHistogram`], plain atomics where prometheus-client's `Histogram` takes a mutex
//! per observation.
//!
//! # The metrics
//!
#![doc = include_str!("../metrics.md")]
//!
//! Rows marked (proxy) are `blueprint-proxy`'s own; the others come from this crate. The
//! README holds the same table, and a test compares both with what the proxy's `/metrics`
//! exports.
//!
//! # Example
//!
//! ```
//! use blueprint_core::{ConnectionId, Event, RefreshOutcome};
//! use blueprint_metrics::{ClientMetrics, EventMetrics};
//! use prometheus_client::registry::Registry;
//! use std::time::Duration;
//!
//! let mut registry = Registry::default();
//! let events = EventMetrics::register(&mut registry);
//! let calls = ClientMetrics::register(&mut registry);
//!
//! // Give the sink to the integration's stack (`StackBuilder::event_sink`) and token
//! // source (`OAuth2TokenSourceBuilder::events`); here, what they would report:
//! let sink = events.sink("intercom");
//! sink.emit(&Event::TokenRefresh {
//!     connection: &ConnectionId::new("acme"),
//!     outcome: RefreshOutcome::Refreshed,
//!     duration: Duration::from_millis(120),
//! });
//! // Time each call you send through the stack:
//! calls.integration("intercom").record(&http::Method::GET, Duration::from_millis(80));
//!
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry)?;
//! assert!(text.contains(
//!     "blueprint_token_refreshes_total{integration=\"intercom\",outcome=\"refreshed\"} 1\n"
//! ));
//! assert!(text.contains(
//!     "http_client_request_duration_seconds_count{integration=\"intercom\",http_request_method=\"GET\"} 1\n"
//! ));
//! # Ok::<(), std::fmt::Error>(())
//! ```

mod client;
mod events;
mod histogram;
mod labels;

pub use client::{CallDurations, ClientMetrics};
pub use events::{EventMetrics, FALLBACK_COMPONENTS};
pub use histogram::{DURATION_BUCKETS, DurationHistogram};
/// The prometheus-client these metrics are registered with: use it for your registry.
pub use prometheus_client;
pub use prometheus_client::registry::Registry;
