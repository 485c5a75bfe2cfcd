//! The authorization-code flow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use blueprint_core::{ConnectionId, TokenSource};
use blueprint_refresh::{
    AuthorizationFlow, CallbackError, CallbackParams, ClientAuth, MemoryStore, OAuth2TokenSource,
    Provider, Secret, TokenEndpointError, TokenStore,
};
use serde_json::json;
use wiremock::matchers::{body_string_contains, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

fn query(url: &str) -> HashMap<String, String> {
    let url = oauth2::url::Url::parse(url).unwrap();
    url.query_pairs().into_owned().collect()
}

fn flow_for(
    server: &MockServer,
    configure: impl FnOnce(&mut blueprint_refresh::ProviderConfig),
) -> (AuthorizationFlow, Arc<dyn TokenStore>) {
    let mut config = provider_config(server);
    configure(&mut config);
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let source =
        OAuth2TokenSource::builder_shared(Provider::new(config).unwrap(), Arc::clone(&store))
            .integration("test")
            .http_client(http())
            .build();
    (AuthorizationFlow::new(source), store)
}

fn callback(state: &str, code: &str) -> CallbackParams {
    CallbackParams {
        state: Some(state.into()),
        code: Some(Secret::new(code)),
        ..CallbackParams::default()
    }
}

/// Intercom's token endpoint answer: no expiry, no refresh token, and an extra `token`.
fn intercom_answer() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "token_type": "Bearer",
        "token": "dG9rOmludGVyY29t",
        "access_token": "dG9rOmludGVyY29t"
    }))
}

#[tokio::test]
async fn the_authorization_url_has_a_random_state_pkce_and_extra_parameters() {
    let server = MockServer::start().await;
    let (flow, _) = flow_for(&server, |c| {
        c.pkce = true;
        c.redirect_url = Some("https://app.example.com/callback".into());
        c.scopes = vec!["read".into(), "write".into()];
        c.extra_auth_params = vec![("access_type".into(), "offline".into())];
    });
    let first = flow.authorize(ConnectionId::new("acme")).unwrap();
    let second = flow.authorize(ConnectionId::new("acme")).unwrap();
    assert_ne!(
        first.state, second.state,
        "state is random per authorization"
    );
    assert!(first.state.len() >= 16);

    assert!(
        first.url.starts_with(&format!("{}/oauth?", server.uri())),
        "{}",
        first.url
    );
    let q = query(&first.url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "client-1");
    assert_eq!(q["state"], first.state);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43, "base64url of a SHA-256");
    assert_eq!(q["redirect_uri"], "https://app.example.com/callback");
    assert_eq!(q["scope"], "read write");
    assert_eq!(q["access_type"], "offline");
    assert!(!first.url.contains(CLIENT_SECRET));

    // Without PKCE (Intercom), no challenge; without scopes, no scope parameter.
    let (plain, _) = flow_for(&server, |_| {});
    let q = query(&plain.authorize(ConnectionId::new("acme")).unwrap().url);
    assert!(!q.contains_key("code_challenge") && !q.contains_key("scope"));
}

#[tokio::test]
async fn an_intercom_callback_stores_a_token_without_expiry_or_refresh_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(body_string_contains("code=the-code"))
        .and(body_string_contains("client_id=client-1"))
        .and(body_string_contains(format!(
            "client_secret={CLIENT_SECRET}"
        )))
        .respond_with(intercom_answer())
        .expect(1)
        .mount(&server)
        .await;
    let (flow, store) = flow_for(&server, |_| {});
    let request = flow.authorize(ConnectionId::new("acme")).unwrap();

    let done = flow
        .callback(callback(&request.state, "the-code"))
        .await
        .unwrap();
    assert_eq!(done.connection, ConnectionId::new("acme"));
    assert_eq!(done.expires_at, None);
    assert!(!done.refreshable);

    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(stored.access_token, token("dG9rOmludGVyY29t"));
    assert!(stored.refresh_token.is_none() && stored.expires_at.is_none());
    assert_eq!(stored.token_type, "bearer");
    server.verify().await;
}

