//! What the layer logs when it holds and resumes requests. Alone in its test binary: a
//! thread-local subscriber sees a log line only if no other test's thread settles the
//! line's interest meanwhile (tracing caches it per call site, for every thread at once).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use blueprint_core::{BoxError, ConnectionId};
use blueprint_ratelimit::{RateLimitLayer, TokioClock};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{Layer, ServiceExt, service_fn};

const EPOCH: u64 = 1_700_000_000;

/// Collects what `tracing` prints.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default()
    }
}

/// An Intercom answer: `remaining` left, resetting at epoch second `reset`.
fn intercom(remaining: u64, reset: u64) -> Response<()> {
    Response::builder()
        .status(StatusCode::OK)
        .header("x-ratelimit-limit", "10")
        .header("x-ratelimit-remaining", remaining.to_string())
        .header("x-ratelimit-reset", reset.to_string())
        .body(())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(start_paused = true)]
async fn holding_and_resuming_are_logged_without_the_token() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let calls = Arc::new(Mutex::new(0u32));
    let api = service_fn(move |_req: Request<()>| {
        let n = calls.lock().map(|mut c| {
            *c += 1;
            *c
        });
        let response = if n.unwrap_or(0) == 1 {
            intercom(0, EPOCH + 4)
        } else {
            intercom(9, EPOCH + 8)
        };
        async move { Ok::<_, BoxError>(response) }
    });
    let clock = TokioClock::starting_at(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH));
    let svc = RateLimitLayer::intercom().clock(clock).layer(api);
    for _ in 0..2 {
        let mut request = Request::get("https://api.example.com/a")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        request.extensions_mut().insert(ConnectionId::new("ws-7"));
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cr3t-token"),
        );
        svc.clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let text = logs.text();
    assert!(text.contains("holding requests"), "{text}");
    assert!(text.contains("resuming requests"), "{text}");
    assert!(text.contains("connection=ws-7"), "{text}");
    assert!(text.contains("origin=https://api.example.com"), "{text}");
    assert!(text.contains("wait_ms=4000"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
}
