//! A copy of a request, kept to send it again.

use std::fmt;
use std::marker::PhantomData;
use std::sync::LazyLock;

use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

use crate::{AttemptCount, ConnectionId, Deadline, Replay, ReplayBody, RetrySafe, Target};

/// What a layer keeps of a request to send it again: its head, its extensions and its
/// body's [`Replay`] handle.
///
/// Made cheaply on every call by the layer that may resend (the retry layer in the engine's
/// stack): the method, URI and headers are cloned (reference counts and one header map),
/// and the extensions are kept as plain values when they are only the Blueprint ones
/// ([`ConnectionId`], [`Deadline`], [`Target`], [`RetrySafe`], [`AttemptCount`]); only a
/// request that carries extensions of the caller's own has its extension map cloned.
///
/// ```
/// use blueprint_core::{ConnectionId, KeptRequest, ReplayBody};
/// use bytes::Bytes;
/// use http_body_util::Full;
///
/// let mut request = http::Request::post("https://api.example.com/notes").body(())?;
/// request.extensions_mut().insert(ConnectionId::new("ws-1"));
/// let (parts, ()) = request.into_parts();
/// let body = ReplayBody::new(Full::new(Bytes::from_static(b"hi")), 1024);
/// let kept = KeptRequest::of(&parts, body.replayer().expect("kept"));
/// let again: http::Request<ReplayBody<Full<Bytes>>> = kept.request().expect("in memory");
/// assert_eq!(again.uri(), "https://api.example.com/notes");
/// assert_eq!(ConnectionId::of(&again).as_str(), "ws-1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeptRequest<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    connection: ConnectionId,
    deadline: Option<Deadline>,
    target: Option<Target>,
    retry_safe: bool,
    count: Option<AttemptCount>,
    // The whole map, cloned, when the caller put extensions of its own on the request.
    others: Option<Extensions>,
    body: Replay,
    _body: PhantomData<fn() -> B>,
}

static NO_EXTENSIONS: LazyLock<Extensions> = LazyLock::new(Extensions::new);

impl<B> KeptRequest<B> {
    /// Keeps what is needed to send the request of `parts` again, with `body`.
    pub fn of(parts: &Parts, body: Replay) -> Self {
        let extensions = &parts.extensions;
        let connection = extensions.get::<ConnectionId>();
        let deadline = extensions.get::<Deadline>().copied();
        let target = extensions.get::<Target>().cloned();
        let retry_safe = extensions.get::<RetrySafe>().is_some();
        let count = extensions.get::<AttemptCount>().cloned();
        let known = usize::from(connection.is_some())
            + usize::from(deadline.is_some())
            + usize::from(target.is_some())
            + usize::from(retry_safe)
            + usize::from(count.is_some());
        KeptRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            connection: connection.cloned().unwrap_or(ConnectionId::DEFAULT),
            deadline,
            target,
            retry_safe,
            count,
            others: (extensions.len() != known).then(|| extensions.clone()),
            body,
            _body: PhantomData,
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The connection the request is for.
    pub fn connection(&self) -> &ConnectionId {
        &self.connection
    }

    /// The call's deadline, if it has one.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// Where the request goes, if the stack resolved it.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// Whether the caller marked the request [`RetrySafe`].
    pub fn retry_safe(&self) -> bool {
        self.retry_safe
    }

    /// The caller's [`AttemptCount`], if the request carried one.
    pub fn attempt_count(&self) -> Option<&AttemptCount> {
        self.count.as_ref()
    }

    /// The extensions of the caller's own, with the Blueprint ones, when the request had
    /// any of the caller's own; an empty map otherwise (the Blueprint ones have their own
    /// accessors).
    pub fn other_extensions(&self) -> &Extensions {
        self.others.as_ref().unwrap_or(&NO_EXTENSIONS)
    }

    /// Whether [`KeptRequest::request`] can give a request now: the body has been sent to
    /// its end within its cap.
    pub fn is_ready(&self) -> bool {
        self.body.is_ready()
    }

    /// The request again, or `None` when its body was not sent to its end within the cap
    /// (it cannot be sent again).
    pub fn request(&self) -> Option<Request<ReplayBody<B>>> {
        let body = self.body.replay()?;
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        let extensions = request.extensions_mut();
        match &self.others {
            Some(others) => *extensions = others.clone(),
            None => {
                extensions.insert(self.connection.clone());
                if let Some(deadline) = self.deadline {
                    extensions.insert(deadline);
                }
                if let Some(target) = &self.target {
                    extensions.insert(target.clone());
                }
                if self.retry_safe {
                    extensions.insert(RetrySafe);
                }
                if let Some(count) = &self.count {
                    extensions.insert(count.clone());
                }
            }
        }
        Some(request)
    }
}

impl<B> fmt::Debug for KeptRequest<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptRequest")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("connection", &self.connection)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}
