use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use blueprint_core::{AccessToken, BoxError, ConnectionId, TokenError, TokenErrorKind};
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, Response};
use tower::limit::ConcurrencyLimitLayer;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::{AuthLayer, ForeignOriginError, StaticToken, TokenMap, TokenSourceError, from_fn};

type Echo = Response<Option<HeaderValue>>;

/// A client double that answers with the Authorization header it received and counts calls.
fn echo(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<()>,
    Response = Echo,
    Error = BoxError,
    Future = impl Future<Output = Result<Echo, BoxError>> + Send,
> + Clone {
    service_fn(move |req: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let auth = req.headers().get(AUTHORIZATION).cloned();
        async move { Ok::<_, BoxError>(Response::new(auth)) }
    })
}

fn token(s: &str) -> AccessToken {
    AccessToken::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap_or_else(|e| panic!("{e}"))
}

fn layer<T: blueprint_core::TokenSource>(source: T) -> AuthLayer<T> {
    AuthLayer::new("https://api.example.com", source).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn sets_bearer_marked_sensitive_for_the_origin() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer(StaticToken::from(token("abc"))).layer_on(echo(calls.clone()));
    for uri in [
        "https://api.example.com/me",
        "https://API.example.com:443/x",
    ] {
        let res = svc
            .clone()
            .oneshot(get(uri))
            .await
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
        let auth = res
            .body()
            .clone()
            .unwrap_or_else(|| panic!("{uri}: no header"));
        assert_eq!(auth, "Bearer abc", "{uri}");
        assert!(auth.is_sensitive(), "{uri}: header not marked sensitive");
    }
}

#[tokio::test]
async fn foreign_origins_are_refused_and_nothing_is_sent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer(StaticToken::from(token("abc"))).layer_on(echo(calls.clone()));
    for uri in [
        "http://api.example.com/me",
        "https://api.example.com:8443/me",
        "https://api.example.com.evil.net/me",
        "https://evil.net/?u=https://api.example.com",
    ] {
        let err = svc.clone().oneshot(get(uri)).await.err();
        let err = err.unwrap_or_else(|| panic!("{uri} was sent"));
        let foreign = err
            .downcast_ref::<ForeignOriginError>()
            .unwrap_or_else(|| panic!("{uri}: wrong error {err}"));
        assert_eq!(foreign.connection().as_str(), "default");
        assert_eq!(foreign.allowed().to_string(), "https://api.example.com");
    }
    // A relative URI goes wherever a layer below sends it: foreign, whatever its `Host`.
    for host in [None, Some("api.example.com"), Some("evil.net")] {
        let mut req = get("/me");
        if let Some(host) = host {
            req.headers_mut()
                .insert(HOST, HeaderValue::from_static(host));
        }
        let err = svc.clone().oneshot(req).await.err();
        let err = err.unwrap_or_else(|| panic!("relative URI with Host {host:?} was sent"));
        assert!(err.to_string().contains("relative URI"), "{err}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_401_names_the_token_that_was_sent_and_its_connection() {
    use blueprint_core::SentToken;
    // The source's token changes between calls, as after a background refresh.
    let turn = Arc::new(AtomicUsize::new(0));
    let source = {
        let turn = Arc::clone(&turn);
        from_fn(move |_c: ConnectionId| {
            let n = turn.fetch_add(1, Ordering::SeqCst);
            async move {
                AccessToken::new(format!("token-{n}"))
                    .map_err(|e| TokenError::new(TokenErrorKind::Other, e.to_string()))
            }
        })
    };
    let refuse = service_fn(|req: Request<()>| async move {
        let sent = req.headers().get(AUTHORIZATION).cloned();
        let mut res = Response::new(sent);
        *res.status_mut() = http::StatusCode::UNAUTHORIZED;
        Ok::<_, BoxError>(res)
    });
    let svc = layer(source).layer_on(refuse);
    for n in 0..2 {
        let mut req = get("https://api.example.com/me");
        req.extensions_mut().insert(ConnectionId::new("ws-9"));
        let res = svc
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let sent = res
            .extensions()
            .get::<SentToken>()
            .unwrap_or_else(|| panic!("no SentToken"));
        assert_eq!(sent.token.secret(), format!("token-{n}"));
        assert_eq!(sent.connection.as_str(), "ws-9");
        assert_eq!(
            res.body().as_ref().map(|v| v.as_bytes().to_vec()),
            Some(format!("Bearer token-{n}").into_bytes()),
            "the token named is not the one sent"
        );
    }
    // A 200 carries nothing, and neither does a 401 to the caller's own header.
    let ok = layer(StaticToken::from(token("abc"))).layer_on(echo(Arc::default()));
    let res = ok
        .oneshot(get("https://api.example.com/"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(res.extensions().get::<SentToken>().is_none());
    let mut req = get("https://api.example.com/");
    req.headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Basic mine"));
    let refuse = service_fn(|_req: Request<()>| async move {
        let mut res = Response::new(None::<HeaderValue>);
        *res.status_mut() = http::StatusCode::UNAUTHORIZED;
        Ok::<_, BoxError>(res)
    });
    let res = layer(StaticToken::from(token("abc")))
        .layer_on(refuse)
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(res.extensions().get::<SentToken>().is_none());
}

#[tokio::test]
async fn foreign_origins_pass_without_credentials_when_allowed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer(StaticToken::from(token("abc")))
        .send_foreign_without_credentials()
        .layer_on(echo(calls.clone()));
    let res = svc.oneshot(get("https://other.example.com/")).await;
    let res = res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.body(), &None);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn callers_header_is_kept_unless_overridden() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut req = get("https://api.example.com/");
    req.headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Basic mine"));
    let kept = layer(StaticToken::from(token("abc")))
        .layer_on(echo(calls.clone()))
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        kept.body().as_ref().map(HeaderValue::as_bytes),
        Some(&b"Basic mine"[..])
    );

    let mut req = get("https://api.example.com/");
    req.headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Basic mine"));
    let replaced = layer(StaticToken::from(token("abc")))
        .override_existing()
        .layer_on(echo(calls))
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        replaced.body().as_ref().map(HeaderValue::as_bytes),
        Some(&b"Bearer abc"[..])
    );
}

