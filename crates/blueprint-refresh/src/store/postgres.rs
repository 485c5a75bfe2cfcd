//! `PostgresStore`: the store several replicas share.

use std::fmt;
use std::future::Future;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use blueprint_core::ConnectionId;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow,
};
use sqlx::{Arguments as _, Connection as _, Row as _};
use tokio::task::JoinHandle;

use super::codec::{self, Columns};
use super::crypto::EncryptionKey;
use super::{
    Change, ChangeBroadcast, ChangeFeed, EncryptionCheck, StoreError, StoreFuture, StoreKey,
    StoredToken, Swap, TokenRecord, TokenStore,
};

/// The channel every store's trigger notifies; the payload names the schema.
const CHANNEL: &str = "blueprint_tokens";

/// How the longest wait between two reconnection attempts of the change feed grows.
const FEED_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// How to reach PostgreSQL, and how the store's pool behaves: what
/// [`PostgresStore::connect`] takes.
///
/// ```no_run
/// use std::time::Duration;
///
/// use blueprint_refresh::{EncryptionKey, PostgresOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = EncryptionKey::from_base64(&std::env::var("BLUEPRINT_ENCRYPTION_KEY")?)?;
/// let store = PostgresOptions::from_url("postgres://blueprint@db.internal:5432/blueprint")?
///     .schema("proxy")
///     .max_connections(4)
///     .acquire_timeout(Duration::from_secs(1))
///     .encryption(key)
///     .connect()
///     .await?;
/// # store.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresOptions {
    connect: PgConnectOptions,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    connect_timeout: Duration,
    operation_timeout: Duration,
    change_feed: bool,
    feed_check_every: Duration,
    key: Option<EncryptionKey>,
}

impl PostgresOptions {
    /// The pool's default size: token stores are read when a token is loaded or refreshed,
    /// never per request, so a few connections serve a busy replica.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 5;
    /// How long an operation waits for a connection by default, before it fails with
    /// [`StoreError::Unavailable`]: short, so that an outage is a quick error, not a hang.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
    /// How long [`PostgresOptions::connect`] waits for the first connection by default.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long one operation may take in all by default (waiting for a connection
    /// included), in case the server stops answering without closing the connection.
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long the change feed may hear nothing before it checks its connection by
    /// default.
    pub const DEFAULT_FEED_CHECK_EVERY: Duration = Duration::from_secs(30);

