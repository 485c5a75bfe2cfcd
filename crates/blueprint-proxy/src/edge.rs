//! What every request meets before its route and every answer after it, as one tower layer.
//!
//! In order: a `/proxy/…` call with a method that is never forwarded is refused, and so is
//! one whose `Content-Length` is over the cap on request bodies if one is set; the headers
//! that name a host are dropped from it unless configured ([`crate::proxy`]); every
//! request's body is watched for stalls, and a `/proxy/…` call's for the cap
//! ([`crate::body`]); an error answer written without
//! an [`ApiError`](crate::ApiError) becomes the documented JSON ([`error::json_errors`]);
//! and the proxy's own error answers are counted by code.
//!
//! These were four axum middlewares (`from_fn`, `map_request`, two `map_response`); each
//! boxed a future and cloned the boxed routes below it on every call, about 14,000
//! instructions per proxied call under callgrind. Here they are one concrete future, and
//! only the rare answer that must be rewritten as JSON is boxed.
//!
//! [`Edge`] is applied to every route by `Router::layer`, so it runs below axum's router.
//! What the binary serves is [`Front`], above the router: a `/proxy/…` call goes straight
//! to the same [`Edge`] over [`proxy::forward_direct`], without the router's matching,
//! URL parameters and boxed services (about 6,000 instructions per call); every other
//! path goes through the router.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, StatusCode};
use http_body::Body as _;
use tower::{Layer, Service};

use crate::app::ProxyState;
use crate::error::{self, ApiError, ErrorCode};
use crate::{body, proxy};

/// The layer of [`Edge`], over every route of the router.
#[derive(Clone)]
pub(crate) struct EdgeLayer {
    state: ProxyState,
}

impl EdgeLayer {
    pub(crate) fn new(state: ProxyState) -> Self {
        EdgeLayer { state }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            state: self.state.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct Edge<S> {
    inner: S,
    state: ProxyState,
}

/// Whether `path` is one the `/proxy/{*path}` route takes.
fn is_proxy_call(path: &str) -> bool {
    path.len() > proxy::ROUTE_PREFIX.len() && path.starts_with(proxy::ROUTE_PREFIX)
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let mut max_body = None;
        if is_proxy_call(request.uri().path()) {
            if let Some(refused) = proxy::refuse_method(request.method()) {
                return EdgeFuture::Answered {
                    response: Some(counted(&self.state, refused)),
                };
            }
            max_body = self.state.max_request_body();
            if let Some(max) = max_body {
                // hyper's body of a request with a `Content-Length` says that length here.
                if request.body().size_hint().lower() > max {
                    // A caller without the proxy's key is told so, not the route's limit.
                    let (parts, _unread) = request.into_parts();
                    if let Err(refused) = crate::auth::authorize(&parts, &self.state) {
                        return EdgeFuture::Answered {
                            response: Some(counted(&self.state, refused.into_response())),
                        };
                    }
                    let refused = body::too_large(max, "nothing was sent");
                    tracing::warn!(
                        target: "blueprint_proxy::access",
                        method = %parts.method,
                        status = refused.status().as_u16(),
                        error.code = refused.code(),
                        error.message = refused.message(),
                        "refused"
                    );
                    return EdgeFuture::Answered {
                        response: Some(counted(&self.state, refused.into_response())),
                    };
                }
            }
            if !self.state.forwards_host_headers() {
                for name in &proxy::HOST_HEADERS {
                    request.headers_mut().remove(name);
                }
            }
        }
        let request = body::watch(request, self.state.body_idle_timeout(), max_body);
        EdgeFuture::Route {
            future: self.inner.call(request),
            state: Some(self.state.clone()),
        }
    }
}

/// Counts an answer the proxy wrote itself (it carries an [`ErrorCode`]).
fn counted(state: &ProxyState, response: Response) -> Response {
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        state.metrics().record_error(code.0);
    }
    response
}

type Rewrite = Pin<Box<dyn Future<Output = Response> + Send>>;

pin_project_lite::pin_project! {
    /// The answer of [`Edge`].
    #[project = EdgeProj]
    pub(crate) enum EdgeFuture<F> {
        /// Answered at the edge, without the route.
        Answered { response: Option<Response> },
        /// The route is answering.
        Route { #[pin] future: F, state: Option<ProxyState> },
        /// The route's answer is being rewritten as JSON.
        Rewriting { future: Rewrite, state: ProxyState },
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                EdgeProj::Answered { response } => {
                    let response = response.take().unwrap_or_else(gone);
                    return Poll::Ready(Ok(response));
                }
                EdgeProj::Route { future, state } => {
                    let Ok(response) = ready!(future.poll(cx));
                    let Some(state) = state.take() else {
                        return Poll::Ready(Ok(gone()));
                    };
                    if !error::needs_json(&response) {
                        return Poll::Ready(Ok(counted(&state, response)));
                    }
                    let future: Rewrite = Box::pin(error::json_errors(response));
                    self.set(EdgeFuture::Rewriting { future, state });
                }
                EdgeProj::Rewriting { future, state } => {
                    let response = ready!(future.as_mut().poll(cx));
                    return Poll::Ready(Ok(counted(state, response)));
                }
            }
        }
    }
}

