//! Contract tests: `IntercomClient` against a Prism mock generated from Intercom's own
//! OpenAPI description (version 2.16, vendored in `crates/intercom-blueprint/openapi/`).
//!
//! Prism checks every request against the description (path, method, headers, query,
//! body, security) and answers 422/400/401/406 with a problem+json body when the
//! request is one the description rejects; the client reports those as
//! [`IntercomError`], so each test fails with Prism's reasons in its message.
//!
//! They are `#[ignore]`d because they need the mock: `bash .ci/prism.sh` installs and
//! starts it, then runs them with `PRISM_URL` set. Requests that must page use
//! `Prefer: dynamic=true`, so Prism generates the page from the schema with the seed the
//! script pins, which gives a `pages.next.starting_after` cursor: the request for the
//! second page is checked too.

use std::future::Future;
use std::time::Duration;

use blueprint_auth::StaticToken;
use futures_util::StreamExt;
use http::{Method, StatusCode};
use intercom_blueprint::{IntercomClient, IntercomError};
use serde_json::{Map, Value, json};

/// Each call against the local mock is answered in milliseconds; this only keeps a stuck
/// mock from hanging CI.
const LIMIT: Duration = Duration::from_secs(60);

fn prism_url() -> String {
    match std::env::var("PRISM_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "PRISM_URL is not set: these tests need a Prism mock of Intercom's OpenAPI \
             description; run them with `bash .ci/prism.sh`"
        ),
    }
}

fn token() -> StaticToken {
    StaticToken::new("contract-test-token").unwrap_or_else(|e| panic!("token: {e}"))
}

/// A client that reads Prism's static answers (the description's own examples).
fn client() -> IntercomClient {
    IntercomClient::builder(token())
        .base_url(prism_url())
        .client()
        .unwrap_or_else(|e| panic!("client for {}: {e}", prism_url()))
}

/// A client whose answers Prism generates from the schema (seeded by the script), so that
/// list and search pages carry a `pages.next` cursor.
fn generating_client() -> IntercomClient {
    IntercomClient::builder(token())
        .base_url(prism_url())
        .map_stack(|stack| {
            stack.map_blueprint(|blueprint| {
                blueprint
                    .default_header("prefer", "dynamic=true")
                    .unwrap_or_else(|e| panic!("Prefer header: {e}"))
            })
        })
        .client()
        .unwrap_or_else(|e| panic!("client for {}: {e}", prism_url()))
}

