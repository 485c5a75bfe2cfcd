//! Two real `blueprint-proxy` processes sharing one store (the real PostgreSQL at
//! 127.0.0.1:5432, each test in a database of its own, or one SQLite file), against a
//! fake provider whose token endpoint rotates refresh tokens strictly (an old refresh
//! token is refused, as a rotating provider does):
//!
//! - 2 × 100 concurrent calls with an expired token make exactly one token-endpoint call,
//!   and the new refresh token is in the store;
//! - a replica killed (SIGKILL) while it holds the refresh lease is replaced by the other
//!   once the lease lapses, and nothing is lost;
//! - an import or a delete through one replica reaches the other within 2 s, for a token
//!   that never expires (Intercom's); the time it took is printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blueprint_core::ConnectionId;
use blueprint_refresh::{SqliteStore, StoreKey, TokenStore};
use http::Method;
use proxy_support::postgres::TestDatabase;
use proxy_support::{FAST_RETRY, Process, Reply, TempDir, yaml};
use serde_json::json;
use tokio::time::Instant;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Retries as `FAST_RETRY`, with a deadline long enough to wait out a lapsing lease.
const PATIENT_RETRY: &str = "{ max_attempts: 2, base_delay_ms: 1, max_delay_ms: 5, deadline_ms: 20000, attempt_timeout_ms: 3000, max_server_wait_ms: 1000 }";

/// What the fake provider knows.
#[derive(Default)]
struct Provider {
    /// The one refresh token it accepts now.
    refresh: Mutex<String>,
    /// Access tokens it accepts on `/me`.
    accepted: Mutex<HashSet<String>>,
    /// Token-endpoint calls received (stalled ones included).
    token_calls: AtomicUsize,
    /// Calls to stall (answered after an hour, having changed nothing).
    stall: AtomicUsize,
    /// Refresh tokens presented that were not the current one.
    refused: AtomicUsize,
    issued: AtomicUsize,
}

struct TokenEndpoint(Arc<Provider>);

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let provider = &self.0;
        provider.token_calls.fetch_add(1, Ordering::SeqCst);
        if provider
            .stall
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // Never processed: the provider would answer long after anyone waits.
            return ResponseTemplate::new(503).set_delay(Duration::from_secs(3600));
        }
        // The tokens of these tests need no percent-decoding.
        let presented = String::from_utf8_lossy(&request.body)
            .split('&')
            .find_map(|pair| pair.strip_prefix("refresh_token="))
            .unwrap_or_default()
            .to_owned();
        let mut current = provider.refresh.lock().unwrap();
        if presented != *current {
            provider.refused.fetch_add(1, Ordering::SeqCst);
            return ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"}));
        }
        let n = provider.issued.fetch_add(1, Ordering::SeqCst) + 2;
        let access = format!("a-{n}");
        *current = format!("rt-{n}");
        provider.accepted.lock().unwrap().insert(access.clone());
        // Answered after a while, as a real endpoint across the internet: the other
        // replica's callers arrive while the refresh is in flight.
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": access,
                "refresh_token": *current,
                "token_type": "bearer",
                "expires_in": 3600,
            }))
            .set_delay(Duration::from_millis(300))
    }
}

struct Me(Arc<Provider>);

impl Respond for Me {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        if self.0.accepted.lock().unwrap().contains(&token) {
            ResponseTemplate::new(200).set_body_string(format!("me:{token}"))
        } else {
            ResponseTemplate::new(401).set_body_json(json!({"type": "error.list"}))
        }
    }
}

async fn fake_provider(refresh: &str, accepted: &[&str]) -> (MockServer, Arc<Provider>) {
    let provider = Arc::new(Provider::default());
    *provider.refresh.lock().unwrap() = refresh.to_owned();
    provider
        .accepted
        .lock()
        .unwrap()
        .extend(accepted.iter().map(|t| (*t).to_owned()));
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::path("/auth/eagle/token"))
        .respond_with(TokenEndpoint(Arc::clone(&provider)))
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::path("/me"))
        .respond_with(Me(Arc::clone(&provider)))
        .mount(&server)
        .await;
    (server, provider)
}

/// Where the two replicas keep connections.
enum Shared {
    /// A database of this test's own on the shared server, dropped afterwards.
    Postgres {
        db: TestDatabase,
    },
    Sqlite {
        dir: TempDir,
    },
}