    /// The options of a `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAMS]` URL, as
    /// sqlx reads it (libpq's parameters and `PG*` environment variables apply).
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] when the URL does not parse; the error never repeats it (it
    /// may hold a password).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Config(String::from(
                "a PostgreSQL URL starts with postgres:// (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)",
            )));
        }
        let connect = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Config(format!(
                "the PostgreSQL URL does not parse ({e}); expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ))
        })?;
        Ok(Self::new(connect))
    }

    /// Options from sqlx's own connect options.
    pub fn new(connect: PgConnectOptions) -> Self {
        PostgresOptions {
            connect: connect.application_name("blueprint-refresh"),
            schema: None,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            change_feed: true,
            feed_check_every: Self::DEFAULT_FEED_CHECK_EVERY,
            key: None,
        }
    }

    /// Keeps the tables in schema `name` (created if missing) instead of the server's
    /// default (`public`): one database can hold several independent stores. Letters,
    /// digits and `_`, not starting with a digit, at most 63 bytes.
    #[must_use]
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = Some(name.into());
        self
    }

    /// The most connections the pool opens (at least 1; default
    /// [`DEFAULT_MAX_CONNECTIONS`](Self::DEFAULT_MAX_CONNECTIONS)). The change feed holds
    /// one more of its own.
    #[must_use]
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long an operation waits for a connection before failing with
    /// [`StoreError::Unavailable`] (default
    /// [`DEFAULT_ACQUIRE_TIMEOUT`](Self::DEFAULT_ACQUIRE_TIMEOUT)).
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long [`PostgresOptions::connect`] waits for the server (default
    /// [`DEFAULT_CONNECT_TIMEOUT`](Self::DEFAULT_CONNECT_TIMEOUT)).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one operation may take in all (default
    /// [`DEFAULT_OPERATION_TIMEOUT`](Self::DEFAULT_OPERATION_TIMEOUT)).
    #[must_use]
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Whether the store listens for changes (default: yes), holding one connection for
    /// it; without, [`TokenStore::changes`] is `None`.
    #[must_use]
    pub fn change_feed(mut self, listen: bool) -> Self {
        self.change_feed = listen;
        self
    }

    /// How long the change feed may hear nothing before it asks its own connection for an
    /// answer (default [`DEFAULT_FEED_CHECK_EVERY`](Self::DEFAULT_FEED_CHECK_EVERY)). A
    /// connection that died without a word (a network partition, a failover behind a
    /// proxy, a firewall that drops idle connections) would otherwise leave the feed deaf
    /// for good: with no answer within the operation timeout, the feed listens again on a
    /// new connection and reports [`Change::Resync`], since it may have missed changes.
    /// At least 100 ms.
    #[must_use]
    pub fn feed_check_every(mut self, quiet: Duration) -> Self {
        self.feed_check_every = quiet.max(Duration::from_millis(100));
        self
    }

    /// Encrypts tokens written with `key`, and decrypts encrypted rows with it; the same
    /// format as [`SqliteStore::with_encryption`](super::SqliteStore::with_encryption).
    #[must_use]
    pub fn encryption(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Where the store connects, for messages: `HOST:PORT (PostgreSQL, database NAME)`.
    /// Never the password.
    pub fn target(&self) -> String {
        let place = match self.connect.get_socket() {
            Some(socket) => format!("socket {}", socket.display()),
            None => format!("{}:{}", self.connect.get_host(), self.connect.get_port()),
        };
        match self.connect.get_database() {
            Some(database) => format!("{place} (PostgreSQL, database `{database}`)"),
            None => format!("{place} (PostgreSQL)"),
        }
    }

    /// Connects, creates the schema if one was chosen and missing, applies the embedded
    /// migrations, and starts listening for changes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for a bad schema name; [`StoreError::Connect`], naming the
    /// host and port, when the server cannot be reached or refuses the login;
    /// [`StoreError::Migrate`] when the schema cannot be brought up to date.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let target = self.target();
        let mut connect = self.connect.clone();
        if let Some(schema) = &self.schema {
            check_schema(schema)?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        // The server's notices ("relation … already exists, skipping" while migrating)
        // would reach the logs at info level.
        connect = connect.options([("client_min_messages", "warning")]);
        let fail = |message: String| StoreError::Connect {
            target: target.clone(),
            message,
        };
        // One connection first, by hand: a pool retries a refused connection until its
        // timeout and then says only that it timed out.
        let mut first =
            match tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&connect))
                .await
            {
                Ok(Ok(connection)) => connection,
                Ok(Err(e)) => return Err(fail(describe_connect_error(&e))),
                Err(_) => {
                    return Err(fail(format!(
                        "no answer within {} ms: is PostgreSQL running there, and reachable?",
                        self.connect_timeout.as_millis()
                    )));
                }
            };
        if let Some(schema) = &self.schema {
            create_schema(&mut first, schema)
                .await
                .map_err(|e| fail(format!("cannot create schema `{schema}`: {e}")))?;
        }
        let _ = first.close().await;

        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(true)
            .connect_lazy_with(connect.clone());
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let schema = schema.unwrap_or_else(|| String::from("public"));

        let feed = if self.change_feed {
            Some(Arc::new(
                Feed::start(connect, &self, schema.clone(), target.clone()).await?,
            ))
        } else {
            None
        };
        Ok(PostgresStore {
            pool,
            key: self.key,
            target: target.into(),
            schema: schema.into(),
            operation_timeout: self.operation_timeout,
            acquire_timeout: self.acquire_timeout,
            feed,
        })
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("target", &self.target())
            .field("user", &self.connect.get_username())
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("feed_check_every", &self.feed_check_every)
            .field("change_feed", &self.change_feed)
            .field("encrypted", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// A [`TokenStore`] in PostgreSQL: what several replicas of a proxy share.
///
/// The same semantics as [`SqliteStore`](super::SqliteStore): versioned records,
/// compare-and-swap as one `UPDATE … WHERE version = $n` (atomic across every process,
/// so a lease taken by it fences), leases as part of the record, and tokens optionally
/// encrypted at rest in the same format. The tables live in their own schema if
/// [`PostgresOptions::schema`] names one; migrations are embedded and applied on connect.
///
/// A trigger notifies every write in its transaction; the store `LISTEN`s on a connection
/// of its own and hands the keys out through [`TokenStore::changes`], reconnecting (and
/// sending [`Change::Resync`]) when that connection drops.
///
/// While PostgreSQL is down, every operation fails within the acquire timeout with
/// [`StoreError::Unavailable`]; once it is back, the pool reconnects and operations
/// succeed again, with no restart.
///
/// ```no_run
/// use blueprint_core::{AccessToken, ConnectionId};
/// use blueprint_refresh::{PostgresStore, StoreKey, TokenRecord, TokenStore};
/// use std::time::SystemTime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// let key = StoreKey::new("intercom", ConnectionId::new("acme"));
/// store.put(&key, TokenRecord::new(AccessToken::new("tok")?, SystemTime::now())).await?;
/// assert!(store.get(&key).await?.is_some());
/// store.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    key: Option<EncryptionKey>,
    target: Arc<str>,
    schema: Arc<str>,
    operation_timeout: Duration,
    acquire_timeout: Duration,
    feed: Option<Arc<Feed>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .field("encrypted", &self.key.is_some())
            .field("change_feed", &self.feed.is_some())
            .finish()
    }
}

