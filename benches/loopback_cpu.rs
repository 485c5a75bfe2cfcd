//! CPU per request and throughput of the engine's whole stack against a bare hyper-util
//! client, on loopback, each client alone on one runtime thread, in the same run.
//!
//! Why this bench besides `stack_overhead`: a client that costs more CPU per request wakes
//! its peers (the server, the other core) more often, so throughput on a loaded machine
//! falls further than in-memory figures suggest. Here every client runs on its own
//! current-thread runtime on its own OS thread, with 32 requests in flight, against a hyper
//! server on another thread; the client thread's CPU time comes from
//! `/proc/thread-self/schedstat` (nanoseconds on CPU), so the figure is the client's own
//! cost whatever else the machine does. Rounds are interleaved (bare, stacks, bare, …) and
//! the median of the rounds is reported, with each stack's ratio to the bare client of the
//! same run; a second table pairs each client with the bare client of its own round and
//! gives the median, lowest and highest of those ratios, so that a noisy machine shows as a
//! wide range instead of a single figure that happens to be lucky or not.
//!
//! Clients:
//! - `bare_hyper_util`: hyper-util's legacy client, absolute URIs;
//! - `bare_same_headers`: the same client sending what the stack sends and any client of
//!   the API must (`Authorization` and `Accept`), so that the cost of two more headers on
//!   both ends of the connection is told apart from the stack's own;
//! - `stack_static_token`: the engine's default stack (`StackBuilder` defaults) with a
//!   `StaticToken`;
//! - `stack_oauth2_store`: the same stack with what the proxy uses: an `OAuth2TokenSource`
//!   over a token store holding an unexpired access token with a refresh token.
//!
//! The server answers like Intercom does: a small JSON body with `X-RateLimit-*` headers, so
//! the rate-limit layer reads real headers on every response.
//!
//! `cargo bench --bench loopback_cpu` (environment: `ROUNDS`, default 7; `REQUESTS` per round
//! and client, default 20000; `ONLY=<client>` runs one client, for a profiler such as
//! `valgrind --tool=callgrind`).

#![allow(missing_docs, clippy::print_stdout, clippy::cast_precision_loss)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint::{Blueprint, SharedClient, StackBody, StackBuilder};
use blueprint_auth::StaticToken;
use blueprint_core::{AccessToken, ConnectionId, TokenSource};
use blueprint_refresh::{
    MemoryStore, OAuth2TokenSource, Provider, ProviderConfig, StoreKey, TokenRecord, TokenStore,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Layer, Service, ServiceExt};

const CONCURRENCY: usize = 32;

