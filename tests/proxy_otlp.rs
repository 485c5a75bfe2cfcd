//! `--otlp-endpoint`: the real binary exports the trace of each proxied call to an
//! OTLP/HTTP collector (here a small axum app on loopback that keeps what it receives),
//! with the OpenTelemetry HTTP client attributes and no secret anywhere in the payload,
//! and sends what is queued when it shuts down.

mod proxy_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Request, State};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt as _;
use proxy_support::{CLIENT_SECRET, FAST_RETRY, KEY, Process, TempDir, raw_upstream, yaml};
use serde_json::{Value, json};

const TOKEN: &str = "tok_OTLP_SECRET_71c2";
const QUERY_SECRET: &str = "QUERY_SECRET_5e1";
const RAW_ID: &str = "6657a3c0b2b0e4d9";

/// One request the collector received.
#[derive(Debug, Clone)]
struct Export {
    path: String,
    content_type: String,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Export>>>);

impl Collector {
    fn exports(&self) -> Vec<Export> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// An OTLP/HTTP collector that keeps every request and answers as a collector does.
async fn collector() -> (SocketAddr, Collector) {
    let collector = Collector::default();
    let app = Router::new()
        .fallback(
            |State(kept): State<Collector>, request: Request| async move {
                let path = request.uri().path().to_owned();
                let content_type = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map(http_body_util::Collected::to_bytes)
                    .unwrap_or_default();
                kept.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Export {
                        path,
                        content_type,
                        body,
                    });
                ([(http::header::CONTENT_TYPE, "application/json")], "{}")
            },
        )
        .with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, collector)
}

/// The value of an OTLP JSON attribute, as text (ints may be strings or numbers).
fn attribute(attributes: &Value, key: &str) -> Option<String> {
    let value = &attributes.as_array()?.iter().find(|a| a["key"] == key)?["value"];
    if let Some(text) = value["stringValue"].as_str() {
        return Some(text.to_owned());
    }
    match &value["intValue"] {
        Value::String(n) => Some(n.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Every span of every export.
fn spans(exports: &[Export]) -> Vec<Value> {
    let mut spans = Vec::new();
    for export in exports {
        let json: Value = serde_json::from_slice(&export.body).unwrap_or_else(|e| {
            panic!(
                "the export is not JSON ({e}): {}",
                String::from_utf8_lossy(&export.body)
            )
        });
        for resource in json["resourceSpans"].as_array().into_iter().flatten() {
            assert_eq!(
                attribute(&resource["resource"]["attributes"], "service.name").as_deref(),
                Some("blueprint-proxy"),
                "{resource}"
            );
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    spans
}

async fn start(
    dir: &TempDir,
    upstream: SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let config = dir.path("integrations.yaml");
    std::fs::write(&config, yaml(&format!("http://{upstream}"), FAST_RETRY, ""))
        .unwrap_or_else(|e| panic!("config: {e}"));
    let store = format!("sqlite://{}", dir.path("store.db").display());
    let proxy = Process::start_full(&config, &store, "127.0.0.1:0", env, args, None).await;
    let reply = proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    assert!(reply.status < 300, "{}", reply.text());
    proxy
}

async fn call_and_stop(proxy: &mut Process) {
    let reply = proxy
        .send(proxy.proxy(
            Method::GET,
            &format!("/contacts/{RAW_ID}?email=jane%40example.com&api_key={QUERY_SECRET}"),
            "intercom",
            "acme",
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The batch would be sent 5 s from now: stopping must send it at once.
    proxy.terminate();
    let status = proxy.wait().await;
    assert!(status.success(), "{status}; logs:\n{}", proxy.logs());
}

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";

#[tokio::test]
async fn each_proxied_call_is_exported_as_a_client_span_without_secrets() {
    let (collector_addr, collector) = collector().await;
    let upstream = raw_upstream(ANSWER).await;
    let dir = TempDir::new("otlp");
    let endpoint = format!("http://{collector_addr}");
    let mut proxy = start(&dir, upstream, &["--otlp-endpoint", &endpoint], &[]).await;
    call_and_stop(&mut proxy).await;

    let exports = collector.exports();
    assert!(
        !exports.is_empty(),
        "nothing reached the collector before the proxy exited; logs:\n{}",
        proxy.logs()
    );
    for export in &exports {
        assert_eq!(export.path, "/v1/traces");
        assert_eq!(export.content_type, "application/json");
        let text = String::from_utf8_lossy(&export.body);
        for secret in [TOKEN, KEY, CLIENT_SECRET, QUERY_SECRET, "jane", RAW_ID] {
            assert!(!text.contains(secret), "{secret} is in the export: {text}");
        }
    }
    let spans = spans(&exports);
    let calls: Vec<&Value> = spans
        .iter()
        .filter(|s| attribute(&s["attributes"], "http.request.method").is_some())
        .collect();
    assert_eq!(calls.len(), 1, "one span per proxied call: {spans:#?}");
    let span = calls[0];
    let attrs = &span["attributes"];
    assert_eq!(span["name"], "GET /contacts/{id}", "{span}");
    assert!(
        span["kind"] == 3 || span["kind"] == "SPAN_KIND_CLIENT",
        "a client span: {span}"
    );
    for (key, value) in [
        ("http.request.method", "GET".to_owned()),
        ("server.address", "127.0.0.1".to_owned()),
        ("server.port", upstream.port().to_string()),
        ("url.template", "/contacts/{id}".to_owned()),
        ("http.response.status_code", "200".to_owned()),
        ("blueprint.connection_id", "acme".to_owned()),
    ] {
        assert_eq!(
            attribute(attrs, key).as_deref(),
            Some(value.as_str()),
            "{key} of {span}"
        );
    }
    assert_eq!(attribute(attrs, "url.query"), None, "{span}");
    assert_eq!(attribute(attrs, "url.path"), None, "{span}");
}

#[tokio::test]
async fn the_standard_environment_variable_names_the_collector_too() {
    let (collector_addr, collector) = collector().await;
    let upstream = raw_upstream(ANSWER).await;
    let dir = TempDir::new("otlp-env");
    let endpoint = format!("http://{collector_addr}/");
    let mut proxy = start(
        &dir,
        upstream,
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await;
    call_and_stop(&mut proxy).await;
    let exports = collector.exports();
    assert!(
        exports.iter().any(|e| e.path == "/v1/traces"),
        "{exports:?}; logs:\n{}",
        proxy.logs()
    );
    assert_eq!(spans(&exports).len(), 1, "{exports:?}");
}