#[tokio::test]
async fn basic_client_auth_and_the_pkce_verifier_reach_the_token_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header_exists("authorization"))
        .and(body_string_contains("code_verifier="))
        .respond_with(granted("a-1", Some("rt-1"), Some(3600)))
        .expect(1)
        .mount(&server)
        .await;
    let (flow, _) = flow_for(&server, |c| {
        c.pkce = true;
        c.client_auth = ClientAuth::Basic;
    });
    let request = flow.authorize(ConnectionId::new("acme")).unwrap();
    let done = flow
        .callback(callback(&request.state, "c0de"))
        .await
        .unwrap();
    assert!(done.refreshable);
    assert!(done.expires_at.is_some());

    let sent = &server.received_requests().await.unwrap()[0];
    let body = String::from_utf8_lossy(&sent.body);
    assert!(
        !body.contains("client_secret"),
        "secret must be in Basic, not the body: {body}"
    );
    let basic = sent.headers.get("authorization").unwrap().to_str().unwrap();
    assert!(basic.starts_with("Basic "));
    server.verify().await;
}

#[tokio::test]
async fn the_new_credentials_are_used_at_once() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(intercom_answer())
        .mount(&server)
        .await;
    let (flow, _) = flow_for(&server, |_| {});
    let request = flow.authorize(ConnectionId::new("acme")).unwrap();
    flow.callback(callback(&request.state, "x")).await.unwrap();
    // Not even a store read: the source caches what the flow stored.
    let source = flow_source(&flow);
    let mut now = source.token(&ConnectionId::new("acme"));
    assert_eq!(
        now.take_ready().unwrap().unwrap(),
        token("dG9rOmludGVyY29t")
    );
}

fn flow_source(flow: &AuthorizationFlow) -> &OAuth2TokenSource {
    flow.source()
}

#[tokio::test]
async fn unknown_missing_and_reused_states_are_rejected() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(intercom_answer())
        .expect(1)
        .mount(&server)
        .await;
    let (flow, _) = flow_for(&server, |_| {});
    let request = flow.authorize(ConnectionId::new("acme")).unwrap();

    let err = flow
        .callback(callback("forged-state", "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::UnknownState), "{err}");
    let err = flow
        .callback(CallbackParams {
            code: Some(Secret::new("x")),
            ..CallbackParams::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::MissingState), "{err}");

    flow.callback(callback(&request.state, "x")).await.unwrap();
    let err = flow
        .callback(callback(&request.state, "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::Reused), "{err}");
    server.verify().await;
}

#[tokio::test(start_paused = true)]
async fn an_authorization_expires_after_ten_minutes() {
    let server = MockServer::start().await;
    let (flow, _) = flow_for(&server, |_| {});
    let late = flow.authorize(ConnectionId::new("acme")).unwrap();
    tokio::time::advance(Duration::from_secs(599)).await;
    let in_time = flow.authorize(ConnectionId::new("beta")).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    let err = flow.callback(callback(&late.state, "x")).await.unwrap_err();
    assert!(matches!(err, CallbackError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("600 s"), "{err}");
    // It stays expired (and unusable) when tried again.
    let err = flow.callback(callback(&late.state, "x")).await.unwrap_err();
    assert!(matches!(err, CallbackError::Expired { .. }), "{err}");
    // The other one is still pending (it has 9 minutes 59 s left).
    assert!(flow.pending().take(&in_time.state).is_ok());
    assert_eq!(token_calls(&server).await, 0);
}

#[tokio::test]
async fn a_provider_error_is_typed_and_uses_up_the_state() {
    let server = MockServer::start().await;
    let (flow, _) = flow_for(&server, |_| {});
    let request = flow.authorize(ConnectionId::new("acme")).unwrap();
    let params = CallbackParams::from_query(&format!(
        "state={}&error=access_denied&error_description=The+user+said+no",
        request.state
    ));
    let err = flow.callback(params).await.unwrap_err();
    match &err {
        CallbackError::Provider { code, description } => {
            assert_eq!(code, "access_denied");
            // Free text from the provider is not kept (it is only logged at DEBUG).
            assert_eq!(description.as_deref(), None);
        }
        other => panic!("wrong error: {other}"),
    }
    let err = flow
        .callback(callback(&request.state, "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::Reused), "{err}");
}

#[tokio::test]
async fn a_refused_code_is_a_typed_exchange_error_without_the_code() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "code secret-code-123 expired"
        })))
        .mount(&server)
        .await;
    let (flow, store) = flow_for(&server, |_| {});
    let request = flow.authorize(ConnectionId::new("acme")).unwrap();
    let err = flow
        .callback(callback(&request.state, "secret-code-123"))
        .await
        .unwrap_err();
    match &err {
        CallbackError::Exchange(TokenEndpointError::Refused { code, status }) => {
            assert_eq!(code, "invalid_grant");
            assert_eq!(*status, Some(400));
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains("secret-code-123"));
    assert!(store.get(&key("acme")).await.unwrap().is_none());
}
