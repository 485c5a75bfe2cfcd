//! Intercom's errors, typed.

use std::fmt;
use std::time::Duration;

use blueprint_core::{BoxError, ConnectionId};
use http::StatusCode;
use serde::Deserialize;

/// One entry of Intercom's `error.list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorItem {
    /// The error code, e.g. `not_found`, `parameter_invalid`, `rate_limit_exceeded`.
    pub code: String,
    /// The human-readable message.
    #[serde(default)]
    pub message: String,
    /// The request field at fault, when Intercom names one.
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Deserialize)]
struct ErrorList {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

/// An error status from Intercom, with its `error.list` parsed when the body was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Intercom's request id, when the body carried one (quote it to Intercom's support).
    pub request_id: Option<String>,
    /// The errors Intercom listed (empty when the body was not an `error.list`).
    pub errors: Vec<ErrorItem>,
    /// The start of the body when it was not an `error.list` (an HTML 504 page, say),
    /// at most 512 characters.
    pub body: Option<String>,
}

impl ApiError {
    /// Parses an error response body; never fails: a body that is not an `error.list`
    /// is kept (shortened) as text.
    pub fn parse(status: StatusCode, body: &[u8]) -> ApiError {
        if let Ok(list) = serde_json::from_slice::<ErrorList>(body) {
            if list.kind.as_deref() == Some("error.list") || !list.errors.is_empty() {
                return ApiError {
                    status,
                    request_id: list.request_id,
                    errors: list.errors,
                    body: None,
                };
            }
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        ApiError {
            status,
            request_id: None,
            errors: Vec::new(),
            body: (!text.is_empty()).then(|| text.chars().take(512).collect()),
        }
    }

    /// The first error code, if any.
    pub fn code(&self) -> Option<&str> {
        self.errors.first().map(|e| e.code.as_str())
    }

    /// Whether any listed error has this code.
    pub fn has_code(&self, code: &str) -> bool {
        self.errors.iter().any(|e| e.code == code)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Intercom answered {}", self.status)?;
        for (i, e) in self.errors.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{} ({})", e.message, e.code)?;
            if let Some(field) = &e.field {
                write!(f, " [field `{field}`]")?;
            }
        }
        if self.errors.is_empty() {
            match &self.body {
                Some(body) => write!(f, " with a body that is not an Intercom error: {body:.120}")?,
                None => f.write_str(" with an empty body")?,
            }
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// What can go wrong calling Intercom.
#[derive(Debug)]
#[non_exhaustive]
pub enum IntercomError {
    /// Intercom answered with an error status (4xx other than 401 and 429, or a 5xx that
    /// retries did not clear).
    Api(ApiError),
    /// Intercom's rate limit is spent. `sent` says whether the request reached Intercom
    /// (a 429) or was held back because it could not be sent in time.
    RateLimited {
        /// When to come back, if known.
        retry_after: Option<Duration>,
        /// Whether the request was sent (and refused with 429).
        sent: bool,
        /// The 429's details, when there was one.
        api: Option<ApiError>,
    },
    /// The connection's token was refused or revoked (Intercom's tokens do not expire): a
    /// person has to install the app / authorize the connection again.
    NeedsReauthorization {
        /// The connection.
        connection: ConnectionId,
        /// The 401's details, when there was one.
        api: Option<ApiError>,
    },
    /// The call's deadline passed, or the last attempt timed out.
    Timeout(BoxError),
    /// The request never got an answer: connection refused, reset, TLS failure.
    Transport(BoxError),
    /// No token could be had for the connection for now (the token endpoint is failing and
    /// a cooldown runs, or no credentials are stored); nothing was sent.
    TokenUnavailable(BoxError),
    /// The request could not be built (a path leaving the base URL, a body that does not
    /// serialize, no token for the connection).
    InvalidRequest(BoxError),
    /// The answer's body was larger than the client reads
    /// ([`IntercomBuilder::max_response_body`](crate::IntercomBuilder::max_response_body));
    /// it was not kept.
    ResponseTooLarge {
        /// The status Intercom answered with.
        status: StatusCode,
        /// The cap, in bytes.
        limit: usize,
    },
    /// A success response whose body was not the JSON expected.
    Decode {
        /// The status.
        status: StatusCode,
        /// What serde said.
        message: String,
    },
}

impl IntercomError {
    /// Whether the call timed out (deadline or attempt timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, IntercomError::Timeout(_))
    }

    /// Whether Intercom's rate limit stopped the call.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, IntercomError::RateLimited { .. })
    }

    /// When to come back, for a rate-limited call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IntercomError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the connection must be authorized again.
    pub fn needs_reauthorization(&self) -> bool {
        matches!(self, IntercomError::NeedsReauthorization { .. })
    }

    /// The HTTP status Intercom answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            IntercomError::Api(api) => Some(api.status),
            IntercomError::RateLimited { api, .. }
            | IntercomError::NeedsReauthorization { api, .. } => api.as_ref().map(|a| a.status),
            IntercomError::Decode { status, .. }
            | IntercomError::ResponseTooLarge { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Intercom's request id, if the error body had one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            IntercomError::Api(api) => api.request_id.as_deref(),
            IntercomError::RateLimited { api, .. }
            | IntercomError::NeedsReauthorization { api, .. } => {
                api.as_ref().and_then(|a| a.request_id.as_deref())
            }
            _ => None,
        }
    }

