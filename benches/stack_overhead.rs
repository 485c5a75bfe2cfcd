//! What the Blueprint layers cost per request, against the bare inner service in the same run.
//!
//! Two groups:
//! - `in_memory`: the inner service answers at once, so the difference from `bare` is the
//!   layers' own CPU time per request: the whole engine stack, then each layer alone.
//! - `loopback_32`: a hyper-util client against a hyper server on 127.0.0.1, 32 requests in
//!   flight per iteration; the ratio of the two times is the throughput the stack keeps.
//!
//! The stack is the engine's (`StackBuilder`): trace, retry (60 s deadline, 3 attempts,
//! budget), rate-limit pacing (no limit reached), token refresh, auth injection, attempt
//! timeout (30 s), base URL and default headers — the settings a user gets by default.
//!
//! `cargo bench --bench stack_overhead`

#![allow(missing_docs, clippy::semicolon_if_nothing_returned)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use blueprint::{Blueprint, BlueprintLayer, StackBody, StackBuilder};
use blueprint_auth::{AuthLayer, StaticToken};
use blueprint_core::ReplayBody;
use blueprint_ratelimit::RateLimitLayer;
use blueprint_refresh::RefreshLayer;
use blueprint_retry::{AttemptTimeoutLayer, RetryLayer};
use blueprint_trace::TraceLayer;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const CONCURRENCY: usize = 32;

fn token() -> StaticToken {
    StaticToken::new("bench-token").unwrap_or_else(|e| panic!("{e}"))
}

/// The engine's whole stack for an API at `origin`, with its default settings.
fn full_stack(origin: &str) -> BlueprintLayer {
    let api = Blueprint::new("bench", "v1", origin)
        .and_then(|bp| bp.default_header("accept", "application/json"))
        .unwrap_or_else(|e| panic!("{e}"));
    StackBuilder::new(api, token())
        .layer()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ok<B>(_req: Request<B>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
}

fn in_memory(c: &mut Criterion) {
    let rt = runtime();
    let origin = "http://api.example.com";
    let absolute = "http://api.example.com/contacts";
    let bare = tower::service_fn(ok::<Full<Bytes>>);
    let stack = full_stack(origin).layer(tower::service_fn(ok::<StackBody<Full<Bytes>>>));

    let mut group = c.benchmark_group("in_memory");
    group.bench_function("bare", |b| b.iter(|| rt.block_on(one(bare, absolute))));
    group.bench_function("stack", |b| {
        b.iter(|| rt.block_on(one(stack.clone(), "/contacts")))
    });

    // Each layer alone, to see where the stack's cost goes.
    let trace = TraceLayer::new().layer(bare);
    group.bench_function("trace_only", |b| {
        b.iter(|| rt.block_on(one(trace.clone(), absolute)))
    });
    let retry = RetryLayer::new().layer(tower::service_fn(ok::<ReplayBody<Full<Bytes>>>));
    group.bench_function("retry_only", |b| {
        b.iter(|| rt.block_on(one(retry.clone(), absolute)))
    });
    let ratelimit = RateLimitLayer::intercom().layer(bare);
    group.bench_function("ratelimit_only", |b| {
        b.iter(|| rt.block_on(one(ratelimit.clone(), absolute)));
    });
    let refresh =
        RefreshLayer::new(token()).layer(tower::service_fn(ok::<ReplayBody<Full<Bytes>>>));
    group.bench_function("refresh_only", |b| {
        b.iter(|| rt.block_on(one(refresh.clone(), absolute)))
    });
    let auth = AuthLayer::new(origin, token())
        .unwrap_or_else(|e| panic!("{e}"))
        .layer(bare);
    group.bench_function("auth_only", |b| {
        b.iter(|| rt.block_on(one(auth.clone(), absolute)))
    });
    let timeout = AttemptTimeoutLayer::new(Duration::from_secs(30)).layer(bare);
    group.bench_function("attempt_timeout_only", |b| {
        b.iter(|| rt.block_on(one(timeout.clone(), absolute)));
    });
    group.finish();
}

async fn one<S>(mut svc: S, uri: &str)
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let req = Request::get(uri)
        .body(Full::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let res = svc
        .ready()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .call(req)
        .await;
    std::hint::black_box(res.unwrap_or_else(|e| panic!("{e:?}")));
}

fn loopback(c: &mut Criterion) {
    let rt = runtime();
    let base = rt.block_on(start_server());
    let bare = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let inner = Client::builder(TokioExecutor::new()).build_http::<StackBody<Full<Bytes>>>();
    let stack = full_stack(&base).layer(inner);
    let absolute = format!("{base}/contacts");

    let mut group = c.benchmark_group("loopback_32");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("bare_hyper_util", |b| {
        b.iter_custom(|iters| {
            rt.block_on(batches(bare.clone(), Arc::from(absolute.as_str()), iters))
        });
    });
    group.bench_function("blueprint_stack", |b| {
        b.iter_custom(|iters| rt.block_on(batches(stack.clone(), Arc::from("/contacts"), iters)));
    });
    group.finish();
}

/// `iters` rounds of CONCURRENCY requests in flight at once.
async fn batches<S>(svc: S, uri: Arc<str>, iters: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<hyper::body::Incoming>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let svc = svc.clone();
            let req = Request::get(&*uri)
                .body(Full::default())
                .unwrap_or_else(|e| panic!("{e}"));
            set.spawn(async move {
                let res = svc.oneshot(req).await.unwrap_or_else(|e| panic!("{e:?}"));
                let body = res
                    .into_body()
                    .collect()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                std::hint::black_box(body.to_bytes());
            });
        }
        while set.join_next().await.is_some() {}
    }
    start.elapsed()
}

async fn start_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

criterion_group!(benches, in_memory, loopback);
criterion_main!(benches);