impl PostgresStore {
    /// Connects with the default [`PostgresOptions`] of `url`.
    ///
    /// # Errors
    ///
    /// As [`PostgresOptions::from_url`] and [`PostgresOptions::connect`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        PostgresOptions::from_url(url)?.connect().await
    }

    /// Encrypts tokens written from now on with `key`, and decrypts encrypted rows with it.
    #[must_use]
    pub fn with_encryption(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Where the store is: `HOST:PORT (PostgreSQL, database NAME)`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The schema that holds the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Stops the change feed and closes the pool's connections, waiting for them.
    pub async fn close(&self) {
        if let Some(feed) = &self.feed {
            feed.stop().await;
        }
        self.pool.close().await;
    }

    /// Runs one operation, bounded in time, its error typed.
    async fn run<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.operation_timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.failed(operation, &error)),
            Err(_) => Err(StoreError::Unavailable {
                target: self.target.to_string(),
                operation,
                message: format!("no answer within {} ms", self.operation_timeout.as_millis()),
            }),
        }
    }

    fn failed(&self, operation: &'static str, error: &sqlx::Error) -> StoreError {
        let unavailable = |message: String| StoreError::Unavailable {
            target: self.target.to_string(),
            operation,
            message,
        };
        match error {
            sqlx::Error::PoolTimedOut => unavailable(format!(
                "no connection within {} ms: is PostgreSQL running and reachable?",
                self.acquire_timeout.as_millis()
            )),
            sqlx::Error::Io(e) => unavailable(format!("the connection failed: {e}")),
            sqlx::Error::PoolClosed => StoreError::database(operation, &"the store was closed"),
            other => StoreError::database(operation, other),
        }
    }

    fn arguments(
        &self,
        key: &StoreKey,
        record: &TokenRecord,
        expected: Option<u64>,
    ) -> Result<PgArguments, StoreError> {
        let columns = Columns::seal(self.key.as_ref(), key, record)?;
        let mut args = PgArguments::default();
        let binds: Result<(), sqlx::error::BoxDynError> = (|| {
            args.add(key.integration().to_owned())?;
            args.add(key.connection().as_str().to_owned())?;
            args.add(columns.access_token)?;
            args.add(columns.refresh_token)?;
            args.add(columns.encrypted)?;
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

    fn decode(&self, key: &StoreKey, row: &PgRow) -> Result<StoredToken, StoreError> {
        let column = |e: sqlx::Error| StoreError::database("reading a row", &e);
        codec::Row {
            access_token: row.try_get("access_token").map_err(column)?,
            refresh_token: row.try_get("refresh_token").map_err(column)?,
            encrypted: row.try_get("encrypted").map_err(column)?,
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
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1)";

const SET: &str = "access_token = $3, refresh_token = $4, encrypted = $5, expires_at_ms = $6, \
     token_type = $7, scopes = $8, status = $9, last_error = $10, lease_holder = $11, \
     lease_until_ms = $12, updated_at_ms = $13, params = $14";

impl TokenStore for PostgresStore {
    fn get<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, Option<StoredToken>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {COLUMNS} FROM blueprint_tokens WHERE integration = $1 AND connection_id = $2"
            );
            let row = self
                .run(
                    "reading credentials",
                    sqlx::query(&sql)
                        .bind(key.integration())
                        .bind(key.connection().as_str())
                        .fetch_optional(&self.pool),
                )
                .await?;
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
            let version: i64 = self
                .run(
                    "writing credentials",
                    sqlx::query_scalar_with(&sql, args).fetch_one(&self.pool),
                )
                .await?;
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
                     WHERE integration = $1 AND connection_id = $2 AND version = $15 RETURNING version"
                ),
            };
            let version: Option<i64> = self
                .run(
                    "writing credentials",
                    sqlx::query_scalar_with(&sql, args).fetch_optional(&self.pool),
                )
                .await?;
            Ok(match version {
                Some(version) => Swap::Swapped(codec::version_value(version)),
                None => Swap::Conflict,
            })
        })
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = self
                .run(
                    "deleting credentials",
                    sqlx::query(
                        "DELETE FROM blueprint_tokens WHERE integration = $1 AND connection_id = $2",
                    )
                    .bind(key.integration())
                    .bind(key.connection().as_str())
                    .execute(&self.pool),
                )
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn list<'a>(&'a self, integration: &'a str) -> StoreFuture<'a, Vec<ConnectionId>> {
        Box::pin(async move {
            // `COLLATE "C"`: sorted by bytes, as the other stores sort.
            let ids: Vec<String> = self
                .run(
                    "listing connections",
                    sqlx::query_scalar(
                        "SELECT connection_id FROM blueprint_tokens WHERE integration = $1 \
                         ORDER BY connection_id COLLATE \"C\"",
                    )
                    .bind(integration)
                    .fetch_all(&self.pool),
                )
                .await?;
            Ok(ids.into_iter().map(ConnectionId::from).collect())
        })
    }

    fn changes(&self) -> Option<ChangeFeed> {
        self.feed.as_ref().map(|feed| feed.changes.subscribe())
    }

    fn check_encryption(&self) -> StoreFuture<'_, EncryptionCheck> {
        Box::pin(async move {
            let counts: Vec<(bool, i64)> = self
                .run(
                    "counting credentials",
                    sqlx::query_as(
                        "SELECT encrypted, count(*) FROM blueprint_tokens GROUP BY encrypted",
                    )
                    .fetch_all(&self.pool),
                )
                .await?;
            let count = |encrypted: bool| {
                counts
                    .iter()
                    .filter(|(e, _)| *e == encrypted)
                    .map(|(_, n)| u64::try_from(*n).unwrap_or_default())
                    .sum()
            };
            let check = EncryptionCheck::new(count(true), count(false));
            let newest: Option<(String, String, String)> = self
                .run(
                    "reading credentials",
                    sqlx::query_as(
                        "SELECT integration, connection_id, access_token FROM blueprint_tokens \
                         WHERE encrypted ORDER BY updated_at_ms DESC LIMIT 1",
                    )
                    .fetch_optional(&self.pool),
                )
                .await?;
            if let Some((integration, connection, sealed)) = newest {
                let key = StoreKey::new(integration, ConnectionId::from(connection));
                codec::open_sealed(self.key.as_ref(), &key, "access_token", &sealed)?;
            }
            Ok(check)
        })
    }
}

