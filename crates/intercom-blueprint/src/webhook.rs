//! Verifying Intercom's webhook notifications on the receiving side.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use blueprint_core::BoxError;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use sha1::Sha1;
use tower_layer::Layer;
use tower_service::Service;

/// The header Intercom signs notifications with: `sha1=<hex HMAC of the raw body>`.
pub const SIGNATURE_HEADER: &str = "x-hub-signature";

/// The default cap on a notification's body: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Whether `signature` (the `X-Hub-Signature` value) is Intercom's HMAC-SHA1 of `body`
/// keyed with the app's client secret. The comparison takes the same time whatever the
/// signature, so it leaks nothing about the expected one.
///
/// ```
/// use intercom_blueprint::webhook::{sign, verify_signature};
///
/// let body = br#"{"type":"notification_event","topic":"ping"}"#;
/// let signature = sign(b"client-secret", body);
/// assert!(verify_signature(b"client-secret", body, &signature));
/// assert!(!verify_signature(b"another-secret", body, &signature));
/// assert!(!verify_signature(b"client-secret", body, "md5=00"));
/// ```
pub fn verify_signature(secret: &[u8], body: &[u8], signature: &str) -> bool {
    // Anyone can compute an HMAC with an empty key: nothing signed with it is trusted.
    if secret.is_empty() {
        return false;
    }
    let Some(hex) = signature.trim().strip_prefix("sha1=") else {
        return false;
    };
    // An HMAC-SHA1 is 20 bytes: any other length, or a non-hex digit, is refused here.
    let mut expected = [0u8; 20];
    if hex::decode_to_slice(hex, &mut expected).is_err() {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The `X-Hub-Signature` value for `body`: for tests and for replaying notifications.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut out = String::from("sha1=");
    if let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) {
        mac.update(body);
        out.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    out
}

/// Layer that applies [`VerifyWebhook`].
#[derive(Clone)]
pub struct VerifyWebhookLayer {
    secret: Arc<[u8]>,
    max_body: usize,
}

impl fmt::Debug for VerifyWebhookLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyWebhookLayer")
            .field("secret", &"<redacted>")
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl VerifyWebhookLayer {
    /// Verifies notifications signed with the app's client secret. An empty secret
    /// verifies nothing: every notification is refused.
    pub fn new(client_secret: impl AsRef<[u8]>) -> Self {
        VerifyWebhookLayer {
            secret: Arc::from(client_secret.as_ref()),
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Refuses bodies larger than this with 413 (default 1 MiB).
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

impl<S> Layer<S> for VerifyWebhookLayer {
    type Service = VerifyWebhook<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyWebhook {
            inner,
            secret: Arc::clone(&self.secret),
            max_body: self.max_body,
        }
    }
}

/// Server-side middleware (for an axum route or any tower HTTP service) that lets a
/// request through only when its `X-Hub-Signature` is the HMAC-SHA1 of its raw body keyed
/// with the client secret. Otherwise it answers 401 (missing or wrong signature) or 413
/// (body over the cap) without calling the inner service.
///
/// The body is read whole (up to the cap) to be verified, then handed to the inner service
/// as the same body type, so handlers parse it as usual.
///
/// ```
/// use intercom_blueprint::webhook::{sign, VerifyWebhookLayer};
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let handler = service_fn(|_req: Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
/// });
/// let app = ServiceBuilder::new().layer(VerifyWebhookLayer::new("client-secret")).service(handler);
///
/// let body = r#"{"type":"notification_event","topic":"ping"}"#;
/// let request = Request::post("/webhooks")
///     .header("x-hub-signature", sign(b"client-secret", body.as_bytes()))
///     .body(Full::new(Bytes::from(body)))?;
/// assert_eq!(app.clone().oneshot(request).await?.status(), StatusCode::OK);
///
/// let forged = Request::post("/webhooks").body(Full::new(Bytes::from(body)))?;
/// assert_eq!(app.oneshot(forged).await?.status(), StatusCode::UNAUTHORIZED);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct VerifyWebhook<S> {
    inner: S,
    secret: Arc<[u8]>,
    max_body: usize,
}

impl<S: fmt::Debug> fmt::Debug for VerifyWebhook<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyWebhook")
            .field("inner", &self.inner)
            .field("secret", &"<redacted>")
            .field("max_body", &self.max_body)
            .finish()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for VerifyWebhook<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    RB: From<Bytes>,
{
    type Response = Response<RB>;
    // The inner service's own error: refusals are responses, so an infallible axum route
    // stays infallible.
    type Error = S::Error;
    // Boxed: a webhook receiver is not a hot path, and reading the body is async.
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let secret = Arc::clone(&self.secret);
        let max_body = self.max_body;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // No signature (or no secret to check it with): refused before reading the body.
            if secret.is_empty() || !parts.headers.contains_key(SIGNATURE_HEADER) {
                return Ok(refuse(
                    StatusCode::UNAUTHORIZED,
                    "missing or invalid X-Hub-Signature",
                ));
            }
            let Ok(collected) = Limited::new(body, max_body).collect().await else {
                return Ok(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the notification body is too large or could not be read",
                ));
            };
            let bytes = collected.to_bytes();
            let signature = parts
                .headers
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !verify_signature(&secret, &bytes, signature) {
                return Ok(refuse(
                    StatusCode::UNAUTHORIZED,
                    "missing or invalid X-Hub-Signature",
                ));
            }
            inner.call(Request::from_parts(parts, B::from(bytes))).await
        })
    }
}

fn refuse<RB: From<Bytes>>(status: StatusCode, message: &'static str) -> Response<RB> {
    let body = format!(r#"{{"error":{{"code":"webhook_rejected","message":"{message}"}}}}"#);
    let mut response = Response::new(RB::from(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_lowercase_hex_of_the_hmac_sha1() {
        // RFC 2202-style known answer: HMAC-SHA1("key", "The quick brown fox jumps over the
        // lazy dog"), computed independently of this crate.
        let body = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(
            sign(b"key", body),
            "sha1=de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
        assert!(verify_signature(
            b"key",
            body,
            "sha1=de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        ));
        assert!(verify_signature(
            b"key",
            body,
            "sha1=DE7C9B85B8B78AA6BC8A7A36F70A90701C9DB4D9"
        ));
        // One byte short, one byte long, one digit off.
        assert!(!verify_signature(
            b"key",
            body,
            "sha1=de7c9b85b8b78aa6bc8a7a36f70a90701c9db4"
        ));
        assert!(!verify_signature(
            b"key",
            body,
            "sha1=de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d900"
        ));
        assert!(!verify_signature(
            b"key",
            body,
            "sha1=de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d8"
        ));
    }

    #[test]
    fn signatures_round_trip_and_tampering_fails() {
        let body = br#"{"topic":"conversation.user.created"}"#;
        let signature = sign(b"s3cret", body);
        assert!(signature.starts_with("sha1=") && signature.len() == 45);
        assert!(verify_signature(b"s3cret", body, &signature));
        assert!(verify_signature(
            b"s3cret",
            body,
            &signature.to_uppercase().replacen("SHA1", "sha1", 1)
        ));
        assert!(!verify_signature(b"other", body, &signature));
        assert!(!verify_signature(b"s3cret", b"{}", &signature));
        assert!(!verify_signature(b"s3cret", body, &signature[..44]));
        assert!(!verify_signature(b"s3cret", body, "sha1=zz"));
        assert!(!verify_signature(b"s3cret", body, ""));
        assert!(!verify_signature(b"", body, &sign(b"", body)));
    }
}
