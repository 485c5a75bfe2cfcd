//! `IntercomLayer` (the stack as one layer) and `IntercomClient` (a ready JSON client).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blueprint::{
    Blueprint, BlueprintError, BlueprintLayer, BlueprintService, ClientError, HttpsClient,
    StackBody, StackBuilder, default_client,
};
use blueprint_auth::StaticToken;
use blueprint_core::{
    ConnectionId, Deadline, NeedsReauthorization, RateLimit, RetrySafe, TokenSource,
    parse_retry_after,
};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_layer::Layer;

use crate::definition::{IntercomRegion, intercom};
use crate::error::{ApiError, IntercomError};

/// Settings shared by [`IntercomLayer`] and [`IntercomClient`]; from
/// [`IntercomLayer::builder`] or [`IntercomClient::builder`].
pub struct IntercomBuilder {
    tokens: Arc<dyn TokenSource>,
    region: IntercomRegion,
    version: Option<String>,
    base_url: Option<String>,
    stack: Option<Box<dyn FnOnce(StackBuilder) -> StackBuilder + Send>>,
}

impl fmt::Debug for IntercomBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntercomBuilder")
            .field("region", &self.region)
            .field("version", &self.version)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl IntercomBuilder {
    fn new(tokens: Arc<dyn TokenSource>) -> Self {
        IntercomBuilder {
            tokens,
            region: IntercomRegion::Us,
            version: None,
            base_url: None,
            stack: None,
        }
    }

    /// The region whose hosts to use (default US).
    #[must_use]
    pub fn region(mut self, region: IntercomRegion) -> Self {
        self.region = region;
        self
    }

    /// The `Intercom-Version` every request sends (default [`API_VERSION`](crate::API_VERSION));
    /// a request's own header still wins.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sends requests to another base URL (a local mock of Intercom, a recording proxy).
    /// Tokens are sent to this origin only.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Adjusts the stack (tracing, rate-limit layer, retry settings) before it is built.
    #[must_use]
    pub fn map_stack(
        mut self,
        f: impl FnOnce(StackBuilder) -> StackBuilder + Send + 'static,
    ) -> Self {
        self.stack = Some(Box::new(f));
        self
    }

    fn blueprint(&self) -> Result<Blueprint, BlueprintError> {
        let mut blueprint = intercom()?.in_region(self.region.name())?;
        if let Some(version) = &self.version {
            blueprint = blueprint.default_header("intercom-version", version)?;
        }
        if let Some(url) = &self.base_url {
            blueprint = blueprint.with_base_url(url)?;
        }
        Ok(blueprint)
    }

    /// The stack as a layer, for any hyper or axum service.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] for a bad base URL or version value.
    pub fn layer(self) -> Result<IntercomLayer, BlueprintError> {
        let mut stack =
            StackBuilder::with_shared_tokens(self.blueprint()?, Arc::clone(&self.tokens));
        if let Some(f) = self.stack {
            stack = f(stack);
        }
        Ok(IntercomLayer {
            inner: stack.layer()?,
        })
    }

    /// A client over the [default HTTP client](blueprint::default_client).
    ///
    /// # Errors
    ///
    /// [`BuildError`] for a bad setting or when TLS cannot be set up.
    pub fn client(self) -> Result<IntercomClient, BuildError> {
        let layer = self.layer().map_err(BuildError::Blueprint)?;
        let http = default_client::<StackBody<Full<Bytes>>>().map_err(BuildError::Client)?;
        Ok(IntercomClient {
            service: layer.layer(http),
        })
    }
}

/// An Intercom client or layer could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting was refused.
    Blueprint(BlueprintError),
    /// The HTTP client could not be set up.
    Client(ClientError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Blueprint(e) => write!(f, "invalid Intercom setting: {e}"),
            BuildError::Client(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Blueprint(e) => Some(e),
            BuildError::Client(e) => Some(e),
        }
    }
}

/// The whole Blueprint stack for Intercom as one tower layer: logging, safe retries,
/// rate-limit pacing, token refresh/re-authorization, auth injection, attempt timeout,
/// base URL and Intercom's headers. Put it in front of any hyper client or inside any
/// axum app; requests use relative paths (`/contacts`).
///
/// ```
/// use blueprint::StackBody;
/// use blueprint_auth::StaticToken;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use intercom_blueprint::IntercomLayer;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// // Stands in for the HTTP client: tells where the request went.
/// let http = service_fn(|req: Request<StackBody<Full<Bytes>>>| async move {
///     let version = req.headers()["intercom-version"].to_str()?.to_owned();
///     Ok::<_, blueprint_core::BoxError>(Response::new(format!("{} {version}", req.uri())))
/// });
/// let intercom = ServiceBuilder::new()
///     .layer(IntercomLayer::new(StaticToken::new("dG9r")?)?)
///     .service(http);
/// let response = intercom.oneshot(Request::get("/me").body(Full::default())?).await?;
/// assert_eq!(response.body(), "https://api.intercom.io/me 2.16");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct IntercomLayer {
    inner: BlueprintLayer,
}

