//! One suite, run against every [`TokenStore`]: `MemoryStore`, `SqliteStore` on a real file
//! in a temporary directory, and `PostgresStore` on the real PostgreSQL at 127.0.0.1:5432
//! (user `postgres`, trust authentication, database `test`; `BLUEPRINT_TEST_POSTGRES`
//! names another), each test in a schema of its own, dropped afterwards.
//!
//! `conformance!` instantiates each test once per store: `memory::cas_from_a_stale_version_conflicts`,
//! `sqlite::…`, `postgres::…`. If PostgreSQL cannot be reached, its tests fail at once and
//! say how to start it; they never hang and never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint_core::{AccessToken, ConnectionId};
use blueprint_refresh::{
    Change, ChangeFeed, EncryptionKey, Lease, MemoryStore, PostgresOptions, PostgresStore, Secret,
    SqliteStore, StoreError, StoreKey, Swap, TokenRecord, TokenStatus, TokenStore,
};

// ---------------------------------------------------------------------------------------
// What each store provides to the suite.

/// A fresh, empty store of one kind, and what the suite needs around it.
trait Harness: Sized + Send + Sync + 'static {
    type Store: TokenStore + Clone;

    /// Whether the store keeps tokens at rest (and so can encrypt them).
    const AT_REST: bool;
    /// How many unread changes make a feed fall behind for sure (more than it buffers, or
    /// than its log keeps).
    const FLOOD: usize;

    async fn new() -> Self;

    /// The store, without an encryption key.
    fn store(&self) -> &Self::Store;

    /// Another handle on the same data, as another process would open it, with `key`.
    async fn another(&self, key: Option<EncryptionKey>) -> Self::Store;

    /// The access and refresh token columns of `key` as the database holds them.
    async fn raw_tokens(&self, key: &StoreKey) -> (String, Option<String>);

    /// Copies the row of `from`, as stored, onto connection `to` (same integration).
    async fn copy_row(&self, from: &StoreKey, to: &str);
}

struct Memory(Arc<MemoryStore>);

impl Harness for Memory {
    type Store = Arc<MemoryStore>;
    const AT_REST: bool = false;
    const FLOOD: usize = 4 * blueprint_refresh::ChangeBroadcast::DEFAULT_CAPACITY;

    async fn new() -> Self {
        Memory(Arc::new(MemoryStore::new()))
    }
    fn store(&self) -> &Self::Store {
        &self.0
    }
    async fn another(&self, _key: Option<EncryptionKey>) -> Self::Store {
        Arc::clone(&self.0)
    }
    async fn raw_tokens(&self, _key: &StoreKey) -> (String, Option<String>) {
        unreachable!("a memory store keeps nothing at rest")
    }
    async fn copy_row(&self, _from: &StoreKey, _to: &str) {
        unreachable!("a memory store keeps nothing at rest")
    }
}

struct Sqlite {
    dir: TempDir,
    store: SqliteStore,
}

impl Sqlite {
    fn path(&self) -> PathBuf {
        self.dir.0.join("tokens.db")
    }

    async fn raw(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&format!("sqlite://{}", self.path().display()))
            .await
            .unwrap()
    }
}

impl Harness for Sqlite {
    type Store = SqliteStore;
    const AT_REST: bool = true;
    /// The change log keeps the last 1000 changes.
    const FLOOD: usize = 1100;

