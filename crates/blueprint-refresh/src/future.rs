use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use blueprint_core::{
    AccessToken, BoxError, Buffer, ConnectionId, NeedsReauthorization, ReplayBody, TokenFuture,
    TokenSource,
};
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::TokenUnavailableError;

pin_project! {
    /// Response future of [`Refresh`](crate::Refresh).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future, B>,
        ctx: Ctx<B>,
        // The service for the replay (and, when the first call had to wait, for that too).
        // Boxed, like everything used only off the fast path: the future is moved on every
        // call and nested in every layer above, so its size costs on every call.
        service: Option<Box<S>>,
        // Where the replay's service is cloned from when `service` is empty.
        spare: Option<Arc<S>>,
        // The 401 kept while a fresh token is fetched, returned if no replay happens.
        held: Option<Box<S::Response>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // Waiting for the token and/or for the body to be read. Boxed: the slow path,
        // kept out of the future's size for the fast one.
        Preparing { prep: Box<Prep<B>> },
        First { #[pin] future: F },
        // Got a 401: waiting for a fresh token.
        Refreshing,
        // Have a fresh token: waiting for the service to be ready for the replay.
        ReadyForReplay,
        Replaying { #[pin] future: F },
        Failed { error: Option<BoxError> },
        Done,
    }
}

/// A first attempt waiting for its token and/or its body.
pub(crate) struct Prep<B> {
    head: Option<Request<()>>,
    body: Option<ReplayBody<B>>,
    buffer: Option<Buffer<B>>,
    token: Option<TokenFuture>,
}

impl<B> Prep<B> {
    pub(crate) fn new(
        head: Request<()>,
        token: TokenFuture,
        body: Result<ReplayBody<B>, Buffer<B>>,
    ) -> Box<Self> {
        let (body, buffer) = match body {
            Ok(body) => (Some(body), None),
            Err(buffer) => (None, Some(buffer)),
        };
        Box::new(Prep {
            head: Some(head),
            body,
            buffer,
            token: Some(token),
        })
    }
}

/// What a call keeps besides its state: the parts needed to send it again.
pub(crate) struct Ctx<B> {
    source: Option<Arc<dyn TokenSource>>,
    connection: ConnectionId,
    // The token being fetched after a 401.
    token: Option<TokenFuture>,
    // The token the current attempt is sent with.
    used: Option<AccessToken>,
    // Copies for the replay, kept only when the body can be replayed and a refresh could
    // help.
    replay: Option<Box<(Request<()>, ReplayBody<B>)>>,
}

impl<B> Ctx<B> {
    pub(crate) fn new(source: Arc<dyn TokenSource>, connection: ConnectionId) -> Self {
        Ctx {
            source: Some(source),
            connection,
            token: None,
            used: None,
            replay: None,
        }
    }

    fn empty() -> Self {
        Ctx {
            source: None,
            connection: ConnectionId::DEFAULT,
            token: None,
            used: None,
            replay: None,
        }
    }

    /// Sends the first attempt, keeping copies for a replay when the body allows one.
    pub(crate) fn first_call<S>(
        &mut self,
        service: &mut S,
        head: Request<()>,
        token: AccessToken,
        body: ReplayBody<B>,
        keep_copy: bool,
    ) -> S::Future
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        self.used = Some(token);
        if let Some(copy) = body.try_clone().filter(|_| keep_copy) {
            self.replay = Some(Box::new((copy_head(&head), copy)));
        }
        let (parts, ()) = head.into_parts();
        service.call(Request::from_parts(parts, body))
    }
}

