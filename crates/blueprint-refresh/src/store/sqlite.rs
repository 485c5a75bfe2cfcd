use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use blueprint_core::ConnectionId;
use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments as _, Row as _};

use super::codec::{self, Columns};
use super::crypto::EncryptionKey;
use super::{
    Change, ChangeFeed, EncryptionCheck, StoreError, StoreFuture, StoreKey, StoredToken, Swap,
    TokenRecord, TokenStore,
};

/// How long a write waits for another process's write to finish before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a [`SqliteStore`]'s change feed reads the change log: the bound on how late it
/// reports another process's write.
pub const SQLITE_CHANGE_POLL: Duration = Duration::from_millis(200);

/// How many changes a feed reads at once.
const CHANGE_BATCH: i64 = 256;

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
/// Every write also appends the record's key to a change log table (by trigger, in the
/// same transaction), which [`TokenStore::changes`] polls every [`SQLITE_CHANGE_POLL`]: a
/// process learns what another one sharing the file wrote or deleted.
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
    /// The newest change-log id known: where a new change feed starts reading.
    head: Arc<AtomicI64>,
    /// Alive while any clone of the store is: change feeds end when it is gone.
    alive: Arc<()>,
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
    /// [`StoreError::Connect`] when the file cannot be opened (its directory does not
    /// exist, it is not writable...), [`StoreError::Migrate`] when the schema cannot be
    /// brought up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        Self::open_with(options, path).await
    }

    /// Opens the database a URL names, as sqlx reads it: `sqlite://PATH`, `sqlite:PATH` or
    /// a plain path, with optional `?mode=ro|rw|rwc` (default: create the file if missing).
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] when the URL does not parse; otherwise as
    /// [`SqliteStore::open`].
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("`{url}` is not a SQLite URL: {e}")))?;
        let has_mode = url
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("mode=")));
        let options = if has_mode {
            options
        } else {
            options.create_if_missing(true)
        };
        let path = options.get_filename().to_path_buf();
        if path.as_os_str().is_empty() {
            return Err(StoreError::Config(format!(
                "`{url}` names no file: use sqlite://blueprint.db"
            )));
        }
        Self::open_with(options, path).await
    }

    async fn open_with(options: SqliteConnectOptions, path: PathBuf) -> Result<Self, StoreError> {
        let target = format!("`{}` (SQLite)", path.display());
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(StoreError::Connect {
                    target,
                    message: format!(
                        "the directory `{}` does not exist: create it, or choose a file in a \
                         directory that exists",
                        dir.display()
                    ),
                });
            }
        }
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect {
                target: target.clone(),
                message: format!("{e} (is the file and its directory readable and writable?)"),
            })?;
        migrate(&pool).await?;
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM blueprint_changes")
            .fetch_one(&pool)
            .await
            .map_err(|e| StoreError::database("reading the change log", &e))?;
        Ok(SqliteStore {
            pool,
            key: None,
            path,
            head: Arc::new(AtomicI64::new(head)),
            alive: Arc::new(()),
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

    /// Closes the pool's connections, waiting for them. Change feeds end.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn arguments(
        &self,
        key: &StoreKey,
        record: &TokenRecord,
        expected: Option<u64>,
    ) -> Result<SqliteArguments<'static>, StoreError> {
        let columns = Columns::seal(self.key.as_ref(), key, record)?;
        let mut args = SqliteArguments::default();
        let binds: Result<(), sqlx::error::BoxDynError> = (|| {
            args.add(key.integration().to_owned())?;
            args.add(key.connection().as_str().to_owned())?;
            args.add(columns.access_token)?;
            args.add(columns.refresh_token)?;
            args.add(i64::from(columns.encrypted))?;
            args.add(columns.expires_at_ms)?;
            args.add(columns.token_type)?;
            args.add(columns.scopes)?;
            args.add(columns.status)?;
            args.add(columns.last_error)?;
            args.add(columns.lease_holder)?;
            args.add(columns.lease_until_ms)?;
            args.add(columns.updated_at_ms)?;
            args.add(columns.params)?;
            if let Some(expected) = expected {
                args.add(codec::version_column(expected))?;
            }
            Ok(())
        })();
        binds.map_err(|e| StoreError::database("binding values", &e))?;
        Ok(args)
    }

    fn decode(&self, key: &StoreKey, row: &SqliteRow) -> Result<StoredToken, StoreError> {
        let column = |e: sqlx::Error| StoreError::database("reading a row", &e);
        let encrypted: i64 = row.try_get("encrypted").map_err(column)?;
        codec::Row {
            access_token: row.try_get("access_token").map_err(column)?,
            refresh_token: row.try_get("refresh_token").map_err(column)?,
            encrypted: encrypted != 0,
            expires_at_ms: row.try_get("expires_at_ms").map_err(column)?,
            token_type: row.try_get("token_type").map_err(column)?,
            scopes: row.try_get("scopes").map_err(column)?,
            status: row.try_get("status").map_err(column)?,
            last_error: row.try_get("last_error").map_err(column)?,
            lease_holder: row.try_get("lease_holder").map_err(column)?,
            lease_until_ms: row.try_get("lease_until_ms").map_err(column)?,
            updated_at_ms: row.try_get("updated_at_ms").map_err(column)?,
            params: row.try_get("params").map_err(column)?,
            version: row.try_get("version").map_err(column)?,
        }
        .open(self.key.as_ref(), key)
    }
}

const COLUMNS: &str = "access_token, refresh_token, encrypted, expires_at_ms, token_type, scopes, \
                       status, last_error, lease_holder, lease_until_ms, updated_at_ms, version, params";

