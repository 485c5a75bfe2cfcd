//! What is particular to `PostgresStore`: clear errors at connect time, and an outage of
//! the server while the store is open. The outage runs on a private server of this test's
//! own (the shared one at 127.0.0.1:5432 is never stopped).

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
    let resynced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match feed.recv().await {
                Some(Change::Resync) => return,
                Some(_) => {}
                None => panic!("the feed ended"),
            }
        }
    })
    .await;
    assert!(
        resynced.is_ok(),
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
