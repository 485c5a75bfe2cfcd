//! Metrics and logs of the proxy's router, in this process: alone in its test binary,
//! because it installs a `tracing` subscriber and counts events, which tests running on
//! other threads would disturb.

mod capture;
mod proxy_support;

use capture::Captured;

use http::Method;
use proxy_support::{CLIENT_SECRET, FAST_RETRY, InProcess, KEY, yaml};
use serde_json::json;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "tok_IMPORTED_4b1d";
const OAUTH_TOKEN: &str = "tok_FROM_OAUTH_9e7a";
const REFRESH: &str = "rt_REFRESH_55c3";

/// Logs of this thread up to `level`, kept while the guard lives.
fn capture(
    level: tracing_subscriber::filter::LevelFilter,
) -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_filter(level),
    );
    (logs, tracing::subscriber::set_default(subscriber))
}

/// The proxy's access lines in `text`.
fn access_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("blueprint_proxy::access"))
        .collect()
}

// One thread (the default test runtime): the subscriber set for this thread sees every task.
#[tokio::test]
async fn metrics_count_calls_retries_and_refreshes_and_logs_hold_no_secret() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/eagle/token"))
        .and(body_string_contains(
            format!("refresh_token={REFRESH}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "access_token": OAUTH_TOKEN, "expires_in": 3600
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header(
            "authorization",
            format!("Bearer {OAUTH_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_string("me"))
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    let (logs, _guard) = capture(tracing_subscriber::filter::LevelFilter::DEBUG);

    proxy
        .import(
            "intercom",
            "acme",
            json!({ "access_token": TOKEN, "refresh_token": REFRESH, "expires_at": "2001-01-01T00:00:00Z" }),
        )
        .await;
    // The token is refreshed, the first attempt gets a 503, the retry a 200.
    let me = proxy
        .send(proxy.proxy(Method::GET, "/me?email=ada@example.com", "intercom", "acme"))
        .await;
    assert_eq!((me.status, me.text().as_str()), (200, "me"));
    let missing = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "nobody"))
        .await;
    assert_eq!(missing.status, 404);
    let unauthorized = proxy.send(http::Request::get(proxy.url("/proxy/me"))).await;
    assert_eq!(unauthorized.status, 401);

    let metrics = proxy.metrics().await;
    for line in [
        "blueprint_proxy_requests_total{integration=\"intercom\",status=\"200\"} 1\n",
        "blueprint_proxy_requests_total{integration=\"intercom\",status=\"404\"} 1\n",
        "blueprint_proxy_errors_total{code=\"unknown_connection\"} 1\n",
        "blueprint_proxy_errors_total{code=\"unauthorized\"} 1\n",
        "http_client_request_duration_seconds_count{integration=\"intercom\",http_request_method=\"GET\"} 2\n",
        "http_client_request_duration_seconds_bucket{le=\"+Inf\",integration=\"intercom\",http_request_method=\"GET\"} 2\n",
        "blueprint_retries_total{integration=\"intercom\",reason=\"server_error\"} 1\n",
        "blueprint_token_refreshes_total{integration=\"intercom\",outcome=\"refreshed\"} 1\n",
        "blueprint_token_refreshes_total{integration=\"intercom\",outcome=\"failed\"} 0\n",
        "blueprint_proxy_in_flight 0\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }

    let text = logs.text();
    let access = access_lines(&text);
    assert_eq!(access.len(), 2, "one line per proxied call:\n{text}");
    for want in [
        "integration=\"intercom\"",
        "connection=\"acme\"",
        "method=GET",
        "path=\"/me\"",
        "status=200",
        "attempts=2",
        "duration_ms=",
    ] {
        assert!(access[0].contains(want), "{want} missing in {}", access[0]);
    }
    assert!(access[1].contains("unknown_connection"), "{}", access[1]);
    for secret in [
        KEY,
        TOKEN,
        OAUTH_TOKEN,
        REFRESH,
        CLIENT_SECRET,
        "ada@example.com",
    ] {
        assert!(!text.contains(secret), "the logs hold {secret:?}:\n{text}");
    }
    proxy.stop().await;
}

/// The metrics come from the layers' typed events, not from their log lines: with every
/// log event filtered out before it is even made, retries, pacing waits and refreshes are
/// still counted.
#[tokio::test]
async fn metrics_count_from_the_layers_hook_with_logging_off() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/eagle/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "access_token": OAUTH_TOKEN, "expires_in": 3600
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    // A 503 first (a retry), then answers that spend the budget until a reset at least a
    // second away (the following call is held: a pacing wait). A reset at the next second
    // could pass, on a loaded machine, before the second call is made, and nothing would
    // be held.
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 2)
        .unwrap_or_default();
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-ratelimit-limit", "10")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .set_body_string("me"),
        )
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    let off = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::filter::LevelFilter::OFF),
    );
    let _guard = tracing::subscriber::set_default(off);

    proxy
        .import(
            "intercom",
            "acme",
            json!({ "access_token": TOKEN, "refresh_token": REFRESH, "expires_at": "2001-01-01T00:00:00Z" }),
        )
        .await;
    for _ in 0..2 {
        let me = proxy
            .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
            .await;
        assert_eq!(me.status, 200, "{}", me.text());
    }
    let metrics = proxy.metrics().await;
    for line in [
        "blueprint_retries_total{integration=\"intercom\",reason=\"server_error\"} 1\n",
        "blueprint_rate_limit_waits_total{integration=\"intercom\",kind=\"pacing\"} 1\n",
        "blueprint_token_refreshes_total{integration=\"intercom\",outcome=\"refreshed\"} 1\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    proxy.stop().await;
}

/// A call that fails in the stack has no response to carry its attempt count: the access
/// line still says how many attempts were made, and `0` only when none was.
#[tokio::test]
async fn the_access_line_of_a_failed_call_counts_its_attempts() {
    // A port nothing listens on: every attempt is refused at connect, and a GET is retried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = InProcess::start(&yaml(&upstream, FAST_RETRY, "")).await;
    let (logs, _guard) = capture(tracing_subscriber::filter::LevelFilter::INFO);
    proxy
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;

    let refused = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(refused.status, 502, "{}", refused.text());
    let missing = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "nobody"))
        .await;
    assert_eq!(missing.status, 404);

    let text = logs.text();
    let access = access_lines(&text);
    assert_eq!(access.len(), 2, "one line per proxied call:\n{text}");
    // FAST_RETRY allows two attempts; both were made.
    assert!(access[0].contains("status=502"), "{}", access[0]);
    assert!(access[0].contains("attempts=2"), "{}", access[0]);
    // No token, nothing sent.
    assert!(access[1].contains("status=404"), "{}", access[1]);
    assert!(access[1].contains("attempts=0"), "{}", access[1]);
    proxy.stop().await;
}
