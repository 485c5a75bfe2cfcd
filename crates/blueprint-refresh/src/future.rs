use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use blueprint_core::{
    AccessToken, BoxError, ConnectionId, CredentialsRefreshed, KeptRequest, NeedsReauthorization,
    ReplayAfterRefresh, ReplayBody, SentToken, TokenFuture, TokenSource,
};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

pub(crate) type Kept<B> = KeptRequest<B>;

/// What happens after a 401: the token that was sent is reported stale (the source acts
/// only if it is still its current one, so a burst of 401s makes one refresh), and a fresh
/// one is awaited.
struct Renewal {
    connection: ConnectionId,
    sent: AccessToken,
    token: TokenFuture,
}

enum Renewed {
    // A new token: a replay may succeed.
    Fresh,
    // No other token can be had: a person must authorize the connection again.
    Dead,
    // A refresh that may work later (a cooldown): the 401 as it came.
    NotNow,
}

impl Renewal {
    /// Starts renewing after `response`, a 401; `None` when the response does not say which
    /// token was sent (the caller's own `Authorization`, or no auth layer below).
    fn start<R>(source: &dyn TokenSource, response: &Response<R>) -> Option<Box<Renewal>> {
        let SentToken { token, connection } = response.extensions().get::<SentToken>()?;
        source.invalidate(connection, token);
        Some(Box::new(Renewal {
            connection: connection.clone(),
            sent: token.clone(),
            token: source.token(connection),
        }))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Renewed> {
        Poll::Ready(match ready!(Pin::new(&mut self.token).poll(cx)) {
            // The same token again: nothing was refreshed, a replay would fail too.
            Ok(fresh) if fresh == self.sent => Renewed::Dead,
            Ok(_) => Renewed::Fresh,
            Err(error) if error.needs_reauthorization() => Renewed::Dead,
            Err(_) => Renewed::NotNow,
        })
    }
}

fn mark_dead<R>(response: &mut Response<R>, connection: ConnectionId) {
    response
        .extensions_mut()
        .insert(NeedsReauthorization { connection });
}

/// The connection whose token a 401 refused, when the auth layer below sent it.
fn sent_to<R>(response: &Response<R>) -> Option<ConnectionId> {
    response
        .extensions()
        .get::<SentToken>()
        .map(|sent| sent.connection.clone())
}

fn gone() -> BoxError {
    "refresh future polled after completion".into()
}

pin_project! {
    /// Response future of [`Refresh`](crate::Refresh) in [`ByRetry`](crate::replay::ByRetry)
    /// mode: on a 401, renews the token and marks the response
    /// [`CredentialsRefreshed`] for the retry layer above to replay.
    pub struct ResponseFuture<F, R> {
        #[pin]
        future: F,
        source: Option<Arc<dyn TokenSource>>,
        is_replay: bool,
        // A 401 kept while a fresh token is fetched. Boxed: the slow path.
        renewing: Option<Box<(Box<Renewal>, Response<R>)>>,
    }
}

impl<F, R> ResponseFuture<F, R> {
    pub(crate) fn new(future: F, source: Arc<dyn TokenSource>, is_replay: bool) -> Self {
        ResponseFuture {
            future,
            source: Some(source),
            is_replay,
            renewing: None,
        }
    }
}

impl<F, R> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("renewing", &self.renewing.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(renewing) = this.renewing.as_mut() {
            let renewed = ready!(renewing.0.poll(cx));
            let Some((renewal, mut response)) = this.renewing.take().map(|b| *b) else {
                return Poll::Ready(Err(gone()));
            };
            match renewed {
                Renewed::Fresh => {
                    response.extensions_mut().insert(CredentialsRefreshed);
                }
                Renewed::Dead => mark_dead(&mut response, renewal.connection),
                Renewed::NotNow => {}
            }
            return Poll::Ready(Ok(response));
        }
        let mut response = ready!(this.future.poll(cx)).map_err(Into::into)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Poll::Ready(Ok(response));
        }
        let Some(source) = this.source.take() else {
            return Poll::Ready(Ok(response));
        };
        if *this.is_replay {
            // The renewed token was refused too.
            if let Some(connection) = sent_to(&response) {
                mark_dead(&mut response, connection);
            }
            return Poll::Ready(Ok(response));
        }
        let Some(mut renewal) = Renewal::start(&*source, &response) else {
            return Poll::Ready(Ok(response));
        };
        match renewal.poll(cx) {
            Poll::Ready(Renewed::Fresh) => {
                response.extensions_mut().insert(CredentialsRefreshed);
                Poll::Ready(Ok(response))
            }
            Poll::Ready(Renewed::Dead) => {
                mark_dead(&mut response, renewal.connection);
                Poll::Ready(Ok(response))
            }
            Poll::Ready(Renewed::NotNow) => Poll::Ready(Ok(response)),
            Poll::Pending => {
                *this.renewing = Some(Box::new((renewal, response)));
                Poll::Pending
            }
        }
    }
}

