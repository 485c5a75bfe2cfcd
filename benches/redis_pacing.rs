//! What sharing budgets in Redis adds to a call: the rate-limit layer with in-process
//! pacing against the same layer with `RedisBudgets`, each over a hyper-util client to a
//! hyper server on loopback, in the same run, and how many Redis round trips each call
//! costs.
//!
//! The server answers like Intercom does (`X-RateLimit-*`, a large budget, windows of ten
//! seconds aligned on the clock), so no request is ever held: the figures are the cost of
//! asking, not of waiting. Rounds are interleaved (in-process, Redis, in-process, …) and the
//! median of the rounds is reported:
//!
//! - sequential: one call at a time, microseconds per call, and the ratio Redis/in-process;
//! - concurrent: 32 calls in flight, calls per second, and the ratio;
//! - round trips per call: the admissions and observation batches `RedisStats` counts, and
//!   the `EVALSHA` calls Redis counts (`INFO commandstats`, which sees every client of that
//!   Redis, so run it on a quiet one).
//!
//! Needs Redis at 127.0.0.1:6379 (or `BLUEPRINT_TEST_REDIS_URL`); without one it says so
//! and stops. `cargo bench --bench redis_pacing` (environment: `ROUNDS`, default 5;
//! `REQUESTS` per round and client, default 5000).

#![allow(missing_docs, clippy::print_stdout, clippy::cast_precision_loss)]

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint_ratelimit::{RateLimitLayer, RateLimiting, RedisBudgets};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tower::{Layer, ServiceExt};

const CONCURRENCY: usize = 32;

type Inner = Client<HttpConnector, Full<Bytes>>;
type Paced = RateLimiting<Inner>;

fn main() {
    let rounds = env_number("ROUNDS", 5);
    let requests = env_number("REQUESTS", 5000);
    let url = std::env::var("BLUEPRINT_TEST_REDIS_URL")
        .unwrap_or_else(|_| String::from("redis://127.0.0.1:6379/0"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async move {
        let Some(redis) = redis_addr(&url).await else {
            println!("redis_pacing: skipped, no Redis answers at {url}");
            return;
        };
        let base = start_server();
        let prefix = format!("bpbench:{}:{}", std::process::id(), fastrand_u64());
        let budgets = match RedisBudgets::builder(&url) {
            Ok(builder) => builder.prefix(prefix).connect().await,
            Err(e) => panic!("{e}"),
        };
        let client = || Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let local: Paced = RateLimitLayer::intercom().layer(client());
        let shared: Paced = RateLimitLayer::intercom()
            .shared(budgets.clone())
            .layer(client());
        let uri = format!("{base}/contacts");
        println!(
            "redis_pacing: {rounds} rounds x {requests} requests per client, server {base}, Redis {redis}"
        );
        // Warm up: connections, the first window in Redis.
        sequential(&local, &uri, 200).await;
        sequential(&shared, &uri, 200).await;

        let (mut seq_local, mut seq_shared, mut con_local, mut con_shared) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let stats_before = budgets.stats();
        let evalsha_before = command_calls(redis, "evalsha").await;
        for _ in 0..rounds {
            seq_local.push(sequential(&local, &uri, requests).await);
            seq_shared.push(sequential(&shared, &uri, requests).await);
            con_local.push(concurrent(&local, &uri, requests).await);
            con_shared.push(concurrent(&shared, &uri, requests).await);
        }
        let evalsha = command_calls(redis, "evalsha").await - evalsha_before;
        let stats = budgets.stats();
        let calls = (rounds * requests * 2) as f64;

        let per_call = |d: Duration| d.as_secs_f64() * 1e6 / requests as f64;
        let per_sec = |d: Duration| requests as f64 / d.as_secs_f64();
        let (l, s) = (per_call(median(&seq_local)), per_call(median(&seq_shared)));
        println!(
            "sequential   in-process {l:8.1} us/call   redis {s:8.1} us/call   ratio {:.2}   added {:.1} us/call",
            s / l,
            s - l
        );
        let (l, s) = (per_sec(median(&con_local)), per_sec(median(&con_shared)));
        println!(
            "32 in flight in-process {l:8.0} calls/s  redis {s:8.0} calls/s  ratio {:.2}",
            s / l
        );
        println!(
            "round trips per call: {:.3} admissions (on the request path) + {:.4} observation batches \
             ({} observations sent, {} dropped, {} errors); Redis ran {:.3} EVALSHA per call",
            (stats.admissions - stats_before.admissions) as f64 / calls,
            (stats.observation_batches - stats_before.observation_batches) as f64 / calls,
            stats.observations - stats_before.observations,
            stats.dropped - stats_before.dropped,
            stats.errors - stats_before.errors,
            evalsha as f64 / calls,
        );
    });
}

async fn call(service: &Paced, uri: &str) {
    let request = Request::get(uri)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|e| panic!("{e}"));
    let response = service
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = response.into_body().collect().await;
}

async fn sequential(service: &Paced, uri: &str, requests: usize) -> Duration {
    let start = tokio::time::Instant::now();
    for _ in 0..requests {
        call(service, uri).await;
    }
    start.elapsed()
}

async fn concurrent(service: &Paced, uri: &str, requests: usize) -> Duration {
    let start = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let service = service.clone();
        let uri = uri.to_owned();
        let n = requests / CONCURRENCY + usize::from(worker < requests % CONCURRENCY);
        set.spawn(async move {
            for _ in 0..n {
                call(&service, &uri).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    start.elapsed()
}

fn median(rounds: &[Duration]) -> Duration {
    let mut sorted = rounds.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(3);
    hasher.finish()
}

/// The address of the Redis at `url`, if it accepts a connection.
async fn redis_addr(url: &str) -> Option<std::net::SocketAddr> {
    let hostport = url
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()?
        .rsplit('@')
        .next()?
        .to_owned();
    let addr = tokio::net::lookup_host(&hostport).await.ok()?.next()?;
    let connected =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
    matches!(connected, Ok(Ok(_))).then_some(addr)
}

/// How many times Redis has run `command` (`INFO commandstats`).
async fn command_calls(redis: std::net::SocketAddr, command: &str) -> u64 {
    let Ok(stream) = tokio::net::TcpStream::connect(redis).await else {
        return 0;
    };
    let mut stream = BufReader::new(stream);
    if stream
        .get_mut()
        .write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .await
        .is_err()
    {
        return 0;
    }
    let mut head = String::new();
    let _ = stream.read_line(&mut head).await;
    let len: usize = head.trim().trim_start_matches('$').parse().unwrap_or(0);
    let mut body = vec![0; len];
    if stream.read_exact(&mut body).await.is_err() {
        return 0;
    }
    let body = String::from_utf8_lossy(&body);
    let prefix = format!("cmdstat_{command}:calls=");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A hyper server on its own thread that answers like Intercom, with a budget far larger
/// than the bench spends, in windows of ten seconds.
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
                            .map_or(0, |d| (d.as_secs() / 10 + 1) * 10);
                        let response = Response::builder()
                            .header("content-type", "application/json")
                            .header("x-ratelimit-limit", "100000000")
                            .header("x-ratelimit-remaining", "99999999")
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
