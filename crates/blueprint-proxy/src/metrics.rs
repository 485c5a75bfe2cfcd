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

use blueprint_core::{Event, EventSink, RefreshOutcome};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Statuses 100 to 599, one counter each.
const STATUSES: usize = 500;

/// The error codes the proxy answers with (see [`ApiError`](crate::ApiError)).
pub(crate) const ERROR_CODES: [&str; 28] = [
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
    "invalid_connection_param",
    "missing_connection_param",
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
/// - `blueprint_proxy_retries_total{integration}`,
///   `blueprint_proxy_rate_limit_waits_total{integration,kind}`,
///   `blueprint_proxy_token_refreshes_total{integration,outcome}`: counted from the typed
///   [`Event`]s the layers and the token source report
///   ([`IntegrationMetrics::event_sink`], given to each integration's stack and token
///   source), never from log lines. `kind="pacing"` counts the times a connection's budget
///   ran out and the rate-limit layer began holding requests; `kind="server_directed"`
///   counts retries that waited as the server asked (`Retry-After`, `X-RateLimit-Reset`).
///   `outcome` is `refreshed`, `refused` (the connection needs re-authorization), `failed`
///   (may work later) or `from_store` (another process refreshed).
/// - `blueprint_proxy_fallback_active{integration,component}` (gauge) and
///   `blueprint_proxy_fallbacks_total{integration,component}`: from the layers'
///   [`Event::Fallback`]. `component="rate_limit_redis"` is 1 while the Redis of `--redis`
///   does not answer and this replica paces the integration's budgets alone; it turns back
///   to 0 with the first call Redis admits again.
pub struct Metrics {
    integrations: HashMap<Arc<str>, Arc<IntegrationMetrics>>,
    order: Vec<Arc<str>>,
    errors: [AtomicU64; ERROR_CODES.len()],
    in_flight: AtomicI64,
}

/// The metrics of one integration.
pub struct IntegrationMetrics {
    statuses: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    events: Arc<EventCounters>,
}

/// Counts of what the layers report; fed through [`IntegrationMetrics::event_sink`].
#[derive(Debug, Default)]
struct EventCounters {
    retries: AtomicU64,
    pacing_waits: AtomicU64,
    server_waits: AtomicU64,
    refreshes: [AtomicU64; 4],
    /// Per [`FALLBACK_COMPONENTS`]: 1 while it works alone, and how many times it began to.
    fallback_active: [AtomicU64; FALLBACK_COMPONENTS.len()],
    fallbacks: [AtomicU64; FALLBACK_COMPONENTS.len()],
}

/// What can fall back (see [`Event::Fallback`]): `rate_limit_redis`, the rate-limit budgets
/// shared in Redis (`--redis`), paced in-process while Redis does not answer.
const FALLBACK_COMPONENTS: [&str; 1] = ["rate_limit_redis"];

const REFRESH_OUTCOMES: [RefreshOutcome; 4] = [
    RefreshOutcome::Refreshed,
    RefreshOutcome::Refused,
    RefreshOutcome::Failed,
    RefreshOutcome::FromStore,
];

impl EventCounters {
    fn count(&self, event: &Event<'_>) {
        match event {
            Event::Retry {
                server_directed, ..
            } => {
                self.retries.fetch_add(1, Ordering::Relaxed);
                if *server_directed {
                    self.server_waits.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::RateLimitPaused { .. } => {
                self.pacing_waits.fetch_add(1, Ordering::Relaxed);
            }
            Event::TokenRefresh { outcome, .. } => {
                if let Some(i) = REFRESH_OUTCOMES.iter().position(|o| o == outcome) {
                    self.refreshes[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Fallback { component, active } => self.fallback(component, *active),
            _ => {}
        }
    }
}

impl EventCounters {
    fn fallback(&self, component: &str, active: bool) {
        if let Some(i) = FALLBACK_COMPONENTS.iter().position(|c| *c == component) {
            self.fallback_active[i].store(u64::from(active), Ordering::Relaxed);
            if active {
                self.fallbacks[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl fmt::Debug for IntegrationMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationMetrics")
            .field("calls", &self.count.load(Ordering::Relaxed))
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("integrations", &self.order)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
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
            events: Arc::default(),
        }
    }

    /// Where this integration's stack and token source report what they do: the retry,
    /// rate-limit and refresh counters are fed from it.
    pub fn event_sink(&self) -> EventSink {
        let events = Arc::clone(&self.events);
        EventSink::new(move |event: &Event<'_>| events.count(event))
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
        }
    }

    /// The metrics of the integration `name`, if it is one of these.
    pub fn integration(&self, name: &str) -> Option<Arc<IntegrationMetrics>> {
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
             # TYPE blueprint_proxy_retries_total counter"
        )?;
        for name in &self.order {
            let e = &self.integrations[name].events;
            writeln!(
                out,
                "blueprint_proxy_retries_total{{integration=\"{}\"}} {}",
                Escaped(name),
                relaxed(&e.retries)
            )?;
        }
        writeln!(
            out,
            "# HELP blueprint_proxy_rate_limit_waits_total Waits for a rate limit: pacing = a connection's budget ran out and requests were held; server_directed = a retry waited as the server asked.\n\
             # TYPE blueprint_proxy_rate_limit_waits_total counter"
        )?;
        for name in &self.order {
            let e = &self.integrations[name].events;
            let name = Escaped(name);
            writeln!(
                out,
                "blueprint_proxy_rate_limit_waits_total{{integration=\"{name}\",kind=\"pacing\"}} {}\n\
                 blueprint_proxy_rate_limit_waits_total{{integration=\"{name}\",kind=\"server_directed\"}} {}",
                relaxed(&e.pacing_waits),
                relaxed(&e.server_waits)
            )?;
        }
        writeln!(
            out,
            "# HELP blueprint_proxy_token_refreshes_total Access-token refreshes, by outcome.\n\
             # TYPE blueprint_proxy_token_refreshes_total counter"
        )?;
        for name in &self.order {
            let e = &self.integrations[name].events;
            for (outcome, counter) in REFRESH_OUTCOMES.iter().zip(&e.refreshes) {
                writeln!(
                    out,
                    "blueprint_proxy_token_refreshes_total{{integration=\"{}\",outcome=\"{}\"}} {}",
                    Escaped(name),
                    outcome.label(),
                    relaxed(counter)
                )?;
            }
        }
        writeln!(
            out,
            "# HELP blueprint_proxy_fallback_active 1 while a shared backend does not answer and the proxy works alone: component rate_limit_redis = this replica paces rate limits alone (--redis); 0 otherwise, and without one.\n\
             # TYPE blueprint_proxy_fallback_active gauge"
        )?;
        for name in &self.order {
            let e = &self.integrations[name].events;
            for (component, gauge) in FALLBACK_COMPONENTS.iter().zip(&e.fallback_active) {
                writeln!(
                    out,
                    "blueprint_proxy_fallback_active{{integration=\"{}\",component=\"{component}\"}} {}",
                    Escaped(name),
                    relaxed(gauge)
                )?;
            }
        }
        writeln!(
            out,
            "# HELP blueprint_proxy_fallbacks_total Times a shared backend stopped answering and the proxy began to work alone.\n\
             # TYPE blueprint_proxy_fallbacks_total counter"
        )?;
        for name in &self.order {
            let e = &self.integrations[name].events;
            for (component, counter) in FALLBACK_COMPONENTS.iter().zip(&e.fallbacks) {
                writeln!(
                    out,
                    "blueprint_proxy_fallbacks_total{{integration=\"{}\",component=\"{component}\"}} {}",
                    Escaped(name),
                    relaxed(counter)
                )?;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn counts_the_layers_typed_events_per_integration() {
        let metrics = Metrics::new(["intercom", "github"]);
        let sink = metrics.integration("intercom").unwrap().event_sink();
        let connection = blueprint_core::ConnectionId::new("acme");
        let reason = blueprint_core::RetryReason::Status(http::StatusCode::SERVICE_UNAVAILABLE);
        for server_directed in [true, false] {
            sink.emit(&Event::Retry {
                connection: &connection,
                attempt: 2,
                reason,
                wait: Duration::from_millis(5),
                server_directed,
            });
        }
        sink.emit(&Event::RetryStopped {
            connection: &connection,
            attempts: 2,
            reason,
            stop: blueprint_core::RetryStop::Budget,
        });
        sink.emit(&Event::RateLimitPaused {
            connection: &connection,
            origin: None,
            wait: None,
        });
        for outcome in [
            RefreshOutcome::Refreshed,
            RefreshOutcome::Failed,
            RefreshOutcome::Failed,
        ] {
            sink.emit(&Event::TokenRefresh {
                connection: &connection,
                outcome,
                duration: Duration::from_millis(3),
            });
        }
        for active in [true, false, true] {
            sink.emit(&Event::Fallback {
                component: "rate_limit_redis",
                active,
            });
        }
        let text = metrics.render();
        for line in [
            "blueprint_proxy_fallback_active{integration=\"intercom\",component=\"rate_limit_redis\"} 1\n",
            "blueprint_proxy_fallbacks_total{integration=\"intercom\",component=\"rate_limit_redis\"} 2\n",
            "blueprint_proxy_fallback_active{integration=\"github\",component=\"rate_limit_redis\"} 0\n",
            "blueprint_proxy_retries_total{integration=\"intercom\"} 2\n",
            "blueprint_proxy_retries_total{integration=\"github\"} 0\n",
            "blueprint_proxy_rate_limit_waits_total{integration=\"intercom\",kind=\"pacing\"} 1\n",
            "blueprint_proxy_rate_limit_waits_total{integration=\"intercom\",kind=\"server_directed\"} 1\n",
            "blueprint_proxy_token_refreshes_total{integration=\"intercom\",outcome=\"refreshed\"} 1\n",
            "blueprint_proxy_token_refreshes_total{integration=\"intercom\",outcome=\"failed\"} 2\n",
            "blueprint_proxy_token_refreshes_total{integration=\"intercom\",outcome=\"refused\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
