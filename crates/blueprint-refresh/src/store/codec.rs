//! What the SQL stores share: the columns of a record, sealed and opened the same way
//! whichever database holds them, so that one `EncryptionKey` reads both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint_core::AccessToken;

use super::crypto::{EncryptionKey, MissingKeyError};
use super::{ConnectionParams, Lease, StoreError, StoreKey, StoredToken, TokenRecord, TokenStatus};
use crate::Secret;

/// A record as its columns hold it: tokens sealed when the store has a key, times in
/// milliseconds since the UNIX epoch.
#[derive(Debug)]
pub(super) struct Columns {
    pub(super) access_token: String,
    pub(super) refresh_token: Option<String>,
    pub(super) encrypted: bool,
    pub(super) expires_at_ms: Option<i64>,
    pub(super) token_type: String,
    pub(super) scopes: String,
    pub(super) status: &'static str,
    pub(super) last_error: Option<String>,
    pub(super) lease_holder: Option<String>,
    pub(super) lease_until_ms: Option<i64>,
    pub(super) updated_at_ms: i64,
    /// The connection's parameters as a JSON object, `None` for none.
    pub(super) params: Option<String>,
}

impl Columns {
    /// The columns of `record` for `key`, its tokens encrypted with `cipher` if given.
    pub(super) fn seal(
        cipher: Option<&EncryptionKey>,
        key: &StoreKey,
        record: &TokenRecord,
    ) -> Result<Self, StoreError> {
        let (access_token, refresh_token, encrypted) = match cipher {
            Some(cipher) => {
                let seal = |column: &str, value: &str| {
                    cipher
                        .encrypt(value.as_bytes(), &aad(key, column))
                        .ok_or_else(|| StoreError::Corrupt {
                            key: key.clone(),
                            what: format!("the {column} is too long to encrypt"),
                        })
                };
                let access = seal("access_token", record.access_token.secret())?;
                let refresh = match &record.refresh_token {
                    Some(token) => Some(seal("refresh_token", token.expose())?),
                    None => None,
                };
                (access, refresh, true)
            }
            None => (
                record.access_token.secret().to_owned(),
                record.refresh_token.as_ref().map(|t| t.expose().to_owned()),
                false,
            ),
        };
        Ok(Columns {
            access_token,
            refresh_token,
            encrypted,
            expires_at_ms: record.expires_at.map(millis),
            token_type: record.token_type.clone(),
            scopes: record.scopes.join(" "),
            status: record.status.as_str(),
            last_error: record.last_error.clone(),
            lease_holder: record.lease.as_ref().map(|l| l.holder.clone()),
            lease_until_ms: record.lease.as_ref().map(|l| millis(l.until)),
            updated_at_ms: millis(record.updated_at),
            params: encode_params(&record.params),
        })
    }
}

/// A row as read, before its tokens are opened.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) access_token: String,
    pub(super) refresh_token: Option<String>,
    pub(super) encrypted: bool,
    pub(super) expires_at_ms: Option<i64>,
    pub(super) token_type: String,
    pub(super) scopes: String,
    pub(super) status: String,
    pub(super) last_error: Option<String>,
    pub(super) lease_holder: Option<String>,
    pub(super) lease_until_ms: Option<i64>,
    pub(super) updated_at_ms: i64,
    pub(super) params: Option<String>,
    pub(super) version: i64,
}

impl Row {
    /// The record of `key`, its tokens decrypted with `cipher` when they are encrypted.
    pub(super) fn open(
        self,
        cipher: Option<&EncryptionKey>,
        key: &StoreKey,
    ) -> Result<StoredToken, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt {
            key: key.clone(),
            what: what.to_owned(),
        };
        let encrypted = self.encrypted;
        let open = |name: &str, value: String| -> Result<String, StoreError> {
            if !encrypted {
                return Ok(value);
            }
            let plain = open_sealed(cipher, key, name, &value)?;
            String::from_utf8(plain).map_err(|_| corrupt("a decrypted token is not UTF-8"))
        };
        let access = AccessToken::new(open("access_token", self.access_token)?)
            .map_err(|e| corrupt(&format!("the access token is unusable: {e}")))?;
        let refresh_token = match self.refresh_token {
            Some(value) => Some(Secret::new(open("refresh_token", value)?)),
            None => None,
        };
        let status = TokenStatus::parse(&self.status).ok_or_else(|| corrupt("unknown status"))?;
        let params = match self.params.as_deref() {
            None => ConnectionParams::new(),
            Some(text) => decode_params(text).ok_or_else(|| {
                corrupt("the connection parameters are not a JSON object of strings")
            })?,
        };
        let record = TokenRecord {
            access_token: access,
            refresh_token,
            expires_at: self.expires_at_ms.map(from_millis),
            token_type: self.token_type,
            scopes: self.scopes.split_whitespace().map(str::to_owned).collect(),
            status,
            last_error: self.last_error,
            updated_at: from_millis(self.updated_at_ms),
            lease: match (self.lease_holder, self.lease_until_ms) {
                (Some(holder), Some(until)) => Some(Lease {
                    holder,
                    until: from_millis(until),
                }),
                _ => None,
            },
            params,
        };
        Ok(StoredToken {
            record,
            version: u64::try_from(self.version).map_err(|_| corrupt("negative version"))?,
        })
    }
}

/// The parameters as their column holds them: a JSON object of strings, `None` for none
/// (so that a connection without any looks like a row written before the column existed).
fn encode_params(params: &ConnectionParams) -> Option<String> {
    if params.is_empty() {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
        .collect();
    Some(serde_json::Value::Object(object).to_string())
}

/// The parameters of a column's JSON object; `None` when it is not an object of strings.
fn decode_params(text: &str) -> Option<ConnectionParams> {
    let serde_json::Value::Object(object) = serde_json::from_str(text).ok()? else {
        return None;
    };
    object
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(value) => Some((name, value)),
            _ => None,
        })
        .collect()
}

/// Decrypts one sealed column of `key`: the typed error when there is no key or another.
pub(super) fn open_sealed(
    cipher: Option<&EncryptionKey>,
    key: &StoreKey,
    column: &str,
    value: &str,
) -> Result<Vec<u8>, StoreError> {
    let Some(cipher) = cipher else {
        return Err(StoreError::MissingKey {
            key: key.clone(),
            source: MissingKeyError { _private: () },
        });
    };
    cipher
        .decrypt(value, &aad(key, column))
        .map_err(|source| StoreError::Decrypt {
            key: key.clone(),
            source,
        })
}

/// The associated data that binds a ciphertext to its row and column.
fn aad(key: &StoreKey, column: &str) -> Vec<u8> {
    format!(
        "blueprint-refresh/v1\0{}\0{}\0{column}",
        key.integration(),
        key.connection()
    )
    .into_bytes()
}

/// Milliseconds since the UNIX epoch; 0 before it, `i64::MAX` past year 292 million.
pub(super) fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or_default())
}

/// A version as the SQL stores keep it (a signed 64-bit column).
pub(super) fn version_column(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// A version read from a SQL store.
pub(super) fn version_value(version: i64) -> u64 {
    u64::try_from(version).unwrap_or_default()
}
