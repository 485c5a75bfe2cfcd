//! The duration of each call, by integration and method.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Method;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram::DurationHistogram;
use crate::labels::Labels;

/// The values of `http_request_method`: the methods of RFC 9110 and PATCH, as the
/// OpenTelemetry conventions name them, and `_OTHER` for any other.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// `http_client_request_duration_seconds`: how long each call through a stack took, by
/// integration and method. Cheap to clone.
///
/// It is the OpenTelemetry metric `http.client.request.duration` measured where the trace
/// layer's `http.client` span is: one *logical* call, its retries and waits for a rate
/// limit or a token included (the span's `http.request.resend_count` says how many times
/// it was sent).
#[derive(Clone)]
pub struct ClientMetrics {
    durations: Family<Labels, DurationHistogram>,
}

impl fmt::Debug for ClientMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMetrics").finish_non_exhaustive()
    }
}

impl ClientMetrics {
    /// Registers `http_client_request_duration_seconds` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let durations = Family::<Labels, DurationHistogram>::default();
        registry.register_with_unit(
            "http_client_request_duration",
            "Time of each call through the stack, from the request until the response headers or an error, retries and waits included",
            Unit::Seconds,
            durations.clone(),
        );
        ClientMetrics { durations }
    }

    /// The recorder of the integration `name`'s calls.
    pub fn integration(&self, name: &str) -> CallDurations {
        CallDurations(Arc::new(PerMethod {
            integration: Arc::from(name),
            family: self.durations.clone(),
            methods: Default::default(),
        }))
    }
}

/// Records one integration's call durations ([`ClientMetrics::integration`]). Cheap to
/// clone.
///
/// Each method's series is made the first time a call with it is recorded (a method never
/// called is not exported); from then on, recording is an atomic load and three atomic
/// additions, with no lookup, lock or allocation.
#[derive(Clone)]
pub struct CallDurations(Arc<PerMethod>);

struct PerMethod {
    integration: Arc<str>,
    family: Family<Labels, DurationHistogram>,
    methods: [OnceLock<DurationHistogram>; METHODS.len()],
}

impl fmt::Debug for CallDurations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallDurations")
            .field(&self.0.integration)
            .finish()
    }
}

impl CallDurations {
    /// One call with `method` took `elapsed`.
    #[inline]
    pub fn record(&self, method: &Method, elapsed: Duration) {
        let i = method_index(method);
        let per = &*self.0;
        per.methods[i]
            .get_or_init(|| {
                per.family.get_or_create_owned(&Labels::with(
                    &per.integration,
                    "http_request_method",
                    METHODS[i],
                ))
            })
            .observe(elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn each_method_is_its_own_series_made_on_first_use() {
        let mut registry = Registry::default();
        let calls = ClientMetrics::register(&mut registry);
        let intercom = calls.integration("intercom");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(!text.contains("http_client_request_duration"), "{text}");
        intercom.record(&Method::GET, Duration::from_millis(20));
        intercom.record(&Method::GET, Duration::from_millis(40));
        intercom.record(
            &Method::from_bytes(b"PROPFIND").unwrap(),
            Duration::from_secs(1),
        );
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE http_client_request_duration_seconds histogram\n",
            "# UNIT http_client_request_duration_seconds seconds\n",
            "http_client_request_duration_seconds_count{integration=\"intercom\",http_request_method=\"GET\"} 2\n",
            "http_client_request_duration_seconds_sum{integration=\"intercom\",http_request_method=\"GET\"} 0.06\n",
            "http_client_request_duration_seconds_bucket{le=\"0.025\",integration=\"intercom\",http_request_method=\"GET\"} 1\n",
            "http_client_request_duration_seconds_bucket{le=\"0.05\",integration=\"intercom\",http_request_method=\"GET\"} 2\n",
            "http_client_request_duration_seconds_count{integration=\"intercom\",http_request_method=\"_OTHER\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains("\"POST\""), "{text}");
    }
}
