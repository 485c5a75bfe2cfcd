//! Where credentials live between refreshes and between processes.
//!
//! A [`TokenStore`] keeps one [`TokenRecord`] per (integration, connection id), each with a
//! version that every write increments. [`TokenStore::compare_and_swap`] writes only when
//! the version is still the one read, which is what lets several processes share one store
//! without two of them rotating the same refresh token: the token source takes a short
//! *lease* on the record by compare-and-swap before it calls the token endpoint, and the
//! others wait for the new token instead of calling too.
//!
//! [`MemoryStore`] keeps records in this process; [`SqliteStore`] keeps them in a SQLite
//! file that several processes on one machine can share, optionally encrypted with an
//! [`EncryptionKey`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use blueprint_core::{AccessToken, ConnectionId};

use crate::Secret;

mod crypto;
mod memory;
mod sqlite;

pub use crypto::{DecryptError, EncryptionKey, InvalidKeyError, MissingKeyError};
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// The future a [`TokenStore`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Which record: the integration (e.g. `"intercom"`) and the connection within it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StoreKey {
    integration: Arc<str>,
    connection: ConnectionId,
}

impl StoreKey {
    /// The key of `connection` in `integration`.
    pub fn new(integration: impl Into<Arc<str>>, connection: ConnectionId) -> Self {
        StoreKey {
            integration: integration.into(),
            connection,
        }
    }

    /// The integration's name.
    pub fn integration(&self) -> &str {
        &self.integration
    }

    /// The connection id.
    pub fn connection(&self) -> &ConnectionId {
        &self.connection
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.integration, self.connection)
    }
}

/// Whether a connection's credentials work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenStatus {
    /// Usable, or refreshable.
    #[default]
    Ok,
    /// Refused for good: a person has to authorize the connection again.
    NeedsReauthorization,
    /// The last refresh failed for a reason that may pass (5xx, network).
    RefreshFailing,
}

impl TokenStatus {
    /// The name stored in a database column.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Ok => "ok",
            TokenStatus::NeedsReauthorization => "needs_reauthorization",
            TokenStatus::RefreshFailing => "refresh_failing",
        }
    }

    /// The status named `name`, as written by [`TokenStatus::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ok" => Some(TokenStatus::Ok),
            "needs_reauthorization" => Some(TokenStatus::NeedsReauthorization),
            "refresh_failing" => Some(TokenStatus::RefreshFailing),
            _ => None,
        }
    }
}

/// A claim, taken by compare-and-swap, that one token source is refreshing the record now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it (a random id per token source).
    pub holder: String,
    /// When it lapses if the holder never finishes (it crashed).
    pub until: SystemTime,
}

/// The credentials of one connection and what is known about them.
///
/// `Debug` never shows a secret: the tokens print `<redacted>`.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// The access token.
    pub access_token: AccessToken,
    /// The refresh token, if the provider gave one.
    pub refresh_token: Option<Secret>,
    /// When the access token expires; `None` when it does not (Intercom's).
    pub expires_at: Option<SystemTime>,
    /// The token type the provider named (`"bearer"`).
    pub token_type: String,
    /// The scopes granted, if the provider said.
    pub scopes: Vec<String>,
    /// Whether the credentials work.
    pub status: TokenStatus,
    /// What went wrong last, never containing a secret.
    pub last_error: Option<String>,
    /// When the record was last written.
    pub updated_at: SystemTime,
    /// Who is refreshing it now, if anyone.
    pub lease: Option<Lease>,
}

impl TokenRecord {
    /// A record for a bearer `access_token` with no refresh token, no expiry and status
    /// [`TokenStatus::Ok`], written at `now`.
    pub fn new(access_token: AccessToken, now: SystemTime) -> Self {
        TokenRecord {
            access_token,
            refresh_token: None,
            expires_at: None,
            token_type: String::from("bearer"),
            scopes: Vec::new(),
            status: TokenStatus::Ok,
            last_error: None,
            updated_at: now,
            lease: None,
        }
    }

    /// Sets the refresh token.
    #[must_use]
    pub fn with_refresh_token(mut self, refresh_token: impl Into<Secret>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }

    /// Sets when the access token expires.
    #[must_use]
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }
}

/// A record as stored, with its version.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The record.
    pub record: TokenRecord,
    /// Incremented by every write; what [`TokenStore::compare_and_swap`] compares.
    pub version: u64,
}

/// What a [`TokenStore::compare_and_swap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// The record was written; this is its new version.
    Swapped(u64),
    /// The record had changed (or existed, or did not) since it was read; nothing was written.
    Conflict,
}

/// Keeps connections' credentials, each with a version that every write increments.
///
/// [`TokenStore::compare_and_swap`] writes only when the version is still the one read:
/// that is what lets several processes share one store without two of them rotating the
/// same refresh token. Methods return boxed futures so that `Arc<dyn TokenStore>` works:
/// stores are only reached when a token is loaded or refreshed, never per request.
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The record of `key`, if any.
    fn get<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredToken>>;

    /// Writes `record` whatever is there, returning the new version.
    fn put<'a>(&'a self, key: &'a StoreKey, record: TokenRecord) -> StoreFuture<'a, u64>;

    /// Writes `record` only if the stored version is `expected` (`None`: only if there is
    /// no record yet).
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a StoreKey,
        expected: Option<u64>,
        record: TokenRecord,
    ) -> StoreFuture<'a, Swap>;

    /// Removes the record of `key`; whether there was one.
    fn delete<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, bool>;

    /// The connections that have a record in `integration`, sorted.
    fn list<'a>(&'a self, integration: &'a str) -> StoreFuture<'a, Vec<ConnectionId>>;
}

impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn get<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredToken>> {
        (**self).get(key)
    }
    fn put<'a>(&'a self, key: &'a StoreKey, record: TokenRecord) -> StoreFuture<'a, u64> {
        (**self).put(key, record)
    }
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a StoreKey,
        expected: Option<u64>,
        record: TokenRecord,
    ) -> StoreFuture<'a, Swap> {
        (**self).compare_and_swap(key, expected, record)
    }
    fn delete<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, bool> {
        (**self).delete(key)
    }
    fn list<'a>(&'a self, integration: &'a str) -> StoreFuture<'a, Vec<ConnectionId>> {
        (**self).list(integration)
    }
}

/// A token store could not read or write credentials. Never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (cannot open the file, locked for too long, disk full...).
    #[error("the token database failed while {operation}: {message}")]
    Database {
        /// What the store was doing.
        operation: &'static str,
        /// What the database said.
        message: String,
    },
    /// The database's schema could not be brought up to date.
    #[error("the token database could not be migrated: {0}")]
    Migrate(String),
    /// Stored credentials could not be decrypted with the configured key.
    #[error("the credentials of `{key}` could not be read: {source}")]
    Decrypt {
        /// Whose credentials.
        key: StoreKey,
        /// Why.
        #[source]
        source: DecryptError,
    },
    /// Stored credentials are encrypted and no key is configured.
    #[error("the credentials of `{key}` could not be read: {source}")]
    MissingKey {
        /// Whose credentials.
        key: StoreKey,
        /// Why.
        #[source]
        source: MissingKeyError,
    },
    /// A stored record is not valid (a column holds something this crate never writes).
    #[error("the stored credentials of `{key}` are corrupt: {what}")]
    Corrupt {
        /// Whose credentials.
        key: StoreKey,
        /// What is wrong, never the value itself.
        what: String,
    },
}

impl StoreError {
    pub(crate) fn database(operation: &'static str, error: &impl fmt::Display) -> Self {
        StoreError::Database {
            operation,
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
