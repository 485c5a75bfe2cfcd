//! A blueprint defined only in YAML (a `blueprints:` section, nothing built in), through
//! the real `blueprint-proxy` binary, against a local fake provider whose access tokens
//! live two seconds and whose refresh tokens rotate on every use:
//!
//! - connect session → provider → callback → stored → calls carry the token;
//! - after expiry, 100 concurrent proxied calls make exactly one token-endpoint call; the
//!   rotated refresh token is stored, and a restarted proxy refreshes with it;
//! - a refused refresh (`invalid_grant`) shows "needs re-authorization" in `/connections`
//!   and proxied calls get 424;
//! - a 403 with `X-RateLimit-Remaining: 0` is waited out and retried when its reset is
//!   near, and holds the next calls until a far reset, as a 429 with `Retry-After` does.
//!
//! Tokens expire in real time here (the binary's clock cannot be paused): the test waits
//! for an expiry at most three times, two seconds each, bounded.
//!
//! Build the binary first: `cargo build -p blueprint-proxy` (`cargo test --workspace` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_provider;
mod proxy_support;

use std::time::{Duration, SystemTime};

use fake_provider::{Fake, Settings};
use http::Method;
use proxy_support::{CLIENT_SECRET, Process, Reply, Target, TempDir, state_of};
use serde_json::{Value, json};

const LIFETIME: Duration = Duration::from_secs(2);

fn config(fake: &str) -> String {
    format!(
        r#"blueprints:
  # Defined here only: no built-in blueprint is named `shortlived`.
  shortlived:
    version: v1
    base_url: {fake}/api
    headers: {{ Accept: application/json }}
    oauth_authorization_url: {fake}/authorize
    oauth_token_url: {fake}/token
    oauth_client_auth: body
    oauth_scopes: [read, write]
    tokens_expire: true
    rate_limit_headers:
      limit: X-RateLimit-Limit
      remaining: X-RateLimit-Remaining
      reset: X-RateLimit-Reset
      reset_format: epoch_seconds
    rate_limited:
      - {{ status: 403, when: {{ X-RateLimit-Remaining: "0" }}, wait_from: reset }}
      - {{ status: 429, wait_from: retry_after_or_reset }}
integrations:
  shortlived:
    extends_blueprint: shortlived
    oauth_client_id: short-client
    oauth_client_secret: {CLIENT_SECRET}
    retry: {{ max_attempts: 2, base_delay_ms: 1, max_delay_ms: 5, deadline_ms: 5000, attempt_timeout_ms: 3000, max_server_wait_ms: 3000 }}
"#
    )
}

/// Authorizes `connection` through a connect session and the callback.
async fn authorize(proxy: &Target, connection: &str) {
    let session = proxy
        .send_body(
            proxy
                .request(Method::POST, "/connect/sessions")
                .header("content-type", "application/json"),
            json!({ "integration": "shortlived", "connection_id": connection }).to_string(),
        )
        .await;
    assert_eq!(session.status, 201, "{}", session.text());
    // The session's URL is on the public URL; this proxy listens elsewhere.
    let url = session.json()["url"].as_str().unwrap().to_owned();
    let path = &url[url.find("/connect?").expect("a connect URL")..];
    let visit = proxy.send(http::Request::get(proxy.url(path))).await;
    assert_eq!(visit.status, 302, "{}", visit.text());
    let location = visit.header("location").unwrap().to_owned();
    let page = proxy
        .send(http::Request::get(proxy.url(&format!(
            "/oauth/callback?code=code-1&state={}",
            state_of(&location)
        ))))
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
}

async fn call(proxy: &Target, connection: &str) -> Reply {
    proxy
        .send(proxy.proxy(Method::GET, "/items", "shortlived", connection))
        .await
}

/// Waits (real time, bounded) until the fake's current access token has expired.
async fn until_expired(fake: &Fake) {
    let at = fake.access_expires_at().expect("tokens expire");
    let wait =
        at.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(100);
    assert!(wait <= LIFETIME + Duration::from_secs(1), "{wait:?}");
    tokio::time::sleep(wait).await;
}

