//! `GET /readyz`: whether this process should be sent calls. `GET /healthz` says only that
//! it serves (liveness); `/readyz` also asks the token store, and says no once shutdown has
//! begun.
//!
//! Neither needs the secret key, so anyone who reaches the proxy can ask: the store is
//! asked at most once a second ([`CHECK_REUSED_FOR`]), by one probe while the others wait
//! for its answer, and each probe waits at most [`STORE_CHECK_TIMEOUT`]. The answer says
//! why it is no, never the store's own error (it may name the database's host): that goes
//! to the log, once when the store stops answering and once when it answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use blueprint_refresh::{ConnectionId, StoreKey, TokenStore};
use http::StatusCode;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::app::ProxyState;
use crate::error::ApiError;

/// How long the store may take to answer a readiness check: 2 seconds.
pub(crate) const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the outcome of a store check is reused for the next probes: 1 second.
pub(crate) const CHECK_REUSED_FOR: Duration = Duration::from_secs(1);

/// What the store is asked: a record that cannot exist, since no connection id holds a
/// space. Any answer, "no such record" included, says the store answers.
fn probe_key() -> StoreKey {
    StoreKey::new("blueprint-proxy", ConnectionId::new("readiness check"))
}

/// Whether the proxy is shutting down, and the last store check.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    shutting_down: AtomicBool,
    /// When the store was last asked and whether it answered. Held while the store is
    /// asked, so that concurrent probes wait for that answer instead of asking again.
    last: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    /// From now on, not ready.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Whether `store` answers, asking it unless it was asked less than
    /// [`CHECK_REUSED_FOR`] ago.
    pub(crate) async fn store_answers(&self, store: &dyn TokenStore) -> bool {
        let mut last = self.last.lock().await;
        let now = Instant::now();
        if let Some((at, answered)) = *last {
            if now.saturating_duration_since(at) < CHECK_REUSED_FOR {
                return answered;
            }
        }
        let key = probe_key();
        let answered = match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.get(&key)).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                if last.is_none_or(|(_, answered)| answered) {
                    tracing::warn!(%error, "not ready: the token store fails");
                }
                false
            }
            Err(_) => {
                if last.is_none_or(|(_, answered)| answered) {
                    tracing::warn!(
                        timeout_secs = STORE_CHECK_TIMEOUT.as_secs(),
                        "not ready: the token store does not answer in time"
                    );
                }
                false
            }
        };
        if answered && last.is_some_and(|(_, answered)| !answered) {
            tracing::info!("ready again: the token store answers");
        }
        // Stamped when the answer came, so that a slow store is not asked again at once.
        *last = Some((Instant::now(), answered));
        answered
    }
}

/// `GET /readyz`: 200 `ready` while the token store answers; 503 `not_ready` once
/// shutdown has begun, or while the store fails or does not answer within
/// [`STORE_CHECK_TIMEOUT`].
pub(crate) async fn readyz(State(state): State<ProxyState>) -> Response {
    let readiness = state.readiness();
    if readiness.is_shutting_down() {
        return not_ready("the proxy is shutting down: send new calls elsewhere").into_response();
    }
    if !readiness.store_answers(&**state.store()).await {
        return not_ready(
            "the token store fails or does not answer (the proxy's log says why); ready \
             again once it answers",
        )
        .into_response();
    }
    "ready\n".into_response()
}

