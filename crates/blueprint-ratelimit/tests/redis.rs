//! The Redis budgets against a real Redis: shared between two connections as two
//! replicas, atomic under concurrency, keys that expire, a 429 seen by all, and the fallback
//! to in-process pacing when Redis is away (through a relay that is cut; the shared server
//! is never stopped).
//!
//! Redis keeps real time (`TIME`), which tokio cannot pause: these tests wait for real, a
//! few hundred milliseconds at most each, bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint_core::{BoxError, ConnectionId, Event, EventSink, HoldReason, Origin};
use blueprint_ratelimit::shared::{Ask, BudgetKey, Decision, Seen, SeenReset};
use blueprint_ratelimit::{RateLimitLayer, RedisBudgets, SharedBudgets};
use http::{Request, Response, StatusCode};
use redis::AsyncCommands;
use redis_support::{Logs, Relay, eventually, inspector, prefix, redis_addr, redis_url};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const ASK: Ask = Ask {
    deadline: None,
    smoothing: false,
};

async fn budgets(url: &str, prefix: &str) -> RedisBudgets {
    RedisBudgets::builder(url)
        .unwrap()
        .prefix(prefix)
        .probe_interval(Duration::from_millis(100))
        .connect()
        .await
}

fn origin() -> Origin {
    Origin::parse("https://api.example.test").unwrap()
}

fn window(limit: u64, remaining: u64, reset_in: Duration) -> Seen {
    Seen {
        limit: Some(limit),
        remaining: Some(remaining),
        reset: Some(SeenReset::In(reset_in)),
        precision: Duration::from_millis(50),
        retry_after: None,
        limited: false,
    }
}

/// Observations are sent without waiting: waits until Redis holds the key.
async fn observed(name: &str) {
    let mut redis = inspector().await;
    let name = name.to_owned();
    eventually(
        Duration::from_secs(2),
        "the observation reaches Redis",
        || {
            let mut redis = redis.clone();
            let name = name.clone();
            async move { redis.exists::<_, bool>(&name).await.unwrap_or(false) }
        },
    )
    .await;
    let _: redis::RedisResult<()> = redis.ping().await;
}