pin_project! {
    /// Response future of [`Refresh`](crate::Refresh) in its default
    /// [`OwnCopy`](crate::replay::OwnCopy) mode: on a 401, renews the token and replays the
    /// request once, from its own copy.
    pub struct ReplayingFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future>,
        source: Arc<dyn TokenSource>,
        // The copy for the replay; `None` when no replay can help.
        kept: Option<Box<Kept<B>>>,
        // Where the replay's service is cloned from.
        spare: Arc<S>,
        // The slow path, boxed: the 401 kept while a fresh token is fetched (returned if no
        // replay happens), and the service for the replay.
        renewal: Option<Box<Renewal>>,
        held: Option<Box<S::Response>>,
        service: Option<Box<S>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        First { #[pin] future: F },
        Renewing,
        ReadyForReplay,
        Replaying { #[pin] future: F },
        Done,
    }
}

impl<S, B> ReplayingFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn new(
        future: S::Future,
        source: Arc<dyn TokenSource>,
        kept: Option<Kept<B>>,
        spare: Arc<S>,
    ) -> Self {
        ReplayingFuture {
            state: State::First { future },
            source,
            kept: kept.map(Box::new),
            spare,
            renewal: None,
            held: None,
            service: None,
        }
    }
}

impl<S, B> fmt::Debug for ReplayingFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::First { .. } => "first attempt",
            State::Renewing => "renewing the token after a 401",
            State::ReadyForReplay => "waiting to replay",
            State::Replaying { .. } => "replaying",
            State::Done => "done",
        };
        f.debug_struct("ReplayingFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, B, R> Future for ReplayingFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::First { future } => {
                    let result = ready!(future.poll(cx));
                    this.state.set(State::Done);
                    let response = result.map_err(Into::into)?;
                    if response.status() != StatusCode::UNAUTHORIZED {
                        return Poll::Ready(Ok(response));
                    }
                    let Some(renewal) = Renewal::start(&**this.source, &response) else {
                        return Poll::Ready(Ok(response));
                    };
                    *this.renewal = Some(renewal);
                    *this.held = Some(Box::new(response));
                    this.state.set(State::Renewing);
                }
                StateProj::Renewing => {
                    let Some(renewal) = this.renewal.as_mut() else {
                        return Poll::Ready(Err(gone()));
                    };
                    let renewed = ready!(renewal.poll(cx));
                    let connection = renewal.connection.clone();
                    let Some(mut held) = this.held.take().map(|held| *held) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(gone()));
                    };
                    this.state.set(State::Done);
                    match renewed {
                        Renewed::Dead => {
                            mark_dead(&mut held, connection);
                            return Poll::Ready(Ok(held));
                        }
                        Renewed::NotNow => return Poll::Ready(Ok(held)),
                        Renewed::Fresh => {}
                    }
                    if this.kept.as_ref().is_none_or(|kept| !kept.is_ready()) {
                        // The body was not kept: the 401 as it came; the next call has the
                        // fresh token.
                        return Poll::Ready(Ok(held));
                    }
                    *this.service = Some(Box::new(S::clone(this.spare)));
                    *this.held = Some(Box::new(held));
                    this.state.set(State::ReadyForReplay);
                }
                StateProj::ReadyForReplay => {
                    let Some(service) = this.service.as_mut() else {
                        return Poll::Ready(Err(gone()));
                    };
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    let Some(mut request) = this.kept.take().and_then(|kept| kept.request()) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(gone()));
                    };
                    request.extensions_mut().insert(ReplayAfterRefresh);
                    let future = service.call(request);
                    this.state.set(State::Replaying { future });
                }
                StateProj::Replaying { future } => {
                    let result = ready!(future.poll(cx));
                    this.state.set(State::Done);
                    let mut response = result.map_err(Into::into)?;
                    if response.status() == StatusCode::UNAUTHORIZED {
                        if let Some(connection) = sent_to(&response) {
                            mark_dead(&mut response, connection);
                        }
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => return Poll::Ready(Err(gone())),
            }
        }
    }
}
