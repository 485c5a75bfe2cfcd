use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use blueprint_core::{BoxError, ConnectionId, Deadline, EventSink, InvalidOrigin, Origin, Target};
use http::{Request, Response};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::RateLimitRule;
use crate::clock::{SystemClock, WallClock};
use crate::error::RateLimitedError;
use crate::future::{ResponseFuture, Ticket};
use crate::memo::ResetMemo;
use crate::parse::HeaderConfig;
use crate::shared::{SharedBudgets, SharedStore};
use crate::state::{Admission, Key, Keys};

/// How far apart requests held until a reset are let go by default: each waits a random
/// extra in `0..=100 ms`.
pub const DEFAULT_SPREAD: Duration = Duration::from_millis(100);
/// How many keys (origin, connection) are tracked by default; the stalest make room.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) headers: HeaderConfig,
    pub(crate) pacing: bool,
    pub(crate) smoothing: bool,
    pub(crate) spread: Duration,
    pub(crate) origin: Option<Origin>,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) events: EventSink,
    pub(crate) signals: Arc<[RateLimitRule]>,
    pub(crate) extension: Extension,
    /// Budgets shared with other processes, if any.
    pub(crate) store: Option<SharedStore>,
}

/// When a response gets a [`RateLimit`](blueprint_core::RateLimit) extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extension {
    Always,
    WhenLimitedOrFailed,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("headers", &self.headers)
            .field("pacing", &self.pacing)
            .field("smoothing", &self.smoothing)
            .field("spread", &self.spread)
            .field("origin", &self.origin)
            .field("shared", &self.store.as_ref().map(SharedStore::component))
            .finish_non_exhaustive()
    }
}

/// What every clone of a [`RateLimiting`] service shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) keys: Arc<Keys>,
    /// The last epoch reset read, converted with `config.clock`.
    pub(crate) reset_memo: ResetMemo,
}

/// Layer that applies [`RateLimiting`]; see the [crate docs](crate).
///
/// Every service this layer makes, and every clone of those, shares one budget per key
/// (origin, connection).
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    config: Config,
    keys: Arc<Keys>,
}

impl RateLimitLayer {
    /// Reads `X-RateLimit-*` (reset format guessed), the IETF headers and `Retry-After`;
    /// paces with smoothing on.
    pub fn new() -> Self {
        Self::with_headers(HeaderConfig::default())
    }

    /// Intercom's headers: `X-RateLimit-*` with the reset in epoch seconds.
    pub fn intercom() -> Self {
        Self::with_headers(HeaderConfig::intercom())
    }

    /// The IETF headers: `RateLimit-*` (delta seconds) and the `RateLimit` /
    /// `RateLimit-Policy` fields.
    pub fn ietf() -> Self {
        Self::with_headers(HeaderConfig::ietf())
    }

    /// Reads the headers `headers` names.
    pub fn with_headers(headers: HeaderConfig) -> Self {
        RateLimitLayer {
            config: Config {
                headers,
                pacing: true,
                smoothing: true,
                spread: DEFAULT_SPREAD,
                origin: None,
                clock: Arc::new(SystemClock),
                events: EventSink::none(),
                signals: Arc::from([RateLimitRule::too_many_requests()]),
                extension: Extension::Always,
                store: None,
            },
            keys: Arc::new(Keys::new(DEFAULT_MAX_KEYS)),
        }
    }

    /// Replaces which headers are read.
    #[must_use]
    pub fn headers(mut self, headers: HeaderConfig) -> Self {
        self.config.headers = headers;
        self
    }

    /// Believes a reset or `Retry-After` at most this far away (default one hour).
    #[must_use]
    pub fn max_reset(mut self, max: Duration) -> Self {
        self.config.headers = self.config.headers.max_reset(max);
        self
    }

    /// Turns pacing off: responses still get their [`RateLimit`](blueprint_core::RateLimit)
    /// extension, but no request is ever held or refused.
    #[must_use]
    pub fn pacing(mut self, on: bool) -> Self {
        self.config.pacing = on;
        self
    }

