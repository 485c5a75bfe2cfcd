use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use blueprint_core::{
    Attempt, BoxError, CredentialsRefreshed, Deadline, Event, KeptRequest, RateLimit,
    ReplayAfterRefresh, ReplayBody, RetryStop, parse_retry_after,
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
        state: State<F>,
        // Fires when the call's deadline passes; only set when there is a deadline and the
        // layer's own timer is on. Boxed, like the other rarely used states, to keep the
        // future small: it is moved on every call and nested in every layer above.
        deadline_timer: Option<Pin<Box<Sleep>>>,
        // The service of the next attempt, cloned from `spare` when a retry comes.
        service: Option<Box<S>>,
        // A clone of the inner service made when the layer was applied: a retry clones it,
        // so the common call (no retry) pays one reference count, not a clone of the stack.
        spare: Arc<S>,
        shared: Arc<Shared<P>>,
        // What is needed to send the request again; `None` once no retry is possible.
        // Boxed: the future stays small.
        kept: Option<Box<KeptRequest<B>>>,
        attempt: Attempt,
        // Whether the one replay after a token refresh has been made.
        replayed_after_refresh: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Waiting { sleep: Pin<Box<Sleep>> },
        Readying,
        Failed { error: Option<BoxError> },
    }
}

enum Decision<T> {
    Return(Result<T, BoxError>),
    RetryAfter(Duration),
    ReplayNow,
}

impl<F, S, B, P> ResponseFuture<F, S, B, P>
where
    S: Service<Request<ReplayBody<B>>, Future = F> + Clone,
    B: Body,
{
    pub(crate) fn start(
        ready: &mut S,
        spare: Arc<S>,
        shared: Arc<Shared<P>>,
        parts: Parts,
        body: ReplayBody<B>,
        deadline: Option<Deadline>,
    ) -> Self {
        let keep = shared.max_attempts > 1 || shared.replay_after_refresh;
        let kept = match body.replayer() {
            Some(replay) if keep => Some(Box::new(KeptRequest::of(&parts, replay))),
            Some(_) => None,
            None => {
                if keep {
                    tracing::debug!(
                        "request body is larger than the replay cap: it is sent once and \
                         the request will not be retried"
                    );
                }
                None
            }
        };
        let future = ready.call(Request::from_parts(parts, body));
        let timer = shared.deadline_timer;
        ResponseFuture {
            state: State::Calling { future },
            deadline_timer: deadline
                .filter(|_| timer)
                .map(|d| Box::pin(tokio::time::sleep_until(d.instant()))),
            service: None,
            spare,
            shared,
            kept,
            attempt: Attempt::FIRST,
            replayed_after_refresh: false,
        }
    }

    pub(crate) fn expired(spare: Arc<S>, shared: Arc<Shared<P>>) -> Self {
        let error = DeadlineExceeded {
            attempts: 0,
            budget: shared.total,
        };
        ResponseFuture {
            state: State::Failed {
                error: Some(error.into()),
            },
            deadline_timer: None,
            service: None,
            spare,
            shared,
            kept: None,
            attempt: Attempt::FIRST,
            replayed_after_refresh: false,
        }
    }
}

