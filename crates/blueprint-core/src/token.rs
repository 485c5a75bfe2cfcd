use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;

use crate::ConnectionId;

const BEARER_PREFIX: &str = "Bearer ";

/// A bearer access token.
///
/// `Debug` and `Display` print `<redacted>`; the secret is only reachable through
/// [`AccessToken::secret`] and [`AccessToken::bearer_header`]. The `Authorization` value is
/// built once, when the token is made, and marked sensitive, so sending the token costs a
/// reference-count increment per request rather than a formatted string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AccessToken {
    /// `Bearer <secret>`, marked sensitive.
    bearer: HeaderValue,
}

impl AccessToken {
    /// A token from its secret.
    ///
    /// # Errors
    ///
    /// [`InvalidToken`] when the secret is empty or holds anything but visible ASCII
    /// (it could not be sent in a header). The error never contains the secret.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, InvalidToken> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(InvalidToken {
                reason: "it is empty",
            });
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken {
                reason: "it holds a character that is not visible ASCII",
            });
        }
        let mut bearer =
            HeaderValue::try_from(format!("{BEARER_PREFIX}{secret}")).map_err(|_| {
                InvalidToken {
                    reason: "it is not a valid header value",
                }
            })?;
        bearer.set_sensitive(true);
        Ok(AccessToken { bearer })
    }

    /// The secret itself. Do not log it.
    pub fn secret(&self) -> &str {
        // Only visible ASCII went in, so `to_str` cannot fail; fall back to "" rather than panic.
        self.bearer
            .to_str()
            .map(|s| &s[BEARER_PREFIX.len()..])
            .unwrap_or_default()
    }

    /// The `Authorization` header value, `Bearer <secret>`, marked sensitive.
    pub fn bearer_header(&self) -> &HeaderValue {
        &self.bearer
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The access token an attempt was sent with, and whose it was: put by the auth layer on a
/// 401 response's extensions, so that the token-refresh layer invalidates exactly the token
/// that was refused (after a background refresh, the source's current token may be
/// another). Absent when the auth layer sent no token of its own (the caller's
/// `Authorization` was kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentToken {
    /// The token sent.
    pub token: AccessToken,
    /// The connection it belongs to.
    pub connection: ConnectionId,
}

/// A string that cannot be an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidToken {
    reason: &'static str,
}

impl fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid access token: {}", self.reason)
    }
}

impl StdError for InvalidToken {}

/// Where the auth layer gets the token of a connection.
///
/// Implementations decide how tokens are found: a constant, a map, a database, an OAuth2
/// cache that refreshes. [`TokenSource::token`] returns a [`TokenFuture`], which is either
/// already complete (no allocation: the common, cached case) or a boxed future (a refresh,
/// a lookup). The trait is object safe, so `Arc<dyn TokenSource>` is a token source too.
///
/// Errors must never contain the secret; see [`TokenError`].
pub trait TokenSource: Send + Sync + 'static {
    /// The token to send for `connection`.
    fn token(&self, connection: &ConnectionId) -> TokenFuture;

    /// Reports that `stale` was refused by the server (a 401), so that the next call to
    /// [`TokenSource::token`] gets a new one. Sources that cannot refresh ignore it (the
    /// default). Implementations must only act when `stale` is still the current token,
    /// so that a burst of 401s for one token causes one refresh.
    fn invalidate(&self, connection: &ConnectionId, stale: &AccessToken) {
        let _ = (connection, stale);
    }

    /// Whether a token refused with a 401 could be replaced by another one (by a refresh,
    /// or by someone storing new credentials). `true` by default. Sources of fixed tokens
    /// answer `false`, so the token-refresh layer need not keep a copy of every request for
    /// a replay that could never succeed.
    fn can_refresh(&self, connection: &ConnectionId) -> bool {
        let _ = connection;
        true
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn token(&self, connection: &ConnectionId) -> TokenFuture {
        (**self).token(connection)
    }
    fn invalidate(&self, connection: &ConnectionId, stale: &AccessToken) {
        (**self).invalidate(connection, stale);
    }
    fn can_refresh(&self, connection: &ConnectionId) -> bool {
        (**self).can_refresh(connection)
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn token(&self, connection: &ConnectionId) -> TokenFuture {
        (**self).token(connection)
    }
    fn invalidate(&self, connection: &ConnectionId, stale: &AccessToken) {
        (**self).invalidate(connection, stale);
    }
    fn can_refresh(&self, connection: &ConnectionId) -> bool {
        (**self).can_refresh(connection)
    }
}

type BoxTokenFuture = Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send>>;

/// The future a [`TokenSource`] returns: complete already, or a boxed future.
#[must_use = "futures do nothing unless polled"]
pub struct TokenFuture {
    state: FutureState,
}

enum FutureState {
    Ready(Option<Result<AccessToken, TokenError>>),
    Pending(BoxTokenFuture),
}

impl TokenFuture {
    /// A future that is already complete. Allocates nothing.
    pub fn ready(result: Result<AccessToken, TokenError>) -> Self {
        TokenFuture {
            state: FutureState::Ready(Some(result)),
        }
    }

    /// A future that completes when `future` does.
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = Result<AccessToken, TokenError>> + Send + 'static,
    {
        TokenFuture {
            state: FutureState::Pending(Box::pin(future)),
        }
    }

    /// Takes the result if the future was made complete, so a caller can skip polling.
    /// Returns `None` for a pending future and once the result has been taken.
    pub fn take_ready(&mut self) -> Option<Result<AccessToken, TokenError>> {
        match &mut self.state {
            FutureState::Ready(result) => result.take(),
            FutureState::Pending(_) => None,
        }
    }
}

impl fmt::Debug for TokenFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            FutureState::Ready(_) => "ready",
            FutureState::Pending(_) => "pending",
        };
        f.debug_struct("TokenFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for TokenFuture {
    type Output = Result<AccessToken, TokenError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            FutureState::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(TokenError::new(
                    TokenErrorKind::Other,
                    "token future polled after completion",
                ))
            })),
            FutureState::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