    /// Turns smoothing on or off (on by default): when what is left of the budget is small
    /// for the time left in the window, requests are spaced so that it lasts to the reset,
    /// instead of going at once and then waiting for the reset together.
    #[must_use]
    pub fn smoothing(mut self, on: bool) -> Self {
        self.config.smoothing = on;
        self
    }

    /// Requests held until a reset go at a random moment within `spread` after it, so that
    /// they do not all fire at once (default [`DEFAULT_SPREAD`]).
    #[must_use]
    pub fn spread(mut self, spread: Duration) -> Self {
        self.config.spread = spread;
        self
    }

    /// Tracks about `max` keys at most (rounded up to a multiple of 16); when full, keys with
    /// nothing going on, then the least recently answered, are forgotten.
    #[must_use]
    pub fn max_keys(mut self, max: usize) -> Self {
        self.keys = Arc::new(Keys::new(max));
        self
    }

    /// Which answers mean "rate limited" (default: a 429): such an answer holds the next
    /// requests of its connection until the wait it names, and gets a
    /// [`RateLimit`](blueprint_core::RateLimit) extension with `limited: true`, which the
    /// retry layer treats as a 429. GitHub, for one, answers a spent limit with 403 and
    /// `X-RateLimit-Remaining: 0`. Keep a 429 rule among yours: only the rules given count.
    #[must_use]
    pub fn rate_limited(mut self, rules: impl IntoIterator<Item = RateLimitRule>) -> Self {
        self.config.signals = rules.into_iter().collect();
        self
    }

    /// Puts the [`RateLimit`](blueprint_core::RateLimit) extension only on responses where
    /// it matters to a caller — rate-limited ones, failures, and those that say the budget
    /// is spent — and not on every response that carries rate-limit headers (the default).
    /// The layer's pacing is the same either way; this saves an allocation per call.
    #[must_use]
    pub fn extension_when_limited_or_failed(mut self) -> Self {
        self.config.extension = Extension::WhenLimitedOrFailed;
        self
    }

    /// Where the layer reports what it does — each held request
    /// ([`Event::RateLimitHold`](blueprint_core::Event::RateLimitHold)), each time a
    /// connection's budget runs out
    /// ([`Event::RateLimitPaused`](blueprint_core::Event::RateLimitPaused)), each request
    /// not sent because its deadline comes first
    /// ([`Event::RateLimitRefused`](blueprint_core::Event::RateLimitRefused)), each switch
    /// to and from in-process pacing while [shared budgets](Self::shared) are away
    /// ([`Event::Fallback`](blueprint_core::Event::Fallback)) — for metrics.
    /// Default: nowhere.
    #[must_use]
    pub fn events(mut self, events: EventSink) -> Self {
        self.config.events = events;
        self
    }

    /// Shares every key's budget with the other processes that use the same `budgets`
    /// (such as `RedisBudgets`, cargo feature `redis`): each request is admitted by the
    /// store, atomically across processes, and what answers say is told to it; see
    /// [`shared`](crate::shared).
    ///
    /// While the store does not answer, this process paces on its own, as without it, and
    /// goes back to the store once it answers again: no request fails because the store is
    /// away. Each switch is reported once, as
    /// [`Event::Fallback`](blueprint_core::Event::Fallback) (`active: true`, then `false`)
    /// through [`events`](Self::events).
    #[must_use]
    pub fn shared(mut self, budgets: impl SharedBudgets) -> Self {
        self.config.store = Some(SharedStore::new(Arc::new(budgets)));
        self
    }

    /// The wall clock epoch resets and HTTP-dates are measured against (default
    /// [`SystemClock`]; tests use a [`TokioClock`](crate::TokioClock)).
    #[must_use]
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// The origin relative URIs (`/contacts`) go to, when this layer sits above the one that
    /// adds the base URL: budgets and errors then name it.
    #[must_use]
    pub fn origin(mut self, origin: Origin) -> Self {
        self.config.origin = Some(origin);
        self
    }