/// The change feed's side: a connection that `LISTEN`s, on a task that fans what it hears
/// out to the feeds. Dropped with the last clone of the store, which stops the task.
struct Feed {
    changes: ChangeBroadcast,
    /// The pool the task listens from now (it makes a new one after a lost connection).
    pool: Arc<std::sync::Mutex<PgPool>>,
    task: JoinHandle<()>,
}

/// What the feed's task needs to listen again.
struct FeedSettings {
    connect: PgConnectOptions,
    acquire_timeout: Duration,
    /// Quiet this long, the connection is asked for an answer...
    check_every: Duration,
    /// ...which must come this soon.
    check_within: Duration,
    schema: String,
    target: String,
}

impl FeedSettings {
    /// A pool of its own, so that the listening connection never counts against the
    /// store's, and is never closed for being idle.
    fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.connect.clone())
    }
}

impl Feed {
    async fn start(
        connect: PgConnectOptions,
        options: &PostgresOptions,
        schema: String,
        target: String,
    ) -> Result<Self, StoreError> {
        let settings = FeedSettings {
            connect,
            acquire_timeout: options.acquire_timeout,
            check_every: options.feed_check_every,
            check_within: options.operation_timeout,
            schema,
            target,
        };
        let pool = settings.pool();
        let listener = listen(&pool).await.map_err(|e| StoreError::Connect {
            target: settings.target.clone(),
            message: format!("cannot listen for changes: {e}"),
        })?;
        let changes = ChangeBroadcast::default();
        let shared = Arc::new(std::sync::Mutex::new(pool.clone()));
        let task = tokio::spawn(run_feed(
            listener,
            pool,
            Arc::clone(&shared),
            settings,
            changes.clone(),
        ));
        Ok(Feed {
            changes,
            pool: shared,
            task,
        })
    }

