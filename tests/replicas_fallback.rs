//! Two real proxies sharing budgets in Redis through a relay this test controls: the relay
//! is cut in the middle of a load run (Redis "down"; the shared server itself is never
//! stopped), then restored. No call fails for it, each replica logs one WARN and shows the
//! fallback in `/metrics`, and once Redis answers again the budget is shared again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use proxy_support::relay::{Relay, redis_addr};
use proxy_support::windowed::WindowedApi;
use proxy_support::{Process, Target, TempDir, client, yaml};
use serde_json::json;

const RETRY: &str = "{ max_attempts: 3, base_delay_ms: 10, max_delay_ms: 200, deadline_ms: 10000, attempt_timeout_ms: 3000, max_server_wait_ms: 3000 }";
const TOKEN: &str = "tok_FALLBACK_0ddba11";
const LIMIT: u64 = 50;
const WINDOW: Duration = Duration::from_secs(2);
const ACTIVE: &str =
    "blueprint_fallback_active{integration=\"intercom\",component=\"rate_limit_redis\"}";
const TOTAL: &str =
    "blueprint_fallbacks_total{integration=\"intercom\",component=\"rate_limit_redis\"}";

/// The value of the metric line starting with `name`.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_mid_load_fails_no_call_and_sharing_comes_back() {
    let relay = Relay::start(redis_addr().await).await;
    let prefix = format!("bptest:fallback:{}:{}", std::process::id(), {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(2);
        h.finish()
    });
    let api = WindowedApi::start(LIMIT, WINDOW).await;
    let dir = TempDir::new("replicas-fallback");
    std::fs::write(dir.path("i.yaml"), yaml(&api.url(), RETRY, "")).unwrap();
    let url = relay.url();
    // The relay's cut breaks connections at once; a stall is not what this test makes. A
    // generous timeout keeps a loaded machine's slow answers from counting as outages.
    let args = [
        "--redis",
        url.as_str(),
        "--redis-prefix",
        prefix.as_str(),
        "--redis-timeout-ms",
        "1000",
    ];
    let mut proxies = Vec::new();
    for _ in 0..2 {
        proxies.push(
            Process::start_full(
                &dir.path("i.yaml"),
                &format!("sqlite://{}", dir.path("store.db").display()),
                "127.0.0.1:0",
                &[],
                &args,
                None,
            )
            .await,
        );
    }
    let imported = proxies[0]
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    let targets: Vec<Target> = proxies.iter().map(|p| p.target).collect();

    // Twelve windows: shared for three, Redis away for four, shared again for five.
    let first = api.next_window().await;
    let end = first + 12;
    let mut workers = Vec::new();
    for i in 0..8 {
        let target = targets[i % 2];
        let api = api.clone();
        workers.push(tokio::spawn(async move {
            let client = client();
            let mut statuses = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(107));
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
    api.until_window(first + 3).await;
    for target in &targets {
        assert_eq!(metric(&target.metrics().await, ACTIVE), Some(0));
    }
    relay.refuse();
    api.until_window(first + 6).await;
    for target in &targets {
        let text = target.metrics().await;
        assert_eq!(metric(&text, ACTIVE), Some(1), "{text}");
        assert_eq!(metric(&text, TOTAL), Some(1), "{text}");
    }
    api.until_window(first + 7).await;
    relay.restore();
    let mut statuses = Vec::new();
    for worker in workers {
        statuses.extend(worker.await.unwrap());
    }

    let windows = api.per_window(first, end);
    eprintln!("per window (shared 0-2, Redis away 3-6, shared again 7-11): {windows:?}");
    let calls = statuses.len();
    let failed: Vec<u16> = statuses.iter().copied().filter(|s| *s != 200).collect();
    eprintln!("{calls} calls, not 200: {failed:?}");
    assert!(
        failed.is_empty(),
        "calls failed while Redis was away: {failed:?}"
    );
    for (i, proxy) in proxies.iter_mut().enumerate() {
        // Log lines reach stderr in batches: wait for the last one expected.
        proxy.wait_for_log("Redis answers again").await;
        let logs = proxy.logs();
        assert_eq!(
            logs.matches("Redis does not answer").count(),
            1,
            "replica {i}:\n{logs}"
        );
        assert_eq!(
            logs.matches("Redis answers again").count(),
            1,
            "replica {i}:\n{logs}"
        );
        assert!(!logs.contains(TOKEN), "{logs}");
        let text = targets[i].metrics().await;
        assert_eq!(metric(&text, ACTIVE), Some(0), "replica {i}: {text}");
        assert_eq!(metric(&text, TOTAL), Some(1), "replica {i}: {text}");
    }
    // Shared again: the windows after the first one back hold the limit.
    let again: u64 = windows[8..].iter().map(|c| c.limited).sum();
    let again_ok: u64 = windows[8..].iter().map(|c| c.ok).sum();
    assert!(
        again == 0,
        "{again} 429s once Redis answered again: {windows:?}"
    );
    assert!(again_ok >= 4 * LIMIT * 95 / 100, "{windows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_redis_url_stops_the_proxy_and_an_unreachable_redis_does_not() {
    let api = WindowedApi::start(LIMIT, WINDOW).await;
    let dir = TempDir::new("replicas-bad-url");
    std::fs::write(dir.path("i.yaml"), yaml(&api.url(), RETRY, "")).unwrap();

    let help = tokio::process::Command::new(proxy_support::binary())
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--redis <URL>") && help.contains("BLUEPRINT_REDIS_URL"),
        "{help}"
    );

    // Not a Redis URL: a clear error at start, without the password.
    let started = tokio::process::Command::new(proxy_support::binary())
        .arg("--config")
        .arg(dir.path("i.yaml"))
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path("bad.db").display()))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            "http://:hunter2-PW@127.0.0.1:6379/0",
        ])
        .env("BLUEPRINT_SECRET_KEY", proxy_support::KEY)
        .env_remove("BLUEPRINT_REDIS_URL")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), started)
        .await
        .expect("the proxy stops at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("error: --redis: `http://***@127.0.0.1:6379/0` is not a usable Redis URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // Unreachable: the proxy starts, paces alone, says so once, and no call fails.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("redis://:hunter2-PW@{closed}/0");
    let mut proxy = Process::start_full(
        &dir.path("i.yaml"),
        &format!("sqlite://{}", dir.path("store.db").display()),
        "127.0.0.1:0",
        &[("BLUEPRINT_REDIS_URL", url.as_str())],
        &[],
        None,
    )
    .await;
    let imported = proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    for _ in 0..3 {
        let reply = proxy
            .send(proxy.proxy(Method::GET, "/contacts", "intercom", "acme"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let text = proxy.metrics().await;
    assert_eq!(metric(&text, ACTIVE), Some(1), "{text}");
    // Log lines reach stderr in batches: wait for the warning, then read them all.
    proxy.wait_for_log("Redis does not answer").await;
    let logs = proxy.logs();
    assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
    assert!(logs.contains("Redis does not answer"), "{logs}");
    assert!(logs.contains(&format!("redis://{closed}/0")), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
}