fn not_ready(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("not ready: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use blueprint_refresh::{MemoryStore, StoreError, StoreFuture, StoredToken, Swap, TokenRecord};
    use tower::ServiceExt as _;

    use super::*;

    /// How the store of [`Flaky`] answers `get`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Answers,
        /// Answers after half a second.
        Slow,
        Fails,
        Hangs,
    }

    /// A memory store whose `get` answers, fails or never answers, as told; counts its
    /// `get`s.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryStore,
        mode: std::sync::Mutex<Mode>,
        gets: AtomicUsize,
    }

    impl Flaky {
        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
    }

    impl TokenStore for Flaky {
        fn get<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredToken>> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Answers => self.inner.get(key),
                Mode::Slow => Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    self.inner.get(key).await
                }),
                Mode::Fails => Box::pin(async {
                    Err(StoreError::Unavailable {
                        target: String::from("db.internal:5432 (PostgreSQL)"),
                        operation: "reading a connection",
                        message: String::from("connection refused"),
                    })
                }),
                Mode::Hangs => Box::pin(std::future::pending()),
            }
        }
        fn put<'a>(&'a self, key: &'a StoreKey, record: TokenRecord) -> StoreFuture<'a, u64> {
            self.inner.put(key, record)
        }
        fn compare_and_swap<'a>(
            &'a self,
            key: &'a StoreKey,
            expected: Option<u64>,
            record: TokenRecord,
        ) -> StoreFuture<'a, Swap> {
            self.inner.compare_and_swap(key, expected, record)
        }
        fn delete<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, bool> {
            self.inner.delete(key)
        }
        fn list<'a>(&'a self, integration: &'a str) -> StoreFuture<'a, Vec<ConnectionId>> {
            self.inner.list(integration)
        }
    }

    fn proxy(store: Arc<Flaky>) -> crate::Proxy {
        let yaml = "integrations:\n  intercom:\n    extends_blueprint: intercom\n";
        let registry = crate::registry().unwrap();
        let integrations =
            blueprint::Integrations::parse(yaml, "test.yaml", &registry, |_| None).unwrap();
        let key = crate::SecretKey::new("a-key-of-16-chars-or-more").unwrap();
        crate::Proxy::builder(integrations, key)
            .store(store)
            .build()
            .unwrap()
    }

    /// Status, error code (if any) and body of `GET path`, without a key.
    async fn get(proxy: &crate::Proxy, path: &str) -> (u16, String, String) {
        let request = http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = proxy.router().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let code = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|json| json["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (status, code, text)
    }

    fn flaky() -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: MemoryStore::new(),
            mode: std::sync::Mutex::new(Mode::Answers),
            gets: AtomicUsize::new(0),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn not_ready_while_the_store_fails_or_hangs_and_ready_again_once_it_answers() {
        let store = flaky();
        let proxy = proxy(Arc::clone(&store));
        assert_eq!(
            get(&proxy, "/readyz").await,
            (200, String::new(), "ready\n".into())
        );

        store.set(Mode::Fails);
        tokio::time::advance(CHECK_REUSED_FOR).await;
        let (status, code, text) = get(&proxy, "/readyz").await;
        assert_eq!((status, code.as_str()), (503, "not_ready"), "{text}");
        assert!(
            text.contains("the token store fails or does not answer"),
            "{text}"
        );
        assert!(
            !text.contains("db.internal"),
            "the store's error is not told: {text}"
        );
        // Liveness is not readiness.
        assert_eq!(get(&proxy, "/healthz").await.0, 200);

        store.set(Mode::Hangs);
        tokio::time::advance(CHECK_REUSED_FOR).await;
        let started = Instant::now();
        let (status, code, _) = get(&proxy, "/readyz").await;
        assert_eq!((status, code.as_str()), (503, "not_ready"));
        assert_eq!(started.elapsed(), STORE_CHECK_TIMEOUT);

        store.set(Mode::Answers);
        tokio::time::advance(CHECK_REUSED_FOR).await;
        assert_eq!(get(&proxy, "/readyz").await.0, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_ask_the_store_at_most_once_a_second() {
        let store = flaky();
        store.set(Mode::Slow);
        let proxy = proxy(Arc::clone(&store));
        // 50 at once, while the store takes half a second: one asks, the others wait.
        let mut probes = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let proxy = proxy.clone();
            probes.spawn(async move { get(&proxy, "/readyz").await.0 });
        }
        while let Some(status) = probes.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        assert_eq!(store.gets.load(Ordering::SeqCst), 1);
        tokio::time::advance(CHECK_REUSED_FOR / 2).await;
        assert_eq!(get(&proxy, "/readyz").await.0, 200);
        assert_eq!(
            store.gets.load(Ordering::SeqCst),
            1,
            "reused within a second"
        );
        tokio::time::advance(CHECK_REUSED_FOR / 2).await;
        assert_eq!(get(&proxy, "/readyz").await.0, 200);
        assert_eq!(
            store.gets.load(Ordering::SeqCst),
            2,
            "asked again after a second"
        );
    }

    #[tokio::test]
    async fn not_ready_once_shutdown_has_begun() {
        let store = flaky();
        let proxy = proxy(Arc::clone(&store));
        assert_eq!(get(&proxy, "/readyz").await.0, 200);
        proxy.begin_shutdown();
        let (status, code, text) = get(&proxy, "/readyz").await;
        assert_eq!((status, code.as_str()), (503, "not_ready"), "{text}");
        assert!(text.contains("shutting down"), "{text}");
        assert_eq!(get(&proxy, "/healthz").await.0, 200);
    }
}
