//! The proxy's own errors: JSON `{"error":{"code":"…","message":"…"}}` with a status per code.

use std::fmt;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// An error the proxy answers itself (as opposed to a provider's answer, which is passed
/// through as received).
///
/// Every code has one status:
///
/// | code | status | when |
/// |---|---|---|
/// | `missing_header`, `invalid_header` | 400 | `Provider-Config-Key` or `Connection-Id` absent or unreadable |
/// | `invalid_path` | 400 | the path would leave the integration's base URL |
/// | `invalid_request` | 400 | a bad body or parameter (connections, OAuth) |
/// | `oauth_not_configured` | 400 | `/oauth/connect` for an integration without an OAuth app |
/// | `unauthorized` | 401 | no or the wrong `Authorization: Bearer <BLUEPRINT_SECRET_KEY>` |
/// | `connection_exists` | 403 | `/oauth/connect` without the key for a connection that exists and works |
/// | `unknown_integration`, `unknown_connection`, `not_found` | 404 | nothing by that name |
/// | `method_not_allowed` | 405 | a route that does not take the method |
/// | `needs_reauthorization` | 424 | the connection's credentials were refused for good |
/// | `rate_limited` | 429 | the connection's rate limit is spent past the call's deadline; nothing was sent (`Retry-After` says when) |
/// | `store_error`, `internal_error` | 500 | the token store failed |
/// | `upstream_unreachable`, `upstream_error` | 502 | no answer from the provider |
/// | `token_unavailable` | 503 | no token for now (the token endpoint is failing) |
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
                "integration `{integration}` has no connection `{}`: authorize it with GET /oauth/connect/{integration}?connection_id=… or import a token with PUT /connections/{integration}/…",
                printable(connection)
            ),
        )
    }

    pub(crate) fn store(error: &impl fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            format!("the token store failed: {error}"),
        )
    }
}

/// The code of an answer the proxy wrote itself, in the response's extensions (for metrics).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

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

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(59)), 59);
    }
}