impl IntercomLayer {
    /// The stack for the US region with the default settings.
    ///
    /// # Errors
    ///
    /// Never in practice (the blueprint is built from constants).
    pub fn new(tokens: impl TokenSource) -> Result<Self, BlueprintError> {
        Self::builder(tokens).layer()
    }

    /// Settings: region, version, base URL, stack adjustments.
    pub fn builder(tokens: impl TokenSource) -> IntercomBuilder {
        IntercomBuilder::new(Arc::new(tokens))
    }
}

impl<S: Clone> Layer<S> for IntercomLayer {
    type Service = BlueprintService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

type Stack = BlueprintService<HttpsClient<StackBody<Full<Bytes>>>>;

/// A ready Intercom client: JSON in and out with serde, relative paths (`"/contacts"`),
/// any endpoint of the REST API, through the whole Blueprint stack.
///
/// ```no_run
/// use intercom_blueprint::IntercomClient;
/// use serde_json::{json, Value};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let intercom = IntercomClient::new(&std::env::var("INTERCOM_TOKEN")?)?;
/// let me: Value = intercom.get("/me").await?;
/// let contact: Value = intercom
///     .post("/contacts", &json!({"role": "user", "email": "ada@example.com"}))
///     .await?;
/// // Per-call connection, version and deadline:
/// let admins: Value = intercom
///     .request(http::Method::GET, "/admins")
///     .version("2.11")
///     .deadline(std::time::Duration::from_secs(5))
///     .send()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct IntercomClient {
    service: Stack,
}

impl fmt::Debug for IntercomClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntercomClient").finish_non_exhaustive()
    }
}

impl IntercomClient {
    /// A client for one access token (a private app's, or an OAuth token you hold), US region.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when the token cannot be sent in a header or TLS cannot be set up.
    pub fn new(access_token: &str) -> Result<Self, BuildError> {
        let token = StaticToken::new(access_token).map_err(|e| {
            BuildError::Blueprint(BlueprintError::new("access_token", e.to_string()))
        })?;
        Self::builder(token).client()
    }

    /// Settings: token source (per-connection tokens, OAuth2), region, version, base URL.
    pub fn builder(tokens: impl TokenSource) -> IntercomBuilder {
        IntercomBuilder::new(Arc::new(tokens))
    }

    /// `GET path`, the answer parsed as `T`.
    ///
    /// # Errors
    ///
    /// [`IntercomError`]: Intercom's error list, rate limit, re-authorization, timeout,
    /// transport, or a body that is not the `T` expected.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, IntercomError> {
        self.request(Method::GET, path).send().await
    }

    /// `POST path` with `body` as JSON.
    ///
    /// # Errors
    ///
    /// As [`IntercomClient::get`].
    pub async fn post<B, T>(&self, path: &str, body: &B) -> Result<T, IntercomError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.request(Method::POST, path).json(body)?.send().await
    }

    /// `PUT path` with `body` as JSON.
    ///
    /// # Errors
    ///
    /// As [`IntercomClient::get`].
    pub async fn put<B, T>(&self, path: &str, body: &B) -> Result<T, IntercomError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.request(Method::PUT, path).json(body)?.send().await
    }

    /// `DELETE path`.
    ///
    /// # Errors
    ///
    /// As [`IntercomClient::get`].
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, IntercomError> {
        self.request(Method::DELETE, path).send().await
    }

    /// A call with per-call settings: connection, version, deadline, query, body.
    pub fn request(&self, method: Method, path: &str) -> Call {
        Call {
            client: self.clone(),
            method,
            path: path.to_owned(),
            query: Vec::new(),
            body: None,
            connection: None,
            version: None,
            deadline: None,
            retry_safe: false,
        }
    }

    /// Sends a call. Boxed once per call: the stack's future is named through trait
    /// projections the compiler cannot prove `Send` for inside generic async code.
    pub(crate) fn execute(
        &self,
        call: Call,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, IntercomError>> + Send + 'static>> {
        let connection = call.connection.clone().unwrap_or_default();
        let request = match call.build() {
            Ok(request) => request,
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        // Boxed here, where its type is concrete: the stack's future is `Send`, but the
        // compiler cannot show it inside an `async` block (a higher-ranked lifetime
        // limitation of rustc).
        let response: ResponseFuture = Box::pin(self.service.clone().oneshot(request));
        Box::pin(finish(response, connection))
    }
}

type ResponseFuture = Pin<
    Box<
        dyn Future<Output = Result<http::Response<hyper::body::Incoming>, blueprint::Error>> + Send,
    >,
>;

