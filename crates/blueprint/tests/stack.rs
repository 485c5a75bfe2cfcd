//! The whole stack, built from a blueprint, around a real hyper-util client (wiremock as
//! the API), an axum `Router`, and in-process doubles where time must pass mid-call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use blueprint::{Blueprint, RetryRule, StackBody, StackBuilder, default_client};
use blueprint_auth::{StaticToken, TokenMap, from_fn};
use blueprint_core::{AccessToken, BoxError, ConnectionId, Deadline, TokenError, TokenErrorKind};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn api(base: &str) -> Blueprint {
    Blueprint::new("acme", "v1", base)
        .unwrap()
        .default_header("accept", "application/json")
        .unwrap()
        .default_header("acme-version", "7")
        .unwrap()
        .map_retry(|r| {
            r.rules = vec![RetryRule {
                method: Method::POST,
                path: "/companies".into(),
                retry_safe: true,
            }];
        })
}

/// For tests on a real socket with the clock paused: no timer may be pending while the
/// socket is read, or the paused clock jumps to it.
fn no_timers(bp: Blueprint) -> Blueprint {
    bp.map_retry(|r| {
        r.deadline = None;
        r.attempt_timeout = None;
    })
}

fn req(method: Method, uri: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::from("{}"))
        .unwrap()
}

fn assert_clone_send<T: Clone + Send + Sync + 'static>(_: &T) {}

#[tokio::test(start_paused = true)]
async fn relative_paths_reach_the_base_url_with_headers_and_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .and(header("authorization", "Bearer tok-a"))
        .and(header("accept", "application/json"))
        .and(header("acme-version", "8"))
        .respond_with(ResponseTemplate::new(200).set_body_string("[]"))
        .mount(&server)
        .await;
    let tokens: TokenMap = [(ConnectionId::new("a"), AccessToken::new("tok-a").unwrap())]
        .into_iter()
        .collect();
    let stack = StackBuilder::new(no_timers(api(&format!("{}/v1", server.uri()))), tokens)
        .service(default_client::<StackBody<Full<Bytes>>>().unwrap())
        .unwrap();
    assert_clone_send(&stack);

    let mut request = req(Method::GET, "/contacts");
    request.extensions_mut().insert(ConnectionId::new("a"));
    // A request's own header wins over the blueprint's default.
    request
        .headers_mut()
        .insert("acme-version", "8".parse().unwrap());
    let response = stack.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "[]"
    );
}

#[tokio::test(start_paused = true)]
async fn posts_are_retried_only_where_the_blueprint_says() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let stack = StackBuilder::new(
        no_timers(api(&server.uri())),
        StaticToken::new("t").unwrap(),
    )
    .service(default_client::<StackBody<Full<Bytes>>>().unwrap())
    .unwrap();
    let upsert = stack
        .clone()
        .oneshot(req(Method::POST, "/companies"))
        .await
        .unwrap();
    assert_eq!(upsert.status(), StatusCode::SERVICE_UNAVAILABLE);
    let create = stack
        .oneshot(req(Method::POST, "/conversations"))
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::SERVICE_UNAVAILABLE);
    let requests = server.received_requests().await.unwrap();
    let count = |p: &str| requests.iter().filter(|r| r.url.path() == p).count();
    assert_eq!(count("/companies"), 3, "the upsert is retried (3 attempts)");
    assert_eq!(count("/conversations"), 1, "a create is never sent twice");
    // The default headers and the token go with every attempt, retries too.
    for sent in &requests {
        let value = |name: &str| sent.headers.get(name).map(|v| v.to_str().unwrap());
        assert_eq!(value("accept"), Some("application/json"), "{}", sent.url);
        assert_eq!(value("acme-version"), Some("7"), "{}", sent.url);
        assert_eq!(value("authorization"), Some("Bearer t"), "{}", sent.url);
        assert_eq!(
            sent.headers.get_all("accept").iter().count(),
            1,
            "added once"
        );
    }
}

