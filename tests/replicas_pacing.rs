//! Two real `blueprint-proxy` processes in front of one API whose limiter counts per token
//! (Intercom's headers, 50 per 2-second window), one connection, 8 workers offering about
//! three times the limit, split across both replicas, for 20 windows: with `--redis` the two
//! spend one budget; without it, each spends the whole budget on its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use proxy_support::relay::{command_calls, redis_addr};
use proxy_support::windowed::{Counts, WindowedApi};
use proxy_support::{Process, Target, TempDir, client, yaml};
use serde_json::json;

/// Retries wait for the server's reset, within a deadline long enough for a window or two.
const RETRY: &str = "{ max_attempts: 3, base_delay_ms: 10, max_delay_ms: 200, deadline_ms: 10000, attempt_timeout_ms: 3000, max_server_wait_ms: 3000 }";
const TOKEN: &str = "tok_REPLICAS_5ca1ab1e";
const LIMIT: u64 = 50;
const WINDOW: Duration = Duration::from_secs(2);
const WINDOWS: u64 = 20;
const WORKERS: usize = 8;
/// Each worker sends at most one call this often: 8 workers, 75 calls a second, three
/// times the 25 a second the limiter allows.
const PACE: Duration = Duration::from_millis(107);

/// Two proxies over one SQLite store, with these extra arguments, and the connection
/// imported through the first.
async fn replicas(dir: &TempDir, api: &WindowedApi, args: &[&str]) -> Vec<Process> {
    std::fs::write(dir.path("i.yaml"), yaml(&api.url(), RETRY, "")).unwrap();
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let proxy = Process::start_full(
            &dir.path("i.yaml"),
            &format!("sqlite://{}", dir.path("store.db").display()),
            "127.0.0.1:0",
            &[],
            args,
            None,
        )
        .await;
        proxies.push(proxy);
    }
    let imported = proxies[0]
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    proxies
}

/// The statuses of every call the workers made, from the start of a window for `windows`
/// windows; that first window.
async fn load(api: &WindowedApi, proxies: &[Target], windows: u64) -> (u64, Vec<u16>) {
    let first = api.next_window().await;
    let end = first + windows;
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let target = proxies[i % proxies.len()];
        let api = api.clone();
        workers.push(tokio::spawn(async move {
            let client = client();
            let mut statuses = Vec::new();
            let mut pace = tokio::time::interval(PACE);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                pace.tick().await;
                if api.window_now() >= end {
                    return statuses;
                }
                let request = target
                    .proxy(Method::GET, "/contacts", "intercom", "acme")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let status =
                    match tokio::time::timeout(Duration::from_secs(20), client.request(request))
                        .await
                    {
                        Ok(Ok(response)) => {
                            let status = response.status().as_u16();
                            let _ = response.into_body().collect().await;
                            status
                        }
                        _ => 0,
                    };
                statuses.push(status);
            }
        }));
    }
    let mut statuses = Vec::new();
    for worker in workers {
        statuses.extend(worker.await.unwrap());
    }
    (first, statuses)
}

/// The share of requests sent that got a 429, and successes against the most the limiter
/// allows in `windows` windows.
fn figures(counts: Counts, windows: u64) -> (f64, f64) {
    #[allow(clippy::cast_precision_loss)]
    let share = counts.limited as f64 / counts.sent().max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let reached = counts.ok as f64 / (LIMIT * windows) as f64;
    (share, reached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_spend_one_budget_and_alone_they_do_worse() {
    let redis = redis_addr().await;
    let prefix = format!("bptest:replicas:{}:{}", std::process::id(), fastrand_u64());
    let redis_url = format!("redis://{redis}/0");

    let shared_api = WindowedApi::start(LIMIT, WINDOW).await;
    let alone_api = WindowedApi::start(LIMIT, WINDOW).await;
    let shared_dir = TempDir::new("replicas-shared");
    let alone_dir = TempDir::new("replicas-alone");
    let shared = replicas(
        &shared_dir,
        &shared_api,
        &["--redis", &redis_url, "--redis-prefix", &prefix],
    )
    .await;
    let alone = replicas(&alone_dir, &alone_api, &[]).await;
    let shared_targets: Vec<Target> = shared.iter().map(|p| p.target).collect();
    let alone_targets: Vec<Target> = alone.iter().map(|p| p.target).collect();

    let evalsha_before = command_calls(redis, "evalsha").await;
    let ((shared_first, shared_calls), (alone_first, alone_calls)) = tokio::join!(
        load(&shared_api, &shared_targets, WINDOWS),
        load(&alone_api, &alone_targets, WINDOWS),
    );
    let evalsha = command_calls(redis, "evalsha").await - evalsha_before;

    let shared_counts = shared_api.counts(shared_first, shared_first + WINDOWS);
    let alone_counts = alone_api.counts(alone_first, alone_first + WINDOWS);
    let (shared_share, shared_reached) = figures(shared_counts, WINDOWS);
    let (alone_share, alone_reached) = figures(alone_counts, WINDOWS);
    // Every request the API received from the shared replicas, in and after the windows
    // counted, against the EVALSHA calls Redis ran meanwhile.
    let shared_sent_all = shared_api.counts(shared_first, u64::MAX).sent();
    #[allow(clippy::cast_precision_loss)]
    let round_trips = evalsha as f64 / shared_sent_all.max(1) as f64;
    eprintln!(
        "with --redis: {} sent, {} got a 429 ({:.2}%), {} succeeded = {:.1}% of the {} the limiter allows; \
         {evalsha} EVALSHA for {shared_sent_all} requests = {round_trips:.2} per request; callers got {:?}",
        shared_counts.sent(),
        shared_counts.limited,
        shared_share * 100.0,
        shared_counts.ok,
        shared_reached * 100.0,
        LIMIT * WINDOWS,
        histogram(&shared_calls),
    );
    eprintln!(
        "without --redis: {} sent, {} got a 429 ({:.2}%), {} succeeded = {:.1}% of the {} the limiter allows; callers got {:?}",
        alone_counts.sent(),
        alone_counts.limited,
        alone_share * 100.0,
        alone_counts.ok,
        alone_reached * 100.0,
        LIMIT * WINDOWS,
        histogram(&alone_calls),
    );
    eprintln!(
        "per window with --redis: {:?}",
        shared_api.per_window(shared_first, shared_first + WINDOWS)
    );
    eprintln!(
        "per window without --redis: {:?}",
        alone_api.per_window(alone_first, alone_first + WINDOWS)
    );

    assert!(
        shared_share < 0.01,
        "with --redis, {} of {} requests sent got a 429",
        shared_counts.limited,
        shared_counts.sent()
    );
    assert!(
        shared_reached >= 0.95,
        "with --redis, only {} of the {} the limiter allows succeeded",
        shared_counts.ok,
        LIMIT * WINDOWS
    );
    assert!(
        alone_share > shared_share,
        "alone, the replicas did no worse: {alone_counts:?} against {shared_counts:?}"
    );
    for proxy in shared.iter().chain(&alone) {
        assert!(!proxy.logs().contains(TOKEN), "{}", proxy.logs());
    }
    for proxy in &shared {
        assert!(
            proxy
                .logs()
                .contains("rate-limit budgets are shared in Redis"),
            "{}",
            proxy.logs()
        );
        assert!(!proxy.logs().contains("WARN"), "{}", proxy.logs());
    }
}

/// Calls by status: `[(status, count)]`.
fn histogram(statuses: &[u16]) -> Vec<(u16, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(1);
    hasher.finish()
}