/// A copy of a request head: method, URI, version, headers and extensions.
fn copy_head(head: &Request<()>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.version_mut() = head.version();
    *copy.headers_mut() = head.headers().clone();
    *copy.extensions_mut() = head.extensions().clone();
    copy
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn called(future: S::Future, ctx: Ctx<B>, spare: Option<Arc<S>>) -> Self {
        ResponseFuture {
            state: State::First { future },
            ctx,
            service: None,
            spare,
            held: None,
        }
    }

    pub(crate) fn preparing(prep: Box<Prep<B>>, ctx: Ctx<B>, ready_service: S) -> Self {
        ResponseFuture {
            state: State::Preparing { prep },
            ctx,
            service: Some(Box::new(ready_service)),
            spare: None,
            held: None,
        }
    }

    pub(crate) fn failed(error: impl Into<BoxError>) -> Self {
        ResponseFuture {
            state: State::Failed {
                error: Some(error.into()),
            },
            ctx: Ctx::empty(),
            service: None,
            spare: None,
            held: None,
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Preparing { .. } => "preparing",
            State::First { .. } => "first attempt",
            State::Refreshing => "refreshing after 401",
            State::ReadyForReplay => "waiting to replay",
            State::Replaying { .. } => "replaying",
            State::Failed { .. } => "failed",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("connection", &self.ctx.connection)
            .field("state", &state)
            .finish()
    }
}

fn gone() -> BoxError {
    "refresh future polled after completion".into()
}

impl<S, B, R> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Preparing { prep } => {
                    let ctx = &mut *this.ctx;
                    if let Some(buffer) = prep.buffer.as_mut() {
                        let body = ready!(Pin::new(buffer).poll(cx));
                        prep.buffer = None;
                        match body {
                            Ok(body) => prep.body = Some(body),
                            Err(error) => {
                                this.state.set(State::Done);
                                return Poll::Ready(Err(error));
                            }
                        }
                    }
                    if let Some(token) = prep.token.as_mut() {
                        let token = ready!(Pin::new(token).poll(cx));
                        prep.token = None;
                        match token {
                            Ok(token) => ctx.used = Some(token),
                            Err(source) => {
                                this.state.set(State::Done);
                                let connection = ctx.connection.clone();
                                return Poll::Ready(Err(TokenUnavailableError::new(
                                    connection, source,
                                )
                                .into()));
                            }
                        }
                    }
                    let (Some(head), Some(body), Some(token), Some(service)) = (
                        prep.head.take(),
                        prep.body.take(),
                        ctx.used.take(),
                        this.service.as_mut(),
                    ) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(gone()));
                    };
                    let future = ctx.first_call(service, head, token, body, true);
                    this.state.set(State::First { future });
                }
                StateProj::First { future } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(response) => response,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    if response.status() != StatusCode::UNAUTHORIZED {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    }
                    let ctx = &mut *this.ctx;
                    let Some(source) = ctx.source.as_ref() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    };
                    // Stale only if still current, so a burst of 401s makes one refresh.
                    if let Some(used) = &ctx.used {
                        source.invalidate(&ctx.connection, used);
                    }
                    ctx.token = Some(source.token(&ctx.connection));
                    *this.held = Some(Box::new(response));
                    this.state.set(State::Refreshing);
                }
                StateProj::Refreshing => {
                    let ctx = &mut *this.ctx;
                    let fresh = match ctx.token.as_mut() {
                        Some(token) => ready!(Pin::new(token).poll(cx)),
                        None => Err(blueprint_core::TokenError::new(
                            blueprint_core::TokenErrorKind::Other,
                            "no token future",
                        )),
                    };
                    ctx.token = None;
                    let Some(mut held) = this.held.take().map(|held| *held) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(gone()));
                    };
                    let fresh = match fresh {
                        // The same token again: nothing was refreshed, a replay would fail too.
                        Ok(fresh) if Some(&fresh) == ctx.used.as_ref() => None,
                        Ok(fresh) => Some(fresh),
                        Err(error) if error.needs_reauthorization() => None,
                        // A refresh that may work later (cooldown): the 401 as it came.
                        Err(_) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(held));
                        }
                    };
                    let Some(fresh) = fresh else {
                        held.extensions_mut().insert(NeedsReauthorization {
                            connection: ctx.connection.clone(),
                        });
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(held));
                    };
                    if this.service.is_none() {
                        *this.service = this.spare.take().map(|spare| Box::new(S::clone(&spare)));
                    }
                    if ctx.replay.is_none() || this.service.is_none() {
                        // The body was not kept: the 401 as it came; the next call has the
                        // fresh token.
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(held));
                    }
                    ctx.used = Some(fresh);
                    this.state.set(State::ReadyForReplay);
                }
                StateProj::ReadyForReplay => {
                    let ctx = &mut *this.ctx;
                    let (Some(service), Some(replay)) = (this.service.as_mut(), ctx.replay.take())
                    else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(gone()));
                    };
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(error)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                        Poll::Pending => {
                            ctx.replay = Some(replay);
                            return Poll::Pending;
                        }
                    }
                    let (head, body) = *replay;
                    let (parts, ()) = head.into_parts();
                    let future = service.call(Request::from_parts(parts, body));
                    this.state.set(State::Replaying { future });
                }
                StateProj::Replaying { future } => {
                    let result = ready!(future.poll(cx));
                    this.state.set(State::Done);
                    let mut response = result.map_err(Into::into)?;
                    if response.status() == StatusCode::UNAUTHORIZED {
                        response.extensions_mut().insert(NeedsReauthorization {
                            connection: this.ctx.connection.clone(),
                        });
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Failed { error } => {
                    let error = error.take().unwrap_or_else(gone);
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => return Poll::Ready(Err(gone())),
            }
        }
    }
}