#[tokio::test]
async fn a_default_authorization_header_never_replaces_the_token() {
    // Default headers are added last, below auth: a blueprint's `Authorization` default
    // cannot stand in for the connection's credentials, and a caller's own still can.
    let bp = api("https://api.acme.test")
        .default_header("authorization", "Basic c3RhdGlj")
        .unwrap();
    let echo = service_fn(|req: Request<StackBody<Full<Bytes>>>| async move {
        let sent: Vec<String> = req
            .headers()
            .get_all("authorization")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        Ok::<_, BoxError>(Response::new(sent.join(" | ")))
    });
    let stack = StackBuilder::new(bp, StaticToken::new("t0k").unwrap())
        .service(echo)
        .unwrap();
    let sent = stack
        .clone()
        .oneshot(req(Method::GET, "/me"))
        .await
        .unwrap()
        .into_body();
    assert_eq!(sent, "Bearer t0k");
    let mut own = req(Method::GET, "/me");
    own.headers_mut()
        .insert("authorization", "Bearer mine".parse().unwrap());
    let sent = stack.oneshot(own).await.unwrap().into_body();
    assert_eq!(sent, "Bearer mine");
}

#[tokio::test]
async fn an_axum_router_can_be_the_inner_service() {
    let app = axum::Router::new().route(
        "/me",
        axum::routing::get(|headers: http::HeaderMap| async move {
            headers["authorization"]
                .to_str()
                .unwrap_or_default()
                .to_owned()
        }),
    );
    let stack = ServiceBuilder::new()
        .layer(
            StackBuilder::new(
                api("https://api.acme.test"),
                StaticToken::new("t0k").unwrap(),
            )
            .layer()
            .unwrap(),
        )
        .service(app);
    let response = stack.oneshot(req(Method::GET, "/me")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "Bearer t0k");
}

