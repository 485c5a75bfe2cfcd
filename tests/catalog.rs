//! The built-in catalog against local fakes of each API: GitHub, `HubSpot`, Slack and
//! Zendesk, each through the proxy (in this process) with its YAML blueprint, only the
//! base URL and OAuth URLs pointed at the fake. For each: the OAuth code flow, a refresh
//! (rotating where the provider rotates), and its rate-limit signal.
//!
//! Refreshes are forced with an early revocation (a 401 on the current token), so no test
//! waits for a token to expire. Rate-limit holds use a reset far past the call's deadline:
//! the held call is refused at once (429 `rate_limited`, nothing sent), so no test waits
//! for a reset either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_provider;
mod proxy_support;

use fake_provider::{Fake, Settings, query_param};
use http::Method;
use proxy_support::{CLIENT_SECRET, InProcess, Reply, state_of};
use serde_json::{Value, json};

/// Calls give up after 5 s: a hold until a reset 30 s away is refused at once; a wait of
/// up to 3 s for a reset is sat through and the call retried.
const RETRY: &str = "{ max_attempts: 2, base_delay_ms: 1, max_delay_ms: 5, deadline_ms: 5000, attempt_timeout_ms: 3000, max_server_wait_ms: 3000 }";

/// `name` extending the built-in blueprint, its URLs on the fake.
fn integration(name: &str, base_url: &str, authorize: &str, token: &str) -> String {
    format!(
        "integrations:
  {name}:
    extends_blueprint: {name}
    base_url: {base_url}
    oauth_authorization_url: {authorize}
    oauth_token_url: {token}
    oauth_client_id: {name}-client
    oauth_client_secret: {CLIENT_SECRET}
    retry: {RETRY}
"
    )
}

/// Starts a connect session (with `fields` added to its body) and visits its URL with
/// `query` appended: the answer of `GET /connect`.
async fn visit(
    proxy: &InProcess,
    integration: &str,
    connection: &str,
    fields: Value,
    query: &str,
) -> (Reply, String) {
    let mut body = json!({ "integration": integration, "connection_id": connection });
    if let (Value::Object(body), Value::Object(fields)) = (&mut body, fields) {
        body.extend(fields);
    }
    let session = proxy
        .send_body(
            proxy
                .request(Method::POST, "/connect/sessions")
                .header("content-type", "application/json"),
            body.to_string(),
        )
        .await;
    assert_eq!(session.status, 201, "{}", session.text());
    let url = session.json()["url"].as_str().unwrap().to_owned();
    let visit = proxy
        .send(http::Request::get(format!("{url}{query}")))
        .await;
    (visit, url)
}

/// Sends the person back with a code: the callback page's status.
async fn callback(proxy: &InProcess, location: &str) -> Reply {
    let state = state_of(location);
    proxy
        .send(http::Request::get(
            proxy.url(&format!("/oauth/callback?code=code-1&state={state}")),
        ))
        .await
}

/// The whole code flow for `connection`: the provider's authorization URL it went to.
async fn authorize(proxy: &InProcess, integration: &str, connection: &str) -> String {
    let (visit, _) = visit(proxy, integration, connection, json!({}), "").await;
    assert_eq!(visit.status, 302, "{}", visit.text());
    let location = visit.header("location").unwrap().to_owned();
    let page = callback(proxy, &location).await;
    assert_eq!(page.status, 200, "{}", page.text());
    location
}

async fn call(proxy: &InProcess, integration: &str, connection: &str, path: &str) -> Reply {
    proxy
        .send(proxy.proxy(Method::GET, path, integration, connection))
        .await
}