#[tokio::test]
async fn per_connection_tokens_and_missing_connection_error() {
    let map: TokenMap = [
        (ConnectionId::new("a"), token("token-a")),
        (ConnectionId::new("b"), token("token-b")),
    ]
    .into_iter()
    .collect();
    let svc = layer(map.clone()).layer_on(echo(Arc::default()));
    for id in ["a", "b"] {
        let mut req = get("https://api.example.com/x");
        req.extensions_mut().insert(ConnectionId::new(id));
        let res = svc
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            res.body().as_ref().map(|v| v.as_bytes().to_vec()),
            Some(format!("Bearer token-{id}").into_bytes())
        );
    }
    let mut req = get("https://api.example.com/x");
    req.extensions_mut().insert(ConnectionId::new("nobody"));
    let err = svc
        .clone()
        .oneshot(req)
        .await
        .err()
        .unwrap_or_else(|| panic!("sent"));
    let err = err
        .downcast_ref::<TokenSourceError>()
        .unwrap_or_else(|| panic!("wrong error: {err}"));
    assert_eq!(err.connection().as_str(), "nobody");
    assert_eq!(err.token_error().kind(), TokenErrorKind::NotFound);
    assert!(format!("{map:?}").contains("\"a\"") && !format!("{map:?}").contains("token-a"));
}

#[tokio::test]
async fn failing_source_error_names_the_connection_never_the_secret() {
    let source = from_fn(|_c: ConnectionId| async {
        tokio::task::yield_now().await;
        Err(TokenError::new(
            TokenErrorKind::NeedsReauthorization,
            "refresh token was revoked",
        ))
    });
    let mut req = get("https://api.example.com/x");
    req.extensions_mut().insert(ConnectionId::new("acme"));
    let err = layer(source)
        .layer_on(echo(Arc::default()))
        .oneshot(req)
        .await
        .err()
        .unwrap_or_else(|| panic!("sent"));
    let text = err.to_string();
    assert!(
        text.contains("`acme`") && text.contains("revoked"),
        "{text}"
    );
    let typed = err.downcast_ref::<TokenSourceError>();
    assert!(typed.is_some_and(TokenSourceError::needs_reauthorization));
}

/// The token source answers later, and the inner service only accepts a call on the very
/// instance that was polled ready (`ConcurrencyLimit` panics otherwise): the layer must
/// move the ready service into its future and leave a clone behind.
#[tokio::test]
async fn pending_source_keeps_poll_ready_discipline() {
    let source = from_fn(|_c: ConnectionId| async {
        tokio::task::yield_now().await;
        AccessToken::new("late").map_err(|e| TokenError::new(TokenErrorKind::Other, e.to_string()))
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(layer(source))
        .layer(ConcurrencyLimitLayer::new(4))
        .service(echo(calls.clone()));

    let mut handles = Vec::new();
    for _ in 0..32 {
        let svc = svc.clone();
        handles.push(tokio::spawn(async move {
            svc.oneshot(get("https://api.example.com/x")).await
        }));
    }
    for h in handles {
        let res = h
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            res.body().as_ref().map(HeaderValue::as_bytes),
            Some(&b"Bearer late"[..])
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 32);
}

#[test]
fn bad_origin_is_a_typed_error() {
    assert!(AuthLayer::new("api.example.com", StaticToken::from(token("x"))).is_err());
}

trait LayerOn<S> {
    type Service;
    fn layer_on(self, inner: S) -> Self::Service;
}

impl<S, L: tower::Layer<S>> LayerOn<S> for L {
    type Service = L::Service;
    fn layer_on(self, inner: S) -> L::Service {
        self.layer(inner)
    }
}
