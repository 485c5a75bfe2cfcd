use std::sync::Arc;
use std::task::{Context, Poll};

use blueprint_core::{ConnectionId, Target};
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

impl Levels {
    /// Whether an event at any of these levels could be enabled by the subscribers
    /// installed now (`tracing`'s global level hint: `false` when there is none).
    fn could_log(&self) -> bool {
        let max = tracing::level_filters::LevelFilter::current();
        [
            self.success,
            self.client_error,
            self.server_error,
            self.failure,
        ]
        .into_iter()
        .any(|level| level <= max)
    }
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
    raw_path: bool,
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
                raw_path: false,
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

    /// Also records the raw path (`url.path`), ids and all. Off by default: a call is named
    /// by its route (`url.template`) instead.
    #[must_use]
    pub fn log_raw_path(self) -> Self {
        self.edit(|c| c.raw_path = true)
    }

    /// The `server.address` recorded for requests with a relative URI and no
    /// [`Target`](blueprint_core::Target) (when this layer sits above the one that adds the
    /// base URL, in a stack of your own).
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
                    otel.kind = "client",
                    otel.name = field::Empty,
                    http.request.method = request.method().as_str(),
                    server.address = field::Empty,
                    server.port = field::Empty,
                    url.template = field::Empty,
                    url.path = field::Empty,
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
        if self.config.span_level > tracing::level_filters::LevelFilter::current() {
            // No subscriber installed now could enable the span (`tracing`'s global level
            // hint): skip building a disabled one, which costs its callsite check and the
            // `log` compatibility path on every call.
            return Span::none();
        }
        let span = match self.config.span_level {
            Level::ERROR => span_at!(Level::ERROR),
            Level::WARN => span_at!(Level::WARN),
            Level::INFO => span_at!(Level::INFO),
            Level::DEBUG => span_at!(Level::DEBUG),
            _ => span_at!(Level::TRACE),
        };
        if span.is_disabled() {
            // No subscriber wants it: `Span::none()` makes entering it free (a disabled span
            // still runs the `log` crate compatibility path on every enter and exit).
            return Span::none();
        }
        let uri = request.uri();
        let target = Target::of(request);
        match (target, uri.host()) {
            (Some(target), _) => {
                let origin = target.origin();
                span.record("server.address", origin.host());
                span.record("server.port", origin.port());
            }
            (None, Some(host)) => {
                span.record("server.address", host);
                let https = uri.scheme_str() == Some("https");
                span.record(
                    "server.port",
                    uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
                );
            }
            (None, None) => {
                if let Some(host) = &self.config.server_address {
                    span.record("server.address", &**host);
                }
            }
        }
        let method = request.method().as_str();
        match target.and_then(Target::route) {
            Some(route) => {
                span.record("url.template", route);
                span.record("otel.name", format!("{method} {route}").as_str());
            }
            None => {
                let template = redacted_path(uri.path());
                span.record("url.template", template.as_str());
                span.record("otel.name", format!("{method} {template}").as_str());
            }
        }
        if self.config.raw_path {
            span.record("url.path", uri.path());
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
        if span.is_none() && !self.config.levels.could_log() {
            return ResponseFuture::quiet(self.inner.call(request), self.config.levels);
        }
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

/// A path with no route template, made safe to log: every segment that may be an id — it
/// holds a digit or a percent-encoded byte, or is longer than 32 bytes — becomes `{}`.
fn redacted_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let id_like =
            segment.len() > 32 || segment.bytes().any(|b| b.is_ascii_digit() || b == b'%');
        out.push_str(if id_like { "{}" } else { segment });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redacted_path;

    #[test]
    fn paths_without_a_route_are_logged_without_ids() {
        assert_eq!(
            redacted_path("/contacts/6657a3c0b2b0e4d9/tags"),
            "/contacts/{}/tags"
        );
        assert_eq!(
            redacted_path("/conversations/123456789"),
            "/conversations/{}"
        );
        assert_eq!(redacted_path("/contacts/search"), "/contacts/search");
        assert_eq!(redacted_path("/users/jane%40example.com"), "/users/{}");
        assert_eq!(redacted_path("/"), "/");
        let long = format!("/tokens/{}", "a".repeat(40));
        assert_eq!(redacted_path(&long), "/tokens/{}");
    }
}

#[cfg(test)]
mod quiet_tests {
    use std::sync::{Arc, Mutex};

    use http::{Request, Response, StatusCode};
    use tower::{ServiceExt, service_fn};

    use super::TraceLayer;
    use tower_layer::Layer;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn call(status: StatusCode) {
        let inner = service_fn(move |_req: Request<()>| async move {
            let mut response = Response::new(());
            *response.status_mut() = status;
            Ok::<_, std::convert::Infallible>(response)
        });
        let service = TraceLayer::new().layer(inner);
        let request = Request::get("https://api.example.com/contacts")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = service.oneshot(request).await;
    }

    /// The span (INFO) is off under a WARN subscriber, but the WARN event of a 404 is not:
    /// the call must not take the quiet way that skips it.
    #[tokio::test]
    async fn events_are_kept_when_only_the_span_is_filtered_out() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        call(StatusCode::NOT_FOUND).await;
        call(StatusCode::OK).await;
        let text = String::from_utf8(
            buffer
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
        .unwrap_or_default();
        assert_eq!(text.matches("request finished").count(), 1, "{text}");
        assert!(text.contains("status_code=404"), "{text}");
    }
}
