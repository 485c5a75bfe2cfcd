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
        // Each lookup hashes and probes the map: once every extension is accounted for, the
        // rest are known to be missing. The stack's own come first.
        let len = extensions.len();
        let target = extensions.get::<Target>().cloned();
        let mut known = usize::from(target.is_some());
        let deadline = (known < len)
            .then(|| extensions.get::<Deadline>().copied())
            .flatten();
        known += usize::from(deadline.is_some());
        let connection = (known < len)
            .then(|| extensions.get::<ConnectionId>())
            .flatten();
        known += usize::from(connection.is_some());
        let count = (known < len)
            .then(|| extensions.get::<AttemptCount>().cloned())
            .flatten();
        known += usize::from(count.is_some());
        let retry_safe = known < len && extensions.get::<RetrySafe>().is_some();
        known += usize::from(retry_safe);
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
            others: (len != known).then(|| extensions.clone()),
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

    /// The call's deadline, if it has one (its [`Target`]'s, else a `Deadline`
    /// extension's), as [`Deadline::of`] reads it.
    pub fn deadline(&self) -> Option<Deadline> {
        self.target
            .as_ref()
            .and_then(Target::deadline)
            .or(self.deadline)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;

    use super::*;
    use crate::Origin;

    #[derive(Debug, Clone, PartialEq)]
    struct Own(u8);

    /// Every mix of the Blueprint extensions, with and without one of the caller's own,
    /// comes back as it was: the lookups skipped once all are accounted for skip nothing.
    #[test]
    fn every_mix_of_extensions_is_sent_again_as_it_was() {
        let origin = Origin::parse("https://api.example.com").unwrap_or_else(|e| panic!("{e}"));
        let deadline = Deadline::after(Duration::from_secs(5));
        for mix in 0u8..64 {
            let mut request = Request::get("https://api.example.com/a")
                .body(())
                .unwrap_or_else(|e| panic!("{e}"));
            let extensions = request.extensions_mut();
            let has = |bit: u8| mix & (1 << bit) != 0;
            if has(0) {
                extensions.insert(Target::new(origin.clone()));
            }
            if has(1) {
                extensions.insert(deadline);
            }
            if has(2) {
                extensions.insert(ConnectionId::new("ws-1"));
            }
            if has(3) {
                extensions.insert(AttemptCount::new());
            }
            if has(4) {
                extensions.insert(RetrySafe);
            }
            if has(5) {
                extensions.insert(Own(7));
            }
            let (parts, ()) = request.into_parts();
            let body = ReplayBody::new(Full::new(Bytes::from_static(b"x")), 16);
            let replay = body.replayer().unwrap_or_else(|| panic!("in memory"));
            let kept = KeptRequest::<Full<Bytes>>::of(&parts, replay);
            let again = kept.request().unwrap_or_else(|| panic!("in memory"));
            let ext = again.extensions();
            let what = format!("mix {mix:06b}");
            assert_eq!(ext.get::<Target>().is_some(), has(0), "{what}");
            assert_eq!(
                ext.get::<Deadline>().copied(),
                has(1).then_some(deadline),
                "{what}"
            );
            let connection = ext.get::<ConnectionId>().map(ConnectionId::as_str);
            // The default connection is always named on a request sent again.
            assert_eq!(
                connection.unwrap_or("default"),
                if has(2) { "ws-1" } else { "default" },
                "{what}"
            );
            assert_eq!(ext.get::<AttemptCount>().is_some(), has(3), "{what}");
            assert_eq!(ext.get::<RetrySafe>().is_some(), has(4), "{what}");
            assert_eq!(ext.get::<Own>(), has(5).then_some(&Own(7)), "{what}");
            assert_eq!(kept.retry_safe(), has(4), "{what}");
        }
    }
}
