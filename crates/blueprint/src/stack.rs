//! Composing the layers in the order of the design, from a blueprint.
//!
//! One call, top to bottom:
//!
//! 0. [`SetBaseUrl`] resolves the call's target once: the path joined onto the base URL,
//!    the [`Target`](blueprint_core::Target) (origin, route template) put in the request;
//! 1. [`Trace`] opens the call's span, named by the route;
//! 2. [`Retry`] sets the call's [`Deadline`](blueprint_core::Deadline) in its `Target`
//!    (one extension for the call), keeps the stack's only copy of the request (its body recorded as it streams) and resends by policy, or at
//!    once after a token refresh;
//! 3. [`RateLimiting`] holds the request while the connection's budget at the target's
//!    origin is spent, and learns from the response's headers;
//! 4. [`Refresh`] turns a 401 into one refresh of the token that was sent, and asks the
//!    retry layer to replay;
//! 5. [`AddAuthorization`] fetches the connection's token (once per attempt), checks the
//!    URI's origin, sets `Authorization`, and names the token on a 401;
//! 6. [`AttemptTimeout`] bounds the network attempt by its timeout and the deadline, with
//!    one timer, made only if the attempt is not done at once;
//! 7. [`SetDefaultHeaders`] adds the API's default headers the request does not set, to
//!    each attempt, where DESIGN.md puts them (with the base URL, which is resolved at the
//!    top instead so that every layer knows the target): the retry layer's copy of a
//!    request then holds the caller's headers only, and a credential never gives way to a
//!    default;
//! 8. your service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use blueprint_auth::{AddAuthorization, AuthLayer, ForeignOrigin};
use blueprint_core::{BoxError, EventSink, Events, ReplayBody, TokenSource};
use blueprint_ratelimit::{HeaderConfig, RateLimitLayer, RateLimiting, SharedBudgets};
use blueprint_refresh::{Refresh, RefreshLayer, replay};
use blueprint_retry::{
    AttemptTimeout, AttemptTimeoutLayer, DefaultPolicy, Outcome, RequestInfo, Retry, RetryLayer,
    RetryPolicy, RetryReason,
};
use blueprint_trace::{Trace, TraceLayer};
use http::{Method, Request};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::blueprint::{Blueprint, BlueprintError, RetryRule};
use crate::error::Error;
use crate::headers::{DefaultHeadersLayer, SetDefaultHeaders};
use crate::target::{BaseUrlLayer, Routes, SetBaseUrl};

/// The token source the stack shares between its refresh and auth layers.
pub type SharedTokenSource = Arc<dyn TokenSource>;

/// The request body type the inner service receives from a stack whose callers send `B`:
/// the retry layer's [`ReplayBody`], the one copy of the body a call keeps.
pub type StackBody<B> = ReplayBody<B>;

type Inner<S> = SetBaseUrl<
    Trace<
        Retry<
            RateLimiting<
                Refresh<
                    AddAuthorization<AttemptTimeout<SetDefaultHeaders<S>>, SharedTokenSource>,
                    SharedTokenSource,
                    replay::ByRetry,
                >,
            >,
            BlueprintPolicy,
        >,
    >,
>;

/// The retry policy of a blueprint: its per-method-and-path rules first, then the
/// [`DefaultPolicy`].
#[derive(Debug, Clone)]
pub struct BlueprintPolicy {
    rules: Arc<[RetryRule]>,
    prefix: Arc<str>,
    default: DefaultPolicy,
}

impl BlueprintPolicy {
    /// The policy of `blueprint`.
    pub fn new(blueprint: &Blueprint) -> Self {
        BlueprintPolicy {
            rules: blueprint.retry().rules.clone().into(),
            prefix: Arc::from(blueprint.base_url().prefix()),
            default: DefaultPolicy::default(),
        }
    }

    /// Whether a blueprint rule marks `method` on `path` (the request's whole path, base
    /// URL prefix included) safe (`Some(true)`) or unsafe (`Some(false)`) to resend; `None`
    /// when no rule applies and the [`DefaultPolicy`] decides.
    pub fn rule(&self, method: &Method, path: &str) -> Option<bool> {
        // A path with dot segments (plain or encoded) goes somewhere else than it reads:
        // no rule applies to it, the default policy decides (it never resends a POST that
        // may have been processed).
        let dotted = path.split('/').any(|segment| {
            segment == "."
                || segment == ".."
                || segment.contains('%') && segment.to_ascii_lowercase().contains("%2e")
        });
        if dotted {
            return None;
        }
        let path = path
            .strip_prefix(&*self.prefix)
            .filter(|p| p.is_empty() || p.starts_with('/'))
            .unwrap_or(path);
        self.rules
            .iter()
            .find(|rule| rule.matches(method, path))
            .map(|rule| rule.retry_safe)
    }
}

