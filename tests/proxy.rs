//! The proxy's router, in this process on a loopback port, against wiremock standing in for
//! Intercom: OAuth, imported tokens, every error code, SSRF attempts, the secret key,
//! connections, metrics and logs.

mod proxy_support;

use std::time::{SystemTime, UNIX_EPOCH};

use http::Method;
use proxy_support::{
    CLIENT_SECRET, FAST_RETRY, HeldUpstream, InProcess, KEY, closed_port, connect_session, yaml,
};
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "tok_IMPORTED_4b1d";
const OAUTH_TOKEN: &str = "tok_FROM_OAUTH_9e7a";
const REFRESH: &str = "rt_REFRESH_55c3";
const CODE: &str = "code_AUTH_31f0";

async fn intercom() -> MockServer {
    MockServer::start().await
}

fn received_paths(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| match r.url.query() {
            Some(q) => format!("{} {}?{q}", r.method, r.url.path()),
            None => format!("{} {}", r.method, r.url.path()),
        })
        .collect()
}

#[tokio::test]
async fn an_imported_token_is_sent_and_the_answer_passes_through_as_sent() {
    let upstream = intercom().await;
    Mock::given(method("POST"))
        .and(path("/contacts/search"))
        .and(query_param("x", "1"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("x-caller", "kept"))
        .and(body_string_contains("ada@example.com"))
        .respond_with(
            ResponseTemplate::new(404)
                .insert_header("x-ratelimit-limit", "166")
                .insert_header("x-ratelimit-remaining", "165")
                .insert_header("x-ratelimit-reset", "4102444800")
                .insert_header("x-provider", "intercom")
                .set_body_raw(
                    r#"{"type":"error.list","errors":[{"code":"not_found"}]}"#,
                    "application/json",
                ),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;

    let created = proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["status"], "ok");
    assert!(
        !created.text().contains(TOKEN),
        "the token came back: {}",
        created.text()
    );
    let replaced = proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text());

    let reply = proxy
        .send_body(
            proxy
                .proxy(Method::POST, "/contacts/search?x=1", "intercom", "acme")
                .header("content-type", "application/json")
                .header("x-caller", "kept")
                .header("cookie", "session=caller-cookie")
                .header("connection", "x-hop")
                .header("x-hop", "dropped"),
            r#"{"query":{"field":"email","value":"ada@example.com"}}"#,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(
        reply.text(),
        r#"{"type":"error.list","errors":[{"code":"not_found"}]}"#
    );
    assert_eq!(reply.header("x-ratelimit-limit"), Some("166"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("165"));
    assert_eq!(reply.header("x-ratelimit-reset"), Some("4102444800"));
    assert_eq!(reply.header("x-provider"), Some("intercom"));
    assert_eq!(reply.header("content-type"), Some("application/json"));

    let requests = upstream.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0].headers;
    for dropped in ["cookie", "x-hop", "provider-config-key", "connection-id"] {
        assert!(
            sent.get(dropped).is_none(),
            "{dropped} was forwarded: {sent:?}"
        );
    }
    assert_eq!(sent["host"], upstream.address().to_string().as_str());
    assert_eq!(
        sent["intercom-version"],
        intercom_blueprint::API_VERSION,
        "the blueprint's default headers are added"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_oauth_flow_stores_the_connection_and_calls_carry_its_token() {
    let upstream = intercom().await;
    Mock::given(method("POST"))
        .and(path("/auth/eagle/token"))
        .and(body_string_contains(format!("code={CODE}").as_str()))
        .and(body_string_contains("client_id=test-client"))
        .and(body_string_contains(
            format!("client_secret={CLIENT_SECRET}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "token": OAUTH_TOKEN, "access_token": OAUTH_TOKEN
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header(
            "authorization",
            format!("Bearer {OAUTH_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"type": "admin", "id": "1"})))
        .expect(1)
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;

    // The backend makes a connect session with the key; the browser needs none.
    let (_, url) = connect_session(&proxy, "intercom", "acme").await;
    let connect = proxy.send(http::Request::get(url)).await;
    assert_eq!(connect.status, 302, "{}", connect.text());
    let location = connect.header("location").expect("a Location").to_owned();
    assert!(
        location.starts_with(&format!("{}/oauth?", upstream.uri())),
        "{location}"
    );
    assert!(location.contains("client_id=test-client"), "{location}");
    let callback_url = format!("http://{}/oauth/callback", proxy.addr);
    let encoded_callback = callback_url.replace(':', "%3A").replace('/', "%2F");
    assert!(
        location.contains(&format!("redirect_uri={encoded_callback}")),
        "{location}"
    );
    let state = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .expect("a state")
        .to_owned();

    // The provider sends the person back.
    let page = proxy
        .send(http::Request::get(
            proxy.url(&format!("/oauth/callback?code={CODE}&state={state}")),
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("Connected"), "{}", page.text());
    assert!(page.text().contains("acme"), "{}", page.text());
    for secret in [OAUTH_TOKEN, CODE, CLIENT_SECRET, state.as_str()] {
        assert!(
            !page.text().contains(secret),
            "the page shows a secret: {}",
            page.text()
        );
    }

    // The same state works once.
    let again = proxy
        .send(http::Request::get(
            proxy.url(&format!("/oauth/callback?code={CODE}&state={state}")),
        ))
        .await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(again.text().contains("Not connected"), "{}", again.text());
    // A forged state is refused without a call to the token endpoint.
    let forged = proxy
        .send(http::Request::get(
            proxy.url("/oauth/callback?code=x&state=forged"),
        ))
        .await;
    assert_eq!(forged.status, 400);

    let listed = proxy.connections().await;
    assert_eq!(listed["connections"][0]["connection_id"], "acme");
    assert_eq!(listed["connections"][0]["status"], "ok");

    let me = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["type"], "admin");
    proxy.stop().await;
}

#[tokio::test]
async fn connect_needs_an_oauth_app_and_a_connection_id() {
    let upstream = intercom().await;
    let extra = format!(
        "  private:\n    extends_blueprint: intercom\n    base_url: {}/\n",
        upstream.uri()
    );
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, &extra)).await;
    let session = |body: serde_json::Value| {
        proxy.send_body(
            proxy.request(Method::POST, "/connect/sessions"),
            body.to_string(),
        )
    };
    let no_app = session(json!({"integration": "private", "connection_id": "a"})).await;
    assert_eq!(
        (no_app.status, no_app.code().as_str()),
        (400, "oauth_not_configured")
    );
    let no_id = session(json!({"integration": "intercom"})).await;
    assert_eq!(
        (no_id.status, no_id.code().as_str()),
        (400, "invalid_request")
    );
    let unknown = session(json!({"integration": "nope", "connection_id": "a"})).await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "unknown_integration")
    );
    // A private app's token needs no OAuth app, but a refresh token would be useless.
    let refused = proxy
        .import(
            "private",
            "p",
            json!({ "access_token": TOKEN, "refresh_token": REFRESH }),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (400, "invalid_request")
    );
    assert!(!refused.text().contains(REFRESH));
    let imported = proxy
        .import("private", "p", json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    proxy.stop().await;
}

#[tokio::test]
async fn the_secret_key_is_required_and_checked() {
    let upstream = intercom().await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    let cases = [
        (None, "/proxy/me"),
        (
            Some("Bearer wrong-key-but-long-enough".to_owned()),
            "/proxy/me",
        ),
        (Some(format!("Basic {KEY}")), "/proxy/me"),
        (Some(format!("Bearer {KEY}x")), "/connections"),
        (Some(format!("Bearer {}", &KEY[1..])), "/connections"),
        (None, "/metrics"),
        (None, "/connections"),
    ];
    for (authorization, route) in cases {
        let mut request = http::Request::get(proxy.url(route))
            .header("provider-config-key", "intercom")
            .header("connection-id", "acme");
        if let Some(value) = &authorization {
            request = request.header("authorization", value.as_str());
        }
        let reply = proxy.send(request).await;
        assert_eq!(
            reply.status,
            401,
            "{authorization:?} {route}: {}",
            reply.text()
        );
        assert_eq!(reply.code(), "unauthorized");
        assert!(reply.header("www-authenticate").is_some());
        assert!(!reply.text().contains(KEY));
    }
    // Lower-case scheme works; /healthz needs no key.
    let ok = proxy
        .send(
            http::Request::get(proxy.url("/connections"))
                .header("authorization", format!("bearer {KEY}")),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let health = proxy.send(http::Request::get(proxy.url("/healthz"))).await;
    assert_eq!(health.status, 200);
    assert!(upstream.received_requests().await.unwrap().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn names_missing_or_unknown_are_told_apart() {
    let upstream = intercom().await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    let no_integration = proxy
        .send(
            proxy
                .request(Method::GET, "/proxy/me")
                .header("connection-id", "acme"),
        )
        .await;
    assert_eq!(
        (no_integration.status, no_integration.code().as_str()),
        (400, "missing_header")
    );
    assert!(
        no_integration.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("provider-config-key")
    );
    let no_connection = proxy
        .send(
            proxy
                .request(Method::GET, "/proxy/me")
                .header("provider-config-key", "intercom"),
        )
        .await;
    assert_eq!(
        (no_connection.status, no_connection.code().as_str()),
        (400, "missing_header")
    );
    assert!(
        no_connection.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connection-id")
    );
    let unknown_integration = proxy
        .send(proxy.proxy(Method::GET, "/me", "zendesk", "acme"))
        .await;
    assert_eq!(
        (
            unknown_integration.status,
            unknown_integration.code().as_str()
        ),
        (404, "unknown_integration")
    );
    let unknown_connection = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "nobody"))
        .await;
    assert_eq!(
        (
            unknown_connection.status,
            unknown_connection.code().as_str()
        ),
        (404, "unknown_connection")
    );
    let no_route = proxy.send(proxy.request(Method::GET, "/nowhere")).await;
    assert_eq!(
        (no_route.status, no_route.code().as_str()),
        (404, "not_found")
    );
    assert!(upstream.received_requests().await.unwrap().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn a_refused_token_needs_reauthorization() {
    let upstream = intercom().await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "type": "error.list", "errors": [{"code": "token_revoked"}]
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;

    // The provider's 401, marked by the refresh layer as beyond refreshing.
    let first = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(
        (first.status, first.code().as_str()),
        (424, "needs_reauthorization")
    );
    // Then the token source knows: nothing is sent.
    let second = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(
        (second.status, second.code().as_str()),
        (424, "needs_reauthorization")
    );

    let listed = proxy.connections().await;
    let acme = &listed["connections"][0];
    assert_eq!(acme["status"], "needs_reauthorization");
    assert!(
        acme["last_error"]
            .as_str()
            .unwrap()
            .contains("authorized again"),
        "{acme}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_failing_refresh_is_a_503_and_the_connection_says_so() {
    let upstream = intercom().await;
    Mock::given(method("POST"))
        .and(path("/auth/eagle/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    let expired = proxy
        .import(
            "intercom",
            "acme",
            json!({ "access_token": TOKEN, "refresh_token": REFRESH, "expires_at": "2001-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(expired.status, 201, "{}", expired.text());
    assert_eq!(expired.json()["expires_at"], "2001-01-01T00:00:00Z");
    let reply = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (503, "token_unavailable")
    );
    assert!(reply.header("retry-after").is_some());
    let listed = proxy.connections().await;
    assert_eq!(listed["connections"][0]["status"], "refresh_failing");
    assert!(!listed.to_string().contains(REFRESH));
    assert!(!listed.to_string().contains(TOKEN));
    assert_eq!(
        received_paths(&upstream.received_requests().await.unwrap()),
        ["POST /auth/eagle/token"]
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_spent_rate_limit_is_a_429_with_retry_after_and_nothing_is_sent() {
    let upstream = intercom().await;
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-ratelimit-limit", "166")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .set_body_json(
                    json!({"type": "error.list", "errors": [{"code": "rate_limit_exceeded"}]}),
                ),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    let retry = "{ max_attempts: 2, base_delay_ms: 1, max_delay_ms: 5, deadline_ms: 2000, attempt_timeout_ms: 1000, max_server_wait_ms: 100 }";
    let proxy = InProcess::start(&yaml(&upstream.uri(), retry, "")).await;
    proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;

    // The provider's own 429 passes through, headers and all.
    let first = proxy
        .send(proxy.proxy(Method::GET, "/contacts", "intercom", "acme"))
        .await;
    assert_eq!(first.status, 429);
    assert_eq!(first.json()["errors"][0]["code"], "rate_limit_exceeded");
    assert_eq!(first.header("x-ratelimit-remaining"), Some("0"));
    // Now the budget is spent until the reset, past the deadline: refused before sending.
    let second = proxy
        .send(proxy.proxy(Method::GET, "/contacts", "intercom", "acme"))
        .await;
    assert_eq!(
        (second.status, second.code().as_str()),
        (429, "rate_limited")
    );
    let after: u64 = second
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((55..=61).contains(&after), "Retry-After {after}");
    proxy.stop().await;
}

#[tokio::test]
async fn slow_and_unreachable_upstreams_are_504_and_502() {
    let held = HeldUpstream::start("late").await;
    let closed = closed_port().await;
    let extra = format!(
        "  deadline:
    extends_blueprint: intercom
    base_url: {held}/
    retry: {{ max_attempts: 1, deadline_ms: 150, attempt_timeout_ms: null }}
  attempt:
    extends_blueprint: intercom
    base_url: {held}/
    retry: {{ max_attempts: 1, deadline_ms: 5000, attempt_timeout_ms: 100 }}
  gone:
    extends_blueprint: intercom
    base_url: http://{closed}/
    retry: {{ max_attempts: 1 }}
",
        held = held.url()
    );
    let upstream = intercom().await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, &extra)).await;
    for name in ["deadline", "attempt", "gone"] {
        proxy
            .import(name, "acme", json!({ "access_token": TOKEN }))
            .await;
    }
    let deadline = proxy
        .send(proxy.proxy(Method::GET, "/me", "deadline", "acme"))
        .await;
    assert_eq!(
        (deadline.status, deadline.code().as_str()),
        (504, "deadline_exceeded")
    );
    let attempt = proxy
        .send(proxy.proxy(Method::GET, "/me", "attempt", "acme"))
        .await;
    assert_eq!(
        (attempt.status, attempt.code().as_str()),
        (504, "upstream_timeout")
    );
    let gone = proxy
        .send(proxy.proxy(Method::GET, "/me", "gone", "acme"))
        .await;
    assert_eq!(
        (gone.status, gone.code().as_str()),
        (502, "upstream_unreachable")
    );
    assert_eq!(held.requests().len(), 2, "both slow calls were sent");
    proxy.stop().await;
}

#[tokio::test]
async fn paths_cannot_leave_the_base_url() {
    let upstream = intercom().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("on the base"))
        .mount(&upstream)
        .await;
    // The base URL has a prefix, so `..` has somewhere to escape to.
    let retry = FAST_RETRY;
    let extra = format!(
        "  prefixed:\n    extends_blueprint: intercom\n    base_url: {}/v2/\n",
        upstream.uri()
    );
    let proxy = InProcess::start(&yaml(&upstream.uri(), retry, &extra)).await;
    proxy
        .import("prefixed", "acme", json!({ "access_token": TOKEN }))
        .await;
    let host = format!("host: {}", proxy.addr);
    let head = |target: &str| {
        format!(
            "GET {target} HTTP/1.1\r\n{host}\r\nauthorization: Bearer {KEY}\r\n\
             provider-config-key: prefixed\r\nconnection-id: acme"
        )
    };
    let refused = [
        "/proxy/../admin",
        "/proxy/a/../../admin",
        "/proxy/%2e%2e/admin",
        "/proxy/%2E%2e/admin",
        "/proxy/.%2e/admin",
        "/proxy/a%2f..%2f..%2fadmin",
        "/proxy/..%2fadmin",
        "/proxy/a%5c..%5cadmin",
        "/proxy/a\\..\\admin",
        "/proxy/https://evil.example/x",
        "/proxy/http:%2f%2fevil.example/x",
    ];
    for target in refused {
        let (status, answer) = proxy.raw(&head(target)).await;
        assert_eq!(status, 400, "{target}: {answer}");
        // hyper itself refuses a raw backslash in the request target, before the proxy
        // sees it; every other target must be refused by the proxy's path check.
        if !target.contains('\\') {
            assert!(
                answer.contains("\"code\":\"invalid_path\""),
                "{target}: {answer}"
            );
        }
    }
    // These stay on the base: `//host` is a path, an absolute-form target keeps only its
    // path, `..` inside the base is resolved within it.
    let kept = [
        ("/proxy//evil.example/x", "/v2/evil.example/x"),
        ("http://evil.example/proxy/me", "/v2/me"),
        ("/proxy/a/../me", "/v2/me"),
        ("/proxy/./me?next=../../x", "/v2/me?next=../../x"),
    ];
    for (target, _) in kept {
        let (status, answer) = proxy.raw(&head(target)).await;
        assert_eq!(status, 200, "{target}: {answer}");
        assert!(answer.ends_with("on the base"), "{target}: {answer}");
    }
    let requests = upstream.received_requests().await.unwrap();
    let seen: Vec<String> = requests
        .iter()
        .map(|r| match r.url.query() {
            Some(q) => format!("{}?{q}", r.url.path()),
            None => r.url.path().to_owned(),
        })
        .collect();
    let expected: Vec<&str> = kept.iter().map(|(_, sent)| *sent).collect();
    assert_eq!(
        seen, expected,
        "only the kept requests reached the provider, on the base"
    );
    for request in &requests {
        assert_eq!(
            request.headers["host"],
            upstream.address().to_string().as_str()
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn connections_are_listed_without_secrets_and_deleted() {
    let upstream = intercom().await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    let imported = proxy
        .import(
            "intercom",
            "acme",
            json!({ "access_token": TOKEN, "refresh_token": REFRESH, "expires_at": "2099-01-01T00:00:00+01:00" }),
        )
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    for (body, why) in [
        (json!({}), "no access_token"),
        (
            json!({ "access_token": TOKEN, "expires_at": "soon" }),
            "bad time",
        ),
        (
            json!({ "access_token": TOKEN, "acess": 1 }),
            "unknown field",
        ),
        (json!({ "access_token": 42 }), "not a string"),
        (json!([TOKEN]), "not an object"),
    ] {
        let reply = proxy.import("intercom", "bad", body).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "invalid_request"),
            "{why}"
        );
        assert!(!reply.text().contains(TOKEN), "{why}: {}", reply.text());
    }
    let unknown = proxy
        .import("nope", "acme", json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "unknown_integration")
    );

    let listed = proxy.connections().await;
    assert_eq!(
        listed["connections"],
        json!([{
            "integration": "intercom",
            "connection_id": "acme",
            "status": "ok",
            "last_error": null,
            "expires_at": "2098-12-31T23:00:00Z",
            "refreshable": true,
            "scopes": [],
            "params": {},
            "updated_at": listed["connections"][0]["updated_at"],
        }])
    );
    let filtered = proxy
        .send(proxy.request(Method::GET, "/connections?integration=intercom"))
        .await;
    assert_eq!(filtered.json()["connections"].as_array().unwrap().len(), 1);

    let delete = |id: &'static str| {
        proxy.send(proxy.request(Method::DELETE, &format!("/connections/intercom/{id}")))
    };
    assert_eq!(delete("acme").await.status, 204);
    let again = delete("acme").await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (404, "unknown_connection")
    );
    assert_eq!(proxy.connections().await["connections"], json!([]));
    let call = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(
        (call.status, call.code().as_str()),
        (404, "unknown_connection")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_body_larger_than_the_replay_cap_is_forwarded_whole() {
    let upstream = intercom().await;
    Mock::given(method("PUT"))
        .and(path("/upload"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_string(request.body.len().to_string())
        })
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    let body = vec![b'a'; 3 * 1024 * 1024];
    let reply = proxy
        .send_body(
            proxy.proxy(Method::PUT, "/upload", "intercom", "acme"),
            body,
        )
        .await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "3145728"));
    proxy.stop().await;
}

#[tokio::test]
async fn the_answer_is_in_the_callers_http_version_not_the_providers() {
    let old = HeldUpstream::start_with("HTTP/1.0 200 OK", "from 1996").await;
    old.release();
    let upstream = intercom().await;
    let extra = format!(
        "  old:\n    extends_blueprint: intercom\n    base_url: {}/\n",
        old.url()
    );
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, &extra)).await;
    proxy
        .import("old", "acme", json!({ "access_token": TOKEN }))
        .await;
    let (status, answer) = proxy
        .raw(&format!(
            "GET /proxy/me HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
             provider-config-key: old\r\nconnection-id: acme"
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("from 1996"), "{answer}");
    proxy.stop().await;
}
