use std::fmt;

use blueprint_core::{ConnectionId, Origin};

/// The request was for another origin than the one credentials are for; nothing was sent.
#[derive(Debug, Clone)]
pub struct ForeignOriginError {
    pub(crate) connection: ConnectionId,
    pub(crate) requested: String,
    pub(crate) allowed: Origin,
}

impl ForeignOriginError {
    /// The connection whose credentials were withheld.
    pub fn connection(&self) -> &ConnectionId {
        &self.connection
    }

    /// The origin the credentials are for.
    pub fn allowed(&self) -> &Origin {
        &self.allowed
    }

    /// Where the request was going (scheme, host and port only).
    pub fn requested(&self) -> &str {
        &self.requested
    }
}

impl fmt::Display for ForeignOriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused to send the credentials of connection `{}` to {}: they are only sent to {} \
             (nothing was sent; set the layer to send foreign requests without credentials if this is intended)",
            self.connection, self.requested, self.allowed
        )
    }
}

impl std::error::Error for ForeignOriginError {}

/// The token source could not give a token for the connection; nothing was sent. The same
/// type as the refresh layer's: [`blueprint_core::TokenUnavailable`].
pub type TokenSourceError = blueprint_core::TokenUnavailable;
