//! The API's default headers (`Intercom-Version`, `Accept`), added to each attempt where the
//! request does not set them.
//!
//! In the engine's stack this step is the last before the client (below auth and the attempt
//! timeout, as DESIGN.md orders it), so it runs after the retry layer: the copy
//! the retry layer keeps of a request is then of the caller's headers alone, and a request
//! that sets none (most `GET`s) is kept without copying a header map at all. Each attempt,
//! the first and any retry, gets the defaults on its way down.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request};
use tower_layer::Layer;
use tower_service::Service;

/// Layer that applies [`SetDefaultHeaders`].
///
/// ```
/// use blueprint::DefaultHeadersLayer;
/// use http::{HeaderMap, HeaderValue, Request, Response};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut defaults = HeaderMap::new();
/// defaults.insert("accept", HeaderValue::from_static("application/json"));
/// defaults.insert("intercom-version", HeaderValue::from_static("2.14"));
/// let echo = service_fn(|req: Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(Response::new(req.headers().clone()))
/// });
/// let service = DefaultHeadersLayer::new(defaults).layer(echo);
///
/// // The request's own value wins; what it does not set is added.
/// let request = Request::get("/me").header("accept", "text/plain").body(())?;
/// let sent = service.oneshot(request).await?.into_body();
/// assert_eq!(sent["accept"], "text/plain");
/// assert_eq!(sent["intercom-version"], "2.14");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct DefaultHeadersLayer {
    headers: Arc<HeaderMap>,
}

impl DefaultHeadersLayer {
    /// Adds `headers` to every request that does not set them itself. A name with several
    /// values adds them all.
    pub fn new(headers: HeaderMap) -> Self {
        DefaultHeadersLayer {
            headers: Arc::new(headers),
        }
    }

    /// The headers added.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl<S> Layer<S> for DefaultHeadersLayer {
    type Service = SetDefaultHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetDefaultHeaders {
            inner,
            headers: Arc::clone(&self.headers),
        }
    }
}

/// Middleware that adds the default headers a request does not set; built by
/// [`DefaultHeadersLayer`]. Its future is the inner service's own: it adds no state to a
/// call.
#[derive(Debug, Clone)]
pub struct SetDefaultHeaders<S> {
    inner: S,
    headers: Arc<HeaderMap>,
}

impl<S> SetDefaultHeaders<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for SetDefaultHeaders<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        add_missing(request.headers_mut(), &self.headers);
        self.inner.call(request)
    }
}

/// Adds to `headers` each name of `defaults` it does not have, with all its values.
fn add_missing(headers: &mut HeaderMap, defaults: &HeaderMap) {
    if defaults.is_empty() {
        return;
    }
    if headers.is_empty() {
        // Nothing to look up: every default goes in, into a map sized once.
        headers.reserve(defaults.len());
        for (name, value) in defaults {
            headers.append(name.clone(), value.clone());
        }
        return;
    }
    let mut added: Option<&http::HeaderName> = None;
    for (name, value) in defaults {
        // Several values of one name come one after another: the first decides for all.
        if added == Some(name) {
            headers.append(name.clone(), value.clone());
        } else if !headers.contains_key(name) {
            headers.append(name.clone(), value.clone());
            added = Some(name);
        } else {
            added = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn what_the_request_sets_wins_and_the_rest_is_added_with_every_value() {
        let defaults = map(&[
            ("accept", "application/json"),
            ("x-tag", "a"),
            ("x-tag", "b"),
            ("user-agent", "blueprint"),
        ]);
        // An empty request gets the defaults as they are.
        let mut empty = HeaderMap::new();
        add_missing(&mut empty, &defaults);
        assert_eq!(empty, defaults);

        // A request with its own values keeps them, and gets only what it lacks.
        let mut own = map(&[("accept", "text/plain"), ("x-tag", "mine")]);
        add_missing(&mut own, &defaults);
        assert_eq!(values(&own, "accept"), ["text/plain"]);
        assert_eq!(values(&own, "x-tag"), ["mine"]);
        assert_eq!(values(&own, "user-agent"), ["blueprint"]);

        let mut partial = map(&[("accept", "text/plain")]);
        add_missing(&mut partial, &defaults);
        assert_eq!(values(&partial, "x-tag"), ["a", "b"]);
        assert_eq!(values(&partial, "accept"), ["text/plain"]);

        // No defaults: nothing changes.
        let mut untouched = map(&[("accept", "text/plain")]);
        add_missing(&mut untouched, &HeaderMap::new());
        assert_eq!(untouched, map(&[("accept", "text/plain")]));
    }
}