/// An in-process API that answers after `delay` and counts calls.
fn slow(
    delay: Duration,
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<StackBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send,
> + Clone {
    service_fn(move |_req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(Response::new(Full::default()))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn errors_say_what_happened() {
    let calls = Arc::new(AtomicUsize::new(0));
    let bp = api("https://api.acme.test").map_retry(|r| {
        r.attempt_timeout = Some(Duration::from_secs(2));
        r.deadline = Some(Duration::from_secs(5));
    });

    // Slow upstream: attempts time out, then the deadline passes.
    let stack = StackBuilder::new(bp.clone(), StaticToken::new("t").unwrap())
        .service(slow(Duration::from_secs(60), calls.clone()))
        .unwrap();
    let err = stack.oneshot(req(Method::GET, "/slow")).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(!err.is_rate_limited() && !err.needs_reauthorization());

    // A revoked connection.
    let revoked = from_fn(|_c: ConnectionId| async {
        Err(TokenError::new(
            TokenErrorKind::NeedsReauthorization,
            "the refresh token was revoked",
        ))
    });
    let stack = StackBuilder::new(bp.clone(), revoked)
        .service(slow(Duration::ZERO, calls.clone()))
        .unwrap();
    let mut request = req(Method::GET, "/me");
    request
        .extensions_mut()
        .insert(ConnectionId::new("acme-eu"));
    let err = stack.oneshot(request).await.unwrap_err();
    assert!(err.needs_reauthorization(), "{err}");
    assert_eq!(err.connection().map(ConnectionId::as_str), Some("acme-eu"));

    // A path that would leave the base URL; an absolute URL for another host.
    let stack = StackBuilder::new(bp.clone(), StaticToken::new("t").unwrap())
        .service(slow(Duration::ZERO, calls.clone()))
        .unwrap();
    let err = stack
        .clone()
        .oneshot(req(Method::GET, "/a/../../admin"))
        .await
        .unwrap_err();
    assert!(err.is_invalid_path(), "{err}");
    let err = stack
        .oneshot(req(Method::GET, "https://evil.test/"))
        .await
        .unwrap_err();
    assert!(err.is_foreign_origin(), "{err}");

    // An expired deadline: nothing is sent.
    let before = calls.load(Ordering::SeqCst);
    let stack = StackBuilder::new(bp, StaticToken::new("t").unwrap())
        .service(slow(Duration::ZERO, calls.clone()))
        .unwrap();
    let mut request = req(Method::GET, "/me");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::ZERO));
    let err = stack.oneshot(request).await.unwrap_err();
    assert!(err.is_deadline(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let stack = StackBuilder::new(api(&base), StaticToken::new("t").unwrap())
        .map_blueprint(|bp| bp.map_retry(|r| r.max_attempts = 1))
        .service(default_client::<StackBody<Full<Bytes>>>().unwrap())
        .unwrap();
    let err = stack.oneshot(req(Method::GET, "/me")).await.unwrap_err();
    assert!(err.is_connect() && err.is_transport(), "{err}");
    assert!(!err.is_timeout());
}

#[tokio::test]
async fn a_401_with_a_fixed_token_is_marked_for_reauthorization_and_sent_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = service_fn({
        let calls = calls.clone();
        move |_req: Request<StackBody<Full<Bytes>>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut response = Response::new(Full::<Bytes>::default());
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                Ok::<_, BoxError>(response)
            }
        }
    });
    let stack = StackBuilder::new(
        api("https://api.acme.test"),
        StaticToken::new("revoked").unwrap(),
    )
    .service(upstream)
    .unwrap();
    let mut request = req(Method::POST, "/contacts");
    request.extensions_mut().insert(ConnectionId::new("acme"));
    let response = stack.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let marker = response
        .extensions()
        .get::<blueprint_core::NeedsReauthorization>();
    assert_eq!(marker.map(|m| m.connection.as_str()), Some("acme"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// The stack's future is moved on every call and nested in whatever wraps it: slow-path
/// state is boxed so it stays small. A regression here costs every request.
#[test]
fn the_stack_future_stays_small() {
    let stack = StackBuilder::new(api("https://api.acme.test"), StaticToken::new("t").unwrap())
        .service(default_client::<StackBody<Full<Bytes>>>().unwrap())
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let future = stack.clone().call(req(Method::GET, "/me"));
    let size = std::mem::size_of_val(&future);
    assert!(size <= 768, "the stack's future grew to {size} bytes");
}

#[tokio::test(start_paused = true)]
async fn a_dotted_path_does_not_borrow_a_retry_rule() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = service_fn({
        let calls = calls.clone();
        move |req: Request<StackBody<Full<Bytes>>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let path = req.uri().path().to_owned();
            async move {
                let mut response = Response::new(Full::<Bytes>::from(path));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, BoxError>(response)
            }
        }
    });
    let bp = api("https://api.acme.test").map_retry(|r| {
        r.rules = vec![RetryRule {
            method: Method::POST,
            path: "/companies*".into(),
            retry_safe: true,
        }];
    });
    let stack = StackBuilder::new(bp, StaticToken::new("t").unwrap())
        .service(upstream)
        .unwrap();
    // Reads like /companies/…, goes to /messages: a create, never sent twice.
    let response = stack
        .clone()
        .oneshot(req(Method::POST, "/companies/../messages"))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "/messages");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The rule still holds for the paths it names.
    let _ = stack
        .oneshot(req(Method::POST, "/companies/1"))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// A blueprint whose host names a connection parameter: each connection's stack sends to
/// its own host, with the connection's header, and its token goes to that origin only
/// (an absolute URI to another connection's host is refused before anything is sent).
#[tokio::test]
async fn a_connection_stack_sends_to_its_own_host_and_credentials_stay_there() {
    use blueprint::{ConnectionParam, ParamSource};
    let seen: Arc<std::sync::Mutex<Vec<(String, String, String)>>> = Arc::default();
    let upstream = service_fn({
        let seen = seen.clone();
        move |req: Request<StackBody<Full<Bytes>>>| {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            seen.lock().unwrap().push((
                req.uri().to_string(),
                header("authorization"),
                header("x-tenant"),
            ));
            async move { Ok::<_, BoxError>(Response::new(Full::<Bytes>::default())) }
        }
    });
    let zendesk = Blueprint::new("zd", "v2", "https://zd.invalid")
        .unwrap()
        .with_connection_param(
            ConnectionParam::new("subdomain", ParamSource::ConnectQuery)
                .unwrap()
                .pattern("[a-z0-9-]+")
                .unwrap(),
        )
        .with_base_url("https://${connection.subdomain}.zendesk.test/api/v2")
        .unwrap()
        .default_header("x-tenant", "t-${connection.subdomain}")
        .unwrap();
    let template = StackBuilder::new(zendesk, StaticToken::new("tok").unwrap()).share_rate_limit();
    let acme = template
        .for_connection(|_| Some("acme".to_owned()))
        .unwrap()
        .service(upstream.clone())
        .unwrap();
    let response = acme
        .clone()
        .oneshot(req(Method::GET, "/tickets/1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().pop().unwrap(),
        (
            "https://acme.zendesk.test/api/v2/tickets/1".to_owned(),
            "Bearer tok".to_owned(),
            "t-acme".to_owned()
        )
    );
    // Another connection's host is a foreign origin to acme's stack.
    let foreign = acme
        .oneshot(req(
            Method::GET,
            "https://beta.zendesk.test/api/v2/tickets/1",
        ))
        .await;
    assert!(foreign.is_err(), "credentials for acme's origin only");
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
    // A value that would change the host's shape, or none, builds no stack.
    assert!(
        template
            .for_connection(|_| Some("evil.com/".to_owned()))
            .is_err()
    );
    let missing = template.for_connection(|_| None).unwrap_err();
    assert!(missing.message().contains("`subdomain`"), "{missing}");
}

#[tokio::test(start_paused = true)]
async fn a_call_held_for_the_rate_limit_gets_its_whole_attempt_timeout_after_the_wait() {
    // A call held 5 s for the budget is sent after the wait: its 2 s attempt timeout counts
    // from then (not from the call, which the retry layer saw 5 s earlier), so the 1 s
    // answer is in time and nothing is resent.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let api_service = service_fn(move |_req: Request<StackBody<Full<Bytes>>>| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut response = Response::new(Full::<Bytes>::default());
            if n == 1 {
                // The budget is spent for the next 5 s.
                let headers = response.headers_mut();
                headers.insert("ratelimit-limit", "10".parse().unwrap());
                headers.insert("ratelimit-remaining", "0".parse().unwrap());
                headers.insert("ratelimit-reset", "5".parse().unwrap());
            } else {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok::<_, BoxError>(response)
        }
    });
    let bp = api("https://api.acme.test").map_retry(|r| {
        r.attempt_timeout = Some(Duration::from_secs(2));
        r.deadline = Some(Duration::from_secs(30));
    });
    let stack = StackBuilder::new(bp, StaticToken::new("t").unwrap())
        .service(api_service)
        .unwrap();
    let first = stack
        .clone()
        .oneshot(req(Method::GET, "/me"))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);

    let start = tokio::time::Instant::now();
    let held = stack.oneshot(req(Method::GET, "/me")).await;
    assert_eq!(held.map(|r| r.status()).ok(), Some(StatusCode::OK));
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the held call was sent once, in time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_whose_wait_would_pass_the_call_deadline_is_not_made() {
    // The server asks for 5 s before a retry; the call has 3 s in all. The stack answers
    // the 503 at once instead of waiting past its deadline (the deadline travels in the
    // call's target, where the retry layer reads it back).
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let api_service = service_fn(move |_req: Request<StackBody<Full<Bytes>>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut response = Response::new(Full::<Bytes>::default());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
                .headers_mut()
                .insert("retry-after", "2".parse().unwrap());
            Ok::<_, BoxError>(response)
        }
    });
    let bp = api("https://api.acme.test").map_retry(|r| {
        r.deadline = Some(Duration::from_secs(3));
        r.max_server_wait = Duration::from_secs(60);
    });
    let stack = StackBuilder::new(bp, StaticToken::new("t").unwrap())
        .service(api_service)
        .unwrap();
    let start = tokio::time::Instant::now();
    let answer = stack.oneshot(req(Method::GET, "/me")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    // One wait of 2 s fits; the second would end past the deadline: two attempts in all,
    // answered after the first wait, not at the deadline.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