/// A layer asked the [`TokenSource`] for a connection's token and got none, so nothing was
/// sent. The auth-injection and token-refresh layers both fail with it; it names the
/// connection and carries the source's [`TokenError`], never a secret.
#[derive(Debug, Clone)]
pub struct TokenUnavailable {
    connection: ConnectionId,
    source: TokenError,
}

impl TokenUnavailable {
    /// The error for `connection`, whose source answered `source`.
    pub fn new(connection: ConnectionId, source: TokenError) -> Self {
        TokenUnavailable { connection, source }
    }

    /// The connection whose token was asked for.
    pub fn connection(&self) -> &ConnectionId {
        &self.connection
    }

    /// What the token source said.
    pub fn token_error(&self) -> &TokenError {
        &self.source
    }

    /// Whether a person has to authorize the connection again.
    pub fn needs_reauthorization(&self) -> bool {
        self.source.needs_reauthorization()
    }

    /// When asking again may succeed (the end of a refresh cooldown), if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.source.retry_after()
    }
}

impl fmt::Display for TokenUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no access token for connection `{}`, so the request was not sent: {}",
            self.connection, self.source
        )
    }
}

impl StdError for TokenUnavailable {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// Why a [`TokenSource`] could not give a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// The source holds no credentials for this connection.
    NotFound,
    /// The credentials were refused for good (revoked, `invalid_grant`): a person has to
    /// authorize the connection again. Retrying will not help.
    NeedsReauthorization,
    /// A token could not be had for now (the token endpoint failed, a cooldown is running);
    /// retrying later may help.
    Unavailable,
    /// Anything else.
    Other,
}

/// The error of a [`TokenSource`]. Cheap to clone, so one refresh's failure can be handed
/// to every caller that waited for it.
///
/// Its message is written by the source and must never contain a secret.
#[derive(Clone)]
pub struct TokenError {
    kind: TokenErrorKind,
    message: Arc<str>,
    retry_after: Option<Duration>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl TokenError {
    /// An error of `kind` with a message (never a secret).
    pub fn new(kind: TokenErrorKind, message: impl Into<Arc<str>>) -> Self {
        TokenError {
            kind,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// No credentials are held for the connection.
    pub fn not_found() -> Self {
        TokenError::new(TokenErrorKind::NotFound, "no credentials are stored for it")
    }

    /// Attaches the underlying error (whose text must not contain a secret either).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Says when asking again may succeed.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> TokenErrorKind {
        self.kind
    }

    /// When asking again may succeed, if the source knows.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether a person has to authorize the connection again.
    pub fn needs_reauthorization(&self) -> bool {
        self.kind == TokenErrorKind::NeedsReauthorization
    }
}

impl fmt::Debug for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("retry_after", &self.retry_after)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .finish()
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(after) = self.retry_after {
            write!(f, " (try again in {} ms)", after.as_millis())?;
        }
        Ok(())
    }
}

impl StdError for TokenError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_secret() {
        let token = AccessToken::new("tok_very_secret").unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{token:?}").contains("very_secret"));
        assert!(!format!("{token}").contains("very_secret"));
        assert!(!format!("{:?}", token.bearer_header()).contains("very_secret"));
        assert!(token.bearer_header().is_sensitive());
        assert_eq!(token.secret(), "tok_very_secret");
        assert_eq!(token.bearer_header(), "Bearer tok_very_secret");
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        for bad in ["", "has space", "new\nline", "caf\u{e9}"] {
            let err = AccessToken::new(bad).err().map(|e| e.to_string());
            let err = err.unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
    }

    #[tokio::test]
    async fn ready_future_can_be_taken_or_awaited() {
        let token = AccessToken::new("t").unwrap_or_else(|e| panic!("{e}"));
        let mut ready = TokenFuture::ready(Ok(token.clone()));
        assert_eq!(ready.take_ready().and_then(Result::ok), Some(token.clone()));
        assert!(ready.take_ready().is_none());

        let boxed = TokenFuture::new(async move { Ok(token) });
        assert_eq!(
            boxed.await.ok().map(|t| t.secret().to_owned()),
            Some("t".into())
        );
    }

    #[test]
    fn token_error_is_object_safe_and_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TokenError>();
        fn assert_send<T: Send>() {}
        assert_send::<TokenFuture>();
        let _: Option<Arc<dyn TokenSource>> = None;
        let err = TokenError::new(TokenErrorKind::Unavailable, "token endpoint answered 503")
            .with_retry_after(Duration::from_secs(30));
        assert_eq!(
            err.to_string(),
            "token endpoint answered 503 (try again in 30000 ms)"
        );
    }
}
