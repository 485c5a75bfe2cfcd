//! A string that must never be shown: refresh tokens, client secrets, authorization codes,
//! keys.

use std::fmt;

/// A secret string: a refresh token, a client secret, an authorization code, a key.
///
/// The one secret type of every Blueprint crate. `Debug` and `Display` print `<redacted>`;
/// the value is only reachable through [`Secret::expose`]. It has no `PartialEq`, so that
/// comparing secrets is a deliberate act ([`Secret::ct_eq`] compares in constant time).
///
/// ```
/// use blueprint_core::Secret;
///
/// let secret = Secret::new("s3cr3t");
/// assert_eq!(format!("{secret} {secret:?}"), "<redacted> Secret(<redacted>)");
/// assert_eq!(secret.expose(), "s3cr3t");
/// assert!(secret.ct_eq("s3cr3t") && !secret.ct_eq("s3cr3"));
/// ```
#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().into_boxed_str())
    }

    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this secret, comparing in time that depends only on the lengths
    /// (so that a caller guessing a key learns nothing from how long a refusal takes).
    pub fn ct_eq(&self, other: impl AsRef<[u8]>) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.as_bytes().ct_eq(other.as_ref()).into()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
