use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use blueprint_core::{
    BoxError, ConnectionId, DEFAULT_REPLAY_CAP, ReplayAfterRefresh, ReplayBody, TokenSource,
};
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::future::{Kept, ReplayingFuture, ResponseFuture};

/// How a [`Refresh`] service sends a request again after renewing its token.
pub mod replay {
    /// The layer keeps its own copy of each request it may have to replay, and replays it
    /// itself: for a refresh layer used on its own. The inner service receives
    /// `Request<ReplayBody<B>>`. The default.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct OwnCopy;

    /// A retry layer above keeps the request's only copy and replays it: on a 401 after
    /// which the token was renewed, this layer marks the response
    /// [`CredentialsRefreshed`](blueprint_core::CredentialsRefreshed) and the retry layer
    /// sends the request again at once. The inner service receives the request as it is.
    /// What the engine's stack uses.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ByRetry;
}

/// Layer that applies [`Refresh`]; see the [crate docs](crate).
///
/// `M` says who replays a request after a refresh: [`replay::OwnCopy`] (the default) or
/// [`replay::ByRetry`] ([`RefreshLayer::replay_by_retry`]).
#[derive(Debug)]
pub struct RefreshLayer<T, M = replay::OwnCopy> {
    source: Arc<T>,
    replay_cap: usize,
    mode: PhantomData<fn() -> M>,
}

impl<T, M> Clone for RefreshLayer<T, M> {
    fn clone(&self) -> Self {
        RefreshLayer {
            source: Arc::clone(&self.source),
            replay_cap: self.replay_cap,
            mode: PhantomData,
        }
    }
}

impl<T: TokenSource> RefreshLayer<T> {
    /// Renews `source`'s token on a 401 and replays the request once. Give the auth layer
    /// below the same source (a clone of an `OAuth2TokenSource` shares its cache): it
    /// reports which token it sent, and that is the one invalidated.
    pub fn new(source: T) -> Self {
        Self::from_arc(Arc::new(source))
    }

    /// Like [`RefreshLayer::new`], with a source already shared.
    pub fn from_arc(source: Arc<T>) -> Self {
        RefreshLayer {
            source,
            replay_cap: DEFAULT_REPLAY_CAP,
            mode: PhantomData,
        }
    }

    /// Keeps request bodies up to `cap` bytes for the replay (default
    /// [`DEFAULT_REPLAY_CAP`]); a larger body is sent once, and its 401 is returned as it
    /// came.
    #[must_use]
    pub fn replay_cap(mut self, cap: usize) -> Self {
        self.replay_cap = cap;
        self
    }

    /// Lets a retry layer above replay requests ([`replay::ByRetry`]): no copy is kept
    /// here, and the inner service receives the requests as they are. Use it under a
    /// `blueprint_retry::RetryLayer` with `replay_after_refresh` on (its default).
    pub fn replay_by_retry(self) -> RefreshLayer<T, replay::ByRetry> {
        RefreshLayer {
            source: self.source,
            replay_cap: self.replay_cap,
            mode: PhantomData,
        }
    }
}

impl<T, M> RefreshLayer<T, M> {
    /// The token source.
    pub fn source(&self) -> &T {
        &self.source
    }
}

impl<S: Clone, T, M> Layer<S> for RefreshLayer<T, M> {
    type Service = Refresh<S, T, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Refresh {
            spare: Arc::new(inner.clone()),
            inner,
            source: Arc::clone(&self.source),
            replay_cap: self.replay_cap,
            mode: PhantomData,
        }
    }
}

/// Middleware that, on a 401, renews the connection's token once (single-flight, in the
/// token source) and has the request replayed once; see the [crate docs](crate).
#[derive(Debug)]
pub struct Refresh<S, T, M = replay::OwnCopy> {
    inner: S,
    // A clone of `inner` for replays, shared by every call: the common call (no 401) pays
    // nothing for it.
    spare: Arc<S>,
    source: Arc<T>,
    replay_cap: usize,
    mode: PhantomData<fn() -> M>,
}

impl<S: Clone, T, M> Clone for Refresh<S, T, M> {
    fn clone(&self) -> Self {
        Refresh {
            inner: self.inner.clone(),
            spare: Arc::clone(&self.spare),
            source: Arc::clone(&self.source),
            replay_cap: self.replay_cap,
            mode: PhantomData,
        }
    }
}

impl<S: Clone, T: TokenSource> Refresh<S, T> {
    /// Wraps `inner`; see [`RefreshLayer::new`].
    pub fn new(inner: S, source: T) -> Self {
        RefreshLayer::new(source).layer(inner)
    }

    /// A layer that wraps services in this middleware.
    pub fn layer(source: T) -> RefreshLayer<T> {
        RefreshLayer::new(source)
    }
}

impl<S, T, M> Refresh<S, T, M> {
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

impl<S, T, B, R> Service<Request<B>> for Refresh<S, T, replay::OwnCopy>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    T: TokenSource,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ReplayingFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let source = Arc::clone(&self.source) as Arc<dyn TokenSource>;
        let (parts, body) = request.into_parts();
        // A replay is prepared for only when one could help: a source that can produce
        // another token, for a request that is not already a replay.
        let replay = parts.extensions.get::<ReplayAfterRefresh>().is_none()
            && source.can_refresh(&ConnectionId::from_extensions(&parts.extensions));
        let (body, kept) = if replay {
            let body = ReplayBody::new(body, self.replay_cap);
            let kept = body.replayer().map(|replay| Kept::of(&parts, replay));
            (body, kept)
        } else {
            (ReplayBody::once(body), None)
        };
        let future = self.inner.call(Request::from_parts(parts, body));
        ReplayingFuture::new(future, source, kept, Arc::clone(&self.spare))
    }
}

impl<S, T, B, R> Service<Request<B>> for Refresh<S, T, replay::ByRetry>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    T: TokenSource,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let is_replay = request.extensions().get::<ReplayAfterRefresh>().is_some();
        let source = Arc::clone(&self.source) as Arc<dyn TokenSource>;
        ResponseFuture::new(self.inner.call(request), source, is_replay)
    }
}
