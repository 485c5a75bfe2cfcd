//! Encryption at rest: AES-256-GCM with a random nonce per write.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Secret;

const NONCE_LEN: usize = 12;

/// A 32-byte AES-256-GCM key that encrypts stored tokens.
///
/// Give it as base64 (`openssl rand -base64 32`). Every write uses a fresh random nonce;
/// the ciphertext is bound to its integration, connection and column, so a row copied
/// onto another connection does not decrypt. `Debug` prints `<redacted>`.
#[derive(Clone)]
pub struct EncryptionKey {
    cipher: Aes256Gcm,
}

impl EncryptionKey {
    /// The key encoded as standard base64 (44 characters, 32 bytes once decoded).
    ///
    /// # Errors
    ///
    /// [`InvalidKeyError`] when the text is not base64 or does not decode to 32 bytes;
    /// the error never repeats the text.
    pub fn from_base64(encoded: &str) -> Result<Self, InvalidKeyError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| InvalidKeyError {
                reason: "it is not valid base64".into(),
            })?;
        Self::from_bytes(&bytes)
    }

    /// The key from its 32 raw bytes.
    ///
    /// # Errors
    ///
    /// [`InvalidKeyError`] when `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidKeyError> {
        if bytes.len() != 32 {
            return Err(InvalidKeyError {
                reason: format!("it is {} bytes long, not 32", bytes.len()),
            });
        }
        let key = Key::<Aes256Gcm>::from_slice(bytes);
        Ok(EncryptionKey {
            cipher: Aes256Gcm::new(key),
        })
    }

    /// A new random key, and its base64 text to keep somewhere safe.
    pub fn generate() -> (Self, Secret) {
        let key = Aes256Gcm::generate_key(OsRng);
        let text = Secret::new(STANDARD.encode(key));
        (
            EncryptionKey {
                cipher: Aes256Gcm::new(&key),
            },
            text,
        )
    }

    /// `base64(nonce || ciphertext)` of `plaintext`, authenticated with `aad`.
    /// `None` only for a plaintext too long for AES-GCM (64 GiB).
    pub(crate) fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Option<String> {
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Some(STANDARD.encode(out))
    }

    /// The plaintext of what [`EncryptionKey::encrypt`] made with the same `aad`.
    pub(crate) fn decrypt(&self, encoded: &str, aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| DecryptError { _private: () })?;
        if bytes.len() < NONCE_LEN {
            return Err(DecryptError { _private: () });
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| DecryptError { _private: () })
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

/// The text given as an encryption key is not a base64 32-byte key.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "invalid encryption key: {reason} (expected 32 random bytes in base64, e.g. from `openssl rand -base64 32`)"
)]
pub struct InvalidKeyError {
    reason: String,
}

/// Stored credentials did not decrypt: the key is not the one they were written with, or
/// the stored value was altered.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "decryption failed: the encryption key does not match the one these credentials were written with \
     (or the stored value was altered); use the original key, or authorize the connection again"
)]
pub struct DecryptError {
    _private: (),
}

/// Stored credentials are encrypted but the store was opened without a key.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "they are encrypted and no encryption key is configured; open the store with the key they were written with"
)]
pub struct MissingKeyError {
    pub(crate) _private: (),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_uses_a_fresh_nonce_and_binds_the_aad() {
        let (key, text) = EncryptionKey::generate();
        let again = EncryptionKey::from_base64(text.expose()).unwrap();
        let a = key.encrypt(b"refresh-secret", b"intercom/c1").unwrap();
        let b = key.encrypt(b"refresh-secret", b"intercom/c1").unwrap();
        assert_ne!(a, b, "two writes of one value must differ (random nonce)");
        assert!(!a.contains("refresh-secret"));
        assert_eq!(
            again.decrypt(&a, b"intercom/c1").unwrap(),
            b"refresh-secret"
        );
        assert!(again.decrypt(&a, b"intercom/c2").is_err(), "aad is bound");
    }

    #[test]
    fn wrong_key_is_an_error_not_garbage() {
        let (key, _) = EncryptionKey::generate();
        let (other, _) = EncryptionKey::generate();
        let sealed = key.encrypt(b"x", b"").unwrap();
        let err = other.decrypt(&sealed, b"").unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let err = EncryptionKey::from_base64("not base64 at all!").unwrap_err();
        assert!(!err.to_string().contains("not base64 at all"), "{err}");
        let short = STANDARD.encode([7u8; 16]);
        let err = EncryptionKey::from_base64(&short).unwrap_err();
        assert!(err.to_string().contains("16 bytes"), "{err}");
        let (key, _) = EncryptionKey::generate();
        assert_eq!(format!("{key:?}"), "EncryptionKey(<redacted>)");
    }
}
