//! A latency histogram of plain atomics, encoded by prometheus-client.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The upper bounds of [`DurationHistogram`]'s buckets, in seconds: the OpenTelemetry
/// buckets of `http.client.request.duration` from 5 ms to 10 s, and 30, 60 and 120 s
/// past them, since a call's time includes waits for a rate-limit reset.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
    120.0,
];

/// A histogram of durations, in seconds, over [`DURATION_BUCKETS`].
///
/// prometheus-client's own `Histogram` takes a mutex on every observation; this one is
/// plain atomics (three relaxed additions), so recording on the request path never waits
/// for a scrape or another request. Cheap to clone (an `Arc`), and every clone records into
/// the same counts. Register it with a unit of seconds
/// ([`Unit::Seconds`](prometheus_client::registry::Unit::Seconds)), alone or in a
/// [`Family`](prometheus_client::metrics::family::Family).
#[derive(Clone, Default)]
pub struct DurationHistogram(Arc<Counts>);

#[derive(Default)]
struct Counts {
    /// Per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    count: AtomicU64,
    /// Microseconds: a sum of whole microseconds is exact, and atomic as an integer.
    sum_micros: AtomicU64,
}

impl DurationHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        DurationHistogram::default()
    }

    /// Records one duration.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|upper| secs <= *upper)
            .unwrap_or(DURATION_BUCKETS.len());
        let counts = &*self.0;
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        counts.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        counts.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Their sum.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.0.sum_micros.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for DurationHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurationHistogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish()
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        let counts = &*self.0;
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&counts.buckets)
            .map(|(upper, n)| (upper, n.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, read with them, so that `_count` always equals
        // the `+Inf` bucket even while calls are recorded during the scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        #[allow(clippy::cast_precision_loss)] // microseconds: exact far past any real sum
        let sum = counts.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::{Registry, Unit};

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_in_seconds() {
        let histogram = DurationHistogram::new();
        let mut registry = Registry::default();
        registry.register_with_unit("call", "Calls", Unit::Seconds, histogram.clone());
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_millis(300));
        histogram.observe(Duration::from_secs(600));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE call_seconds histogram\n",
            "call_seconds_bucket{le=\"0.005\"} 1\n",
            "call_seconds_bucket{le=\"0.25\"} 1\n",
            "call_seconds_bucket{le=\"0.5\"} 2\n",
            "call_seconds_bucket{le=\"120.0\"} 2\n",
            "call_seconds_bucket{le=\"+Inf\"} 3\n",
            "call_seconds_count 3\n",
            "call_seconds_sum 600.303\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert_eq!(histogram.count(), 3);
    }
}
