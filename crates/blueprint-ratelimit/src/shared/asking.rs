//! A request waiting for the shared budgets' decision, or for the wait they set.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use blueprint_core::{BoxError, Event, HoldReason};
use http::Request;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use super::{AdmitFuture, Answer, Decision, KnownAt, SharedStore};
use crate::error::RateLimitedError;
use crate::layer::Shared;
use crate::state::Key;

const POLLED_AFTER_DONE: &str = "rate-limit future polled after completion";

pin_project! {
    /// A request the shared budgets are deciding about.
    pub(crate) struct Asking<S, B> {
        #[pin]
        sleep: Sleep,
        answer: Option<AdmitFuture>,
        pending: Option<(Request<B>, S)>,
        deadline: Option<Instant>,
        // Added to a wait for a reset, so that held requests do not all go at once.
        jitter: Duration,
        // The sleep ends in sending: a turn the store kept for this request.
        kept: bool,
        // Admitted: waiting for the clone of the service to be ready.
        admitted: bool,
    }
}

/// Where a request goes from here.
pub(crate) enum Step<S, B> {
    /// Admitted, and the service is ready: call it.
    Call(Request<B>, S),
    /// Not sent.
    Fail(BoxError),
    /// The store is away: pace it in-process.
    Local(Request<B>, S),
}

impl<S, B> Asking<S, B> {
    /// Asks `store` about a request of `key` at once.
    pub(crate) fn new(
        request: Request<B>,
        service: S,
        shared: &Shared,
        store: &SharedStore,
        key: &Key,
        deadline: Option<Instant>,
        jitter: Duration,
    ) -> Self {
        let now = Instant::now();
        Asking {
            sleep: sleep_until(now),
            answer: Some(store.admit(key, deadline, shared.config.smoothing, now)),
            pending: Some((request, service)),
            deadline,
            jitter,
            kept: false,
            admitted: false,
        }
    }

    /// Whether the request was admitted and waits for the service to be ready.
    pub(crate) fn is_admitted(&self) -> bool {
        self.admitted
    }

    /// Drives the request to its next [`Step`]; `known` receives what the store knew of the
    /// window when it admitted it.
    pub(crate) fn poll_step<E>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        shared: &Shared,
        store: &SharedStore,
        key: &Key,
        known: &mut Option<Box<KnownAt>>,
    ) -> Poll<Step<S, B>>
    where
        S: Service<Request<B>, Error = E>,
        E: Into<BoxError>,
    {
        let mut this = self.project();
        let events = &shared.config.events;
        loop {
            if *this.admitted {
                let Some((_, service)) = this.pending.as_mut() else {
                    return Poll::Ready(Step::Fail(POLLED_AFTER_DONE.into()));
                };
                if let Err(error) = ready!(service.poll_ready(cx)) {
                    return Poll::Ready(Step::Fail(error.into()));
                }
                return Poll::Ready(match this.pending.take() {
                    Some((request, service)) => Step::Call(request, service),
                    None => Step::Fail(POLLED_AFTER_DONE.into()),
                });
            }
            if let Some(answer) = this.answer.as_mut() {
                let result = ready!(answer.as_mut().poll(cx));
                *this.answer = None;
                let now = Instant::now();
                let Ok(answer) = result else {
                    store.fell_back(events);
                    return Poll::Ready(local(this.pending));
                };
                store.answered(events);
                *known = answer
                    .known_window()
                    .map(|k| Box::new(KnownAt::new(k, now)));
                report(&answer, shared, key);
                match answer.decision() {
                    Decision::Go => *this.admitted = true,
                    Decision::GoAfter(wait) => {
                        *this.kept = true;
                        this.sleep.as_mut().reset(later(now, wait));
                    }
                    Decision::Hold { wait, reason } => {
                        let until = later(now, wait);
                        let mut wake = until;
                        if reason == HoldReason::Spent {
                            wake = later(wake, *this.jitter);
                        }
                        if let Some(deadline) = *this.deadline {
                            wake = wake.min(deadline);
                        }
                        if wake <= now {
                            // Only the deadline ends a hold now: the store asked for a wait.
                            return Poll::Ready(Step::Fail(
                                refusal(key, until, *this.deadline, now).into(),
                            ));
                        }
                        this.sleep.as_mut().reset(wake);
                    }
                    Decision::Refuse { retry_after } => {
                        let retry_at = later(now, retry_after);
                        return Poll::Ready(Step::Fail(
                            refusal(key, retry_at, *this.deadline, now).into(),
                        ));
                    }
                }
                continue;
            }
            ready!(this.sleep.as_mut().poll(cx));
            if std::mem::take(this.kept) {
                *this.admitted = true;
                continue;
            }
            if !store.is_available() {
                store.fell_back(events);
                return Poll::Ready(local(this.pending));
            }
            let now = Instant::now();
            *this.answer = Some(store.admit(key, *this.deadline, shared.config.smoothing, now));
        }
    }
}

fn local<S, B>(pending: &mut Option<(Request<B>, S)>) -> Step<S, B> {
    match pending.take() {
        Some((request, service)) => Step::Local(request, service),
        None => Step::Fail(POLLED_AFTER_DONE.into()),
    }
}

fn refusal(
    key: &Key,
    retry_at: Instant,
    deadline: Option<Instant>,
    now: Instant,
) -> RateLimitedError {
    RateLimitedError::new(
        key.connection.clone(),
        key.origin.clone(),
        retry_at,
        deadline,
        now,
    )
}

/// The events and log lines of an answer, as the in-process budgets write them.
fn report(answer: &Answer, shared: &Shared, key: &Key) {
    let events = &shared.config.events;
    let connection = &key.connection;
    let origin = key.origin.as_ref();
    let field = crate::state::OriginField(origin);
    let decision = answer.decision();
    if answer.is_paused() {
        let wait = match decision {
            Decision::Hold { wait, .. } => Some(wait),
            _ => None,
        };
        events.emit(&Event::RateLimitPaused {
            connection,
            origin,
            wait,
        });
        tracing::info!(
            connection = %connection,
            origin = %field,
            wait_ms = wait.map_or(0, millis),
            shared = true,
            "rate limit reached: holding requests until the budget frees up"
        );
    }
    if let Some(paused) = answer.resumed_after() {
        tracing::info!(
            connection = %connection,
            origin = %field,
            paused_ms = millis(paused),
            shared = true,
            "rate limit budget free again: resuming requests"
        );
    }
    match decision {
        Decision::Go => {}
        Decision::GoAfter(_) => events.emit(&Event::RateLimitHold {
            connection,
            origin,
            reason: HoldReason::Smoothing,
        }),
        Decision::Hold { reason, .. } => events.emit(&Event::RateLimitHold {
            connection,
            origin,
            reason,
        }),
        Decision::Refuse { retry_after } => {
            events.emit(&Event::RateLimitRefused {
                connection,
                origin,
                retry_after,
            });
            tracing::debug!(
                connection = %connection,
                origin = %field,
                retry_after_ms = millis(retry_after),
                "rate limit spent past the request's deadline: not sending it"
            );
        }
    }
}

fn later(instant: Instant, by: Duration) -> Instant {
    instant.checked_add(by).unwrap_or(instant)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