    /// Like [`origin`](Self::origin), parsed from a URL.
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] when `url` is not an absolute `http(s)` URL.
    pub fn origin_url(self, url: &str) -> Result<Self, InvalidOrigin> {
        Ok(self.origin(Origin::parse(url)?))
    }

    /// Which headers are read.
    pub fn header_config(&self) -> &HeaderConfig {
        &self.config.headers
    }
}

impl Default for RateLimitLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimiting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimiting {
            inner,
            shared: Arc::new(Shared {
                config: self.config.clone(),
                keys: Arc::clone(&self.keys),
                reset_memo: ResetMemo::new(),
            }),
        }
    }
}

/// Middleware that reads rate-limit headers into a
/// [`RateLimit`](blueprint_core::RateLimit) extension and holds requests while their key's
/// budget is spent; see the [crate docs](crate).
#[derive(Debug)]
pub struct RateLimiting<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for RateLimiting<S> {
    fn clone(&self) -> Self {
        RateLimiting {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> RateLimiting<S> {
    /// Wraps `inner` with the default settings ([`RateLimitLayer::new`]).
    pub fn new(inner: S) -> Self {
        RateLimitLayer::new().layer(inner)
    }

    /// A layer that wraps services in this middleware, with the default settings.
    pub fn layer() -> RateLimitLayer {
        RateLimitLayer::new()
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

impl<S, B, ResB> Service<Request<B>> for RateLimiting<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        if !shared.config.pacing {
            return ResponseFuture::called(self.inner.call(request), shared, None, Ticket::none());
        }
        let connection = ConnectionId::in_extensions(request.extensions());
        // The origin resolved at the top of the stack, else worked out from the URI.
        let worked_out;
        let origin = match Target::of(&request) {
            Some(target) => Some(target.origin()),
            None => {
                worked_out = shared
                    .keys
                    .origin(request.uri(), shared.config.origin.as_ref());
                worked_out.as_ref()
            }
        };
        let hash = shared.keys.hash(origin, connection);
        if let Some(store) = &shared.config.store {
            if store.is_available() {
                let key = Key::new(hash, origin.cloned(), connection.clone());
                let deadline = Deadline::of(&request).map(Deadline::instant);
                // As for a held request: the ready service stays here, the request gets a
                // clone that it polls ready once admitted.
                let service = self.inner.clone();
                return ResponseFuture::asking(request, service, shared, key, deadline);
            }
            store.fell_back(&shared.config.events);
        }
        // The key is looked up by reference: an owned one (two reference counts) is made
        // only for a request that may need it later.
        let Some(entry) = shared.keys.get_by(hash, origin, connection) else {
            // A key with no information yet is never held; its first answer may track it.
            let key = Key::new(hash, origin.cloned(), connection.clone());
            return ResponseFuture::called(
                self.inner.call(request),
                shared,
                Some(key),
                Ticket::none(),
            );
        };
        let now = Instant::now();
        let deadline = Deadline::of(&request).map(Deadline::instant);
        match entry.admit(
            now,
            deadline,
            shared.config.smoothing,
            None,
            &shared.config.events,
        ) {
            Admission::Go => {
                // A tracked key is settled through the ticket's entry: no key to keep, unless
                // shared budgets learn from the answer too.
                let key = shared.config.store.is_some().then(|| entry.key(hash));
                let future = self.inner.call(request);
                ResponseFuture::called(future, shared, key, Ticket::counted(entry))
            }
            Admission::Hold { .. } => {
                let key = entry.key(hash);
                // The ready service stays here; the held request gets a clone that it polls
                // ready once it may go, so a wait never holds the inner service's capacity.
                let service = self.inner.clone();
                ResponseFuture::held(request, service, shared, key, entry, deadline)
            }
            Admission::Refuse { retry_at } => {
                let key = entry.key(hash);
                ResponseFuture::failed(
                    RateLimitedError::new(key.connection, key.origin, retry_at, deadline, now),
                    shared,
                )
            }
        }
    }
}
