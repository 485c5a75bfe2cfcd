use std::fmt;
use std::time::Duration;

use blueprint_core::{ConnectionId, TokenError};

/// The token source gave no token for the connection, so nothing was sent.
#[derive(Debug, Clone)]
pub struct TokenUnavailableError {
    pub(crate) connection: ConnectionId,
    pub(crate) source: TokenError,
}

impl TokenUnavailableError {
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

impl fmt::Display for TokenUnavailableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no access token for connection `{}`, so the request was not sent: {}",
            self.connection, self.source
        )
    }
}

impl std::error::Error for TokenUnavailableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
