use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueprint_core::{AccessToken, ConnectionId};
use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments as _, Row as _};

use super::crypto::{EncryptionKey, MissingKeyError};
use super::{
    Lease, StoreError, StoreFuture, StoreKey, StoredToken, Swap, TokenRecord, TokenStatus,
    TokenStore,
};
use crate::Secret;

/// How long a write waits for another process's write to finish before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`TokenStore`] in a SQLite file: the embedded default.
///
/// The file is opened in WAL mode with a busy timeout, so several processes on one machine
/// can share it; compare-and-swap is one `UPDATE … WHERE version = ?`, atomic across them.
/// The schema is created and migrated on open (migrations are embedded in the crate).
///
/// With [`SqliteStore::with_encryption`] the access and refresh tokens are written
/// encrypted (AES-256-GCM). Rows written before encryption was turned on stay readable;
/// an encrypted row read without the key, or with another key, is a
/// [`StoreError::MissingKey`] or [`StoreError::Decrypt`], never garbage.
///
/// ```
/// use blueprint_refresh::{SqliteStore, StoreKey, TokenRecord, TokenStore};
/// use blueprint_core::{AccessToken, ConnectionId};
/// use std::time::SystemTime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("doc-store-{}.db", std::process::id()));
/// let store = SqliteStore::open(&path).await?;
/// let key = StoreKey::new("intercom", ConnectionId::new("acme"));
/// let record = TokenRecord::new(AccessToken::new("tok")?, SystemTime::now());
/// store.put(&key, record).await?;
/// let stored = store.get(&key).await?.expect("just written");
/// assert_eq!(stored.record.access_token.secret(), "tok");
/// # store.close().await;
/// # for suffix in ["", "-wal", "-shm"] {
/// #     let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
/// # }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    key: Option<EncryptionKey>,
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("encrypted", &self.key.is_some())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates its schema.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the file cannot be opened, [`StoreError::Migrate`]
    /// when the schema cannot be brought up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::database("opening the database", &e))?;
        migrate(&pool).await?;
        Ok(SqliteStore {
            pool,
            key: None,
            path,
        })
    }

    /// Encrypts tokens written from now on with `key`, and decrypts encrypted rows with it.
    #[must_use]
    pub fn with_encryption(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pool's connections, waiting for them.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn arguments(
        &self,
        key: &StoreKey,
        record: &TokenRecord,
        expected: Option<u64>,
    ) -> Result<SqliteArguments<'static>, StoreError> {
        let (access, refresh, encrypted) = match &self.key {
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
        let mut args = SqliteArguments::default();
        let binds: Result<(), sqlx::error::BoxDynError> = (|| {
            args.add(key.integration().to_owned())?;
            args.add(key.connection().as_str().to_owned())?;
            args.add(access)?;
            args.add(refresh)?;
            args.add(i64::from(encrypted))?;
            args.add(record.expires_at.map(millis))?;
            args.add(record.token_type.clone())?;
            args.add(record.scopes.join(" "))?;
            args.add(record.status.as_str())?;
            args.add(record.last_error.clone())?;
            args.add(record.lease.as_ref().map(|l| l.holder.clone()))?;
            args.add(record.lease.as_ref().map(|l| millis(l.until)))?;
            args.add(millis(record.updated_at))?;
            if let Some(expected) = expected {
                args.add(i64::try_from(expected).unwrap_or(i64::MAX))?;
            }
            Ok(())
        })();
        binds.map_err(|e| StoreError::database("binding values", &e))?;
        Ok(args)
    }

    fn decode(&self, key: &StoreKey, row: &SqliteRow) -> Result<StoredToken, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt {
            key: key.clone(),
            what: what.to_owned(),
        };
        let column = |e: sqlx::Error| StoreError::database("reading a row", &e);
        let encrypted: i64 = row.try_get("encrypted").map_err(column)?;
        let open = |name: &str, value: String| -> Result<String, StoreError> {
            if encrypted == 0 {
                return Ok(value);
            }
            let Some(cipher) = &self.key else {
                return Err(StoreError::MissingKey {
                    key: key.clone(),
                    source: MissingKeyError { _private: () },
                });
            };
            let plain =
                cipher
                    .decrypt(&value, &aad(key, name))
                    .map_err(|source| StoreError::Decrypt {
                        key: key.clone(),
                        source,
                    })?;
            String::from_utf8(plain).map_err(|_| corrupt("a decrypted token is not UTF-8"))
        };
        let access: String = row.try_get("access_token").map_err(column)?;
        let access = AccessToken::new(open("access_token", access)?)
            .map_err(|e| corrupt(&format!("the access token is unusable: {e}")))?;
        let refresh: Option<String> = row.try_get("refresh_token").map_err(column)?;
        let refresh_token = match refresh {
            Some(value) => Some(Secret::new(open("refresh_token", value)?)),
            None => None,
        };
        let status: String = row.try_get("status").map_err(column)?;
        let status = TokenStatus::parse(&status).ok_or_else(|| corrupt("unknown status"))?;
        let scopes: String = row.try_get("scopes").map_err(column)?;
        let lease_holder: Option<String> = row.try_get("lease_holder").map_err(column)?;
        let lease_until: Option<i64> = row.try_get("lease_until_ms").map_err(column)?;
        let version: i64 = row.try_get("version").map_err(column)?;
        let record = TokenRecord {
            access_token: access,
            refresh_token,
            expires_at: row
                .try_get::<Option<i64>, _>("expires_at_ms")
                .map_err(column)?
                .map(from_millis),
            token_type: row.try_get("token_type").map_err(column)?,
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            status,
            last_error: row.try_get("last_error").map_err(column)?,
            updated_at: from_millis(row.try_get("updated_at_ms").map_err(column)?),
            lease: match (lease_holder, lease_until) {
                (Some(holder), Some(until)) => Some(Lease {
                    holder,
                    until: from_millis(until),
                }),
                _ => None,
            },
        };
        Ok(StoredToken {
            record,
            version: u64::try_from(version).map_err(|_| corrupt("negative version"))?,
        })
    }
}

