//! No credential type, and no error, shows a secret in `Debug` or `Display`.

use std::sync::Arc;
use std::time::SystemTime;

use blueprint_core::{ConnectionId, TokenSource};
use blueprint_refresh::{
    AuthorizationFlow, CallbackError, CallbackParams, EncryptionKey, MemoryStore,
    OAuth2TokenSource, Provider, Secret, StoredToken, TokenRecord, TokenStore,
};
use serde_json::json;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

const SECRETS: [&str; 5] = [
    CLIENT_SECRET,
    "access-SECRET-1",
    "refresh-SECRET-1",
    "code-SECRET-1",
    "key-SECRET",
];

fn assert_hidden(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows `{secret}`: {text}");
    }
    assert!(
        !text.contains("AAAAAAAAAAAAAAAAAAAA"),
        "{what} shows the key: {text}"
    );
}

#[tokio::test]
async fn debug_of_every_credential_type_is_redacted() {
    let server = MockServer::start().await;
    let record = TokenRecord::new(token("access-SECRET-1"), SystemTime::now())
        .with_refresh_token("refresh-SECRET-1");
    let stored = StoredToken {
        record: record.clone(),
        version: 1,
    };
    let config = provider_config(&server);
    let provider = Provider::new(config.clone()).unwrap();
    let params = CallbackParams::from_query("code=code-SECRET-1&state=s");
    let key = EncryptionKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    store
        .put(&crate::common::key("acme"), record.clone())
        .await
        .unwrap();
    let source = OAuth2TokenSource::builder_shared(provider.clone(), Arc::clone(&store))
        .integration("test")
        .build();
    source.token(&ConnectionId::new("acme")).await.unwrap();
    let flow = AuthorizationFlow::new(source.clone());

    assert_hidden(
        "Secret",
        &format!(
            "{:?} {}",
            Secret::new("code-SECRET-1"),
            Secret::new("code-SECRET-1")
        ),
    );
    assert_hidden("TokenRecord", &format!("{record:?}"));
    assert_hidden("StoredToken", &format!("{stored:?}"));
    assert_hidden("ProviderConfig", &format!("{config:?}"));
    assert_hidden("Provider", &format!("{provider:?}"));
    assert_hidden("CallbackParams", &format!("{params:?}"));
    assert_hidden("EncryptionKey", &format!("{key:?}"));
    assert_hidden("OAuth2TokenSource", &format!("{source:?}"));
    assert_hidden("AuthorizationFlow", &format!("{flow:?}"));
    assert_hidden("MemoryStore", &format!("{store:?}"));
}

#[tokio::test]
async fn errors_never_show_a_secret_even_when_the_provider_echoes_it() {
    let server = MockServer::start().await;
    // A provider that echoes what it was sent in its error, with an error code that is not
    // a code at all.
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "refresh-SECRET-1 code-SECRET-1 is bad",
            "error_description": format!("client {CLIENT_SECRET} sent refresh-SECRET-1 and code-SECRET-1")
        })))
        .mount(&server)
        .await;
    let store = memory_with(
        "acme",
        expired("access-SECRET-1", "refresh-SECRET-1", SystemTime::now()),
    )
    .await;
    let source = source(&server, Arc::clone(&store));
    let err = source.token(&ConnectionId::new("acme")).await.unwrap_err();
    assert!(err.needs_reauthorization());
    assert_hidden("TokenError", &format!("{err} {err:?}"));
    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert_hidden(
        "last_error",
        stored.last_error.as_deref().unwrap_or_default(),
    );

    let flow = AuthorizationFlow::new(source);
    let request = flow.authorize(ConnectionId::new("beta")).unwrap();
    let err = flow
        .callback(CallbackParams {
            state: Some(request.state),
            code: Some(Secret::new("code-SECRET-1")),
            ..CallbackParams::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::Exchange(_)));
    assert_hidden("CallbackError", &format!("{err} {err:?}"));

    // A 200 whose body is not a token response: the body (with its secrets) is not quoted.
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": 42, "note": "refresh-SECRET-1"
        })))
        .mount(&server)
        .await;
    let store = memory_with(
        "acme",
        expired("access-SECRET-1", "refresh-SECRET-1", SystemTime::now()),
    )
    .await;
    let err = crate::common::source(&server, store)
        .token(&ConnectionId::new("acme"))
        .await
        .unwrap_err();
    assert!(
        !err.needs_reauthorization(),
        "an unreadable 200 is not a refusal: {err}"
    );
    assert_hidden("TokenError", &format!("{err} {err:?}"));

    // Bad keys and wrong keys do not echo the key.
    let err = EncryptionKey::from_base64("key-SECRET").unwrap_err();
    assert_hidden("InvalidKeyError", &format!("{err} {err:?}"));
}
