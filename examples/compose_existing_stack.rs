//! Every Blueprint layer, one by one, in an ordinary `tower::ServiceBuilder`, next to
//! tower-http and tower layers, around a hyper-util client — for teams that compose their
//! own stack rather than take the engine's `StackBuilder`.
//!
//! The example starts its own server on loopback, so it runs offline:
//!
//! ```text
//! cargo run --example compose_existing_stack
//! ```

#![allow(clippy::print_stdout)]

use std::convert::Infallible;

use std::sync::Arc;
use std::time::Duration;

use blueprint_auth::{AuthLayer, StaticToken};
use blueprint_core::{BoxError, ConnectionId, Origin, ReplayBody};
use blueprint_ratelimit::RateLimitLayer;
use blueprint_refresh::RefreshLayer;
use blueprint_retry::{AttemptTimeoutLayer, RetryLayer};
use blueprint_trace::TraceLayer;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::limit::ConcurrencyLimitLayer;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,blueprint_trace=debug".into()),
        )
        .init();

    let base = start_server().await?;

    // One token source shared by the refresh and auth layers.
    let tokens = Arc::new(StaticToken::new("example-token")?);
    let stack = ServiceBuilder::new()
        // Ours: one span and one event per call, secrets redacted.
        .layer(TraceLayer::new().show_query_params(["per_page"]))
        // Ours: retries that never duplicate a POST, with a budget and a 10 s deadline.
        .layer(
            RetryLayer::builder()
                .deadline(Duration::from_secs(10))
                .build()?,
        )
        // tower: at most 8 calls in flight.
        .layer(ConcurrencyLimitLayer::new(8))
        // Ours: paces requests by the server's X-RateLimit-* headers.
        .layer(RateLimitLayer::intercom().origin_url(&base)?)
        // Ours: on a 401, refresh the token once and replay, from the copy of the body
        // the retry layer above already keeps (so the client sees one `ReplayBody`).
        .layer(RefreshLayer::from_arc(Arc::clone(&tokens)).replay_by_retry())
        // Ours: the bearer token, only ever for `base`.
        .layer(AuthLayer::for_origin(
            Origin::parse(&base)?,
            Arc::clone(&tokens),
        ))
        // Ours: bounds each network attempt.
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(5)))
        // tower-http: headers every call carries.
        .layer(SetRequestHeaderLayer::if_not_present(
            USER_AGENT,
            HeaderValue::from_static("blueprint-example/0.1"),
        ))
        .layer(SetRequestHeaderLayer::overriding(
            ACCEPT,
            HeaderValue::from_static("application/json"),
        ))
        .service(Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>());

    let mut request = Request::get(format!("{base}/contacts?per_page=2")).body(Full::default())?;
    request.extensions_mut().insert(ConnectionId::new("acme"));
    let response = stack.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "GET /contacts -> {status}: {}",
        String::from_utf8_lossy(&body)
    );

    // The token is never sent anywhere else.
    let foreign = Request::get("http://example.com/").body(Full::default())?;
    match stack.oneshot(foreign).await {
        Ok(response) => println!("unexpected: example.com answered {}", response.status()),
        Err(error) => println!("GET http://example.com/ -> refused: {error}"),
    }
    Ok(())
}

/// A stand-in API on 127.0.0.1 that says whether it was sent a bearer token.
async fn start_server() -> Result<String, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let authorized = req
                        .headers()
                        .get(AUTHORIZATION)
                        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
                    let body = format!(
                        r#"{{"type":"list","authorized":{authorized},"user_agent":{:?}}}"#,
                        req.headers()
                            .get(USER_AGENT)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}
