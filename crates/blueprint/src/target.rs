//! Stack position 0, the outermost step: the call's target resolved once — the path joined
//! onto the API's base URL, the route template named — so that no layer below works any of
//! it out again. (The API's default headers are a step of their own at the bottom,
//! [`DefaultHeadersLayer`](crate::DefaultHeadersLayer).)

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use blueprint_core::{BoxError, Origin, Target};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Uri};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::Blueprint;
use crate::base_url::BaseUrl;

/// The route templates of an API (`/contacts/{id}`), indexed: a call is named by its
/// route in logs and traces, never by its raw path, which holds ids.
///
/// A template matches as a [`RetryRule`](crate::RetryRule)'s path does (literal segments,
/// `{name}` for any one non-empty segment, a final `*` for a prefix). When several match,
/// the one with the fewest placeholders wins (the first of equals), so `/contacts/search`
/// beats `/contacts/{id}`. Lookups compare first segments before anything else, so an API
/// with many routes costs little per call.
///
/// ```
/// use blueprint::Routes;
///
/// let routes = Routes::new(["/contacts/{id}", "/contacts/search"]);
/// assert_eq!(routes.find("/contacts/6657a3c0").map(|r| &**r), Some("/contacts/{id}"));
/// assert_eq!(routes.find("/contacts/search").map(|r| &**r), Some("/contacts/search"));
/// assert_eq!(routes.find("/admins"), None);
/// ```
#[derive(Clone, Default)]
pub struct Routes {
    templates: Arc<[Template]>,
}

struct Template {
    text: Arc<str>,
    // The first segment, when it is a literal: most templates are ruled out by it alone.
    first: Option<Box<str>>,
    placeholders: usize,
}

fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

impl Routes {
    /// Routes from their templates; duplicates are kept once.
    pub fn new<I, S>(templates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed: Vec<Template> = Vec::new();
        for text in templates {
            let text = text.as_ref();
            if parsed.iter().any(|t| &*t.text == text) {
                continue;
            }
            let first = first_segment(text.trim_end_matches('*'));
            let first = (!crate::blueprint::is_placeholder_segment(first) && !text.ends_with('*'))
                .then(|| Box::from(first));
            let placeholders = text
                .split('/')
                .filter(|s| crate::blueprint::is_placeholder_segment(s))
                .count();
            parsed.push(Template {
                text: Arc::from(text),
                first,
                placeholders,
            });
        }
        Routes {
            templates: parsed.into(),
        }
    }

    /// The routes that name calls to `blueprint`'s API: its
    /// [routes](Blueprint::routes), then the paths of its exact retry rules (a prefix rule,
    /// `/events*`, names no route).
    pub fn of(blueprint: &Blueprint) -> Self {
        let rules = blueprint.retry().rules.iter();
        Routes::new(
            blueprint
                .routes()
                .iter()
                .map(crate::Route::as_str)
                .chain(rules.map(|r| r.path.as_str()).filter(|p| !p.ends_with('*'))),
        )
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The route template `path` (relative to the base URL's prefix, without query)
    /// matches, if any.
    pub fn find(&self, path: &str) -> Option<&Arc<str>> {
        if self.templates.is_empty() {
            return None;
        }
        let first = first_segment(path);
        self.templates
            .iter()
            .filter(|t| t.first.as_deref().is_none_or(|f| f == first))
            .filter(|t| crate::blueprint::path_matches(&t.text, path))
            .min_by_key(|t| t.placeholders)
            .map(|t| &t.text)
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.templates.iter().map(|t| &*t.text))
            .finish()
    }
}

/// Layer that applies [`SetBaseUrl`]: the outermost step of the engine's stack.
#[derive(Debug, Clone)]
pub struct BaseUrlLayer {
    shared: Arc<Resolve>,
}

#[derive(Debug)]
struct Resolve {
    base: BaseUrl,
    // The scheme of the base, ready to put in a URI.
    scheme: Scheme,
    target: Target,
    routes: Routes,
}

impl BaseUrlLayer {
    /// Resolves relative request targets against `base`.
    pub fn new(base: BaseUrl) -> Self {
        Self::build(base, Routes::default())
    }

    fn build(base: BaseUrl, routes: Routes) -> Self {
        let scheme = if base.origin().scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        BaseUrlLayer {
            shared: Arc::new(Resolve {
                target: Target::new(base.origin().clone()),
                scheme,
                base,
                routes,
            }),
        }
    }

