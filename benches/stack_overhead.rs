//! What the Blueprint layers cost per request, against the bare inner service in the same run.
//!
//! Two groups:
//! - `in_memory`: the inner service answers at once, so the difference is the layers' own
//!   CPU time per request.
//! - `loopback_32`: a hyper-util client against a hyper server on 127.0.0.1, 32 requests in
//!   flight per iteration; the ratio of the two times is the throughput the stack keeps.
//!
//! `cargo bench --bench stack_overhead`

#![allow(missing_docs)]

use std::convert::Infallible;
use std::time::Duration;

use tokio::time::Instant;

use blueprint_auth::{AuthLayer, StaticToken};
use blueprint_core::ReplayBody;
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
use tower::layer::util::{Identity, Stack};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const CONCURRENCY: usize = 32;

type Layers = Stack<
    AttemptTimeoutLayer,
    Stack<AuthLayer<StaticToken>, Stack<RetryLayer, Stack<TraceLayer, Identity>>>,
>;

/// Every Blueprint layer built so far, in the order of DESIGN.md.
fn full_stack(origin: &str) -> ServiceBuilder<Layers> {
    let token = StaticToken::new("bench-token").unwrap_or_else(|e| panic!("{e}"));
    ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(RetryLayer::new())
        .layer(AuthLayer::new(origin, token).unwrap_or_else(|e| panic!("{e}")))
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(30)))
}

fn in_memory(c: &mut Criterion) {
    let rt = runtime();
    let bare = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let bare_replay = tower::service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let origin = "http://api.example.com";
    let wrapped = full_stack(origin).service(bare_replay);

    let mut group = c.benchmark_group("in_memory");
    group.bench_function("bare", |b| {
        b.iter(|| rt.block_on(one(bare, "http://api.example.com/contacts")));
    });
    group.bench_function("stack", |b| {
        b.iter(|| rt.block_on(one(wrapped.clone(), "http://api.example.com/contacts")));
    });
    // Each layer alone, to see where the stack's cost goes.
    let uri = "http://api.example.com/contacts";
    let trace = TraceLayer::new().layer(bare);
    group.bench_function("trace_only", |b| b.iter(|| rt.block_on(one(trace.clone(), uri))));
    let token = StaticToken::new("bench-token").unwrap_or_else(|e| panic!("{e}"));
    let auth = AuthLayer::new(origin, token).unwrap_or_else(|e| panic!("{e}")).layer(bare);
    group.bench_function("auth_only", |b| b.iter(|| rt.block_on(one(auth.clone(), uri))));
    let retry = RetryLayer::new().layer(bare_replay);
    group.bench_function("retry_only", |b| b.iter(|| rt.block_on(one(retry.clone(), uri))));
    let timeout = AttemptTimeoutLayer::new(Duration::from_secs(30)).layer(bare);
    group.bench_function("attempt_timeout_only", |b| {
        b.iter(|| rt.block_on(one(timeout.clone(), uri)));
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
    let inner = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let wrapped = full_stack(&base).service(inner);
    let uri = format!("{base}/contacts");

    let mut group = c.benchmark_group("loopback_32");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("bare_hyper_util", |b| {
        b.iter_custom(|iters| rt.block_on(batches(bare.clone(), &uri, iters)));
    });
    group.bench_function("blueprint_stack", |b| {
        b.iter_custom(|iters| rt.block_on(batches(wrapped.clone(), &uri, iters)));
    });
    group.finish();
}

/// `iters` rounds of CONCURRENCY requests in flight at once.
async fn batches<S>(svc: S, uri: &str, iters: u64) -> Duration
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
            let req = Request::get(uri)
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