#[tokio::test]
async fn two_replicas_spend_one_budget_and_see_each_others_429() {
    redis_addr().await;
    let prefix = prefix("two-replicas");
    let a = budgets(&redis_url(), &prefix).await;
    let b = budgets(&redis_url(), &prefix).await;
    assert!(a.is_available() && b.is_available());
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);

    a.observe(key, &window(10, 10, Duration::from_secs(5)));
    observed(&a.key_name(key)).await;
    let mut left = Vec::new();
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let answer = replica.admit(key, ASK).await.unwrap();
        assert_eq!(answer.decision(), Decision::Go, "request {i}");
        left.push(answer.known_window().unwrap().remaining);
    }
    assert_eq!(left, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    // The eleventh, on either replica, waits for the reset.
    for replica in [&a, &b] {
        match replica.admit(key, ASK).await.unwrap().decision() {
            Decision::Hold {
                wait,
                reason: HoldReason::Spent,
            } => assert!(
                wait > Duration::from_secs(4) && wait <= Duration::from_secs(6),
                "{wait:?}"
            ),
            other => panic!("budget spent, yet {other:?}"),
        }
    }

    // A 429 one replica gets holds the other's requests of another connection's budget.
    let other = ConnectionId::new("globex");
    let key = BudgetKey::new(Some(&origin), &other);
    b.observe(
        key,
        &Seen {
            limit: None,
            remaining: None,
            reset: None,
            precision: Duration::ZERO,
            retry_after: Some(Duration::from_secs(3)),
            limited: true,
        },
    );
    observed(&b.key_name(key)).await;
    match a.admit(key, ASK).await.unwrap().decision() {
        Decision::Hold { wait, .. } => {
            assert!(
                wait > Duration::from_secs(2) && wait <= Duration::from_secs(3),
                "{wait:?}"
            );
        }
        other => panic!("after a 429 with Retry-After, {other:?}"),
    }
    // And a deadline before the budget frees up is refused, not held.
    let ask = Ask {
        deadline: Some(Duration::from_millis(500)),
        smoothing: false,
    };
    assert!(matches!(
        a.admit(key, ask).await.unwrap().decision(),
        Decision::Refuse { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_is_atomic_when_many_requests_ask_at_once() {
    redis_addr().await;
    let prefix = prefix("atomic");
    let replicas = [
        budgets(&redis_url(), &prefix).await,
        budgets(&redis_url(), &prefix).await,
    ];
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);
    replicas[0].observe(key, &window(50, 50, Duration::from_secs(20)));
    observed(&replicas[0].key_name(key)).await;

    let go = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let replica = replicas[i % 2].clone();
        let go = Arc::clone(&go);
        let (origin, connection) = (origin.clone(), connection.clone());
        tasks.push(tokio::spawn(async move {
            let key = BudgetKey::new(Some(&origin), &connection);
            let answer = replica.admit(key, ASK).await.expect("Redis answers");
            if answer.decision() == Decision::Go {
                go.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        go.load(Ordering::Relaxed),
        50,
        "a budget of 50 admitted another count"
    );
    let stats = replicas[0].stats();
    assert_eq!(stats.errors, 0, "{stats:?}");
}

#[tokio::test]
async fn keys_expire_with_their_window_and_a_new_window_refills() {
    redis_addr().await;
    let prefix = prefix("expire");
    let a = budgets(&redis_url(), &prefix).await;
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);
    let name = a.key_name(key);
    assert!(
        !name.contains("acme") && !name.contains("example"),
        "{name}"
    );
    assert!(name.starts_with(&prefix), "{name}");

    a.observe(key, &window(3, 0, Duration::from_millis(400)));
    observed(&name).await;
    let mut redis = inspector().await;
    let ttl: i64 = redis.pttl(&name).await.unwrap();
    // A window after the reset (at least a second): 400 ms + 1 s.
    assert!(ttl > 1000 && ttl <= 1400, "the key lives {ttl} ms");

    match a.admit(key, ASK).await.unwrap().decision() {
        Decision::Hold { wait, .. } => {
            assert!(wait <= Duration::from_millis(400), "{wait:?}");
            tokio::time::sleep(wait + Duration::from_millis(20)).await;
        }
        other => panic!("spent until the reset, yet {other:?}"),
    }
    // The reset came: the window is refilled with the limit, for everyone.
    for left in [2, 1, 0] {
        let answer = a.admit(key, ASK).await.unwrap();
        assert_eq!(answer.decision(), Decision::Go);
        assert_eq!(answer.known_window().unwrap().remaining, left);
    }
    assert!(matches!(
        a.admit(key, ASK).await.unwrap().decision(),
        Decision::Hold {
            reason: HoldReason::Answers,
            ..
        }
    ));
    eventually(Duration::from_secs(3), "the key expires", || {
        let mut redis = redis.clone();
        let name = name.clone();
        async move { !redis.exists::<_, bool>(&name).await.unwrap_or(true) }
    })
    .await;
}

#[tokio::test]
async fn smoothing_keeps_turns_so_that_what_is_left_lasts_to_the_reset() {
    redis_addr().await;
    let prefix = prefix("smoothing");
    let a = budgets(&redis_url(), &prefix).await;
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);
    // A 10-second window of 100, then only 4 left with 10 seconds to go: small.
    a.observe(key, &window(100, 100, Duration::from_secs(10)));
    observed(&a.key_name(key)).await;
    a.observe(key, &window(100, 4, Duration::from_secs(10)));
    let smooth = Ask {
        deadline: None,
        smoothing: true,
    };
    let mut redis = inspector().await;
    let name = a.key_name(key);
    eventually(
        Duration::from_secs(2),
        "the second observation arrives",
        || {
            let mut redis = redis.clone();
            let name = name.clone();
            async move {
                redis
                    .hget::<_, _, Option<u64>>(&name, "rem")
                    .await
                    .ok()
                    .flatten()
                    == Some(4)
            }
        },
    )
    .await;
    let _: redis::RedisResult<()> = redis.ping().await;
    let mut waits = Vec::new();
    for _ in 0..4 {
        match a.admit(key, smooth).await.unwrap().decision() {
            Decision::Go => waits.push(Duration::ZERO),
            Decision::GoAfter(wait) => waits.push(wait),
            other => panic!("{other:?}"),
        }
    }
    // Turns about 2.5 s apart: now, then 2.5, 5, 7.5 s.
    for (i, wait) in waits.iter().enumerate() {
        let turn = Duration::from_millis(2500) * u32::try_from(i).unwrap();
        assert!(
            *wait + Duration::from_millis(100) >= turn && *wait <= turn + Duration::from_millis(50),
            "turn {i}: {waits:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn redis_cut_falls_back_with_one_warn_and_comes_back_by_itself() {
    let (logs, _guard) = Logs::capture();
    let relay = Relay::start(redis_addr().await).await;
    let prefix = prefix("fallback");
    let a = budgets(&relay.url(), &prefix).await;
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);
    assert!(a.admit(key, ASK).await.is_ok());

    relay.refuse();
    let started = Instant::now();
    assert!(
        a.admit(key, ASK).await.is_err(),
        "Redis is cut, yet it answered"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(!a.is_available());
    for _ in 0..20 {
        // Not asked while away: nothing to wait for.
        assert!(!a.is_available());
        a.observe(key, &window(10, 5, Duration::from_secs(1)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(logs.count("WARN"), 1, "{}", logs.text());
    assert!(
        logs.text().contains("Redis does not answer"),
        "{}",
        logs.text()
    );

    relay.restore();
    eventually(Duration::from_secs(5), "Redis is used again", || {
        let up = a.is_available();
        async move { up }
    })
    .await;
    assert!(a.admit(key, ASK).await.is_ok());
    assert!(
        logs.text().contains("Redis answers again"),
        "{}",
        logs.text()
    );
    assert_eq!(logs.count("WARN"), 1, "{}", logs.text());
    assert_eq!(a.stats().fallbacks, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_redis_that_hangs_costs_one_timeout_then_nothing() {
    let relay = Relay::start(redis_addr().await).await;
    let a = RedisBudgets::builder(&relay.url())
        .unwrap()
        .prefix(prefix("stall"))
        .timeout(Duration::from_millis(50))
        .probe_interval(Duration::from_millis(100))
        .connect()
        .await;
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);
    assert!(a.admit(key, ASK).await.is_ok());
    relay.stall();
    let started = Instant::now();
    assert!(a.admit(key, ASK).await.is_err());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(45) && took < Duration::from_millis(300),
        "{took:?}"
    );
    assert!(!a.is_available());
    relay.restore();
    eventually(Duration::from_secs(5), "Redis is used again", || {
        let up = a.is_available();
        async move { up }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn unreachable_at_start_is_no_error_and_the_password_stays_out_of_logs() {
    let (logs, _guard) = Logs::capture();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("redis://:pa55-W0RD-x@{closed}/3");
    let started = Instant::now();
    let a = budgets(&url, &prefix("unreachable")).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!a.is_available());
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    assert!(
        a.admit(BudgetKey::new(Some(&origin), &connection), ASK)
            .await
            .is_err()
    );
    let debug = format!("{a:?}");
    assert!(debug.contains(&format!("redis://{closed}/3")), "{debug}");
    assert!(!debug.contains("pa55"), "{debug}");
    assert_eq!(logs.count("WARN"), 1, "{}", logs.text());
    assert!(!logs.text().contains("pa55"), "{}", logs.text());

    // A URL that is not one: an error that names it, without the password.
    let error = RedisBudgets::builder("http://:pa55-W0RD-x@localhost:6379")
        .unwrap_err()
        .to_string();
    assert!(error.contains("redis://"), "{error}");
    assert!(!error.contains("pa55"), "{error}");
    let error = RedisBudgets::builder("redis://:pa55-W0RD-x@localhost:notaport/0")
        .unwrap_err()
        .to_string();
    assert!(!error.contains("pa55"), "{error}");
}

/// A server that speaks the protocol but no sense: `SCRIPT LOAD` gets the script's SHA
/// right, every other command `+OK`, which no budget script answers.
async fn garbling_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    // One command: `*N`, then N bulk strings `$len` + data.
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = line.trim().trim_start_matches('*').parse().unwrap_or(0);
                    let mut args = Vec::new();
                    for _ in 0..n {
                        let mut len = String::new();
                        if reader.read_line(&mut len).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let len: usize = len.trim().trim_start_matches('$').parse().unwrap_or(0);
                        let mut data = vec![0; len + 2];
                        if reader.read_exact(&mut data).await.is_err() {
                            return;
                        }
                        data.truncate(len);
                        args.push(String::from_utf8_lossy(&data).into_owned());
                    }
                    let answer = match args.as_slice() {
                        [script, load, body]
                            if script.eq_ignore_ascii_case("script")
                                && load.eq_ignore_ascii_case("load") =>
                        {
                            let sha = redis::Script::new(body).get_hash().to_owned();
                            format!("${}\r\n{sha}\r\n", sha.len())
                        }
                        _ => String::from("+OK\r\n"),
                    };
                    if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "current_thread")]
async fn a_garbled_answer_is_a_fallback_not_a_panic() {
    let (logs, _guard) = Logs::capture();
    let addr = garbling_server().await;
    let a = budgets(&format!("redis://{addr}/0"), &prefix("garbled")).await;
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);
    assert!(a.is_available(), "{}", logs.text());
    assert!(a.admit(key, ASK).await.is_err());
    assert!(!a.is_available());
    assert_eq!(logs.count("WARN"), 1, "{}", logs.text());
    assert!(logs.text().contains("incompatible type"), "{}", logs.text());
}

/// An API in this process with a window of `limit` per second, aligned on the wall clock,
/// answering with Intercom's headers; counts what it answered.
#[derive(Clone, Default)]
struct Limiter {
    state: Arc<std::sync::Mutex<(u64, u64)>>,
    ok: Arc<AtomicUsize>,
    limited: Arc<AtomicUsize>,
}

impl Limiter {
    fn answer(&self, limit: u64) -> Response<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let window = now.as_secs();
        let count = {
            let mut state = self.state.lock().unwrap();
            if state.0 != window {
                *state = (window, 0);
            }
            state.1 += 1;
            state.1
        };
        let over = count > limit;
        if over {
            self.limited.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
        Response::builder()
            .status(if over {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::OK
            })
            .header("x-ratelimit-limit", limit)
            .header("x-ratelimit-remaining", limit.saturating_sub(count))
            .header("x-ratelimit-reset", window + 1)
            .body(())
            .unwrap()
    }
}

/// The limiter as a service, 20 per window.
#[derive(Clone)]
struct Api(Limiter);

impl Service<Request<()>> for Api {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<()>, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(self.0.answer(20)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_layers_over_redis_keep_two_replicas_under_one_limit_and_report_the_fallback() {
    let relay = Relay::start(redis_addr().await).await;
    let prefix = prefix("layers");
    let api = Limiter::default();
    let events: Arc<std::sync::Mutex<Vec<bool>>> = Arc::default();
    let sink = {
        let events = Arc::clone(&events);
        EventSink::new(move |event: &Event<'_>| {
            if let Event::Fallback { component, active } = event {
                assert_eq!(*component, "rate_limit_redis");
                events.lock().unwrap().push(*active);
            }
        })
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let api = api.clone();
        let layer = RateLimitLayer::intercom()
            .events(sink.clone())
            .shared(budgets(&relay.url(), &prefix).await);
        replicas.push(tower::ServiceBuilder::new().layer(layer).service(Api(api)));
    }
    // Start on a window's edge; four tasks per replica for three windows.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    tokio::time::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()),
    ))
    .await;
    type Replica = blueprint_ratelimit::RateLimiting<Api>;
    let run = |replicas: Vec<Replica>, secs: u64| async move {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let mut service = replicas[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let request = Request::get("https://api.example.test/contacts")
                        .body(())
                        .unwrap();
                    let service = service.ready().await.unwrap();
                    service.call(request).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    };
    run(replicas.clone(), 3).await;
    let (ok, limited) = (
        api.ok.load(Ordering::Relaxed),
        api.limited.load(Ordering::Relaxed),
    );
    eprintln!("shared: {ok} answered 200, {limited} answered 429 in 3 windows of 20");
    assert!(
        limited <= 1,
        "{limited} requests got a 429 ({ok} went through)"
    );
    assert!(ok >= 57, "only {ok} of 60 went through");
    assert!(events.lock().unwrap().is_empty());

    // Redis away: both replicas pace alone, no call fails, one switch is reported per
    // layer; back: shared again, reported again.
    relay.refuse();
    run(replicas.clone(), 2).await;
    assert_eq!(*events.lock().unwrap(), [true, true]);
    relay.restore();
    tokio::time::sleep(Duration::from_millis(300)).await;
    run(replicas, 1).await;
    assert_eq!(*events.lock().unwrap(), [true, true, false, false]);
}

#[tokio::test]
async fn a_key_that_is_not_a_budget_is_replaced_not_an_error() {
    redis_addr().await;
    let a = budgets(&redis_url(), &prefix("not-a-budget")).await;
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);
    let mut redis = inspector().await;
    let () = redis
        .set_ex(a.key_name(key), "something else", 30)
        .await
        .unwrap();
    let answer = a.admit(key, ASK).await.expect("a budget again");
    assert_eq!(answer.decision(), Decision::Go);
    assert!(a.is_available());
    let kind: String = redis::cmd("TYPE")
        .arg(a.key_name(key))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
}

#[tokio::test]
async fn a_429_after_the_reset_holds_a_moment_probes_one_at_a_time_and_learns_the_lag() {
    redis_addr().await;
    let a = budgets(&redis_url(), &prefix("stale")).await;
    let (origin, connection) = (origin(), ConnectionId::new("acme"));
    let key = BudgetKey::new(Some(&origin), &connection);
    let name = a.key_name(key);
    a.observe(key, &window(5, 0, Duration::from_millis(200)));
    observed(&name).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The reset has passed, yet the server says the old window is still spent.
    a.observe(
        key,
        &Seen {
            limit: Some(5),
            remaining: Some(0),
            reset: Some(SeenReset::Ago(Duration::from_millis(50))),
            precision: Duration::from_millis(50),
            retry_after: None,
            limited: true,
        },
    );
    let mut redis = inspector().await;
    eventually(Duration::from_secs(2), "the 429 reaches Redis", || {
        let mut redis = redis.clone();
        let name = name.clone();
        async move {
            redis
                .hget::<_, _, Option<u64>>(&name, "stl")
                .await
                .ok()
                .flatten()
                == Some(1)
        }
    })
    .await;
    let _: redis::RedisResult<()> = redis.ping().await;
    match a.admit(key, ASK).await.unwrap().decision() {
        Decision::Hold {
            wait,
            reason: HoldReason::Spent,
        } => {
            assert!(wait <= Duration::from_millis(100), "{wait:?}");
            tokio::time::sleep(wait + Duration::from_millis(10)).await;
        }
        other => panic!("after a late 429, {other:?}"),
    }
    // One request probes; the next waits for it.
    assert_eq!(a.admit(key, ASK).await.unwrap().decision(), Decision::Go);
    assert!(matches!(
        a.admit(key, ASK).await.unwrap().decision(),
        Decision::Hold { .. }
    ));
    // The new window's first answer: the server turned this much after its reset, and
    // later resets are taken that much later.
    a.observe(key, &window(5, 4, Duration::from_secs(2)));
    eventually(
        Duration::from_secs(2),
        "the new window reaches Redis",
        || {
            let mut redis = redis.clone();
            let name = name.clone();
            async move {
                redis
                    .hget::<_, _, Option<u64>>(&name, "lag")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            }
        },
    )
    .await;
    let lag: u64 = redis.hget(&name, "lag").await.unwrap();
    // The old window reset 200 ms in; the new one was first seen some 370 ms in.
    assert!((100..1000).contains(&lag), "lag {lag} ms");
    tokio::time::sleep(Duration::from_millis(110)).await;
    let known = *a.admit(key, ASK).await.unwrap().known_window().unwrap();
    let reset = known.reset.unwrap();
    // 2 s from the observation, 110 ms ago, plus the lag (50 ms of slack).
    assert!(
        reset + Duration::from_millis(110 + 50) >= Duration::from_millis(2000 + lag),
        "{known:?}, lag {lag} ms"
    );
}
