//! Composing the layers in the order of the design, from a blueprint.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use blueprint_auth::{AddAuthorization, AuthLayer, ForeignOrigin};
use blueprint_core::{BoxError, ReplayBody, TokenSource};
use blueprint_ratelimit::{HeaderConfig, RateLimitLayer, RateLimiting};
use blueprint_refresh::{Refresh, RefreshLayer};
use blueprint_retry::{
    AttemptTimeout, AttemptTimeoutLayer, DefaultPolicy, Outcome, RequestInfo, Retry, RetryLayer,
    RetryPolicy, RetryReason,
};
use blueprint_trace::{Trace, TraceLayer};
use http::{Method, Request};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::base_url::{BaseUrlLayer, SetBaseUrl};
use crate::blueprint::{Blueprint, BlueprintError, RetryRule};
use crate::error::Error;

/// The token source the stack shares between its refresh and auth layers.
pub type SharedTokenSource = Arc<dyn TokenSource>;

/// The request body type the inner service receives from a stack whose callers send `B`:
/// the retry layer and the refresh layer each make the body replayable.
pub type StackBody<B> = ReplayBody<ReplayBody<B>>;

type Inner<S> = Trace<
    Retry<
        RateLimiting<
            Refresh<
                AddAuthorization<AttemptTimeout<SetBaseUrl<S>>, SharedTokenSource>,
                SharedTokenSource,
            >,
        >,
        BlueprintPolicy,
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

    fn rule(&self, method: &Method, path: &str) -> Option<bool> {
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
        match self.rule(request.method, request.uri.path()) {
            Some(false) => None,
            Some(true) => self.default.classify_as(true, outcome),
            None => self.default.classify(request, outcome),
        }
    }
}

/// Stacks the Blueprint layers, in the design's order, around any HTTP service:
///
/// 1. logging ([`TraceLayer`]), 2. retry with backoff, budget and deadline
///    ([`RetryLayer`]), 3. rate-limit pacing ([`RateLimitLayer`]), 4. token refresh
///    ([`RefreshLayer`]), 5. auth injection ([`AuthLayer`]), 6. attempt timeout
///    ([`AttemptTimeoutLayer`]), 7. base URL and default headers ([`BaseUrlLayer`]),
/// 8. your service: a hyper-util client ([`default_client`](crate::default_client)), an
///    axum `Router`, a test double.
///
/// Every layer's settings come from the [`Blueprint`] and can be replaced before building.
/// The built [`BlueprintService`] is `Clone` and `Send`, works in `tower::ServiceBuilder`
/// chains, and fails with [`Error`], whose predicates name what happened.
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
    foreign: ForeignOrigin,
    replay_cap: usize,
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
        let trace = TraceLayer::new().server_address(blueprint.base_url().origin().host());
        StackBuilder {
            blueprint,
            tokens,
            trace,
            rate_limit: None,
            foreign: ForeignOrigin::Reject,
            replay_cap: blueprint_core::DEFAULT_REPLAY_CAP,
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
    /// builder's layer.
    #[must_use]
    pub fn rate_limit(mut self, rate_limit: RateLimitLayer) -> Self {
        self.rate_limit = Some(rate_limit);
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
            // The attempt-timeout layer below bounds every attempt by the deadline too.
            .deadline_timer(false);
        if let Some(deadline) = settings.deadline {
            retry = retry.deadline(deadline);
        }
        let retry = retry
            .build()
            .map_err(|e| BlueprintError::new("retry", e.to_string()))?;
        let rate_limit = match &self.rate_limit {
            Some(layer) => layer.clone(),
            None => {
                let headers = bp.rate_limit();
                RateLimitLayer::with_headers(HeaderConfig::new(
                    headers.limit.clone(),
                    headers.remaining.clone(),
                    headers.reset.clone(),
                    headers.reset_format,
                ))
                .origin(bp.base_url().origin().clone())
            }
        };
        let auth = AuthLayer::for_origin(bp.base_url().origin().clone(), Arc::clone(&self.tokens))
            .on_foreign_origin(self.foreign);
        Ok(BlueprintLayer {
            trace: self.trace.clone(),
            retry,
            rate_limit,
            refresh: RefreshLayer::new(Arc::clone(&self.tokens)).replay_cap(self.replay_cap),
            auth,
            timeout: settings
                .attempt_timeout
                .map_or_else(AttemptTimeoutLayer::disabled, AttemptTimeoutLayer::new),
            base_url: BaseUrlLayer::new(bp.base_url().clone())
                .default_headers(bp.default_headers().clone()),
        })
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
    trace: TraceLayer,
    retry: RetryLayer<BlueprintPolicy>,
    rate_limit: RateLimitLayer,
    refresh: RefreshLayer<SharedTokenSource>,
    auth: AuthLayer<SharedTokenSource>,
    timeout: AttemptTimeoutLayer,
    base_url: BaseUrlLayer,
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
        let inner = self.base_url.layer(inner);
        let inner = self.timeout.layer(inner);
        let inner = self.auth.layer(inner);
        let inner = self.refresh.layer(inner);
        let inner = self.rate_limit.layer(inner);
        let inner = self.retry.layer(inner);
        BlueprintService {
            inner: self.trace.layer(inner),
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
