//! A stand-in for Intercom's rate limiter on loopback: `limit` requests per window per
//! token, windows aligned on the wall clock, Intercom's `X-RateLimit-*` headers (the reset
//! in epoch seconds) on every answer and its 429 body past the limit. It counts what it
//! answered, per window.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// What one window saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: u64,
    pub limited: u64,
}

impl Counts {
    pub fn sent(&self) -> u64 {
        self.ok + self.limited
    }
}

#[derive(Default)]
struct Limiter {
    /// Per token: the current window and what it has counted.
    tokens: HashMap<String, (u64, u64)>,
    /// Per window: what was answered.
    windows: BTreeMap<u64, Counts>,
}

#[derive(Clone)]
struct Api {
    limit: u64,
    window_ms: u64,
    limiter: Arc<Mutex<Limiter>>,
}

/// The running stand-in.
#[derive(Clone)]
pub struct WindowedApi {
    pub addr: SocketAddr,
    api: Api,
}

fn now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

impl WindowedApi {
    /// `limit` per `window` (whole seconds, so that the reset is exact in epoch seconds).
    pub async fn start(limit: u64, window: Duration) -> WindowedApi {
        assert_eq!(window.subsec_nanos(), 0, "windows of whole seconds");
        let api = Api {
            limit,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            limiter: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().fallback(answer).with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        WindowedApi { addr, api }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The window running now.
    pub fn window_now(&self) -> u64 {
        now_ms() / self.api.window_ms
    }

    /// Waits until the next window starts; its number.
    pub async fn next_window(&self) -> u64 {
        let now = now_ms();
        let next = now / self.api.window_ms + 1;
        tokio::time::sleep(Duration::from_millis(next * self.api.window_ms - now)).await;
        next
    }

    /// Waits until window `window` starts.
    pub async fn until_window(&self, window: u64) {
        let at = window * self.api.window_ms;
        let now = now_ms();
        if at > now {
            tokio::time::sleep(Duration::from_millis(at - now)).await;
        }
    }

    /// What windows `from..to` answered, added up.
    pub fn counts(&self, from: u64, to: u64) -> Counts {
        let limiter = self
            .api
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        limiter
            .windows
            .range(from..to)
            .fold(Counts::default(), |sum, (_, c)| Counts {
                ok: sum.ok + c.ok,
                limited: sum.limited + c.limited,
            })
    }

    /// Each window of `from..to`.
    pub fn per_window(&self, from: u64, to: u64) -> Vec<Counts> {
        let limiter = self
            .api
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (from..to)
            .map(|w| limiter.windows.get(&w).copied().unwrap_or_default())
            .collect()
    }

    pub fn limit(&self) -> u64 {
        self.api.limit
    }
}

async fn answer(State(api): State<Api>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let now = now_ms();
    let window = now / api.window_ms;
    let (count, over) = {
        let mut limiter = api.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        let state = limiter.tokens.entry(token).or_insert((window, 0));
        if state.0 != window {
            *state = (window, 0);
        }
        state.1 += 1;
        let count = state.1;
        let over = count > api.limit;
        let counts = limiter.windows.entry(window).or_default();
        if over {
            counts.limited += 1;
        } else {
            counts.ok += 1;
        }
        (count, over)
    };
    let reset = (window + 1) * api.window_ms / 1000;
    let headers = [
        ("x-ratelimit-limit", api.limit.to_string()),
        (
            "x-ratelimit-remaining",
            api.limit.saturating_sub(count).to_string(),
        ),
        ("x-ratelimit-reset", reset.to_string()),
        ("content-type", String::from("application/json")),
    ];
    if over {
        let body = format!(
            "{{\"type\":\"error.list\",\"errors\":[{{\"code\":\"rate_limit_exceeded\",\"message\":\"Exceeded rate limit of {} in {}_seconds\"}}]}}",
            api.limit,
            api.window_ms / 1000
        );
        (StatusCode::TOO_MANY_REQUESTS, headers, body).into_response()
    } else {
        (
            StatusCode::OK,
            headers,
            String::from("{\"type\":\"list\",\"data\":[]}"),
        )
            .into_response()
    }
}