    /// Names each call by the route template its path matches.
    #[must_use]
    pub fn routes(self, routes: Routes) -> Self {
        Self::build(self.shared.base.clone(), routes)
    }
}

impl<S> Layer<S> for BaseUrlLayer {
    type Service = SetBaseUrl<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetBaseUrl {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Middleware that resolves a call's target once: a relative request target (`/contacts`)
/// is joined onto the base URL (safely: see [`BaseUrl::resolve`]), the call's
/// [`Target`] (origin, route template) is put in the request's extensions for the layers
/// below. An
/// absolute URI is sent as it is (the auth layer refuses to send credentials to another
/// origin).
#[derive(Debug, Clone)]
pub struct SetBaseUrl<S> {
    inner: S,
    shared: Arc<Resolve>,
}

impl<S> SetBaseUrl<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl Resolve {
    /// The absolute URI of a relative `uri`, without allocating when the path needs no
    /// work: no base-URL prefix to add, nothing to normalize or check (no dot segment, no
    /// empty segment, no percent-encoding, no backslash). Anything else goes through
    /// [`BaseUrl::resolve`], which gives the same result for such paths. Takes the URI by
    /// value: the fast way moves its path into the new URI, where a clone would copy a path
    /// parsed from a `&str` into shared storage (an allocation per call).
    fn resolve(&self, uri: Uri) -> Result<Uri, crate::InvalidPath> {
        if self.base.prefix().is_empty()
            && uri.path_and_query().is_some_and(|pq| is_plain(pq.path()))
        {
            let mut parts = uri.into_parts();
            let path_and_query = parts.path_and_query.take();
            let mut joined = http::uri::Parts::default();
            joined.scheme = Some(self.scheme.clone());
            joined.authority = Some(self.base.authority().clone());
            joined.path_and_query = path_and_query;
            return Uri::from_parts(joined)
                .map_err(|_| crate::InvalidPath::new("not a request target"));
        }
        let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        self.base.resolve(target)
    }

    fn target_of(&self, uri: &Uri) -> Option<Target> {
        if !self.target.origin().matches(uri) {
            return Origin::from_uri(uri).map(Target::new);
        }
        Some(self.target_at_base(uri))
    }

    /// The target of a URI known to be at the base's origin.
    fn target_at_base(&self, uri: &Uri) -> Target {
        let path = uri.path();
        let path = path
            .strip_prefix(self.base.prefix())
            .filter(|p| p.is_empty() || p.starts_with('/'))
            .unwrap_or(path);
        match self.routes.find(path) {
            Some(route) => self.target.clone().with_route(Arc::clone(route)),
            None => self.target.clone(),
        }
    }
}

/// Whether `path` can be used as it is: it starts with `/` and holds no dot segment, no
/// empty segment, no percent-encoding, no backslash and nothing that could read as a URL.
fn is_plain(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut previous = 0u8;
    for &b in bytes {
        match b {
            b'%' | b'\\' | b':' => return false,
            // An empty segment or one that starts with a dot.
            b'/' | b'.' if previous == b'/' => return false,
            _ => {}
        }
        previous = b;
    }
    true
}

impl<S, B> Service<Request<B>> for SetBaseUrl<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BaseUrlFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let uri = request.uri();
        let target = if uri.scheme().is_none() && uri.authority().is_none() {
            match shared.resolve(std::mem::take(request.uri_mut())) {
                Ok(resolved) => *request.uri_mut() = resolved,
                Err(error) => {
                    return BaseUrlFuture {
                        inner: Inner::Failed {
                            error: Some(error.into()),
                        },
                    };
                }
            }
            // Joined onto the base URL here: the origin is the base's, no need to check.
            Some(shared.target_at_base(request.uri()))
        } else {
            shared.target_of(request.uri())
        };
        if let Some(target) = target {
            request.extensions_mut().insert(target);
        }
        BaseUrlFuture {
            inner: Inner::Called {
                future: self.inner.call(request),
            },
        }
    }
}

pin_project! {
    /// Response future of [`SetBaseUrl`].
    pub struct BaseUrlFuture<F> {
        #[pin]
        inner: Inner<F>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Called { #[pin] future: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F> fmt::Debug for BaseUrlFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BaseUrlFuture")
    }
}

impl<F, T, E> Future for BaseUrlFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            InnerProj::Called { future } => future.poll(cx).map_err(Into::into),
            InnerProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "base URL future polled after completion".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resolver(base: &str) -> Resolve {
        let layer = BaseUrlLayer::new(BaseUrl::parse(base).unwrap());
        Arc::try_unwrap(layer.shared).unwrap()
    }

    #[test]
    fn plain_paths_take_the_fast_way_and_agree_with_resolve() {
        let r = resolver("https://api.example.com");
        for target in [
            "/",
            "/me",
            "/contacts?per_page=2&starting_after=abc",
            "/contacts/",
            "/a/b/c",
            "/a.b/c..d",
            "/contacts/6657a3c0b2b0e4d9",
            "/x?q=%2e%2e/../",
        ] {
            let uri: Uri = target.parse().unwrap();
            assert!(
                is_plain(uri.path()) || target.contains(".."),
                "{target} should be plain"
            );
            assert_eq!(
                r.resolve(uri.clone()).unwrap(),
                r.base.resolve(target).unwrap(),
                "{target}"
            );
        }
        for tricky in [
            "/a/../b",
            "/a//b",
            "/%2e%2e/x",
            "/a/./b",
            "/a\\b",
            "/x/http://evil",
        ] {
            assert!(!is_plain(tricky), "{tricky}");
        }
    }

    proptest! {
        #[test]
        fn the_fast_way_never_differs_from_resolve(path in "/[a-z0-9./%:_-]{0,24}", query in proptest::option::of("[a-z0-9=&%./]{0,12}")) {
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            if let Ok(uri) = target.parse::<Uri>() {
                let r = resolver("https://api.example.com");
                let fast = r.resolve(uri.clone()).map(|u| u.to_string()).ok();
                let slow = r.base.resolve(uri.path_and_query().map_or("/", PathAndQuery::as_str)).map(|u| u.to_string()).ok();
                prop_assert_eq!(fast, slow);
            }
        }
    }

    #[test]
    fn targets_name_their_route_and_foreign_origins_their_own() {
        let layer = BaseUrlLayer::new(BaseUrl::parse("https://api.example.com/v2/").unwrap())
            .routes(Routes::new(["/contacts/{id}", "/contacts/search"]));
        let r = &layer.shared;
        let uri: Uri = "https://api.example.com/v2/contacts/42".parse().unwrap();
        let target = r.target_of(&uri).unwrap();
        assert_eq!(target.route(), Some("/contacts/{id}"));
        assert_eq!(target.origin().host(), "api.example.com");
        let other: Uri = "https://other.example.com/contacts/42".parse().unwrap();
        let target = r.target_of(&other).unwrap();
        assert_eq!(target.origin().host(), "other.example.com");
        assert_eq!(target.route(), None);
    }
}
