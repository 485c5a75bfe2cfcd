//! Helpers shared by the tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use blueprint_core::{AccessToken, BoxError, ConnectionId, ReplayBody, TokenSource};
use blueprint_refresh::{
    ClientAuth, HttpClient, MemoryStore, OAuth2TokenSource, Provider, ProviderConfig, Secret,
    StoreKey, TokenRecord, TokenStore, TokioClock,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub(crate) const CLIENT_SECRET: &str = "client-secret-XYZ";

pub(crate) fn token(secret: &str) -> AccessToken {
    AccessToken::new(secret).unwrap()
}

pub(crate) fn provider_config(server: &MockServer) -> ProviderConfig {
    ProviderConfig {
        client_id: "client-1".into(),
        client_secret: Some(Secret::new(CLIENT_SECRET)),
        auth_url: Some(format!("{}/oauth", server.uri())),
        token_url: format!("{}/token", server.uri()),
        client_auth: ClientAuth::RequestBody,
        ..ProviderConfig::default()
    }
}

pub(crate) fn provider(server: &MockServer) -> Provider {
    Provider::new(provider_config(server)).unwrap()
}

/// A plain-HTTP client without a timeout timer, so paused-time tests do not jump to it
/// while a loopback server answers.
pub(crate) fn http() -> HttpClient {
    HttpClient::new().timeout(None)
}

/// A source over `store` that follows tokio time, with no jitter.
pub(crate) fn source(server: &MockServer, store: Arc<dyn TokenStore>) -> OAuth2TokenSource {
    OAuth2TokenSource::builder_shared(provider(server), store)
        .integration("test")
        .http_client(http())
        .clock(TokioClock::new())
        .refresh_jitter(Duration::ZERO)
        .build()
}

pub(crate) fn key(connection: &str) -> StoreKey {
    StoreKey::new("test", ConnectionId::new(connection))
}

/// A record whose access token expired `ago` before `now`.
pub(crate) fn expired(access: &str, refresh: &str, now: SystemTime) -> TokenRecord {
    TokenRecord::new(token(access), now)
        .with_refresh_token(refresh)
        .with_expires_at(now - Duration::from_secs(5))
}

/// A record valid for an hour.
pub(crate) fn valid(access: &str, refresh: &str, now: SystemTime) -> TokenRecord {
    TokenRecord::new(token(access), now)
        .with_refresh_token(refresh)
        .with_expires_at(now + Duration::from_secs(3600))
}

pub(crate) async fn memory_with(connection: &str, record: TokenRecord) -> Arc<dyn TokenStore> {
    let store = Arc::new(MemoryStore::new());
    store.put(&key(connection), record).await.unwrap();
    store
}

/// A token endpoint answer.
pub(crate) fn granted(
    access: &str,
    refresh: Option<&str>,
    expires_in: Option<u64>,
) -> ResponseTemplate {
    let mut body = json!({"access_token": access, "token_type": "Bearer"});
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    if let Some(expires_in) = expires_in {
        body["expires_in"] = json!(expires_in);
    }
    ResponseTemplate::new(200).set_body_json(body)
}

/// Mounts a refresh-grant mock for `refresh` answering `response`, expecting `times` calls.
pub(crate) async fn mount_refresh(
    server: &MockServer,
    refresh: &str,
    response: ResponseTemplate,
    times: u64,
) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains(format!("refresh_token={refresh}")))
        .respond_with(response)
        .expect(times)
        .mount(server)
        .await;
}

/// How many requests `server` received on `/token`.
pub(crate) async fn token_calls(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/token")
        .count()
}

/// The hyper client the layer tests send through.
pub(crate) type Upstream = Client<HttpConnector, ReplayBody<Full<Bytes>>>;

pub(crate) fn upstream() -> Upstream {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Stands in for the auth layer (a layer crate cannot depend on another): sets
/// `Authorization` from the same token source, then calls the client.
#[derive(Clone)]
pub(crate) struct InjectAuth<T> {
    pub(crate) source: T,
    pub(crate) client: Upstream,
    pub(crate) sent: Arc<AtomicUsize>,
}

impl<T: TokenSource + Clone> tower::Service<Request<ReplayBody<Full<Bytes>>>> for InjectAuth<T> {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Incoming>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<ReplayBody<Full<Bytes>>>) -> Self::Future {
        let source = self.source.clone();
        let client = self.client.clone();
        let sent = Arc::clone(&self.sent);
        Box::pin(async move {
            // What the auth layer does: one token per attempt, named on a 401.
            let connection = ConnectionId::of(&request);
            let token = source
                .token(&connection)
                .await
                .map_err(|e| blueprint_core::TokenUnavailable::new(connection.clone(), e))?;
            request
                .headers_mut()
                .insert(AUTHORIZATION, token.bearer_header().clone());
            sent.fetch_add(1, Ordering::SeqCst);
            let mut response = client.request(request).await?;
            if response.status() == http::StatusCode::UNAUTHORIZED {
                response
                    .extensions_mut()
                    .insert(blueprint_core::SentToken { token, connection });
            }
            Ok(response)
        })
    }
}

/// A database file path removed (with its WAL files) on drop.
pub(crate) struct TempDb(pub(crate) PathBuf);

impl TempDb {
    pub(crate) fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        TempDb(std::env::temp_dir().join(format!(
            "blueprint-refresh-it-{name}-{}-{n}.db",
            std::process::id()
        )))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}
