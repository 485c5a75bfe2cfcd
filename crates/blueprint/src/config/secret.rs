//! The OAuth client secret, kept out of logs.

use std::fmt;

/// An OAuth client secret. `Debug` and `Display` print `<redacted>`; the value is only
/// reachable through [`ClientSecret::expose`].
///
/// ```
/// use blueprint::ClientSecret;
///
/// let secret = ClientSecret::new("s3cr3t");
/// assert_eq!(format!("{secret} {secret:?}"), "<redacted> ClientSecret(<redacted>)");
/// assert_eq!(secret.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(Box<str>);

impl ClientSecret {
    /// A secret from its value.
    pub fn new(secret: impl Into<String>) -> Self {
        ClientSecret(secret.into().into_boxed_str())
    }

    /// The secret itself, to send to the token endpoint. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

impl fmt::Display for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
