//! Counters and a latency histogram, rendered in the Prometheus text format.
//!
//! Everything is a plain atomic: recording takes no lock and allocates nothing.
//!
//! See [`Metrics`] for what each number counts.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Statuses 100 to 599, one counter each.
const STATUSES: usize = 500;

/// The error codes the proxy answers with (see [`ApiError`](crate::ApiError)).
pub(crate) const ERROR_CODES: [&str; 26] = [
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
    "invalid_session",
];

/// The proxy's metrics, rendered by `GET /metrics` ([`Metrics::render`]). Cheap to share (`Arc`).
///
/// Where each number comes from:
///
/// - `blueprint_proxy_requests_total{integration,status}`: every `/proxy` call that named a
///   known integration, by the status the proxy answered (the provider's, or the proxy's
///   own error status).
/// - `blueprint_proxy_errors_total{code}`: every answer the proxy wrote itself (any route),
///   by error code.
/// - `blueprint_proxy_upstream_duration_seconds{integration}`: from handing a call to the
///   integration's stack until the response headers (or the error) came back: retries and
///   waits included.
/// - `blueprint_proxy_in_flight`: `/proxy` calls waiting for the provider's response
///   headers (a streaming body is not counted).
/// - `blueprint_proxy_retries_total`, `blueprint_proxy_rate_limit_waits_total{kind}`,
///   `blueprint_proxy_token_refreshes_total{outcome}`: counted from the `tracing` events
///   the layers emit when they retry, hold requests for the rate limit, or refresh a token
///   ([`Metrics::event_layer`]); the binary installs that layer. `kind="pacing"` counts the
///   times a connection's budget ran out and the rate-limit layer began holding requests;
///   `kind="server_directed"` counts retries that waited as the server asked
///   (`Retry-After`, `X-RateLimit-Reset`). These are process-wide, not per integration.
pub struct Metrics {
    integrations: HashMap<Arc<str>, Arc<IntegrationMetrics>>,
    order: Vec<Arc<str>>,
    errors: [AtomicU64; ERROR_CODES.len()],
    in_flight: AtomicI64,
    events: Arc<EventCounters>,
}

