use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use blueprint_core::{
    Attempt, BoxError, Buffer, Deadline, RateLimit, ReplayBody, parse_retry_after,
};
use http::header::RETRY_AFTER;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::config::server_wait_jitter;
use crate::error::DeadlineExceeded;
use crate::layer::Shared;
use crate::policy::{Outcome, RequestInfo, RetryPolicy};

pin_project! {
    /// Response future of [`Retry`](crate::Retry).
    pub struct ResponseFuture<F, S, B, P> {
        #[pin]
        state: State<F, B>,
        // Fires when the call's deadline passes; only set when there is a deadline. Boxed,
        // like the other rarely used states, to keep the future small: it is moved on
        // every call and nested in every layer above.
        deadline_timer: Option<Pin<Box<Sleep>>>,
        // The service of the next call: the one polled ready by our caller while the body is
        // read, else made from `spare` when a retry comes.
        service: Option<Box<S>>,
        // A clone of the inner service made when the layer was applied: a retry clones it,
        // so the common call (no retry) pays one reference count, not a clone of the stack.
        spare: Arc<S>,
        shared: Arc<Shared<P>>,
        // The request head and body to send again; `None` once no retry is possible. Boxed:
        // the future stays small (it is moved on every call and nested in the layers above).
        kept: Option<Box<Kept<B>>>,
        attempt: Attempt,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Buffering { buffer: Box<Buffer<B>> },
        Calling { #[pin] future: F },
        Waiting { sleep: Pin<Box<Sleep>> },
        Readying,
        Failed { error: Option<BoxError> },
    }
}

/// What a retry sends again. `body` is `None` while the first body is still being read.
struct Kept<B> {
    parts: Parts,
    body: Option<ReplayBody<B>>,
}

enum Decision<T> {
    Return(Result<T, BoxError>),
    RetryAfter(Duration),
}

impl<F, S, B, P> ResponseFuture<F, S, B, P>
where
    S: Service<Request<ReplayBody<B>>, Future = F> + Clone,
    B: Body,
{
    fn with_state(
        state: State<F, B>,
        service: Option<Box<S>>,
        spare: Arc<S>,
        shared: Arc<Shared<P>>,
        kept: Option<Box<Kept<B>>>,
        deadline: Option<Deadline>,
    ) -> Self {
        let timer = shared.deadline_timer;
        ResponseFuture {
            state,
            deadline_timer: deadline
                .filter(|_| timer)
                .map(|d| Box::pin(tokio::time::sleep_until(d.instant()))),
            service,
            spare,
            shared,
            kept,
            attempt: Attempt::FIRST,
        }
    }

    /// Sends the first attempt on `ready`, the service our caller polled ready.
    pub(crate) fn start(
        ready: &mut S,
        spare: Arc<S>,
        shared: Arc<Shared<P>>,
        parts: Parts,
        body: ReplayBody<B>,
        deadline: Option<Deadline>,
    ) -> Self {
        let mut future = Self::with_state(State::Readying, None, spare, shared, None, deadline);
        let request = future.first_request(parts, body);
        let call = ready.call(request);
        future.state = State::Calling { future: call };
        future
    }

    /// Reads the body first; `ready` is the service our caller polled ready, moved here.
    pub(crate) fn buffering(
        ready: S,
        spare: Arc<S>,
        shared: Arc<Shared<P>>,
        parts: Parts,
        buffer: Buffer<B>,
        deadline: Option<Deadline>,
    ) -> Self {
        Self::with_state(
            State::Buffering {
                buffer: Box::new(buffer),
            },
            Some(Box::new(ready)),
            spare,
            shared,
            Some(Box::new(Kept { parts, body: None })),
            deadline,
        )
    }

    pub(crate) fn expired(spare: Arc<S>, shared: Arc<Shared<P>>) -> Self {
        let error = DeadlineExceeded {
            attempts: 0,
            budget: shared.total,
        };
        let state = State::Failed {
            error: Some(error.into()),
        };
        let mut future = Self::with_state(state, None, spare, shared, None, None);
        future.deadline_timer = None;
        future
    }
}

impl<F, S, B, P> ResponseFuture<F, S, B, P> {
    /// The request of the first attempt; keeps the head and body for retries when a retry
    /// is possible at all.
    fn first_request(&mut self, parts: Parts, body: ReplayBody<B>) -> Request<ReplayBody<B>> {
        first_request(self.shared.max_attempts, parts, body, &mut self.kept)
    }
}

fn first_request<B>(
    max_attempts: u32,
    parts: Parts,
    body: ReplayBody<B>,
    kept: &mut Option<Box<Kept<B>>>,
) -> Request<ReplayBody<B>> {
    if max_attempts > 1 {
        if let Some(copy) = body.try_clone() {
            *kept = Some(Box::new(Kept {
                parts: parts.clone(),
                body: Some(body),
            }));
            return Request::from_parts(parts, copy);
        }
        tracing::debug!(
            "request body is larger than the replay cap or of unknown length: \
             it is sent once and the request will not be retried"
        );
    }
    Request::from_parts(parts, body)
}

impl<F, S, B, P> fmt::Debug for ResponseFuture<F, S, B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Buffering { .. } => "buffering the body",
            State::Calling { .. } => "calling",
            State::Waiting { .. } => "waiting to retry",
            State::Readying => "waiting for the service",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempt", &self.attempt.number())
            .finish_non_exhaustive()
    }
}