impl Shared {
    async fn postgres() -> Shared {
        Shared::Postgres {
            db: TestDatabase::create("bp_replicas").await,
        }
    }

    fn sqlite() -> Shared {
        Shared::Sqlite {
            dir: TempDir::new("replicas-refresh"),
        }
    }

    fn url(&self) -> String {
        match self {
            Shared::Postgres { db } => db.url(),
            Shared::Sqlite { dir } => format!("sqlite://{}", dir.path("shared.db").display()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Shared::Postgres { .. } => "PostgreSQL",
            Shared::Sqlite { .. } => "SQLite",
        }
    }

    /// The stored refresh token of `intercom/acme` and whether a lease is on it.
    async fn stored(&self) -> (Option<String>, bool) {
        match self {
            Shared::Postgres { .. } => {
                let pool = sqlx::PgPool::connect(&self.url()).await.unwrap();
                let row: (Option<String>, Option<String>) = sqlx::query_as(
                    "SELECT refresh_token, lease_holder FROM blueprint_tokens \
                     WHERE integration = 'intercom' AND connection_id = 'acme'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                pool.close().await;
                (row.0, row.1.is_some())
            }
            Shared::Sqlite { dir } => {
                let store = SqliteStore::open(dir.path("shared.db")).await.unwrap();
                let key = StoreKey::new("intercom", ConnectionId::new("acme"));
                let record = store.get(&key).await.unwrap().unwrap().record;
                store.close().await;
                (
                    record.refresh_token.map(|t| t.expose().to_owned()),
                    record.lease.is_some(),
                )
            }
        }
    }
}

async fn two_replicas(
    shared: &Shared,
    api: &MockServer,
    retry: &str,
    args: &[&str],
) -> (TempDir, Process, Process) {
    let dir = TempDir::new("replicas-config");
    std::fs::write(dir.path("i.yaml"), yaml(&api.uri(), retry, "")).unwrap();
    let url = shared.url();
    let a = Process::start_full(&dir.path("i.yaml"), &url, "127.0.0.1:0", &[], args, None).await;
    let b = Process::start_full(&dir.path("i.yaml"), &url, "127.0.0.1:0", &[], args, None).await;
    (dir, a, b)
}

async fn me(proxy: &Process) -> Reply {
    proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await
}

async fn import_expired(proxy: &Process) {
    let imported = proxy
        .import(
            "intercom",
            "acme",
            json!({
                "access_token": "a-1",
                "refresh_token": "rt-1",
                "expires_at": "2020-01-01T00:00:00Z",
            }),
        )
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
}

/// 2 × 100 concurrent calls with an expired token: one token-endpoint call between them.
async fn one_refresh_between_two_replicas(shared: Shared) {
    let (api, provider) = fake_provider("rt-1", &[]).await;
    let (_dir, a, b) = two_replicas(&shared, &api, FAST_RETRY, &[]).await;
    import_expired(&a).await;

    let calls = (0..200).map(|n| {
        let proxy = if n % 2 == 0 { a.target } else { b.target };
        async move {
            proxy
                .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
                .await
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == 200 && r.text() == "me:a-2")
        .count();
    let odd: Vec<String> = replies
        .iter()
        .filter(|r| r.status != 200)
        .take(3)
        .map(|r| format!("{} {}", r.status, r.text()))
        .collect();
    assert_eq!(
        ok, 200,
        "not every call succeeded with the new token: {odd:?}"
    );
    assert_eq!(
        provider.token_calls.load(Ordering::SeqCst),
        1,
        "the replicas on {} called the token endpoint more than once",
        shared.kind()
    );
    assert_eq!(provider.refused.load(Ordering::SeqCst), 0);
    let (refresh, leased) = shared.stored().await;
    assert_eq!(
        refresh.as_deref(),
        Some("rt-2"),
        "the rotated refresh token"
    );
    assert!(!leased, "the lease is released");
    eprintln!(
        "{}: 200 concurrent calls through two replicas, 1 token-endpoint call",
        shared.kind()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgresql_make_one_refresh_for_200_concurrent_calls() {
    one_refresh_between_two_replicas(Shared::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_sqlite_file_make_one_refresh_for_200_concurrent_calls() {
    one_refresh_between_two_replicas(Shared::sqlite()).await;
}

/// Kill a replica while it holds the lease: the other refreshes once the lease lapses.
async fn a_killed_holder_is_replaced(shared: Shared) {
    let (api, provider) = fake_provider("rt-1", &[]).await;
    provider.stall.store(1, Ordering::SeqCst);
    let (_dir, mut a, b) =
        two_replicas(&shared, &api, PATIENT_RETRY, &["--refresh-lease", "3"]).await;
    import_expired(&a).await;

    // A takes the lease and calls the token endpoint, which stalls.
    let holder = a.target;
    let stalled = tokio::spawn(async move {
        holder
            .send(holder.proxy(Method::GET, "/me", "intercom", "acme"))
            .await
    });
    let arrived = async {
        while provider.token_calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), arrived)
        .await
        .expect("the first replica never called the token endpoint");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed = Instant::now();
    let _ = a.wait().await;
    stalled.abort();
    let (refresh, leased) = shared.stored().await;
    assert_eq!(refresh.as_deref(), Some("rt-1"));
    assert!(
        leased,
        "the killed replica's lease should still be in the store"
    );

    // B waits for the lease to lapse, then refreshes with the refresh token A never used.
    let calls = (0..20).map(|_| me(&b));
    let replies = futures_util::future::join_all(calls).await;
    let took = killed.elapsed();
    for reply in &replies {
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "me:a-2"),
            "{}",
            b.logs()
        );
    }
    assert_eq!(
        provider.token_calls.load(Ordering::SeqCst),
        2,
        "one stalled call, one by the replica that took over"
    );
    assert_eq!(provider.refused.load(Ordering::SeqCst), 0);
    let (refresh, leased) = shared.stored().await;
    assert_eq!(refresh.as_deref(), Some("rt-2"), "nothing lost");
    assert!(!leased);
    eprintln!(
        "{}: the surviving replica completed the refresh {took:?} after the holder was \
         killed (lease 3 s)",
        shared.kind()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_holding_the_lease_on_postgresql_is_replaced_after_it_lapses() {
    a_killed_holder_is_replaced(Shared::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_holding_the_lease_on_sqlite_is_replaced_after_it_lapses() {
    a_killed_holder_is_replaced(Shared::sqlite()).await;
}

/// Calls `proxy` until `done` holds for its answer; how long that took. Fails past 2 s.
async fn within_two_seconds(
    proxy: &Process,
    what: &str,
    done: impl Fn(&Reply) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let reply = me(proxy).await;
        if done(&reply) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: the other replica still answers {} {} after 2 s",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An import and a delete through one replica reach the other within 2 s.
async fn changes_reach_the_other_replica(shared: Shared) {
    let (api, _provider) = fake_provider("unused", &["tok-1", "tok-2"]).await;
    let (_dir, a, b) = two_replicas(&shared, &api, FAST_RETRY, &[]).await;
    // Intercom's tokens never expire and have no refresh token.
    let imported = a
        .import("intercom", "acme", json!({ "access_token": "tok-1" }))
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    assert_eq!(me(&b).await.text(), "me:tok-1");

    let imported = a
        .import("intercom", "acme", json!({ "access_token": "tok-2" }))
        .await;
    assert_eq!(imported.status, 200, "{}", imported.text());
    let import_took = within_two_seconds(&b, "an import", |r| r.text() == "me:tok-2").await;
    for _ in 0..20 {
        assert_eq!(me(&b).await.text(), "me:tok-2", "the old token came back");
    }

    let deleted = a
        .send(a.request(Method::DELETE, "/connections/intercom/acme"))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let delete_took = within_two_seconds(&b, "a delete", |r| {
        r.status == 404 && r.code() == "unknown_connection"
    })
    .await;
    for _ in 0..20 {
        assert_eq!(me(&b).await.status, 404, "the deleted token came back");
    }
    eprintln!(
        "{}: an import reached the other replica in {import_took:?}, a delete in {delete_took:?}",
        shared.kind()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_or_delete_on_postgresql_reaches_the_other_replica_within_two_seconds() {
    changes_reach_the_other_replica(Shared::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_or_delete_on_sqlite_reaches_the_other_replica_within_two_seconds() {
    changes_reach_the_other_replica(Shared::sqlite()).await;
}