/// A refresh forced by a revoked token: the call still succeeds (one refresh, one
/// replay); the refresh token the fake was sent.
async fn refresh_once(proxy: &InProcess, fake: &Fake, integration: &str, path: &str) -> String {
    let before = fake.refreshes().len();
    fake.revoke_next();
    let reply = call(proxy, integration, "acme", path).await;
    assert_eq!(
        reply.status,
        200,
        "the replay after the refresh: {}",
        reply.text()
    );
    let refreshes = fake.refreshes();
    assert_eq!(refreshes.len(), before + 1, "one refresh: {refreshes:?}");
    let last = refreshes.last().unwrap();
    assert!(last.granted, "{last:?}");
    let sent = fake.api_calls().last().unwrap().authorization.clone();
    assert_eq!(
        sent,
        Some(format!("Bearer {}", fake.current_access().unwrap()))
    );
    last.field("refresh_token").unwrap().to_owned()
}

/// After `status` with `headers` (a rate-limit signal with a wait of 30 s), the next call
/// is held: refused by the proxy with 429 and `Retry-After`, nothing sent.
async fn held_after(
    proxy: &InProcess,
    fake: &Fake,
    integration: &str,
    path: &str,
    status: u16,
    headers: &[(&str, &str)],
) {
    fake.queue(status, headers);
    let first = call(proxy, integration, "acme", path).await;
    assert_eq!(
        first.status,
        status,
        "handed back as received: {}",
        first.text()
    );
    let sent = fake.api_calls().len();
    let second = call(proxy, integration, "acme", path).await;
    assert_eq!(
        (second.status, second.code().as_str()),
        (429, "rate_limited"),
        "{}",
        second.text()
    );
    let after: u64 = second.header("retry-after").unwrap().parse().unwrap();
    assert!((20..=31).contains(&after), "Retry-After {after}");
    assert_eq!(fake.api_calls().len(), sent, "the held call was not sent");
}

fn epoch_in(secs: u64) -> String {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs)
        .to_string()
}

