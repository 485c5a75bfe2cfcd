//! Text from the provider (an `error` code that echoes the client secret, an
//! `error_description` with markup) never reaches the callback page, a connection's
//! `last_error` or the logs above DEBUG; the DEBUG line that keeps it is redacted. Alone in
//! its test binary: it installs a `tracing` subscriber.

mod capture;
mod proxy_support;

use capture::Captured;
use http::Method;
use proxy_support::{CLIENT_SECRET, FAST_RETRY, InProcess, connect_session, state_of, yaml};
use serde_json::json;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REFRESH: &str = "rt_REFRESH_echo_5d1";
const MARKUP: &str = "<script>alert(1)</script>";

// One thread (the default test runtime): the subscriber set for this thread sees every task.
#[tokio::test]
async fn provider_text_is_shown_only_as_a_standard_code() {
    let upstream = MockServer::start().await;
    // The token endpoint echoes the client secret as its error code, for a code exchange
    // and for a refresh alike.
    Mock::given(method("POST"))
        .and(path("/auth/eagle/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": CLIENT_SECRET,
            "error_description": format!("{MARKUP} you sent {CLIENT_SECRET}")
        })))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/auth/eagle/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": CLIENT_SECRET,
            "error_description": format!("you sent {REFRESH}")
        })))
        .mount(&upstream)
        .await;
    let proxy = InProcess::start(&yaml(&upstream.uri(), FAST_RETRY, "")).await;
    let logs = Captured::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    // 1. The code exchange is refused with the echoed secret.
    let (_, url) = connect_session(&proxy, "intercom", "acme").await;
    let visit = proxy.send(http::Request::get(url)).await;
    let state = state_of(visit.header("location").expect("a redirect"));
    let page = proxy
        .send(http::Request::get(
            proxy.url(&format!("/oauth/callback?code=c0de&state={state}")),
        ))
        .await;
    assert_eq!(page.status, 502, "{}", page.text());
    assert!(page.text().contains("`other`"), "{}", page.text());

    // 2. The provider sends the person back with its own text.
    let (_, url) = connect_session(&proxy, "intercom", "beta").await;
    let visit = proxy.send(http::Request::get(url)).await;
    let state = state_of(visit.header("location").expect("a redirect"));
    let refused = proxy
        .send(http::Request::get(proxy.url(&format!(
            "/oauth/callback?state={state}&error={CLIENT_SECRET}&error_description=%3Cscript%3Ealert(1)%3C/script%3E"
        ))))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("`other`"), "{}", refused.text());
    // A standard code is still shown as it is.
    let (_, url) = connect_session(&proxy, "intercom", "gamma").await;
    let visit = proxy.send(http::Request::get(url)).await;
    let state = state_of(visit.header("location").expect("a redirect"));
    let denied = proxy
        .send(http::Request::get(proxy.url(&format!(
            "/oauth/callback?state={state}&error=access_denied&error_description=nope"
        ))))
        .await;
    assert!(
        denied.text().contains("`access_denied`"),
        "{}",
        denied.text()
    );
    assert!(!denied.text().contains("nope"), "{}", denied.text());

    // 3. A refresh is refused with the echoed secret: the connection's last error.
    proxy
        .import(
            "intercom",
            "delta",
            json!({ "access_token": "tok_old", "refresh_token": REFRESH, "expires_at": "2001-01-01T00:00:00Z" }),
        )
        .await;
    let call = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "delta"))
        .await;
    assert_eq!(call.status, 424, "{}", call.text());
    let listed = proxy.connections().await;
    let delta = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connection_id"] == "delta")
        .unwrap()
        .clone();
    let last_error = delta["last_error"].as_str().unwrap().to_owned();
    assert!(last_error.contains("`other`"), "{last_error}");

    for (what, text) in [
        ("the exchange page", page.text()),
        ("the refusal page", refused.text()),
        ("a proxy answer", call.text()),
        ("the connections", listed.to_string()),
    ] {
        assert!(
            !text.contains(CLIENT_SECRET),
            "{what} shows the secret: {text}"
        );
        assert!(
            !text.contains("alert(1)"),
            "{what} shows the provider's text: {text}"
        );
        assert!(
            !text.contains(REFRESH),
            "{what} shows the refresh token: {text}"
        );
    }
    let logs = logs.text();
    assert!(
        !logs.contains(CLIENT_SECRET),
        "the logs hold the secret:\n{logs}"
    );
    assert!(
        !logs.contains(REFRESH),
        "the logs hold the refresh token:\n{logs}"
    );
    // The raw text is kept at DEBUG only, redacted.
    for line in logs.lines().filter(|l| l.contains("alert(1)")) {
        assert!(line.contains("DEBUG"), "provider text above DEBUG: {line}");
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("DEBUG") && l.contains("raw_error") && l.contains("<redacted>")),
        "no redacted DEBUG line with the raw error:\n{logs}"
    );
    proxy.stop().await;
}