fn main() {
    let rounds = env_number("ROUNDS", 7);
    let requests = env_number("REQUESTS", 20_000);
    let base = start_server();
    println!(
        "loopback_cpu: {rounds} rounds x {requests} requests per client, {CONCURRENCY} in flight, \
         one client thread each, server {base}"
    );

    let clients: Vec<(&str, Round)> = vec![
        ("bare_hyper_util", bare(&base, requests, |client| client)),
        (
            "bare_same_headers",
            bare(&base, requests, |client| {
                client.map_request(with_headers as fn(_) -> _)
            }),
        ),
        ("stack_static_token", {
            let base = base.clone();
            Box::new(move || {
                let base = base.clone();
                run_client(requests, move || {
                    let token = StaticToken::new("bench-token").unwrap_or_else(|e| panic!("{e}"));
                    (stack(&base, Arc::new(token)), Arc::from("/contacts"))
                })
            })
        }),
        ("stack_oauth2_store", {
            let base = base.clone();
            Box::new(move || {
                let base = base.clone();
                run_client(requests, move || {
                    (stack(&base, oauth2_source()), Arc::from("/contacts"))
                })
            })
        }),
    ];

    // `ONLY=name` runs one client (for a profiler).
    let only = std::env::var("ONLY").ok();
    let mut samples: Vec<Vec<Sample>> = clients.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Rotate the order so that no client always runs first (or after the same one).
        for i in 0..clients.len() {
            let index = (i + usize::try_from(round).unwrap_or(0)) % clients.len();
            if only.as_deref().is_some_and(|only| only != clients[index].0) {
                continue;
            }
            let sample = std::thread::scope(|scope| {
                scope
                    .spawn(|| (clients[index].1)())
                    .join()
                    .unwrap_or_else(|_| panic!("client thread panicked"))
            });
            samples[index].push(sample);
        }
    }

    if only.is_some() {
        return;
    }
    let medians: Vec<Sample> = samples.iter().map(|s| median(s)).collect();
    let (bare, same) = (medians[0], medians[1]);
    println!();
    println!(
        "| client | req/s | CPU µs/request | throughput vs bare | CPU vs bare | \
         throughput vs bare_same_headers | CPU vs bare_same_headers |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((name, _), m) in clients.iter().zip(&medians) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.1}% | {:+.2} µs | {:.1}% | {:+.2} µs |",
            m.per_sec,
            m.cpu_us,
            100.0 * m.per_sec / bare.per_sec,
            m.cpu_us - bare.cpu_us,
            100.0 * m.per_sec / same.per_sec,
            m.cpu_us - same.cpu_us,
        );
    }

    // The same figures paired by round: each client against the bare client of its own
    // round (the rounds interleave, so a round's clients ran close together in time). On a
    // noisy machine the medians of the columns above can each come from a different
    // round; the range below says how far one round's ratio strays from another's.
    println!();
    println!(
        "| client, paired by round | throughput vs bare: median (lowest, highest) | \
         CPU vs bare: median (lowest, highest) |"
    );
    println!("|---|---|---|");
    for ((name, _), own) in clients.iter().zip(&samples).skip(1) {
        let throughput = spread(
            own.iter()
                .zip(&samples[0])
                .map(|(s, b)| 100.0 * s.per_sec / b.per_sec),
        );
        let cpu = spread(
            own.iter()
                .zip(&samples[0])
                .map(|(s, b)| s.cpu_us - b.cpu_us),
        );
        println!(
            "| {name} | {:.1}% ({:.1}%, {:.1}%) | {:+.2} µs ({:+.2}, {:+.2}) |",
            throughput.0, throughput.1, throughput.2, cpu.0, cpu.1, cpu.2,
        );
    }
}

