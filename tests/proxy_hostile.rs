//! Hostile callers and hostile upstreams, against the proxy's router on a loopback port:
//! connect sessions, connection ids, JSON errors, the caller's broken bodies, stale
//! `Content-Length`, `TRACE` and host headers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::time::Duration;

use http::Method;
use proxy_support::{
    FAST_RETRY, InProcess, KEY, Target, connect_session, raw_upstream, state_of, yaml,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "tok_IMPORTED_4b1d";
const OAUTH_TOKEN: &str = "tok_FROM_SESSION_77aa";
const CODE: &str = "code_SESSION_51e2";

async fn post_session(proxy: &Target, body: Value) -> proxy_support::Reply {
    proxy
        .send_body(
            proxy
                .request(Method::POST, "/connect/sessions")
                .header("content-type", "application/json"),
            body.to_string(),
        )
        .await
}

/// `GET` of a URL on the proxy without the secret key, as a browser would.
async fn browse(url: &str) -> proxy_support::Reply {
    let target = Target {
        addr: url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .expect("a proxy URL"),
    };
    target.send(http::Request::get(url)).await
}

#[tokio::test]
async fn a_connect_session_authorizes_its_connection_once() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/eagle/token"))
        .and(body_string_contains(format!("code={CODE}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "access_token": OAUTH_TOKEN
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;

    let (token, url) = connect_session(&proxy, "intercom", "acme").await;
    assert_eq!(token.len(), 64, "256 bits in hex: {token}");
    assert_eq!(url, proxy.url(&format!("/connect?session={token}")));

    // The browser goes to the session's URL, and on to the provider.
    let visit = browse(&url).await;
    assert_eq!(visit.status, 302, "{}", visit.text());
    assert_eq!(visit.header("referrer-policy"), Some("no-referrer"));
    let location = visit.header("location").expect("a Location").to_owned();
    assert!(
        location.starts_with(&format!("{}/oauth?", upstream.uri())),
        "{location}"
    );
    assert!(
        !location.contains(&token),
        "the session token reaches the provider"
    );
    // A second visit (a reload) goes to the same authorization.
    let reload = browse(&url).await;
    assert_eq!(reload.header("location"), Some(location.as_str()));
    let state = state_of(&location);

    let page = browse(&proxy.url(&format!("/oauth/callback?code={CODE}&state={state}"))).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("Connected"), "{}", page.text());
    let listed = proxy.connections().await;
    assert_eq!(listed["connections"][0]["connection_id"], "acme");
    assert_eq!(listed["connections"][0]["status"], "ok");

    // Used up: the session's URL and the callback work once.
    let reused = browse(&url).await;
    assert_eq!(reused.status, 404, "{}", reused.text());
    assert!(reused.text().contains("not valid"), "{}", reused.text());
    let again = browse(&proxy.url(&format!("/oauth/callback?code={CODE}&state={state}"))).await;
    assert_eq!(again.status, 400, "{}", again.text());
    // A new session can authorize the same connection again (only the key holder makes one).
    let (_, second) = connect_session(&proxy, "intercom", "acme").await;
    assert_eq!(browse(&second).await.status, 302);
    proxy.stop().await;
}

#[tokio::test]
async fn without_a_valid_session_nothing_is_started_and_every_answer_is_the_same() {
    let upstream = MockServer::start().await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    proxy
        .import("intercom", "exists", json!({ "access_token": TOKEN }))
        .await;
    let (token, url) = connect_session(&proxy, "intercom", "used").await;
    let state = state_of(browse(&url).await.header("location").unwrap());
    // The provider refuses; the callback uses the session up all the same.
    let denied = browse(&proxy.url(&format!(
        "/oauth/callback?error=access_denied&state={state}"
    )))
    .await;
    assert_eq!(denied.status, 400, "{}", denied.text());

    let mut wrong = token.clone();
    wrong.replace_range(0..1, if token.starts_with('0') { "1" } else { "0" });
    let answers = [
        browse(&proxy.url("/connect")).await,
        browse(&proxy.url("/connect?session=")).await,
        browse(&proxy.url(&format!("/connect?session={wrong}"))).await,
        browse(&proxy.url("/connect?session=%FF%FE")).await,
        browse(&proxy.url("/connect?session=exists")).await,
        browse(&url).await, // used up
    ];
    for answer in &answers {
        assert_eq!(answer.status, 404, "{}", answer.text());
        assert!(answer.header("location").is_none());
        assert_eq!(answer.body, answers[0].body, "the answers differ");
    }
    // The retired route tells where to go, and starts nothing either.
    for id in ["exists", "new"] {
        let old = proxy
            .send(http::Request::get(
                proxy.url(&format!("/oauth/connect/intercom?connection_id={id}")),
            ))
            .await;
        assert_eq!((old.status, old.code().as_str()), (410, "gone"));
        assert!(old.text().contains("/connect/sessions"), "{}", old.text());
    }
    let listed = proxy.connections().await;
    assert_eq!(
        listed["connections"].as_array().unwrap().len(),
        1,
        "only the imported connection exists: {listed}"
    );
    assert!(upstream.received_requests().await.unwrap().is_empty());
    proxy.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_session_starts_nothing() {
    use tower::ServiceExt as _;
    let yaml = yaml("http://127.0.0.1:9", FAST_RETRY, "");
    let registry = blueprint_proxy::registry().unwrap();
    let integrations =
        blueprint::Integrations::parse(&yaml, "test.yaml", &registry, |_| None).unwrap();
    let proxy = blueprint_proxy::Proxy::builder(
        integrations,
        blueprint_proxy::SecretKey::new(KEY).unwrap(),
    )
    .build()
    .unwrap();
    let call = |request: http::Request<axum::body::Body>| proxy.router().oneshot(request);
    let created = call(
        http::Request::post("/connect/sessions")
            .header("authorization", format!("Bearer {KEY}"))
            .body(axum::body::Body::from(
                json!({"integration": "intercom", "connection_id": "acme", "expires_in": 60})
                    .to_string(),
            ))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let body = axum::body::to_bytes(created.into_body(), 4096)
        .await
        .unwrap();
    let created: Value = serde_json::from_slice(&body).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let visit = |token: String| {
        call(
            http::Request::get(format!("/connect?session={token}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
    };
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        visit(token.clone()).await.unwrap().status(),
        302,
        "still live"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let expired = visit(token).await.unwrap();
    assert_eq!(expired.status(), 404, "expired at expires_at");
    assert!(expired.headers().get("location").is_none());
}

#[tokio::test]
async fn sessions_need_the_key_a_known_oauth_integration_and_sane_fields() {
    let upstream = MockServer::start().await;
    let extra = format!(
        "  private:\n    extends_blueprint: intercom\n    base_url: {}/\n",
        upstream.uri()
    );
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, &extra)).await;
    let no_key = proxy
        .send_body(
            http::Request::post(proxy.url("/connect/sessions")),
            json!({"integration": "intercom", "connection_id": "acme"}).to_string(),
        )
        .await;
    assert_eq!(
        (no_key.status, no_key.code().as_str()),
        (401, "unauthorized")
    );

    let cases = [
        (
            json!({"integration": "nope", "connection_id": "a"}),
            404,
            "unknown_integration",
        ),
        (
            json!({"integration": "private", "connection_id": "a"}),
            400,
            "oauth_not_configured",
        ),
        (
            json!({"integration": "intercom", "connection_id": "a b"}),
            400,
            "invalid_connection_id",
        ),
        (
            json!({"integration": "intercom", "connection_id": ""}),
            400,
            "invalid_connection_id",
        ),
        (json!({"integration": "intercom"}), 400, "invalid_request"),
        (json!({"connection_id": "a"}), 400, "invalid_request"),
        (
            json!({"integration": "intercom", "connection_id": "a", "x": 1}),
            400,
            "invalid_request",
        ),
        (
            json!({"integration": "intercom", "connection_id": "a", "expires_in": 0}),
            400,
            "invalid_request",
        ),
        (
            json!({"integration": "intercom", "connection_id": "a", "expires_in": 59}),
            400,
            "invalid_request",
        ),
        (
            json!({"integration": "intercom", "connection_id": "a", "expires_in": 86_401}),
            400,
            "invalid_request",
        ),
        (
            json!({"integration": "intercom", "connection_id": "a", "expires_in": -5}),
            400,
            "invalid_request",
        ),
        (
            json!({"integration": "intercom", "connection_id": "a", "expires_in": 1.5}),
            400,
            "invalid_request",
        ),
        (
            json!({"integration": "intercom", "connection_id": "a", "expires_in": "60"}),
            400,
            "invalid_request",
        ),
        (json!(["intercom"]), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let reply = post_session(&proxy, body.clone()).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (status, code),
            "{body}"
        );
    }
    let now = std::time::SystemTime::now();
    for (expires_in, want) in [(None, 1800), (Some(60), 60), (Some(86_400), 86_400)] {
        let mut body = json!({"integration": "intercom", "connection_id": "acme"});
        if let Some(secs) = expires_in {
            body["expires_in"] = json!(secs);
        }
        let reply = post_session(&proxy, body).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let at = reply.json()["expires_at"].as_str().unwrap().to_owned();
        let at = httpdate_from_rfc3339(&at);
        let secs = at.duration_since(now).unwrap().as_secs();
        assert!(
            (want - 2..=want + 2).contains(&secs),
            "{expires_in:?}: {secs}"
        );
    }
    assert!(upstream.received_requests().await.unwrap().is_empty());
    proxy.stop().await;
}

/// `2030-01-31T12:00:00Z` as a time (whole seconds, UTC only: what the proxy writes).
fn httpdate_from_rfc3339(text: &str) -> std::time::SystemTime {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<u64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).unwrap();
    std::time::UNIX_EPOCH + Duration::from_secs(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

#[tokio::test]
async fn one_rule_for_connection_ids_at_every_door() {
    let upstream = MockServer::start().await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    for id in ["caf%C3%A9", "%20acme", "acme%20", "a%2Fb", "a%00b", "a+b"] {
        let put = proxy
            .import("intercom", id, json!({ "access_token": TOKEN }))
            .await;
        assert_eq!(
            (put.status, put.code().as_str()),
            (400, "invalid_connection_id"),
            "PUT {id}: {}",
            put.text()
        );
        assert!(put.text().contains("1 to 256 characters"), "{}", put.text());
        let delete = proxy
            .send(proxy.request(Method::DELETE, &format!("/connections/intercom/{id}")))
            .await;
        assert_eq!(
            (delete.status, delete.code().as_str()),
            (400, "invalid_connection_id"),
            "DELETE {id}"
        );
        let filter = proxy
            .send(proxy.request(Method::GET, &format!("/connections?connection_id={id}")))
            .await;
        assert_eq!(
            (filter.status, filter.code().as_str()),
            (400, "invalid_connection_id"),
            "filter {id}"
        );
    }
    // The header: non-ASCII bytes and characters outside the rule are refused alike.
    for value in [&b"caf\xc3\xa9"[..], b"a b", b"a/b"] {
        let reply = proxy
            .send(
                proxy
                    .request(Method::GET, "/proxy/me")
                    .header("provider-config-key", "intercom")
                    .header(
                        "connection-id",
                        http::HeaderValue::from_bytes(value).unwrap(),
                    ),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "invalid_connection_id"),
            "{value:?}"
        );
    }
    // What is admitted goes through every door the same way.
    let id = "org:42.user@example.com_a-b";
    let put = proxy
        .import("intercom", id, json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let filtered = proxy
        .send(proxy.request(Method::GET, &format!("/connections?connection_id={id}")))
        .await;
    assert_eq!(filtered.json()["connections"][0]["connection_id"], id);
    let other = proxy
        .send(proxy.request(Method::GET, "/connections?connection_id=other"))
        .await;
    assert_eq!(other.json()["connections"], json!([]));
    assert_eq!(
        proxy
            .send(proxy.request(Method::DELETE, &format!("/connections/intercom/{id}")))
            .await
            .status,
        204
    );
    assert!(upstream.received_requests().await.unwrap().is_empty());
    proxy.stop().await;
}

/// Sends `request` (head and body, as given) on its own connection; the status and the
/// whole answer.
async fn raw_exchange(target: &Target, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(target.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn assert_json_error(answer: &str, status: u16, code: &str) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "want {status}: {answer}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "not JSON: {answer}"
    );
    let json: Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    assert_eq!(json["error"]["code"], code, "{answer}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
}

#[tokio::test]
async fn every_answer_the_proxy_writes_is_json() {
    let upstream = MockServer::start().await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    let key = format!("authorization: Bearer {KEY}");
    let host = format!("host: {}", proxy.addr);

    // A body over the limit of the JSON routes.
    let big = proxy
        .send_body(
            proxy
                .request(Method::PUT, "/connections/intercom/acme")
                .header("content-type", "application/json"),
            vec![b' '; 3 * 1024 * 1024],
        )
        .await;
    assert_eq!(
        (big.status, big.code().as_str()),
        (413, "body_too_large"),
        "{}",
        big.text()
    );
    // A path that is not UTF-8 once decoded.
    for target in ["/connections/intercom/%FF", "/connections/%FF/acme"] {
        let (_, answer) = proxy
            .raw(&format!("DELETE {target} HTTP/1.1\r\n{host}\r\n{key}"))
            .await;
        assert_json_error(&answer, 400, "invalid_path");
    }
    // A filter that cannot be read is refused, not ignored.
    proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    let filtered = proxy
        .send(proxy.request(Method::GET, "/connections?integration=%FF"))
        .await;
    assert_eq!(
        (filtered.status, filtered.code().as_str()),
        (400, "invalid_request"),
        "{}",
        filtered.text()
    );
    // Routes that do not take the method, routes that do not exist.
    let (_, answer) = proxy
        .raw(&format!(
            "POST /connections HTTP/1.1\r\n{host}\r\n{key}\r\ncontent-length: 0"
        ))
        .await;
    assert_json_error(&answer, 405, "method_not_allowed");
    let (_, answer) = proxy.raw(&format!("GET /nowhere HTTP/1.1\r\n{host}")).await;
    assert_json_error(&answer, 404, "not_found");
    // A body that is not JSON, on a JSON route.
    let (_, answer) = raw_exchange(
        &proxy,
        format!(
            "PUT /connections/intercom/acme HTTP/1.1\r\n{host}\r\n{key}\r\n\
             content-length: 3\r\nconnection: close\r\n\r\n{{x}}"
        )
        .as_bytes(),
    )
    .await;
    assert_json_error(&answer, 400, "invalid_request");
    assert!(upstream.received_requests().await.unwrap().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn a_malformed_or_stalled_body_from_the_caller_is_the_callers_error() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_string(request.body.len().to_string())
        })
        .mount(&upstream)
        .await;
    let proxy = InProcess::start_with(&yaml(&upstream.uri(), FAST_RETRY, ""), |builder| {
        builder.request_body_timeout(Duration::from_millis(300))
    })
    .await;
    proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    let head = format!(
        "POST /proxy/upload HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {KEY}\r\n\
         provider-config-key: intercom\r\nconnection-id: acme\r\n",
        proxy.addr
    );
    // A chunk size that is not hexadecimal.
    let malformed = format!("{head}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n");
    let (_, answer) = raw_exchange(&proxy, malformed.as_bytes()).await;
    assert_json_error(&answer, 400, "invalid_body");

    // A body that stops dripping: 408 once the idle timeout passes.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(format!("{head}content-length: 100\r\n\r\nfirst bytes").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled upload was never answered");
    assert_json_error(&String::from_utf8_lossy(&answer), 408, "request_timeout");

    // A whole body still goes through.
    let whole = proxy
        .send_body(
            proxy.proxy(Method::POST, "/upload", "intercom", "acme"),
            "0123456789",
        )
        .await;
    assert_eq!((whole.status, whole.text().as_str()), (200, "10"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_stale_content_length_beside_chunked_encoding_is_not_forwarded() {
    let body = "x".repeat(100);
    let answer: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\
             content-type: text/plain\r\n\r\n64\r\n{body}\r\n0\r\n\r\n"
        )
        .into_boxed_str(),
    );
    let upstream = raw_upstream(answer.as_bytes()).await;
    let extra =
        format!("  raw:\n    extends_blueprint: intercom\n    base_url: http://{upstream}/\n");
    let proxy = InProcess::start(&yaml("http://127.0.0.1:9", FAST_RETRY, &extra)).await;
    proxy
        .import("raw", "acme", json!({ "access_token": TOKEN }))
        .await;
    let reply = proxy
        .send(proxy.proxy(Method::GET, "/export", "raw", "acme"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), body, "the answer was cut");
    assert_ne!(reply.header("content-length"), Some("1"));
    proxy.stop().await;
}

#[tokio::test]
async fn trace_is_refused_and_host_headers_are_dropped_unless_configured() {
    let upstream = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(|request: &Request| {
            let mut names: Vec<String> = request.headers.keys().map(ToString::to_string).collect();
            names.sort();
            ResponseTemplate::new(200).set_body_string(names.join(","))
        })
        .mount(&upstream)
        .await;
    let yaml = yaml(&upstream.uri(), FAST_RETRY, "");
    let proxy = InProcess::start(&yaml).await;
    proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    for verb in ["TRACE", "TRACK", "CONNECT"] {
        let method = Method::from_bytes(verb.as_bytes()).unwrap();
        let target = if verb == "CONNECT" {
            format!("{}:443", upstream.address())
        } else {
            String::from("/proxy/me")
        };
        let (_, answer) = proxy
            .raw(&format!(
                "{verb} {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
                 provider-config-key: intercom\r\nconnection-id: acme"
            ))
            .await;
        if verb == "CONNECT" {
            // An authority-form target never reaches `/proxy`: refused, not forwarded.
            assert!(!answer.starts_with("HTTP/1.1 2"), "{method}: {answer}");
        } else {
            assert_json_error(&answer, 405, "method_not_allowed");
        }
    }
    assert!(
        upstream.received_requests().await.unwrap().is_empty(),
        "a refused method reached the provider"
    );
    let headers = |proxy: &InProcess| {
        let target = proxy.target;
        async move {
            target
                .send(
                    target
                        .proxy(Method::GET, "/me", "intercom", "acme")
                        .header("x-forwarded-host", "evil.example")
                        .header("forwarded", "host=evil.example;proto=https")
                        .header("x-caller", "kept"),
                )
                .await
                .text()
        }
    };
    let sent = headers(&proxy).await;
    assert!(sent.contains("x-caller"), "{sent}");
    assert!(
        !sent.contains("x-forwarded-host") && !sent.contains("forwarded,"),
        "{sent}"
    );
    assert!(!sent.split(',').any(|n| n == "forwarded"), "{sent}");
    proxy.stop().await;

    let forwarding = InProcess::start_with(&yaml, |b| b.forward_host_headers(true)).await;
    forwarding
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    let sent = headers(&forwarding).await;
    assert!(sent.split(',').any(|n| n == "x-forwarded-host"), "{sent}");
    assert!(sent.split(',').any(|n| n == "forwarded"), "{sent}");
    forwarding.stop().await;
}
