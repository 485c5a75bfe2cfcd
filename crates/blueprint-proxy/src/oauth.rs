//! `GET /oauth/connect/{integration}` and `GET /oauth/callback`: the authorization-code
//! flow. Neither needs the secret key: the random, single-use `state` ties a callback to
//! the connect that started it. One exception guards working connections: re-authorizing
//! a connection that exists and works needs the key (the caller's backend calls the route
//! with it and sends the person to the `Location` it answers); otherwise anyone who can
//! reach the proxy could connect their own account in its place.

use std::fmt::Write as _;

use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use blueprint_core::ConnectionId;
use blueprint_refresh::{CallbackError, CallbackParams, TokenStatus};
use http::{HeaderValue, StatusCode, header};

use crate::app::ProxyState;
use crate::error::{ApiError, printable};

/// Starts authorizing a connection: a redirect to the provider.
pub(crate) async fn connect(
    State(state): State<ProxyState>,
    Path(integration): Path<String>,
    RawQuery(query): RawQuery,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    let connector = state.connector(&integration)?;
    let Some(flow) = &connector.flow else {
        return Err(ApiError::bad_request(
            "oauth_not_configured",
            format!(
                "integration `{integration}` has no OAuth app: set `oauth_client_id` and \
                 `oauth_client_secret` in integrations.yaml, or import a token with PUT \
                 /connections/{integration}/<connection_id>"
            ),
        ));
    };
    let connection = query
        .as_deref()
        .and_then(|q| {
            form_pairs(q)
                .find(|(name, _)| name == "connection_id")
                .map(|(_, value)| value)
        })
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "the `connection_id` query parameter is missing or empty: \
                 GET /oauth/connect/<integration>?connection_id=<your id for the account>",
            )
        })?;
    let connection_id = ConnectionId::new(connection.as_str());
    let existing = state
        .store()
        .get(&connector.source.key(&connection_id))
        .await
        .ok()
        .flatten();
    if existing.is_some_and(|stored| stored.record.status == TokenStatus::Ok)
        && !crate::auth::carries_key(&headers, &state)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "connection_exists",
            format!(
                "connection `{connection}` of `{integration}` exists and works; re-authorizing                  it needs the proxy's secret key: call this route with `Authorization: Bearer                  <BLUEPRINT_SECRET_KEY>` and send the person to the `Location` it answers"
            ),
        ));
    }
    let authorization = flow.authorize(connection_id).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("the OAuth settings of `{integration}` cannot work: {e}"),
        )
    })?;
    tracing::info!(
        integration = %connector.name,
        connection = %connection,
        "sending a person to the provider to authorize a connection"
    );
    let location = HeaderValue::try_from(authorization.url).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the provider's authorization URL cannot be sent in a header",
        )
    })?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

/// The decoded `name=value` pairs of a query string.
pub(crate) fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        Some((percent_decode(name)?, percent_decode(value)?))
    })
}

/// `application/x-www-form-urlencoded` decoding; `None` for malformed escapes or UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The provider sends the person back here: exchange the code, store the credentials, and
/// say how it went in a small page (never with a secret in it).
pub(crate) async fn callback(
    State(state): State<ProxyState>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = CallbackParams::from_query(query.as_deref().unwrap_or(""));
    if params.state.is_none() {
        return page(None, Err(&CallbackError::MissingState));
    }
    for connector in state.connectors() {
        let Some(flow) = &connector.flow else {
            continue;
        };
        // Each flow knows only the states it issued; another's state is `UnknownState`
        // without side effects, so asking each in turn is safe.
        match flow.callback(params.clone()).await {
            Err(CallbackError::UnknownState) => {}
            Ok(authorized) => {
                tracing::info!(
                    integration = %connector.name,
                    connection = %authorized.connection,
                    refreshable = authorized.refreshable,
                    "connection authorized"
                );
                return page(Some(&connector.name), Ok(authorized.connection.as_str()));
            }
            Err(error) => {
                tracing::warn!(
                    integration = %connector.name,
                    error = %error,
                    "authorization callback failed"
                );
                return page(Some(&connector.name), Err(&error));
            }
        }
    }
    tracing::warn!("authorization callback with a state no integration issued");
    page(None, Err(&CallbackError::UnknownState))
}

/// The page a person sees after authorizing.
fn page(integration: Option<&str>, outcome: Result<&str, &CallbackError>) -> Response {
    let (status, title, detail) = match outcome {
        Ok(connection) => (
            StatusCode::OK,
            "Connected",
            format!(
                "Connection <b>{}</b> of <b>{}</b> is authorized. You can close this page.",
                escape(connection),
                escape(integration.unwrap_or(""))
            ),
        ),
        Err(error) => {
            let status = match error {
                CallbackError::Exchange(_) => StatusCode::BAD_GATEWAY,
                CallbackError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut detail = String::from("The connection was not authorized: ");
            detail.push_str(&escape(&printable(&error.to_string())));
            if let Some(name) = integration {
                let _ = write!(detail, " (integration <b>{}</b>)", escape(name));
            }
            (status, "Not connected", detail)
        }
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{detail}</p></body></html>\n"
    );
    let mut response = (status, Html(body)).into_response();
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

/// Text made safe for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_pairs() {
        let pairs: Vec<_> = form_pairs("connection_id=acme%20co&x=a+b&bad=%zz&flag").collect();
        assert_eq!(
            pairs,
            [
                ("connection_id".to_owned(), "acme co".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