impl<F, S, B, P, ResB, E> Future for ResponseFuture<F, S, B, P>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>, Error = E, Future = F> + Clone,
    E: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
    P: RetryPolicy,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(timer) = this.deadline_timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                // Waits are only started when they end before the deadline, so reaching it
                // means an attempt (or the body, or the service's readiness) outlived it.
                let attempts = match this.state.as_ref().get_ref() {
                    State::Buffering { .. } => 0,
                    _ => this.attempt.number(),
                };
                *this.deadline_timer = None;
                this.state.set(State::Failed { error: None });
                return Poll::Ready(Err(DeadlineExceeded {
                    attempts,
                    budget: this.shared.total,
                }
                .into()));
            }
        }
        loop {
            match this.state.as_mut().project() {
                StateProj::Buffering { buffer } => {
                    let body = match ready!(Pin::new(&mut **buffer).poll(cx)) {
                        Ok(body) => body,
                        Err(error) => {
                            this.state.set(State::Failed { error: None });
                            return Poll::Ready(Err(error));
                        }
                    };
                    let Some(parts) = this.kept.take().map(|kept| kept.parts) else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let request = first_request(this.shared.max_attempts, parts, body, this.kept);
                    let Some(service) = this.service.as_mut() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    match decide(result, this.shared, this.kept.as_deref(), *this.attempt) {
                        Decision::Return(mut result) => {
                            this.state.set(State::Failed { error: None });
                            *this.deadline_timer = None;
                            if this.attempt.number() > 1 {
                                if let Ok(response) = &mut result {
                                    response.extensions_mut().insert(*this.attempt);
                                }
                            }
                            return Poll::Ready(result);
                        }
                        Decision::RetryAfter(wait) => {
                            *this.attempt = this.attempt.next();
                            // The service that made the last attempt must be polled ready
                            // again; a fresh clone is as good.
                            if this.service.is_none() {
                                *this.service = Some(Box::new(S::clone(this.spare)));
                            }
                            this.state.set(State::Waiting {
                                sleep: Box::pin(tokio::time::sleep(wait)),
                            });
                        }
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let Some(service) = this.service.as_mut() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.state.set(State::Failed { error: None });
                        return Poll::Ready(Err(error.into()));
                    }
                    let last = this.attempt.number() >= this.shared.max_attempts;
                    // The last attempt takes the kept head and body instead of copying them.
                    let (parts, body) = match this.kept.take() {
                        Some(kept) if last => (Some(kept.parts), kept.body),
                        Some(kept) => {
                            let copy = (
                                Some(kept.parts.clone()),
                                kept.body.as_ref().and_then(ReplayBody::try_clone),
                            );
                            *this.kept = Some(kept);
                            copy
                        }
                        None => (None, None),
                    };
                    let (Some(mut parts), Some(body)) = (parts, body) else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    parts.extensions.insert(*this.attempt);
                    let future = service.call(Request::from_parts(parts, body));
                    this.state.set(State::Calling { future });
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(polled_after_completion)));
                }
            }
        }
    }
}

