//! The auth-injection and logging layers together, in front of a real hyper client talking
//! to a wiremock server on loopback.

mod capture;

use capture::Captured;

use blueprint_auth::{AuthLayer, StaticToken};
use blueprint_core::{BoxError, ConnectionId};
use blueprint_trace::TraceLayer;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::fmt::format::FmtSpan;
use wiremock::matchers::{header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "tok_RECOGNISABLE_5f1c2e";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("x-request-note", "visible")
        .body(Full::default())
        .unwrap_or_else(|e| panic!("{uri}: {e}"))
}

async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    drop(listener);
    port
}

#[tokio::test]
async fn the_token_never_reaches_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    // The upstream echoes the token back in headers, as a careless server might.
    let echo = |status: u16| {
        ResponseTemplate::new(status)
            .insert_header("set-cookie", format!("session={TOKEN}").as_str())
            .insert_header("x-echo", "plain")
    };
    Mock::given(method("GET"))
        .and(path("/ok"))
        .and(header_exists("authorization"))
        .respond_with(echo(200))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/unauthorized"))
        .respond_with(echo(401))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/boom"))
        .respond_with(echo(500))
        .mount(&server)
        .await;

    let trace = TraceLayer::new()
        .span_level(tracing::Level::TRACE)
        .success_level(tracing::Level::TRACE)
        .log_request_headers()
        .log_response_headers()
        .show_query_params(["page"]);
    // A trace layer on both sides of the auth layer: the inner one sees the request with
    // the token's header on it.
    let stack = |origin: &str| {
        ServiceBuilder::new()
            .layer(trace.clone())
            .layer(
                AuthLayer::new(
                    origin,
                    StaticToken::new(TOKEN).unwrap_or_else(|e| panic!("{e}")),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            )
            .layer(trace.clone())
            .service(client())
    };
    let svc = stack(&server.uri());
    let base = server.uri();

    let mut statuses = Vec::new();
    for p in ["/ok", "/unauthorized", "/boom"] {
        // The caller also puts the token in the query: it must be redacted there too.
        let uri = format!("{base}{p}?page=2&access_token={TOKEN}");
        let res = svc
            .clone()
            .oneshot(get(&uri))
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        statuses.push(res.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::UNAUTHORIZED,
            StatusCode::INTERNAL_SERVER_ERROR
        ]
    );

    // A transport error, with the token attached to the request that failed.
    let dead = format!("http://127.0.0.1:{}", closed_port().await);
    let err = stack(&dead).oneshot(get(&format!("{dead}/ok"))).await.err();
    assert!(err.is_some(), "a request to a closed port succeeded");

    let logs = captured.text();
    assert!(!logs.contains(TOKEN), "the token reached the logs:\n{logs}");
    // The logs did capture the calls, so the check above looked at something.
    for expected in [
        "http.response.status_code=200",
        "http.response.status_code=401",
        "http.response.status_code=500",
        "request failed",
        "authorization: [redacted]",
        "set-cookie: [redacted]",
        "x-request-note: visible",
        "x-echo: plain",
        "page=2&access_token=[redacted]",
        "url.template=\"/unauthorized\"",
    ] {
        assert!(
            logs.contains(expected),
            "`{expected}` missing from the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn a_foreign_origin_never_gets_the_token() {
    let foreign = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&foreign)
        .await;
    let token = || StaticToken::new(TOKEN).unwrap_or_else(|e| panic!("{e}"));
    let uri = format!("{}/me", foreign.uri());

    // Default: refused, nothing sent.
    let refuse =
        AuthLayer::new("https://api.intercom.io", token()).unwrap_or_else(|e| panic!("{e}"));
    let err = ServiceBuilder::new()
        .layer(refuse)
        .service(client())
        .oneshot(get(&uri))
        .await
        .err();
    assert!(err.is_some_and(|e| e.is::<blueprint_auth::ForeignOriginError>()));
    assert_eq!(foreign.received_requests().await.map(|r| r.len()), Some(0));

    // Pass-through: sent, without credentials.
    let pass = AuthLayer::new("https://api.intercom.io", token())
        .unwrap_or_else(|e| panic!("{e}"))
        .send_foreign_without_credentials();
    let res = ServiceBuilder::new()
        .layer(pass)
        .service(client())
        .oneshot(get(&uri))
        .await;
    assert_eq!(res.map(|r| r.status()).ok(), Some(StatusCode::OK));
    let received = foreign.received_requests().await.unwrap_or_default();
    assert_eq!(received.len(), 1);
    assert!(
        !received[0].headers.contains_key("authorization"),
        "the foreign origin saw an Authorization header"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_through_clones_of_one_stack() -> Result<(), BoxError> {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .and(wiremock::matchers::header(
            "authorization",
            format!("Bearer {TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(AuthLayer::new(&server.uri(), StaticToken::new(TOKEN)?)?)
        .service(client());

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let svc = svc.clone();
        let mut req = get(&format!("{}/contacts", server.uri()));
        req.extensions_mut()
            .insert(ConnectionId::new(format!("c{}", i % 7)));
        tasks.spawn(async move { svc.oneshot(req).await.map(|r| r.status()) });
    }
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        assert_eq!(joined??, StatusCode::OK);
        ok += 1;
    }
    assert_eq!(ok, 1000);
    assert_eq!(
        server.received_requests().await.map(|r| r.len()),
        Some(1000)
    );
    Ok(())
}
