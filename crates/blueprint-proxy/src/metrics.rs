//! The proxy's metrics, kept and rendered by [prometheus-client](blueprint_metrics::prometheus_client).
//!
//! What the layers report ([`Event`](blueprint_core::Event)s) and the time of each call are
//! recorded by [`blueprint_metrics`], the same adapter a user of the crates without the
//! proxy registers into a registry of their own; the proxy adds its per-request counters.
//! prometheus-client, not the `metrics` facade, for the reasons
//! [`blueprint_metrics`] gives: no global registry, so a proxy embedded in someone's axum
//! app ([`Metrics::with_registry`]) exports into theirs.
//!
//! Recording on the request path takes no lock and allocates nothing: every label set is
//! resolved once (at start for fixed labels, on first use for a status or a method), then
//! a call is a few atomic additions. See [`Metrics`] for the table of every metric.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use blueprint_core::EventSink;
use blueprint_metrics::prometheus_client::encoding::{
    EncodeLabel as _, EncodeLabelSet, LabelSetEncoder,
};
use blueprint_metrics::prometheus_client::metrics::counter::Counter;
use blueprint_metrics::prometheus_client::metrics::family::Family;
use blueprint_metrics::prometheus_client::metrics::gauge::Gauge;
use blueprint_metrics::{CallDurations, ClientMetrics, EventMetrics, Registry};

/// Statuses 100 to 599, one counter each.
const STATUSES: usize = 500;

/// The error codes the proxy answers with (see [`ApiError`](crate::ApiError)).
pub(crate) const ERROR_CODES: [&str; 30] = [
    "missing_header",
    "invalid_header",
    "invalid_path",
    "invalid_request",
    "oauth_not_configured",
    "unauthorized",
    "unknown_integration",
    "unknown_connection",
    "not_found",
    "needs_reauthorization",
    "rate_limited",
    "store_error",
    "store_unavailable",
    "internal_error",
    "upstream_unreachable",
    "upstream_error",
    "token_unavailable",
    "deadline_exceeded",
    "upstream_timeout",
    "method_not_allowed",
    "invalid_connection_id",
    "invalid_body",
    "request_timeout",
    "gone",
    "body_too_large",
    "too_many_sessions",
    "not_ready",
    "invalid_session",
    "invalid_connection_param",
    "missing_connection_param",
];

/// The proxy's metrics, rendered by `GET /metrics` ([`Metrics::render`]) in the
/// OpenMetrics text format ([`Metrics::CONTENT_TYPE`]). Cheap to share (`Arc`).
///
/// Every metric, its type, labels and meaning (the same table is in the README, and a test
/// compares both with what `/metrics` exports):
///
#[doc = include_str!("../../blueprint-metrics/metrics.md")]
pub struct Metrics {
    registry: Registry,
    integrations: HashMap<Arc<str>, Arc<IntegrationMetrics>>,
    order: Vec<Arc<str>>,
    errors: [Counter; ERROR_CODES.len()],
    in_flight: Gauge,
}

/// The metrics of one integration: the sink its stack and token source report to, the
/// time and status of its calls.
pub struct IntegrationMetrics {
    name: Arc<str>,
    statuses: Family<StatusLabels, Counter>,
    /// Per status from 100, made on first use.
    by_status: Box<[OnceLock<Counter>]>,
    durations: CallDurations,
    events: EventSink,
    /// Connections whose refreshed credentials are not stored yet; set when `/metrics` is
    /// read.
    unstored: Gauge,
}

/// `integration="…",status="…"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StatusLabels {
    integration: Arc<str>,
    status: u16,
}

impl EncodeLabelSet for StatusLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        ("integration", &*self.integration).encode(encoder.encode_label())?;
        ("status", self.status).encode(encoder.encode_label())
    }
}

/// `integration="…"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct IntegrationLabel {
    integration: Arc<str>,
}

impl EncodeLabelSet for IntegrationLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        ("integration", &*self.integration).encode(encoder.encode_label())
    }
}

/// `code="…"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CodeLabel {
    code: &'static str,
}

impl EncodeLabelSet for CodeLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        ("code", self.code).encode(encoder.encode_label())
    }
}

