//! The proxy's own errors: JSON `{"error":{"code":"…","message":"…"}}` with a status per code.

use std::fmt;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use blueprint_refresh::StoreError;
use http::{HeaderValue, StatusCode, header};

/// The `Retry-After` of a `store_unavailable` answer: the token source tries the store
/// again this soon ([`blueprint_refresh::DEFAULT_STORE_RETRY`]).
const STORE_RETRY_AFTER: Duration = blueprint_refresh::DEFAULT_STORE_RETRY;

/// An error the proxy answers itself (as opposed to a provider's answer, which is passed
/// through as received).
///
/// Every code has one status:
///
/// | code | status | when |
/// |---|---|---|
/// | `missing_header`, `invalid_header` | 400 | `Provider-Config-Key` or `Connection-Id` absent or unreadable |
/// | `invalid_connection_id` | 400 | a connection id outside the rule `[A-Za-z0-9._:@-]{1,256}` (header, path, filter or session) |
/// | `invalid_path` | 400 | the path would leave the integration's base URL, or is not UTF-8 |
/// | `invalid_request` | 400 | a bad body or parameter (connections, connect sessions) |
/// | `invalid_body` | 400 | the caller's request body could not be read (malformed chunked encoding, cut short) |
/// | `invalid_connection_param` | 400 | a connection parameter (import, connect session, connect URL) that is not declared or does not fit; names it |
/// | `oauth_not_configured` | 400 | a connect session for an integration without an OAuth app |
/// | `unauthorized` | 401 | no or the wrong `Authorization: Bearer <BLUEPRINT_SECRET_KEY>` |
/// | `unknown_integration`, `unknown_connection`, `not_found` | 404 | nothing by that name |
/// | `method_not_allowed` | 405 | a route that does not take the method; `TRACE` and `CONNECT` are never forwarded |
/// | `request_timeout` | 408 | the caller's request body stalled longer than `--request-body-timeout` |
/// | `gone` | 410 | the retired `GET /oauth/connect/{integration}`: use `POST /connect/sessions` |
/// | `body_too_large` | 413 | a body larger than the route takes: 64 KiB for the JSON routes; for `/proxy` calls, `--max-request-body` (no cap by default) |
/// | `needs_reauthorization` | 424 | the connection's credentials were refused for good |
/// | `missing_connection_param` | 424 | the connection lacks a parameter its blueprint's base URL or headers need; names it |
/// | `rate_limited` | 429 | the connection's rate limit is spent past the call's deadline; nothing was sent (`Retry-After` says when) |
/// | `store_error`, `internal_error` | 500 | the token store failed in a way that needs an operator (a wrong encryption key, corrupt credentials) |
/// | `too_many_sessions` | 503 | the number of live connect sessions is at its bound; `Retry-After` says when one expires |
/// | `not_ready` | 503 | `GET /readyz` only: shutdown has begun, or the token store fails or does not answer within 2 s |
/// | `upstream_unreachable`, `upstream_error` | 502 | no answer from the provider |
/// | `token_unavailable` | 503 | no token for now (the token endpoint is failing) |
/// | `store_unavailable` | 503 | the token store cannot be reached or failed for now (PostgreSQL down, SQLite busy); `Retry-After` says when to try again, and calls succeed again once it is back, with no restart |
/// | `deadline_exceeded`, `upstream_timeout` | 504 | the call's deadline passed, or the provider was too slow |
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with `status`, a stable machine-readable `code` and a message (never a secret).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header (whole seconds, rounded up, at least 1).
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code (`missing_header`, `rate_limited`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unknown_integration(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            format!(
                "no integration is named `{}` in the proxy's integrations.yaml",
                printable(name)
            ),
        )
    }

    pub(crate) fn unknown_connection(integration: &str, connection: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_connection",
            format!(
                "integration `{integration}` has no connection `{}`: authorize it through a connect session (POST /connect/sessions) or import a token with PUT /connections/{integration}/…",
                printable(connection)
            ),
        )
    }

    /// 400 `invalid_connection_param`: `why` names the parameter, never quotes the value.
    pub(crate) fn invalid_param(why: &str) -> Self {
        Self::bad_request("invalid_connection_param", why)
    }

    /// The answer for a store that failed: 503 `store_unavailable` (with `Retry-After`)
    /// for a failure that passes (the database is down or busy), 500 `store_error` for
    /// one that needs an operator.
    pub(crate) fn store(error: &StoreError) -> Self {
        if error.is_unavailable() || matches!(error, StoreError::Database { .. }) {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the token store is unavailable for now; try again shortly: {error}"),
            )
            .retry_after(STORE_RETRY_AFTER)
        } else {
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                format!("the token store failed: {error}"),
            )
        }
    }
}

/// The code of an answer the proxy wrote itself, in the response's extensions (for metrics).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

/// Marks an answer whose body goes out as written (the provider's answer, or a page for a
/// person), so that [`json_errors`] leaves it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verbatim;

/// Whether [`json_errors`] would rewrite `response`: an error status, written neither as an
/// [`ApiError`] nor [`Verbatim`].
pub(crate) fn needs_json(response: &Response) -> bool {
    let status = response.status();
    (status.is_client_error() || status.is_server_error())
        && response.extensions().get::<ErrorCode>().is_none()
        && response.extensions().get::<Verbatim>().is_none()
}

/// Turns every error answer the proxy wrote without an [`ApiError`] (axum's rejections:
/// 413 from a body limit, 400 from a path or query extractor, 415, 422) into the
/// documented JSON `{"error":{"code","message"}}`, keeping the status and the
/// rejection's text as the message.
pub(crate) async fn json_errors(response: Response) -> Response {
    if !needs_json(&response) {
        return response;
    }
    let status = response.status();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        s if s.is_server_error() => "internal_error",
        _ => "invalid_request",
    };
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    // axum's rejection texts are short; anything longer is cut.
    let text = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .map(|bytes| printable(&String::from_utf8_lossy(&bytes)))
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_owned()
    } else {
        text
    };
    let mut response = ApiError::new(status, code, message).into_response();
    if let Some(after) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, after);
    }
    response
}

/// Whole seconds, rounded up, at least 1: what a `Retry-After` header holds.
pub(crate) fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

/// Text from a caller, made safe to quote in a message: control characters dropped, cut
/// to 128 characters.
pub(crate) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(128).collect()
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(after)),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"blueprint-proxy\""),
            );
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejections_written_as_text_become_json_errors() {
        for (status, code) in [
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request"),
            (StatusCode::NOT_FOUND, "not_found"),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        ] {
            let text = (
                status,
                "Failed to buffer the request body: length limit exceeded",
            );
            let response = json_errors(text.into_response()).await;
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "{status}"
            );
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"]["code"], code, "{status}");
            assert_eq!(
                json["error"]["message"],
                "Failed to buffer the request body: length limit exceeded"
            );
        }
        // The provider's answers and pages for people go out as written; so do successes.
        let mut upstream = (StatusCode::BAD_REQUEST, "the provider's text").into_response();
        upstream.extensions_mut().insert(Verbatim);
        let upstream = json_errors(upstream).await;
        let body = axum::body::to_bytes(upstream.into_body(), 4096)
            .await
            .unwrap();
        assert_eq!(body, "the provider's text");
        let ok = json_errors((StatusCode::OK, "ok").into_response()).await;
        let body = axum::body::to_bytes(ok.into_body(), 4096).await.unwrap();
        assert_eq!(body, "ok");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(59)), 59);
    }
}
