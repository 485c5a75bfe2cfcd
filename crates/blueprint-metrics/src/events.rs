//! The layers' typed events, counted.

use std::fmt;
use std::sync::Arc;

use blueprint_core::{Event, EventSink, HoldReason, RefreshOutcome, RetryReason, RetryStop};
use http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram::DurationHistogram;
use crate::labels::Labels;

/// The labels of `reason` on `blueprint_retries_total`: one per [`RetryReason::label`].
const RETRY_REASONS: [RetryReason; 7] = [
    RetryReason::Status(StatusCode::TOO_MANY_REQUESTS),
    RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE),
    RetryReason::Status(StatusCode::REQUEST_TIMEOUT),
    RetryReason::ConnectFailed,
    RetryReason::Transport,
    RetryReason::AttemptTimeout,
    RetryReason::Other("other"),
];

const RETRY_STOPS: [RetryStop; 3] = [
    RetryStop::ServerWaitTooLong,
    RetryStop::Deadline,
    RetryStop::Budget,
];

const HOLD_REASONS: [HoldReason; 3] = [
    HoldReason::Spent,
    HoldReason::Answers,
    HoldReason::Smoothing,
];

const REFRESH_OUTCOMES: [RefreshOutcome; 4] = [
    RefreshOutcome::Refreshed,
    RefreshOutcome::Refused,
    RefreshOutcome::Failed,
    RefreshOutcome::FromStore,
];

/// The components that report [`Event::Fallback`] today, exported at 0 from the start so
/// that an alert on them has a series before the first fallback.
pub const FALLBACK_COMPONENTS: [&str; 1] = ["rate_limit_redis"];

/// The metrics of the layers' typed [`Event`]s, registered in a registry of yours; one
/// [`EventSink`] per integration ([`EventMetrics::sink`]) records into them. Cheap to clone.
///
/// See the [crate docs](crate) for the names, labels and meaning of each.
#[derive(Clone)]
pub struct EventMetrics {
    retries: Family<Labels, Counter>,
    retries_stopped: Family<Labels, Counter>,
    replays: Family<Labels, Counter>,
    waits: Family<Labels, Counter>,
    holds: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    refreshes: Family<Labels, Counter>,
    refresh_duration: Family<Labels, DurationHistogram>,
    fallback_active: Family<Labels, Gauge>,
    fallbacks: Family<Labels, Counter>,
}

impl fmt::Debug for EventMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventMetrics").finish_non_exhaustive()
    }
}

impl EventMetrics {
    /// Registers the event metrics in `registry` (names start with `blueprint_`; use
    /// [`Registry::sub_registry_with_prefix`] for a prefix of your own).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = EventMetrics {
            retries: Family::default(),
            retries_stopped: Family::default(),
            replays: Family::default(),
            waits: Family::default(),
            holds: Family::default(),
            refused: Family::default(),
            refreshes: Family::default(),
            refresh_duration: Family::default(),
            fallback_active: Family::default(),
            fallbacks: Family::default(),
        };
        registry.register(
            "blueprint_retries",
            "Attempts sent again by the retry layer, by reason",
            metrics.retries.clone(),
        );
        registry.register(
            "blueprint_retries_stopped",
            "Retryable answers the retry layer did not send again, by why it stopped",
            metrics.retries_stopped.clone(),
        );
        registry.register(
            "blueprint_replays_after_refresh",
            "Requests sent again at once with a token refreshed after a 401",
            metrics.replays.clone(),
        );
        registry.register(
            "blueprint_rate_limit_waits",
            "Waits for a rate limit: pacing = a connection's budget ran out and requests were held; server_directed = a retry waited as the server asked",
            metrics.waits.clone(),
        );
        registry.register(
            "blueprint_rate_limit_holds",
            "Requests the rate-limit layer held before sending, by reason",
            metrics.holds.clone(),
        );
        registry.register(
            "blueprint_rate_limit_refused",
            "Requests the rate-limit layer did not send: the budget frees up only after the call's deadline",
            metrics.refused.clone(),
        );
        registry.register(
            "blueprint_token_refreshes",
            "Access-token refreshes, by outcome",
            metrics.refreshes.clone(),
        );
        registry.register_with_unit(
            "blueprint_token_refresh_duration",
            "Time a token refresh took, whatever its outcome",
            Unit::Seconds,
            metrics.refresh_duration.clone(),
        );
        registry.register(
            "blueprint_fallback_active",
            "1 while a shared backend does not answer and the component works alone (rate_limit_redis: this process paces rate limits alone); else 0",
            metrics.fallback_active.clone(),
        );
        registry.register(
            "blueprint_fallbacks",
            "Times a shared backend stopped answering and the component began to work alone",
            metrics.fallbacks.clone(),
        );
        metrics
    }

    /// The sink for the stack and token source of the integration `name`: every label set
    /// of `name` is resolved here, once, so that counting an event is one atomic addition
    /// (no lookup, no lock, no allocation). Every series of `name` is exported from now on,
    /// at 0 until something happens.
    pub fn sink(&self, integration: &str) -> EventSink {
        let counters = Arc::new(Resolved::new(self, &Arc::from(integration)));
        EventSink::new(move |event: &Event<'_>| counters.count(event))
    }
}