async fn finish(
    response: ResponseFuture,
    connection: ConnectionId,
) -> Result<Bytes, IntercomError> {
    {
        let response = response.await.map_err(|e| stack_error(e, &connection))?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| IntercomError::Transport(e.into()))?
            .to_bytes();
        let status = parts.status;
        if status.is_success() {
            return Ok(bytes);
        }
        let api = ApiError::parse(status, &bytes);
        if status == StatusCode::UNAUTHORIZED
            || parts.extensions.get::<NeedsReauthorization>().is_some()
        {
            return Err(IntercomError::NeedsReauthorization {
                connection,
                api: Some(api),
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = parts
                .extensions
                .get::<RateLimit>()
                .and_then(RateLimit::retry_at)
                .map(|at| at.saturating_duration_since(Instant::now()))
                .or_else(|| {
                    parts
                        .headers
                        .get(RETRY_AFTER)
                        .and_then(|v| parse_retry_after(v, SystemTime::now()))
                });
            return Err(IntercomError::RateLimited {
                retry_after,
                sent: true,
                api: Some(api),
            });
        }
        Err(IntercomError::Api(api))
    }
}

fn stack_error(error: blueprint::Error, connection: &ConnectionId) -> IntercomError {
    if error.is_rate_limited() {
        return IntercomError::RateLimited {
            retry_after: error.retry_after(),
            sent: false,
            api: None,
        };
    }
    if error.needs_reauthorization() {
        return IntercomError::NeedsReauthorization {
            connection: error
                .connection()
                .cloned()
                .unwrap_or_else(|| connection.clone()),
            api: None,
        };
    }
    if error.is_timeout() {
        return IntercomError::Timeout(error.into_inner());
    }
    if error.is_invalid_path() || error.is_foreign_origin() {
        return IntercomError::InvalidRequest(error.into_inner());
    }
    if error.is_token_unavailable() {
        return IntercomError::TokenUnavailable(error.into_inner());
    }
    IntercomError::Transport(error.into_inner())
}

/// One call to Intercom with per-call settings; from [`IntercomClient::request`].
#[derive(Debug)]
#[must_use = "a call does nothing until it is sent"]
pub struct Call {
    client: IntercomClient,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Bytes>,
    connection: Option<ConnectionId>,
    version: Option<String>,
    deadline: Option<Duration>,
    retry_safe: bool,
}

impl Call {
    /// Uses this connection's token and rate-limit budget.
    pub fn connection(mut self, connection: impl Into<ConnectionId>) -> Self {
        self.connection = Some(connection.into());
        self
    }

    /// Sends this `Intercom-Version` (e.g. `"2.11"`, `"Preview"`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The whole call (retries and waits included) must finish within `budget`.
    pub fn deadline(mut self, budget: Duration) -> Self {
        self.deadline = Some(budget);
        self
    }

    /// Adds query parameters (percent-encoded here).
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, params: &[(K, V)]) -> Self {
        self.query.extend(
            params
                .iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    /// Declares the call safe to send twice (the caller knows it is idempotent).
    pub fn retry_safe(mut self) -> Self {
        self.retry_safe = true;
        self
    }

    /// Sends `body` as JSON.
    ///
    /// # Errors
    ///
    /// [`IntercomError::InvalidRequest`] when it does not serialize.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Self, IntercomError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| IntercomError::InvalidRequest(Box::new(e)))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }

    /// Sends the call and parses the answer as `T` (an empty answer parses as JSON `null`,
    /// so `()` and `Option<_>` work for calls that answer with nothing).
    ///
    /// # Errors
    ///
    /// [`IntercomError`].
    pub async fn send<T: DeserializeOwned>(self) -> Result<T, IntercomError> {
        let client = self.client.clone();
        let bytes = client.execute(self).await?;
        let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(text).map_err(|e| IntercomError::Decode {
            status: StatusCode::OK,
            message: e.to_string(),
        })
    }

    /// Sends the call and returns the raw body of a success.
    ///
    /// # Errors
    ///
    /// [`IntercomError`].
    pub async fn send_bytes(self) -> Result<Bytes, IntercomError> {
        let client = self.client.clone();
        client.execute(self).await
    }

    fn build(self) -> Result<Request<Full<Bytes>>, IntercomError> {
        let mut target = self.path;
        if !self.query.is_empty() {
            target.push(if target.contains('?') { '&' } else { '?' });
            for (i, (k, v)) in self.query.iter().enumerate() {
                if i > 0 {
                    target.push('&');
                }
                encode_into(&mut target, k);
                target.push('=');
                encode_into(&mut target, v);
            }
        }
        let mut builder = Request::builder().method(self.method).uri(target);
        if let Some(version) = &self.version {
            let value = HeaderValue::try_from(version.as_str()).map_err(|_| {
                IntercomError::InvalidRequest("the Intercom-Version is not a header value".into())
            })?;
            builder = builder.header("intercom-version", value);
        }
        if self.body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let mut request = builder
            .body(Full::new(self.body.unwrap_or_default()))
            .map_err(|e| IntercomError::InvalidRequest(Box::new(e)))?;
        let extensions = request.extensions_mut();
        if let Some(connection) = self.connection {
            extensions.insert(connection);
        }
        if let Some(budget) = self.deadline {
            extensions.insert(Deadline::after(budget));
        }
        if self.retry_safe {
            extensions.insert(RetrySafe);
        }
        Ok(request)
    }
}

fn encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 0xf)]));
        }
    }
}
