use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use blueprint_core::{
    BoxError, ConnectionId, DEFAULT_REPLAY_CAP, ReplayBody, TokenFuture, TokenSource,
};
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::TokenUnavailableError;
use crate::future::{Ctx, Prep, ResponseFuture};

/// Layer that applies [`Refresh`]; see the [crate docs](crate).
#[derive(Debug)]
pub struct RefreshLayer<T> {
    source: Arc<T>,
    replay_cap: usize,
}

impl<T> Clone for RefreshLayer<T> {
    fn clone(&self) -> Self {
        RefreshLayer {
            source: Arc::clone(&self.source),
            replay_cap: self.replay_cap,
        }
    }
}

impl<T: TokenSource> RefreshLayer<T> {
    /// Keeps `source`'s tokens fresh and replays a request refused with 401 once. Give the
    /// auth layer below the same source (a clone of an `OAuth2TokenSource` shares its cache).
    pub fn new(source: T) -> Self {
        Self::from_arc(Arc::new(source))
    }

    /// Like [`RefreshLayer::new`], with a source already shared.
    pub fn from_arc(source: Arc<T>) -> Self {
        RefreshLayer {
            source,
            replay_cap: DEFAULT_REPLAY_CAP,
        }
    }

    /// Keeps request bodies up to `cap` bytes for the replay (default
    /// [`DEFAULT_REPLAY_CAP`]); a larger or streamed body is sent once, and its 401 is
    /// returned as it came.
    #[must_use]
    pub fn replay_cap(mut self, cap: usize) -> Self {
        self.replay_cap = cap;
        self
    }

    /// The token source.
    pub fn source(&self) -> &T {
        &self.source
    }
}

impl<S: Clone, T> Layer<S> for RefreshLayer<T> {
    type Service = Refresh<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Refresh {
            spare: Arc::new(inner.clone()),
            inner,
            source: Arc::clone(&self.source),
            replay_cap: self.replay_cap,
        }
    }
}

/// Middleware that makes sure the token source holds a fresh token before each request
/// and, on a 401, refreshes once and replays the request once; see the [crate docs](crate).
#[derive(Debug)]
pub struct Refresh<S, T> {
    inner: S,
    // A clone of `inner` for replays, shared by every call: the common call (no 401) pays
    // a reference count instead of a clone of the stack below.
    spare: Arc<S>,
    source: Arc<T>,
    replay_cap: usize,
}

impl<S: Clone, T> Clone for Refresh<S, T> {
    fn clone(&self) -> Self {
        Refresh {
            inner: self.inner.clone(),
            spare: Arc::clone(&self.spare),
            source: Arc::clone(&self.source),
            replay_cap: self.replay_cap,
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

impl<S, T, B, R> Service<Request<B>> for Refresh<S, T>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    T: TokenSource,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let connection = ConnectionId::of(&request);
        let can_refresh = self.source.can_refresh(&connection);
        let mut token = self.source.token(&connection);
        let ready_token = match token.take_ready() {
            Some(Ok(token)) => Some(token),
            Some(Err(source)) => {
                return ResponseFuture::failed(TokenUnavailableError::new(connection, source));
            }
            None => None,
        };

        let (head, body) = request.into_parts();
        let mut buffer = ReplayBody::buffer(body, self.replay_cap);
        // A body already in memory (or empty) is kept without waiting; a streamed one is
        // read when the future is polled, which registers the real waker.
        let body = match Pin::new(&mut buffer).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(body)) => Some(body),
            Poll::Ready(Err(error)) => return ResponseFuture::failed(error),
            Poll::Pending => None,
        };
        let head = Request::from_parts(head, ());
        let mut ctx = Ctx::new(Arc::clone(&self.source) as Arc<dyn TokenSource>, connection);

        match (ready_token, body) {
            (Some(token), Some(body)) => {
                // Fast path: the inner service was polled ready by our caller. A replay is
                // prepared for only when one could help: a replayable body and a source
                // that can produce another token.
                let replay = body.is_replayable() && can_refresh;
                let future = ctx.first_call(&mut self.inner, head, token, body, replay);
                ResponseFuture::called(future, ctx, replay.then(|| Arc::clone(&self.spare)))
            }
            (token_ready, body) => {
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let prep = Prep::new(
                    head,
                    token_ready.map_or(token, |t| TokenFuture::ready(Ok(t))),
                    body.ok_or(buffer),
                );
                ResponseFuture::preparing(prep, ctx, ready)
            }
        }
    }
}