const INSERT: &str = "INSERT INTO blueprint_tokens (integration, connection_id, access_token, \
     refresh_token, encrypted, expires_at_ms, token_type, scopes, status, last_error, \
     lease_holder, lease_until_ms, updated_at_ms, params, version) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 1)";

const SET: &str = "access_token = ?3, refresh_token = ?4, encrypted = ?5, expires_at_ms = ?6, \
     token_type = ?7, scopes = ?8, status = ?9, last_error = ?10, lease_holder = ?11, \
     lease_until_ms = ?12, updated_at_ms = ?13, params = ?14";

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
            Ok(codec::version_value(version))
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
                     WHERE integration = ?1 AND connection_id = ?2 AND version = ?15 RETURNING version"
                ),
            };
            let version: Option<i64> = sqlx::query_scalar_with(&sql, args)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| StoreError::database("writing credentials", &e))?;
            Ok(match version {
                Some(version) => Swap::Swapped(codec::version_value(version)),
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

    fn changes(&self) -> Option<ChangeFeed> {
        let poller = Poller {
            pool: self.pool.clone(),
            alive: Arc::downgrade(&self.alive),
            last: self.head.load(Ordering::Acquire),
            head: Arc::clone(&self.head),
            tracking: true,
            pending: VecDeque::new(),
        };
        Some(ChangeFeed::from_stream(futures_util::stream::unfold(
            poller,
            |mut poller| async move { poller.next().await.map(|change| (change, poller)) },
        )))
    }

    fn check_encryption(&self) -> StoreFuture<'_, EncryptionCheck> {
        Box::pin(async move {
            let counts: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT encrypted, count(*) FROM blueprint_tokens GROUP BY encrypted",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::database("counting credentials", &e))?;
            let count = |encrypted: bool| {
                counts
                    .iter()
                    .filter(|(e, _)| (*e != 0) == encrypted)
                    .map(|(_, n)| u64::try_from(*n).unwrap_or_default())
                    .sum()
            };
            let check = EncryptionCheck::new(count(true), count(false));
            let newest: Option<(String, String, String)> = sqlx::query_as(
                "SELECT integration, connection_id, access_token FROM blueprint_tokens \
                 WHERE encrypted <> 0 ORDER BY updated_at_ms DESC LIMIT 1",
            )
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::database("reading credentials", &e))?;
            if let Some((integration, connection, sealed)) = newest {
                let key = StoreKey::new(integration, ConnectionId::from(connection));
                codec::open_sealed(self.key.as_ref(), &key, "access_token", &sealed)?;
            }
            Ok(check)
        })
    }
}

/// A change feed's state: where it is in the change log, and what it read but did not
/// hand out yet (at most one batch).
struct Poller {
    pool: SqlitePool,
    alive: Weak<()>,
    last: i64,
    head: Arc<AtomicI64>,
    /// False after a failed poll: the next good one starts with a resync.
    tracking: bool,
    pending: VecDeque<Change>,
}

impl Poller {
    async fn next(&mut self) -> Option<Change> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Some(change);
            }
            if self.alive.strong_count() == 0 || self.pool.is_closed() {
                return None;
            }
            if !self.poll().await {
                tokio::time::sleep(SQLITE_CHANGE_POLL).await;
            }
        }
    }

    /// Reads the next changes into `pending`; whether there may be more right away.
    async fn poll(&mut self) -> bool {
        let rows: Result<Vec<(i64, String, String)>, sqlx::Error> = sqlx::query_as(
            "SELECT id, integration, connection_id FROM blueprint_changes \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(self.last)
        .bind(CHANGE_BATCH)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                if self.tracking {
                    tracing::warn!(%error, "the SQLite change feed cannot read the change log; it resyncs once it can");
                }
                self.tracking = false;
                return false;
            }
        };
        let gap = rows.first().is_some_and(|(id, ..)| *id > self.last + 1);
        if !self.tracking || gap {
            // Changes were missed (a failed poll, or pruned before this feed read them):
            // everything up to the newest change is covered by one resync.
            let newest: Result<i64, sqlx::Error> =
                sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM blueprint_changes")
                    .fetch_one(&self.pool)
                    .await;
            let Ok(newest) = newest else {
                self.tracking = false;
                return false;
            };
            self.tracking = true;
            self.last = newest;
            self.head.fetch_max(newest, Ordering::AcqRel);
            self.pending.push_back(Change::Resync);
            return false;
        }
        let full = rows.len() == usize::try_from(CHANGE_BATCH).unwrap_or(usize::MAX);
        for (id, integration, connection) in rows {
            self.pending.push_back(Change::Key(StoreKey::new(
                integration,
                ConnectionId::from(connection),
            )));
            self.last = id;
        }
        self.head.fetch_max(self.last, Ordering::AcqRel);
        full
    }
}

/// The migrations in `migrations/`, embedded so that the crate needs no files at run time
/// (listed by hand, so that SQLite alone needs no proc-macro; PostgreSQL's use
/// `sqlx::migrate!`).
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(vec![
                Migration::new(
                    1,
                    Cow::Borrowed("create tokens"),
                    MigrationType::Simple,
                    Cow::Borrowed(include_str!("../../migrations/0001_create_tokens.sql")),
                    false,
                ),
                Migration::new(
                    2,
                    Cow::Borrowed("change log"),
                    MigrationType::Simple,
                    Cow::Borrowed(include_str!("../../migrations/0002_change_log.sql")),
                    false,
                ),
                // Version 3 is left free: a lease migration may take it.
                Migration::new(
                    4,
                    Cow::Borrowed("connection params"),
                    MigrationType::Simple,
                    Cow::Borrowed(include_str!("../../migrations/0004_connection_params.sql")),
                    false,
                ),
            ])
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
