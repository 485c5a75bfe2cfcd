use std::sync::Arc;
use std::task::{Context, Poll};

use blueprint_core::ConnectionId;
use http::{HeaderName, Request, Response};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Level, Span, field};

use crate::future::ResponseFuture;
use crate::redact::{Redaction, Shown};

/// The level of the event emitted when a call ends, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// A response with a 1xx, 2xx or 3xx status. Default [`Level::DEBUG`].
    pub success: Level,
    /// A response with a 4xx status. Default [`Level::WARN`].
    pub client_error: Level,
    /// A response with a 5xx status. Default [`Level::ERROR`].
    pub server_error: Level,
    /// An error instead of a response. Default [`Level::ERROR`].
    pub failure: Level,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            success: Level::DEBUG,
            client_error: Level::WARN,
            server_error: Level::ERROR,
            failure: Level::ERROR,
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    span_level: Level,
    levels: Levels,
    redaction: Arc<Redaction>,
    request_headers: bool,
    response_headers: bool,
    server_address: Option<Arc<str>>,
}

/// Layer that applies [`Trace`]; see the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct TraceLayer {
    config: Arc<Config>,
}

impl Default for TraceLayer {
    fn default() -> Self {
        TraceLayer::new()
    }
}

impl TraceLayer {
    /// The defaults: span at INFO, events at the [`Levels::default`] levels, no headers,
    /// no query.
    pub fn new() -> Self {
        TraceLayer {
            config: Arc::new(Config {
                span_level: Level::INFO,
                levels: Levels::default(),
                redaction: Arc::default(),
                request_headers: false,
                response_headers: false,
                server_address: None,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// The level of the per-call span. Default [`Level::INFO`].
    #[must_use]
    pub fn span_level(self, level: Level) -> Self {
        self.edit(|c| c.span_level = level)
    }

    /// The levels of the end event for every outcome.
    #[must_use]
    pub fn levels(self, levels: Levels) -> Self {
        self.edit(|c| c.levels = levels)
    }

    /// The level of the end event for a success (1xx–3xx).
    #[must_use]
    pub fn success_level(self, level: Level) -> Self {
        self.edit(|c| c.levels.success = level)
    }

    /// The level of the end event for a 4xx.
    #[must_use]
    pub fn client_error_level(self, level: Level) -> Self {
        self.edit(|c| c.levels.client_error = level)
    }

    /// The level of the end event for a 5xx.
    #[must_use]
    pub fn server_error_level(self, level: Level) -> Self {
        self.edit(|c| c.levels.server_error = level)
    }

    /// The level of the end event for an error.
    #[must_use]
    pub fn failure_level(self, level: Level) -> Self {
        self.edit(|c| c.levels.failure = level)
    }

    /// Records the request headers (as `http.request.headers`), secrets redacted.
    #[must_use]
    pub fn log_request_headers(self) -> Self {
        self.edit(|c| c.request_headers = true)
    }

    /// Records the response headers (as `http.response.headers`), secrets redacted.
    #[must_use]
    pub fn log_response_headers(self) -> Self {
        self.edit(|c| c.response_headers = true)
    }

    /// Hides the value of one more header, e.g. `x-api-key`, when headers are logged.
    #[must_use]
    pub fn redact_header(self, name: HeaderName) -> Self {
        self.edit(|c| Arc::make_mut(&mut c.redaction).extra_headers.push(name))
    }

    /// Shows the values of these query parameters (as `url.query`); the values of all
    /// others are redacted. By default the query is left out.
    #[must_use]
    pub fn show_query_params<I, P>(self, params: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.edit(|c| {
            Arc::make_mut(&mut c.redaction)
                .query_params
                .extend(params.into_iter().map(Into::into));
        })
    }

    /// The `server.address` recorded for requests with a relative URI (when this layer sits
    /// above the one that adds the base URL).
    #[must_use]
    pub fn server_address(self, host: impl Into<Arc<str>>) -> Self {
        let host = host.into();
        self.edit(|c| c.server_address = Some(host))
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// Middleware that traces each call; see the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Trace<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        TraceLayer::new().layer(inner)
    }

    /// A layer with the default settings.
    pub fn layer() -> TraceLayer {
        TraceLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn make_span<B>(&self, request: &Request<B>) -> Span {
        macro_rules! span_at {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "http.client",
                    http.request.method = request.method().as_str(),
                    server.address = field::Empty,
                    server.port = field::Empty,
                    url.path = request.uri().path(),
                    url.query = field::Empty,
                    blueprint.connection_id = field::Empty,
                    http.request.headers = field::Empty,
                    http.response.status_code = field::Empty,
                    http.response.headers = field::Empty,
                    http.request.resend_count = field::Empty,
                    error.type = field::Empty,
                    duration_ms = field::Empty,
                )
            };
        }
        let span = match self.config.span_level {
            Level::ERROR => span_at!(Level::ERROR),
            Level::WARN => span_at!(Level::WARN),
            Level::INFO => span_at!(Level::INFO),
            Level::DEBUG => span_at!(Level::DEBUG),
            _ => span_at!(Level::TRACE),
        };
        if span.is_disabled() {
            return span;
        }
        let uri = request.uri();
        match uri.host() {
            Some(host) => {
                span.record("server.address", host);
            }
            None => {
                if let Some(host) = &self.config.server_address {
                    span.record("server.address", &**host);
                }
            }
        }
        if let Some(port) = uri.port_u16() {
            span.record("server.port", port);
        }
        if let Some(connection) = request.extensions().get::<ConnectionId>() {
            span.record("blueprint.connection_id", connection.as_str());
        }
        if let Some(query) = self.config.redaction.query(uri.query()) {
            span.record("url.query", query.as_str());
        }
        if self.config.request_headers {
            let headers = self.config.redaction.headers(request.headers());
            span.record("http.request.headers", field::debug(Shown(&headers)));
        }
        span
    }
}

impl<S, B, ResB> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = self.make_span(&request);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let response_headers = self
            .config
            .response_headers
            .then(|| Arc::clone(&self.config.redaction));
        ResponseFuture::new(future, span, self.config.levels, response_headers)
    }
}
