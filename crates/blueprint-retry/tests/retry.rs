//! The retry-timeout layer against real HTTP peers on loopback (wiremock, hyper) and, where
//! a timer must run during an attempt, against in-process services. Time is paused in
//! every test: no test sleeps for real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::type_complexity
)]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use blueprint_core::{Attempt, BoxError, Deadline, ReplayBody};
use blueprint_retry::{
    AttemptTimeoutError, AttemptTimeoutLayer, DeadlineExceeded, RetryLayer, RetryReason,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client<B>() -> Client<HttpConnector, ReplayBody<B>>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(method: Method, uri: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

#[tokio::test(start_paused = true)]
async fn get_503_then_200_succeeds_on_the_second_attempt() {
    let server = MockServer::start().await;
    Mock::given(path("/contacts"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/contacts"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let svc = RetryLayer::new().layer_on(client());
    let uri = format!("{}/contacts", server.uri());
    let res = svc.oneshot(request(Method::GET, &uri, "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.extensions().get::<Attempt>().map(|a| a.number()),
        Some(2)
    );
    assert_eq!(received(&server).await, 2);
}

#[tokio::test(start_paused = true)]
async fn post_503_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;

    let svc = RetryLayer::new().layer_on(client());
    let uri = format!("{}/conversations", server.uri());
    let res = svc
        .oneshot(request(Method::POST, &uri, "{}"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(received(&server).await, 1, "a POST was sent twice");
}

#[tokio::test(start_paused = true)]
async fn post_after_connection_refused_is_retried_once_the_server_is_up() {
    // A socket bound but not listening: connecting to it is refused, and the port stays
    // ours until we start listening on it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let socket = Arc::new(Mutex::new(Some(socket)));
    let bodies = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let refused = Arc::new(AtomicUsize::new(0));

    let http = client::<Full<Bytes>>();
    let inner = service_fn({
        let (socket, bodies, refused) = (socket.clone(), bodies.clone(), refused.clone());
        move |req: Request<ReplayBody<Full<Bytes>>>| {
            let (http, socket, bodies, refused) = (
                http.clone(),
                socket.clone(),
                bodies.clone(),
                refused.clone(),
            );
            async move {
                let result = http.request(req).await;
                if result.is_err() {
                    refused.fetch_add(1, Ordering::SeqCst);
                    // The server comes up after the first refusal.
                    let taken = socket.lock().unwrap().take();
                    if let Some(socket) = taken {
                        let listener = socket.listen(16).unwrap();
                        tokio::spawn(serve_recording(listener, bodies));
                    }
                }
                result
            }
        }
    });
    let svc = RetryLayer::new().layer_on(inner);
    let uri = format!("http://{addr}/messages");
    let res = svc
        .oneshot(request(Method::POST, &uri, "{\"body\":\"hi\"}"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(refused.load(Ordering::SeqCst), 1);
    assert_eq!(
        bodies.lock().unwrap().as_slice(),
        [Bytes::from_static(b"{\"body\":\"hi\"}")]
    );
}

/// A hyper server that records request bodies and answers 201.
async fn serve_recording(listener: tokio::net::TcpListener, bodies: Arc<Mutex<Vec<Bytes>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let bodies = bodies.clone();
                async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    bodies.lock().unwrap().push(body);
                    let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
                    *res.status_mut() = StatusCode::CREATED;
                    Ok::<_, hyper::Error>(res)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Wraps a service and records when each call was made.
fn timed<S, R>(
    inner: S,
    times: Arc<Mutex<Vec<Instant>>>,
) -> impl Service<R, Response = S::Response, Error = S::Error, Future = S::Future> + Clone
where
    S: Service<R> + Clone,
{
    tower::util::MapRequestLayer::new(move |req: R| {
        times.lock().unwrap().push(Instant::now());
        req
    })
    .layer_on(inner)
}

#[tokio::test(start_paused = true)]
async fn retry_after_seven_seconds_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(path("/contacts"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/contacts"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let times = Arc::new(Mutex::new(Vec::new()));
    let svc = RetryLayer::new().layer_on(timed(client(), times.clone()));
    let uri = format!("{}/contacts", server.uri());
    let res = svc
        .oneshot(request(Method::POST, &uri, "{}"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), 2);
    let waited = times[1] - times[0];
    assert!(waited >= Duration::from_secs(7), "retried after {waited:?}");
    assert!(
        waited <= Duration::from_secs(8),
        "waited too long: {waited:?}"
    );
}

/// An in-process upstream: answers `responses` in turn (the last one repeats), after an
/// optional delay, and counts calls.
fn scripted(
    responses: Vec<(u16, Option<&'static str>, Duration)>,
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<ReplayBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send,
> + Clone {
    service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let (status, retry_after, delay) = responses[n.min(responses.len() - 1)];
        async move {
            tokio::time::sleep(delay).await;
            let mut res = Response::builder().status(status);
            if let Some(after) = retry_after {
                res = res.header("retry-after", after);
            }
            Ok::<_, BoxError>(res.body(Full::default())?)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_servers_wait_returns_the_429_promptly() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = scripted(vec![(429, Some("30"), Duration::ZERO)], calls.clone());
    let layer = RetryLayer::builder()
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = layer
        .layer_on(upstream)
        .oneshot(request(Method::GET, "/x", ""))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "30");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the layer waited before giving up"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_passing_mid_attempt_is_a_typed_error() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = scripted(vec![(200, None, Duration::from_secs(60))], calls.clone());
    let layer = RetryLayer::builder()
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = layer
        .layer_on(upstream)
        .oneshot(request(Method::GET, "/x", ""))
        .await
        .unwrap_err();
    let deadline = err
        .downcast_ref::<DeadlineExceeded>()
        .expect("a DeadlineExceeded");
    assert_eq!(deadline.attempts(), 1);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(err.downcast_ref::<AttemptTimeoutError>().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_retries_when_the_upstream_always_fails() {
    let server = MockServer::start().await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let (ratio, floor_per_sec, window) = (0.2, 1.0, Duration::from_secs(10));
    let layer = RetryLayer::builder()
        .budget_ratio(ratio)
        .min_retries_per_sec(floor_per_sec)
        .budget_window(window)
        .build()
        .unwrap();
    let svc = layer.layer_on(client());
    let uri = format!("{}/down", server.uri());

    let calls = 1000;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let svc = svc.clone();
        let req = request(Method::GET, &uri, "");
        tasks.spawn(async move { svc.oneshot(req).await.map(|r| r.status()) });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap().unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let total = received(&server).await;
    let floor = (floor_per_sec * window.as_secs_f64()) as usize;
    let bound = calls + (calls as f64 * ratio) as usize + floor;
    println!(
        "budget: {calls} calls -> {total} upstream requests (bound {bound}, without a budget {})",
        calls * 3
    );
    assert!(total <= bound, "{total} upstream requests, bound {bound}");
    // The budget was spent, not left unused: retries did happen.
    assert!(
        total >= calls + (calls as f64 * ratio) as usize,
        "only {total} requests"
    );
}

/// A body streamed in chunks, its length unknown in advance.
struct Chunks {
    left: usize,
    chunk: Bytes,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_post_body_is_replayed_byte_identical_and_a_stream_is_sent_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/small"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/small"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/stream"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&server)
        .await;

    let payload: &'static str =
        r#"{"message_type":"inapp","body":"héllo ✓","from":{"type":"admin","id":"1"}}"#;
    let small = RetryLayer::new()
        .layer_on(client())
        .oneshot(request(
            Method::POST,
            &format!("{}/small", server.uri()),
            payload,
        ))
        .await
        .unwrap();
    assert_eq!(small.status(), StatusCode::OK);

    // 1 MiB in 64 KiB chunks, with no size hint: sent once, never retried.
    let stream = Chunks {
        left: 16,
        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
    };
    let req = Request::post(format!("{}/stream", server.uri()))
        .body(stream)
        .unwrap();
    let streamed = RetryLayer::new()
        .layer_on(client::<Chunks>())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::TOO_MANY_REQUESTS);

    let requests = server.received_requests().await.unwrap();
    let small: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/small")
        .collect();
    assert_eq!(small.len(), 2);
    assert!(
        small.iter().all(|r| r.body == payload.as_bytes()),
        "replayed body differs"
    );
    let stream: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/stream")
        .collect();
    assert_eq!(stream.len(), 1, "a streamed body was sent again");
    assert_eq!(stream[0].body.len(), 1024 * 1024);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_fires_and_the_next_attempt_succeeds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = scripted(
        vec![
            (200, None, Duration::from_secs(30)),
            (200, None, Duration::ZERO),
        ],
        calls.clone(),
    );
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(2)))
        .service(upstream);
    let start = Instant::now();
    let res = svc
        .oneshot(request(Method::GET, "/slow", ""))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed <= Duration::from_millis(2100),
        "{elapsed:?}"
    );

    // Alone, the attempt timeout is its own error, not the deadline's.
    let calls = Arc::new(AtomicUsize::new(0));
    let slow = scripted(vec![(200, None, Duration::from_secs(30))], calls);
    let err = AttemptTimeoutLayer::new(Duration::from_secs(2))
        .layer_on(slow)
        .oneshot(Request::new(ReplayBody::from_bytes(Bytes::new())))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<AttemptTimeoutError>()
            .map(AttemptTimeoutError::after),
        Some(Duration::from_secs(2))
    );
    assert!(err.downcast_ref::<DeadlineExceeded>().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_counts_from_the_call_even_when_first_polled_late() {
    // The timer is made at the first poll that finds the attempt not done, but the time
    // counts from the call: a future polled late is cut on time.
    let calls = Arc::new(AtomicUsize::new(0));
    let slow = scripted(vec![(200, None, Duration::from_secs(30))], calls);
    let mut service = AttemptTimeoutLayer::new(Duration::from_secs(2)).layer_on(slow);
    let start = Instant::now();
    let future = service.call(Request::new(ReplayBody::from_bytes(Bytes::new())));
    tokio::time::advance(Duration::from_millis(1500)).await;
    let err = future.await.unwrap_err();
    assert!(err.downcast_ref::<AttemptTimeoutError>().is_some(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // An answer ready at once is given as it is.
    let calls = Arc::new(AtomicUsize::new(0));
    let quick = scripted(vec![(204, None, Duration::ZERO)], calls);
    let res = AttemptTimeoutLayer::new(Duration::from_secs(2))
        .layer_on(quick)
        .oneshot(Request::new(ReplayBody::from_bytes(Bytes::new())))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(start.elapsed(), Duration::from_secs(2), "no time passed");
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_too_long_for_the_clock_means_no_timeout_not_a_panic() {
    // `Instant + Duration::MAX` panics; the layer takes such a timeout as "never", alone
    // and under a deadline.
    let calls = Arc::new(AtomicUsize::new(0));
    let slow = scripted(vec![(200, None, Duration::from_secs(30))], calls.clone());
    let res = AttemptTimeoutLayer::new(Duration::MAX)
        .layer_on(slow)
        .oneshot(Request::new(ReplayBody::from_bytes(Bytes::new())))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let slow = scripted(vec![(200, None, Duration::from_secs(30))], calls);
    let mut request = Request::new(ReplayBody::from_bytes(Bytes::new()));
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    let err = AttemptTimeoutLayer::new(Duration::MAX)
        .layer_on(slow)
        .oneshot(request)
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<DeadlineExceeded>().is_some(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_polled_ready_before_every_retry() {
    // ConcurrencyLimit panics when called without a successful poll_ready first.
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = scripted(
        vec![
            (503, None, Duration::ZERO),
            (503, None, Duration::ZERO),
            (200, None, Duration::ZERO),
        ],
        calls.clone(),
    );
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .concurrency_limit(1)
        .service(upstream);
    let res = svc.oneshot(request(Method::GET, "/x", "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_closure_can_replace_the_policy() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = scripted(
        vec![(404, None, Duration::ZERO), (200, None, Duration::ZERO)],
        calls.clone(),
    );
    // An eventually consistent API: a 404 right after a create may be worth one more look.
    let layer = RetryLayer::builder()
        .policy(
            |_req: &blueprint_retry::RequestInfo<'_>, outcome: &blueprint_retry::Outcome<'_>| {
                match outcome {
                    blueprint_retry::Outcome::Response { status, .. }
                        if *status == StatusCode::NOT_FOUND =>
                    {
                        Some(RetryReason::Other("not found yet"))
                    }
                    _ => None,
                }
            },
        )
        .build()
        .unwrap();
    let res = layer
        .layer_on(upstream)
        .oneshot(request(Method::GET, "/x", ""))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn invalid_configurations_are_typed_errors() {
    let field = |b: blueprint_retry::RetryBuilder| b.build().map(|_| ()).map_err(|e| e.field());
    assert_eq!(
        field(RetryLayer::builder().max_attempts(0)),
        Err("max_attempts")
    );
    assert_eq!(
        field(
            RetryLayer::builder()
                .base_delay(Duration::from_secs(20))
                .max_delay(Duration::from_secs(10))
        ),
        Err("base_delay")
    );
    assert_eq!(
        field(RetryLayer::builder().base_delay(Duration::ZERO)),
        Err("base_delay")
    );
    assert_eq!(
        field(RetryLayer::builder().budget_ratio(-1.0)),
        Err("budget_ratio")
    );
    assert_eq!(
        field(RetryLayer::builder().budget_ratio(f64::NAN)),
        Err("budget_ratio")
    );
    assert_eq!(
        field(RetryLayer::builder().min_retries_per_sec(-2.0)),
        Err("min_retries_per_sec")
    );
    assert_eq!(
        field(RetryLayer::builder().budget_window(Duration::ZERO)),
        Err("budget_window")
    );
    assert_eq!(
        field(RetryLayer::builder().deadline(Duration::ZERO)),
        Err("deadline")
    );
    assert_eq!(field(RetryLayer::builder().max_attempts(1)), Ok(()));
}

trait LayerOn<S> {
    type Service;
    fn layer_on(self, inner: S) -> Self::Service;
}

impl<S, L: tower::Layer<S>> LayerOn<S> for L {
    type Service = L::Service;
    fn layer_on(self, inner: S) -> L::Service {
        self.layer(inner)
    }
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_enforces_an_earlier_deadline_with_one_timer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let slow = scripted(vec![(200, None, Duration::from_secs(60))], calls.clone());
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .deadline(Duration::from_secs(5))
                .deadline_timer(false)
                .build()
                .unwrap(),
        )
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(30)))
        .service(slow);
    let start = Instant::now();
    let err = svc
        .oneshot(request(Method::GET, "/x", ""))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let deadline = err
        .downcast_ref::<DeadlineExceeded>()
        .expect("a DeadlineExceeded");
    assert_eq!(deadline.attempts(), 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no retry after the deadline"
    );
}

/// A body streamed in small chunks, with no size hint and `Pending` between chunks, like
/// an upload read from a socket.
struct Dribble {
    parts: Vec<&'static [u8]>,
    ready: bool,
}

impl Body for Dribble {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !std::mem::replace(&mut self.ready, false) {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.parts.is_empty() {
            return Poll::Ready(None);
        }
        let next = self.parts.remove(0);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(next)))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_chunked_body_under_the_cap_is_retried_byte_identical() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/upload"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/upload"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let parts: Vec<&'static [u8]> = vec![b"{\"name\":", b"\"caf\xc3\xa9\",", b"\"n\":1}"];
    let body = Dribble {
        parts: parts.clone(),
        ready: false,
    };
    assert!(
        body.size_hint().upper().is_none(),
        "the body must look streamed"
    );
    let response = RetryLayer::new()
        .layer_on(client::<Dribble>())
        .oneshot(
            Request::put(format!("{}/upload", server.uri()))
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent.len(), 2, "the chunked body was not retried");
    let whole: Vec<u8> = parts.concat();
    assert!(
        sent.iter().all(|r| r.body == whole),
        "a body differs: {:?}",
        sent.iter().map(|r| r.body.len()).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_401_after_a_refresh_is_replayed_at_once_once_even_for_a_post() {
    use blueprint_core::{CredentialsRefreshed, ReplayAfterRefresh};
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        let seen = Arc::clone(&seen);
        move |req: Request<ReplayBody<Full<Bytes>>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let replay = req.extensions().get::<ReplayAfterRefresh>().is_some();
            let seen = Arc::clone(&seen);
            async move {
                let body = req.into_body().collect().await?.to_bytes();
                seen.lock().unwrap().push((replay, body));
                // Every answer is a 401 after which the credentials were renewed.
                let mut res = Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .body(Full::<Bytes>::default())?;
                res.extensions_mut().insert(CredentialsRefreshed);
                Ok::<_, BoxError>(res)
            }
        }
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = Arc::clone(&events);
        blueprint_core::EventSink::new(move |e: &blueprint_core::Event<'_>| {
            events.lock().unwrap().push(format!("{e:?}"));
        })
    };
    let started = Instant::now();
    let response = RetryLayer::builder()
        .max_attempts(1)
        .events(sink)
        .build()
        .unwrap()
        .layer_on(upstream)
        .oneshot(request(
            Method::POST,
            "https://api.example.com/messages",
            "hi",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "replayed once, not more");
    assert_eq!(started.elapsed(), Duration::ZERO, "the replay waited");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], (false, Bytes::from_static(b"hi")));
        assert_eq!(seen[1], (true, Bytes::from_static(b"hi")));
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].starts_with("ReplayAfterRefresh"), "{events:?}");
    }

    // Turned off, the 401 comes back as it is.
    calls.store(0, Ordering::SeqCst);
    let upstream = service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut res = Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body(Full::<Bytes>::default())?;
            res.extensions_mut().insert(CredentialsRefreshed);
            Ok::<_, BoxError>(res)
        }
    });
    let mut svc = RetryLayer::builder()
        .replay_after_refresh(false)
        .build()
        .unwrap()
        .layer_on(upstream);
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, "https://api.example.com/me", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[derive(Debug, Clone, PartialEq)]
struct CallerTag(&'static str);

#[tokio::test(start_paused = true)]
async fn retries_carry_the_first_attempts_extensions_and_report_typed_events() {
    use blueprint_core::{ConnectionId, Event, EventSink, RetrySafe};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = service_fn({
        let seen = Arc::clone(&seen);
        move |req: Request<ReplayBody<Full<Bytes>>>| {
            seen.lock().unwrap().push((
                req.extensions().get::<ConnectionId>().cloned(),
                req.extensions().get::<CallerTag>().cloned(),
                req.extensions().get::<RetrySafe>().is_some(),
                req.headers().get("x-request").cloned(),
            ));
            async move {
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(StatusCode::SERVICE_UNAVAILABLE)
                        .body(Full::<Bytes>::default())?,
                )
            }
        }
    });
    let retries = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let retries = Arc::clone(&retries);
        EventSink::new(move |e: &Event<'_>| match e {
            Event::Retry {
                connection,
                attempt,
                reason,
                ..
            } => retries
                .lock()
                .unwrap()
                .push((connection.to_string(), *attempt, *reason)),
            Event::RetryStopped { .. } => {}
            other => panic!("unexpected {other:?}"),
        })
    };
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .events(sink)
        .build()
        .unwrap();
    // Only Blueprint extensions: kept as plain values.
    let mut req = request(Method::POST, "https://api.example.com/companies", "{}");
    req.extensions_mut().insert(ConnectionId::new("ws-1"));
    req.extensions_mut().insert(RetrySafe);
    req.headers_mut()
        .insert("x-request", http::HeaderValue::from_static("1"));
    let upstream2 = upstream.clone();
    layer.clone().layer_on(upstream).oneshot(req).await.unwrap();
    // With one of the caller's own: the map is kept.
    let mut req = request(Method::GET, "https://api.example.com/me", "");
    req.extensions_mut().insert(CallerTag("mine"));
    layer.layer_on(upstream2).oneshot(req).await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6, "{seen:?}");
    for (connection, tag, safe, header) in &seen[..3] {
        assert_eq!(connection.as_ref().map(ConnectionId::as_str), Some("ws-1"));
        assert_eq!(tag, &None);
        assert!(safe, "RetrySafe lost on a retry");
        assert_eq!(
            header.as_ref().map(http::HeaderValue::as_bytes),
            Some(&b"1"[..])
        );
    }
    for (_, tag, _, _) in &seen[3..] {
        assert_eq!(
            tag,
            &Some(CallerTag("mine")),
            "the caller's extension was lost"
        );
    }
    let status = RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        *retries.lock().unwrap(),
        vec![
            ("ws-1".to_owned(), 2, status),
            ("ws-1".to_owned(), 3, status),
            ("default".to_owned(), 2, status),
            ("default".to_owned(), 3, status),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_marked_rate_limited_is_retried_like_a_429() {
    use blueprint_core::RateLimit;
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_req: Request<ReplayBody<Full<Bytes>>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if n == 0 { 403 } else { 200 };
                let mut res = Response::builder()
                    .status(status)
                    .body(Full::<Bytes>::default())?;
                if n == 0 {
                    // What the rate-limit layer puts on GitHub's 403 with remaining 0.
                    res.extensions_mut().insert(RateLimit {
                        remaining: Some(0),
                        reset: Some(Instant::now() + Duration::from_secs(2)),
                        limited: true,
                        ..RateLimit::default()
                    });
                }
                Ok::<_, BoxError>(res)
            }
        }
    });
    let started = Instant::now();
    let response = RetryLayer::new()
        .layer_on(upstream)
        .oneshot(request(Method::GET, "https://api.github.com/user", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "did not wait for the reset"
    );

    // A plain 403 is not retried.
    let calls = Arc::new(AtomicUsize::new(0));
    let response = RetryLayer::new()
        .layer_on(scripted(
            vec![(403, None, Duration::ZERO)],
            Arc::clone(&calls),
        ))
        .oneshot(request(Method::GET, "https://api.github.com/user", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
