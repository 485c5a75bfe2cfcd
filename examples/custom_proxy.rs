//! Your own proxy: an axum app that forwards `/intercom/{*path}` to Intercom through
//! `IntercomLayer` (token, rate-limit pacing, safe retries, logging), around the default
//! HTTP client.
//!
//! Offline by default: it starts a stand-in for Intercom, serves the proxy on 127.0.0.1,
//! calls itself once and exits. With `INTERCOM_BASE_URL` and `INTERCOM_TOKEN` set it
//! forwards there instead, and with `SERVE=1` it keeps serving.
//!
//! ```text
//! cargo run --example custom_proxy
//! ```

#![allow(clippy::print_stdout)]

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use blueprint::{BlueprintService, HttpsClient, StackBody, default_client};
use blueprint_auth::StaticToken;
use blueprint_core::BoxError;
use http_body_util::BodyExt;
use intercom_blueprint::IntercomLayer;
use serde_json::json;
use tower::{Layer, ServiceExt};

type Intercom = BlueprintService<HttpsClient<StackBody<Body>>>;

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
    let intercom: Intercom = IntercomLayer::builder(StaticToken::new(token)?)
        .base_url(base_url)
        .layer()?
        .layer(default_client::<StackBody<Body>>()?);

    let app = axum::Router::new()
        .route("/intercom/{*path}", any(forward))
        .with_state(intercom);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("proxy listening on http://{addr}/intercom/");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    if std::env::var_os("SERVE").is_some() {
        server.await??;
        return Ok(());
    }
    let client = default_client::<http_body_util::Empty<bytes::Bytes>>()?;
    let response = client
        .get(format!("http://{addr}/intercom/me").parse()?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "GET /intercom/me -> {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// Forwards the request, path and query relative to Intercom's base URL; the stack adds
/// the token and Intercom's headers. The caller's own credentials are not passed on.
async fn forward(
    axum::extract::State(intercom): axum::extract::State<Intercom>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let Ok(uri) = format!("/{path}{query}").parse() else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    parts.uri = uri;
    parts.headers.remove(http::header::HOST);
    parts.headers.remove(http::header::AUTHORIZATION);
    parts.headers.remove(http::header::COOKIE);
    match intercom.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(Body::new).into_response(),
        Err(error) if error.is_rate_limited() => {
            (StatusCode::TOO_MANY_REQUESTS, error.to_string()).into_response()
        }
        Err(error) if error.is_timeout() => {
            (StatusCode::GATEWAY_TIMEOUT, error.to_string()).into_response()
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// A stand-in for Intercom that answers `GET /me`.
async fn start_fake_intercom() -> Result<String, BoxError> {
    let app = axum::Router::new().route(
        "/me",
        get(|| async { axum::Json(json!({"type": "admin", "id": "991267", "name": "Ada"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}