impl RetryPolicy for BlueprintPolicy {
    fn classify(&self, request: &RequestInfo<'_>, outcome: &Outcome<'_>) -> Option<RetryReason> {
        // Most answers are not retryable whatever the rules say (a 200, a 404): the rules'
        // path matching is only done for the others.
        self.default.classify_as(true, outcome)?;
        match self.rule(request.method, request.uri.path()) {
            Some(false) => None,
            Some(true) => self.default.classify_as(true, outcome),
            None => self.default.classify(request, outcome),
        }
    }
}

/// Stacks the Blueprint layers, in the design's order, around any HTTP service:
///
/// 0. the call's target, resolved once ([`BaseUrlLayer`]: base URL, route);
/// 1. logging ([`TraceLayer`]);
/// 2. retry with backoff, budget and deadline ([`RetryLayer`]);
/// 3. rate-limit pacing ([`RateLimitLayer`]);
/// 4. token refresh ([`RefreshLayer`]);
/// 5. auth injection ([`AuthLayer`]);
/// 6. attempt timeout ([`AttemptTimeoutLayer`]), then the API's default headers
///    ([`DefaultHeadersLayer`], added to each attempt: the retry layer's copy of a request
///    is then of the caller's own headers only);
/// 7. your service: a hyper-util client ([`default_client`](crate::default_client)), an
///    axum `Router`, a test double.
///
/// Every layer's settings come from the [`Blueprint`] and can be replaced before building.
/// The built [`BlueprintService`] is `Clone` and `Send`, works in `tower::ServiceBuilder`
/// chains, and fails with [`Error`], whose predicates name what happened. What the layers
/// do that a program may want to count (retries, waits for the rate-limit budget,
/// replays after a refresh) goes to [`StackBuilder::events`].
///
/// ```
/// use blueprint::{Blueprint, StackBuilder, StackBody};
/// use blueprint_auth::StaticToken;
/// use blueprint_core::BoxError;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let api = Blueprint::new("acme", "v1", "https://api.acme.test")?;
/// // A stand-in for the HTTP client: says where the request went and with what token.
/// let client = service_fn(|req: Request<StackBody<Full<Bytes>>>| async move {
///     let auth = req.headers()["authorization"].to_str()?.to_owned();
///     Ok::<_, BoxError>(Response::new(format!("{} {auth}", req.uri())))
/// });
///
/// let stack = StackBuilder::new(api, StaticToken::new("t0k")?).service(client)?;
/// let response = stack.oneshot(Request::get("/me").body(Full::default())?).await?;
/// assert_eq!(response.body(), "https://api.acme.test/me Bearer t0k");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct StackBuilder {
    blueprint: Blueprint,
    tokens: SharedTokenSource,
    trace: TraceLayer,
    rate_limit: Option<RateLimitLayer>,
    shared_budgets: Option<Arc<dyn SharedBudgets>>,
    foreign: ForeignOrigin,
    replay_cap: usize,
    events: EventSink,
}

impl fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("blueprint", &self.blueprint.id())
            .field("base_url", self.blueprint.base_url())
            .finish_non_exhaustive()
    }
}

impl StackBuilder {
    /// A stack for `blueprint`, sending tokens from `tokens`.
    pub fn new(blueprint: Blueprint, tokens: impl TokenSource) -> Self {
        Self::with_shared_tokens(blueprint, Arc::new(tokens))
    }

    /// Like [`StackBuilder::new`], with a token source shared with something else (an
    /// OAuth flow that stores new connections, another stack).
    pub fn with_shared_tokens(blueprint: Blueprint, tokens: SharedTokenSource) -> Self {
        StackBuilder {
            blueprint,
            tokens,
            trace: TraceLayer::new(),
            rate_limit: None,
            shared_budgets: None,
            foreign: ForeignOrigin::Reject,
            replay_cap: blueprint_core::DEFAULT_REPLAY_CAP,
            events: EventSink::none(),
        }
    }

