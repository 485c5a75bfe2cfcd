use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::{Level, Span, field};

use crate::layer::Levels;
use crate::redact::{Redaction, Shown};
use std::sync::Arc;

pin_project! {
    /// Response future of [`Trace`](crate::Trace).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        // `None` when nothing can be logged (no span and no event level enabled): the
        // call passes through without a clock read or a record.
        start: Option<Instant>,
        levels: Levels,
        // Only set when response headers are logged.
        response_headers: Option<Arc<Redaction>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        span: Span,
        levels: Levels,
        response_headers: Option<Arc<Redaction>>,
    ) -> Self {
        ResponseFuture {
            inner,
            span,
            start: Some(Instant::now()),
            levels,
            response_headers,
        }
    }

    /// A call nothing will be logged about.
    pub(crate) fn quiet(inner: F, levels: Levels) -> Self {
        ResponseFuture {
            inner,
            span: Span::none(),
            start: None,
            levels,
            response_headers: None,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

/// Emits an event at a level chosen at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::event!(Level::ERROR, $($rest)+),
            Level::WARN => tracing::event!(Level::WARN, $($rest)+),
            Level::INFO => tracing::event!(Level::INFO, $($rest)+),
            Level::DEBUG => tracing::event!(Level::DEBUG, $($rest)+),
            _ => tracing::event!(Level::TRACE, $($rest)+),
        }
    };
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(start) = *this.start else {
            return this.inner.poll(cx);
        };
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        let elapsed = start.elapsed();
        // Whole microseconds, so the field prints without float noise.
        #[allow(clippy::cast_precision_loss)]
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        let span = &*this.span;
        span.record("duration_ms", duration_ms);

        match &result {
            Ok(response) => {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                if let Some(redaction) = this.response_headers {
                    let headers = redaction.headers(response.headers());
                    span.record("http.response.headers", field::debug(Shown(&headers)));
                }
                if let Some(attempt) = response.extensions().get::<blueprint_core::Attempt>() {
                    span.record("http.request.resend_count", attempt.resends());
                }
                let level = if status.is_server_error() {
                    span.record("error.type", status.as_str());
                    this.levels.server_error
                } else if status.is_client_error() {
                    span.record("error.type", status.as_str());
                    this.levels.client_error
                } else {
                    this.levels.success
                };
                event_at!(
                    level,
                    http.response.status_code = status.as_u16(),
                    duration_ms,
                    "request finished"
                );
            }
            Err(error) => {
                span.record("error.type", "_OTHER");
                event_at!(
                    this.levels.failure,
                    error = %error,
                    duration_ms,
                    "request failed"
                );
            }
        }
        Poll::Ready(result)
    }
}
