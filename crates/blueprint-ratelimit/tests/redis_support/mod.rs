//! What the Redis tests share: the real Redis at 127.0.0.1:6379 (or `BLUEPRINT_TEST_REDIS_URL`),
//! a unique key prefix per test, and a TCP relay in front of Redis that a test cuts and
//! restores (the shared Redis server itself is never stopped).

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

// The relay and `redis_addr` are the proxy tests' own (`tests/proxy_support/relay.rs`), so
// that both packages' tests cut Redis the same way.
#[path = "../../../../tests/proxy_support/relay.rs"]
mod relay;
pub use relay::{Relay, redis_addr};

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("BLUEPRINT_TEST_REDIS_URL")
        .unwrap_or_else(|_| String::from("redis://127.0.0.1:6379/0"))
}

/// A key prefix no other test (or run) uses.
pub fn prefix(test: &str) -> String {
    format!("bptest:{test}:{}:{}", std::process::id(), fastrand::u64(..))
}

/// A plain connection for looking at keys.
pub async fn inspector() -> redis::aio::MultiplexedConnection {
    redis_addr().await;
    redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

/// Log lines written while the test runs, to count WARNs.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// Where this thread's log lines go, while a test captures them.
    static SINK: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the capturing test's [`Logs`], if this thread has one.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|sink| {
            if let Some(logs) = &*sink.borrow() {
                logs.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ends a capture when dropped.
pub struct Capture;

impl Drop for Capture {
    fn drop(&mut self) {
        SINK.with(|sink| sink.borrow_mut().take());
    }
}

impl Logs {
    /// Collects this thread's logs (use a current-thread runtime) until the guard is
    /// dropped. One global subscriber serves every test, so that no test's filter decides
    /// for another whether a log line is written at all.
    pub fn capture() -> (Logs, Capture) {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadSink)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        let logs = Logs::default();
        SINK.with(|sink| *sink.borrow_mut() = Some(logs.clone()));
        (logs, Capture)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

/// Waits (really: Redis keeps real time) until `check` holds, at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
