//! The callers' secret key (`BLUEPRINT_SECRET_KEY`), checked in constant time.

use std::fmt;

use axum::extract::FromRequestParts;
use http::StatusCode;
use http::request::Parts;
use subtle::{Choice, ConstantTimeEq};

use crate::app::ProxyState;
use crate::error::ApiError;

/// The environment variable that holds the key callers must send.
pub const SECRET_KEY_VAR: &str = "BLUEPRINT_SECRET_KEY";

/// The shortest key accepted, in bytes.
pub const MIN_SECRET_KEY_LEN: usize = 16;

/// The key callers send as `Authorization: Bearer <key>`. `Debug` prints `<redacted>`.
///
/// ```
/// use blueprint_proxy::SecretKey;
///
/// let key = SecretKey::new("correct-horse-battery-staple")?;
/// assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");
/// assert!(SecretKey::new("short").is_err());
/// # Ok::<(), blueprint_proxy::SecretKeyError>(())
/// ```
#[derive(Clone)]
pub struct SecretKey(Box<[u8]>);

impl SecretKey {
    /// A key from its text: at least [`MIN_SECRET_KEY_LEN`] bytes, no spaces or control
    /// characters (it travels in a header).
    ///
    /// # Errors
    ///
    /// [`SecretKeyError`] saying what is wrong and how to make a good one.
    pub fn new(key: impl Into<String>) -> Result<Self, SecretKeyError> {
        let key: String = key.into();
        if key.is_empty() {
            return Err(SecretKeyError::Missing);
        }
        if key.len() < MIN_SECRET_KEY_LEN {
            return Err(SecretKeyError::TooShort { len: key.len() });
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretKeyError::NotPrintable);
        }
        Ok(SecretKey(key.into_bytes().into_boxed_slice()))
    }

    /// The key from [`SECRET_KEY_VAR`].
    ///
    /// # Errors
    ///
    /// [`SecretKeyError`] when it is not set (or not UTF-8) or not a good key.
    pub fn from_env() -> Result<Self, SecretKeyError> {
        match std::env::var(SECRET_KEY_VAR) {
            Ok(key) => Self::new(key),
            Err(std::env::VarError::NotPresent) => Err(SecretKeyError::Missing),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretKeyError::NotPrintable),
        }
    }

    /// Whether `presented` is the key; takes the same time wherever they differ.
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        // Only the length leaks: keys of another length are refused at once.
        if presented.len() != self.0.len() {
            return false;
        }
        // Compared eight bytes at a time with `subtle`'s `u64` equality: `ct_eq` on byte
        // slices passes every byte through an optimization barrier, and words need an
        // eighth of them (about 340 fewer instructions per call for the 48-character key of
        // benches/proxy.sh). Every word is compared whatever the earlier ones said, and the
        // results are combined with `&`.
        let word = |chunk: &[u8]| {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(bytes)
        };
        let mut equal = Choice::from(1);
        let mut at = 0;
        while at < presented.len() {
            let end = presented.len().min(at + 8);
            equal &= word(&self.0[at..end]).ct_eq(&word(&presented[at..end]));
            at = end;
        }
        bool::from(equal)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Why a secret key was refused; says how to set a good one and never repeats the key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretKeyError {
    /// No key is set.
    Missing,
    /// The key is shorter than [`MIN_SECRET_KEY_LEN`] bytes.
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The key holds spaces, control or non-ASCII characters.
    NotPrintable,
}

const HOW_TO_SET: &str = "set it to a random string before starting the proxy, for example \
     `export BLUEPRINT_SECRET_KEY=$(openssl rand -hex 32)`; callers then send \
     `Authorization: Bearer <that key>`";

impl fmt::Display for SecretKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretKeyError::Missing => {
                write!(f, "{SECRET_KEY_VAR} is not set: {HOW_TO_SET}")
            }
            SecretKeyError::TooShort { len } => write!(
                f,
                "{SECRET_KEY_VAR} is {len} characters long; it must be at least \
                 {MIN_SECRET_KEY_LEN}: {HOW_TO_SET}"
            ),
            SecretKeyError::NotPrintable => write!(
                f,
                "{SECRET_KEY_VAR} holds spaces, control or non-ASCII characters, which \
                 cannot travel in a header: {HOW_TO_SET}"
            ),
        }
    }
}

impl std::error::Error for SecretKeyError {}

/// The bearer key a request presents in `Authorization`, if any.
fn presented_key(headers: &http::HeaderMap) -> Option<&[u8]> {
    headers
        .get(http::header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes)
        .and_then(|value| {
            let (scheme, rest) = value.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| rest.trim_ascii())
        })
}

/// Proof that the request carried the secret key; an extractor that refuses with 401.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authorized;

impl FromRequestParts<ProxyState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ProxyState,
    ) -> Result<Self, Self::Rejection> {
        authorize(parts, state)
    }
}

/// What the [`Authorized`] extractor does, for the edge's fast path to `/proxy`, which
/// runs no extractor ([`crate::edge::Front`]).
pub(crate) fn authorize(parts: &Parts, state: &ProxyState) -> Result<Authorized, ApiError> {
    let presented = presented_key(&parts.headers);
    let authorized = presented.is_some_and(|key| state.secret_key().matches(key));
    if !authorized {
        // At DEBUG: an unauthenticated flood must not flood the logs. Never the key.
        tracing::debug!(
            method = %parts.method,
            path = parts.uri.path(),
            key_sent = presented.is_some(),
            "refused a call without the proxy's secret key"
        );
    }
    match presented {
        Some(_) if authorized => Ok(Authorized),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "the bearer key in `Authorization` is not the proxy's key; send \
                 `Authorization: Bearer <{SECRET_KEY_VAR}>`"
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "this route needs the proxy's secret key: send `Authorization: Bearer \
                 <{SECRET_KEY_VAR}>`"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_themselves() {
        let key = SecretKey::new("0123456789abcdef").unwrap();
        assert!(key.matches(b"0123456789abcdef"));
        assert!(!key.matches(b"0123456789abcdeF"));
        assert!(!key.matches(b"0123456789abcde"));
        assert!(!key.matches(b""));
        // A difference in any byte of any word, the last, shorter one included.
        let key = SecretKey::new("0123456789abcdefghijk").unwrap();
        assert!(key.matches(b"0123456789abcdefghijk"));
        for at in 0..21 {
            let mut other = b"0123456789abcdefghijk".to_vec();
            other[at] ^= 1;
            assert!(!key.matches(&other), "a difference at byte {at}");
        }
        assert!(!key.matches(b"0123456789abcdefghijk\0"));
    }

    #[test]
    fn errors_say_how_to_set_a_key_and_never_repeat_it() {
        let err = SecretKey::new("hunter2").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("BLUEPRINT_SECRET_KEY"), "{text}");
        assert!(text.contains("openssl rand"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(SecretKey::new("").unwrap_err(), SecretKeyError::Missing);
        assert_eq!(
            SecretKey::new("has a space in it, sadly").unwrap_err(),
            SecretKeyError::NotPrintable
        );
    }
}