#[tokio::test]
async fn github_code_flow_rotating_refresh_and_403_with_remaining_zero() {
    let fake = Fake::start(Settings::default()).await;
    let url = fake.url();
    let yaml = integration(
        "github",
        &format!("{url}/"),
        &format!("{url}/login/oauth/authorize"),
        &format!("{url}/login/oauth/access_token"),
    );
    let proxy = InProcess::start(&yaml).await;

    let location = authorize(&proxy, "github", "acme").await;
    assert!(
        location.starts_with(&format!("{url}/login/oauth/authorize?")),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "client_id").as_deref(),
        Some("github-client")
    );
    assert_eq!(
        query_param(&location, "scope"),
        None,
        "GitHub Apps take no scopes"
    );
    let exchange = &fake.token_calls()[0];
    assert_eq!(exchange.path, "/login/oauth/access_token");
    assert_eq!(
        exchange.field("client_secret"),
        Some(CLIENT_SECRET),
        "client auth in the body"
    );

    let reply = call(&proxy, "github", "acme", "/repos/o/r").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let hit = fake.api_calls().pop().unwrap();
    assert_eq!(hit.authorization.as_deref(), Some("Bearer at-1"));
    assert_eq!(hit.headers["x-github-api-version"], "2022-11-28");
    assert_eq!(hit.headers["accept"], "application/vnd.github+json");

    // GitHub rotates refresh tokens: the second refresh must use the one the first got.
    assert_eq!(
        refresh_once(&proxy, &fake, "github", "/repos/o/r").await,
        "rt-1"
    );
    assert_eq!(
        refresh_once(&proxy, &fake, "github", "/repos/o/r").await,
        "rt-2"
    );

    // A 403 without the signal is a refusal, not a rate limit: the next call goes out.
    fake.queue(403, &[("x-ratelimit-remaining", "12")]);
    assert_eq!(
        call(&proxy, "github", "acme", "/repos/o/r").await.status,
        403
    );
    assert_eq!(
        call(&proxy, "github", "acme", "/repos/o/r").await.status,
        200
    );

    // The primary limit spent, its reset within the wait the retry layer sits through:
    // the 403 is treated as a 429, waited out and retried (real time, at most a second).
    fake.queue(
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &epoch_in(1)),
        ],
    );
    let sent = fake.api_calls().len();
    let waited = call(&proxy, "github", "acme", "/repos/o/r").await;
    assert_eq!(
        waited.status,
        200,
        "retried after the reset: {}",
        waited.text()
    );
    let statuses: Vec<u16> = fake.api_calls()[sent..].iter().map(|c| c.status).collect();
    assert_eq!(statuses, [403, 200]);

    let reset = epoch_in(30);
    held_after(
        &proxy,
        &fake,
        "github",
        "/repos/o/r",
        403,
        &[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ],
    )
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn slack_scopes_joined_by_commas_rotation_and_429_retry_after() {
    let fake = Fake::start(Settings {
        token_type: "bot".into(),
        extra: vec![("scope".into(), json!("channels:read,chat:write"))],
        ..Settings::default()
    })
    .await;
    let url = fake.url();
    let yaml = integration(
        "slack",
        &format!("{url}/api"),
        &format!("{url}/oauth/v2/authorize"),
        &format!("{url}/api/oauth.v2.access"),
    );
    let proxy = InProcess::start(&yaml).await;

    let location = authorize(&proxy, "slack", "acme").await;
    assert_eq!(
        query_param(&location, "scope").as_deref(),
        Some("channels:read,chat:write"),
        "{location}"
    );
    let connections = proxy.connections().await;
    assert_eq!(
        connections["connections"][0]["scopes"],
        json!(["channels:read", "chat:write"]),
        "the granted scopes, split by Slack's separator: {connections}"
    );
    let reply = call(&proxy, "slack", "acme", "/conversations.list").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        fake.api_calls().pop().unwrap().path,
        "/api/conversations.list"
    );

    assert_eq!(
        refresh_once(&proxy, &fake, "slack", "/users.list").await,
        "rt-1"
    );
    assert_eq!(
        refresh_once(&proxy, &fake, "slack", "/users.list").await,
        "rt-2"
    );

    held_after(
        &proxy,
        &fake,
        "slack",
        "/chat.postMessage",
        429,
        &[("retry-after", "30")],
    )
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn hubspot_pkce_refresh_without_rotation_and_its_429() {
    let fake = Fake::start(Settings {
        rotate: false,
        lifetime: Some(std::time::Duration::from_secs(1800)),
        ..Settings::default()
    })
    .await;
    let url = fake.url();
    let yaml = integration(
        "hubspot",
        &url,
        &format!("{url}/oauth/authorize"),
        &format!("{url}/oauth/v1/token"),
    );
    let proxy = InProcess::start(&yaml).await;

    let location = authorize(&proxy, "hubspot", "acme").await;
    assert_eq!(
        query_param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let exchange = &fake.token_calls()[0];
    assert!(exchange.field("code_verifier").is_some(), "{exchange:?}");
    let connections = proxy.connections().await;
    assert!(
        connections["connections"][0]["expires_at"].is_string(),
        "{connections}"
    );

    let reply = call(&proxy, "hubspot", "acme", "/crm/v3/objects/contacts").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // HubSpot keeps the refresh token: both refreshes send the first one.
    assert_eq!(
        refresh_once(&proxy, &fake, "hubspot", "/crm/v3/objects/contacts").await,
        "rt-1"
    );
    assert_eq!(
        refresh_once(&proxy, &fake, "hubspot", "/crm/v3/objects/contacts").await,
        "rt-1"
    );

    held_after(
        &proxy,
        &fake,
        "hubspot",
        "/crm/v3/objects/contacts",
        429,
        &[
            ("x-hubspot-ratelimit-secondly", "10"),
            ("x-hubspot-ratelimit-secondly-remaining", "0"),
            ("retry-after", "30"),
        ],
    )
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn zendesk_subdomain_parameter_from_connect_to_every_call() {
    let fake = Fake::start(Settings::default()).await;
    let url = fake.url();
    // The subdomain stands as a path segment here (a fake on loopback has one host); the
    // built-in blueprint puts it in the host, which the engine's tests cover.
    let yaml = integration(
        "zendesk",
        &format!("{url}/${{connection.subdomain}}/api/v2"),
        &format!("{url}/${{connection.subdomain}}/oauth/authorizations/new"),
        &format!("{url}/${{connection.subdomain}}/oauth/tokens"),
    );
    let proxy = InProcess::start(&yaml).await;

    // No subdomain, then one that would change the URL's shape: 400s naming it.
    let (missing, session) = visit(&proxy, "zendesk", "acme", json!({}), "").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (400, "invalid_connection_param"),
        "{}",
        missing.text()
    );
    assert!(missing.text().contains("`subdomain`"), "{}", missing.text());
    let evil = proxy
        .send(http::Request::get(format!(
            "{session}&subdomain=evil.com%2F"
        )))
        .await;
    assert_eq!(evil.code(), "invalid_connection_param");
    assert!(evil.text().contains("`subdomain`"), "{}", evil.text());
    assert!(
        !evil.text().contains("evil.com"),
        "the value is never quoted"
    );
    let bad_session = proxy
        .send_body(
            proxy
                .request(Method::POST, "/connect/sessions")
                .header("content-type", "application/json"),
            json!({"integration": "zendesk", "connection_id": "x", "params": {"subdomain": "Acme Corp"}})
                .to_string(),
        )
        .await;
    assert_eq!(
        (bad_session.status, bad_session.code().as_str()),
        (400, "invalid_connection_param")
    );

    // The same session, with the subdomain: the provider's URLs are the connection's.
    let visit = proxy
        .send(http::Request::get(format!("{session}&subdomain=acme")))
        .await;
    assert_eq!(visit.status, 302, "{}", visit.text());
    let location = visit.header("location").unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{url}/acme/oauth/authorizations/new?")),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "scope").as_deref(),
        Some("read write")
    );
    let page = callback(&proxy, &location).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(fake.token_calls()[0].path, "/acme/oauth/tokens");

    let connections = proxy.connections().await;
    assert_eq!(
        connections["connections"][0]["params"],
        json!({"subdomain": "acme"}),
        "{connections}"
    );
    let reply = call(&proxy, "zendesk", "acme", "/tickets/7").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        fake.api_calls().pop().unwrap().path,
        "/acme/api/v2/tickets/7"
    );

    // The refresh goes to the connection's token URL too.
    assert_eq!(
        refresh_once(&proxy, &fake, "zendesk", "/tickets/7").await,
        "rt-1"
    );
    assert_eq!(fake.refreshes()[0].path, "/acme/oauth/tokens");

    // Imported connections: their own subdomain; a bad one refused; none, a 424 naming it.
    let token = fake.current_access().unwrap();
    let beta = proxy
        .import(
            "zendesk",
            "beta",
            json!({"access_token": token, "params": {"subdomain": "beta"}}),
        )
        .await;
    assert_eq!(beta.status, 201, "{}", beta.text());
    assert_eq!(beta.json()["params"], json!({"subdomain": "beta"}));
    assert_eq!(
        call(&proxy, "zendesk", "beta", "/users/1").await.status,
        200
    );
    assert_eq!(fake.api_calls().pop().unwrap().path, "/beta/api/v2/users/1");
    let refused = proxy
        .import(
            "zendesk",
            "gamma",
            json!({"access_token": "t", "params": {"subdomain": "evil.com/"}}),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (400, "invalid_connection_param"),
        "{}",
        refused.text()
    );
    assert!(refused.text().contains("`subdomain`"), "{}", refused.text());
    let undeclared = proxy
        .import(
            "zendesk",
            "gamma",
            json!({"access_token": "t", "params": {"region": "eu"}}),
        )
        .await;
    assert_eq!(undeclared.code(), "invalid_connection_param");
    assert!(
        undeclared.text().contains("`region`"),
        "{}",
        undeclared.text()
    );
    let bare = proxy
        .import("zendesk", "gamma", json!({"access_token": "t"}))
        .await;
    assert_eq!(bare.status, 201, "{}", bare.text());
    let sent = fake.api_calls().len();
    let missing = call(&proxy, "zendesk", "gamma", "/users/1").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (424, "missing_connection_param"),
        "{}",
        missing.text()
    );
    assert!(missing.text().contains("`subdomain`"), "{}", missing.text());
    assert_eq!(fake.api_calls().len(), sent, "nothing was sent");
    // Imported again with its subdomain, it works at once.
    let fixed = proxy
        .import(
            "zendesk",
            "gamma",
            json!({"access_token": token, "params": {"subdomain": "gamma"}}),
        )
        .await;
    assert_eq!(fixed.status, 200, "{}", fixed.text());
    assert_eq!(
        call(&proxy, "zendesk", "gamma", "/users/1").await.status,
        200
    );
    assert_eq!(
        fake.api_calls().pop().unwrap().path,
        "/gamma/api/v2/users/1"
    );

    held_after(
        &proxy,
        &fake,
        "zendesk",
        "/search",
        429,
        &[("retry-after", "30")],
    )
    .await;
    proxy.stop().await;
}