/// One integration's series, resolved.
struct Resolved {
    retries: [Counter; RETRY_REASONS.len()],
    stopped: [Counter; RETRY_STOPS.len()],
    replays: Counter,
    pacing: Counter,
    server_directed: Counter,
    holds: [Counter; HOLD_REASONS.len()],
    refused: Counter,
    refreshes: [Counter; REFRESH_OUTCOMES.len()],
    refresh_duration: DurationHistogram,
    fallback_active: [Gauge; FALLBACK_COMPONENTS.len()],
    fallbacks: [Counter; FALLBACK_COMPONENTS.len()],
    /// For components that are not in [`FALLBACK_COMPONENTS`]: resolved when they report.
    metrics: EventMetrics,
    integration: Arc<str>,
}

impl Resolved {
    fn new(metrics: &EventMetrics, integration: &Arc<str>) -> Self {
        let one = |family: &Family<Labels, Counter>, key, value| {
            family.get_or_create_owned(&Labels::with(integration, key, value))
        };
        Resolved {
            retries: RETRY_REASONS.map(|r| one(&metrics.retries, "reason", r.label())),
            stopped: RETRY_STOPS.map(|s| one(&metrics.retries_stopped, "stop", s.label())),
            replays: metrics
                .replays
                .get_or_create_owned(&Labels::new(integration)),
            pacing: one(&metrics.waits, "kind", "pacing"),
            server_directed: one(&metrics.waits, "kind", "server_directed"),
            holds: HOLD_REASONS.map(|r| one(&metrics.holds, "reason", r.label())),
            refused: metrics
                .refused
                .get_or_create_owned(&Labels::new(integration)),
            refreshes: REFRESH_OUTCOMES.map(|o| one(&metrics.refreshes, "outcome", o.label())),
            refresh_duration: metrics
                .refresh_duration
                .get_or_create_owned(&Labels::new(integration)),
            fallback_active: FALLBACK_COMPONENTS.map(|c| {
                metrics.fallback_active.get_or_create_owned(&Labels::with(
                    integration,
                    "component",
                    c,
                ))
            }),
            fallbacks: FALLBACK_COMPONENTS.map(|c| one(&metrics.fallbacks, "component", c)),
            metrics: metrics.clone(),
            integration: Arc::clone(integration),
        }
    }

    fn count(&self, event: &Event<'_>) {
        match event {
            Event::Retry {
                reason,
                server_directed,
                ..
            } => {
                self.retries[retry_index(*reason)].inc();
                if *server_directed {
                    self.server_directed.inc();
                }
            }
            Event::RetryStopped { stop, .. } => {
                if let Some(i) = RETRY_STOPS.iter().position(|s| s == stop) {
                    self.stopped[i].inc();
                }
            }
            Event::ReplayAfterRefresh { .. } => {
                self.replays.inc();
            }
            Event::RateLimitHold { reason, .. } => {
                if let Some(i) = HOLD_REASONS.iter().position(|r| r == reason) {
                    self.holds[i].inc();
                }
            }
            Event::RateLimitPaused { .. } => {
                self.pacing.inc();
            }
            Event::RateLimitRefused { .. } => {
                self.refused.inc();
            }
            Event::TokenRefresh {
                outcome, duration, ..
            } => {
                if let Some(i) = REFRESH_OUTCOMES.iter().position(|o| o == outcome) {
                    self.refreshes[i].inc();
                }
                self.refresh_duration.observe(*duration);
            }
            Event::Fallback { component, active } => self.fallback(component, *active),
            _ => {}
        }
    }

    fn fallback(&self, component: &'static str, active: bool) {
        let value = i64::from(active);
        if let Some(i) = FALLBACK_COMPONENTS.iter().position(|c| *c == component) {
            self.fallback_active[i].set(value);
            if active {
                self.fallbacks[i].inc();
            }
            return;
        }
        // A component of a newer layer: rare, so a lookup is fine.
        let labels = Labels::with(&self.integration, "component", component);
        self.metrics
            .fallback_active
            .get_or_create(&labels)
            .set(value);
        if active {
            self.metrics.fallbacks.get_or_create(&labels).inc();
        }
    }
}

