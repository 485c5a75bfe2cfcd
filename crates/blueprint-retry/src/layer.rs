use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use blueprint_core::{BoxError, DEFAULT_REPLAY_CAP, Deadline, EventSink, ReplayBody};
use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::budget::RetryBudget;
use crate::config::{Backoff, InvalidConfig};
use crate::future::ResponseFuture;
use crate::policy::{DefaultPolicy, RetryPolicy};

/// Settings shared by every clone of a [`Retry`] service.
#[derive(Debug)]
pub(crate) struct Shared<P> {
    pub(crate) policy: P,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) total: Option<Duration>,
    pub(crate) max_server_wait: Duration,
    pub(crate) replay_cap: usize,
    pub(crate) deadline_timer: bool,
    pub(crate) replay_after_refresh: bool,
    pub(crate) events: EventSink,
}

/// Builds a [`RetryLayer`]; see [`RetryLayer::builder`].
#[derive(Debug)]
pub struct RetryBuilder<P = DefaultPolicy> {
    policy: P,
    max_attempts: u32,
    base: Duration,
    cap: Duration,
    budget: Option<Arc<RetryBudget>>,
    ratio: f64,
    min_per_sec: f64,
    window: Duration,
    total: Option<Duration>,
    max_server_wait: Duration,
    replay_cap: usize,
    deadline_timer: bool,
    replay_after_refresh: bool,
    events: EventSink,
}

impl Default for RetryBuilder {
    fn default() -> Self {
        RetryBuilder {
            policy: DefaultPolicy::default(),
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            budget: None,
            ratio: 0.2,
            min_per_sec: 10.0,
            window: Duration::from_secs(10),
            total: None,
            max_server_wait: Duration::from_secs(60),
            replay_cap: DEFAULT_REPLAY_CAP,
            deadline_timer: true,
            replay_after_refresh: true,
            events: EventSink::none(),
        }
    }
}

impl<P: RetryPolicy> RetryBuilder<P> {
    /// Replaces what is retried (a [`RetryPolicy`] or a closure).
    pub fn policy<Q: RetryPolicy>(self, policy: Q) -> RetryBuilder<Q> {
        RetryBuilder {
            policy,
            max_attempts: self.max_attempts,
            base: self.base,
            cap: self.cap,
            budget: self.budget,
            ratio: self.ratio,
            min_per_sec: self.min_per_sec,
            window: self.window,
            total: self.total,
            max_server_wait: self.max_server_wait,
            replay_cap: self.replay_cap,
            deadline_timer: self.deadline_timer,
            replay_after_refresh: self.replay_after_refresh,
            events: self.events,
        }
    }

    /// Attempts in all, the first included. Default 3; 1 turns retries off.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The backoff before the first retry, doubled for each next one. Default 100 ms.
    #[must_use]
    pub fn base_delay(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The longest backoff. Default 10 s.
    #[must_use]
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The fraction of first attempts that retries may add over the budget window.
    /// Default 0.2.
    #[must_use]
    pub fn budget_ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries per second allowed whatever the traffic. Default 10.
    #[must_use]
    pub fn min_retries_per_sec(mut self, per_sec: f64) -> Self {
        self.min_per_sec = per_sec;
        self
    }

    /// The sliding window of the budget. Default 10 s.
    #[must_use]
    pub fn budget_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Shares one budget between several layers (e.g. one per upstream host). Overrides
    /// the ratio, floor and window settings.
    #[must_use]
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The time budget of the whole call, retries and waits included, carried to the
    /// layers below as a [`Deadline`]. A tighter deadline already on the request wins.
    /// Default: none (but see [`RetryBuilder::max_server_wait`]).
    #[must_use]
    pub fn deadline(mut self, total: Duration) -> Self {
        self.total = Some(total);
        self
    }

    /// The longest server-directed wait (`Retry-After`, rate-limit reset) the layer will
    /// sit through; a longer one hands the response back to the caller. Default 60 s.
    #[must_use]
    pub fn max_server_wait(mut self, wait: Duration) -> Self {
        self.max_server_wait = wait;
        self
    }

    /// Request bodies up to this size are kept so they can be sent again. Default 64 KiB.
    #[must_use]
    pub fn replay_cap(mut self, bytes: usize) -> Self {
        self.replay_cap = bytes;
        self
    }

    /// Whether the layer runs a timer that fails the call when the deadline passes during
    /// an attempt (default on). Turn it off when an [`AttemptTimeoutLayer`] sits below: it
    /// bounds each attempt by the earlier of its timeout and the request's `Deadline`, so
    /// one timer per attempt does both jobs (the engine's stack does this).
    ///
    /// [`AttemptTimeoutLayer`]: crate::AttemptTimeoutLayer
    #[must_use]
    pub fn deadline_timer(mut self, on: bool) -> Self {
        self.deadline_timer = on;
        self
    }

    /// Whether a 401 after which the token-refresh layer below renewed the credentials
    /// ([`CredentialsRefreshed`](blueprint_core::CredentialsRefreshed)) is sent again at
    /// once, with the layer's copy of the request, whatever its method (a 401 proves the
    /// request was not processed). Once per call, besides `max_attempts`. Default on; with
    /// it on, a copy of a replayable request is kept even when `max_attempts` is 1. The
    /// engine turns it off for APIs whose tokens never expire.
    #[must_use]
    pub fn replay_after_refresh(mut self, on: bool) -> Self {
        self.replay_after_refresh = on;
        self
    }

    /// Where the layer reports what it does ([`Event::Retry`](blueprint_core::Event::Retry),
    /// [`Event::RetryStopped`](blueprint_core::Event::RetryStopped),
    /// [`Event::ReplayAfterRefresh`](blueprint_core::Event::ReplayAfterRefresh)), for
    /// metrics. Default: nowhere.
    #[must_use]
    pub fn events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] naming the setting: zero attempts, a zero base delay, a base above
    /// the cap, a negative or non-finite budget ratio or floor, a budget window under
    /// 10 ms, or a zero deadline.
    pub fn build(self) -> Result<RetryLayer<P>, InvalidConfig> {
        if self.max_attempts == 0 {
            return Err(InvalidConfig::new(
                "max_attempts",
                "must be at least 1 (1 means no retries)".into(),
            ));
        }
        let backoff = Backoff::new(self.base, self.cap)?;
        if self.total.is_some_and(|t| t.is_zero()) {
            return Err(InvalidConfig::new(
                "deadline",
                "must be more than zero".into(),
            ));
        }
        let budget = match self.budget {
            Some(budget) => budget,
            None => Arc::new(RetryBudget::new(self.ratio, self.min_per_sec, self.window)?),
        };
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                policy: self.policy,
                max_attempts: self.max_attempts,
                backoff,
                budget,
                total: self.total,
                max_server_wait: self.max_server_wait,
                replay_cap: self.replay_cap,
                deadline_timer: self.deadline_timer,
                replay_after_refresh: self.replay_after_refresh,
                events: self.events,
            }),
        })
    }
}

