//! The OAuth2 token source against a wiremock token endpoint.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blueprint_core::{ConnectionId, TokenErrorKind, TokenSource};
use blueprint_refresh::{MemoryStore, SqliteStore, TokenRecord, TokenStatus, TokenStore};
use serde_json::json;
use tokio::sync::Barrier;
use wiremock::{MockServer, ResponseTemplate};

use crate::common::*;

fn conn() -> ConnectionId {
    ConnectionId::new("acme")
}

#[tokio::test]
async fn a_fresh_cached_token_is_handed_out_ready_without_calling_the_endpoint() {
    let server = MockServer::start().await;
    let store = memory_with("acme", valid("a-1", "rt-1", SystemTime::now())).await;
    let source = source(&server, store);
    // The first call loads the store; after that the token is at hand.
    assert_eq!(source.token(&conn()).await.unwrap(), token("a-1"));
    let mut again = source.token(&conn());
    let ready = again
        .take_ready()
        .expect("a cached token must be ready at once");
    assert_eq!(ready.unwrap(), token("a-1"));
    assert_eq!(token_calls(&server).await, 0);
}

#[tokio::test]
async fn an_unknown_connection_is_not_found() {
    let server = MockServer::start().await;
    let source = source(&server, Arc::new(MemoryStore::new()));
    let err = source.token(&conn()).await.unwrap_err();
    assert_eq!(err.kind(), TokenErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_with_an_expired_token_make_one_refresh() {
    let server = MockServer::start().await;
    mount_refresh(&server, "rt-1", granted("a-2", Some("rt-2"), Some(3600)), 1).await;
    let store = memory_with("acme", expired("a-1", "rt-1", SystemTime::now())).await;
    let source = source(&server, store);

    let barrier = Arc::new(Barrier::new(1000));
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let source = source.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                source.token(&conn()).await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), token("a-2"));
    }
    assert_eq!(
        token_calls(&server).await,
        1,
        "one refresh for 1,000 callers"
    );
    server.verify().await;
}

#[tokio::test]
async fn a_rotated_refresh_token_replaces_the_old_and_a_missing_one_keeps_it() {
    let server = MockServer::start().await;
    mount_refresh(&server, "rt-1", granted("a-2", Some("rt-2"), Some(3600)), 1).await;
    mount_refresh(&server, "rt-2", granted("a-3", None, Some(3600)), 1).await;
    let store: Arc<dyn TokenStore> =
        memory_with("acme", expired("a-1", "rt-1", SystemTime::now())).await;
    let source = source(&server, Arc::clone(&store));

    assert_eq!(source.token(&conn()).await.unwrap(), token("a-2"));
    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(
        stored.refresh_token.unwrap().expose(),
        "rt-2",
        "rotation kept"
    );
    assert_eq!(stored.status, TokenStatus::Ok);
    assert!(stored.lease.is_none(), "the lease is released");
    let expires = stored.expires_at.unwrap();
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    assert!(expires <= in_an_hour && expires + Duration::from_secs(60) > in_an_hour);

    // The server refuses a-2: the next refresh uses rt-2, and its answer has no refresh
    // token, so rt-2 stays.
    source.invalidate(&conn(), &token("a-2"));
    assert_eq!(source.token(&conn()).await.unwrap(), token("a-3"));
    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(
        stored.refresh_token.unwrap().expose(),
        "rt-2",
        "old refresh token kept"
    );
    assert_eq!(stored.access_token, token("a-3"));
    server.verify().await;
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_needs_reauthorization_and_is_never_retried() {
    let server = MockServer::start().await;
    let refusal = ResponseTemplate::new(400).set_body_json(json!({
        "error": "invalid_grant",
        "error_description": "refresh token rt-1 was revoked"
    }));
    mount_refresh(&server, "rt-1", refusal, 1).await;
    let store: Arc<dyn TokenStore> =
        memory_with("acme", expired("a-1", "rt-1", SystemTime::now())).await;
    let source = source(&server, Arc::clone(&store));

    let err = source.token(&conn()).await.unwrap_err();
    assert_eq!(err.kind(), TokenErrorKind::NeedsReauthorization);
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    assert!(
        !format!("{err} {err:?}").contains("rt-1"),
        "the refresh token leaked: {err:?}"
    );

    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(stored.status, TokenStatus::NeedsReauthorization);
    assert!(stored.last_error.unwrap().contains("invalid_grant"));

    // Neither this source, later, nor another one on the same store tries again.
    for _ in 0..3 {
        assert!(
            source
                .token(&conn())
                .await
                .unwrap_err()
                .needs_reauthorization()
        );
    }
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(
        source
            .token(&conn())
            .await
            .unwrap_err()
            .needs_reauthorization()
    );
    let other = crate::common::source(&server, Arc::clone(&store));
    assert!(
        other
            .token(&conn())
            .await
            .unwrap_err()
            .needs_reauthorization()
    );
    assert_eq!(token_calls(&server).await, 1);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_start_a_cooldown_that_fails_fast() {
    let server = MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/token"))
        .respond_with(ResponseTemplate::new(503).set_body_string("<html>busy</html>"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    mount_refresh(&server, "rt-1", granted("a-2", Some("rt-2"), Some(3600)), 1).await;
    let store: Arc<dyn TokenStore> =
        memory_with("acme", expired("a-1", "rt-1", SystemTime::now())).await;
    let source = source(&server, Arc::clone(&store));

    let err = source.token(&conn()).await.unwrap_err();
    assert_eq!(err.kind(), TokenErrorKind::Unavailable, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(token_calls(&server).await, 1);
    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(stored.status, TokenStatus::RefreshFailing);
    assert!(stored.lease.is_none());

    // During the cooldown, calls fail fast and say when to come back.
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..50 {
        let mut fast = source.token(&conn());
        let err = fast.take_ready().expect("fails fast").unwrap_err();
        assert_eq!(err.kind(), TokenErrorKind::Unavailable);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(20)));
    }
    assert_eq!(token_calls(&server).await, 1, "no call during the cooldown");

    // After it, one more try (still 503), then a new cooldown; after that one, success.
    tokio::time::advance(Duration::from_secs(21)).await;
    assert!(source.token(&conn()).await.is_err());
    assert_eq!(token_calls(&server).await, 2);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(source.token(&conn()).await.unwrap(), token("a-2"));
    assert_eq!(token_calls(&server).await, 3);
    assert_eq!(
        store
            .get(&key("acme"))
            .await
            .unwrap()
            .unwrap()
            .record
            .status,
        TokenStatus::Ok
    );
}

#[tokio::test]
async fn a_token_inside_the_margin_is_refreshed_in_the_background_while_still_handed_out() {
    let server = MockServer::start().await;
    mount_refresh(&server, "rt-1", granted("a-2", Some("rt-2"), Some(3600)), 1).await;
    let source = source(&server, Arc::new(MemoryStore::new()));
    // Issued an hour ago, expires in 30 s: inside the 60 s margin, still valid.
    let record = TokenRecord::new(token("a-1"), SystemTime::now() - Duration::from_secs(3600))
        .with_refresh_token("rt-1")
        .with_expires_at(SystemTime::now() + Duration::from_secs(30));
    source.put_credentials(&conn(), record).await.unwrap();

    let mut first = source.token(&conn());
    assert_eq!(
        first.take_ready().expect("not waited for").unwrap(),
        token("a-1")
    );
    // Callers keep getting the valid token until the refresh lands, and start no other.
    let landed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let current = source
                .token(&conn())
                .take_ready()
                .expect("never waits")
                .unwrap();
            if current == token("a-2") {
                return;
            }
            assert_eq!(current, token("a-1"));
            tokio::task::yield_now().await;
        }
    })
    .await;
    let seen_new = landed.is_ok();
    assert!(seen_new, "the background refresh never landed");
    assert_eq!(token_calls(&server).await, 1);
}

