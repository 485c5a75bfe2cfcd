//! What holds when several token sources (replicas) share a store: the cache follows the
//! store's change feed, a lease of a dead holder is taken over once it lapses, a live one
//! is waited for, the token endpoint call is bounded below the lease, a 401 reads the
//! store before refreshing, and refreshed credentials the store failed to take are written
//! in the background. Time is paused wherever the peers allow it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use blueprint_core::{ConnectionId, TokenErrorKind, TokenSource};
use blueprint_refresh::{
    Change, ChangeBroadcast, ChangeFeed, HttpClient, Lease, MemoryStore, OAuth2TokenSource,
    PostgresOptions, StoreError, StoreFuture, StoreKey, StoredToken, Swap, TokenRecord,
    TokenStatus, TokenStore, TokioClock,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::common::*;

fn conn() -> ConnectionId {
    ConnectionId::new("acme")
}

/// A never-expiring token without a refresh token, as Intercom issues.
fn intercom(access: &str) -> TokenRecord {
    TokenRecord::new(token(access), SystemTime::now())
}

/// Polls `source` (letting the follower run) until its token for `acme` is `want`
/// (`None`: not found); how many polls that took. Time is paused: each poll is a
/// millisecond of tokio time.
async fn until_token(source: &OAuth2TokenSource, want: Option<&str>) -> usize {
    for polls in 0..2_000 {
        let now = source.token(&conn()).await;
        let matches = match (&now, want) {
            (Ok(t), Some(want)) => t.secret() == want,
            (Err(e), None) => e.kind() == TokenErrorKind::NotFound,
            _ => false,
        };
        if matches {
            return polls;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!(
        "the source never handed out {want:?}; last: {:?}",
        source.token(&conn()).await
    );
}

/// A store over a [`MemoryStore`] whose change feed the test drives, and whose
/// compare-and-swaps fail (as a PostgreSQL outage would) when told to.
#[derive(Debug)]
struct Driven {
    inner: MemoryStore,
    changes: Option<ChangeBroadcast>,
    /// Compare-and-swaps to let through before failing.
    cas_pass: AtomicUsize,
    /// Compare-and-swaps to fail after those.
    cas_fail: AtomicUsize,
    /// Reads to fail.
    get_fail: AtomicUsize,
}

impl Driven {
    fn new(feed: bool) -> Self {
        Driven {
            inner: MemoryStore::new(),
            changes: feed.then(ChangeBroadcast::default),
            cas_pass: AtomicUsize::new(usize::MAX),
            cas_fail: AtomicUsize::new(0),
            get_fail: AtomicUsize::new(0),
        }
    }

    fn down(operation: &'static str) -> StoreError {
        StoreError::Unavailable {
            target: String::from("test store"),
            operation,
            message: String::from("down for the test"),
        }
    }

    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl TokenStore for Driven {
    fn get<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredToken>> {
        if Self::take(&self.get_fail) {
            return Box::pin(async { Err(Self::down("reading credentials")) });
        }
        self.inner.get(key)
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
        if !Self::take(&self.cas_pass) && Self::take(&self.cas_fail) {
            return Box::pin(async { Err(Self::down("writing credentials")) });
        }
        self.inner.compare_and_swap(key, expected, record)
    }
    fn delete<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, bool> {
        self.inner.delete(key)
    }
    fn list<'a>(&'a self, integration: &'a str) -> StoreFuture<'a, Vec<ConnectionId>> {
        self.inner.list(integration)
    }
    fn changes(&self) -> Option<ChangeFeed> {
        self.changes.as_ref().map(ChangeBroadcast::subscribe)
    }
}

#[tokio::test(start_paused = true)]
async fn a_delete_or_import_by_another_process_is_seen_for_a_token_that_never_expires() {
    let server = MockServer::start().await;
    let store: Arc<dyn TokenStore> = memory_with("acme", intercom("tok-1")).await;
    let here = source(&server, Arc::clone(&store));
    assert_eq!(here.token(&conn()).await.unwrap(), token("tok-1"));
    assert!(here.follows_changes());

    // Another process imports a new token: this one hands it out, not the old.
    store.put(&key("acme"), intercom("tok-2")).await.unwrap();
    until_token(&here, Some("tok-2")).await;
    // Another process deletes the connection: this one stops sending its token.
    assert!(store.delete(&key("acme")).await.unwrap());
    until_token(&here, None).await;
    // And an import after that is seen at once, not after the not-found recheck.
    store.put(&key("acme"), intercom("tok-3")).await.unwrap();
    until_token(&here, Some("tok-3")).await;
    assert_eq!(token_calls(&server).await, 0);
}

#[tokio::test(start_paused = true)]
async fn without_following_the_feed_a_deleted_token_is_sent_on() {
    // The counterpart of the test above: what the follower fixes.
    let server = MockServer::start().await;
    let store: Arc<dyn TokenStore> = memory_with("acme", intercom("tok-1")).await;
    let here = OAuth2TokenSource::builder_shared(provider(&server), Arc::clone(&store))
        .integration("test")
        .http_client(http())
        .follow_changes(false)
        .build();
    assert_eq!(here.token(&conn()).await.unwrap(), token("tok-1"));
    assert!(!here.follows_changes());
    assert!(store.delete(&key("acme")).await.unwrap());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(here.token(&conn()).await.unwrap(), token("tok-1"));
}

#[tokio::test(start_paused = true)]
async fn a_resync_makes_every_cached_token_be_read_again() {
    let server = MockServer::start().await;
    let store = Arc::new(Driven::new(true));
    store
        .inner
        .put(&key("acme"), intercom("tok-1"))
        .await
        .unwrap();
    let here = source(&server, Arc::clone(&store) as Arc<dyn TokenStore>);
    assert_eq!(here.token(&conn()).await.unwrap(), token("tok-1"));
    // Changed while the feed was not tracking: nothing reported.
    store
        .inner
        .put(&key("acme"), intercom("tok-2"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(here.token(&conn()).await.unwrap(), token("tok-1"));
    // The feed is tracking again and says it may have missed changes.
    store.changes.as_ref().unwrap().send(Change::Resync);
    until_token(&here, Some("tok-2")).await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_of_a_dead_holder_is_taken_over_once_it_lapses() {
    let server = MockServer::start().await;
    mount_refresh(&server, "rt-1", granted("a-2", Some("rt-2"), Some(3600)), 1).await;
    let clock = TokioClock::new();
    let now = blueprint_refresh::Clock::now(&clock);
    let mut record = expired("a-1", "rt-1", now);
    record.lease = Some(Lease {
        holder: String::from("a-replica-that-died"),
        until: now + Duration::from_secs(10),
    });
    let store: Arc<dyn TokenStore> = memory_with("acme", record).await;
    let here = OAuth2TokenSource::builder_shared(provider(&server), Arc::clone(&store))
        .integration("test")
        .http_client(http())
        .clock(clock)
        .lease(Duration::from_secs(10), Duration::from_millis(100))
        .build();
    let started = tokio::time::Instant::now();
    assert_eq!(here.token(&conn()).await.unwrap(), token("a-2"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10),
        "took the lease after {waited:?}, before it lapsed"
    );
    assert_eq!(token_calls(&server).await, 1);
    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(stored.refresh_token.unwrap().expose(), "rt-2");
    assert!(stored.lease.is_none());
    server.verify().await;
}

/// A token endpoint that must not be called (`token_calls` counts what it got).
async fn endpoint_never_called() -> MockServer {
    let server = MockServer::start().await;
    mount_refresh(
        &server,
        "rt-1",
        granted("never", Some("never"), Some(3600)),
        0,
    )
    .await;
    server
}

/// An `acme` record whose token expired at `now` while "another-replica" holds its lease
/// for `left` more.
fn leased_record(now: SystemTime, left: Duration) -> TokenRecord {
    let mut record = expired("a-1", "rt-1", now);
    record.lease = Some(Lease {
        holder: String::from("another-replica"),
        until: now + left,
    });
    record
}

/// A token endpoint that must not be called, and a store whose `acme` token has expired
/// while "another-replica" holds its lease for `left` more; the holder's wall-clock time.
async fn leased_by_another(left: Duration) -> (MockServer, Arc<dyn TokenStore>, SystemTime) {
    let server = endpoint_never_called().await;
    let now = blueprint_refresh::Clock::now(&TokioClock::new());
    (
        server,
        memory_with("acme", leased_record(now, left)).await,
        now,
    )
}

/// The holder finishes `after` from now and writes what it got.
fn holder_finishes(store: &Arc<dyn TokenStore>, after: Duration, now: SystemTime) {
    let holder = Arc::clone(store);
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        holder
            .put(&key("acme"), valid("a-2", "rt-2", now))
            .await
            .unwrap();
    });
}

#[tokio::test(start_paused = true)]
async fn a_waiting_replica_takes_the_holders_token_from_the_store_without_calling() {
    let (server, store, now) = leased_by_another(Duration::from_secs(60)).await;
    let here = OAuth2TokenSource::builder_shared(provider(&server), Arc::clone(&store))
        .integration("test")
        .http_client(http())
        .clock(TokioClock::starting_at(now))
        .build();
    holder_finishes(&store, Duration::from_secs(3), now);
    assert_eq!(here.token(&conn()).await.unwrap(), token("a-2"));
    assert_eq!(token_calls(&server).await, 0);
    server.verify().await;
}

/// A replica whose wall clock runs a minute ahead of the holder's reads the holder's lease
/// as lapsed the moment it sees it: it still waits a whole lease of its own time, and takes
/// the holder's token from the store instead of refreshing a second time.
#[tokio::test(start_paused = true)]
async fn a_replica_whose_clock_runs_ahead_waits_for_a_lease_still_held() {
    let (server, store, now) = leased_by_another(Duration::from_secs(10)).await;
    let here = OAuth2TokenSource::builder_shared(provider(&server), Arc::clone(&store))
        .integration("test")
        .http_client(http())
        .clock(TokioClock::starting_at(now + Duration::from_secs(60)))
        .lease(Duration::from_secs(10), Duration::from_millis(100))
        .build();
    // The holder finishes after 4 s (its lease had 10 s to go).
    holder_finishes(&store, Duration::from_secs(4), now);
    let started = tokio::time::Instant::now();
    assert_eq!(here.token(&conn()).await.unwrap(), token("a-2"));
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(token_calls(&server).await, 0);
    server.verify().await;
}

/// A replica waiting for another's refresh reads the store when the change feed reports
/// the holder's write, not at its next poll: with a 10 s poll and the holder finishing
/// after 3 s, the new token is there at 3 s (paused time: exactly), not at 10 s.
#[tokio::test(start_paused = true)]
async fn a_waiting_replica_wakes_on_the_holders_write_not_at_its_next_poll() {
    let (server, store, now) = leased_by_another(Duration::from_secs(60)).await;
    let here = OAuth2TokenSource::builder_shared(provider(&server), Arc::clone(&store))
        .integration("test")
        .http_client(http())
        .clock(TokioClock::starting_at(now))
        .lease(Duration::from_secs(60), Duration::from_secs(10))
        .build();
    assert!(here.follows_changes());
    holder_finishes(&store, Duration::from_secs(3), now);
    let started = tokio::time::Instant::now();
    assert_eq!(here.token(&conn()).await.unwrap(), token("a-2"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "the waiting replica took the holder's token after {waited:?}"
    );
    assert_eq!(token_calls(&server).await, 0);
    server.verify().await;
}

/// The same on PostgreSQL, where the feed is `LISTEN`/`NOTIFY`: the holder's write wakes
/// the waiting replica long before its 10 s poll. Real time (the store is a real server):
/// the holder writes after 300 ms, and the token must be there within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_waiting_replica_wakes_on_the_holders_notify() {
    let url = std::env::var("BLUEPRINT_TEST_POSTGRES")
        .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/test"));
    let schema = format!("bp_wake_{}", std::process::id());
    let store = PostgresOptions::from_url(&url)
        .unwrap()
        .schema(schema.as_str())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("this test needs PostgreSQL at {url}: {e}"));
    let store: Arc<dyn TokenStore> = Arc::new(store);
    let server = endpoint_never_called().await;
    let record = leased_record(SystemTime::now(), Duration::from_secs(60));
    store.put(&key("acme"), record).await.unwrap();
    let here = OAuth2TokenSource::builder_shared(provider(&server), Arc::clone(&store))
        .integration("test")
        .http_client(http())
        .lease(Duration::from_secs(60), Duration::from_secs(10))
        .build();
    assert!(here.follows_changes());
    let holder = Arc::clone(&store);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder
            .put(&key("acme"), valid("a-2", "rt-2", SystemTime::now()))
            .await
            .unwrap();
    });
    let started = tokio::time::Instant::now();
    assert_eq!(here.token(&conn()).await.unwrap(), token("a-2"));
    let waited = started.elapsed();
    eprintln!("the waiting replica took the holder's token after {waited:?} (written at 300 ms)");
    assert!(
        waited < Duration::from_secs(5),
        "the waiting replica took the holder's token after {waited:?}"
    );
    assert_eq!(token_calls(&server).await, 0);
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_token_endpoint_call_is_bounded_by_three_quarters_of_the_lease() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(granted("a-2", Some("rt-2"), Some(3600)).set_delay(Duration::from_secs(3600)))
        .mount(&server)
        .await;
    let clock = TokioClock::new();
    let now = blueprint_refresh::Clock::now(&clock);
    let store: Arc<dyn TokenStore> = memory_with("acme", expired("a-1", "rt-1", now)).await;
    // The default client (30 s timeout) under an 8 s lease.
    let here = OAuth2TokenSource::builder_shared(provider(&server), Arc::clone(&store))
        .integration("test")
        .http_client(HttpClient::new())
        .clock(clock)
        .lease(Duration::from_secs(8), Duration::from_millis(100))
        .build();
    assert_eq!(
        blueprint_refresh::lease_call_bound(Duration::from_secs(8)),
        Duration::from_secs(6)
    );
    let started = tokio::time::Instant::now();
    let error = here.token(&conn()).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.kind(), TokenErrorKind::Unavailable, "{error}");
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(8),
        "the call was given up after {took:?} (tokio time), not within the 8 s lease"
    );
    // The holder gave up in time, and said so in the store: the lease is released.
    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert!(stored.lease.is_none(), "{stored:?}");
    assert_eq!(stored.status, TokenStatus::RefreshFailing);
}

