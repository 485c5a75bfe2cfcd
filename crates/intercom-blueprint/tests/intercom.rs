//! The Intercom client against wiremock standing in for Intercom. Time is paused; the
//! stack's deadline and attempt timeout are turned off on these real sockets (a pending
//! timer would make tokio's paused clock jump while a socket is read); timeouts are tested
//! in the engine and retry crates with in-process services.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint::StackBody;
use blueprint_auth::{StaticToken, TokenMap};
use blueprint_core::{AccessToken, ConnectionId};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use intercom_blueprint::webhook::{VerifyWebhookLayer, sign};
use intercom_blueprint::{IntercomClient, IntercomError, IntercomLayer, IntercomRegion};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client_with(server: &MockServer, tokens: impl blueprint_core::TokenSource) -> IntercomClient {
    no_timers(IntercomClient::builder(tokens).base_url(server.uri()))
        .client()
        .unwrap()
}

/// Real sockets with the clock paused: no timer may be pending while a socket is read.
fn no_timers(builder: intercom_blueprint::IntercomBuilder) -> intercom_blueprint::IntercomBuilder {
    builder.map_stack(|stack| {
        stack.map_blueprint(|bp| {
            bp.map_retry(|r| {
                r.deadline = None;
                r.attempt_timeout = None;
            })
        })
    })
}

fn client(server: &MockServer) -> IntercomClient {
    client_with(server, StaticToken::new("tok_live_123").unwrap())
}

fn error_list(code: &str, message: &str) -> Value {
    json!({"type": "error.list", "request_id": "req-42", "errors": [{"code": code, "message": message}]})
}

#[tokio::test(start_paused = true)]
async fn every_request_carries_token_accept_and_the_pinned_version() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", "Bearer tok_live_123"))
        .and(header("accept", "application/json"))
        .and(header("intercom-version", "2.16"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"type": "admin", "id": "1"})))
        .mount(&server)
        .await;
    let me: Value = client(&server).get("/me").await.unwrap();
    assert_eq!(me["type"], "admin");
}

#[tokio::test(start_paused = true)]
async fn the_version_can_be_set_per_client_and_per_request() {
    let server = MockServer::start().await;
    Mock::given(path("/me"))
        .and(header("intercom-version", "2.11"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"v": "2.11"})))
        .mount(&server)
        .await;
    Mock::given(path("/me"))
        .and(header("intercom-version", "Preview"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"v": "Preview"})))
        .mount(&server)
        .await;
    let per_client = no_timers(
        IntercomClient::builder(StaticToken::new("t").unwrap())
            .base_url(server.uri())
            .version("2.11"),
    )
    .client()
    .unwrap();
    let v: Value = per_client.get("/me").await.unwrap();
    assert_eq!(v["v"], "2.11");
    let v: Value = per_client
        .request(Method::GET, "/me")
        .version("Preview")
        .send()
        .await
        .unwrap();
    assert_eq!(v["v"], "Preview");
}