    async fn stop(&self) {
        self.task.abort();
        let pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        pool.close().await;
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Whether the listening connection still answers, within `within`.
async fn check(listener: &mut PgListener, within: Duration) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(within, sqlx::query("SELECT 1").execute(&mut *listener)).await {
        Ok(answered) => answered.map(drop),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "its connection did not answer a check within {} ms",
                within.as_millis()
            ),
        ))),
    }
}

/// Hands out what the listener hears until the store is closed; after a lost connection,
/// listens again (with backoff) and sends [`Change::Resync`], since notifications sent
/// meanwhile are lost. A connection quiet for a while is asked for an answer, so that one
/// that died without a word is found too.
async fn run_feed(
    mut listener: PgListener,
    mut pool: PgPool,
    shared: Arc<std::sync::Mutex<PgPool>>,
    settings: FeedSettings,
    changes: ChangeBroadcast,
) {
    let target = &settings.target;
    loop {
        // Giving up the wait loses nothing: sqlx reads messages through a buffer that keeps
        // a partly read one (its `BufferedSocket::try_read` is cancel-safe).
        let heard = match tokio::time::timeout(settings.check_every, listener.try_recv()).await {
            Ok(heard) => heard,
            Err(_quiet) => match check(&mut listener, settings.check_within).await {
                Ok(()) => continue,
                Err(error) => Err(error),
            },
        };
        match heard {
            Ok(Some(notification)) => {
                if let Some(change) = decode_payload(notification.payload(), &settings.schema) {
                    changes.send(change);
                }
            }
            // The connection dropped and sqlx listened again on a new one.
            Ok(None) => {
                tracing::info!(%target, "the PostgreSQL change feed reconnected; resyncing");
                changes.send(Change::Resync);
            }
            Err(error) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(%target, %error, "the PostgreSQL change feed lost its connection; it reconnects and resyncs");
                drop(listener);
                // A connection that stopped answering may still sit in the old pool, which
                // would ping it before handing it out and wait out its acquire timeout
                // (seconds more of deafness): listen from a new pool.
                pool = settings.pool();
                *shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = pool.clone();
                let mut wait = FEED_BACKOFF.0;
                listener = loop {
                    tokio::time::sleep(wait).await;
                    match tokio::time::timeout(settings.check_within, listen(&pool)).await {
                        Ok(Ok(listener)) => break listener,
                        _ if pool.is_closed() => return,
                        _ => wait = (wait * 2).min(FEED_BACKOFF.1),
                    }
                };
                tracing::info!(%target, "the PostgreSQL change feed reconnected; resyncing");
                changes.send(Change::Resync);
            }
        }
    }
}

