//! What one proxied call costs the proxy in-process: the real router (auth check, headers,
//! the integration's whole stack with an imported token, metrics, access log off) against
//! a hyper upstream on loopback, one call at a time on a current-thread runtime.
//!
//! Made to be run under `valgrind --tool=callgrind`, where instructions are counted
//! exactly: run it twice with two `REQUESTS` and divide the difference of the totals by
//! the difference of the counts, so that start-up cancels out:
//!
//! ```sh
//! cargo bench --bench proxy_call --no-run
//! for n in 1000 3000; do REQUESTS=$n valgrind --tool=callgrind \
//!     --callgrind-out-file=/tmp/proxy_call.$n target/release/deps/proxy_call-*; done
//! ```
//!
//! Without valgrind it prints the wall time per call (`cargo bench --bench proxy_call`).
//!
//! Measured when `/metrics` moved from the hand-written renderer to prometheus-client
//! (`blueprint-metrics`), REQUESTS=500 and 1500, both threads (proxy and upstream) counted:
//! 97,301 instructions per call before, 99,995 after (+2.8%), with 91 allocations per call
//! in both. The recording itself (`record_latency`, an atomic histogram) is about 80
//! instructions a call; most of the rest is inside glibc's `malloc` (the same number of
//! allocations, a different heap layout), so it moves with unrelated changes too.

#![allow(missing_docs, clippy::print_stdout, clippy::cast_precision_loss)]

use std::convert::Infallible;
use tokio::time::Instant;

use axum::body::Body;
use blueprint::Integrations;
use blueprint_proxy::{Proxy, SecretKey, registry};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

const KEY: &str = "bench-secret-key-0123456789";

fn main() {
    let requests: u64 = std::env::var("REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let upstream = start_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async move {
        let yaml = format!(
            "integrations:\n  intercom:\n    extends_blueprint: intercom\n    base_url: {upstream}/\n"
        );
        let registry = registry().unwrap_or_else(|e| panic!("{e}"));
        let integrations = Integrations::parse(&yaml, "bench.yaml", &registry, |_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let proxy = Proxy::builder(
            integrations,
            SecretKey::new(KEY).unwrap_or_else(|e| panic!("{e}")),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
        let router = proxy.router();
        let import = Request::put("/connections/intercom/acme")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"access_token":"bench-token"}"#))
            .unwrap_or_else(|e| panic!("{e}"));
        let reply = router
            .clone()
            .oneshot(import)
            .await
            .unwrap_or_else(|e| match e {});
        assert!(reply.status().is_success(), "import: {}", reply.status());
        let started = Instant::now();
        for _ in 0..requests {
            let request = Request::get("/proxy/me")
                .header("authorization", format!("Bearer {KEY}"))
                .header("provider-config-key", "intercom")
                .header("connection-id", "acme")
                .body(Body::empty())
                .unwrap_or_else(|e| panic!("{e}"));
            let response = router
                .clone()
                .oneshot(request)
                .await
                .unwrap_or_else(|e| match e {});
            assert_eq!(response.status(), 200);
            let _ = response.into_body().collect().await;
        }
        let elapsed = started.elapsed();
        println!(
            "proxy_call: {requests} calls, {:.1} µs per call (wall, one at a time)",
            elapsed.as_secs_f64() * 1e6 / requests as f64
        );
    });
}

/// A hyper server on its own thread that answers like Intercom.
fn start_server() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
            tx.send(addr).unwrap_or_else(|e| panic!("{e}"));
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        let response = Response::builder()
                            .header("content-type", "application/json")
                            .header("x-ratelimit-limit", "100000")
                            .header("x-ratelimit-remaining", "99999")
                            .body(Full::new(Bytes::from_static(b"{\"type\":\"admin\"}")))
                            .unwrap_or_else(|e| panic!("{e}"));
                        Ok::<_, Infallible>(response)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    let addr = rx.recv().unwrap_or_else(|e| panic!("{e}"));
    format!("http://{addr}")
}
