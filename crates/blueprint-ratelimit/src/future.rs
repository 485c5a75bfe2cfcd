use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use blueprint_core::{BoxError, ConnectionId, Deadline};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::WaitFrom;
use crate::error::RateLimitedError;
use crate::layer::{Extension, Shared};
use crate::parse::{Observation, Wall, reads_retry_after};
use crate::shared::KnownAt;
use crate::shared::asking::{Asking, Step};
use crate::state::{Admission, Hold, Key, KeyState};

/// A request's place in its key's count of requests in flight; leaves it when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    entry: Option<Arc<KeyState>>,
    counted: bool,
    /// What the shared budgets knew when they admitted the request (boxed: only requests
    /// of shared budgets pay for its room).
    known: Option<Box<KnownAt>>,
}

impl Ticket {
    pub(crate) fn none() -> Self {
        Ticket {
            entry: None,
            counted: false,
            known: None,
        }
    }

    pub(crate) fn counted(entry: Arc<KeyState>) -> Self {
        Ticket {
            entry: Some(entry),
            counted: true,
            known: None,
        }
    }

    /// Leaves the count (the request failed without an answer).
    fn release(&mut self) {
        if std::mem::take(&mut self.counted) {
            if let Some(entry) = &self.entry {
                entry.settle(true, None, Instant::now());
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}

pin_project! {
    /// Response future of [`RateLimiting`](crate::RateLimiting).
    pub struct ResponseFuture<F, S, B> {
        #[pin]
        state: State<F, S, B>,
        shared: Arc<Shared>,
        key: Option<Key>,
        ticket: Ticket,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B> {
        // Boxed: only a held request pays for its room (a request held waits for a reset or
        // its turn, so one allocation is nothing next to it), and every other future stays
        // small to move.
        Held {
            held: Pin<Box<Held<S, B>>>,
        },
        // Boxed for the same reason: only requests of shared budgets pay for it.
        Asking {
            asking: Pin<Box<Asking<S, B>>>,
        },
        Called {
            #[pin]
            future: F,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

pin_project! {
    /// A request that may not go yet.
    struct Held<S, B> {
        #[pin]
        sleep: Sleep,
        pending: Option<(Request<B>, S)>,
        deadline: Option<Instant>,
        // Added to a wait for a reset, so that held requests do not all go at once.
        jitter: Duration,
        // Admitted: waiting for the clone of the service to be ready.
        admitted: bool,
    }
}

impl<F, S, B> ResponseFuture<F, S, B> {
    pub(crate) fn called(future: F, shared: Arc<Shared>, key: Option<Key>, ticket: Ticket) -> Self {
        ResponseFuture {
            state: State::Called { future },
            shared,
            key,
            ticket,
        }
    }

    pub(crate) fn held(
        request: Request<B>,
        service: S,
        shared: Arc<Shared>,
        key: Key,
        entry: Arc<KeyState>,
        deadline: Option<Instant>,
    ) -> Self {
        let held = Box::pin(Held {
            // The first poll asks again and sets the real wake-up time.
            sleep: sleep_until(Instant::now()),
            pending: Some((request, service)),
            deadline,
            jitter: jitter(&shared),
            admitted: false,
        });
        ResponseFuture {
            state: State::Held { held },
            shared,
            key: Some(key),
            ticket: Ticket {
                entry: Some(entry),
                counted: false,
                known: None,
            },
        }
    }

    /// A request the shared budgets decide about.
    pub(crate) fn asking(
        request: Request<B>,
        service: S,
        shared: Arc<Shared>,
        key: Key,
        deadline: Option<Instant>,
    ) -> Self {
        let state = match &shared.config.store {
            Some(store) => State::Asking {
                asking: Box::pin(Asking::new(
                    request,
                    service,
                    &shared,
                    store,
                    &key,
                    deadline,
                    jitter(&shared),
                )),
            },
            None => State::Failed {
                error: Some("rate-limit layer asked shared budgets it does not have".into()),
            },
        };
        ResponseFuture {
            state,
            shared,
            key: Some(key),
            ticket: Ticket::none(),
        }
    }

    /// Paces in-process a request the shared budgets could not decide about.
    fn local(
        request: Request<B>,
        service: S,
        shared: &Shared,
        key: &Key,
        deadline: Option<Instant>,
    ) -> (State<F, S, B>, Ticket) {
        let entry = shared.keys.get(key);
        let admitted = entry.is_none();
        let held = Box::pin(Held {
            sleep: sleep_until(Instant::now()),
            pending: Some((request, service)),
            deadline,
            jitter: jitter(shared),
            // A key with no information yet is never held.
            admitted,
        });
        let ticket = Ticket {
            entry,
            counted: false,
            known: None,
        };
        (State::Held { held }, ticket)
    }

    pub(crate) fn failed(error: impl Into<BoxError>, shared: Arc<Shared>) -> Self {
        ResponseFuture {
            state: State::Failed {
                error: Some(error.into()),
            },
            shared,
            key: None,
            ticket: Ticket::none(),
        }
    }
}

/// A random extra wait in `0..=spread`, so that requests held until a reset do not all go
/// at once.
fn jitter(shared: &Shared) -> Duration {
    let spread = u64::try_from(shared.config.spread.as_nanos()).unwrap_or(u64::MAX);
    if spread == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(fastrand::u64(0..=spread))
    }
}

impl<F, S, B> fmt::Debug for ResponseFuture<F, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Held { held } if held.admitted => "readying",
            State::Held { .. } => "held",
            State::Asking { asking } if asking.is_admitted() => "readying",
            State::Asking { .. } => "asking",
            State::Called { .. } => "called",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

const POLLED_AFTER_DONE: &str = "rate-limit future polled after completion";

impl<F, S, B, ResB, E> Future for ResponseFuture<F, S, B>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    S: Service<Request<B>, Future = F, Response = Response<ResB>, Error = E>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Held { held } => {
                    let held = held.as_mut().project();
                    if *held.admitted {
                        let Some((_, service)) = held.pending.as_mut() else {
                            return Poll::Ready(Err(POLLED_AFTER_DONE.into()));
                        };
                        if let Err(error) = ready!(service.poll_ready(cx)) {
                            this.ticket.release();
                            this.state.set(State::Failed { error: None });
                            return Poll::Ready(Err(error.into()));
                        }
                        let Some((request, mut service)) = held.pending.take() else {
                            return Poll::Ready(Err(POLLED_AFTER_DONE.into()));
                        };
                        let future = service.call(request);
                        this.state.set(State::Called { future });
                        continue;
                    }
                    let Some(entry) = this.ticket.entry.as_ref() else {
                        return Poll::Ready(Err(POLLED_AFTER_DONE.into()));
                    };
                    let now = Instant::now();
                    let deadline = *held.deadline;
                    let smoothing = this.shared.config.smoothing;
                    match entry.admit(
                        now,
                        deadline,
                        smoothing,
                        Some(cx.waker()),
                        &this.shared.config.events,
                    ) {
                        Admission::Go => {
                            this.ticket.counted = true;
                            *held.admitted = true;
                        }
                        Admission::Refuse { retry_at } => {
                            let error = refusal(this.key.take(), entry, retry_at, deadline, now);
                            this.state.set(State::Failed { error: None });
                            return Poll::Ready(Err(error.into()));
                        }
                        Admission::Hold { until: None, .. } => return Poll::Pending,
                        Admission::Hold {
                            until: Some(until),
                            why,
                        } => {
                            let mut wake = until;
                            if why == Hold::Spent {
                                wake = wake.checked_add(*held.jitter).unwrap_or(wake);
                            }
                            if let Some(deadline) = deadline {
                                wake = wake.min(deadline);
                            }
                            if wake <= now {
                                // A hold always ends after now, unless the deadline is here.
                                let error = refusal(this.key.take(), entry, until, deadline, now);
                                this.state.set(State::Failed { error: None });
                                return Poll::Ready(Err(error.into()));
                            }
                            let mut sleep = held.sleep;
                            if sleep.deadline() != wake {
                                sleep.as_mut().reset(wake);
                            }
                            ready!(sleep.poll(cx));
                        }
                    }
                }
                StateProj::Asking { asking } => {
                    let (Some(store), Some(key)) = (&this.shared.config.store, this.key.as_ref())
                    else {
                        return Poll::Ready(Err(POLLED_AFTER_DONE.into()));
                    };
                    let step = ready!(asking.as_mut().poll_step(
                        cx,
                        this.shared,
                        store,
                        key,
                        &mut this.ticket.known,
                    ));
                    match step {
                        Step::Call(request, mut service) => {
                            let future = service.call(request);
                            this.state.set(State::Called { future });
                        }
                        Step::Fail(error) => {
                            this.state.set(State::Failed { error: None });
                            return Poll::Ready(Err(error));
                        }
                        Step::Local(request, service) => {
                            let deadline = Deadline::of(&request).map(Deadline::instant);
                            let (state, ticket) =
                                Self::local(request, service, this.shared, key, deadline);
                            *this.ticket = ticket;
                            this.state.set(state);
                        }
                    }
                }
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    return Poll::Ready(match result {
                        Ok(mut response) => {
                            learn(this.shared, this.key.as_ref(), this.ticket, &mut response);
                            Ok(response)
                        }
                        Err(error) => {
                            this.ticket.release();
                            Err(error.into())
                        }
                    });
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| POLLED_AFTER_DONE.into())));
                }
            }
        }
    }
}