fn polled_after_completion() -> BoxError {
    "retry future polled after completion".into()
}

/// Whether to hand `result` back or retry, and after how long.
fn decide<ResB, B, P: RetryPolicy>(
    result: Result<Response<ResB>, BoxError>,
    shared: &Shared<P>,
    kept: Option<&Kept<B>>,
    attempt: Attempt,
) -> Decision<Response<ResB>> {
    // Nothing kept: retries are off, the body cannot be replayed, or this was the last.
    let Some(Kept {
        parts,
        body: Some(_),
    }) = kept
    else {
        return Decision::Return(result);
    };
    let info = RequestInfo {
        method: &parts.method,
        uri: &parts.uri,
        extensions: &parts.extensions,
        attempt,
    };
    let outcome = match &result {
        Ok(response) => Outcome::Response {
            status: response.status(),
            headers: response.headers(),
        },
        Err(error) => Outcome::Error(&**error),
    };
    let Some(reason) = shared.policy.classify(&info, &outcome) else {
        return Decision::Return(result);
    };
    if attempt.number() >= shared.max_attempts {
        return Decision::Return(result);
    }

    let now = Instant::now();
    let server_wait = result.as_ref().ok().and_then(|r| server_wait(r, now));
    let deadline = parts.extensions.get::<Deadline>().copied();
    let wait = match server_wait {
        Some(wait) => {
            if wait > shared.max_server_wait {
                tracing::info!(
                    attempt = attempt.number(),
                    %reason,
                    server_wait_ms = millis(wait),
                    max_server_wait_ms = millis(shared.max_server_wait),
                    "not retrying: the server asked to wait longer than the longest wait allowed"
                );
                return Decision::Return(result);
            }
            // Exactly the server's wait plus a little jitter, but never past the deadline.
            let room = deadline.map_or(Duration::MAX, |d| {
                d.instant()
                    .saturating_duration_since(now)
                    .saturating_sub(wait)
            });
            wait + server_wait_jitter(wait).min(room / 2)
        }
        None => shared.backoff.delay(attempt.number()),
    };
    if let Some(deadline) = deadline {
        if now + wait >= deadline.instant() {
            tracing::info!(
                attempt = attempt.number(),
                %reason,
                wait_ms = millis(wait),
                remaining_ms = millis(deadline.remaining()),
                "not retrying: the wait would pass the call's deadline"
            );
            return Decision::Return(result);
        }
    }
    if !shared.budget.withdraw() {
        tracing::info!(
            attempt = attempt.number(),
            %reason,
            "not retrying: the retry budget is spent"
        );
        return Decision::Return(result);
    }
    match &result {
        Ok(_) => tracing::info!(
            attempt = attempt.number() + 1,
            %reason,
            wait_ms = millis(wait),
            server_directed = server_wait.is_some(),
            "retrying"
        ),
        Err(error) => tracing::info!(
            attempt = attempt.number() + 1,
            %reason,
            wait_ms = millis(wait),
            error = %error,
            "retrying"
        ),
    }
    Decision::RetryAfter(wait)
}

/// The wait the server asked for: the rate-limit layer's parsed [`RateLimit`], else the
/// response's own `Retry-After`.
fn server_wait<B>(response: &Response<B>, now: Instant) -> Option<Duration> {
    if let Some(at) = response
        .extensions()
        .get::<RateLimit>()
        .and_then(RateLimit::retry_at)
    {
        return Some(at.saturating_duration_since(now));
    }
    let value = response.headers().get(RETRY_AFTER)?;
    parse_retry_after(value, SystemTime::now())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
