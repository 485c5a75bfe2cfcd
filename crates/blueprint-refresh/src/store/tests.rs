use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint_core::{AccessToken, ConnectionId};

use super::*;

/// A fresh database path under the system temp dir, removed (with its WAL files) on drop.
pub(crate) struct TempDb(pub(crate) PathBuf);

impl TempDb {
    pub(crate) fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "blueprint-refresh-unit-{name}-{}-{n}.db",
            std::process::id()
        ));
        TempDb(path)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn record(access: &str) -> TokenRecord {
    let mut record = TokenRecord::new(AccessToken::new(access).unwrap(), at(1_700_000_000))
        .with_refresh_token("refresh-secret-1")
        .with_expires_at(at(1_700_003_600));
    record.scopes = vec!["read".into(), "write".into()];
    record.last_error = Some("the token endpoint failed: HTTP 503".into());
    record.status = TokenStatus::RefreshFailing;
    record.lease = Some(Lease {
        holder: "abc".into(),
        until: at(1_700_000_060),
    });
    record
}

fn key(connection: &str) -> StoreKey {
    StoreKey::new("intercom", ConnectionId::new(connection))
}

fn assert_same(a: &TokenRecord, b: &TokenRecord) {
    assert_eq!(a.access_token, b.access_token);
    assert_eq!(
        a.refresh_token.as_ref().map(Secret::expose),
        b.refresh_token.as_ref().map(Secret::expose)
    );
    assert_eq!(a.expires_at, b.expires_at);
    assert_eq!(a.token_type, b.token_type);
    assert_eq!(a.scopes, b.scopes);
    assert_eq!(a.status, b.status);
    assert_eq!(a.last_error, b.last_error);
    assert_eq!(a.updated_at, b.updated_at);
    assert_eq!(a.lease, b.lease);
}

/// The contract every store keeps: round trips, versions, compare-and-swap, delete, list.
async fn round_trips(store: &dyn TokenStore) {
    let k = key("acme");
    assert!(store.get(&k).await.unwrap().is_none());

    // Insert-if-absent, then it is no longer absent.
    let first = record("access-1");
    assert_eq!(
        store
            .compare_and_swap(&k, None, first.clone())
            .await
            .unwrap(),
        Swap::Swapped(1)
    );
    assert_eq!(
        store
            .compare_and_swap(&k, None, first.clone())
            .await
            .unwrap(),
        Swap::Conflict
    );
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.version, 1);
    assert_same(&got.record, &first);

    // A swap from a stale version writes nothing.
    let mut second = TokenRecord::new(AccessToken::new("access-2").unwrap(), at(1_700_000_100));
    assert_eq!(
        store
            .compare_and_swap(&k, Some(7), second.clone())
            .await
            .unwrap(),
        Swap::Conflict
    );
    assert_same(&store.get(&k).await.unwrap().unwrap().record, &first);

    // From the current version it writes, and the version moves on; no refresh token and
    // no expiry round-trip as absent.
    assert_eq!(
        store
            .compare_and_swap(&k, Some(1), second.clone())
            .await
            .unwrap(),
        Swap::Swapped(2)
    );
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_same(&got.record, &second);

    second.status = TokenStatus::NeedsReauthorization;
    assert_eq!(store.put(&k, second.clone()).await.unwrap(), 3);
    assert_same(&store.get(&k).await.unwrap().unwrap().record, &second);

    store.put(&key("beta"), record("b")).await.unwrap();
    store
        .put(
            &StoreKey::new("other", ConnectionId::new("zeta")),
            record("z"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.list("intercom").await.unwrap(),
        vec![ConnectionId::new("acme"), ConnectionId::new("beta")]
    );

    assert!(store.delete(&k).await.unwrap());
    assert!(!store.delete(&k).await.unwrap());
    assert!(store.get(&k).await.unwrap().is_none());
    assert_eq!(
        store.list("intercom").await.unwrap(),
        vec![ConnectionId::new("beta")]
    );
}