/// The proxy as the binary serves it: see the module docs. Answers exactly as the router
/// alone does.
#[derive(Clone)]
pub(crate) struct Front {
    router: Router,
    proxy: Edge<ForwardDirect>,
}

impl Front {
    /// `router` is the proxy's own ([`crate::Proxy::router`]), over the same `state`.
    pub(crate) fn new(router: Router, state: ProxyState) -> Self {
        Front {
            router,
            proxy: Edge {
                inner: ForwardDirect(state.clone()),
                state,
            },
        }
    }
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both the router and `ForwardDirect` are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> FrontFuture {
        // The router sends these paths, and only these, to `/proxy/{*path}`, whose
        // `any(proxy::forward)` takes every method.
        if !is_proxy_call(request.uri().path()) {
            return FrontFuture::Routed {
                future: self.router.call(request),
            };
        }
        let head = request.method() == Method::HEAD;
        FrontFuture::Proxied {
            future: self.proxy.call(request),
            head,
        }
    }
}

/// [`proxy::forward_direct`] as a service, below [`Edge`] as the route's handler is.
#[derive(Clone)]
pub(crate) struct ForwardDirect(ProxyState);

type Forwarding = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for ForwardDirect {
    type Response = Response;
    type Error = Infallible;
    type Future = Forwarding;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Forwarding {
        // Boxed, as axum boxes a handler's future: it is large, and moved into hyper's
        // dispatcher otherwise.
        let state = self.0.clone();
        Box::pin(async move { Ok(proxy::forward_direct(state, request).await) })
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Front`].
    #[project = FrontProj]
    pub(crate) enum FrontFuture {
        Routed { #[pin] future: <Router as Service<Request>>::Future },
        Proxied { #[pin] future: EdgeFuture<Forwarding>, head: bool },
    }
}

impl Future for FrontFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FrontProj::Routed { future } => future.poll(cx),
            FrontProj::Proxied { future, head } => {
                let Ok(response) = ready!(future.poll(cx));
                Poll::Ready(Ok(as_routed(response, *head)))
            }
        }
    }
}

/// What axum's router does to the answer of a route it called (its `RouteFuture`): a
/// `Content-Length` for a body of known size, and no body for `HEAD`. (It adds no `Allow`
/// for a route that takes every method, and its rule for `CONNECT` never applies: the
/// edge refuses `CONNECT`.)
fn as_routed(mut response: Response, head: bool) -> Response {
    if !response.headers().contains_key(CONTENT_LENGTH) {
        if let Some(size) = response.body().size_hint().exact() {
            let value = if size == 0 {
                HeaderValue::from_static("0")
            } else {
                HeaderValue::from(size)
            };
            response.headers_mut().insert(CONTENT_LENGTH, value);
        }
    }
    if head {
        *response.body_mut() = Body::empty();
    }
    response
}

/// What a future polled after its answer gives: never reached by hyper or axum.
fn gone() -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "an answer was asked for twice",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    const KEY: &str = "a-key-of-16-chars-or-more";

    /// A provider that echoes the method, target and headers it received; `/teapot`
    /// answers 418 with a `Connection` header naming another.
    async fn provider() -> std::net::SocketAddr {
        async fn echo(request: Request) -> Response {
            let mut text = format!("{} {}\n", request.method(), request.uri());
            for (name, value) in request.headers() {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            let mut response = text.into_response();
            if request.uri().path() == "/teapot" {
                *response.status_mut() = StatusCode::IM_A_TEAPOT;
                let headers = response.headers_mut();
                headers.insert("connection", HeaderValue::from_static("X-Drop, close"));
                headers.insert("x-drop", HeaderValue::from_static("1"));
                headers.insert("x-keep", HeaderValue::from_static("2"));
                headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            }
            response
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(echo);
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn proxy(upstream: std::net::SocketAddr) -> crate::Proxy {
        let yaml = format!(
            "integrations:\n  intercom:\n    extends_blueprint: intercom:v0\n    base_url: http://{upstream}/\n"
        );
        let registry = crate::registry().unwrap();
        let integrations =
            blueprint::Integrations::parse(&yaml, "test.yaml", &registry, |_| None).unwrap();
        let proxy = crate::Proxy::builder(integrations, crate::SecretKey::new(KEY).unwrap())
            .build()
            .unwrap();
        let import = http::Request::put("/connections/intercom/acme")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"access_token": "t"}"#))
            .unwrap();
        let imported = proxy.router().oneshot(import).await.unwrap();
        assert!(imported.status().is_success(), "{}", imported.status());
        proxy
    }

    /// Status, headers in order, body.
    async fn answer(response: Response) -> (StatusCode, Vec<(String, String)>, bytes::Bytes) {
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        let mut request = http::Request::builder().method(method).uri(target);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn the_fast_path_answers_as_the_router_does() {
        let upstream = provider().await;
        let (fast, routed) = (proxy(upstream).await, proxy(upstream).await);
        let bearer = format!("Bearer {KEY}");
        let call = [
            ("authorization", bearer.as_str()),
            ("provider-config-key", "intercom"),
            ("connection-id", "acme"),
        ];
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
        let cases: Vec<Case<'_>> = vec![
            ("GET", "/proxy/me", call.to_vec()),
            ("HEAD", "/proxy/me", call.to_vec()),
            ("POST", "/proxy/a/b?x=1&y=%2F", call.to_vec()),
            ("GET", "/proxy/teapot", call.to_vec()),
            ("GET", "/proxy/%2e%2e/admin", call.to_vec()),
            ("GET", "/proxy//me", call.to_vec()),
            (
                "GET",
                "/proxy/me",
                [
                    &call[..],
                    &[
                        ("connection", "X-Hop, keep-alive"),
                        ("x-hop", "1"),
                        ("x-other", "2"),
                        ("te", "trailers"),
                        ("forwarded", "host=evil"),
                        ("cookie", "c=1"),
                    ],
                ]
                .concat(),
            ),
            ("GET", "/proxy/me", vec![]),
            (
                "GET",
                "/proxy/me",
                vec![("authorization", "Bearer wrong-key-wrong-key")],
            ),
            ("GET", "/proxy/me", vec![("authorization", bearer.as_str())]),
            (
                "GET",
                "/proxy/me",
                vec![
                    ("authorization", bearer.as_str()),
                    ("provider-config-key", "nope"),
                    ("connection-id", "acme"),
                ],
            ),
            (
                "GET",
                "/proxy/me",
                vec![
                    ("authorization", bearer.as_str()),
                    ("provider-config-key", "intercom"),
                    ("connection-id", "nobody"),
                ],
            ),
            ("TRACE", "/proxy/me", call.to_vec()),
            ("TRACK", "/proxy/me", call.to_vec()),
            ("GET", "/proxy/", call.to_vec()),
            ("GET", "/proxy", call.to_vec()),
            ("GET", "/proxyme", call.to_vec()),
            ("GET", "/healthz", vec![]),
            ("HEAD", "/healthz", vec![]),
            ("POST", "/healthz", vec![]),
            ("GET", "/nowhere", vec![]),
            ("GET", "/connections", vec![]),
        ];
        for (method, target, headers) in &cases {
            let by_front = fast.front().oneshot(request(method, target, headers));
            let by_router = routed.router().oneshot(request(method, target, headers));
            let (front, router) = (
                answer(by_front.await.unwrap()),
                answer(by_router.await.unwrap()),
            );
            let (front, router) = (front.await, router.await);
            assert_eq!(front, router, "{method} {target} {headers:?}");
        }
        // Sorted: a family's series come out in the order of a hash map.
        let series = |proxy: &crate::Proxy| {
            let mut lines = proxy
                .metrics()
                .render()
                .lines()
                .filter(|l| l.starts_with("blueprint_proxy_"))
                .map(str::to_owned)
                .collect::<Vec<_>>();
            lines.sort();
            lines
        };
        assert_eq!(series(&fast), series(&routed));
        assert!(
            series(&fast).iter().any(|l| l.contains("status=\"418\"")),
            "{:?}",
            series(&fast)
        );
    }

    #[test]
    fn only_paths_under_the_proxy_route_are_guarded() {
        assert!(is_proxy_call("/proxy/me"));
        assert!(is_proxy_call("/proxy/a/b"));
        assert!(!is_proxy_call("/proxy/"));
        assert!(!is_proxy_call("/proxy"));
        assert!(!is_proxy_call("/proxyme"));
        assert!(!is_proxy_call("/connections"));
    }
}
