//! What is particular to `PostgresStore`: clear errors at connect time, an outage of the
//! server while the store is open, and a change feed whose connection goes silent. Those
//! two run on a private server of their own (the shared one at 127.0.0.1:5432 is never
//! stopped).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/pg_support/mod.rs"]
mod pg_support;

use std::time::{Duration, SystemTime};

use blueprint_core::{AccessToken, ConnectionId};
use blueprint_refresh::{
    Change, ChangeFeed, PostgresOptions, PostgresStore, StoreError, StoreKey, TokenRecord,
    TokenStore,
};
use pg_support::PrivatePostgres;
use tokio::time::Instant;

fn key(connection: &str) -> StoreKey {
    StoreKey::new("intercom", ConnectionId::new(connection))
}

fn record(access: &str) -> TokenRecord {
    TokenRecord::new(AccessToken::new(access).unwrap(), SystemTime::now())
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_server_is_a_quick_error_naming_host_and_port_but_not_the_password() {
    let port = closed_port();
    let started = Instant::now();
    let err = PostgresStore::connect(&format!(
        "postgres://postgres:hunter2-SECRET@127.0.0.1:{port}/test"
    ))
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(
        !text.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_bad_url_or_schema_is_a_config_error_and_nothing_is_tried() {
    for url in [
        "postgres://u:hunter2@127.0.0.1:notaport/test",
        "mysql://u:hunter2@127.0.0.1/test",
        "not a url",
    ] {
        let err = PostgresStore::connect(url).await.unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
    let err = PostgresOptions::from_url("postgres://postgres@127.0.0.1:5432/test")
        .unwrap()
        .schema("robert'); DROP TABLE students;--")
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Config(m) if m.contains("schema")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_refused_login_says_what_the_server_said() {
    let server = PrivatePostgres::start("refused");
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/no_such_database",
        server.port()
    );
    let err = PostgresStore::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(
        text.contains("no_such_database") && text.contains("does not exist"),
        "{text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port())),
        "{text}"
    );
}

/// Waits (bounded) until `feed` reports `want`; what came before it.
async fn expect_change(feed: &mut ChangeFeed, want: &StoreKey, within: Duration) -> Vec<Change> {
    let mut before = Vec::new();
    let wait = async {
        loop {
            match feed.recv().await {
                Some(Change::Key(k)) if &k == want => return,
                Some(other) => before.push(other),
                None => panic!("the feed ended"),
            }
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .unwrap_or_else(|_| panic!("no change of {want} within {within:?}"));
    before
}

/// Waits (bounded) until `feed` reports a resync: whether it did within `within`.
async fn resync(feed: &mut ChangeFeed, within: Duration) -> bool {
    let wait = async {
        loop {
            match feed.recv().await {
                Some(Change::Resync) => return,
                Some(_) => {}
                None => panic!("the feed ended"),
            }
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_server_is_down_operations_fail_fast_and_after_it_they_work_again() {
    let server = PrivatePostgres::start("outage");
    let store = PostgresOptions::from_url(&server.url())
        .unwrap()
        .schema("outage")
        .acquire_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let writer = PostgresOptions::from_url(&server.url())
        .unwrap()
        .schema("outage")
        .change_feed(false)
        .connect()
        .await
        .unwrap();
    assert!(writer.changes().is_none(), "its feed is off");
    let mut feed = store.changes().unwrap();
    store.put(&key("before"), record("t1")).await.unwrap();
    expect_change(&mut feed, &key("before"), Duration::from_secs(2)).await;

    server.stop();
    for attempt in 0..3 {
        let started = Instant::now();
        let err = store.get(&key("before")).await.unwrap_err();
        let took = started.elapsed();
        eprintln!("down, attempt {attempt}: failed in {took:?}: {err}");
        assert!(err.is_unavailable(), "attempt {attempt}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("127.0.0.1:{}", server.port())),
            "{text}"
        );
        assert!(
            took < Duration::from_secs(3),
            "attempt {attempt} took {took:?}"
        );
    }
    assert!(store.put(&key("during"), record("t2")).await.is_err());

    server.start_again();
    // The same store, no restart: the pool reconnects (the first call after the restart
    // may still meet a connection that died with the old server).
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(10);
    let mut failures = 0;
    let back = loop {
        match store.get(&key("before")).await {
            Ok(found) => break found,
            Err(e) if Instant::now() < deadline => {
                failures += 1;
                assert!(e.is_unavailable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover within 10 s: {e}"),
        }
    };
    eprintln!(
        "back: the first read succeeded {:?} after the restart, after {failures} failures",
        restarted.elapsed()
    );
    assert_eq!(back.unwrap().record.access_token.secret(), "t1");
    store.put(&key("after"), record("t3")).await.unwrap();

    // The feed listens again (with its own backoff, up to 2 s between tries) and says it
    // may have missed changes...
    let resynced = resync(&mut feed, Duration::from_secs(10)).await;
    assert!(
        resynced,
        "no resync within 10 s after the feed's connection dropped"
    );
    // ...then reports new changes (from another handle).
    writer.put(&key("later"), record("t4")).await.unwrap();
    expect_change(&mut feed, &key("later"), Duration::from_secs(2)).await;
    store.close().await;
    writer.close().await;
}

#[tokio::test]
async fn list_sorts_by_bytes_whatever_the_database_collation() {
    // A database whose default collation sorts by language rules (ICU English), where
    // `ORDER BY` alone would put "a b" before "Alpha".
    let url = std::env::var("BLUEPRINT_TEST_POSTGRES")
        .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/test"));
    let admin = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
        panic!("this test needs PostgreSQL at {url} (see tests/store_conformance.rs): {e}")
    });
    let name = format!("bp_collation_{}", std::process::id());
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    sqlx::query(&format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C.UTF-8'"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let server = url.rsplit_once('/').map_or(url.as_str(), |(s, _)| s);
    let store = PostgresStore::connect(&format!("{server}/{name}"))
        .await
        .unwrap();
    for id in ["beta", "a b", "alpha", "Alpha"] {
        store.put(&key(id), record("t")).await.unwrap();
    }
    let listed: Vec<String> = store
        .list("intercom")
        .await
        .unwrap()
        .iter()
        .map(|id| id.as_str().to_owned())
        .collect();
    store.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    admin.close().await;
    assert_eq!(listed, ["Alpha", "a b", "alpha", "beta"]);
}

/// A TCP forwarder to `127.0.0.1:to` whose connections so far can be frozen: they stay open
/// and pass nothing on, as behind a network partition; connections made later are
/// forwarded.
struct Forwarder {
    port: u16,
    /// Connections numbered below this are frozen.
    frozen: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Forwarder {
    async fn start(to: u16) -> Forwarder {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(1));
        let (accepted_frozen, accepted_next) = (Arc::clone(&frozen), Arc::clone(&next));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = accepted_next.fetch_add(1, Ordering::SeqCst);
                let frozen = Arc::clone(&accepted_frozen);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                        return;
                    };
                    let (from_client, to_client) = client.into_split();
                    let (from_server, to_server) = server.into_split();
                    tokio::join!(
                        pipe(from_client, to_server, id, Arc::clone(&frozen)),
                        pipe(from_server, to_client, id, frozen),
                    );
                });
            }
        });
        Forwarder { port, frozen, next }
    }

    /// From now on, the connections made so far pass nothing.
    fn freeze(&self) {
        use std::sync::atomic::Ordering;
        self.frozen
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    frozen: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if id < frozen.load(std::sync::atomic::Ordering::SeqCst) {
            // Open and silent, for good.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_whose_connection_goes_silent_listens_again_and_resyncs() {
    // A server of this test's own, behind a forwarder that can cut the feed off without a
    // word: no reset, no close, as a partition or a dead failover target does.
    let server = PrivatePostgres::start("silent");
    let forwarder = Forwarder::start(server.port()).await;
    let url = |port: u16| format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let follower = PostgresOptions::from_url(&url(forwarder.port))
        .unwrap()
        .schema("feed_silent")
        .feed_check_every(Duration::from_millis(300))
        .operation_timeout(Duration::from_millis(700))
        .connect()
        .await
        .unwrap();
    let writer = PostgresOptions::from_url(&server.url())
        .unwrap()
        .schema("feed_silent")
        .change_feed(false)
        .connect()
        .await
        .unwrap();
    let mut feed = follower.changes().unwrap();
    writer.put(&key("before"), record("t1")).await.unwrap();
    expect_change(&mut feed, &key("before"), Duration::from_secs(5)).await;

    forwarder.freeze();
    // Its notification is lost in the silent connection.
    writer.put(&key("missed"), record("t2")).await.unwrap();
    let started = Instant::now();
    let resynced = resync(&mut feed, Duration::from_secs(10)).await;
    assert!(
        resynced,
        "no resync within 10 s after the feed's connection went silent"
    );
    eprintln!(
        "resynced {:?} after the connection went silent",
        started.elapsed()
    );
    // Listening again, on a new connection: new changes are heard.
    writer.put(&key("after"), record("t3")).await.unwrap();
    expect_change(&mut feed, &key("after"), Duration::from_secs(5)).await;
    writer.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), follower.close()).await;
}