#[tokio::test]
async fn memory_store_round_trips() {
    round_trips(&MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_store_round_trips_and_survives_reopening() {
    let db = TempDb::new("round-trip");
    let store = SqliteStore::open(&db.0).await.unwrap();
    round_trips(&store).await;
    store.close().await;

    // A second open of the same file sees the data and does not re-run the migration.
    let again = SqliteStore::open(&db.0).await.unwrap();
    assert_eq!(
        again.list("intercom").await.unwrap(),
        vec![ConnectionId::new("beta")]
    );
    again.close().await;
}

async fn raw_columns(store: &SqliteStore, k: &StoreKey) -> (String, Option<String>) {
    sqlx::query_as(
        "SELECT access_token, refresh_token FROM blueprint_tokens WHERE integration = ?1 AND connection_id = ?2",
    )
    .bind(k.integration())
    .bind(k.connection().as_str())
    .fetch_one(&store.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn sqlite_encryption_round_trips_and_hides_the_tokens_at_rest() {
    let db = TempDb::new("encrypted");
    let (key_a, text) = EncryptionKey::generate();
    let store = SqliteStore::open(&db.0)
        .await
        .unwrap()
        .with_encryption(key_a);
    let k = key("acme");
    let rec = record("access-secret-AAA");
    store.put(&k, rec.clone()).await.unwrap();

    let (access, refresh) = raw_columns(&store, &k).await;
    assert!(
        !access.contains("access-secret-AAA"),
        "access token stored in clear"
    );
    let refresh = refresh.unwrap();
    assert!(
        !refresh.contains("refresh-secret-1"),
        "refresh token stored in clear"
    );

    // The same key, given again as base64, reads it back.
    let reopened = SqliteStore::open(&db.0)
        .await
        .unwrap()
        .with_encryption(EncryptionKey::from_base64(text.expose()).unwrap());
    assert_same(&reopened.get(&k).await.unwrap().unwrap().record, &rec);
    store.close().await;
    reopened.close().await;
}

#[tokio::test]
async fn sqlite_wrong_or_missing_key_is_a_clear_error() {
    let db = TempDb::new("wrong-key");
    let (key_a, _) = EncryptionKey::generate();
    let (key_b, _) = EncryptionKey::generate();
    let store = SqliteStore::open(&db.0)
        .await
        .unwrap()
        .with_encryption(key_a);
    let k = key("acme");
    store.put(&k, record("access-secret-BBB")).await.unwrap();

    let wrong = SqliteStore::open(&db.0)
        .await
        .unwrap()
        .with_encryption(key_b);
    let err = wrong.get(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("does not match") && text.contains("intercom/acme"),
        "{text}"
    );
    assert!(!text.contains("BBB") && !format!("{err:?}").contains("BBB"));

    let keyless = SqliteStore::open(&db.0).await.unwrap();
    let err = keyless.get(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingKey { .. }), "{err:?}");
    assert!(err.to_string().contains("no encryption key"), "{err}");

    // A row copied onto another connection does not decrypt there (the key is bound).
    sqlx::query(
        "INSERT INTO blueprint_tokens SELECT integration, 'thief', access_token, refresh_token, encrypted, \
         expires_at_ms, token_type, scopes, status, last_error, lease_holder, lease_until_ms, updated_at_ms, version \
         FROM blueprint_tokens WHERE connection_id = 'acme'",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    assert!(matches!(
        store.get(&key("thief")).await.unwrap_err(),
        StoreError::Decrypt { .. }
    ));
    for s in [store, wrong, keyless] {
        s.close().await;
    }
}

#[tokio::test]
async fn rows_written_before_encryption_stay_readable() {
    let db = TempDb::new("plain-then-key");
    let plain = SqliteStore::open(&db.0).await.unwrap();
    let k = key("acme");
    let rec = record("access-plain");
    plain.put(&k, rec.clone()).await.unwrap();
    let (key_a, _) = EncryptionKey::generate();
    let keyed = SqliteStore::open(&db.0)
        .await
        .unwrap()
        .with_encryption(key_a);
    assert_same(&keyed.get(&k).await.unwrap().unwrap().record, &rec);
    plain.close().await;
    keyed.close().await;
}