#[tokio::test(start_paused = true)]
async fn each_connection_uses_its_own_token() {
    let server = MockServer::start().await;
    for (id, token) in [("acme", "tok-acme"), ("globex", "tok-globex")] {
        Mock::given(path("/me"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"app": id})))
            .mount(&server)
            .await;
    }
    let tokens: TokenMap = [
        (
            ConnectionId::new("acme"),
            AccessToken::new("tok-acme").unwrap(),
        ),
        (
            ConnectionId::new("globex"),
            AccessToken::new("tok-globex").unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    let intercom = client_with(&server, tokens);
    for id in ["acme", "globex"] {
        let me: Value = intercom
            .request(Method::GET, "/me")
            .connection(id)
            .send()
            .await
            .unwrap();
        assert_eq!(me["app"], id);
    }
}

#[tokio::test(start_paused = true)]
async fn errors_are_typed() {
    let server = MockServer::start().await;
    Mock::given(path("/contacts/nope"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(error_list("not_found", "User Not Found")),
        )
        .mount(&server)
        .await;
    Mock::given(path("/gateway"))
        .respond_with(
            ResponseTemplate::new(504)
                .set_body_string("<html><body>504 Gateway Time-out</body></html>"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/revoked"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(error_list("token_revoked", "Token revoked")),
        )
        .mount(&server)
        .await;
    let far_reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    Mock::given(path("/busy"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-ratelimit-limit", "166")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", far_reset.to_string().as_str())
                .set_body_json(error_list(
                    "rate_limit_exceeded",
                    "Exceeded rate limit of 167 in 10_seconds",
                )),
        )
        .mount(&server)
        .await;
    let intercom = client(&server);

    let err = intercom.get::<Value>("/contacts/nope").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(err.api().and_then(|a| a.code()), Some("not_found"));
    assert_eq!(err.request_id(), Some("req-42"));

    let err = intercom.get::<Value>("/gateway").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::GATEWAY_TIMEOUT));
    assert!(
        err.api()
            .and_then(|a| a.body.as_deref())
            .is_some_and(|b| b.contains("504 Gateway"))
    );

    let err = intercom
        .request(Method::GET, "/revoked")
        .connection("acme")
        .send::<Value>()
        .await
        .unwrap_err();
    assert!(err.needs_reauthorization(), "{err}");
    assert!(
        matches!(&err, IntercomError::NeedsReauthorization { connection, .. } if connection.as_str() == "acme")
    );

    let err = intercom.get::<Value>("/busy").await.unwrap_err();
    assert!(err.is_rate_limited(), "{err}");
    let after = err.retry_after().unwrap();
    // Intercom's reset was ten minutes away; the blueprint believes at most five
    // (`max_server_wait`), so the wait it reports is cut to that.
    assert!(
        after > Duration::from_secs(290) && after <= Duration::from_secs(301),
        "{after:?}"
    );
    // Longer than the stack waits either way, so one request.
    let busy = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/busy")
        .count();
    assert_eq!(busy, 1);
    // The next call is held back by the rate-limit layer: nothing is sent.
    let err = intercom
        .request(Method::GET, "/busy")
        .deadline(Duration::from_secs(5))
        .send::<Value>()
        .await
        .unwrap_err();
    assert!(
        matches!(err, IntercomError::RateLimited { sent: false, .. }),
        "{err}"
    );
    let busy = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/busy")
        .count();
    assert_eq!(busy, 1);
}

#[tokio::test(start_paused = true)]
async fn get_is_retried_and_a_creating_post_is_not() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contacts/1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts/1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "1"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let intercom = client(&server);

    let contact: Value = intercom.get("/contacts/1").await.unwrap();
    assert_eq!(contact["id"], "1");
    let err = intercom
        .post::<_, Value>("/conversations", &json!({"body": "hi"}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let err = intercom
        .post::<_, Value>("/events", &json!({"event_name": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));

    let requests = server.received_requests().await.unwrap();
    let count = |m: &str, p: &str| {
        requests
            .iter()
            .filter(|r| r.method.as_str() == m && r.url.path() == p)
            .count()
    };
    assert_eq!(count("GET", "/contacts/1"), 2);
    assert_eq!(
        count("POST", "/conversations"),
        1,
        "a creating POST was sent twice"
    );
    assert_eq!(
        count("POST", "/events"),
        3,
        "POST /events deduplicates, so it is retried"
    );
}

#[tokio::test(start_paused = true)]
async fn lists_follow_starting_after_to_the_last_page() {
    let server = MockServer::start().await;
    let page = |ids: &[&str], next: Option<&str>| {
        let mut body = json!({
            "type": "list",
            "data": ids.iter().map(|id| json!({"type": "contact", "id": id})).collect::<Vec<_>>(),
            "pages": {"type": "pages", "per_page": 2}
        });
        if let Some(next) = next {
            body["pages"]["next"] = json!({"page": 2, "starting_after": next});
        }
        ResponseTemplate::new(200).set_body_json(body)
    };
    Mock::given(path("/contacts"))
        .and(query_param_is_missing("starting_after"))
        .and(query_param("per_page", "2"))
        .respond_with(page(&["a", "b"], Some("cur1")))
        .mount(&server)
        .await;
    Mock::given(path("/contacts"))
        .and(query_param("starting_after", "cur1"))
        .respond_with(page(&["c", "d"], Some("cur2")))
        .mount(&server)
        .await;
    Mock::given(path("/contacts"))
        .and(query_param("starting_after", "cur2"))
        .respond_with(page(&["e"], None))
        .mount(&server)
        .await;

    let ids: Vec<String> = client(&server)
        .list("/contacts")
        .per_page(2)
        .items::<Value>()
        .map(|item| item.unwrap()["id"].as_str().unwrap().to_owned())
        .collect()
        .await;
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
}

#[tokio::test(start_paused = true)]
async fn searches_page_through_the_body_and_companies_scroll() {
    let server = MockServer::start().await;
    let query = json!({"field": "role", "operator": "=", "value": "user"});
    Mock::given(method("POST"))
        .and(path("/contacts/search"))
        .and(body_json(
            json!({"query": query, "pagination": {"per_page": 1}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "type": "list", "data": [{"id": "1"}], "pages": {"next": {"starting_after": "s1"}}})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/contacts/search"))
        .and(body_json(
            json!({"query": query, "pagination": {"per_page": 1, "starting_after": "s1"}}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"type": "list", "data": [{"id": "2"}], "pages": {}})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/companies/scroll"))
        .and(query_param_is_missing("scroll_param"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"type": "company.list", "data": [{"id": "c1"}], "scroll_param": "p1"}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/companies/scroll"))
        .and(query_param("scroll_param", "p1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"type": "company.list", "data": [{"id": "c2"}], "scroll_param": "p1"}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/companies/scroll"))
        .and(query_param("scroll_param", "p1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"type": "company.list", "data": [], "scroll_param": "p1"})),
        )
        .mount(&server)
        .await;

    let intercom = client(&server);
    let found: Vec<Value> = intercom
        .search("/contacts/search", query.clone())
        .per_page(1)
        .items()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(found, [json!({"id": "1"}), json!({"id": "2"})]);
    let companies: Vec<Value> = intercom
        .scroll_companies()
        .items()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(companies, [json!({"id": "c1"}), json!({"id": "c2"})]);
}

#[tokio::test]
async fn regions_pick_their_hosts() {
    let http = service_fn(|req: Request<StackBody<Full<Bytes>>>| async move {
        Ok::<_, blueprint_core::BoxError>(Response::new(req.uri().to_string()))
    });
    for (region, expected) in [
        (IntercomRegion::Us, "https://api.intercom.io/me"),
        (IntercomRegion::Eu, "https://api.eu.intercom.io/me"),
        (IntercomRegion::Au, "https://api.au.intercom.io/me"),
    ] {
        let layer = IntercomLayer::builder(StaticToken::new("t").unwrap())
            .region(region)
            .layer()
            .unwrap();
        let svc = ServiceBuilder::new().layer(layer).service(http);
        let response = svc
            .oneshot(Request::get("/me").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.body(), expected);
    }
}

#[tokio::test]
async fn webhooks_are_verified_in_an_axum_app() {
    let app = axum::Router::new()
        .route(
            "/webhooks",
            axum::routing::post(|body: String| async move { body.len().to_string() }),
        )
        .layer(VerifyWebhookLayer::new("client-secret").max_body(1024));
    let body =
        r#"{"type":"notification_event","topic":"conversation.user.created","data":{"item":{}}}"#;
    let send = |signature: Option<String>, body: Bytes| {
        let app = app.clone();
        async move {
            let mut request = Request::post("/webhooks");
            if let Some(signature) = signature {
                request = request.header("x-hub-signature", signature);
            }
            let response = app
                .oneshot(request.body(axum::body::Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = response.status();
            (
                status,
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        }
    };
    let (status, echoed) = send(
        Some(sign(b"client-secret", body.as_bytes())),
        Bytes::from(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, body.len().to_string());
    let (status, _) = send(
        Some(sign(b"wrong-secret", body.as_bytes())),
        Bytes::from(body),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(None, Bytes::from(body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let big = Bytes::from(vec![b'x'; 4096]);
    let (status, _) = send(Some(sign(b"client-secret", &big)), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(start_paused = true)]
async fn listings_end_when_cursors_cycle_or_a_page_is_empty() {
    let server = MockServer::start().await;
    let page = |id: &str, next: &str| {
        ResponseTemplate::new(200).set_body_json(json!({
            "type": "list", "data": [{"id": id}], "pages": {"next": {"starting_after": next}}
        }))
    };
    Mock::given(path("/cycle"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(page("1", "A"))
        .mount(&server)
        .await;
    Mock::given(path("/cycle"))
        .and(query_param("starting_after", "A"))
        .respond_with(page("2", "B"))
        .mount(&server)
        .await;
    Mock::given(path("/cycle"))
        .and(query_param("starting_after", "B"))
        .respond_with(page("3", "A"))
        .mount(&server)
        .await;
    Mock::given(path("/empty"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "type": "list", "data": [], "pages": {"next": {"starting_after": "X"}}
        })))
        .mount(&server)
        .await;

    let intercom = client(&server);
    let ids: Vec<Value> = intercom
        .list("/cycle")
        .items()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(
        ids,
        [json!({"id": "1"}), json!({"id": "2"}), json!({"id": "3"})]
    );
    let none: Vec<Value> = intercom
        .list("/empty")
        .items()
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(none.is_empty());
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests.iter().filter(|r| r.url.path() == "/cycle").count(),
        3
    );
    let empty: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/empty")
        .map(|r| r.url.to_string())
        .collect();
    assert_eq!(empty.len(), 1, "{empty:?}");
}

#[tokio::test(start_paused = true)]
async fn query_values_arrive_as_written() {
    let server = MockServer::start().await;
    Mock::given(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    let tricky = "a&b=c+d e#f%g/zoë";
    let _: Value = client(&server)
        .request(Method::GET, "/contacts")
        .query(&[("email", tricky), ("a key", "1")])
        .send()
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let url = &requests[0].url;
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        pairs,
        [
            ("email".to_owned(), tricky.to_owned()),
            ("a key".to_owned(), "1".to_owned())
        ],
        "query sent: {:?}",
        url.query()
    );
    // `+` is encoded too, so no server reads it as a space.
    assert_eq!(
        url.query(),
        Some("email=a%26b%3Dc%2Bd%20e%23f%25g%2Fzo%C3%AB&a%20key=1")
    );
}

#[tokio::test(start_paused = true)]
async fn ids_put_in_with_path_reach_the_resource_meant() {
    use intercom_blueprint::path;

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"type": "contact"})))
        .mount(&server)
        .await;
    let intercom = client(&server);
    let id = "ext 7?x=1#frag%41";
    let _: Value = intercom
        .get(&path!("/contacts/{}", id).unwrap())
        .await
        .unwrap();
    let _: Value = intercom
        .get(
            &intercom_blueprint::ApiPath::new("/contacts")
                .segment(id)
                .unwrap(),
        )
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    for request in &requests {
        assert_eq!(request.url.path(), "/contacts/ext%207%3Fx%3D1%23frag%2541");
        assert_eq!(request.url.query(), None, "the id leaked into the query");
    }
    assert_eq!(requests.len(), 2);

    // What cannot be one segment is refused as an invalid request: nothing is sent.
    for bad in ["..", "a/b", ""] {
        let error = (|| -> Result<intercom_blueprint::ApiPath, IntercomError> {
            Ok(path!("/contacts/{}", bad)?)
        })()
        .unwrap_err();
        assert!(
            matches!(error, IntercomError::InvalidRequest(_)),
            "{bad:?}: {error}"
        );
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_answer_over_the_body_limit_is_a_typed_error() {
    let server = MockServer::start().await;
    Mock::given(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(2048)))
        .mount(&server)
        .await;
    Mock::given(path("/small"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&server)
        .await;
    Mock::given(path("/big-error"))
        .respond_with(ResponseTemplate::new(500).set_body_string("e".repeat(4096)))
        .mount(&server)
        .await;
    let intercom = no_timers(
        IntercomClient::builder(StaticToken::new("t").unwrap())
            .base_url(server.uri())
            .max_response_body(1024)
            .map_stack(|stack| stack.map_blueprint(|bp| bp.map_retry(|r| r.max_attempts = 1))),
    )
    .client()
    .unwrap();
    let ok: Value = intercom.get("/small").await.unwrap();
    assert_eq!(ok["ok"], true);
    let error = intercom.get::<Value>("/big").await.unwrap_err();
    assert!(
        matches!(
            error,
            IntercomError::ResponseTooLarge {
                status: StatusCode::OK,
                limit: 1024
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("limit of 1024 bytes"), "{error}");
    let error = intercom.get::<Value>("/big-error").await.unwrap_err();
    assert_eq!(
        error.status(),
        Some(StatusCode::INTERNAL_SERVER_ERROR),
        "{error}"
    );
    assert!(
        matches!(error, IntercomError::ResponseTooLarge { .. }),
        "{error}"
    );
}

/// A body without `Content-Length` (chunked) is cut off at the limit as it streams.
#[tokio::test]
async fn a_streamed_answer_over_the_body_limit_is_a_typed_error() {
    let chunks = |n: usize| {
        axum::body::Body::from_stream(futures_util::stream::iter(
            (0..n).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 256]))),
        ))
    };
    let app = axum::Router::new()
        .route(
            "/stream/small",
            axum::routing::get(move || async move { chunks(2) }),
        )
        .route(
            "/stream/big",
            axum::routing::get(move || async move { chunks(64) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let intercom = no_timers(
        IntercomClient::builder(StaticToken::new("t").unwrap())
            .base_url(format!("http://{address}"))
            .max_response_body(1024),
    )
    .client()
    .unwrap();
    // 512 spaces: under the limit, and JSON whitespace only (parses as no value).
    let small = intercom
        .request(Method::GET, "/stream/small")
        .send_bytes()
        .await;
    assert_eq!(small.unwrap().len(), 512);
    let error = intercom
        .request(Method::GET, "/stream/big")
        .send_bytes()
        .await
        .unwrap_err();
    assert!(
        matches!(error, IntercomError::ResponseTooLarge { limit: 1024, .. }),
        "{error}"
    );
    server.abort();
}

/// "client error (Connect)" alone does not say what to fix: the cause is kept.
#[tokio::test]
async fn a_refused_connection_says_so() {
    // A port that was just free: bound, then closed, so nothing listens on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let intercom = no_timers(
        IntercomClient::builder(StaticToken::new("t").unwrap())
            .base_url(format!("http://127.0.0.1:{port}"))
            .map_stack(|stack| stack.map_blueprint(|bp| bp.map_retry(|r| r.max_attempts = 1))),
    )
    .client()
    .unwrap();
    let error = intercom.get::<Value>("/me").await.unwrap_err();
    assert!(matches!(error, IntercomError::Transport(_)), "{error:?}");
    let text = error.to_string().to_lowercase();
    assert!(text.contains("connection refused"), "{text}");
}