/// A parameter from the token endpoint's answer (as Salesforce's `instance_url`): stored
/// with the connection at the callback, used in the base URL and a header, shown by
/// `GET /connections`; a token answer without it fails the callback, naming it.
#[tokio::test]
async fn a_parameter_from_the_token_answer_goes_into_every_call() {
    let fake = Fake::start(Settings {
        extra: vec![("instance".into(), json!("na7"))],
        ..Settings::default()
    })
    .await;
    let url = fake.url();
    let yaml = format!(
        r#"blueprints:
  instanced:
    version: v1
    connection_params:
      pod: {{ from: token_field, field: instance, pattern: "[a-z]{{2}}[0-9]+" }}
    base_url: {url}/${{connection.pod}}/services
    headers: {{ X-Pod: "pod ${{connection.pod}}" }}
    oauth_authorization_url: {url}/authorize
    oauth_token_url: {url}/token
integrations:
  instanced:
    extends_blueprint: instanced
    oauth_client_id: instanced-client
    oauth_client_secret: {CLIENT_SECRET}
    retry: {RETRY}
"#
    );
    let proxy = InProcess::start(&yaml).await;
    authorize(&proxy, "instanced", "acme").await;
    let connections = proxy.connections().await;
    assert_eq!(
        connections["connections"][0]["params"],
        json!({"pod": "na7"}),
        "{connections}"
    );
    let reply = call(&proxy, "instanced", "acme", "/sobjects").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let hit = fake.api_calls().pop().unwrap();
    assert_eq!(hit.path, "/na7/services/sobjects");
    assert_eq!(hit.headers["x-pod"], "pod na7");

    // It cannot be given on the connect URL or a session: it comes from the token answer.
    let (refused, _) = visit(&proxy, "instanced", "beta", json!({}), "").await;
    assert_eq!(
        refused.status,
        302,
        "nothing to ask the person: {}",
        refused.text()
    );
    let session = proxy
        .send_body(
            proxy
                .request(Method::POST, "/connect/sessions")
                .header("content-type", "application/json"),
            json!({"integration": "instanced", "connection_id": "x", "params": {"pod": "na1"}})
                .to_string(),
        )
        .await;
    assert_eq!(session.code(), "invalid_connection_param");
    assert!(
        session.text().contains("token endpoint"),
        "{}",
        session.text()
    );

    // An answer without the field, or with a value that does not fit: no connection.
    fake.set(|s| s.extra = vec![("instance".into(), json!("../evil"))]);
    let (visit_bad, _) = visit(&proxy, "instanced", "gamma", json!({}), "").await;
    let page = callback(&proxy, visit_bad.header("location").unwrap()).await;
    assert_eq!(page.status, 502, "{}", page.text());
    assert!(page.text().contains("`pod`"), "{}", page.text());
    fake.set(|s| s.extra.clear());
    let (visit_none, _) = visit(&proxy, "instanced", "gamma", json!({}), "").await;
    let page = callback(&proxy, visit_none.header("location").unwrap()).await;
    assert_eq!(page.status, 502, "{}", page.text());
    assert!(page.text().contains("`instance`"), "{}", page.text());
    let connections = proxy.connections().await;
    assert_eq!(
        connections["connections"].as_array().unwrap().len(),
        1,
        "only acme: {connections}"
    );
    proxy.stop().await;
}
