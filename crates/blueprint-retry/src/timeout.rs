//! The attempt timeout: bounds one network attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use blueprint_core::{Attempt, AttemptCount, BoxError, Deadline, instant_after};
use http::Request;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::error::DeadlineExceeded;
use tower_layer::Layer;
use tower_service::Service;

/// One attempt took longer than the attempt timeout. Distinct from
/// [`DeadlineExceeded`](crate::DeadlineExceeded), which ends the whole call: after this
/// error the retry layer may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimeoutError {
    after: Duration,
}

impl AttemptTimeoutError {
    /// The error for an attempt cut after `after`.
    pub fn new(after: Duration) -> Self {
        AttemptTimeoutError { after }
    }

    /// The timeout that was reached.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for AttemptTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the attempt got no response within {} ms",
            self.after.as_millis()
        )
    }
}

impl std::error::Error for AttemptTimeoutError {}

/// Layer that applies [`AttemptTimeout`].
///
/// Place it low in the stack, right above the HTTP client, so that only the network
/// attempt counts: waits for a rate-limit budget or a token refresh above it do not.
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    timeout: Option<Duration>,
}

impl AttemptTimeoutLayer {
    /// Bounds each attempt to `timeout`.
    pub fn new(timeout: Duration) -> Self {
        AttemptTimeoutLayer {
            timeout: Some(timeout),
        }
    }

    /// Bounds nothing: the layer passes calls through. For stacks where a place for the
    /// layer is fixed but no timeout is wanted (long polls), and for tests that talk to a
    /// real socket with tokio's clock paused (a pending timer would make the paused clock
    /// jump to it while the socket is read).
    pub fn disabled() -> Self {
        AttemptTimeoutLayer { timeout: None }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Fails an attempt with [`AttemptTimeoutError`] when the inner service takes longer than
/// the timeout to answer (to produce the response head; the body is not bounded), or with
/// [`DeadlineExceeded`] when the request's [`Deadline`] comes first.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S> AttemptTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        AttemptTimeout {
            inner,
            timeout: Some(timeout),
        }
    }

    /// A layer that wraps services in this middleware.
    pub fn layer(timeout: Duration) -> AttemptTimeoutLayer {
        AttemptTimeoutLayer::new(timeout)
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
}

impl<S, B> Service<Request<B>> for AttemptTimeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // One timer for both limits: whichever of the timeout and the call's deadline
        // comes first.
        let deadline = Deadline::of(&request);
        let (at, cut) = match (self.timeout, deadline) {
            (Some(after), Some(deadline)) => {
                let timeout_at = instant_after(Instant::now(), after);
                if deadline.instant() < timeout_at {
                    (Some(deadline.instant()), Cut::Deadline)
                } else {
                    (Some(timeout_at), Cut::Timeout(after))
                }
            }
            (Some(after), None) => (
                Some(instant_after(Instant::now(), after)),
                Cut::Timeout(after),
            ),
            (None, Some(deadline)) => (Some(deadline.instant()), Cut::Deadline),
            (None, None) => (None, Cut::Deadline),
        };
        let extensions = request.extensions();
        let attempt = extensions.get::<Attempt>().copied().unwrap_or_default();
        // This is the step before the network: what goes through it is sent.
        if let Some(count) = extensions.get::<AttemptCount>() {
            count.record(attempt);
        }
        let attempt = attempt.number();
        TimeoutFuture {
            inner: self.inner.call(request),
            at,
            sleep: None,
            cut,
            attempt,
        }
    }
}

pin_project! {
    /// Response future of [`AttemptTimeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        // When the attempt is cut, fixed when it starts.
        at: Option<Instant>,
        // The timer, made the first time the attempt is not done at once: an answer that
        // is ready on the first poll (a cache, an in-process service) costs no timer.
        #[pin]
        sleep: Option<Sleep>,
        cut: Cut,
        attempt: u32,
    }
}

/// What the timer of a [`TimeoutFuture`] stands for.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Timeout(Duration),
    Deadline,
}

impl<F> fmt::Debug for TimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        if this.sleep.is_none() {
            match *this.at {
                Some(at) => this.sleep.set(Some(sleep_until(at))),
                None => return Poll::Pending,
            }
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(match *this.cut {
                Cut::Timeout(after) => AttemptTimeoutError::new(after).into(),
                Cut::Deadline => DeadlineExceeded {
                    attempts: *this.attempt,
                    budget: None,
                }
                .into(),
            })),
            Some(Poll::Pending) | None => Poll::Pending,
        }
    }
}
