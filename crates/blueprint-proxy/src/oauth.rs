//! The browser's side of authorizing a connection: `GET /connect?session=<token>` (in
//! [`crate::sessions`]) sends the person to the provider, and `GET /oauth/callback` takes
//! them back, exchanges the code and stores the credentials. Neither needs the secret key:
//! the connect session (made with the key) and the random, single-use `state` tie a
//! callback to the backend that asked for it. The old `GET /oauth/connect/{integration}`
//! answers 410 `gone`.

use std::fmt::Write as _;

use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use blueprint_refresh::{CallbackError, CallbackParams};
use http::{HeaderValue, StatusCode, header};

use crate::app::ProxyState;
use crate::error::{ApiError, ErrorCode, Verbatim, printable};

/// `ANY /oauth/connect/{integration}`: retired, because anyone could start authorizations
/// with it. 410 pointing to connect sessions.
pub(crate) async fn gone() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "gone",
        "GET /oauth/connect/{integration} is retired: the application's backend creates a \
         connect session with POST /connect/sessions (with the secret key and \
         {\"integration\", \"connection_id\"}) and sends the person to the `url` it answers",
    )
}

/// 400 `oauth_not_configured`.
pub(crate) fn not_configured(integration: &str) -> ApiError {
    let integration = printable(integration);
    ApiError::bad_request(
        "oauth_not_configured",
        format!(
            "integration `{integration}` has no OAuth app: set `oauth_client_id` and \
             `oauth_client_secret` in integrations.yaml, or import a token with PUT \
             /connections/{integration}/<connection_id>"
        ),
    )
}

/// The provider sends the person back here: exchange the code, store the credentials, and
/// say how it went in a small page (never with a secret in it).
pub(crate) async fn callback(
    State(state): State<ProxyState>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = CallbackParams::from_query(query.as_deref().unwrap_or(""));
    let Some(callback_state) = params.state.as_deref() else {
        return page(None, Err(&CallbackError::MissingState));
    };
    // The state must be the current authorization of a live connect session, which it
    // uses up; each flow then checks it again (known, unexpired, unused).
    let Some(index) = state.sessions().finish(callback_state) else {
        // At DEBUG: the route needs no key, so anyone can call it with any state, and a
        // line per call at WARN would let them flood the logs (as `auth` does for refused
        // keys). Never the state itself.
        tracing::debug!("authorization callback with a state no live connect session issued");
        return page(None, Err(&CallbackError::UnknownState));
    };
    let connector = &state.connectors()[index];
    let Some(flow) = &connector.flow else {
        return page(None, Err(&CallbackError::UnknownState));
    };
    match flow.callback(params).await {
        Ok(authorized) => {
            connector.forget_stack(&authorized.connection);
            tracing::info!(
                integration = %connector.name,
                connection = %authorized.connection,
                refreshable = authorized.refreshable,
                "connection authorized"
            );
            page(Some(&connector.name), Ok(authorized.connection.as_str()))
        }
        Err(error) => {
            tracing::warn!(
                integration = %connector.name,
                error = %error,
                "authorization callback failed"
            );
            page(Some(&connector.name), Err(&error))
        }
    }
}

/// The one answer for a connect link that is not valid, whatever the reason (never
/// issued, expired, used up, wrong token), so that nothing can be learnt from it.
pub(crate) fn invalid_session_page() -> Response {
    let mut response = html(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "This connect link is not valid: it may have expired or been used already. Ask the \
         application for a new one.",
    );
    response
        .extensions_mut()
        .insert(ErrorCode("invalid_session"));
    response
}

/// The page a person sees after authorizing.
fn page(integration: Option<&str>, outcome: Result<&str, &CallbackError>) -> Response {
    match outcome {
        Ok(connection) => html(
            StatusCode::OK,
            "Connected",
            &format!(
                "Connection <b>{}</b> of <b>{}</b> is authorized. You can close this page.",
                escape(connection),
                escape(integration.unwrap_or(""))
            ),
        ),
        Err(error) => {
            let status = match error {
                // A parameter the token answer lacked (or made unfit): the provider's.
                CallbackError::Exchange(_) | CallbackError::Params(_) => StatusCode::BAD_GATEWAY,
                CallbackError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut detail = String::from("The connection was not authorized: ");
            detail.push_str(&escape(&printable(&error.to_string())));
            if let Some(name) = integration {
                let _ = write!(detail, " (integration <b>{}</b>)", escape(name));
            }
            html(status, "Not connected", &detail)
        }
    }
}

/// A small HTML page; `detail` is HTML already escaped.
fn html(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{detail}</p></body></html>\n"
    );
    let mut response = (status, Html(body)).into_response();
    response.extensions_mut().insert(Verbatim);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Text made safe for HTML, in element content and in quoted attributes: `&`, `<`, `>`,
/// `"` and `'` escaped.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_quoted_attribute(text)
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::logfmt::tests::Lines;

    // One thread (the default test runtime): the subscriber set for it sees every event.
    #[tokio::test]
    async fn callbacks_with_an_unknown_state_log_nothing_at_info_or_above() {
        let yaml = "integrations:\n  intercom:\n    extends_blueprint: intercom\n    \
                    oauth_client_id: app\n    oauth_client_secret: s\n";
        let registry = crate::registry().unwrap();
        let integrations =
            blueprint::Integrations::parse(yaml, "test.yaml", &registry, |_| None).unwrap();
        let key = crate::SecretKey::new("a-key-of-16-chars-or-more").unwrap();
        let proxy = crate::Proxy::builder(integrations, key).build().unwrap();
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(lines.clone())
                .with_ansi(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        for i in 0..100 {
            let request = http::Request::get(format!("/oauth/callback?code=c&state=unknown-{i}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let response = proxy.router().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        }
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let loud: Vec<&str> = text
            .lines()
            .filter(|line| {
                [" INFO ", " WARN ", " ERROR "]
                    .iter()
                    .any(|l| line.contains(l))
            })
            .collect();
        assert!(
            loud.is_empty(),
            "{} lines at INFO or above:\n{}",
            loud.len(),
            loud.join("\n")
        );
        // The capture works: the line is there, at DEBUG, once per call, without the state.
        let debug = text
            .lines()
            .filter(|line| line.contains(" DEBUG ") && line.contains("no live connect session"))
            .count();
        assert_eq!(debug, 100, "{text}");
        assert!(!text.contains("unknown-1"), "{text}");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"
        );
        assert_eq!(escape("plain café"), "plain café");
    }
}