    /// The blueprint.
    pub fn blueprint(&self) -> &Blueprint {
        &self.blueprint
    }

    /// Changes the blueprint's settings (retry, rate-limit headers, headers…) before building.
    #[must_use]
    pub fn map_blueprint(mut self, f: impl FnOnce(Blueprint) -> Blueprint) -> Self {
        self.blueprint = f(self.blueprint);
        self
    }

    /// Replaces the logging layer (its defaults: span at INFO, events by outcome).
    #[must_use]
    pub fn trace(mut self, trace: TraceLayer) -> Self {
        self.trace = trace;
        self
    }

    /// Replaces the rate-limit layer (by default built from the blueprint's headers, with
    /// pacing and smoothing on). Its state is shared by every service built from this
    /// builder's layer. The stack's [events](StackBuilder::events) are not given to a
    /// layer set here: give them to it yourself.
    #[must_use]
    pub fn rate_limit(mut self, rate_limit: RateLimitLayer) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }

    /// Shares the default rate-limit layer's budgets with other processes through
    /// `budgets` (such as `blueprint_ratelimit::RedisBudgets`); see
    /// [`RateLimitLayer::shared`]. A layer set with [`rate_limit`](Self::rate_limit) is
    /// used as it is.
    #[must_use]
    pub fn shared_budgets(mut self, budgets: Arc<dyn SharedBudgets>) -> Self {
        self.shared_budgets = Some(budgets);
        self
    }

    /// Lets requests for other origins through, without credentials, instead of failing
    /// them.
    #[must_use]
    pub fn send_foreign_without_credentials(mut self) -> Self {
        self.foreign = ForeignOrigin::SendWithoutCredentials;
        self
    }

    /// Request bodies up to this size can be sent again (retries, replays after a
    /// refresh). Default 64 KiB.
    #[must_use]
    pub fn replay_cap(mut self, bytes: usize) -> Self {
        self.replay_cap = bytes;
        self
    }

    /// Reports what the layers do — retries and why, waits for the rate-limit budget,
    /// replays after a token refresh — as typed [`Event`](blueprint_core::Event)s, for
    /// metrics. (A token source reports its refreshes itself: see
    /// `OAuth2TokenSourceBuilder::events`.)
    #[must_use]
    pub fn events(mut self, events: impl Events) -> Self {
        self.events = EventSink::new(events);
        self
    }

    /// Like [`StackBuilder::events`], with a sink shared with others.
    #[must_use]
    pub fn event_sink(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// Builds the stack as a layer.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when the blueprint's retry settings cannot work (zero attempts,
    /// base delay above the cap, a zero deadline).
    pub fn layer(&self) -> Result<BlueprintLayer, BlueprintError> {
        let bp = &self.blueprint;
        let settings = bp.retry();
        let mut retry = RetryLayer::builder()
            .policy(BlueprintPolicy::new(bp))
            .max_attempts(settings.max_attempts)
            .base_delay(settings.base_delay)
            .max_delay(settings.max_delay)
            .max_server_wait(settings.max_server_wait)
            .replay_cap(self.replay_cap)
            // Tokens that never expire are never refreshed: no copy is kept for a replay
            // after a refresh.
            .replay_after_refresh(bp.tokens_expire())
            .events(self.events.clone())
            // The attempt-timeout layer below bounds every attempt by the deadline too.
            .deadline_timer(false);
        if let Some(deadline) = settings.deadline {
            retry = retry.deadline(deadline);
        }
        let retry = retry
            .build()
            .map_err(|e| BlueprintError::new("retry", e.to_string()))?;
        let rate_limit = self.rate_limit_layer();
        let auth = AuthLayer::for_origin(bp.base_url().origin().clone(), Arc::clone(&self.tokens))
            .on_foreign_origin(self.foreign);
        Ok(BlueprintLayer {
            target: BaseUrlLayer::new(bp.base_url().clone()).routes(Routes::of(bp)),
            trace: self.trace.clone(),
            retry,
            rate_limit,
            refresh: RefreshLayer::new(Arc::clone(&self.tokens)).replay_by_retry(),
            auth,
            headers: DefaultHeadersLayer::new(bp.default_headers().clone()),
            timeout: settings
                .attempt_timeout
                .map_or_else(AttemptTimeoutLayer::disabled, AttemptTimeoutLayer::new),
        })
    }

    /// The rate-limit layer the stack gets: the one [set](Self::rate_limit), or a new one
    /// from the blueprint's headers and signals (each call makes a new one, with its own
    /// state).
    pub fn rate_limit_layer(&self) -> RateLimitLayer {
        let bp = &self.blueprint;
        match &self.rate_limit {
            Some(layer) => layer.clone(),
            None => {
                let headers = bp.rate_limit();
                let layer = RateLimitLayer::with_headers(HeaderConfig::new(
                    headers.limit.clone(),
                    headers.remaining.clone(),
                    headers.reset.clone(),
                    headers.reset_format,
                ))
                .origin(bp.base_url().origin().clone())
                .rate_limited(bp.rate_limited().iter().cloned())
                // A server cannot stop calls for longer than the blueprint believes.
                .max_reset(bp.max_server_wait())
                // The engine's callers read the extension on failures only.
                .extension_when_limited_or_failed()
                .events(self.events.clone());
                match &self.shared_budgets {
                    Some(budgets) => layer.shared(Arc::clone(budgets)),
                    None => layer,
                }
            }
        }
    }

    /// Makes the rate-limit layer now, so that every stack built from this builder and
    /// from its [`for_connection`](Self::for_connection) builders shares its state (the
    /// budgets are kept per origin and connection, so connections never share one).
    #[must_use]
    pub fn share_rate_limit(mut self) -> Self {
        self.rate_limit = Some(self.rate_limit_layer());
        self
    }

    /// The builder of one connection of a blueprint whose base URL or headers name
    /// connection parameters: the blueprint filled in with `values(NAME)`
    /// ([`Blueprint::for_connection`]), so that the base URL, the default headers and the
    /// origin the auth layer sends credentials to are the connection's own.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] naming a parameter that is missing or does not fit.
    pub fn for_connection(
        &self,
        values: impl Fn(&str) -> Option<String>,
    ) -> Result<StackBuilder, BlueprintError> {
        let blueprint = self.blueprint.for_connection(values)?;
        let mut builder = self.clone();
        builder.blueprint = blueprint;
        Ok(builder)
    }

    /// Builds the stack around `inner`.
    ///
    /// # Errors
    ///
    /// As [`StackBuilder::layer`].
    pub fn service<S: Clone>(&self, inner: S) -> Result<BlueprintService<S>, BlueprintError> {
        Ok(self.layer()?.layer(inner))
    }
}