/// The metrics of one integration.
pub(crate) struct IntegrationMetrics {
    statuses: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Counts of events emitted by the layers; fed by [`Metrics::event_layer`].
#[derive(Debug, Default)]
struct EventCounters {
    retries: AtomicU64,
    pacing_waits: AtomicU64,
    server_waits: AtomicU64,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("integrations", &self.order)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl IntegrationMetrics {
    pub(crate) fn new() -> Self {
        IntegrationMetrics {
            statuses: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// One call answered with `status`.
    pub(crate) fn record_status(&self, status: u16) {
        if let Some(counter) = usize::from(status)
            .checked_sub(100)
            .and_then(|i| self.statuses.get(i))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One call's time in the stack.
    pub(crate) fn record_latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|upper| secs <= *upper) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Metrics for these integrations (by name).
    pub fn new<'a>(integrations: impl IntoIterator<Item = &'a str>) -> Self {
        let mut map = HashMap::new();
        let mut order = Vec::new();
        for name in integrations {
            let name: Arc<str> = Arc::from(name);
            if map
                .insert(Arc::clone(&name), Arc::new(IntegrationMetrics::new()))
                .is_none()
            {
                order.push(name);
            }
        }
        Metrics {
            integrations: map,
            order,
            errors: Default::default(),
            in_flight: AtomicI64::new(0),
            events: Arc::default(),
        }
    }

    pub(crate) fn integration(&self, name: &str) -> Option<Arc<IntegrationMetrics>> {
        self.integrations.get(name).cloned()
    }

    /// One answer the proxy wrote itself, with `code`.
    pub(crate) fn record_error(&self, code: &str) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A `/proxy` call started; the guard ends it when dropped.
    pub(crate) fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// How many `/proxy` calls are in progress.
    pub fn calls_in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A `tracing` layer that counts the layers' retry, rate-limit and token-refresh events
    /// into these metrics. Install it in the process's subscriber (the binary does); it sees
    /// only the events of `blueprint_retry`, `blueprint_ratelimit` and `blueprint_refresh`,
    /// whatever `RUST_LOG` says.
    pub fn event_layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let targets = Targets::new()
            .with_target("blueprint_retry", Level::INFO)
            .with_target("blueprint_ratelimit", Level::INFO)
            .with_target("blueprint_refresh", Level::DEBUG);
        EventCounter(Arc::clone(&self.events)).with_filter(targets)
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> fmt::Result {
        let relaxed = |a: &AtomicU64| a.load(Ordering::Relaxed);
        writeln!(
            out,
            "# HELP blueprint_proxy_requests_total Proxied calls by integration and the status the proxy answered.\n\
             # TYPE blueprint_proxy_requests_total counter"
        )?;
        for name in &self.order {
            let m = &self.integrations[name];
            for (i, counter) in m.statuses.iter().enumerate() {
                let n = relaxed(counter);
                if n > 0 {
                    writeln!(
                        out,
                        "blueprint_proxy_requests_total{{integration=\"{}\",status=\"{}\"}} {n}",
                        Escaped(name),
                        i + 100
                    )?;
                }
            }
        }
        writeln!(
            out,
            "# HELP blueprint_proxy_errors_total Answers the proxy wrote itself, by error code.\n\
             # TYPE blueprint_proxy_errors_total counter"
        )?;
        for (code, counter) in ERROR_CODES.iter().zip(&self.errors) {
            writeln!(
                out,
                "blueprint_proxy_errors_total{{code=\"{code}\"}} {}",
                relaxed(counter)
            )?;
        }
        writeln!(
            out,
            "# HELP blueprint_proxy_upstream_duration_seconds Time from handing a call to the stack until response headers or an error, retries and waits included.\n\
             # TYPE blueprint_proxy_upstream_duration_seconds histogram"
        )?;
        for name in &self.order {
            let m = &self.integrations[name];
            let name = Escaped(name);
            let mut cumulative = 0;
            for (upper, bucket) in BUCKETS.iter().zip(&m.buckets) {
                cumulative += relaxed(bucket);
                writeln!(
                    out,
                    "blueprint_proxy_upstream_duration_seconds_bucket{{integration=\"{name}\",le=\"{upper}\"}} {cumulative}"
                )?;
            }
            let count = relaxed(&m.count);
            writeln!(
                out,
                "blueprint_proxy_upstream_duration_seconds_bucket{{integration=\"{name}\",le=\"+Inf\"}} {count}"
            )?;
            #[allow(clippy::cast_precision_loss)] // micros: exact far past any real sum
            let sum = relaxed(&m.sum_micros) as f64 / 1e6;
            writeln!(
                out,
                "blueprint_proxy_upstream_duration_seconds_sum{{integration=\"{name}\"}} {sum}"
            )?;
            writeln!(
                out,
                "blueprint_proxy_upstream_duration_seconds_count{{integration=\"{name}\"}} {count}"
            )?;
        }
        let e = &self.events;
        writeln!(
            out,
            "# HELP blueprint_proxy_in_flight Proxied calls waiting for response headers.\n\
             # TYPE blueprint_proxy_in_flight gauge\n\
             blueprint_proxy_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        )?;
        writeln!(
            out,
            "# HELP blueprint_proxy_retries_total Attempts sent again by the retry layer.\n\
             # TYPE blueprint_proxy_retries_total counter\n\
             blueprint_proxy_retries_total {}",
            relaxed(&e.retries)
        )?;
        writeln!(
            out,
            "# HELP blueprint_proxy_rate_limit_waits_total Waits for a rate limit: pacing = a connection's budget ran out and requests were held; server_directed = a retry waited as the server asked.\n\
             # TYPE blueprint_proxy_rate_limit_waits_total counter\n\
             blueprint_proxy_rate_limit_waits_total{{kind=\"pacing\"}} {}\n\
             blueprint_proxy_rate_limit_waits_total{{kind=\"server_directed\"}} {}",
            relaxed(&e.pacing_waits),
            relaxed(&e.server_waits)
        )?;
        writeln!(
            out,
            "# HELP blueprint_proxy_token_refreshes_total Access-token refreshes started, and those that failed.\n\
             # TYPE blueprint_proxy_token_refreshes_total counter\n\
             blueprint_proxy_token_refreshes_total{{outcome=\"started\"}} {}\n\
             blueprint_proxy_token_refreshes_total{{outcome=\"failed\"}} {}",
            relaxed(&e.refreshes),
            relaxed(&e.refresh_failures)
        )
    }
}

/// Ends an in-flight call when dropped.
pub(crate) struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A label value with `\`, `"` and newlines escaped.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The layer behind [`Metrics::event_layer`].
struct EventCounter(Arc<EventCounters>);

/// What the counter needs from an event: its message and `server_directed` field.
#[derive(Default)]
struct EventFields {
    message: String,
    server_directed: bool,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "server_directed" {
            self.server_directed = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for EventCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let counters = &self.0;
        let message = fields.message.as_str();
        if target.starts_with("blueprint_retry") && message == "retrying" {
            counters.retries.fetch_add(1, Ordering::Relaxed);
            if fields.server_directed {
                counters.server_waits.fetch_add(1, Ordering::Relaxed);
            }
        } else if target.starts_with("blueprint_ratelimit")
            && message.starts_with("rate limit reached: holding requests")
        {
            counters.pacing_waits.fetch_add(1, Ordering::Relaxed);
        } else if target.starts_with("blueprint_refresh") {
            if message == "refreshing the access token" {
                counters.refreshes.fetch_add(1, Ordering::Relaxed);
            } else if message == "token refresh failed" {
                counters.refresh_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let metrics = Metrics::new(["intercom", "we\"ird"]);
        let m = metrics.integration("intercom").unwrap();
        m.record_status(200);
        m.record_status(200);
        m.record_status(429);
        m.record_status(42); // not a status: ignored
        m.record_latency(Duration::from_millis(3));
        m.record_latency(Duration::from_millis(300));
        metrics.record_error("rate_limited");
        let text = metrics.render();
        assert!(
            text.contains(
                "blueprint_proxy_requests_total{integration=\"intercom\",status=\"200\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "blueprint_proxy_requests_total{integration=\"intercom\",status=\"429\"} 1\n"
        ));
        assert!(text.contains("blueprint_proxy_errors_total{code=\"rate_limited\"} 1\n"));
        assert!(text.contains("blueprint_proxy_upstream_duration_seconds_bucket{integration=\"intercom\",le=\"0.005\"} 1\n"));
        assert!(text.contains("blueprint_proxy_upstream_duration_seconds_bucket{integration=\"intercom\",le=\"0.25\"} 1\n"));
        assert!(text.contains("blueprint_proxy_upstream_duration_seconds_bucket{integration=\"intercom\",le=\"0.5\"} 2\n"));
        assert!(text.contains(
            "blueprint_proxy_upstream_duration_seconds_count{integration=\"intercom\"} 2\n"
        ));
        assert!(text.contains(
            "blueprint_proxy_upstream_duration_seconds_sum{integration=\"intercom\"} 0.303\n"
        ));
        assert!(text.contains("integration=\"we\\\"ird\""));
    }

    #[test]
    fn counts_the_layers_events() {
        let metrics = Metrics::new(["intercom"]);
        let subscriber = tracing_subscriber::registry().with(metrics.event_layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "blueprint_retry::future", attempt = 2, server_directed = true, "retrying");
            tracing::info!(target: "blueprint_retry::future", attempt = 3, server_directed = false, "retrying");
            tracing::info!(target: "blueprint_retry::future", "not retrying: the retry budget is spent");
            tracing::info!(target: "blueprint_ratelimit::state", wait_ms = 10, "rate limit reached: holding requests until the budget frees up");
            tracing::debug!(target: "blueprint_refresh::source", "refreshing the access token");
            tracing::warn!(target: "blueprint_refresh::source", "token refresh failed");
            tracing::info!(target: "somebody_else", "retrying");
        });
        let text = metrics.render();
        assert!(text.contains("blueprint_proxy_retries_total 2\n"), "{text}");
        assert!(text.contains("blueprint_proxy_rate_limit_waits_total{kind=\"pacing\"} 1\n"));
        assert!(
            text.contains("blueprint_proxy_rate_limit_waits_total{kind=\"server_directed\"} 1\n")
        );
        assert!(text.contains("blueprint_proxy_token_refreshes_total{outcome=\"started\"} 1\n"));
        assert!(text.contains("blueprint_proxy_token_refreshes_total{outcome=\"failed\"} 1\n"));
    }
}