/// The error with Prism's reasons: for a rejected request, Prism's problem+json body
/// names the failing header, parameter or body field.
fn explain(error: &IntercomError) -> String {
    match error.api() {
        Some(api) => format!(
            "{error}\n  Prism rejected the request; its answer: {}",
            api.body.as_deref().unwrap_or("(no body)")
        ),
        None => format!("{error} (no answer from Prism at {})", prism_url()),
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer from Prism within {LIMIT:?}"))
}

fn accepted<T>(what: &str, result: Result<T, IntercomError>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {}", explain(&e)))
}

/// Collects up to three pages (a mock's `pages.next` need not end) and checks each was
/// accepted and holds an array of objects under `key`.
async fn first_pages(
    what: &str,
    pages: impl futures_util::Stream<Item = Result<Value, IntercomError>>,
    key: &str,
) -> Vec<Value> {
    let pages: Vec<_> = within(what, pages.take(3).collect::<Vec<_>>()).await;
    let pages: Vec<Value> = pages
        .into_iter()
        .enumerate()
        .map(|(i, page)| accepted(&format!("{what}, page {}", i + 1), page))
        .collect();
    for (i, page) in pages.iter().enumerate() {
        let items = page
            .get(key)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{what}, page {}: no `{key}` array in {page}", i + 1));
        for item in items {
            assert!(
                item.is_object(),
                "{what}, page {}: item {item} is not an object",
                i + 1
            );
        }
    }
    assert!(
        pages.len() >= 2,
        "{what}: only {} page(s); the first page had no `pages.next.starting_after`, so the \
         request for the next page went unchecked (.ci/prism.sh pins Prism and its seed so \
         that it has one): {:?}",
        pages.len(),
        pages.first().and_then(|p| p.get("pages"))
    );
    pages
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn get_me_is_accepted() {
    let me: Value = accepted("GET /me", within("GET /me", client().get("/me")).await);
    assert_eq!(me["type"], "admin", "GET /me answered {me}");
    assert!(me["id"].is_string(), "GET /me answered {me}");
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn listing_contacts_pages_through_accepted_requests() {
    let client = generating_client();
    let pages = client.list("/contacts").per_page(2).pages();
    first_pages("GET /contacts", pages, "data").await;

    // The same listing as parsed items: each page's items come through the stream.
    let items: Vec<_> = within(
        "GET /contacts items",
        client
            .list("/contacts")
            .per_page(2)
            .items::<Map<String, Value>>()
            .take(20)
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(!items.is_empty(), "GET /contacts gave no items");
    for item in items {
        accepted("GET /contacts item", item);
    }
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn listing_conversations_keeps_per_page_and_cursor_within_the_spec() {
    // `GET /conversations` declares `per_page` (at most 150) and `starting_after`, so
    // Prism checks both query parameters; 500 must be clamped to what the spec allows.
    let pages = generating_client()
        .list("/conversations")
        .per_page(500)
        .pages();
    first_pages("GET /conversations", pages, "conversations").await;
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn searching_contacts_sends_bodies_the_spec_accepts() {
    // A nested query; the client adds `pagination` (with `starting_after` from page 2).
    let query = json!({
        "operator": "AND",
        "value": [
            { "field": "created_at", "operator": ">", "value": "1306054154" },
            {
                "operator": "OR",
                "value": [
                    { "field": "email", "operator": "~", "value": "example.com" },
                    { "field": "role", "operator": "=", "value": "user" }
                ]
            }
        ]
    });
    let pages = generating_client()
        .search("/contacts/search", query)
        .per_page(5)
        .pages();
    first_pages("POST /contacts/search", pages, "data").await;

    // A one-filter query against the static answer (the description's example).
    let results: Vec<_> = within(
        "POST /contacts/search (static)",
        client()
            .search(
                "/contacts/search",
                json!({ "field": "email", "operator": "=", "value": "ada@example.com" }),
            )
            .items::<Map<String, Value>>()
            .take(20)
            .collect::<Vec<_>>(),
    )
    .await;
    for result in results {
        accepted("POST /contacts/search (static) item", result);
    }
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn creating_a_contact_is_accepted() {
    let body = json!({ "role": "user", "email": "ada@example.com", "name": "Ada Lovelace" });
    let contact: Value = accepted(
        "POST /contacts",
        within("POST /contacts", client().post("/contacts", &body)).await,
    );
    assert_eq!(
        contact["type"], "contact",
        "POST /contacts answered {contact}"
    );
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn getting_a_contact_by_an_id_put_in_with_path_is_accepted() {
    // `GET /contacts/{contact_id}`, with 2.16's `include_merge_history` query parameter
    // (a boolean Prism checks). An id holding a space, `?` and `#` is still one segment.
    for id in ["6657add46abd0167d9419cd2", "crm 42?x#y"] {
        let target = intercom_blueprint::path!("/contacts/{}", id)
            .unwrap_or_else(|e| panic!("path for {id:?}: {e}"));
        let call = client()
            .request(Method::GET, &target)
            .query(&[("include_merge_history", "true")])
            .send::<Value>();
        let contact = accepted(
            &format!("GET {target}"),
            within("GET /contacts/{contact_id}", call).await,
        );
        assert_eq!(
            contact["type"], "contact",
            "GET {target} answered {contact}"
        );
    }
}

/// The negative tests: requests the description rejects must come back as errors, or the
/// mock is not checking and the tests above prove nothing.
fn rejected(what: &str, result: Result<Value, IntercomError>, names: &str) {
    let error = match result {
        Ok(answer) => panic!(
            "{what}: the mock accepted a request the spec rejects (answered {answer}); \
             is Prism validating requests?"
        ),
        Err(error) => error,
    };
    assert_eq!(
        error.status(),
        Some(StatusCode::UNPROCESSABLE_ENTITY),
        "{what}: {}",
        explain(&error)
    );
    let body = error
        .api()
        .and_then(|api| api.body.as_deref())
        .unwrap_or("");
    assert!(
        body.contains(names),
        "{what}: Prism's answer does not name `{names}`: {}",
        explain(&error)
    );
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn an_unknown_intercom_version_is_rejected() {
    let call = client().request(Method::GET, "/me").version("9.99").send();
    rejected(
        "GET /me with version 9.99",
        within("GET /me", call).await,
        "intercom-version",
    );
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn an_invalid_contact_body_is_rejected() {
    let client = client();
    let body = json!({ "role": 42, "email": ["not", "a", "string"] });
    let call = client.post("/contacts", &body);
    rejected(
        "POST /contacts with a bad body",
        within("POST /contacts", call).await,
        "role",
    );
}

#[tokio::test]
#[ignore = "needs a Prism mock of Intercom's OpenAPI; run by .ci/prism.sh"]
async fn a_per_page_over_the_spec_maximum_is_rejected() {
    // Sent raw: the client's own listing clamps `per_page` to 150.
    let call = client()
        .request(Method::GET, "/conversations")
        .query(&[("per_page", "151")])
        .send();
    rejected(
        "GET /conversations?per_page=151",
        within("GET /conversations", call).await,
        "per_page",
    );
}