impl<F, S, B, P> fmt::Debug for ResponseFuture<F, S, B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
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
    B: Body,
    P: RetryPolicy,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(timer) = this.deadline_timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                // Waits are only started when they end before the deadline, so reaching it
                // means an attempt (or the service's readiness) outlived it.
                *this.deadline_timer = None;
                this.state.set(State::Failed { error: None });
                return Poll::Ready(Err(DeadlineExceeded {
                    attempts: this.attempt.number(),
                    budget: this.shared.total,
                }
                .into()));
            }
        }
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let decision = decide(
                        result,
                        this.shared,
                        this.kept.as_deref(),
                        *this.attempt,
                        *this.replayed_after_refresh,
                    );
                    let wait = match decision {
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
                        Decision::RetryAfter(wait) => Some(wait),
                        Decision::ReplayNow => {
                            *this.replayed_after_refresh = true;
                            None
                        }
                    };
                    *this.attempt = this.attempt.next();
                    // The service that made the last attempt must be polled ready again; a
                    // fresh clone is as good.
                    if this.service.is_none() {
                        *this.service = Some(Box::new(S::clone(this.spare)));
                    }
                    match wait {
                        Some(wait) => this.state.set(State::Waiting {
                            sleep: Box::pin(tokio::time::sleep(wait)),
                        }),
                        None => this.state.set(State::Readying),
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
                    let Some(mut request) = this.kept.as_ref().and_then(|k| k.request()) else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    request.extensions_mut().insert(*this.attempt);
                    if *this.replayed_after_refresh {
                        request.extensions_mut().insert(ReplayAfterRefresh);
                    }
                    let last = this.attempt.number() >= this.shared.max_attempts;
                    if last && !this.shared.replay_after_refresh {
                        // Nothing can follow this attempt: the copy is no longer needed.
                        *this.kept = None;
                    }
                    let future = service.call(request);
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

fn decide<ResB, B: Body, P: RetryPolicy>(
    result: Result<Response<ResB>, BoxError>,
    shared: &Shared<P>,
    kept: Option<&KeptRequest<B>>,
    attempt: Attempt,
    replayed_after_refresh: bool,
) -> Decision<Response<ResB>> {
    // Nothing kept: retries are off, or the body cannot be replayed.
    let Some(kept) = kept.filter(|k| k.is_ready()) else {
        return Decision::Return(result);
    };
    // A 401 after which the refresh layer renewed the credentials: the request was not
    // processed, so it is sent again at once, whatever its method, once per call.
    if let Ok(response) = &result {
        if !replayed_after_refresh
            && shared.replay_after_refresh
            && response
                .extensions()
                .get::<CredentialsRefreshed>()
                .is_some()
        {
            shared.events.emit(&Event::ReplayAfterRefresh {
                connection: kept.connection(),
            });
            tracing::debug!(
                attempt = attempt.number() + 1,
                "sending the request again with the refreshed credentials"
            );
            return Decision::ReplayNow;
        }
    }
    if attempt.number() >= shared.max_attempts {
        return Decision::Return(result);
    }
    let mut info = RequestInfo::new(kept.method(), kept.uri(), kept.other_extensions(), attempt);
    info.retry_safe = kept.retry_safe();
    info.connection = kept.connection();
    info.target = kept.target();
    let outcome = match &result {
        Ok(response) => Outcome::Response {
            // An answer the rate-limit layer found rate limited (GitHub's 403 with
            // `X-RateLimit-Remaining: 0`) is what a 429 is.
            status: if response
                .extensions()
                .get::<RateLimit>()
                .is_some_and(|r| r.limited)
            {
                http::StatusCode::TOO_MANY_REQUESTS
            } else {
                response.status()
            },
            headers: response.headers(),
        },
        Err(error) => Outcome::Error(&**error),
    };
    let Some(reason) = shared.policy.classify(&info, &outcome) else {
        return Decision::Return(result);
    };

    let connection = kept.connection();
    let stopped = |stop: RetryStop| {
        shared.events.emit(&Event::RetryStopped {
            connection,
            attempts: attempt.number(),
            reason,
            stop,
        });
    };
    let now = Instant::now();
    let server_wait = result.as_ref().ok().and_then(|r| server_wait(r, now));
    let deadline = kept.deadline();
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
                stopped(RetryStop::ServerWaitTooLong);
                return Decision::Return(result);
            }
            // Exactly the server's wait plus a little jitter, but never past the deadline.
            let room = deadline.map_or(Duration::MAX, |d| {
                d.instant()
                    .saturating_duration_since(now)
                    .saturating_sub(wait)
            });
            wait.saturating_add(server_wait_jitter(wait).min(room / 2))
        }
        None => shared.backoff.delay(attempt.number()),
    };
    if let Some(deadline) = deadline {
        if now
            .checked_add(wait)
            .is_none_or(|at| at >= deadline.instant())
        {
            tracing::info!(
                attempt = attempt.number(),
                %reason,
                wait_ms = millis(wait),
                remaining_ms = millis(deadline.remaining()),
                "not retrying: the wait would pass the call's deadline"
            );
            stopped(RetryStop::Deadline);
            return Decision::Return(result);
        }
    }
    if !shared.budget.withdraw() {
        tracing::info!(
            attempt = attempt.number(),
            %reason,
            "not retrying: the retry budget is spent"
        );
        stopped(RetryStop::Budget);
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
    shared.events.emit(&Event::Retry {
        connection,
        attempt: attempt.number() + 1,
        reason,
        wait,
        server_directed: server_wait.is_some(),
    });
    Decision::RetryAfter(wait)
}

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
