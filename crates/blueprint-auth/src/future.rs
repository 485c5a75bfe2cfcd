use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use blueprint_core::{AccessToken, BoxError, ConnectionId, SentToken, TokenFuture};
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::TokenSourceError;

pin_project! {
    /// Response future of [`AddAuthorization`](crate::AddAuthorization).
    pub struct ResponseFuture<F, S, B> {
        #[pin]
        state: State<F, S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B> {
        // Waiting for the token source; holds the request and the service polled ready.
        // Boxed: this is the slow path, and it keeps the future small for the fast one.
        Token {
            pending: Box<Pending<S, B>>,
        },
        // Sent with our token, kept to name it on a 401.
        Sent {
            #[pin]
            future: F,
            sent: Option<(AccessToken, ConnectionId)>,
        },
        // Sent as it was (the caller's own `Authorization`, or a foreign origin allowed
        // through without credentials).
        Called {
            #[pin]
            future: F,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

struct Pending<S, B> {
    token: TokenFuture,
    call: Option<(Request<B>, S)>,
    connection: ConnectionId,
}

impl<F, S, B> ResponseFuture<F, S, B> {
    pub(crate) fn called(future: F) -> Self {
        ResponseFuture {
            state: State::Called { future },
        }
    }

    pub(crate) fn sent(future: F, token: AccessToken, connection: ConnectionId) -> Self {
        ResponseFuture {
            state: State::Sent {
                future,
                sent: Some((token, connection)),
            },
        }
    }

    pub(crate) fn failed(error: impl Into<BoxError>) -> Self {
        ResponseFuture {
            state: State::Failed {
                error: Some(error.into()),
            },
        }
    }

    pub(crate) fn waiting(
        token: TokenFuture,
        request: Request<B>,
        service: S,
        connection: ConnectionId,
    ) -> Self {
        ResponseFuture {
            state: State::Token {
                pending: Box::new(Pending {
                    token,
                    call: Some((request, service)),
                    connection,
                }),
            },
        }
    }
}

impl<F, S, B> fmt::Debug for ResponseFuture<F, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Token { .. } => "waiting for token",
            State::Sent { .. } | State::Called { .. } => "called",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, S, B, R, E> Future for ResponseFuture<F, S, B>
where
    F: Future<Output = Result<Response<R>, E>>,
    S: Service<Request<B>, Future = F, Response = Response<R>, Error = E>,
    E: Into<BoxError>,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Token { pending } => {
                    let Pending {
                        token,
                        call,
                        connection,
                    } = &mut **pending;
                    let result = ready!(Pin::new(token).poll(cx));
                    let token = match result {
                        Ok(token) => token,
                        Err(source) => {
                            let connection = connection.clone();
                            this.state.set(State::Failed { error: None });
                            return Poll::Ready(Err(
                                TokenSourceError::new(connection, source).into()
                            ));
                        }
                    };
                    let Some((mut request, mut service)) = call.take() else {
                        return Poll::Ready(Err("auth future polled after completion".into()));
                    };
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, token.bearer_header().clone());
                    let future = service.call(request);
                    let connection = std::mem::take(connection);
                    this.state.set(State::Sent {
                        future,
                        sent: Some((token, connection)),
                    });
                }
                StateProj::Sent { future, sent } => {
                    let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if response.status() == StatusCode::UNAUTHORIZED {
                        if let Some((token, connection)) = sent.take() {
                            response
                                .extensions_mut()
                                .insert(SentToken { token, connection });
                        }
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Called { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "auth future polled after completion".into())));
                }
            }
        }
    }
}