    async fn new() -> Self {
        let dir = TempDir::new("conformance");
        let store = SqliteStore::open(dir.0.join("tokens.db")).await.unwrap();
        Sqlite { dir, store }
    }
    fn store(&self) -> &Self::Store {
        &self.store
    }
    async fn another(&self, key: Option<EncryptionKey>) -> Self::Store {
        let store = SqliteStore::open_url(&format!("sqlite://{}", self.path().display()))
            .await
            .unwrap();
        match key {
            Some(key) => store.with_encryption(key),
            None => store,
        }
    }
    async fn raw_tokens(&self, key: &StoreKey) -> (String, Option<String>) {
        let pool = self.raw().await;
        let row = sqlx::query_as(
            "SELECT access_token, refresh_token FROM blueprint_tokens \
             WHERE integration = ?1 AND connection_id = ?2",
        )
        .bind(key.integration())
        .bind(key.connection().as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        row
    }
    async fn copy_row(&self, from: &StoreKey, to: &str) {
        let pool = self.raw().await;
        sqlx::query(
            "INSERT INTO blueprint_tokens SELECT integration, ?3, access_token, refresh_token, \
             encrypted, expires_at_ms, token_type, scopes, status, last_error, lease_holder, \
             lease_until_ms, updated_at_ms, version, params FROM blueprint_tokens \
             WHERE integration = ?1 AND connection_id = ?2",
        )
        .bind(from.integration())
        .bind(from.connection().as_str())
        .bind(to)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
}

/// The shared server of the tests.
fn postgres_url() -> String {
    std::env::var("BLUEPRINT_TEST_POSTGRES")
        .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/test"))
}

struct Postgres {
    schema: String,
    store: PostgresStore,
}

impl Postgres {
    fn options(&self) -> PostgresOptions {
        PostgresOptions::from_url(&postgres_url())
            .unwrap()
            .schema(&self.schema)
            .max_connections(8)
    }

    async fn raw(&self) -> sqlx::PgPool {
        use std::str::FromStr as _;
        let options = sqlx::postgres::PgConnectOptions::from_str(&postgres_url())
            .unwrap()
            .options([("search_path", self.schema.as_str())]);
        sqlx::PgPool::connect_with(options).await.unwrap()
    }
}

/// Opens a store in a new schema of the shared server, or fails saying how to start it.
async fn postgres_store(schema: &str) -> PostgresStore {
    let url = postgres_url();
    match PostgresOptions::from_url(&url)
        .unwrap()
        .schema(schema)
        .max_connections(8)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
    {
        Ok(store) => store,
        Err(error) => panic!(
            "the PostgreSQL tests need a server at {url} (user postgres, trust \
             authentication, database `test`): {error}\n\
             Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
             and create the database with `createdb -h 127.0.0.1 -U postgres test` (what .ci/run does), \
             or set BLUEPRINT_TEST_POSTGRES to another server's URL."
        ),
    }
}

impl Harness for Postgres {
    type Store = PostgresStore;
    const AT_REST: bool = true;
    const FLOOD: usize = 4 * blueprint_refresh::ChangeBroadcast::DEFAULT_CAPACITY;

    async fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let schema = format!(
            "bp_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            UNIX_EPOCH.elapsed().unwrap().subsec_nanos()
        );
        let store = postgres_store(&schema).await;
        Postgres { schema, store }
    }
    fn store(&self) -> &Self::Store {
        &self.store
    }
    async fn another(&self, key: Option<EncryptionKey>) -> Self::Store {
        let options = match key {
            Some(key) => self.options().encryption(key),
            None => self.options(),
        };
        options.connect().await.unwrap()
    }
    async fn raw_tokens(&self, key: &StoreKey) -> (String, Option<String>) {
        let pool = self.raw().await;
        let row = sqlx::query_as(
            "SELECT access_token, refresh_token FROM blueprint_tokens \
             WHERE integration = $1 AND connection_id = $2",
        )
        .bind(key.integration())
        .bind(key.connection().as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        row
    }
    async fn copy_row(&self, from: &StoreKey, to: &str) {
        let pool = self.raw().await;
        sqlx::query(
            "INSERT INTO blueprint_tokens SELECT integration, $3, access_token, refresh_token, \
             encrypted, expires_at_ms, token_type, scopes, status, last_error, lease_holder, \
             lease_until_ms, updated_at_ms, version, params FROM blueprint_tokens \
             WHERE integration = $1 AND connection_id = $2",
        )
        .bind(from.integration())
        .bind(from.connection().as_str())
        .bind(to)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
}

impl Drop for Postgres {
    /// Drops the test's schema, on a thread of its own since `Drop` cannot wait here.
    fn drop(&mut self) {
        let schema = std::mem::take(&mut self.schema);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&postgres_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "blueprint-refresh-{name}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            UNIX_EPOCH.elapsed().unwrap().subsec_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures.

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn key(connection: &str) -> StoreKey {
    StoreKey::new("intercom", ConnectionId::new(connection))
}

/// A record with every field set.
fn full(access: &str) -> TokenRecord {
    let mut record = TokenRecord::new(AccessToken::new(access).unwrap(), at(1_700_000_000))
        .with_refresh_token("refresh-secret-1")
        .with_expires_at(at(1_700_003_600));
    record.scopes = vec!["read".into(), "write".into()];
    record.token_type = "Bearer".into();
    record.last_error = Some("the token endpoint failed: HTTP 503".into());
    record.status = TokenStatus::RefreshFailing;
    record.lease = Some(Lease {
        holder: "holder-abc".into(),
        until: at(1_700_000_060),
    });
    record.params = [
        ("subdomain".to_owned(), "acme".to_owned()),
        (
            "instance_url".to_owned(),
            "https://na1.example.com \"quoted\" é".to_owned(),
        ),
    ]
    .into();
    record
}

/// A record with nothing optional.
fn bare(access: &str) -> TokenRecord {
    TokenRecord::new(AccessToken::new(access).unwrap(), at(1_700_000_100))
}

#[track_caller]
fn assert_same(got: &TokenRecord, want: &TokenRecord) {
    assert_eq!(got.access_token, want.access_token, "access token");
    assert_eq!(
        got.refresh_token.as_ref().map(Secret::expose),
        want.refresh_token.as_ref().map(Secret::expose),
        "refresh token"
    );
    assert_eq!(got.expires_at, want.expires_at, "expires_at");
    assert_eq!(got.token_type, want.token_type, "token_type");
    assert_eq!(got.scopes, want.scopes, "scopes");
    assert_eq!(got.status, want.status, "status");
    assert_eq!(got.last_error, want.last_error, "last_error");
    assert_eq!(got.updated_at, want.updated_at, "updated_at");
    assert_eq!(got.lease, want.lease, "lease");
    assert_eq!(got.params, want.params, "params");
}

/// Waits (at most 2 s, real time: the change crosses connections) until `feed` reports
/// `want`, skipping other changes; what it skipped.
async fn expect_change(feed: &mut ChangeFeed, want: &StoreKey) -> Vec<Change> {
    let mut skipped = Vec::new();
    let wait = async {
        loop {
            match feed.recv().await {
                Some(Change::Key(k)) if &k == want => return,
                Some(other) => skipped.push(other),
                None => panic!("the feed ended before reporting {want}"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .is_err()
    {
        panic!("the feed did not report {want} within 2 s (it reported {skipped:?})");
    }
    skipped
}

// ---------------------------------------------------------------------------------------
// The contract.

async fn a_record_round_trips_every_field<H: Harness>() {
    let h = H::new().await;
    let store = h.store();
    let k = key("acme");
    assert!(store.get(&k).await.unwrap().is_none(), "absent at first");

    let record = full("access-1");
    assert_eq!(store.put(&k, record.clone()).await.unwrap(), 1);
    let got = store.get(&k).await.unwrap().expect("written");
    assert_eq!(got.version, 1);
    assert_same(&got.record, &record);

    // No refresh token, no expiry, no lease, no error: they come back absent.
    let record = bare("access-2");
    assert_eq!(store.put(&k, record.clone()).await.unwrap(), 2);
    assert_same(&store.get(&k).await.unwrap().unwrap().record, &record);

    // Another handle (another process) reads the same.
    let other = h.another(None).await;
    assert_same(&other.get(&k).await.unwrap().unwrap().record, &record);
}

async fn versions_increase_with_every_write<H: Harness>() {
    let h = H::new().await;
    let store = h.store();
    let k = key("acme");
    assert_eq!(store.put(&k, bare("a")).await.unwrap(), 1);
    assert_eq!(store.put(&k, bare("b")).await.unwrap(), 2);
    assert_eq!(
        store
            .compare_and_swap(&k, Some(2), bare("c"))
            .await
            .unwrap(),
        Swap::Swapped(3)
    );
    assert_eq!(store.put(&k, bare("d")).await.unwrap(), 4);
    assert_eq!(store.get(&k).await.unwrap().unwrap().version, 4);
    // Versions are per record.
    assert_eq!(store.put(&key("beta"), bare("x")).await.unwrap(), 1);
}

async fn cas_on_an_absent_record_inserts_once<H: Harness>() {
    let h = H::new().await;
    let store = h.store();
    let k = key("acme");
    let first = full("first");
    assert_eq!(
        store
            .compare_and_swap(&k, None, first.clone())
            .await
            .unwrap(),
        Swap::Swapped(1)
    );
    assert_eq!(
        store
            .compare_and_swap(&k, None, bare("second"))
            .await
            .unwrap(),
        Swap::Conflict,
        "insert-if-absent when present"
    );
    assert_same(&store.get(&k).await.unwrap().unwrap().record, &first);
    // Expecting a version of a record that does not exist is a conflict too.
    assert_eq!(
        store
            .compare_and_swap(&key("ghost"), Some(1), bare("x"))
            .await
            .unwrap(),
        Swap::Conflict
    );
    assert!(store.get(&key("ghost")).await.unwrap().is_none());
}

async fn cas_from_a_stale_version_conflicts<H: Harness>() {
    let h = H::new().await;
    let store = h.store();
    let k = key("acme");
    let current = full("current");
    store.put(&k, bare("old")).await.unwrap();
    store.put(&k, current.clone()).await.unwrap();
    for stale in [Some(1), Some(3), Some(u64::MAX), None] {
        assert_eq!(
            store
                .compare_and_swap(&k, stale, bare("lost"))
                .await
                .unwrap(),
            Swap::Conflict,
            "expected {stale:?}, stored 2"
        );
    }
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.version, 2, "a conflict writes nothing");
    assert_same(&got.record, &current);
    assert_eq!(
        store
            .compare_and_swap(&k, Some(2), bare("won"))
            .await
            .unwrap(),
        Swap::Swapped(3)
    );
}

async fn delete_says_whether_there_was_a_record<H: Harness>() {
    let h = H::new().await;
    let store = h.store();
    let k = key("acme");
    assert!(!store.delete(&k).await.unwrap(), "nothing to delete");
    store.put(&k, bare("a")).await.unwrap();
    store.put(&key("keep"), bare("b")).await.unwrap();
    assert!(store.delete(&k).await.unwrap());
    assert!(store.get(&k).await.unwrap().is_none());
    assert!(!store.delete(&k).await.unwrap(), "already deleted");
    assert!(
        store.get(&key("keep")).await.unwrap().is_some(),
        "others stay"
    );
    // A record written again after a delete starts over.
    assert_eq!(store.put(&k, bare("c")).await.unwrap(), 1);
}

async fn list_is_sorted_and_per_integration<H: Harness>() {
    let h = H::new().await;
    let store = h.store();
    for id in ["zeta", "Alpha", "beta", "alpha", "a b", "ä"] {
        store.put(&key(id), bare("t")).await.unwrap();
    }
    store
        .put(
            &StoreKey::new("other", ConnectionId::new("gamma")),
            bare("t"),
        )
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list("intercom")
        .await
        .unwrap()
        .iter()
        .map(|id| id.as_str().to_owned())
        .collect();
    assert_eq!(listed, ["Alpha", "a b", "alpha", "beta", "zeta", "ä"]);
    assert_eq!(
        store.list("other").await.unwrap(),
        [ConnectionId::new("gamma")]
    );
    assert!(store.list("nobody").await.unwrap().is_empty());
}

async fn leases_round_trip_and_fence_by_version<H: Harness>() {
    let h = H::new().await;
    let store = h.store();
    let other = h.another(None).await;
    let k = key("acme");
    let version = store.put(&k, bare("a")).await.unwrap();

    // Process A takes the lease by compare-and-swap.
    let mut leased = bare("a");
    leased.lease = Some(Lease {
        holder: "process-a".into(),
        until: at(1_700_000_030),
    });
    let Swap::Swapped(held) = store
        .compare_and_swap(&k, Some(version), leased.clone())
        .await
        .unwrap()
    else {
        panic!("taking a free lease conflicted");
    };
    // Process B sees it, and cannot take it from the version it read before.
    let seen = other.get(&k).await.unwrap().unwrap();
    assert_eq!(seen.record.lease, leased.lease);
    let mut stolen = bare("a");
    stolen.lease = Some(Lease {
        holder: "process-b".into(),
        until: at(1_700_000_031),
    });
    assert_eq!(
        other
            .compare_and_swap(&k, Some(version), stolen)
            .await
            .unwrap(),
        Swap::Conflict
    );
    // A finishes: new token, lease released.
    let done = bare("a-2");
    assert_eq!(
        store
            .compare_and_swap(&k, Some(held), done.clone())
            .await
            .unwrap(),
        Swap::Swapped(held + 1)
    );
    let got = other.get(&k).await.unwrap().unwrap();
    assert_eq!(got.record.lease, None);
    assert_same(&got.record, &done);
}

async fn concurrent_cas_has_exactly_one_winner<H: Harness>() {
    let h = H::new().await;
    let stores = [h.store().clone(), h.another(None).await];
    let k = key("race");
    const TASKS: usize = 24;

    // Insert-if-absent from many tasks at once.
    let inserts = (0..TASKS).map(|n| {
        let store = stores[n % 2].clone();
        let k = k.clone();
        tokio::spawn(async move {
            store
                .compare_and_swap(&k, None, bare(&format!("insert-{n}")))
                .await
                .unwrap()
        })
    });
    let outcomes: Vec<Swap> = futures_util::future::join_all(inserts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let won: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Swap::Swapped(1)))
        .collect();
    assert_eq!(won.len(), 1, "inserts: {outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == Swap::Conflict).count(),
        TASKS - 1
    );

    // Then an update from the same version, from many tasks at once.
    let updates = (0..TASKS).map(|n| {
        let store = stores[n % 2].clone();
        let k = k.clone();
        tokio::spawn(async move {
            let swap = store
                .compare_and_swap(&k, Some(1), bare(&format!("update-{n}")))
                .await
                .unwrap();
            (n, swap)
        })
    });
    let outcomes: Vec<(usize, Swap)> = futures_util::future::join_all(updates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<usize> = outcomes
        .iter()
        .filter(|(_, o)| *o == Swap::Swapped(2))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(winners.len(), 1, "updates: {outcomes:?}");
    let stored = h.store().get(&k).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(
        stored.record.access_token.secret(),
        format!("update-{}", winners[0]),
        "the stored record is the winner's"
    );
}

async fn the_feed_reports_another_handles_writes_and_deletes<H: Harness>() {
    let h = H::new().await;
    let writer = h.another(None).await;
    let mut feed = h.store().changes().expect("this store has a change feed");
    let k = key("acme");

    writer.put(&k, bare("a")).await.unwrap();
    expect_change(&mut feed, &k).await;
    let version = writer.get(&k).await.unwrap().unwrap().version;
    writer
        .compare_and_swap(&k, Some(version), bare("b"))
        .await
        .unwrap();
    expect_change(&mut feed, &k).await;
    assert!(writer.delete(&k).await.unwrap());
    expect_change(&mut feed, &k).await;

    // An insert-if-absent, from the feed's own handle, is reported too.
    let other = key("beta");
    h.store()
        .compare_and_swap(&other, None, bare("c"))
        .await
        .unwrap();
    expect_change(&mut feed, &other).await;

    // Every feed gets every change.
    let mut second = h.store().changes().expect("a second feed");
    writer.put(&k, bare("d")).await.unwrap();
    expect_change(&mut second, &k).await;
    expect_change(&mut feed, &k).await;
}

async fn a_feed_nobody_reads_stays_bounded_and_resyncs<H: Harness>() {
    let h = H::new().await;
    let writer = h.another(None).await;
    let mut feed = h.store().changes().expect("this store has a change feed");
    let k = key("flood");
    for n in 0..H::FLOOD {
        writer.put(&k, bare(&format!("t{n}"))).await.unwrap();
    }
    // What the feed kept while nobody read: it says that changes were lost, and it kept
    // far fewer than were made.
    let mut kept = Vec::new();
    while let Ok(Some(change)) = tokio::time::timeout(Duration::from_millis(600), feed.recv()).await
    {
        kept.push(change);
        assert!(
            kept.len() < H::FLOOD / 2,
            "the feed kept {} of {} unread changes: it buffers without bound",
            kept.len(),
            H::FLOOD
        );
    }
    assert!(
        kept.contains(&Change::Resync),
        "{} unread changes did not make the feed resync (it kept {} of them)",
        H::FLOOD,
        kept.len()
    );
    // And it goes on reporting.
    let after = key("after-the-flood");
    writer.put(&after, bare("x")).await.unwrap();
    expect_change(&mut feed, &after).await;
}

// ---------------------------------------------------------------------------------------
// Encryption at rest (stores that keep tokens at rest).

async fn encrypted_tokens_never_reach_the_database_in_clear<H: Harness>() {
    assert!(H::AT_REST);
    let h = H::new().await;
    let (cipher, text) = EncryptionKey::generate();
    let store = h.another(Some(cipher)).await;
    let k = key("acme");
    let mut record = full("access-secret-AAA");
    record.refresh_token = Some(Secret::new("refresh-secret-BBB"));
    store.put(&k, record.clone()).await.unwrap();

    let (access, refresh) = h.raw_tokens(&k).await;
    assert!(
        !access.contains("access-secret-AAA"),
        "access token in clear"
    );
    let refresh = refresh.expect("a refresh token column");
    assert!(
        !refresh.contains("refresh-secret-BBB"),
        "refresh token in clear"
    );

    // The same key, given again as base64 to another handle, reads it back.
    let reader = h
        .another(Some(EncryptionKey::from_base64(text.expose()).unwrap()))
        .await;
    assert_same(&reader.get(&k).await.unwrap().unwrap().record, &record);
    let check = reader.check_encryption().await.unwrap();
    assert_eq!((check.encrypted, check.plaintext), (1, 0));
}

async fn a_wrong_or_missing_key_is_a_typed_error_without_secrets<H: Harness>() {
    let h = H::new().await;
    let (right, _) = EncryptionKey::generate();
    let (wrong, _) = EncryptionKey::generate();
    let store = h.another(Some(right)).await;
    let k = key("acme");
    store.put(&k, full("access-secret-CCC")).await.unwrap();

    let with_wrong = h.another(Some(wrong)).await;
    let err = with_wrong.get(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err:?}");
    assert!(err.is_key_problem());
    let text = err.to_string();
    assert!(
        text.contains("does not match") && text.contains("intercom/acme"),
        "{text}"
    );
    assert!(!text.contains("CCC") && !format!("{err:?}").contains("CCC"));
    let err = with_wrong.check_encryption().await.unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err:?}");

    let keyless = h.store();
    let err = keyless.get(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingKey { .. }), "{err:?}");
    assert!(err.to_string().contains("no encryption key"), "{err}");
    let err = keyless.check_encryption().await.unwrap_err();
    assert!(matches!(err, StoreError::MissingKey { .. }), "{err:?}");

    // A row copied onto another connection does not decrypt there: the key is bound.
    h.copy_row(&k, "thief").await;
    assert!(matches!(
        store.get(&key("thief")).await.unwrap_err(),
        StoreError::Decrypt { .. }
    ));
}

async fn rows_written_before_encryption_stay_readable<H: Harness>() {
    let h = H::new().await;
    let k = key("acme");
    let record = full("access-plain");
    h.store().put(&k, record.clone()).await.unwrap();
    assert_eq!(h.store().check_encryption().await.unwrap().plaintext, 1);

    let (cipher, _) = EncryptionKey::generate();
    let keyed = h.another(Some(cipher)).await;
    assert_same(&keyed.get(&k).await.unwrap().unwrap().record, &record);
    let check = keyed.check_encryption().await.unwrap();
    assert_eq!((check.encrypted, check.plaintext), (0, 1));
    // Written again, it is encrypted.
    keyed.put(&k, record).await.unwrap();
    assert!(!h.raw_tokens(&k).await.0.contains("access-plain"));
    let check = keyed.check_encryption().await.unwrap();
    assert_eq!((check.encrypted, check.plaintext), (1, 0));
}

/// A file written before connection parameters existed (migrations 1 and 2 only, a row
/// without the column) opens, is migrated, and its record reads as having none.
#[tokio::test]
async fn sqlite_rows_written_before_params_read_as_none() {
    let dir = TempDir::new("old-rows");
    let path = dir.0.join("tokens.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    for sql in [
        include_str!("../migrations/0001_create_tokens.sql"),
        include_str!("../migrations/0002_change_log.sql"),
    ] {
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO blueprint_tokens (integration, connection_id, access_token, token_type, \
         status, updated_at_ms, version) VALUES ('intercom', 'old', 'old-token', 'bearer', 'ok', 1, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let old = store.get(&key("old")).await.unwrap().expect("the old row");
    assert_eq!(old.record.access_token.secret(), "old-token");
    assert!(old.record.params.is_empty(), "{:?}", old.record.params);
    // And the migrated file takes parameters from now on.
    let record = full("new");
    store.put(&key("old"), record.clone()).await.unwrap();
    assert_same(
        &store.get(&key("old")).await.unwrap().unwrap().record,
        &record,
    );
}

// ---------------------------------------------------------------------------------------
// Every test, once per store.

macro_rules! conformance {
    ($store:ident: $harness:ident; $($test:ident),* $(,)?) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test::<super::$harness>().await;
                }
            )*
        }
    };
}

macro_rules! every_store {
    ($($store:ident: $harness:ident),* $(,)?) => {
        $(
            conformance!($store: $harness;
                a_record_round_trips_every_field,
                versions_increase_with_every_write,
                cas_on_an_absent_record_inserts_once,
                cas_from_a_stale_version_conflicts,
                delete_says_whether_there_was_a_record,
                list_is_sorted_and_per_integration,
                leases_round_trip_and_fence_by_version,
                concurrent_cas_has_exactly_one_winner,
                the_feed_reports_another_handles_writes_and_deletes,
                a_feed_nobody_reads_stays_bounded_and_resyncs,
            );
        )*
    };
}

every_store!(memory: Memory, sqlite: Sqlite, postgres: Postgres);

mod at_rest {
    macro_rules! at_rest {
        ($($store:ident: $harness:ident),* $(,)?) => {
            $(
                conformance!($store: $harness;
                    encrypted_tokens_never_reach_the_database_in_clear,
                    a_wrong_or_missing_key_is_a_typed_error_without_secrets,
                    rows_written_before_encryption_stay_readable,
                );
            )*
        };
    }
    use super::*;
    at_rest!(sqlite: Sqlite, postgres: Postgres);
}
