//! The stand-in of Intercom (`examples/intercom_standin.rs`) behaves as the README says:
//! bearer tokens, Intercom's rate-limit headers and 429, pages, search, errors; and
//! `IntercomClient` reads it as it reads Intercom.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../examples/intercom_standin.rs"]
mod standin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use blueprint_auth::StaticToken;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use intercom_blueprint::{IntercomClient, IntercomError};
use serde_json::{Value, json};
use standin::{Standin, WINDOW_SECS};
use tower::ServiceExt;

/// A fixed clock, moved by hand: no window ends in the middle of a test.
fn clock(start: u64) -> (Arc<AtomicU64>, standin::Clock) {
    let now = Arc::new(AtomicU64::new(start));
    let read = Arc::clone(&now);
    (now, Arc::new(move || read.load(Ordering::SeqCst)))
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(app: &axum::Router, request: http::request::Builder, body: Value) -> Answer {
    let body = if body.is_null() {
        Full::default()
    } else {
        Full::from(body.to_string())
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes));
        }),
    }
}

fn get(path: &str, token: Option<&str>) -> http::request::Builder {
    let request = Request::get(path);
    match token {
        Some(token) => request.header("authorization", format!("Bearer {token}")),
        None => request,
    }
}

fn error_code(answer: &Answer) -> &str {
    assert_eq!(answer.body["type"], "error.list", "{}", answer.body);
    assert!(answer.body["request_id"].is_string(), "{}", answer.body);
    answer.body["errors"][0]["code"].as_str().unwrap()
}

#[tokio::test]
async fn calls_need_a_bearer_token_and_a_known_version() {
    let app = Standin::new(10).router();
    let anonymous = call(&app, get("/me", None), Value::Null).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&anonymous), "unauthorized");
    assert_eq!(
        anonymous.header("x-ratelimit-limit"),
        None,
        "unauthenticated answers carry no rate-limit headers"
    );
    let empty = call(&app, get("/me", Some("")), Value::Null).await;
    assert_eq!(empty.status, StatusCode::UNAUTHORIZED);

    let me = call(&app, get("/me", Some("t")), Value::Null).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["type"], "admin");

    let versioned = call(
        &app,
        get("/me", Some("t")).header("intercom-version", "2.16"),
        Value::Null,
    )
    .await;
    assert_eq!(versioned.status, StatusCode::OK);
    let wrong = call(
        &app,
        get("/me", Some("t")).header("intercom-version", "9.99"),
        Value::Null,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&wrong), "intercom_version_invalid");

    let unknown = call(&app, get("/tickets", Some("t")), Value::Null).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&unknown), "not_found");
}

#[tokio::test]
async fn each_token_has_a_budget_per_ten_second_window() {
    let start = 1_800_000_003;
    let (now, clock) = clock(start);
    let app = Standin::with_clock(2, clock).router();
    let reset = (start / WINDOW_SECS + 1) * WINDOW_SECS;

    for remaining in ["1", "0"] {
        let ok = call(&app, get("/me", Some("a")), Value::Null).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(ok.header("x-ratelimit-remaining"), Some(remaining));
        assert_eq!(
            ok.header("x-ratelimit-reset"),
            Some(reset.to_string().as_str())
        );
    }
    let refused = call(&app, get("/me", Some("a")), Value::Null).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&refused), "rate_limit_exceeded");
    assert_eq!(
        refused.body["errors"][0]["message"],
        "Exceeded rate limit of 2 in 10_seconds"
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        refused.header("x-ratelimit-reset"),
        Some(reset.to_string().as_str())
    );

    // Another token has its own budget.
    let other = call(&app, get("/me", Some("b")), Value::Null).await;
    assert_eq!(other.status, StatusCode::OK);

    // The next window starts afresh.
    now.store(reset, Ordering::SeqCst);
    let next = call(&app, get("/me", Some("a")), Value::Null).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.header("x-ratelimit-remaining"), Some("1"));
}