/// Where `reason` is counted in [`RETRY_REASONS`], by its label.
fn retry_index(reason: RetryReason) -> usize {
    let label = reason.label();
    RETRY_REASONS
        .iter()
        .position(|r| r.label() == label)
        .unwrap_or(RETRY_REASONS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use blueprint_core::ConnectionId;
    use prometheus_client::encoding::text::encode;
    use std::time::Duration;

    fn render(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn counts_the_layers_typed_events_per_integration() {
        let mut registry = Registry::default();
        let metrics = EventMetrics::register(&mut registry);
        let sink = metrics.sink("intercom");
        let _github = metrics.sink("github");
        let connection = ConnectionId::new("acme");
        let reason = RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE);
        for server_directed in [true, false] {
            sink.emit(&Event::Retry {
                connection: &connection,
                attempt: 2,
                reason,
                wait: Duration::from_millis(5),
                server_directed,
            });
        }
        sink.emit(&Event::Retry {
            connection: &connection,
            attempt: 2,
            reason: RetryReason::Status(StatusCode::TOO_MANY_REQUESTS),
            wait: Duration::from_millis(5),
            server_directed: true,
        });
        sink.emit(&Event::RetryStopped {
            connection: &connection,
            attempts: 2,
            reason,
            stop: RetryStop::Budget,
        });
        sink.emit(&Event::ReplayAfterRefresh {
            connection: &connection,
        });
        sink.emit(&Event::RateLimitPaused {
            connection: &connection,
            origin: None,
            wait: None,
        });
        sink.emit(&Event::RateLimitHold {
            connection: &connection,
            origin: None,
            reason: HoldReason::Smoothing,
        });
        sink.emit(&Event::RateLimitRefused {
            connection: &connection,
            origin: None,
            retry_after: Duration::from_secs(3),
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
        sink.emit(&Event::Fallback {
            component: "token_store_feed",
            active: true,
        });
        let text = render(&registry);
        for line in [
            "blueprint_retries_total{integration=\"intercom\",reason=\"server_error\"} 2\n",
            "blueprint_retries_total{integration=\"intercom\",reason=\"rate_limited\"} 1\n",
            "blueprint_retries_total{integration=\"intercom\",reason=\"transport\"} 0\n",
            "blueprint_retries_total{integration=\"github\",reason=\"server_error\"} 0\n",
            "blueprint_retries_stopped_total{integration=\"intercom\",stop=\"budget\"} 1\n",
            "blueprint_replays_after_refresh_total{integration=\"intercom\"} 1\n",
            "blueprint_rate_limit_waits_total{integration=\"intercom\",kind=\"pacing\"} 1\n",
            "blueprint_rate_limit_waits_total{integration=\"intercom\",kind=\"server_directed\"} 2\n",
            "blueprint_rate_limit_holds_total{integration=\"intercom\",reason=\"smoothing\"} 1\n",
            "blueprint_rate_limit_holds_total{integration=\"intercom\",reason=\"spent\"} 0\n",
            "blueprint_rate_limit_refused_total{integration=\"intercom\"} 1\n",
            "blueprint_token_refreshes_total{integration=\"intercom\",outcome=\"refreshed\"} 1\n",
            "blueprint_token_refreshes_total{integration=\"intercom\",outcome=\"failed\"} 2\n",
            "blueprint_token_refreshes_total{integration=\"intercom\",outcome=\"refused\"} 0\n",
            "blueprint_token_refresh_duration_seconds_count{integration=\"intercom\"} 3\n",
            "blueprint_token_refresh_duration_seconds_sum{integration=\"intercom\"} 0.009\n",
            "blueprint_fallback_active{integration=\"intercom\",component=\"rate_limit_redis\"} 1\n",
            "blueprint_fallbacks_total{integration=\"intercom\",component=\"rate_limit_redis\"} 2\n",
            "blueprint_fallback_active{integration=\"github\",component=\"rate_limit_redis\"} 0\n",
            "blueprint_fallback_active{integration=\"intercom\",component=\"token_store_feed\"} 1\n",
            "blueprint_fallbacks_total{integration=\"intercom\",component=\"token_store_feed\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn every_retry_reason_has_its_own_series() {
        let mut labels: Vec<&str> = RETRY_REASONS.iter().map(RetryReason::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RETRY_REASONS.len(), "{labels:?}");
        for (i, reason) in RETRY_REASONS.iter().enumerate() {
            assert_eq!(retry_index(*reason), i, "{reason:?}");
        }
    }
}
