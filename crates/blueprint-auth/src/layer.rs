use std::sync::Arc;
use std::task::{Context, Poll};

use blueprint_core::{BoxError, ConnectionId, InvalidOrigin, Origin, TokenSource};
use http::Request;
use http::header::AUTHORIZATION;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{ForeignOriginError, TokenSourceError};
use crate::future::ResponseFuture;

/// What to do with a request for another origin than the configured one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForeignOrigin {
    /// Fail with [`ForeignOriginError`] and send nothing (the default).
    #[default]
    Reject,
    /// Send it as it is, without credentials.
    SendWithoutCredentials,
}

/// What to do when a request already has an `Authorization` header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExistingAuthorization {
    /// Send the caller's header and do not ask for a token (the default).
    #[default]
    Keep,
    /// Replace it with the connection's token.
    Override,
}

#[derive(Debug, Clone)]
struct Config {
    origin: Origin,
    foreign: ForeignOrigin,
    existing: ExistingAuthorization,
}

/// Layer that applies [`AddAuthorization`]; see the [crate docs](crate).
#[derive(Debug)]
pub struct AuthLayer<T> {
    source: Arc<T>,
    config: Config,
}

impl<T> Clone for AuthLayer<T> {
    fn clone(&self) -> Self {
        AuthLayer {
            source: Arc::clone(&self.source),
            config: self.config.clone(),
        }
    }
}

impl<T: TokenSource> AuthLayer<T> {
    /// Sends tokens from `source` to `origin` (e.g. `"https://api.intercom.io"`) only.
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] when `origin` is not an absolute `http(s)` URL.
    pub fn new(origin: &str, source: T) -> Result<Self, InvalidOrigin> {
        Ok(Self::for_origin(Origin::parse(origin)?, source))
    }

    /// Like [`AuthLayer::new`], from an origin already parsed.
    pub fn for_origin(origin: Origin, source: T) -> Self {
        AuthLayer {
            source: Arc::new(source),
            config: Config {
                origin,
                foreign: ForeignOrigin::default(),
                existing: ExistingAuthorization::default(),
            },
        }
    }

    /// Lets requests for other origins through, without credentials, instead of refusing them.
    #[must_use]
    pub fn send_foreign_without_credentials(self) -> Self {
        self.on_foreign_origin(ForeignOrigin::SendWithoutCredentials)
    }

    /// Sets what happens to requests for other origins.
    #[must_use]
    pub fn on_foreign_origin(mut self, foreign: ForeignOrigin) -> Self {
        self.config.foreign = foreign;
        self
    }

    /// Replaces a caller's own `Authorization` header instead of keeping it.
    #[must_use]
    pub fn override_existing(self) -> Self {
        self.existing_authorization(ExistingAuthorization::Override)
    }

    /// Sets what happens to a caller's own `Authorization` header.
    #[must_use]
    pub fn existing_authorization(mut self, existing: ExistingAuthorization) -> Self {
        self.config.existing = existing;
        self
    }

    /// The token source.
    pub fn source(&self) -> &T {
        &self.source
    }

    /// The origin tokens are sent to.
    pub fn origin(&self) -> &Origin {
        &self.config.origin
    }
}

impl<S, T> Layer<S> for AuthLayer<T> {
    type Service = AddAuthorization<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        AddAuthorization {
            inner,
            shared: Arc::new(Shared {
                source: Arc::clone(&self.source),
                config: self.config.clone(),
            }),
        }
    }
}

/// Middleware that sets `Authorization: Bearer …` from a [`TokenSource`]; see the
/// [crate docs](crate).
#[derive(Debug)]
pub struct AddAuthorization<S, T> {
    inner: S,
    // The source and the settings in one allocation: a clone costs one reference count.
    shared: Arc<Shared<T>>,
}

#[derive(Debug)]
struct Shared<T> {
    source: Arc<T>,
    config: Config,
}

impl<S: Clone, T> Clone for AddAuthorization<S, T> {
    fn clone(&self) -> Self {
        AddAuthorization {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, T: TokenSource> AddAuthorization<S, T> {
    /// Wraps `inner`; see [`AuthLayer::new`].
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] when `origin` is not an absolute `http(s)` URL.
    pub fn new(inner: S, origin: &str, source: T) -> Result<Self, InvalidOrigin> {
        Ok(AuthLayer::new(origin, source)?.layer(inner))
    }

    /// A layer that wraps services in this middleware.
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] when `origin` is not an absolute `http(s)` URL.
    pub fn layer(origin: &str, source: T) -> Result<AuthLayer<T>, InvalidOrigin> {
        AuthLayer::new(origin, source)
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

    /// Whether the request goes to the configured origin: its URI must be absolute and
    /// name that origin. A relative URI does not: where it goes is decided below, so the
    /// token could go anywhere (put a base-URL layer above this one).
    fn is_for_origin<B>(&self, request: &Request<B>) -> bool {
        self.shared.config.origin.matches(request.uri())
    }
}

fn describe_target<B>(request: &Request<B>) -> String {
    let uri = request.uri();
    match (uri.scheme_str(), uri.host()) {
        (Some(scheme), Some(host)) => match uri.port_u16() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        },
        _ => String::from(
            "a relative URI (the auth layer needs absolute URIs to know where the token \
             goes: put a base-URL layer above it)",
        ),
    }
}

impl<S, T, B, R> Service<Request<B>> for AddAuthorization<S, T>
where
    S: Service<Request<B>, Response = http::Response<R>> + Clone,
    S::Error: Into<BoxError>,
    T: TokenSource,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        if !self.is_for_origin(&request) {
            return match shared.config.foreign {
                ForeignOrigin::SendWithoutCredentials => {
                    ResponseFuture::called(self.inner.call(request))
                }
                ForeignOrigin::Reject => ResponseFuture::failed(ForeignOriginError {
                    connection: ConnectionId::of(&request),
                    requested: describe_target(&request),
                    allowed: shared.config.origin.clone(),
                }),
            };
        }
        if shared.config.existing == ExistingAuthorization::Keep
            && request.headers().contains_key(AUTHORIZATION)
        {
            return ResponseFuture::called(self.inner.call(request));
        }

        let connection = ConnectionId::of(&request);
        let mut token = shared.source.token(&connection);
        match token.take_ready() {
            Some(Ok(token)) => {
                request
                    .headers_mut()
                    .insert(AUTHORIZATION, token.bearer_header().clone());
                ResponseFuture::sent(self.inner.call(request), token, connection)
            }
            Some(Err(source)) => ResponseFuture::failed(TokenSourceError::new(connection, source)),
            None => {
                // The token comes later: the future keeps the service that was polled
                // ready, and a clone takes its place here.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(token, request, ready, connection)
            }
        }
    }
}