impl fmt::Debug for IntegrationMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationMetrics")
            .field("name", &self.name)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("integrations", &self.order)
            .field("in_flight", &self.in_flight.get())
            .finish_non_exhaustive()
    }
}

impl IntegrationMetrics {
    fn registered(
        name: &str,
        statuses: &Family<StatusLabels, Counter>,
        unstored: &Family<IntegrationLabel, Gauge>,
        calls: &ClientMetrics,
        events: &EventMetrics,
    ) -> Self {
        let name: Arc<str> = Arc::from(name);
        let unstored = unstored
            .get_or_create(&IntegrationLabel {
                integration: Arc::clone(&name),
            })
            .clone();
        IntegrationMetrics {
            statuses: statuses.clone(),
            by_status: (0..STATUSES).map(|_| OnceLock::new()).collect(),
            durations: calls.integration(&name),
            events: events.sink(&name),
            unstored,
            name,
        }
    }

    /// How many connections have refreshed credentials that the store failed to take
    /// (`OAuth2TokenSource::unstored`), for the gauge `/metrics` shows.
    pub(crate) fn set_unstored(&self, connections: usize) {
        self.unstored
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
    }

    /// Metrics of an integration that records into no registry.
    pub(crate) fn new() -> Self {
        let mut detached = Registry::default();
        IntegrationMetrics::registered(
            "",
            &Family::default(),
            &Family::default(),
            &ClientMetrics::register(&mut detached),
            &EventMetrics::register(&mut detached),
        )
    }

    /// Where this integration's stack and token source report what they do: the retry,
    /// rate-limit and refresh counters are fed from it.
    pub fn event_sink(&self) -> EventSink {
        self.events.clone()
    }

    /// One call answered with `status`.
    pub(crate) fn record_status(&self, status: u16) {
        let Some(slot) = usize::from(status)
            .checked_sub(100)
            .and_then(|i| self.by_status.get(i))
        else {
            return;
        };
        slot.get_or_init(|| {
            self.statuses.get_or_create_owned(&StatusLabels {
                integration: Arc::clone(&self.name),
                status,
            })
        })
        .inc();
    }

    /// One call's time in the stack.
    pub(crate) fn record_latency(&self, method: &http::Method, elapsed: Duration) {
        self.durations.record(method, elapsed);
    }
}

impl Metrics {
    /// The media type of [`Metrics::render`]'s text: OpenMetrics 1.0, which Prometheus
    /// scrapes.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Metrics for these integrations (by name), in a registry of their own.
    pub fn new<'a>(integrations: impl IntoIterator<Item = &'a str>) -> Self {
        Metrics::with_registry(Registry::default(), integrations)
    }

    /// Metrics for these integrations, added to `registry`: `/metrics` then exports what
    /// it already holds (your own metrics) too.
    pub fn with_registry<'a>(
        mut registry: Registry,
        integrations: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let statuses = Family::<StatusLabels, Counter>::default();
        registry.register(
            "blueprint_proxy_requests",
            "Proxied calls by integration and the status the proxy answered",
            statuses.clone(),
        );
        let errors_family = Family::<CodeLabel, Counter>::default();
        registry.register(
            "blueprint_proxy_errors",
            "Answers the proxy wrote itself, by error code",
            errors_family.clone(),
        );
        let errors = ERROR_CODES.map(|code| errors_family.get_or_create_owned(&CodeLabel { code }));
        let in_flight = Gauge::default();
        registry.register(
            "blueprint_proxy_in_flight",
            "Proxied calls waiting for response headers",
            in_flight.clone(),
        );
        let unstored = Family::<IntegrationLabel, Gauge>::default();
        registry.register(
            "blueprint_proxy_unstored_credentials",
            "Connections whose refreshed credentials the token store failed to take, still written in the background",
            unstored.clone(),
        );
        let events = EventMetrics::register(&mut registry);
        let calls = ClientMetrics::register(&mut registry);
        let mut map = HashMap::new();
        let mut order = Vec::new();
        for name in integrations {
            let name: Arc<str> = Arc::from(name);
            if map.contains_key(&name) {
                continue;
            }
            let metrics =
                IntegrationMetrics::registered(&name, &statuses, &unstored, &calls, &events);
            map.insert(Arc::clone(&name), Arc::new(metrics));
            order.push(name);
        }
        Metrics {
            registry,
            integrations: map,
            order,
            errors,
            in_flight,
        }
    }

    /// The metrics of the integration `name`, if it is one of these.
    pub fn integration(&self, name: &str) -> Option<Arc<IntegrationMetrics>> {
        self.integrations.get(name).cloned()
    }

    /// One answer the proxy wrote itself, with `code`.
    pub(crate) fn record_error(&self, code: &str) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// A `/proxy` call started; the guard ends it when dropped.
    pub(crate) fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(Arc::clone(self))
    }

    /// How many `/proxy` calls are in progress.
    pub fn calls_in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// The metrics in the OpenMetrics text format ([`Metrics::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail, and the encoder fails only on a writer's error.
        let _ =
            blueprint_metrics::prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Ends an in-flight call when dropped.