#[tokio::test(start_paused = true)]
async fn tokens_without_expiry_or_refresh_token_are_never_refreshed() {
    let server = MockServer::start().await;
    let store: Arc<dyn TokenStore> = memory_with(
        "acme",
        TokenRecord::new(token("intercom-token"), SystemTime::now()),
    )
    .await;
    let source = source(&server, Arc::clone(&store));
    assert_eq!(
        source.token(&conn()).await.unwrap(),
        token("intercom-token")
    );
    tokio::time::advance(Duration::from_secs(10 * 365 * 24 * 3600)).await;
    let mut later = source.token(&conn());
    assert_eq!(
        later.take_ready().unwrap().unwrap(),
        token("intercom-token")
    );

    // Refused by the server: nothing to refresh with, so re-authorization.
    source.invalidate(&conn(), &token("intercom-token"));
    let err = source.token(&conn()).await.unwrap_err();
    assert!(err.needs_reauthorization(), "{err}");
    assert_eq!(
        store
            .get(&key("acme"))
            .await
            .unwrap()
            .unwrap()
            .record
            .status,
        TokenStatus::NeedsReauthorization
    );
    assert_eq!(token_calls(&server).await, 0);
}

#[tokio::test]
async fn invalidating_a_token_that_is_no_longer_current_does_nothing() {
    let server = MockServer::start().await;
    mount_refresh(&server, "rt-1", granted("a-2", Some("rt-2"), Some(3600)), 1).await;
    let store = memory_with("acme", valid("a-1", "rt-1", SystemTime::now())).await;
    let source = source(&server, store);
    assert_eq!(source.token(&conn()).await.unwrap(), token("a-1"));

    // A burst of 401s for a-1: one refresh.
    for _ in 0..20 {
        source.invalidate(&conn(), &token("a-1"));
    }
    assert_eq!(source.token(&conn()).await.unwrap(), token("a-2"));
    // Late 401s for a-1 do not touch a-2.
    source.invalidate(&conn(), &token("a-1"));
    let mut now = source.token(&conn());
    assert_eq!(
        now.take_ready().expect("still cached").unwrap(),
        token("a-2")
    );
    assert_eq!(token_calls(&server).await, 1);
    server.verify().await;
}

