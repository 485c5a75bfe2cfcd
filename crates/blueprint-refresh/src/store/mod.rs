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
//! file that several processes on one machine can share; `PostgresStore` (feature
//! `postgres`) keeps them in PostgreSQL, shared by replicas on many machines. The last two
//! can encrypt tokens at rest with an [`EncryptionKey`], in the same format.
//!
//! What one process writes, the others learn through [`TokenStore::changes`]: a
//! [`ChangeFeed`] of [`Change`]s, so that a cache of records can drop what another replica
//! deleted or refreshed.

use std::collections::BTreeMap;
use std::fmt;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use blueprint_core::{AccessToken, ConnectionId};

use crate::Secret;

mod changes;
mod codec;
mod crypto;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

pub use changes::{Change, ChangeBroadcast, ChangeFeed};
pub use crypto::{DecryptError, EncryptionKey, InvalidKeyError, MissingKeyError};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{SQLITE_CHANGE_POLL, SqliteStore};

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

/// A connection's parameters, by name (`subdomain` → `acme`): what a blueprint's
/// `${connection.NAME}` placeholders are filled with. Not secrets.
pub type ConnectionParams = BTreeMap<String, String>;

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
    /// The connection's parameters (Zendesk's subdomain); empty for most APIs, and for
    /// records written before they existed. Stored in clear: they are not secrets.
    pub params: ConnectionParams,
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
            params: ConnectionParams::new(),
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

    /// Sets the connection's parameters.
    #[must_use]
    pub fn with_params(mut self, params: ConnectionParams) -> Self {
        self.params = params;
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

    /// A feed of the records written or deleted from now on, by this process or any other
    /// sharing the store; `None` when the store cannot tell (the default).
    ///
    /// # The guarantee
    ///
    /// Every write or delete committed after this call returns is reported to the feed as
    /// [`Change::Key`] within a bound: at once for [`MemoryStore`]; within
    /// [`SQLITE_CHANGE_POLL`] (plus a query) for [`SqliteStore`]; as soon as PostgreSQL
    /// delivers the `NOTIFY` (milliseconds) for `PostgresStore`. Whenever a feed cannot
    /// vouch for that (its `LISTEN` connection dropped, a poll failed, the reader fell more
    /// than [`ChangeBroadcast::DEFAULT_CAPACITY`] changes behind), it sends
    /// [`Change::Resync`] once it is tracking again: the reader must then drop everything
    /// it cached from the store, since any record may have changed meanwhile. While a feed
    /// is not tracking (the database is down), nothing arrives.
    ///
    /// Delivery is at least once: a key may be reported twice, or for a write that changed
    /// nothing visible, and a feed may start with changes made just before it was created.
    /// Order across keys is not promised. A feed holds a bounded buffer, so one that nobody
    /// reads costs no more memory over time; it ends (`None`) when the store is closed or
    /// dropped. Each call returns a new, independent feed.
    fn changes(&self) -> Option<ChangeFeed> {
        None
    }

    /// Checks that this store can read the credentials it holds with the key it was given:
    /// what a program runs at start, so that a missing or wrong encryption key is one clear
    /// error there instead of a failure per call later.
    ///
    /// Counts the encrypted and plaintext records and decrypts one encrypted record (the
    /// most recently written). Stores that do not encrypt report zero of each (the
    /// default).
    ///
    /// # Errors
    ///
    /// [`StoreError::MissingKey`] when records are encrypted and the store has no key,
    /// [`StoreError::Decrypt`] when the key is not the one they were written with, or the
    /// store's own failure to read.
    fn check_encryption(&self) -> StoreFuture<'_, EncryptionCheck> {
        Box::pin(ready(Ok(EncryptionCheck::default())))
    }
}

/// What [`TokenStore::check_encryption`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncryptionCheck {
    /// Records whose tokens are encrypted (one of them was decrypted with the key).
    pub encrypted: u64,
    /// Records whose tokens are stored in clear (written before encryption was turned on);
    /// they are encrypted the next time they are written.
    pub plaintext: u64,
}

impl EncryptionCheck {
    /// A check that found `encrypted` and `plaintext` records: for stores implemented
    /// outside this crate.
    pub fn new(encrypted: u64, plaintext: u64) -> Self {
        EncryptionCheck {
            encrypted,
            plaintext,
        }
    }
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
    fn changes(&self) -> Option<ChangeFeed> {
        (**self).changes()
    }
    fn check_encryption(&self) -> StoreFuture<'_, EncryptionCheck> {
        (**self).check_encryption()
    }
}

/// A token store could not read or write credentials. Never contains a secret (no token,
/// no database password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's settings are not usable (a URL that does not parse, a bad schema
    /// name); nothing was tried.
    #[error("the token database settings are not usable: {0}")]
    Config(String),
    /// The database could not be opened or reached when the store was opened (nothing
    /// listens at the address, the login was refused, the directory does not exist...).
    #[error("cannot open the token database at {target}: {message}")]
    Connect {
        /// Where: ``db.internal:5432 (PostgreSQL, database `tokens`)``, `` `./blueprint.db` (SQLite)``.
        target: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// The database could not be reached in time for an operation (it is down or
    /// overloaded); the same operation may succeed later, with no restart.
    #[error("the token database at {target} is unavailable while {operation}: {message}")]
    Unavailable {
        /// Where.
        target: String,
        /// What the store was doing.
        operation: &'static str,
        /// What went wrong.
        message: String,
    },
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

    /// Whether the database could not be reached in time ([`StoreError::Unavailable`]):
    /// a failure that passes once the database is back.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Whether stored credentials could not be read with the configured encryption key:
    /// it is missing ([`StoreError::MissingKey`]) or not the one they were written with
    /// ([`StoreError::Decrypt`]).
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            StoreError::MissingKey { .. } | StoreError::Decrypt { .. }
        )
    }
}

#[cfg(test)]
mod tests;