pub(crate) struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blueprint_core::{ConnectionId, Event, RefreshOutcome};

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let metrics = Arc::new(Metrics::new(["intercom", "we\"ird"]));
        let m = metrics.integration("intercom").unwrap();
        m.record_status(200);
        m.record_status(200);
        m.record_status(429);
        m.record_status(42); // not a status: ignored
        m.record_status(600); // nor this
        m.record_latency(&http::Method::GET, Duration::from_millis(3));
        m.record_latency(&http::Method::GET, Duration::from_millis(300));
        metrics.record_error("rate_limited");
        metrics.record_error("no_such_code"); // ignored
        let guard = metrics.in_flight();
        let text = metrics.render();
        drop(guard);
        for line in [
            "blueprint_proxy_requests_total{integration=\"intercom\",status=\"200\"} 2\n",
            "blueprint_proxy_requests_total{integration=\"intercom\",status=\"429\"} 1\n",
            "blueprint_proxy_errors_total{code=\"rate_limited\"} 1\n",
            "blueprint_proxy_errors_total{code=\"unauthorized\"} 0\n",
            "blueprint_proxy_in_flight 1\n",
            "http_client_request_duration_seconds_bucket{le=\"0.005\",integration=\"intercom\",http_request_method=\"GET\"} 1\n",
            "http_client_request_duration_seconds_bucket{le=\"0.25\",integration=\"intercom\",http_request_method=\"GET\"} 1\n",
            "http_client_request_duration_seconds_bucket{le=\"0.5\",integration=\"intercom\",http_request_method=\"GET\"} 2\n",
            "http_client_request_duration_seconds_count{integration=\"intercom\",http_request_method=\"GET\"} 2\n",
            "http_client_request_duration_seconds_sum{integration=\"intercom\",http_request_method=\"GET\"} 0.303\n",
            "blueprint_retries_total{integration=\"we\\\"ird\",reason=\"server_error\"} 0\n",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains("status=\"42\""), "{text}");
        assert_eq!(metrics.calls_in_flight(), 0);
    }

    #[test]
    fn each_integration_s_sink_counts_into_its_own_series() {
        let metrics = Metrics::new(["intercom", "github"]);
        let sink = metrics.integration("intercom").unwrap().event_sink();
        sink.emit(&Event::TokenRefresh {
            connection: &ConnectionId::new("acme"),
            outcome: RefreshOutcome::Refreshed,
            duration: Duration::from_millis(3),
        });
        let text = metrics.render();
        for line in [
            "blueprint_token_refreshes_total{integration=\"intercom\",outcome=\"refreshed\"} 1\n",
            "blueprint_token_refreshes_total{integration=\"github\",outcome=\"refreshed\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn a_registry_of_ones_own_is_exported_too() {
        let mut registry = Registry::default();
        let mine = Counter::<u64>::default();
        registry.register("my_app_jobs", "Jobs", mine.clone());
        mine.inc();
        let metrics = Metrics::with_registry(registry, ["intercom"]);
        let text = metrics.render();
        assert!(text.contains("my_app_jobs_total 1\n"), "{text}");
        assert!(text.contains("blueprint_proxy_in_flight 0\n"), "{text}");
    }
}
