//! What is retried.

use std::error::Error as StdError;

pub use blueprint_core::RetryReason;
use blueprint_core::{Attempt, ConnectionId, RetrySafe, Target};
use http::{Extensions, HeaderMap, Method, StatusCode, Uri};

use crate::timeout::AttemptTimeoutError;

/// The request an outcome belongs to, as a [`RetryPolicy`] sees it.
///
/// The Blueprint extensions have their own fields. `extensions` holds the caller's own
/// extensions when the request carried any; to keep the common call cheap, a request that
/// carried only Blueprint extensions ([`ConnectionId`], [`Deadline`](blueprint_core::Deadline),
/// [`Target`], [`RetrySafe`]) is described with an empty map.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The request's URI.
    pub uri: &'a Uri,
    /// Whether the caller marked the request [`RetrySafe`].
    pub retry_safe: bool,
    /// Whose request it is.
    pub connection: &'a ConnectionId,
    /// Where it goes and its route template, when the stack resolved them.
    pub target: Option<&'a Target>,
    /// The request's own extensions (see above).
    pub extensions: &'a Extensions,
    /// The attempt that produced the outcome.
    pub attempt: Attempt,
}

impl<'a> RequestInfo<'a> {
    /// Describes a request from its method, URI and extensions (the Blueprint fields are
    /// read from them).
    pub fn new(
        method: &'a Method,
        uri: &'a Uri,
        extensions: &'a Extensions,
        attempt: Attempt,
    ) -> Self {
        static DEFAULT: ConnectionId = ConnectionId::DEFAULT;
        RequestInfo {
            method,
            uri,
            retry_safe: extensions.get::<RetrySafe>().is_some(),
            connection: extensions.get::<ConnectionId>().unwrap_or(&DEFAULT),
            target: extensions.get::<Target>(),
            extensions,
            attempt,
        }
    }
}

impl RequestInfo<'_> {
    /// Whether the method is idempotent (RFC 9110 §9.2.2) or the caller marked the request
    /// [`RetrySafe`], so that sending it again cannot do anything twice.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            *self.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        ) || self.retry_safe
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The server answered.
    Response {
        /// The status.
        status: StatusCode,
        /// The headers.
        headers: &'a HeaderMap,
    },
    /// The attempt failed without an answer.
    Error(&'a (dyn StdError + 'static)),
}

/// Decides whether an attempt's outcome is worth another attempt.
///
/// The retry layer asks only this; the number of attempts, the budget, the backoff, the
/// deadline and whether the body can be sent again are checked by the layer itself. Any
/// `Fn(&RequestInfo, &Outcome) -> Option<RetryReason>` closure is a policy.
pub trait RetryPolicy: Send + Sync + 'static {
    /// `Some(reason)` to retry, `None` to hand the outcome back.
    fn classify(&self, request: &RequestInfo<'_>, outcome: &Outcome<'_>) -> Option<RetryReason>;
}

impl<F> RetryPolicy for F
where
    F: Fn(&RequestInfo<'_>, &Outcome<'_>) -> Option<RetryReason> + Send + Sync + 'static,
{
    fn classify(&self, request: &RequestInfo<'_>, outcome: &Outcome<'_>) -> Option<RetryReason> {
        self(request, outcome)
    }
}

/// The default policy.
///
/// - Idempotent requests (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`, or any request
///   marked [`RetrySafe`]) are retried after a transport error, an attempt timeout, or a
///   408, 429, 500, 502, 503 or 504.
/// - Other requests (`POST`, `PATCH`) are retried only when the failure proves the server
///   did not process them: the connection failed before the request was written, or the
///   server answered 429 (it refused the request without acting on it). A 503 or a
///   timeout after a `POST` was sent may come after the server created the resource, and
///   a retry would create it twice.
#[derive(Debug, Clone)]
pub struct DefaultPolicy {
    statuses: Vec<StatusCode>,
}

impl Default for DefaultPolicy {
    fn default() -> Self {
        DefaultPolicy {
            statuses: [408, 429, 500, 502, 503, 504]
                .into_iter()
                .filter_map(|s| StatusCode::from_u16(s).ok())
                .collect(),
        }
    }
}

impl DefaultPolicy {
    /// The default policy with another set of retryable statuses for idempotent requests.
    pub fn with_statuses(statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        DefaultPolicy {
            statuses: statuses.into_iter().collect(),
        }
    }
}

