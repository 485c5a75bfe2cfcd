//! The service, against in-process doubles of an API, with tokio time paused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use blueprint_core::{BoxError, ConnectionId, Deadline, RateLimit};
use http::{HeaderValue, Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{RateLimitLayer, RateLimitedError, TokioClock};

const EPOCH: u64 = 1_700_000_000;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn clock() -> TokioClock {
    TokioClock::starting_at(SystemTime::UNIX_EPOCH + secs(EPOCH))
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap_or_else(|e| panic!("{e}"))
}

fn on(connection: &str, uri: &str) -> Request<()> {
    let mut request = get(uri);
    request
        .extensions_mut()
        .insert(ConnectionId::new(connection));
    request
}

/// An API that answers every request with the headers `answer` gives, and records when
/// each request arrived.
#[derive(Clone)]
struct Api {
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Api {
    fn new() -> Self {
        Api {
            arrivals: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn service<F>(
        self,
        answer: F,
    ) -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = BoxError,
        Future = impl Future<Output = Result<Response<()>, BoxError>> + Send,
    > + Clone
    + Send
    where
        F: Fn(usize) -> Response<()> + Clone + Send + Sync + 'static,
    {
        let arrivals = self.arrivals;
        service_fn(move |_req: Request<()>| {
            let n = {
                let mut arrivals = arrivals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                arrivals.push(Instant::now());
                arrivals.len()
            };
            let response = answer(n);
            async move { Ok::<_, BoxError>(response) }
        })
    }

    fn calls(&self) -> usize {
        self.arrivals.lock().map(|a| a.len()).unwrap_or(0)
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

/// An Intercom answer: `remaining` left, resetting at epoch second `reset`.
fn intercom(status: StatusCode, remaining: u64, reset: u64) -> Response<()> {
    Response::builder()
        .status(status)
        .header("x-ratelimit-limit", "10")
        .header("x-ratelimit-remaining", remaining.to_string())
        .header("x-ratelimit-reset", reset.to_string())
        .body(())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(start_paused = true)]
async fn responses_get_the_extension_and_keys_without_information_never_wait() {
    let api = Api::new();
    let start = Instant::now();
    // Connection "spent" is told its budget is spent for 10 s; "quiet" gets no headers.
    let svc = RateLimitLayer::intercom().clock(clock()).layer(
        api.clone()
            .service(move |_| intercom(StatusCode::OK, 0, EPOCH + 10)),
    );
    let quiet = RateLimitLayer::intercom()
        .clock(clock())
        .layer(api.clone().service(|_| Response::new(())));

    let response = svc
        .clone()
        .oneshot(on("spent", "https://api.example.com/a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let limit = response.extensions().get::<RateLimit>().copied();
    assert_eq!(
        limit,
        Some(RateLimit {
            limit: Some(10),
            remaining: Some(0),
            reset: Some(start + secs(10)),
            retry_after: None,
            limited: false,
        })
    );

    // Another connection, and the same connection at another origin, have no information.
    for request in [
        on("other", "https://api.example.com/a"),
        on("spent", "https://eu.example.com/a"),
    ] {
        svc.clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for _ in 0..50 {
        let response = quiet
            .clone()
            .oneshot(on("spent", "https://api.example.com/a"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(response.extensions().get::<RateLimit>().is_none());
    }
    assert_eq!(
        Instant::now(),
        start,
        "a request without information waited"
    );
    assert_eq!(api.calls(), 53);
}

#[tokio::test(start_paused = true)]
async fn after_a_429_requests_are_held_until_the_reset_then_spread() {
    let api = Api::new();
    let start = Instant::now();
    let spread = Duration::from_millis(500);
    // The first answer is a 429 until epoch + 2; after that the window is fresh.
    let svc = RateLimitLayer::intercom()
        .clock(clock())
        .spread(spread)
        .layer(api.clone().service(move |n| {
            if n == 1 {
                intercom(StatusCode::TOO_MANY_REQUESTS, 0, EPOCH + 2)
            } else {
                intercom(StatusCode::OK, 9, EPOCH + 4)
            }
        }));
    let first = svc
        .clone()
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        first
            .extensions()
            .get::<RateLimit>()
            .is_some_and(|l| l.limited)
    );

    let held: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(get("https://api.example.com/b"))))
        .collect();
    for task in held {
        let response = task.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.map(|r| r.status()).ok(), Some(StatusCode::OK));
    }
    let arrivals = api.arrivals();
    assert_eq!(arrivals.len(), 6);
    let reset = start + secs(2);
    for at in &arrivals[1..] {
        assert!(
            *at >= reset && *at <= reset + spread,
            "sent at {:?}",
            *at - start
        );
    }
    // Spread: they did not all go at the same instant.
    assert!(arrivals[1..].iter().any(|at| *at != arrivals[1]));
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_deadline_cannot_be_met_is_refused_without_being_sent() {
    let api = Api::new();
    let svc = RateLimitLayer::intercom()
        .clock(clock())
        .origin_url("https://api.example.com")
        .unwrap_or_else(|e| panic!("{e}"))
        .layer(
            api.clone()
                .service(|_| intercom(StatusCode::OK, 0, EPOCH + 30)),
        );
    svc.clone()
        .oneshot(on("ws-1", "/contacts"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.calls(), 1);

    let start = Instant::now();
    let mut request = on("ws-1", "/contacts");
    request.extensions_mut().insert(Deadline::after(secs(5)));
    let error = svc
        .clone()
        .oneshot(request)
        .await
        .err()
        .unwrap_or_else(|| panic!("the request was sent"));
    assert_eq!(api.calls(), 1, "nothing may be sent");
    assert_eq!(Instant::now(), start, "the refusal must not wait");
    let error = error
        .downcast_ref::<RateLimitedError>()
        .unwrap_or_else(|| panic!("wrong error: {error}"));
    assert_eq!(error.connection().as_str(), "ws-1");
    assert_eq!(
        error.origin().map(ToString::to_string).as_deref(),
        Some("https://api.example.com")
    );
    assert_eq!(error.retry_at(), start + secs(30));
    assert_eq!(error.retry_after(), secs(30));
    let message = error.to_string();
    for part in [
        "`ws-1`",
        "https://api.example.com",
        "30.0s",
        "5.0s",
        "not sent",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }

    // A deadline after the reset is held, then sent.
    let mut request = on("ws-1", "/contacts");
    request.extensions_mut().insert(Deadline::after(secs(31)));
    svc.oneshot(request).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.calls(), 2);
    assert!(Instant::now() >= start + secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_held_request_is_refused_when_its_deadline_comes_first() {
    // Held for answers (one in flight, one left) until the deadline, then refused.
    let api = Api::new();
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some(gate)));
    let first = Arc::new(AtomicUsize::new(0));
    let inner = {
        let api = api
            .clone()
            .service(|_| intercom(StatusCode::OK, 1, EPOCH + 60));
        service_fn(move |req: Request<()>| {
            let mut api = api.clone();
            let gate = if first.fetch_add(1, Ordering::SeqCst) == 1 {
                gate.lock().ok().and_then(|mut g| g.take())
            } else {
                None
            };
            async move {
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                api.ready().await?.call(req).await
            }
        })
    };
    let svc = RateLimitLayer::intercom().clock(clock()).layer(inner);
    // Learn: one left for 60 s.
    svc.clone()
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // This one takes the last one and stays in flight.
    let in_flight = tokio::spawn(svc.clone().oneshot(get("https://api.example.com/b")));
    tokio::task::yield_now().await;

    let start = Instant::now();
    let mut request = get("https://api.example.com/c");
    request.extensions_mut().insert(Deadline::after(secs(3)));
    let error = svc.clone().oneshot(request).await.err();
    assert!(error.is_some_and(|e| e.is::<RateLimitedError>()));
    assert_eq!(Instant::now(), start + secs(3));
    assert_eq!(api.calls(), 1, "only the first request may have arrived");
    let _ = release.send(());
    assert!(in_flight.await.is_ok_and(|r| r.is_ok()));
}

#[tokio::test(start_paused = true)]
async fn a_failed_request_gives_its_place_back_to_a_held_one() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (fail, failed) = tokio::sync::oneshot::channel::<()>();
    let failed = Arc::new(Mutex::new(Some(failed)));
    let inner = {
        let calls = Arc::clone(&calls);
        service_fn(move |_req: Request<()>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let failed = if n == 1 {
                failed.lock().ok().and_then(|mut f| f.take())
            } else {
                None
            };
            async move {
                match (n, failed) {
                    (0, _) => Ok(intercom(StatusCode::OK, 1, EPOCH + 60)),
                    (1, Some(failed)) => {
                        let _ = failed.await;
                        Err::<Response<()>, BoxError>("connection reset".into())
                    }
                    _ => Ok(intercom(StatusCode::OK, 0, EPOCH + 60)),
                }
            }
        })
    };
    // Without smoothing, which would space the one request left over the minute.
    let svc = RateLimitLayer::intercom()
        .clock(clock())
        .smoothing(false)
        .layer(inner);
    svc.clone()
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let doomed = tokio::spawn(svc.clone().oneshot(get("https://api.example.com/b")));
    tokio::task::yield_now().await;
    let waiting = tokio::spawn(svc.clone().oneshot(get("https://api.example.com/c")));
    tokio::task::yield_now().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the third request went while one was in flight with one left"
    );
    let start = Instant::now();
    let _ = fail.send(());
    assert!(doomed.await.is_ok_and(|r| r.is_err()));
    assert!(waiting.await.is_ok_and(|r| r.is_ok()));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        Instant::now(),
        start,
        "the held request waited for the reset instead"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_for_a_concurrency_cap_holds_nothing() {
    let api = Api::new();
    let cap = || {
        Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .body(())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let svc = RateLimitLayer::intercom()
        .clock(clock())
        .layer(api.clone().service(move |n| {
            if n % 2 == 0 {
                cap()
            } else {
                intercom(StatusCode::TOO_MANY_REQUESTS, 7, EPOCH + 10)
            }
        }));
    let start = Instant::now();
    for _ in 0..6 {
        let response = svc
            .clone()
            .oneshot(get("https://api.example.com/exports"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            response
                .extensions()
                .get::<RateLimit>()
                .is_some_and(|l| l.limited)
        );
    }
    assert_eq!(Instant::now(), start, "a wait was invented");
}

#[tokio::test(start_paused = true)]
async fn with_pacing_off_nothing_is_held_but_the_extension_is_set() {
    let api = Api::new();
    let svc = RateLimitLayer::intercom()
        .clock(clock())
        .pacing(false)
        .layer(
            api.clone()
                .service(|_| intercom(StatusCode::TOO_MANY_REQUESTS, 0, EPOCH + 30)),
        );
    let start = Instant::now();
    for _ in 0..3 {
        let response = svc
            .clone()
            .oneshot(get("https://api.example.com/a"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            response
                .extensions()
                .get::<RateLimit>()
                .and_then(RateLimit::retry_at),
            Some(start + secs(30))
        );
    }
    assert_eq!(Instant::now(), start);
}

#[tokio::test(start_paused = true)]
async fn smoothing_spaces_what_is_left_to_the_reset() {
    // Every answer: 10 of 10 were left at the start of a 10 s window; the server counts down.
    let run = |smoothing: bool| async move {
        let api = Api::new();
        let start = Instant::now();
        let svc = RateLimitLayer::intercom()
            .clock(clock())
            .smoothing(smoothing)
            .layer(api.clone().service(move |n| {
                let n = u64::try_from(n).unwrap_or(u64::MAX);
                intercom(StatusCode::OK, 10u64.saturating_sub(n), EPOCH + 10)
            }));
        for _ in 0..10 {
            svc.clone()
                .oneshot(get("https://api.example.com/a"))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        api.arrivals()
            .iter()
            .map(|at| at.duration_since(start))
            .collect::<Vec<_>>()
    };
    let plain = run(false).await;
    assert!(plain.iter().all(Duration::is_zero), "{plain:?}");
    let smooth = run(true).await;
    // While more than half of the pro-rata share is left, requests go at once; from 4 left
    // for 10 s of a 10-per-10 s window on, they are spaced so the last goes before the reset.
    let spaced: Vec<_> = [0, 0, 0, 0, 0, 0, 0, 2_500, 5_000, 7_500]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
    assert_eq!(smooth, spaced);
}

#[tokio::test(start_paused = true)]
async fn clones_and_services_of_one_layer_share_the_budget() {
    let api = Api::new();
    let layer = RateLimitLayer::intercom().clock(clock());
    let a = layer.layer(
        api.clone()
            .service(|_| intercom(StatusCode::OK, 0, EPOCH + 5)),
    );
    let b = layer.layer(
        api.clone()
            .service(|_| intercom(StatusCode::OK, 5, EPOCH + 10)),
    );
    a.oneshot(get("https://api.example.com/a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    b.oneshot(get("https://api.example.com/b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        Instant::now() >= start + secs(5),
        "the other service did not see the spent budget"
    );
}

/// GitHub's secondary limit: a 403 with `Retry-After`, budget left. Only a rule saying so
/// makes it "rate limited".
fn secondary_limit(n: usize) -> Response<()> {
    if n == 1 {
        Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header("x-ratelimit-limit", "5000")
            .header("x-ratelimit-remaining", "4999")
            .header("x-ratelimit-reset", (EPOCH + 3600).to_string())
            .header("retry-after", "20")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"))
    } else {
        intercom(StatusCode::OK, 4998, EPOCH + 3600)
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_a_rule_calls_rate_limited_holds_the_next_calls_like_a_429() {
    use crate::{RateLimitRule, WaitFrom};
    let rules = [
        RateLimitRule::too_many_requests(),
        RateLimitRule::new(StatusCode::FORBIDDEN, WaitFrom::RetryAfter)
            .when_header("retry-after", "*")
            .unwrap_or_else(|e| panic!("{e}")),
    ];
    for (name, layer, held) in [
        (
            "with the rule",
            RateLimitLayer::intercom().rate_limited(rules.clone()),
            true,
        ),
        ("without it", RateLimitLayer::intercom(), false),
    ] {
        let api = Api::new();
        let svc = layer
            .clock(clock())
            .layer(api.clone().service(secondary_limit));
        let start = Instant::now();
        let first = svc
            .clone()
            .oneshot(get("https://api.github.com/user"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let limited = first
            .extensions()
            .get::<RateLimit>()
            .is_some_and(|r| r.limited);
        assert_eq!(limited, held, "{name}: the 403's extension");
        svc.oneshot(get("https://api.github.com/user"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let waited = api.arrivals()[1] - start;
        if held {
            assert!(waited >= secs(20), "{name}: sent after {waited:?}");
        } else {
            assert!(waited < secs(1), "{name}: held {waited:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_announced_wait_past_the_cap_holds_calls_no_longer_than_the_cap() {
    // `RateLimit` says the budget is spent for 27 hours; the blueprint believes 5 minutes.
    let api = Api::new();
    let svc = RateLimitLayer::intercom()
        .max_reset(secs(300))
        .clock(clock())
        .layer(api.clone().service(|n| {
            let mut response = Response::new(());
            if n == 1 {
                response.headers_mut().insert(
                    "ratelimit",
                    HeaderValue::from_static("\"default\";r=0;t=99999"),
                );
            }
            response
        }));
    let start = Instant::now();
    svc.clone()
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut request = get("https://api.example.com/a");
    request.extensions_mut().insert(Deadline::after(secs(3600)));
    svc.oneshot(request).await.unwrap_or_else(|e| panic!("{e}"));
    let waited = api.arrivals()[1] - start;
    assert!(
        waited >= secs(300) && waited <= secs(301),
        "held {waited:?}, not the 300 s cap"
    );
}

#[tokio::test(start_paused = true)]
async fn the_answers_of_one_window_read_the_wall_clock_once() {
    let reads = Arc::new(AtomicUsize::new(0));
    let wall = {
        let reads = Arc::clone(&reads);
        let tokio_wall = clock();
        move || {
            reads.fetch_add(1, Ordering::Relaxed);
            crate::WallClock::now(&tokio_wall)
        }
    };
    let start = Instant::now();
    let window = Arc::new(AtomicUsize::new(1));
    let answer = {
        let window = Arc::clone(&window);
        move |n: usize| {
            let w = u64::try_from(window.load(Ordering::Relaxed)).unwrap_or(0);
            intercom(StatusCode::OK, 1000 - n as u64, EPOCH + 10 * w)
        }
    };
    let api = Api::new();
    let svc = RateLimitLayer::intercom()
        .clock(wall)
        .layer(api.clone().service(answer));
    let resets = || {
        let svc = svc.clone();
        async move {
            let mut resets = Vec::new();
            for _ in 0..4 {
                let response = svc
                    .clone()
                    .oneshot(get("http://api.test/a"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let limit = response.extensions().get::<RateLimit>().copied();
                resets.push(limit.and_then(|l| l.reset));
            }
            resets
        }
    };
    assert_eq!(resets().await, vec![Some(start + secs(10)); 4]);
    assert_eq!(reads.load(Ordering::Relaxed), 1);

    // The next window writes another reset: converted once more, and right.
    tokio::time::advance(secs(10)).await;
    window.store(2, Ordering::Relaxed);
    assert_eq!(resets().await, vec![Some(start + secs(20)); 4]);
    assert_eq!(reads.load(Ordering::Relaxed), 2);
    assert_eq!(api.calls(), 8);
}