const COLUMNS: &str = "access_token, refresh_token, encrypted, expires_at_ms, token_type, scopes, \
                       status, last_error, lease_holder, lease_until_ms, updated_at_ms, version";

const INSERT: &str = "INSERT INTO blueprint_tokens (integration, connection_id, access_token, \
     refresh_token, encrypted, expires_at_ms, token_type, scopes, status, last_error, \
     lease_holder, lease_until_ms, updated_at_ms, version) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1)";

const SET: &str = "access_token = ?3, refresh_token = ?4, encrypted = ?5, expires_at_ms = ?6, \
     token_type = ?7, scopes = ?8, status = ?9, last_error = ?10, lease_holder = ?11, \
     lease_until_ms = ?12, updated_at_ms = ?13";

impl TokenStore for SqliteStore {
    fn get<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredToken>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {COLUMNS} FROM blueprint_tokens WHERE integration = ?1 AND connection_id = ?2"
            );
            let row = sqlx::query(&sql)
                .bind(key.integration())
                .bind(key.connection().as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| StoreError::database("reading credentials", &e))?;
            row.map(|row| self.decode(key, &row)).transpose()
        })
    }

    fn put<'a>(&'a self, key: &'a StoreKey, record: TokenRecord) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let args = self.arguments(key, &record, None)?;
            let sql = format!(
                "{INSERT} ON CONFLICT (integration, connection_id) DO UPDATE SET {SET}, \
                 version = blueprint_tokens.version + 1 RETURNING version"
            );
            let version: i64 = sqlx::query_scalar_with(&sql, args)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| StoreError::database("writing credentials", &e))?;
            Ok(u64::try_from(version).unwrap_or_default())
        })
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a StoreKey,
        expected: Option<u64>,
        record: TokenRecord,
    ) -> StoreFuture<'a, Swap> {
        Box::pin(async move {
            let args = self.arguments(key, &record, expected)?;
            let sql = match expected {
                None => format!(
                    "{INSERT} ON CONFLICT (integration, connection_id) DO NOTHING RETURNING version"
                ),
                Some(_) => format!(
                    "UPDATE blueprint_tokens SET {SET}, version = version + 1 \
                     WHERE integration = ?1 AND connection_id = ?2 AND version = ?14 RETURNING version"
                ),
            };
            let version: Option<i64> = sqlx::query_scalar_with(&sql, args)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| StoreError::database("writing credentials", &e))?;
            Ok(match version {
                Some(version) => Swap::Swapped(u64::try_from(version).unwrap_or_default()),
                None => Swap::Conflict,
            })
        })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query(
                "DELETE FROM blueprint_tokens WHERE integration = ?1 AND connection_id = ?2",
            )
            .bind(key.integration())
            .bind(key.connection().as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::database("deleting credentials", &e))?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn list<'a>(&'a self, integration: &'a str) -> StoreFuture<'a, Vec<ConnectionId>> {
        Box::pin(async move {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT connection_id FROM blueprint_tokens WHERE integration = ?1 ORDER BY connection_id",
            )
            .bind(integration)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::database("listing connections", &e))?;
            Ok(ids.into_iter().map(ConnectionId::from).collect())
        })
    }
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

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or_default())
}

/// The migrations in `migrations/`, embedded so that the crate needs no files at run time.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(vec![Migration::new(
                1,
                Cow::Borrowed("create tokens"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0001_create_tokens.sql")),
                false,
            )])
        })
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let migrator = Migrator::new(Embedded)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))?;
    // SQLite has no migration lock: when two processes open a new file at once, the
    // loser's insert into the migrations table fails; it then finds the work done.
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(_) => migrator
            .run(pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string())),
    }
}
