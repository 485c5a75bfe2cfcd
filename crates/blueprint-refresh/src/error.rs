//! The refresh layer's error.

/// The token source gave no token for the connection, so nothing was sent. The same type
/// as the auth layer's: [`blueprint_core::TokenUnavailable`].
pub type TokenUnavailableError = blueprint_core::TokenUnavailable;