#[tokio::test]
async fn on_a_401_the_store_is_read_before_refreshing() {
    let server = MockServer::start().await;
    mount_refresh(
        &server,
        "rt-1",
        granted("never", Some("never"), Some(3600)),
        0,
    )
    .await;
    let store: Arc<dyn TokenStore> = Arc::new(Driven::new(false));
    store
        .put(&key("acme"), valid("a-1", "rt-1", SystemTime::now()))
        .await
        .unwrap();
    let here = source(&server, Arc::clone(&store));
    assert!(!here.follows_changes(), "this store has no feed");
    assert_eq!(here.token(&conn()).await.unwrap(), token("a-1"));
    // Another replica rotated the credentials; the server then refuses a-1 here.
    store
        .put(&key("acme"), valid("a-2", "rt-2", SystemTime::now()))
        .await
        .unwrap();
    here.invalidate(&conn(), &token("a-1"));
    assert_eq!(here.token(&conn()).await.unwrap(), token("a-2"));
    assert_eq!(
        token_calls(&server).await,
        0,
        "refreshed instead of reading"
    );
    server.verify().await;
}

/// A source over `store` that has just refreshed "acme" (expired, rt-1 → rt-2) and served
/// the new token, the store failing to take it: its next `fails` writes after the lease
/// fail, the background write first tried again `store_retry` after the failure.
async fn unstored_after_refresh(
    server: &MockServer,
    store: &Arc<Driven>,
    fails: usize,
    store_retry: Duration,
) -> OAuth2TokenSource {
    mount_refresh(server, "rt-1", granted("a-2", Some("rt-2"), Some(3600)), 1).await;
    let clock = TokioClock::new();
    let now = blueprint_refresh::Clock::now(&clock);
    store
        .put(&key("acme"), expired("a-1", "rt-1", now))
        .await
        .unwrap();
    store.cas_pass.store(1, Ordering::SeqCst);
    store.cas_fail.store(fails, Ordering::SeqCst);
    let here = OAuth2TokenSource::builder_shared(provider(server), Arc::clone(store) as _)
        .integration("test")
        .http_client(http())
        .clock(clock)
        .store_retry(store_retry)
        .build();
    assert_eq!(here.unstored(), 0);
    assert_eq!(here.token(&conn()).await.unwrap(), token("a-2"));
    assert_eq!(here.unstored(), 1, "the failed write is not counted");
    here
}