/// Layer that applies [`Retry`]; see the [crate docs](crate).
#[derive(Debug)]
pub struct RetryLayer<P = DefaultPolicy> {
    shared: Arc<Shared<P>>,
}

impl<P> Clone for RetryLayer<P> {
    fn clone(&self) -> Self {
        RetryLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl RetryLayer {
    /// The defaults: the [`DefaultPolicy`], 3 attempts, backoff from 100 ms to 10 s,
    /// a budget of 20% plus 10 retries per second over 10 s, no deadline, server waits up
    /// to 60 s, bodies up to 64 KiB replayable.
    pub fn new() -> Self {
        RetryLayer {
            shared: Arc::new(Shared {
                policy: DefaultPolicy::default(),
                max_attempts: 3,
                backoff: Backoff::default(),
                budget: Arc::new(RetryBudget::default()),
                total: None,
                max_server_wait: Duration::from_secs(60),
                replay_cap: DEFAULT_REPLAY_CAP,
                deadline_timer: true,
                replay_after_refresh: true,
                events: EventSink::none(),
            }),
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::default()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer::new()
    }
}

impl<P> RetryLayer<P> {
    /// The budget shared by every service this layer makes.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.shared.budget
    }
}

impl<S: Clone, P> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            template: Arc::new(inner.clone()),
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Middleware that retries failed attempts; see the [crate docs](crate).
///
/// The inner service receives `Request<ReplayBody<B>>`.
#[derive(Debug)]
pub struct Retry<S, P = DefaultPolicy> {
    inner: S,
    // A clone of `inner` for retries, shared by every call and every clone of this service.
    template: Arc<S>,
    shared: Arc<Shared<P>>,
}

impl<S: Clone, P> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            template: Arc::clone(&self.template),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Clone> Retry<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        RetryLayer::new().layer(inner)
    }

    /// A layer with the default settings.
    pub fn layer() -> RetryLayer {
        RetryLayer::new()
    }
}

impl<S, P> Retry<S, P> {
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

impl<S, P, B, ResB> Service<Request<B>> for Retry<S, P>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
    P: RetryPolicy,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, B, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        // One clock reading for the budget, the deadline and its check.
        let now = Instant::now();
        shared.budget.deposit_at(now);
        let (mut parts, body) = request.into_parts();
        let deadline = match shared.total {
            Some(total) => Some(Deadline::after_from(now, total).tighten(&mut parts.extensions)),
            None => Deadline::from_extensions(&parts.extensions),
        };
        let template = Arc::clone(&self.template);
        if deadline.is_some_and(|d| d.instant() <= now) {
            return ResponseFuture::expired(template, shared);
        }
        let body = ReplayBody::new(body, shared.replay_cap);
        ResponseFuture::start(&mut self.inner, template, shared, parts, body, deadline)
    }
}
