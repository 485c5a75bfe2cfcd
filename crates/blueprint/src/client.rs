//! The default HTTP client: hyper-util with rustls, HTTP/1.1 and HTTP/2, pooled.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use blueprint_core::BoxError;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

/// The client [`default_client`] builds: hyper-util's pooled client over rustls, shared.
pub type HttpsClient<B> = SharedClient<HttpsConnector<HttpConnector>, B>;

/// A hyper-util client behind one reference count.
///
/// A tower stack is cloned for every call made concurrently, and every layer's clone
/// copies the service below it: with hyper-util's client (about 300 bytes) at the bottom,
/// that copy is made once per layer. This handle makes it one pointer. It answers exactly
/// as the client does (the client's own `Service` impl calls [`Client::request`], which
/// takes `&self`, and is always ready); the client's methods are reachable through
/// `Deref`.
///
/// ```
/// use blueprint::SharedClient;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
///
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let shared = SharedClient::new(client);
/// let again = shared.clone(); // one reference count
/// # drop(again);
/// ```
pub struct SharedClient<C, B>(Arc<Client<C, B>>);

impl<C, B> SharedClient<C, B> {
    /// Shares `client`.
    pub fn new(client: Client<C, B>) -> Self {
        SharedClient(Arc::new(client))
    }
}

impl<C, B> Clone for SharedClient<C, B> {
    fn clone(&self) -> Self {
        SharedClient(Arc::clone(&self.0))
    }
}

impl<C, B> Deref for SharedClient<C, B> {
    type Target = Client<C, B>;

    fn deref(&self) -> &Client<C, B> {
        &self.0
    }
}

impl<C, B> fmt::Debug for SharedClient<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedClient").finish_non_exhaustive()
    }
}

impl<C, B> Service<Request<B>> for SharedClient<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.0.request(request)
    }
}

/// A pooled HTTPS client: rustls with the `ring` provider (no C/CMake crypto build) and
/// Mozilla's roots (webpki-roots, so it behaves the same on every machine), HTTP/2 where
/// the server offers it by ALPN and HTTP/1.1 otherwise, plain `http://` allowed (for local
/// test servers), a 10 s connect timeout, `TCP_NODELAY`, idle connections kept 90 s.
///
/// It follows no redirects: a redirect is handed back as a response, so credentials are
/// never carried to another host behind the caller's back.
///
/// # Errors
///
/// [`ClientError`] when rustls cannot be set up (it has no safe protocol versions with the
/// provider, which does not happen with the versions this crate pins).
pub fn default_hyper_client<B>() -> Result<Client<HttpsConnector<HttpConnector>, B>, ClientError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| ClientError(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .timer(TokioTimer::new())
        .build(https))
}

/// [`default_hyper_client`], shared ([`SharedClient`]): what a stack should sit on.
///
/// # Errors
///
/// As [`default_hyper_client`].
pub fn default_client<B>() -> Result<HttpsClient<B>, ClientError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Ok(SharedClient::new(default_hyper_client()?))
}

/// The default client could not be built.
#[derive(Debug, Clone)]
pub struct ClientError(String);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not set up TLS for the HTTP client: {}", self.0)
    }
}

impl std::error::Error for ClientError {}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[tokio::test]
    async fn talks_plain_http_to_a_local_server_and_follows_no_redirect() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(302).insert_header("location", "https://elsewhere.test/"),
            )
            .mount(&server)
            .await;
        let client = default_client::<Full<Bytes>>().unwrap();
        let uri: http::Uri = server.uri().parse().unwrap();
        let response = client.get(uri).await.unwrap();
        assert_eq!(response.status(), 302);
        let _ = response.into_body().collect().await.unwrap();
        assert_eq!(server.received_requests().await.map(|r| r.len()), Some(1));
    }
}