/// The median, lowest and highest of `values`.
fn spread(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match (values.first(), values.last()) {
        (Some(&low), Some(&high)) => (values[values.len() / 2], low, high),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

/// A client of the bench: runs one round and measures it.
type Round = Box<dyn Fn() -> Sample + Send + Sync>;

#[derive(Debug, Clone, Copy)]
struct Sample {
    per_sec: f64,
    cpu_us: f64,
}

fn median(samples: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Sample {
        per_sec: pick(|s| s.per_sec),
        cpu_us: pick(|s| s.cpu_us),
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A round of hyper-util's legacy client (absolute URIs), as `wrap` dresses it.
fn bare<S>(base: &str, requests: u64, wrap: fn(BareClient) -> S) -> Round
where
    S: Service<Request<Full<Bytes>>, Response = Response<hyper::body::Incoming>> + Clone + 'static,
    S::Future: 'static,
    S::Error: std::fmt::Debug,
{
    let uri: Arc<str> = Arc::from(format!("{base}/contacts").as_str());
    Box::new(move || {
        let uri = Arc::clone(&uri);
        run_client(requests, move || {
            let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            (wrap(client), uri)
        })
    })
}

type BareClient = HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// What a bare client of the API adds to each request itself.
fn with_headers(mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let headers = request.headers_mut();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer bench-token"),
    );
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    request
}

/// The engine's whole default stack for the API at `base`.
fn stack<S>(
    base: &str,
    tokens: Arc<S>,
) -> blueprint::BlueprintService<
    SharedClient<hyper_util::client::legacy::connect::HttpConnector, StackBody<Full<Bytes>>>,
>
where
    S: TokenSource,
{
    let api = Blueprint::new("bench", "v1", base)
        .and_then(|bp| bp.default_header("accept", "application/json"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The same hyper-util client as the bare one, shared as `default_client` shares its own.
    let inner = SharedClient::new(
        HyperClient::builder(TokioExecutor::new()).build_http::<StackBody<Full<Bytes>>>(),
    );
    StackBuilder::with_shared_tokens(api, tokens)
        .layer()
        .unwrap_or_else(|e| panic!("{e}"))
        .layer(inner)
}

/// What the proxy uses: an OAuth2 token source over a store that holds an unexpired token
/// with a refresh token, already read into the source's cache.
fn oauth2_source() -> Arc<OAuth2TokenSource> {
    let provider = Provider::new(ProviderConfig {
        client_id: "bench".into(),
        token_url: "https://auth.example.com/token".into(),
        ..ProviderConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let store = MemoryStore::new();
    let source = OAuth2TokenSource::builder(provider, store).build();
    let now = SystemTime::now();
    let record = TokenRecord::new(
        AccessToken::new("bench-oauth-token").unwrap_or_else(|e| panic!("{e}")),
        now,
    )
    .with_refresh_token("bench-refresh-token")
    .with_expires_at(now + Duration::from_secs(3600));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let key: StoreKey = source.key(&ConnectionId::default());
        source
            .store()
            .put(&key, record.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Warm the cache, as a proxy that has served the connection before has.
        source
            .token(&ConnectionId::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    Arc::new(source)
}

/// Runs `requests` requests, `CONCURRENCY` at a time, on a current-thread runtime on this
/// thread; the client is made on the runtime by `make`.
fn run_client<S, M>(requests: u64, make: M) -> Sample
where
    M: FnOnce() -> (S, Arc<str>),
    S: Service<Request<Full<Bytes>>, Response = Response<hyper::body::Incoming>> + Clone + 'static,
    S::Future: 'static,
    S::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Made before the runtime runs: the OAuth2 source warms its cache on a runtime of its own.
    let (client, uri) = make();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        // Warm up: open the connections and fill every cache.
        drive(client.clone(), Arc::clone(&uri), (CONCURRENCY * 20) as u64).await;
        let cpu = thread_cpu();
        let start = tokio::time::Instant::now();
        drive(client, uri, requests).await;
        let wall = start.elapsed();
        let cpu = thread_cpu().saturating_sub(cpu);
        Sample {
            per_sec: requests as f64 / wall.as_secs_f64(),
            cpu_us: cpu.as_secs_f64() * 1e6 / requests as f64,
        }
    })
}

async fn drive<S>(client: S, uri: Arc<str>, requests: u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<hyper::body::Incoming>> + Clone + 'static,
    S::Future: 'static,
    S::Error: std::fmt::Debug,
{
    let left = Arc::new(AtomicU64::new(requests));
    let mut workers = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        let client = client.clone();
        let uri = Arc::clone(&uri);
        let left = Arc::clone(&left);
        workers.push(tokio::task::spawn_local(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let request = Request::get(&*uri)
                    .body(Full::default())
                    .unwrap_or_else(|e| panic!("{e}"));
                let response = client
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                std::hint::black_box(body.to_bytes());
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// This thread's time on CPU, from `/proc/thread-self/schedstat` (nanoseconds).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap_or_else(|e| panic!("this bench needs /proc/thread-self/schedstat: {e}"));
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected schedstat: {text}"));
    Duration::from_nanos(ns)
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
                        let reset = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() + 10);
                        let response = Response::builder()
                            .header("content-type", "application/json")
                            .header("x-ratelimit-limit", "100000")
                            .header("x-ratelimit-remaining", "99999")
                            .header("x-ratelimit-reset", reset)
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