#[tokio::test]
async fn contacts_come_in_pages_linked_by_starting_after() {
    let app = Standin::new(100).router();
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/contacts?per_page=3".to_owned(),
            Some(after) => format!("/contacts?per_page=3&starting_after={after}"),
        };
        let page = call(&app, get(&path, Some("t")), Value::Null).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        assert_eq!(page.body["type"], "list");
        assert_eq!(page.body["total_count"], 7);
        assert_eq!(page.body["pages"]["page"], pages);
        assert_eq!(page.body["pages"]["total_pages"], 3);
        for contact in page.body["data"].as_array().unwrap() {
            ids.push(contact["id"].as_str().unwrap().to_owned());
        }
        match page.body["pages"]["next"]["starting_after"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 7);
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids, "a contact came twice");

    for bad in [
        "/contacts?per_page=0",
        "/contacts?per_page=151",
        "/contacts?per_page=x",
        "/contacts?starting_after=nope",
    ] {
        let answer = call(&app, get(bad, Some("t")), Value::Null).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&answer), "parameter_invalid", "{bad}");
    }
}

#[tokio::test]
async fn search_filters_with_intercoms_query_language() {
    let app = Standin::new(100).router();
    let search = |query: Value| {
        let app = app.clone();
        async move {
            call(
                &app,
                Request::post("/contacts/search")
                    .header("authorization", "Bearer t")
                    .header("content-type", "application/json"),
                query,
            )
            .await
        }
    };
    let emails = |answer: &Answer| -> Vec<String> {
        answer.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["email"].as_str().unwrap().to_owned())
            .collect()
    };
    let leads = search(json!({"query": {"field": "role", "operator": "=", "value": "lead"}})).await;
    assert_eq!(
        emails(&leads),
        ["edsger@example.com", "katherine@example.com"]
    );
    let nested = search(json!({"query": {"operator": "AND", "value": [
        {"field": "created_at", "operator": ">", "value": "1700000250"},
        {"operator": "OR", "value": [
            {"field": "email", "operator": "^", "value": "g"},
            {"field": "name", "operator": "~", "value": "hamilton"}
        ]}
    ]}}))
    .await;
    assert_eq!(
        emails(&nested),
        ["grace@example.com", "margaret@example.com"]
    );
    let paged = search(json!({
        "query": {"field": "role", "operator": "=", "value": "user"},
        "pagination": {"per_page": 2}
    }))
    .await;
    let after = paged.body["pages"]["next"]["starting_after"]
        .as_str()
        .unwrap();
    let second = search(json!({
        "query": {"field": "role", "operator": "=", "value": "user"},
        "pagination": {"per_page": 2, "starting_after": after}
    }))
    .await;
    assert_eq!(
        emails(&second),
        ["barbara@example.com", "grace@example.com"]
    );

    for (body, code) in [
        (json!({}), "parameter_not_found"),
        (
            json!({"query": {"field": "role", "operator": "LIKE", "value": "x"}}),
            "parameter_invalid",
        ),
        (
            json!({"query": {"operator": "AND", "value": [{"operator": "OR", "value": [
                {"operator": "AND", "value": [{"field": "id", "operator": "=", "value": "1"}]}
            ]}]}}),
            "parameter_invalid",
        ),
    ] {
        let answer = search(body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&answer), code, "{body}");
    }
}

/// The client lists, searches and meets the 429 on the stand-in as on Intercom.
#[tokio::test]
async fn the_intercom_client_reads_the_stand_in() {
    let (_now, clock) = clock(1_800_000_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Standin::with_clock(5, clock).router();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let intercom = IntercomClient::builder(StaticToken::new("standin-token").unwrap())
        .base_url(format!("http://{address}"))
        .map_stack(|stack| {
            stack.map_blueprint(|bp| {
                // The clock is fixed, so a spent window never ends: fail fast instead of
                // waiting for it.
                bp.map_retry(|r| {
                    r.max_attempts = 1;
                    r.deadline = Some(std::time::Duration::from_millis(200));
                })
            })
        })
        .client()
        .unwrap();
    let contacts: Vec<Value> = intercom
        .list("/contacts")
        .per_page(3)
        .items()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(contacts.len(), 7, "three pages of 3, 3 and 1");
    let found: Vec<Value> = intercom
        .search(
            "/contacts/search",
            json!({"field": "email", "operator": "$", "value": "@example.com"}),
        )
        .per_page(5)
        .items()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(found.len(), 7, "two search pages of 5 and 2");
    // Five calls so far (three list pages, two search pages): the budget of 5 is spent,
    // so the sixth is held back by the rate-limit layer (or refused with a 429).
    let held = intercom
        .request(Method::GET, "/me")
        .send::<Value>()
        .await
        .unwrap_err();
    assert!(
        matches!(held, IntercomError::RateLimited { .. }),
        "{held:?}"
    );
    server.abort();
}
