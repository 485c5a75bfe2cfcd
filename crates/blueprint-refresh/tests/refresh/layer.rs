//! The token-refresh layer: 401 → refresh → replay once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use blueprint_core::{BoxError, ConnectionId, NeedsReauthorization, TokenErrorKind};
use blueprint_refresh::{
    MemoryStore, OAuth2TokenSource, RefreshLayer, TokenRecord, TokenUnavailableError,
};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};
use wiremock::matchers::{body_bytes, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

struct Setup {
    upstream: MockServer,
    endpoint: MockServer,
    source: OAuth2TokenSource,
    sent: Arc<AtomicUsize>,
}

impl Setup {
    async fn new(record: Option<TokenRecord>) -> Self {
        let upstream = MockServer::start().await;
        let endpoint = MockServer::start().await;
        let store = match record {
            Some(record) => memory_with("acme", record).await,
            None => Arc::new(MemoryStore::new()),
        };
        let source = source(&endpoint, store);
        Setup {
            upstream,
            endpoint,
            source,
            sent: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn service(
        &self,
        layer: &RefreshLayer<OAuth2TokenSource>,
    ) -> blueprint_refresh::Refresh<InjectAuth<OAuth2TokenSource>, OAuth2TokenSource> {
        layer.layer(InjectAuth {
            source: self.source.clone(),
            client: upstream(),
            sent: Arc::clone(&self.sent),
        })
    }

    fn request(&self, method: &str, body: Full<Bytes>) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}/contacts", self.upstream.uri()))
            .header("x-custom", "kept")
            .body(body)
            .unwrap();
        request.extensions_mut().insert(ConnectionId::new("acme"));
        request
    }

    async fn upstream_requests(&self) -> Vec<wiremock::Request> {
        self.upstream.received_requests().await.unwrap_or_default()
    }
}

async fn answer_for(server: &MockServer, token: &str, status: u16) {
    Mock::given(path("/contacts"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(status).set_body_string(format!("{status}")))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_401_refreshes_and_replays_the_same_bytes_once() {
    let setup = Setup::new(Some(valid("a-1", "rt-1", SystemTime::now()))).await;
    mount_refresh(
        &setup.endpoint,
        "rt-1",
        granted("a-2", Some("rt-2"), Some(3600)),
        1,
    )
    .await;
    let payload: &[u8] = b"{\"name\":\"Ada\",\"bytes\":\"\x00\xff\xfe\"}";
    answer_for(&setup.upstream, "a-1", 401).await;
    Mock::given(method("POST"))
        .and(path("/contacts"))
        .and(header("authorization", "Bearer a-2"))
        .and(body_bytes(payload))
        .respond_with(ResponseTemplate::new(200).set_body_string("created"))
        .expect(1)
        .mount(&setup.upstream)
        .await;

    let service = setup.service(&RefreshLayer::new(setup.source.clone()));
    let response = service
        .oneshot(setup.request("POST", Full::new(Bytes::from_static(payload))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .extensions()
            .get::<NeedsReauthorization>()
            .is_none()
    );
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "created"
    );

    let sent = setup.upstream_requests().await;
    assert_eq!(sent.len(), 2, "first attempt and one replay");
    assert_eq!(sent[0].body, payload, "first attempt's body");
    assert_eq!(
        sent[1].body, sent[0].body,
        "the replay's body is byte-identical"
    );
    assert_eq!(sent[1].method, sent[0].method);
    assert_eq!(sent[1].url, sent[0].url);
    assert_eq!(sent[1].headers.get("x-custom").unwrap(), "kept");
    assert_eq!(token_calls(&setup.endpoint).await, 1);
    setup.upstream.verify().await;
}

#[tokio::test]
async fn a_401_on_the_replay_comes_back_marked_needs_reauthorization() {
    let setup = Setup::new(Some(valid("a-1", "rt-1", SystemTime::now()))).await;
    mount_refresh(
        &setup.endpoint,
        "rt-1",
        granted("a-2", Some("rt-2"), Some(3600)),
        1,
    )
    .await;
    answer_for(&setup.upstream, "a-1", 401).await;
    answer_for(&setup.upstream, "a-2", 401).await;

    let service = setup.service(&RefreshLayer::new(setup.source.clone()));
    let response = service
        .oneshot(setup.request("GET", Full::default()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let marker = response.extensions().get::<NeedsReauthorization>().cloned();
    assert_eq!(
        marker,
        Some(NeedsReauthorization {
            connection: ConnectionId::new("acme")
        })
    );
    assert_eq!(
        setup.upstream_requests().await.len(),
        2,
        "replayed once, not more"
    );
    assert_eq!(token_calls(&setup.endpoint).await, 1);
}

#[tokio::test]
async fn a_401_with_nothing_to_refresh_is_marked_and_not_replayed() {
    // Intercom: no expiry, no refresh token.
    let setup = Setup::new(Some(TokenRecord::new(token("i-1"), SystemTime::now()))).await;
    answer_for(&setup.upstream, "i-1", 401).await;
    let service = setup.service(&RefreshLayer::new(setup.source.clone()));
    let response = service
        .oneshot(setup.request("GET", Full::default()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .extensions()
            .get::<NeedsReauthorization>()
            .is_some()
    );
    assert_eq!(setup.upstream_requests().await.len(), 1);
    assert_eq!(token_calls(&setup.endpoint).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_401s_causes_one_refresh() {
    let setup = Setup::new(Some(valid("a-1", "rt-1", SystemTime::now()))).await;
    mount_refresh(
        &setup.endpoint,
        "rt-1",
        granted("a-2", Some("rt-2"), Some(3600)),
        1,
    )
    .await;
    answer_for(&setup.upstream, "a-1", 401).await;
    answer_for(&setup.upstream, "a-2", 200).await;
    // Every request is sent with a-1 before any 401 comes back.
    let service = setup.service(&RefreshLayer::new(setup.source.clone()));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            service
                .clone()
                .oneshot(setup.request("GET", Full::default()))
        })
        .collect();
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        token_calls(&setup.endpoint).await,
        1,
        "one refresh for the burst"
    );
    setup.endpoint.verify().await;
}

#[tokio::test]
async fn a_body_too_large_to_keep_gets_its_401_back_and_the_next_call_the_new_token() {
    let setup = Setup::new(Some(valid("a-1", "rt-1", SystemTime::now()))).await;
    mount_refresh(
        &setup.endpoint,
        "rt-1",
        granted("a-2", Some("rt-2"), Some(3600)),
        1,
    )
    .await;
    answer_for(&setup.upstream, "a-1", 401).await;
    answer_for(&setup.upstream, "a-2", 200).await;
    let service = setup.service(&RefreshLayer::new(setup.source.clone()).replay_cap(4));

    let big = Full::new(Bytes::from_static(b"more than four bytes"));
    let response = service
        .clone()
        .oneshot(setup.request("POST", big))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .extensions()
            .get::<NeedsReauthorization>()
            .is_none()
    );
    assert_eq!(setup.upstream_requests().await.len(), 1, "not replayed");

    let next = service
        .oneshot(setup.request("GET", Full::default()))
        .await
        .unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(token_calls(&setup.endpoint).await, 1);
}

#[tokio::test]
async fn no_token_means_nothing_is_sent() {
    let setup = Setup::new(None).await;
    let service = setup.service(&RefreshLayer::new(setup.source.clone()));
    let err: BoxError = service
        .oneshot(setup.request("GET", Full::default()))
        .await
        .unwrap_err();
    let err = err
        .downcast_ref::<TokenUnavailableError>()
        .expect("typed error");
    assert_eq!(err.connection(), &ConnectionId::new("acme"));
    assert_eq!(err.token_error().kind(), TokenErrorKind::NotFound);
    assert_eq!(setup.sent.load(Ordering::SeqCst), 0);
    assert!(setup.upstream_requests().await.is_empty());
}

#[tokio::test]
async fn other_statuses_pass_through_without_a_refresh() {
    let setup = Setup::new(Some(valid("a-1", "rt-1", SystemTime::now()))).await;
    answer_for(&setup.upstream, "a-1", 403).await;
    let service = setup.service(&RefreshLayer::new(setup.source.clone()));
    let response = service
        .oneshot(setup.request("GET", Full::default()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(setup.upstream_requests().await.len(), 1);
    assert_eq!(token_calls(&setup.endpoint).await, 0);
}