#[tokio::test(start_paused = true)]
async fn refreshed_credentials_the_store_failed_to_take_are_written_in_the_background() {
    let server = MockServer::start().await;
    let store = Arc::new(Driven::new(false));
    // The lease is taken; then the store fails the next three writes, retried a second
    // after the first failure.
    let here = unstored_after_refresh(&server, &store, 3, Duration::from_secs(1)).await;
    // The new token was served, and the store still holds the old credentials.
    let stored = store.inner.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(stored.refresh_token.unwrap().expose(), "rt-1");
    // The write is retried in the background until the store takes it.
    let mut waited = Duration::ZERO;
    loop {
        let stored = store.inner.get(&key("acme")).await.unwrap().unwrap().record;
        if stored.refresh_token.as_ref().unwrap().expose() == "rt-2" {
            assert_eq!(stored.access_token, token("a-2"));
            assert_eq!(stored.status, TokenStatus::Ok);
            assert!(stored.lease.is_none());
            break;
        }
        assert!(
            waited < Duration::from_secs(120),
            "the rotated refresh token was never stored"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        waited += Duration::from_millis(500);
    }
    assert_eq!(store.cas_fail.load(Ordering::SeqCst), 0);
    assert_eq!(here.unstored(), 0, "a write that landed is still counted");
    assert_eq!(token_calls(&server).await, 1);
    server.verify().await;
}

#[tokio::test(start_paused = true)]
async fn a_flush_writes_what_the_background_holds_now_not_at_its_next_try() {
    let server = MockServer::start().await;
    let store = Arc::new(Driven::new(false));
    // The write after the refresh fails, and so does the first try of the flush.
    let here = unstored_after_refresh(&server, &store, 2, Duration::from_secs(600)).await;
    let started = tokio::time::Instant::now();
    let left = here.flush_unstored(Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(left.is_empty(), "still not stored: {left:?}");
    assert!(
        took < Duration::from_secs(1),
        "the flush waited {took:?} (tokio time), not just its retries 100 ms apart"
    );
    assert_eq!(here.unstored(), 0);
    let stored = store.inner.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(stored.refresh_token.unwrap().expose(), "rt-2");
    assert_eq!(stored.access_token, token("a-2"));
    assert_eq!(token_calls(&server).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_flush_that_the_store_does_not_answer_names_what_is_left_when_it_gives_up() {
    let server = MockServer::start().await;
    let store = Arc::new(Driven::new(false));
    let here = unstored_after_refresh(&server, &store, usize::MAX, Duration::from_secs(600)).await;
    let started = tokio::time::Instant::now();
    let left = here.flush_unstored(Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert_eq!(left, vec![key("acme")]);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "the flush gave up after {took:?}"
    );
    // It kept trying meanwhile, and the write goes on in the background.
    assert!(
        store.cas_fail.load(Ordering::SeqCst) < usize::MAX - 10,
        "the flush did not try the write again"
    );
    assert_eq!(here.unstored(), 1);
}

#[tokio::test]
async fn a_store_that_is_down_is_the_typed_source_of_the_token_error() {
    let server = MockServer::start().await;
    let store = Arc::new(Driven::new(false));
    store.get_fail.store(1, Ordering::SeqCst);
    let here = source(&server, Arc::clone(&store) as _);
    let error = here.token(&conn()).await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Unavailable);
    assert_eq!(
        error.retry_after(),
        Some(blueprint_refresh::DEFAULT_STORE_RETRY)
    );
    let source = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<StoreError>())
        .expect("the store's error is the source");
    assert!(source.is_unavailable(), "{source}");
}
