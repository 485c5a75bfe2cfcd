//! What is particular to `SqliteStore` (opening, URLs, migrations). The contract every
//! store keeps is tested once for all in `tests/store_conformance.rs`.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use blueprint_core::{AccessToken, ConnectionId};
use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "blueprint-refresh-unit-{name}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn db(&self) -> PathBuf {
        self.0.join("tokens.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(connection: &str) -> StoreKey {
    StoreKey::new("intercom", ConnectionId::new(connection))
}

fn record(access: &str) -> TokenRecord {
    TokenRecord::new(AccessToken::new(access).unwrap(), SystemTime::now())
}

#[tokio::test]
async fn the_data_survives_reopening_the_file() {
    let dir = TempDir::new("reopen");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store.put(&key("beta"), record("b")).await.unwrap();
    store.close().await;

    // A second open of the same file sees the data and does not re-run the migrations.
    let again = SqliteStore::open(dir.db()).await.unwrap();
    assert_eq!(
        again.list("intercom").await.unwrap(),
        vec![ConnectionId::new("beta")]
    );
    again.close().await;
}

#[tokio::test]
async fn urls_are_read_as_sqlx_reads_them() {
    let dir = TempDir::new("urls");
    let path = dir.db();
    for url in [
        format!("sqlite://{}", path.display()),
        format!("sqlite:{}", path.display()),
        path.display().to_string(),
    ] {
        let store = SqliteStore::open_url(&url).await.unwrap();
        assert_eq!(store.path(), path, "{url}");
        store.put(&key("a"), record("t")).await.unwrap();
        store.close().await;
    }
    // Read-only: it opens an existing file, and refuses to write.
    let store = SqliteStore::open_url(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    assert!(store.get(&key("a")).await.unwrap().is_some());
    assert!(store.put(&key("b"), record("t")).await.is_err());
    store.close().await;

    let err = SqliteStore::open_url("sqlite://x.db?colour=blue")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Config(m) if m.contains("colour")),
        "{err:?}"
    );
    let err = SqliteStore::open_url("sqlite://").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Config(m) if m.contains("names no file")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_directory_is_one_clear_error_naming_it() {
    let dir = TempDir::new("missing-dir");
    let missing = dir.0.join("no").join("such");
    let err = SqliteStore::open_url(&format!("sqlite://{}/tokens.db", missing.display()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(
        text.contains(&format!(
            "the directory `{}` does not exist",
            missing.display()
        )),
        "{text}"
    );
    assert!(!text.contains("code: 14"), "{text}");
    assert!(!missing.exists(), "nothing was created");
}

/// Only the first migration: a file as the crate made it before the change log.
#[derive(Debug)]
struct FirstOnly;

impl MigrationSource<'static> for FirstOnly {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(vec![Migration::new(
                1,
                Cow::Borrowed("create tokens"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0001_create_tokens.sql")),
                false,
            )])
        })
    }
}

#[tokio::test]
async fn a_file_from_before_the_change_log_is_migrated_and_reports_changes() {
    let dir = TempDir::new("upgrade");
    let old = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", dir.db().display()))
        .await
        .unwrap();
    Migrator::new(FirstOnly)
        .await
        .unwrap()
        .run(&old)
        .await
        .unwrap();
    old.close().await;

    let store = SqliteStore::open(dir.db()).await.unwrap();
    let writer = SqliteStore::open(dir.db()).await.unwrap();
    let mut feed = store.changes().unwrap();
    writer.put(&key("acme"), record("t")).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(2), feed.recv()).await;
    assert_eq!(change.unwrap(), Some(Change::Key(key("acme"))));
    store.close().await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), feed.recv())
            .await
            .unwrap(),
        None,
        "a closed store's feed ends"
    );
}