fn connection<'a>(connections: &'a Value, id: &str) -> &'a Value {
    connections["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connection_id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {connections}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_yaml_blueprint_with_short_lived_rotating_tokens_through_the_real_proxy() {
    let fake = Fake::start(Settings {
        lifetime: Some(LIFETIME),
        rotate: true,
        ..Settings::default()
    })
    .await;
    let dir = TempDir::new("yaml-blueprint");
    std::fs::write(dir.path("i.yaml"), config(&fake.url())).unwrap();
    let store = dir.path("store.db");
    let mut proxy = Process::start(&dir.path("i.yaml"), &store, &[]).await;

    // Connect, store, call with the token.
    authorize(&proxy, "acme").await;
    let exchange = &fake.token_calls()[0];
    assert_eq!(exchange.grant_type, "authorization_code");
    assert_eq!(exchange.field("client_id"), Some("short-client"));
    let reply = call(&proxy, "acme").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let hit = fake.api_calls().pop().unwrap();
    assert_eq!(hit.path, "/api/items");
    assert_eq!(hit.authorization.as_deref(), Some("Bearer at-1"));

    // After expiry, 100 calls at once: one refresh, every call with the new token.
    until_expired(&fake).await;
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let target = proxy.target;
            tokio::spawn(async move { call(&target, "acme").await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let refreshes = fake.refreshes();
    assert_eq!(
        refreshes.len(),
        1,
        "exactly one token-endpoint call: {refreshes:?}"
    );
    assert_eq!(fake.token_calls().len(), 2, "the exchange and one refresh");
    assert_eq!(refreshes[0].field("refresh_token"), Some("rt-1"));
    let sent: Vec<_> = fake.api_calls().into_iter().skip(1).collect();
    assert_eq!(sent.len(), 100);
    assert!(
        sent.iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer at-2")),
        "every call carried the refreshed token"
    );
    assert_eq!(fake.current_refresh().as_deref(), Some("rt-2"), "rotated");

    // A restarted proxy reads the rotated refresh token from the store: the fake takes
    // no other.
    proxy.terminate();
    proxy.wait().await;
    let mut proxy = Process::start(&dir.path("i.yaml"), &store, &[]).await;
    until_expired(&fake).await;
    let reply = call(&proxy, "acme").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let last = fake.refreshes().pop().unwrap();
    assert_eq!(last.field("refresh_token"), Some("rt-2"));
    assert!(last.granted, "the stored refresh token was the rotated one");

    // The provider refuses the refresh for good.
    fake.set(|s| s.refuse_refresh = true);
    until_expired(&fake).await;
    let refused = call(&proxy, "acme").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (424, "needs_reauthorization"),
        "{}",
        refused.text()
    );
    let connections = proxy.connections().await;
    let acme = connection(&connections, "acme");
    assert_eq!(acme["status"], "needs_reauthorization", "{connections}");
    assert_eq!(acme["refreshable"], false);
    let again = call(&proxy, "acme").await;
    assert_eq!(again.status, 424, "{}", again.text());

    // Authorized again; then the provider's primary limit: 403 with remaining 0 holds
    // the next calls until the reset (30 s away, past the 5 s deadline: refused at once,
    // nothing sent).
    fake.set(|s| s.refuse_refresh = false);
    authorize(&proxy, "acme").await;
    assert_eq!(call(&proxy, "acme").await.status, 200);
    let epoch_in = |secs: u64| {
        (SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + secs)
            .to_string()
    };
    // A reset within the wait the retry layer sits through: waited out (real time, at most
    // a second) and retried, as a 429 would be.
    fake.queue(
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &epoch_in(1)),
        ],
    );
    let sent = fake.api_calls().len();
    assert_eq!(
        call(&proxy, "acme").await.status,
        200,
        "retried after the reset"
    );
    let statuses: Vec<u16> = fake.api_calls()[sent..].iter().map(|c| c.status).collect();
    assert_eq!(statuses, [403, 200]);
    let reset = epoch_in(30);
    fake.queue(
        403,
        &[
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ],
    );
    assert_eq!(
        call(&proxy, "acme").await.status,
        403,
        "handed back as received"
    );
    let before = fake.api_calls().len();
    let limited = call(&proxy, "acme").await;
    assert_eq!(
        (limited.status, limited.code().as_str()),
        (429, "rate_limited"),
        "{}",
        limited.text()
    );
    let after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((20..=31).contains(&after), "Retry-After {after}");
    assert_eq!(fake.api_calls().len(), before, "held, not sent");

    // The same as a 429 with Retry-After does, for another connection.
    let token = fake.current_access().unwrap();
    let beta = proxy
        .import("shortlived", "beta", json!({ "access_token": token }))
        .await;
    assert_eq!(beta.status, 201, "{}", beta.text());
    fake.queue(429, &[("retry-after", "30")]);
    assert_eq!(call(&proxy, "beta").await.status, 429);
    let before = fake.api_calls().len();
    let limited = call(&proxy, "beta").await;
    assert_eq!(limited.code(), "rate_limited", "{}", limited.text());
    assert_eq!(fake.api_calls().len(), before, "held, not sent");

    proxy.terminate();
    proxy.wait().await;
}