impl RetryPolicy for DefaultPolicy {
    fn classify(&self, request: &RequestInfo<'_>, outcome: &Outcome<'_>) -> Option<RetryReason> {
        self.classify_as(request.is_idempotent(), outcome)
    }
}

impl DefaultPolicy {
    /// The default decision for a request known to be idempotent (safe to send twice) or
    /// not; for policies that decide idempotency themselves (per-path rules) and defer the
    /// rest to the default.
    pub fn classify_as(&self, idempotent: bool, outcome: &Outcome<'_>) -> Option<RetryReason> {
        match outcome {
            Outcome::Response { status, .. } => {
                let retryable = if idempotent {
                    self.statuses.contains(status)
                } else {
                    *status == StatusCode::TOO_MANY_REQUESTS
                };
                retryable.then_some(RetryReason::Status(*status))
            }
            Outcome::Error(error) => match classify_error(*error)? {
                RetryReason::ConnectFailed => Some(RetryReason::ConnectFailed),
                other => idempotent.then_some(other),
            },
        }
    }
}

/// What kind of failure an error is, looking through its chain of sources: an
/// [`AttemptTimeoutError`], a connection that was never made (hyper-util's connect
/// errors; an I/O error of kind `ConnectionRefused`), another transport error (hyper's
/// errors, other I/O errors), or `None` for errors that are not about the transport (a
/// layer refusing to send, a token that could not be had), which are never retried.
pub fn classify_error(error: &(dyn StdError + 'static)) -> Option<RetryReason> {
    let mut current = Some(error);
    let mut transport = false;
    while let Some(err) = current {
        if err.is::<AttemptTimeoutError>() {
            return Some(RetryReason::AttemptTimeout);
        }
        #[cfg(feature = "hyper")]
        if let Some(client) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            if client.is_connect() {
                return Some(RetryReason::ConnectFailed);
            }
            transport = true;
        }
        #[cfg(feature = "hyper")]
        if err.is::<hyper::Error>() {
            transport = true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable => {
                    return Some(RetryReason::ConnectFailed);
                }
                _ => transport = true,
            }
        }
        current = err.source();
    }
    transport.then_some(RetryReason::Transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(method: &'a Method, uri: &'a Uri, ext: &'a Extensions) -> RequestInfo<'a> {
        RequestInfo::new(method, uri, ext, Attempt::FIRST)
    }

    #[test]
    fn post_is_retried_only_on_429_and_connect_failures() {
        let policy = DefaultPolicy::default();
        let uri = Uri::from_static("/x");
        let ext = Extensions::new();
        let headers = HeaderMap::new();
        let post = info(&Method::POST, &uri, &ext);
        let get = info(&Method::GET, &uri, &ext);
        let status = |s: u16| Outcome::Response {
            status: StatusCode::from_u16(s).unwrap(),
            headers: &headers,
        };
        for s in [408, 500, 502, 503, 504] {
            assert_eq!(policy.classify(&post, &status(s)), None, "POST {s}");
            assert!(policy.classify(&get, &status(s)).is_some(), "GET {s}");
        }
        assert!(policy.classify(&post, &status(429)).is_some());
        for s in [200, 400, 401, 404, 501] {
            assert_eq!(policy.classify(&get, &status(s)), None, "GET {s}");
        }

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let timeout = AttemptTimeoutError::new(std::time::Duration::from_secs(1));
        assert_eq!(
            policy.classify(&post, &Outcome::Error(&refused)),
            Some(RetryReason::ConnectFailed)
        );
        assert_eq!(policy.classify(&post, &Outcome::Error(&reset)), None);
        assert_eq!(policy.classify(&post, &Outcome::Error(&timeout)), None);
        assert_eq!(
            policy.classify(&get, &Outcome::Error(&reset)),
            Some(RetryReason::Transport)
        );
        assert_eq!(
            policy.classify(&get, &Outcome::Error(&timeout)),
            Some(RetryReason::AttemptTimeout)
        );

        let mut safe = Extensions::new();
        safe.insert(RetrySafe);
        let upsert = info(&Method::POST, &uri, &safe);
        assert!(policy.classify(&upsert, &status(503)).is_some());
    }

    #[test]
    fn errors_that_are_not_about_the_transport_are_not_retried() {
        let other: Box<dyn StdError + Send + Sync> = "no token".into();
        assert_eq!(classify_error(&*other), None);
    }
}
