//! The error of a Blueprint stack, with predicates over every layer's typed errors.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use blueprint_auth::ForeignOriginError;
use blueprint_core::{BoxError, ConnectionId, TokenUnavailable};
use blueprint_ratelimit::RateLimitedError;
use blueprint_retry::{AttemptTimeoutError, DeadlineExceeded, RetryReason, classify_error};

use crate::base_url::InvalidPath;

/// Why a call through a Blueprint stack failed without a response.
///
/// It wraps the error a layer returned; the predicates look through it (and its sources)
/// for the typed errors of every layer, so callers never downcast by hand:
///
/// - [`is_timeout`](Error::is_timeout): the deadline passed or the last attempt timed out;
/// - [`is_rate_limited`](Error::is_rate_limited) and [`retry_after`](Error::retry_after):
///   the rate-limit layer held the request back, nothing was sent;
/// - [`needs_reauthorization`](Error::needs_reauthorization): the connection's credentials
///   were refused for good;
/// - [`is_connect`](Error::is_connect) / [`is_transport`](Error::is_transport): no answer.
///
/// A response with an error status is not an `Error`: the stack hands it back as received.
pub struct Error {
    inner: BoxError,
}

impl Error {
    /// Wraps a layer's error.
    pub fn new(inner: impl Into<BoxError>) -> Self {
        Error {
            inner: inner.into(),
        }
    }

    /// The first error of type `T` in the chain of sources.
    pub fn find<T: StdError + 'static>(&self) -> Option<&T> {
        let mut current: Option<&(dyn StdError + 'static)> = Some(&*self.inner);
        while let Some(error) = current {
            if let Some(found) = error.downcast_ref::<T>() {
                return Some(found);
            }
            current = error.source();
        }
        None
    }

    /// The call's deadline passed, or the last attempt timed out.
    pub fn is_timeout(&self) -> bool {
        self.is_deadline() || self.find::<AttemptTimeoutError>().is_some()
    }

    /// The call's deadline passed.
    pub fn is_deadline(&self) -> bool {
        self.find::<DeadlineExceeded>().is_some()
    }

    /// The rate-limit layer held the request back because the budget would not free up in
    /// time; nothing was sent.
    pub fn is_rate_limited(&self) -> bool {
        self.find::<RateLimitedError>().is_some()
    }

    /// When to come back, for a rate-limited call.
    pub fn retry_after(&self) -> Option<Duration> {
        self.find::<RateLimitedError>()
            .map(RateLimitedError::retry_after)
            .or_else(|| {
                self.find::<TokenUnavailable>()
                    .and_then(TokenUnavailable::retry_after)
            })
    }

    /// The connection's credentials were refused for good: a person must authorize it again.
    pub fn needs_reauthorization(&self) -> bool {
        self.find::<TokenUnavailable>()
            .is_some_and(TokenUnavailable::needs_reauthorization)
    }

    /// No token could be had for the connection (any reason); nothing was sent.
    pub fn is_token_unavailable(&self) -> bool {
        self.find::<TokenUnavailable>().is_some()
    }

    /// The request was for another origin than the API's; nothing was sent.
    pub fn is_foreign_origin(&self) -> bool {
        self.find::<ForeignOriginError>().is_some()
    }

    /// The request's path would leave the API's base URL; nothing was sent.
    pub fn is_invalid_path(&self) -> bool {
        self.find::<InvalidPath>().is_some()
    }

    /// The connection could not be made; the request was not sent.
    pub fn is_connect(&self) -> bool {
        classify_error(&*self.inner) == Some(RetryReason::ConnectFailed)
    }

    /// The request got no answer (connection failed, reset, protocol error).
    pub fn is_transport(&self) -> bool {
        matches!(
            classify_error(&*self.inner),
            Some(RetryReason::ConnectFailed | RetryReason::Transport)
        )
    }

    /// The connection the failing layer named, if it named one.
    pub fn connection(&self) -> Option<&ConnectionId> {
        if let Some(e) = self.find::<TokenUnavailable>() {
            return Some(e.connection());
        }
        if let Some(e) = self.find::<RateLimitedError>() {
            return Some(e.connection());
        }
        self.find::<ForeignOriginError>()
            .map(ForeignOriginError::connection)
    }

    /// The wrapped error.
    pub fn get_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.inner
    }

    /// Unwraps the error.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Error").field(&self.inner).finish()
    }
}

impl fmt::Display for Error {
    /// The wrapped error's message, followed by the causes an HTTP client's error keeps
    /// only in its sources: hyper-util says "client error (Connect)", and why (connection
    /// refused, dns error, the TLS alert) is one or two sources further down.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = self.inner.to_string();
        f.write_str(&written)?;
        // Only below a client or I/O error: the layers' own errors already say what their
        // sources hold (and a token source's errors stay exactly as the source wrote them).
        let mut below_transport = false;
        let mut current: Option<&(dyn StdError + 'static)> = Some(&*self.inner);
        for _ in 0..MAX_CAUSES {
            let Some(error) = current else { break };
            if !below_transport && is_transport(error) {
                below_transport = true;
            } else if below_transport {
                let cause = error.to_string();
                if !cause.is_empty() && !written.contains(&cause) {
                    write!(f, ": {cause}")?;
                    written.push_str(": ");
                    written.push_str(&cause);
                }
            }
            current = error.source();
        }
        Ok(())
    }
}

/// How deep [`Error`]'s message looks for causes.
const MAX_CAUSES: usize = 8;

/// Whether `error` is the HTTP client's own error, whose message leaves the cause to its
/// sources.
fn is_transport(error: &(dyn StdError + 'static)) -> bool {
    error.is::<hyper_util::client::legacy::Error>() || error.is::<std::io::Error>()
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.inner)
    }
}

impl From<BoxError> for Error {
    fn from(inner: BoxError) -> Self {
        // Do not wrap an `Error` in an `Error`.
        match inner.downcast::<Error>() {
            Ok(error) => *error,
            Err(inner) => Error { inner },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_client;
    use blueprint_core::{TokenError, TokenErrorKind};
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn failure(url: &str) -> Error {
        let client = default_client::<Full<Bytes>>().unwrap();
        let uri: http::Uri = url.parse().unwrap();
        Error::new(client.get(uri).await.unwrap_err())
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_cause() {
        // Bound, then closed: nothing listens on the port.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let error = failure(&format!("http://127.0.0.1:{port}/")).await;
        assert!(error.is_connect(), "{error:?}");
        let text = error.to_string();
        assert!(text.starts_with("client error (Connect)"), "{text}");
        assert!(
            text.to_lowercase().contains("connection refused"),
            "the cause is missing: {text}"
        );
    }

    #[tokio::test]
    async fn a_tls_failure_names_the_cause() {
        // A server that answers in plain text where TLS is expected.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let error = failure(&format!("https://127.0.0.1:{port}/")).await;
        let text = error.to_string();
        assert!(text.starts_with("client error (Connect)"), "{text}");
        assert!(
            text.contains("corrupt message"),
            "the TLS cause is missing: {text}"
        );
        server.abort();
    }

    #[test]
    fn the_layers_own_messages_are_unchanged() {
        let inner = TokenUnavailable::new(
            ConnectionId::new("acme"),
            TokenError::new(
                TokenErrorKind::Unavailable,
                "the token endpoint answered 503",
            )
            .with_source(std::io::Error::other("a cause the message leaves out")),
        );
        let expected = inner.to_string();
        assert_eq!(Error::new(inner).to_string(), expected);
    }
}