/// The whole Blueprint stack as one tower layer; built by [`StackBuilder::layer`].
#[derive(Clone)]
pub struct BlueprintLayer {
    target: BaseUrlLayer,
    trace: TraceLayer,
    retry: RetryLayer<BlueprintPolicy>,
    rate_limit: RateLimitLayer,
    refresh: RefreshLayer<SharedTokenSource, replay::ByRetry>,
    auth: AuthLayer<SharedTokenSource>,
    headers: DefaultHeadersLayer,
    timeout: AttemptTimeoutLayer,
}

impl fmt::Debug for BlueprintLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlueprintLayer")
            .field("origin", self.auth.origin())
            .finish_non_exhaustive()
    }
}

impl<S: Clone> Layer<S> for BlueprintLayer {
    type Service = BlueprintService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        // Built from the inside out; a call goes through them in the opposite order.
        let inner = self.headers.layer(inner);
        let inner = self.timeout.layer(inner);
        let inner = self.auth.layer(inner);
        let inner = self.refresh.layer(inner);
        let inner = self.rate_limit.layer(inner);
        let inner = self.retry.layer(inner);
        let inner = self.trace.layer(inner);
        BlueprintService {
            inner: self.target.layer(inner),
        }
    }
}

/// The Blueprint stack around `S`; see [`StackBuilder`].
pub struct BlueprintService<S> {
    inner: Inner<S>,
}

impl<S: Clone> Clone for BlueprintService<S> {
    fn clone(&self) -> Self {
        BlueprintService {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for BlueprintService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlueprintService").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for BlueprintService<S>
where
    Inner<S>: Service<Request<B>, Error = BoxError>,
{
    type Response = <Inner<S> as Service<Request<B>>>::Response;
    type Error = Error;
    type Future = ResponseFuture<<Inner<S> as Service<Request<B>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::from)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Response future of [`BlueprintService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().inner.poll(cx)).map_err(Error::from))
    }
}