    /// The parsed error response, when there was one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            IntercomError::Api(api) => Some(api),
            IntercomError::RateLimited { api, .. }
            | IntercomError::NeedsReauthorization { api, .. } => api.as_ref(),
            _ => None,
        }
    }
}

impl fmt::Display for IntercomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntercomError::Api(api) => api.fmt(f),
            IntercomError::RateLimited {
                retry_after,
                sent,
                api,
            } => {
                f.write_str(if *sent {
                    "Intercom's rate limit is exceeded (429)"
                } else {
                    "Intercom's rate limit is spent; the request was not sent"
                })?;
                if let Some(after) = retry_after {
                    write!(f, "; retry in {} s", after.as_secs_f64().ceil())?;
                }
                if let Some(message) = api.as_ref().and_then(|a| a.errors.first()) {
                    write!(f, " ({})", message.message)?;
                }
                Ok(())
            }
            IntercomError::NeedsReauthorization { connection, api } => {
                write!(
                    f,
                    "Intercom refused the token of connection `{connection}`: the app must be authorized again"
                )?;
                if let Some(code) = api.as_ref().and_then(ApiError::code) {
                    write!(f, " ({code})")?;
                }
                Ok(())
            }
            IntercomError::Timeout(e) => write!(f, "the call to Intercom timed out: {e}"),
            IntercomError::Transport(e) => write!(f, "could not reach Intercom: {e}"),
            IntercomError::InvalidRequest(e) => write!(f, "invalid request: {e}"),
            IntercomError::TokenUnavailable(e) => write!(f, "no access token: {e}"),
            IntercomError::ResponseTooLarge { status, limit } => write!(
                f,
                "Intercom answered {status} with a body larger than the client's limit of \
                 {limit} bytes; ask for smaller pages (`per_page`) or raise the limit with \
                 `IntercomBuilder::max_response_body`"
            ),
            IntercomError::Decode { status, message } => write!(
                f,
                "Intercom answered {status} with a body that is not the JSON expected: {message}"
            ),
        }
    }
}

impl From<crate::InvalidSegment> for IntercomError {
    fn from(error: crate::InvalidSegment) -> Self {
        IntercomError::InvalidRequest(Box::new(error))
    }
}

impl std::error::Error for IntercomError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IntercomError::Timeout(e)
            | IntercomError::Transport(e)
            | IntercomError::InvalidRequest(e)
            | IntercomError::TokenUnavailable(e) => Some(&**e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lists_are_parsed() {
        let body = br#"{"type":"error.list","request_id":"b3a2c8e0-1","errors":[{"code":"parameter_invalid","message":"Email is invalid","field":"email"}]}"#;
        let api = ApiError::parse(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(api.code(), Some("parameter_invalid"));
        assert_eq!(api.request_id.as_deref(), Some("b3a2c8e0-1"));
        assert_eq!(api.errors[0].field.as_deref(), Some("email"));
        let text = api.to_string();
        assert!(
            text.contains("Email is invalid (parameter_invalid) [field `email`]"),
            "{text}"
        );
        assert!(text.contains("b3a2c8e0-1"), "{text}");
    }

    #[test]
    fn non_json_bodies_are_kept_as_text() {
        let html = b"<html><body><h1>504 Gateway Time-out</h1></body></html>";
        let api = ApiError::parse(StatusCode::GATEWAY_TIMEOUT, html);
        assert!(api.errors.is_empty());
        assert!(
            api.body
                .as_deref()
                .is_some_and(|b| b.contains("504 Gateway"))
        );
        assert!(api.to_string().contains("not an Intercom error"));
        let empty = ApiError::parse(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(empty.body, None);
        let long = vec![b'x'; 5000];
        assert_eq!(
            ApiError::parse(StatusCode::BAD_GATEWAY, &long)
                .body
                .map(|b| b.len()),
            Some(512)
        );
    }
}
