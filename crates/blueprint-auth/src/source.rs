//! Token sources for tokens that do not expire, or that something else keeps current.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use blueprint_core::{
    AccessToken, ConnectionId, InvalidToken, TokenError, TokenFuture, TokenSource,
};

/// One token for every connection, e.g. a private app's access token.
#[derive(Clone, Debug)]
pub struct StaticToken(AccessToken);

impl StaticToken {
    /// A source that always gives this token.
    ///
    /// # Errors
    ///
    /// [`InvalidToken`] when the secret cannot be sent in a header.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, InvalidToken> {
        AccessToken::new(secret).map(StaticToken)
    }
}

impl From<AccessToken> for StaticToken {
    fn from(token: AccessToken) -> Self {
        StaticToken(token)
    }
}

impl TokenSource for StaticToken {
    fn token(&self, _connection: &ConnectionId) -> TokenFuture {
        TokenFuture::ready(Ok(self.0.clone()))
    }

    /// Never: the token is fixed, so a 401 cannot be cured by asking again.
    fn can_refresh(&self, _connection: &ConnectionId) -> bool {
        false
    }
}

/// A token per connection, which can be changed while in use.
///
/// A connection with no token gets a [`TokenError`] of kind
/// [`NotFound`](blueprint_core::TokenErrorKind::NotFound).
#[derive(Clone, Default)]
pub struct TokenMap {
    tokens: Arc<RwLock<HashMap<ConnectionId, AccessToken>>>,
}

impl TokenMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the token of a connection, returning the one it replaces.
    pub fn insert(
        &self,
        connection: impl Into<ConnectionId>,
        token: AccessToken,
    ) -> Option<AccessToken> {
        self.tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(connection.into(), token)
    }

    /// Removes the token of a connection.
    pub fn remove(&self, connection: &ConnectionId) -> Option<AccessToken> {
        self.tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(connection)
    }

    /// How many connections have a token.
    pub fn len(&self) -> usize {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no connection has a token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromIterator<(ConnectionId, AccessToken)> for TokenMap {
    fn from_iter<I: IntoIterator<Item = (ConnectionId, AccessToken)>>(iter: I) -> Self {
        TokenMap {
            tokens: Arc::new(RwLock::new(iter.into_iter().collect())),
        }
    }
}

impl fmt::Debug for TokenMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<&str> = tokens.keys().map(ConnectionId::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("TokenMap")
            .field("connections", &ids)
            .finish()
    }
}

impl TokenSource for TokenMap {
    fn token(&self, connection: &ConnectionId) -> TokenFuture {
        let found = self
            .tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(connection)
            .cloned();
        TokenFuture::ready(found.ok_or_else(TokenError::not_found))
    }
}

/// A token source made of an async closure; see [`from_fn`].
#[derive(Clone)]
pub struct FnTokenSource<F> {
    f: F,
}

/// A token source from any async closure that maps a connection to its token.
///
/// The closure's future is boxed once per call; for tokens that are at hand, prefer
/// [`StaticToken`] or [`TokenMap`], which allocate nothing.
///
/// ```
/// use blueprint_auth::from_fn;
/// use blueprint_core::{AccessToken, ConnectionId, TokenError, TokenErrorKind, TokenSource};
///
/// let source = from_fn(|connection: ConnectionId| async move {
///     match connection.as_str() {
///         "acme" => AccessToken::new("acme-token")
///             .map_err(|e| TokenError::new(TokenErrorKind::Other, e.to_string())),
///         _ => Err(TokenError::not_found()),
///     }
/// });
/// # let _ = source.token(&ConnectionId::new("acme"));
/// ```
pub fn from_fn<F, Fut>(f: F) -> FnTokenSource<F>
where
    F: Fn(ConnectionId) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AccessToken, TokenError>> + Send + 'static,
{
    FnTokenSource { f }
}

impl<F> fmt::Debug for FnTokenSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTokenSource").finish_non_exhaustive()
    }
}

impl<F, Fut> TokenSource for FnTokenSource<F>
where
    F: Fn(ConnectionId) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AccessToken, TokenError>> + Send + 'static,
{
    fn token(&self, connection: &ConnectionId) -> TokenFuture {
        TokenFuture::new((self.f)(connection.clone()))
    }
}
