//! The small HTTP client that talks to token endpoints.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use blueprint_core::BoxError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use oauth2::{HttpRequest, HttpResponse};

type SendFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpClientError>> + Send>>;

/// How long a token-endpoint call may take by default.
pub const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest token-endpoint answer read: 256 KiB.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// An HTTP/1.1 client for token endpoints, built on `hyper-util`, that follows no
/// redirects (a token endpoint that redirects gets its 3xx treated as a failure, so client
/// secrets and refresh tokens are never re-sent elsewhere) and bounds each call by a
/// timeout and the size of the answer.
///
/// [`HttpClient::new`] speaks plain HTTP only (tests, loopback); for real providers pass a
/// client with a TLS connector to [`HttpClient::from_hyper`]. It implements `oauth2`'s
/// `AsyncHttpClient`.
#[derive(Clone)]
pub struct HttpClient {
    send: Arc<dyn SendRequest>,
    timeout: Option<Duration>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A plain-HTTP client (no TLS): for tests and token endpoints on loopback.
    pub fn new() -> Self {
        Self::from_hyper(Client::builder(TokioExecutor::new()).build(HttpConnector::new()))
    }

    /// Wraps a `hyper-util` client, e.g. one whose connector speaks TLS.
    pub fn from_hyper<C>(client: Client<C, Full<Bytes>>) -> Self
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        HttpClient {
            send: Arc::new(client),
            timeout: Some(DEFAULT_TOKEN_TIMEOUT),
        }
    }

    /// Bounds each call to `timeout` (default [`DEFAULT_TOKEN_TIMEOUT`]); `None` for no bound.
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client, its calls bounded by `max` too (a client without a bound stays
    /// without one: its owner chose so).
    pub(crate) fn timeout_at_most(mut self, max: Duration) -> Self {
        self.timeout = self.timeout.map(|t| t.min(max));
        self
    }

    /// The bound of each call, if any.
    pub fn call_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Sends `request` and reads the whole answer.
    ///
    /// # Errors
    ///
    /// [`HttpClientError`] when the call fails, times out, or the answer is too large.
    pub fn execute(
        &self,
        request: HttpRequest,
    ) -> impl Future<Output = Result<HttpResponse, HttpClientError>> + Send + 'static {
        let send = self.send.send(request);
        let timeout = self.timeout;
        async move {
            match timeout {
                Some(limit) => tokio::time::timeout(limit, send)
                    .await
                    .map_err(|_| HttpClientError::Timeout(limit))?,
                None => send.await,
            }
        }
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for HttpClient {
    type Error = HttpClientError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpClientError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.execute(request))
    }
}

trait SendRequest: Send + Sync + 'static {
    fn send(&self, request: HttpRequest) -> SendFuture;
}

impl<C> SendRequest for Client<C, Full<Bytes>>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn send(&self, request: HttpRequest) -> SendFuture {
        let (parts, body) = request.into_parts();
        let future = self.request(http::Request::from_parts(
            parts,
            Full::new(Bytes::from(body)),
        ));
        Box::pin(async move {
            let response = future
                .await
                .map_err(|e| HttpClientError::Request(describe(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e: BoxError| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpClientError::TooLarge(MAX_RESPONSE_BYTES)
                    } else {
                        HttpClientError::Request(describe(&*e))
                    }
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        })
    }
}

/// An error and its causes on one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A token-endpoint call failed before an answer was read.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpClientError {
    /// No answer within the timeout.
    #[error("the token endpoint did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The connection or the exchange failed.
    #[error("the token endpoint could not be reached: {0}")]
    Request(String),
    /// The answer was larger than this client reads.
    #[error("the token endpoint's answer was larger than {0} bytes")]
    TooLarge(usize),
}