/// What a notification says for this store's `schema`: `None` when it is another schema's.
fn decode_payload(payload: &str, schema: &str) -> Option<Change> {
    let Ok(parts) = serde_json::from_str::<Vec<String>>(payload) else {
        return Some(Change::Resync);
    };
    match parts.as_slice() {
        [of, ..] if of != schema => None,
        [_, integration, connection] => Some(Change::Key(StoreKey::new(
            integration.as_str(),
            ConnectionId::new(connection.as_str()),
        ))),
        _ => Some(Change::Resync),
    }
}

/// A schema name this store accepts: an identifier that needs no quoting.
fn check_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && schema.len() <= 63;
    if valid {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "`{}` is not a usable schema name: letters, digits and `_`, not starting with a \
             digit, at most 63 bytes",
            schema.chars().take(80).collect::<String>()
        )))
    }
}

async fn create_schema(connection: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *connection)
            .await?;
    if exists {
        return Ok(());
    }
    // The name was checked by `check_schema`: it needs no quoting beyond this.
    match sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut *connection)
        .await
    {
        Ok(_) => Ok(()),
        // Another process created it at the same moment.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
        Err(e) => Err(e),
    }
}

/// What went wrong connecting, with what to do; never the password.
fn describe_connect_error(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => String::from(
            "connection refused: is PostgreSQL running there and listening on that port?",
        ),
        sqlx::Error::Io(e) => format!("{e}: is the host name right, and the server reachable?"),
        sqlx::Error::Tls(e) => format!("TLS failed: {e}"),
        sqlx::Error::Database(e) => format!("the server refused: {}", e.message()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_other_schemas_are_ignored_and_odd_ones_resync() {
        let key = StoreKey::new("intercom", ConnectionId::new("a\"b"));
        assert_eq!(
            decode_payload(r#"["s1","intercom","a\"b"]"#, "s1"),
            Some(Change::Key(key))
        );
        assert_eq!(decode_payload(r#"["s2","intercom","x"]"#, "s1"), None);
        assert_eq!(decode_payload(r#"["s1"]"#, "s1"), Some(Change::Resync));
        assert_eq!(decode_payload("garbage", "s1"), Some(Change::Resync));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("bp_test_1").is_ok());
        assert!(check_schema("_x").is_ok());
        for bad in ["", "1x", "a-b", "a\"b", "a b", &"x".repeat(64)] {
            assert!(
                matches!(check_schema(bad), Err(StoreError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn urls_are_checked_without_echoing_them() {
        let err = PostgresOptions::from_url("mysql://u:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = PostgresOptions::from_url("postgres://u:hunter2@h:notaport/db").unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let options = PostgresOptions::from_url("postgres://u:hunter2@db.internal:6543/tokens")
            .unwrap()
            .schema("s");
        assert_eq!(
            options.target(),
            "db.internal:6543 (PostgreSQL, database `tokens`)"
        );
        assert!(!format!("{options:?}").contains("hunter2"));
    }
}
