//! The prebuilt Intercom client: list contacts page by page, then create one.
//!
//! Offline by default: the example starts a small stand-in for Intercom on 127.0.0.1.
//! Against a real workspace (or your own mock), set both variables:
//!
//! ```text
//! cargo run --example intercom_client
//! INTERCOM_BASE_URL=https://api.intercom.io INTERCOM_TOKEN=dG9r... cargo run --example intercom_client
//! ```

#![allow(clippy::print_stdout)]

use axum::Json;
use axum::extract::Query;
use axum::routing::get;
use blueprint_core::BoxError;
use futures_util::StreamExt;
use intercom_blueprint::IntercomClient;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,blueprint_trace=info".into()),
        )
        .init();

    let (base_url, token) = match std::env::var("INTERCOM_BASE_URL") {
        Ok(url) => (url, std::env::var("INTERCOM_TOKEN")?),
        Err(_) => (start_fake_intercom().await?, "fake-token".to_owned()),
    };
    let intercom = IntercomClient::builder(blueprint_auth::StaticToken::new(token)?)
        .base_url(base_url)
        .client()?;

    // Every contact, 2 per page: the stream follows `pages.next.starting_after`.
    let mut contacts = intercom.list("/contacts").per_page(2).items::<Value>();
    while let Some(contact) = contacts.next().await {
        let contact = contact?;
        println!("contact {} <{}>", contact["id"], contact["email"]);
    }

    let created: Value = intercom
        .post(
            "/contacts",
            &json!({"role": "user", "email": "grace@example.com"}),
        )
        .await?;
    println!("created contact {}", created["id"]);
    Ok(())
}

/// A stand-in for Intercom: three contacts over two pages, and contact creation.
async fn start_fake_intercom() -> Result<String, BoxError> {
    async fn list(Query(q): Query<std::collections::HashMap<String, String>>) -> Json<Value> {
        let contact = |id: &str, email: &str| json!({"type": "contact", "id": id, "email": email});
        Json(match q.get("starting_after").map(String::as_str) {
            None => json!({
                "type": "list",
                "data": [contact("1", "ada@example.com"), contact("2", "alan@example.com")],
                "pages": {"type": "pages", "page": 1, "per_page": 2, "total_pages": 2,
                          "next": {"page": 2, "starting_after": "WzE3MDAwMDAwMDAsMl0="}}
            }),
            Some(_) => json!({
                "type": "list",
                "data": [contact("3", "edsger@example.com")],
                "pages": {"type": "pages", "page": 2, "per_page": 2, "total_pages": 2}
            }),
        })
    }
    async fn create(Json(body): Json<Value>) -> Json<Value> {
        Json(json!({"type": "contact", "id": "4", "email": body["email"], "role": body["role"]}))
    }
    let app = axum::Router::new().route("/contacts", get(list).post(create));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}