fn refusal(
    key: Option<Key>,
    entry: &KeyState,
    retry_at: Instant,
    deadline: Option<Instant>,
    now: Instant,
) -> RateLimitedError {
    let (connection, origin) = match key {
        Some(key) => (key.connection, key.origin),
        None => (ConnectionId::default(), entry.origin().cloned()),
    };
    RateLimitedError::new(connection, origin, retry_at, deadline, now)
}

/// Reads what the response says about the rate limit into its extensions and the key's state.
fn learn<ResB>(
    shared: &Shared,
    key: Option<&Key>,
    ticket: &mut Ticket,
    response: &mut Response<ResB>,
) {
    let status = response.status();
    let config = &shared.config;
    // Which answers mean "rate limited": a 429 by default, what the API says otherwise.
    let rule = config
        .signals
        .iter()
        .find(|rule| rule.matches(status, response.headers()));
    let limited = rule.is_some();
    if response.headers().is_empty() && !limited && ticket.entry.is_none() {
        // Nothing to read and nothing to settle: the common case of an API that never
        // speaks of its limits costs no clock read.
        return;
    }
    let now = Instant::now();
    let mut seen = if response.headers().is_empty() {
        Observation::default()
    } else {
        Observation::read(
            response.headers(),
            reads_retry_after(status),
            &config.headers,
            &Wall::clock(&*config.clock, &shared.reset_memo, now),
            now,
        )
    };
    if let Some(rule) = rule {
        seen.wait_from = rule.wait_from;
        if rule.wait_from == WaitFrom::Reset {
            seen.retry_after = None;
        }
    }
    let worth_telling = match config.extension {
        Extension::Always => true,
        Extension::WhenLimitedOrFailed => {
            limited || !status.is_success() || seen.remaining == Some(0)
        }
    };
    if worth_telling {
        if let Some(extension) = seen.to_extension(limited) {
            response.extensions_mut().insert(extension);
        }
    }
    let informed = seen.has_info();
    if let (Some(store), Some(key)) = (&shared.config.store, key) {
        store.learn(key, &seen, limited, ticket.known.take().as_deref(), now);
    }
    let seen = (informed || limited).then_some((&seen, limited));
    match (&ticket.entry, key) {
        // The ticket's own reference: no other count on the key's shared state.
        (Some(entry), _) => entry.settle(std::mem::take(&mut ticket.counted), seen, now),
        (None, Some(key)) if informed => {
            if let Some(entry) = shared.keys.get_or_insert(key, now) {
                entry.settle(std::mem::take(&mut ticket.counted), seen, now);
            }
        }
        (None, _) => {}
    }
}