#[tokio::test]
async fn a_new_authorization_in_the_store_is_noticed_after_the_recheck() {
    let server = MockServer::start().await;
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let source =
        blueprint_refresh::OAuth2TokenSource::builder_shared(provider(&server), Arc::clone(&store))
            .integration("test")
            .http_client(http())
            .recheck(Duration::ZERO)
            .build();
    assert_eq!(
        source.token(&conn()).await.unwrap_err().kind(),
        TokenErrorKind::NotFound
    );
    // Another process completes the authorization.
    store
        .put(&key("acme"), valid("a-9", "rt-9", SystemTime::now()))
        .await
        .unwrap();
    assert_eq!(source.token(&conn()).await.unwrap(), token("a-9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_on_one_sqlite_file_make_one_refresh() {
    let server = MockServer::start().await;
    mount_refresh(&server, "rt-1", granted("a-2", Some("rt-2"), Some(3600)), 1).await;
    let db = TempDb::new("two-sources");
    let first = SqliteStore::open(&db.0).await.unwrap();
    first
        .put(&key("acme"), expired("a-1", "rt-1", SystemTime::now()))
        .await
        .unwrap();
    let second = SqliteStore::open(&db.0).await.unwrap();
    // Two sources that share nothing but the file, as two processes would.
    let a = source(&server, Arc::new(first.clone()));
    let b = source(&server, Arc::new(second.clone()));
    let (ta, tb) = tokio::join!(a.token(&conn()), b.token(&conn()));
    assert_eq!(ta.unwrap(), token("a-2"));
    assert_eq!(tb.unwrap(), token("a-2"));
    assert_eq!(token_calls(&server).await, 1);
    let stored = second.get(&key("acme")).await.unwrap().unwrap();
    assert_eq!(stored.record.refresh_token.unwrap().expose(), "rt-2");
    first.close().await;
    second.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_token_that_lives_seconds_is_refreshed_once_at_half_its_life_not_on_every_call() {
    let server = MockServer::start().await;
    // The provider's tokens live 20 s, far less than the 60 s margin.
    mount_refresh(&server, "rt-1", granted("a-2", Some("rt-2"), Some(20)), 1).await;
    let source = source(&server, Arc::new(MemoryStore::new()));
    let issued = source.clock().now();
    let record = TokenRecord::new(token("a-1"), issued)
        .with_refresh_token("rt-1")
        .with_expires_at(issued + Duration::from_secs(20));
    source.put_credentials(&conn(), record).await.unwrap();

    // For the first half of its life the token is handed out and nothing is refreshed.
    for _ in 0..9 {
        let now = source.token(&conn()).take_ready().expect("ready").unwrap();
        assert_eq!(now, token("a-1"));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    tokio::task::yield_now().await;
    assert_eq!(token_calls(&server).await, 0, "refreshed on every call");

    // Past half its life: one background refresh, and the new token is used.
    tokio::time::advance(Duration::from_millis(1500)).await;
    let landed = async {
        loop {
            let current = source.token(&conn()).take_ready().expect("ready").unwrap();
            if current == token("a-2") {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), landed)
        .await
        .expect("the refresh never landed");
    assert_eq!(token_calls(&server).await, 1);
}

#[tokio::test]
async fn can_refresh_says_whether_a_refresh_could_give_another_token() {
    let server = MockServer::start().await;
    let store = memory_with(
        "intercom-like",
        TokenRecord::new(token("forever"), SystemTime::now()),
    )
    .await;
    store
        .put(&key("oauth"), valid("a-1", "rt-1", SystemTime::now()))
        .await
        .unwrap();
    let source = source(&server, store);
    let forever = ConnectionId::new("intercom-like");
    let oauth = ConnectionId::new("oauth");
    // Not read yet: it might.
    assert!(source.can_refresh(&forever));
    source.token(&forever).await.unwrap();
    source.token(&oauth).await.unwrap();
    assert!(!source.can_refresh(&forever), "no refresh token, no expiry");
    assert!(source.can_refresh(&oauth));
}

#[tokio::test]
async fn a_flood_of_unknown_connection_ids_leaves_the_cache_bounded() {
    let server = MockServer::start().await;
    let store = memory_with("known", valid("k-1", "rt-1", SystemTime::now())).await;
    let source = blueprint_refresh::OAuth2TokenSource::builder_shared(provider(&server), store)
        .integration("test")
        .http_client(http())
        .max_connections(64)
        .build();
    let known = ConnectionId::new("known");
    assert_eq!(source.token(&known).await.unwrap(), token("k-1"));
    for n in 0..5_000 {
        let unknown = ConnectionId::new(format!("nobody-{n}"));
        let err = source.token(&unknown).await.unwrap_err();
        assert_eq!(err.kind(), TokenErrorKind::NotFound);
        assert!(
            source.connections_held() <= 64,
            "{} held",
            source.connections_held()
        );
        if n % 500 == 0 {
            // The connection in use keeps its token through the flood.
            let mut again = source.token(&known);
            assert_eq!(again.take_ready().expect("cached").unwrap(), token("k-1"));
        }
    }
    assert!(source.connections_held() <= 64);
}
