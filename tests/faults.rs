//! The standing fault suite: probes an attacker or a bad network would try, kept as
//! regression tests against the real binary. Slow and half-open clients, the connection
//! cap and running out of descriptors are in `proxy_limits.rs`; framing lies from callers
//! and upstreams, smuggled methods and host headers in `proxy_hostile.rs`; PostgreSQL and
//! Redis stopped mid-run in `proxy_store.rs` and `replicas_fallback.rs`. Here: kill -9
//! during writes, an upstream that dies mid-answer, and paths disguised to climb out of the
//! base URL. (A flood of unknown connection ids is bounded by the token source's cache,
//! tested in `crates/blueprint-refresh/tests/refresh/source.rs`.)

mod proxy_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use proxy_support::{FAST_RETRY, Process, TempDir, client, raw_upstream, yaml};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Acknowledged imports before the kill.
const ACKNOWLEDGED_BEFORE_KILL: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_write() {
    let upstream = MockServer::start().await;
    let dir = TempDir::new("kill9");
    std::fs::write(dir.path("i.yaml"), yaml(&upstream.uri(), FAST_RETRY, "")).unwrap();
    let mut proxy = Process::start(&dir.path("i.yaml"), &dir.path("store.db"), &[]).await;

    // Eight writers import connections as fast as the proxy acknowledges them.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let (enough, mut enough_rx) = tokio::sync::watch::channel(false);
    let enough = Arc::new(enough);
    let mut writers = Vec::new();
    for writer in 0..8 {
        let target = proxy.target;
        let acknowledged = Arc::clone(&acknowledged);
        let enough = Arc::clone(&enough);
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let id = format!("w{writer}-{n}");
                let request = target
                    .request(Method::PUT, &format!("/connections/intercom/{id}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(
                        json!({ "access_token": format!("tok-{id}") }).to_string(),
                    )))
                    .unwrap();
                // Once the proxy is killed, requests fail: the writer stops.
                let Ok(response) = client().request(request).await else {
                    return;
                };
                if response.status() == 201 {
                    let mut acknowledged = acknowledged.lock().unwrap();
                    acknowledged.insert(id);
                    if acknowledged.len() >= ACKNOWLEDGED_BEFORE_KILL {
                        enough.send_replace(true);
                    }
                }
            }
        }));
    }
    enough_rx.wait_for(|enough| *enough).await.unwrap();
    // SIGKILL while the writers are still writing.
    proxy.child.start_kill().unwrap();
    proxy.child.wait().await.unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= ACKNOWLEDGED_BEFORE_KILL);

    let restarted = Process::start(&dir.path("i.yaml"), &dir.path("store.db"), &[]).await;
    let listed = restarted.connections().await;
    let stored: BTreeSet<String> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    eprintln!(
        "kill -9 after {} acknowledged imports: {} stored after the restart, {} lost",
        acknowledged.len(),
        stored.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // What was stored is usable: every stored connection is `ok`.
    assert!(
        listed["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "ok"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_dies_mid_answer_is_never_passed_on_as_complete() {
    // Headers promise 100 bytes; 10 come, then the connection closes.
    let dying = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
    let dir = TempDir::new("dying");
    std::fs::write(
        dir.path("i.yaml"),
        yaml(&format!("http://{dying}"), FAST_RETRY, ""),
    )
    .unwrap();
    let proxy = Process::start(&dir.path("i.yaml"), &dir.path("store.db"), &[]).await;
    proxy
        .import("intercom", "acme", json!({ "access_token": "tok" }))
        .await;

    for _ in 0..3 {
        let request = proxy
            .proxy(Method::GET, "/export", "intercom", "acme")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let outcome = match client().request(request).await {
            Err(error) => Err(format!("no answer: {error}")),
            Ok(response) => {
                let status = response.status();
                match response.into_body().collect().await {
                    Ok(body) => Ok((status, body.to_bytes())),
                    Err(error) => Err(format!("{status}, then the body failed: {error}")),
                }
            }
        };
        match outcome {
            // The caller learns the answer was cut: the body fails, or an error status.
            Err(how) => eprintln!("cut answer reached the caller as: {how}"),
            Ok((status, body)) => assert!(
                status.is_server_error(),
                "a cut answer came through as {status} with {} bytes: {body:?}",
                body.len()
            ),
        }
    }
    // The proxy is unharmed.
    let health = proxy.send(proxy.request(Method::GET, "/healthz")).await;
    assert_eq!(health.status, 200);
}

/// Paths that would climb out of the base URL if a server decoded them once more, or read
/// them the way some servers do.
const DISGUISED: [&str; 12] = [
    "/%25%32%65%25%32%65/admin",
    "/%%32%65%%32%65/admin",
    "/%252e%252e/admin",
    "/%2e%2e/admin",
    "/.%2e/admin",
    "/..%2fadmin",
    "/..%5cadmin",
    "/..;/admin",
    "/%c0%ae%c0%ae/admin",
    "/%ef%bc%8e%ef%bc%8e/admin",
    "/a%zz/admin",
    "/a%/admin",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disguised_dot_segments_are_refused_and_never_reach_the_upstream() {
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("reached"))
        .mount(&upstream)
        .await;
    let dir = TempDir::new("paths");
    // The base URL has a path, so climbing out of it would be reaching something else.
    std::fs::write(
        dir.path("i.yaml"),
        yaml(&format!("{}/api/v1/", upstream.uri()), FAST_RETRY, ""),
    )
    .unwrap();
    let proxy = Process::start(&dir.path("i.yaml"), &dir.path("store.db"), &[]).await;
    proxy
        .import("intercom", "acme", json!({ "access_token": "tok" }))
        .await;
    for path in DISGUISED {
        let reply = proxy
            .send(proxy.proxy(Method::GET, path, "intercom", "acme"))
            .await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        assert_eq!(reply.code(), "invalid_path", "{path}: {}", reply.text());
    }
    let reached = upstream.received_requests().await.unwrap_or_default();
    assert!(
        reached.is_empty(),
        "the upstream was reached: {:?}",
        reached
            .iter()
            .map(|r| r.url.to_string())
            .collect::<Vec<_>>()
    );
    // An honest path still goes through, under the base path.
    let fine = proxy
        .send(proxy.proxy(Method::GET, "/contacts/a%2Eb", "intercom", "acme"))
        .await;
    assert_eq!(fine.status, 200, "{}", fine.text());
    let reached = upstream.received_requests().await.unwrap_or_default();
    assert_eq!(reached.len(), 1);
    assert!(
        reached[0].url.path().starts_with("/api/v1/contacts/"),
        "{}",
        reached[0].url
    );
}
