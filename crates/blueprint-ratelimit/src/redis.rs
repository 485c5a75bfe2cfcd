//! Budgets in Redis, shared by every replica that points at the same server.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError, Script};
use blueprint_core::HoldReason;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::shared::{
    AdmitFuture, Answer, Ask, BudgetKey, Decision, Known, Seen, SeenReset, SharedBudgets,
    Unavailable,
};

/// How long a call to Redis may take by default before the layer paces in-process.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// How often a Redis that stopped answering is tried again by default.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The prefix of every key by default: `blueprint:rl:<hash>`.
pub const DEFAULT_PREFIX: &str = "blueprint:rl";

/// How many observations may wait to be sent; beyond, new ones are dropped.
const QUEUE: usize = 1024;
/// The most observations sent in one round trip.
const BATCH: usize = 64;

const SCRIPT: &str = include_str!("redis/budget.lua");

/// Rate-limit budgets kept in Redis, so that every replica of a service admits against one
/// budget per key (origin, connection), and what one replica learns from an answer's headers
/// (what is left, the reset, a 429's hold) holds for all. Give it to
/// [`RateLimitLayer::shared`](crate::RateLimitLayer::shared). Cheap to clone: clones share
/// one connection.
///
/// - **One round trip per call.** Admission is one Lua script, loaded once and called by its
///   SHA (`EVALSHA`, loaded again on `NOSCRIPT`), atomic on the server: it rolls the window
///   over, applies a 429's hold, spends one unit of the window, and answers with what it
///   knows. An answer's headers are sent to Redis only when they say something the script did
///   not know (a new window, less left than it counted, a 429), without waiting for the
///   reply, in batches: most calls cost the one admission.
/// - **Keys expire with their window** (one window after whatever they still wait for) and
///   hold no token nor connection id: their names are a hash of origin and connection, under
///   a prefix ([`DEFAULT_PREFIX`]).
/// - **Time is the server's** (`TIME`): replicas send and receive durations, so their
///   clocks need not agree.
/// - **Redis away, slow or garbled** (each call is bounded by [`DEFAULT_REDIS_TIMEOUT`],
///   configurable): the layer paces in-process, as without Redis; one WARN is logged, and
///   the layer reports [`Event::Fallback`](blueprint_core::Event::Fallback). Redis is tried
///   again every [`DEFAULT_PROBE_INTERVAL`]; once it answers, budgets are shared again (an
///   INFO line, and the event with `active: false`). No call fails because Redis is away,
///   and a Redis unreachable at start is no error either.
///
/// Retry budgets, token caches and the in-process budgets used meanwhile stay per process.
///
/// # Example
///
/// ```no_run
/// use blueprint_ratelimit::{RateLimitLayer, RedisBudgets};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let budgets = RedisBudgets::builder("redis://127.0.0.1:6379/0")?
///     .prefix("acme:rl")
///     .connect()
///     .await;
/// let layer = RateLimitLayer::intercom().shared(budgets.clone());
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBudgets {
    inner: Arc<Inner>,
}

/// Settings of [`RedisBudgets`]; from [`RedisBudgets::builder`].
pub struct RedisBudgetsBuilder {
    client: Client,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    probe_interval: Duration,
}

/// A Redis URL that cannot be used. Its text never holds the URL's password.
#[derive(Debug, Clone)]
pub struct RedisUrlError {
    url: String,
    why: String,
}

impl fmt::Display for RedisUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a usable Redis URL ({}): write it as redis://HOST:PORT/DB, with \
             redis://:PASSWORD@HOST:PORT/DB for a password",
            self.url, self.why
        )
    }
}

impl std::error::Error for RedisUrlError {}

/// What a [`RedisBudgets`] has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Admissions asked (one round trip each, on the request path).
    pub admissions: u64,
    /// Observations sent.
    pub observations: u64,
    /// Round trips that sent observations (off the request path).
    pub observation_batches: u64,
    /// Observations dropped: queue full, or Redis away.
    pub dropped: u64,
    /// Calls that failed or timed out.
    pub errors: u64,
    /// Times Redis was given up for in-process pacing.
    pub fallbacks: u64,
}

struct Inner {
    client: Client,
    /// `redis://host:port/db`, never the password.
    shown: String,
    password: Option<String>,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    probe_interval: Duration,
    script: Script,
    connection: RwLock<Option<ConnectionManager>>,
    up: AtomicBool,
    probing: AtomicBool,
    queue: mpsc::Sender<Observed>,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    admissions: AtomicU64,
    observations: AtomicU64,
    batches: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    fallbacks: AtomicU64,
}

/// An observation waiting to be sent: the key's name and the script's arguments.
struct Observed {
    key: String,
    args: [i64; 7],
}

/// The URL without its user and password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl RedisBudgets {
    /// Settings for budgets in the Redis at `url` (`redis://HOST:PORT/DB`, with
    /// `redis://:PASSWORD@…` or `redis://USER:PASSWORD@…` for a password, or
    /// `redis+unix:///PATH`). Nothing is connected yet.
    ///
    /// # Errors
    ///
    /// [`RedisUrlError`] when `url` is not a Redis URL this build can use (TLS, `rediss://`,
    /// is not built in).
    pub fn builder(url: &str) -> Result<RedisBudgetsBuilder, RedisUrlError> {
        let error = |why: String| RedisUrlError {
            url: redact_url(url),
            why,
        };
        let scheme_ok = ["redis://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if !scheme_ok {
            return Err(error(String::from(
                "it must start with redis:// (or redis+unix://)",
            )));
        }
        let client = Client::open(url).map_err(|e| {
            let mut why = e.to_string();
            if let Some(password) = password_in(url) {
                why = why.replace(&password, "***");
            }
            error(why)
        })?;
        Ok(RedisBudgetsBuilder {
            client,
            prefix: String::from(DEFAULT_PREFIX),
            timeout: DEFAULT_REDIS_TIMEOUT,
            connect_timeout: Duration::from_secs(1),
            probe_interval: DEFAULT_PROBE_INTERVAL,
        })
    }

    /// What these budgets have done so far.
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisStats {
            admissions: load(&c.admissions),
            observations: load(&c.observations),
            observation_batches: load(&c.batches),
            dropped: load(&c.dropped),
            errors: load(&c.errors),
            fallbacks: load(&c.fallbacks),
        }
    }

    /// The name of the Redis key that holds `key`'s budget.
    pub fn key_name(&self, key: BudgetKey<'_>) -> String {
        self.inner.key_name(key)
    }
}

/// The password of a URL, if it has one (for redacting error text).
fn password_in(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let userinfo = &rest[..rest.rfind('@')?];
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    (!password.is_empty()).then(|| password.to_owned())
}

impl RedisBudgetsBuilder {
    /// The prefix of every key (default [`DEFAULT_PREFIX`]): replicas that share budgets use
    /// the same one.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one call to Redis may take before the request is paced in-process (default
    /// [`DEFAULT_REDIS_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting may take (default one second).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often a Redis that stopped answering is tried again (default
    /// [`DEFAULT_PROBE_INTERVAL`]).
    #[must_use]
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Connects, waiting at most the connect timeout. A Redis that cannot be reached is no
    /// error: the budgets start away (one WARN), and are tried again in the background.
    /// Must be called within a tokio runtime, which then runs the background work.
    pub async fn connect(self) -> RedisBudgets {
        let info = self.client.get_connection_info();
        let shown = format!("redis://{}/{}", info.addr, info.redis.db);
        let password = info.redis.password.clone().filter(|p| !p.is_empty());
        let (queue, observations) = mpsc::channel(QUEUE);
        let inner = Arc::new(Inner {
            client: self.client,
            shown,
            password,
            prefix: self.prefix,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            probe_interval: self.probe_interval,
            script: Script::new(SCRIPT),
            connection: RwLock::new(None),
            up: AtomicBool::new(false),
            probing: AtomicBool::new(true),
            queue,
            stats: Counters::default(),
        });
        tokio::spawn(send_observations(Arc::downgrade(&inner), observations));
        match inner.open(true).await {
            Ok(()) => {
                inner.probing.store(false, Ordering::Release);
                inner.up.store(true, Ordering::Release);
                tracing::info!(redis = %inner.shown, "rate-limit budgets are shared in Redis");
            }
            Err(error) => {
                inner.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                inner.warn(&error);
                tokio::spawn(probe(Arc::downgrade(&inner)));
            }
        }
        RedisBudgets { inner }
    }
}

impl fmt::Debug for RedisBudgetsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.client.get_connection_info();
        f.debug_struct("RedisBudgetsBuilder")
            .field(
                "redis",
                &format_args!("redis://{}/{}", info.addr, info.redis.db),
            )
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisBudgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBudgets")
            .field("redis", &self.inner.shown)
            .field("prefix", &self.inner.prefix)
            .field("available", &self.inner.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why a call failed, for the log.
enum Failure {
    Redis(RedisError),
    Timeout(Duration),
    Garbled,
}

impl Inner {
    fn key_name(&self, key: BudgetKey<'_>) -> String {
        let mut hash = Sha256::new();
        match key.origin() {
            Some(origin) => hash.update(origin.to_string().as_bytes()),
            None => hash.update(b"relative"),
        }
        hash.update([0]);
        hash.update(key.connection().as_str().as_bytes());
        let digest = hash.finalize();
        let mut name = String::with_capacity(self.prefix.len() + 33);
        name.push_str(&self.prefix);
        name.push(':');
        for byte in &digest[..16] {
            name.push(char::from(HEX[usize::from(byte >> 4)]));
            name.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        name
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.connection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connects (afresh, or reusing the connection unless `fresh`) and loads the script.
    /// A fresh connection is what a probe needs: a socket whose peer vanished without a word
    /// never errs, it only never answers.
    async fn open(&self, fresh: bool) -> Result<(), Failure> {
        let bound = self.connect_timeout.saturating_mul(2);
        let work = async {
            let mut connection = match self.connection().filter(|_| !fresh) {
                Some(connection) => connection,
                None => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(self.connect_timeout)
                        .set_response_timeout(self.connect_timeout)
                        .set_number_of_retries(1)
                        .set_factor(10)
                        .set_max_delay(100);
                    ConnectionManager::new_with_config(self.client.clone(), config)
                        .await
                        .map_err(Failure::Redis)?
                }
            };
            self.load(&mut connection).await?;
            *self
                .connection
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(connection);
            Ok(())
        };
        match tokio::time::timeout(bound, work).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout(bound)),
        }
    }

    /// `SCRIPT LOAD`: the reply must be the script's SHA.
    async fn load(&self, connection: &mut ConnectionManager) -> Result<(), Failure> {
        let sha: String = ::redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query_async(connection)
            .await
            .map_err(Failure::Redis)?;
        if sha == self.script.get_hash() {
            Ok(())
        } else {
            Err(Failure::Garbled)
        }
    }

    /// `EVALSHA` of the script on `key`, loading it again if Redis lost it.
    async fn eval(
        &self,
        connection: &mut ConnectionManager,
        key: &str,
        args: &[i64],
        op: &str,
    ) -> Result<Vec<i64>, Failure> {
        let command = || {
            let mut command = ::redis::cmd("EVALSHA");
            command
                .arg(self.script.get_hash())
                .arg(1)
                .arg(key)
                .arg(op)
                .arg(args);
            command
        };
        match command().query_async(connection).await {
            Err(error) if error.kind() == ErrorKind::NoScriptError => {
                // Redis lost its scripts (a restart, SCRIPT FLUSH): load it again.
                self.load(connection).await?;
                command()
                    .query_async(connection)
                    .await
                    .map_err(Failure::Redis)
            }
            result => result.map_err(Failure::Redis),
        }
    }

    /// Gives Redis up for in-process pacing, with one WARN, until a probe finds it again.
    fn fail(self: &Arc<Self>, failure: &Failure) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
            self.warn(failure);
            if !self.probing.swap(true, Ordering::AcqRel) {
                tokio::spawn(probe(Arc::downgrade(self)));
            }
        }
    }

    fn warn(&self, failure: &Failure) {
        let error = match failure {
            Failure::Redis(error) => {
                let text = error.to_string();
                match &self.password {
                    Some(password) => text.replace(password.as_str(), "***"),
                    None => text,
                }
            }
            Failure::Timeout(after) => format!("no answer within {after:?}"),
            Failure::Garbled => String::from("an answer the budget script does not give"),
        };
        tracing::warn!(
            redis = %self.shown,
            error = %error,
            "Redis does not answer: rate-limit budgets are paced in this process alone until \
             it does (replicas may spend more than the budget meanwhile)"
        );
    }

    async fn admit(self: Arc<Self>, key: String, ask: Ask) -> Result<Answer, Unavailable> {
        let Some(mut connection) = self.connection() else {
            return Err(Unavailable);
        };
        self.stats.admissions.fetch_add(1, Ordering::Relaxed);
        let args = [
            ask.deadline.map_or(-1, millis_down),
            i64::from(ask.smoothing),
        ];
        let reply =
            tokio::time::timeout(self.timeout, self.eval(&mut connection, &key, &args, "a")).await;
        let failure = match reply {
            Ok(Ok(reply)) => match answer(&reply) {
                Some(answer) => return Ok(answer),
                None => Failure::Garbled,
            },
            Ok(Err(failure)) => failure,
            Err(_) => Failure::Timeout(self.timeout),
        };
        self.fail(&failure);
        Err(Unavailable)
    }

    /// Sends observations in one round trip.
    async fn send(self: &Arc<Self>, batch: &[Observed]) {
        let Some(mut connection) = self.connection() else {
            return;
        };
        let pipeline = |script: &Script| {
            let mut pipe = ::redis::pipe();
            for observed in batch {
                pipe.cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(1)
                    .arg(&observed.key)
                    .arg("o")
                    .arg(&observed.args[..])
                    .ignore();
            }
            pipe
        };
        let mut failure = None;
        for _ in 0..2 {
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            let sent = tokio::time::timeout(
                self.timeout,
                pipeline(&self.script).query_async::<()>(&mut connection),
            )
            .await;
            match sent {
                Ok(Ok(())) => {
                    self.stats
                        .observations
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return;
                }
                Ok(Err(error)) if error.kind() == ErrorKind::NoScriptError => {
                    // Redis lost its scripts (a restart, SCRIPT FLUSH): load it again.
                    let loaded =
                        tokio::time::timeout(self.timeout, self.load(&mut connection)).await;
                    match loaded {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            failure = Some(error);
                            break;
                        }
                        Err(_) => {
                            failure = Some(Failure::Timeout(self.timeout));
                            break;
                        }
                    }
                }
                Ok(Err(error)) => {
                    failure = Some(Failure::Redis(error));
                    break;
                }
                Err(_) => {
                    failure = Some(Failure::Timeout(self.timeout));
                    break;
                }
            }
        }
        self.stats
            .dropped
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(failure) = failure {
            self.fail(&failure);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Reads the script's reply to an admission; `None` when it is not one.
fn answer(reply: &[i64]) -> Option<Answer> {
    let &[decision, wait, left, reset_in, limit, first, resumed] = reply else {
        return None;
    };
    let wait = Duration::from_millis(u64::try_from(wait).ok()?);
    let decision = match decision {
        0 => Decision::Go,
        1 => Decision::GoAfter(wait),
        2 => Decision::Hold {
            wait,
            reason: HoldReason::Spent,
        },
        3 => Decision::Hold {
            wait,
            reason: HoldReason::Answers,
        },
        4 => Decision::Refuse { retry_after: wait },
        _ => return None,
    };
    let mut answer = Answer::new(decision);
    if let Ok(remaining) = u64::try_from(left) {
        answer = answer.known(Known {
            limit: u64::try_from(limit).ok(),
            remaining,
            reset: u64::try_from(reset_in).ok().map(Duration::from_millis),
        });
    }
    if first == 1 {
        answer = answer.paused();
    }
    if let Ok(resumed) = u64::try_from(resumed) {
        answer = answer.resumed(Duration::from_millis(resumed));
    }
    Some(answer)
}

/// Milliseconds, rounded down (a deadline), as the script reads them.
fn millis_down(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds, rounded up (a reset, a wait: never earlier than said).
fn millis_up(d: Duration) -> i64 {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn count(n: Option<u64>) -> i64 {
    n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl SharedBudgets for RedisBudgets {
    fn component(&self) -> &'static str {
        "rate_limit_redis"
    }

    fn is_available(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    fn admit(&self, key: BudgetKey<'_>, ask: Ask) -> AdmitFuture {
        let name = self.inner.key_name(key);
        Box::pin(Arc::clone(&self.inner).admit(name, ask))
    }

    fn observe(&self, key: BudgetKey<'_>, seen: &Seen) {
        let (kind, ms) = match seen.reset {
            None => (0, 0),
            Some(SeenReset::In(d)) => (1, millis_up(d)),
            Some(SeenReset::Ago(d)) => (2, millis_down(d)),
        };
        let observed = Observed {
            key: self.inner.key_name(key),
            args: [
                count(seen.limit),
                count(seen.remaining),
                kind,
                ms,
                millis_up(seen.precision),
                seen.retry_after.map_or(-1, millis_up),
                i64::from(seen.limited),
            ],
        };
        if self.inner.queue.try_send(observed).is_err() {
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends queued observations, as many at once as have gathered, until the budgets are dropped.
async fn send_observations(inner: Weak<Inner>, mut queue: mpsc::Receiver<Observed>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.up.load(Ordering::Acquire) {
            inner.send(&batch).await;
        } else {
            inner
                .stats
                .dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        batch.clear();
    }
}

/// Tries Redis again every probe interval until it answers, then shares budgets again.
async fn probe(inner: Weak<Inner>) {
    loop {
        let Some(interval) = inner.upgrade().map(|i| i.probe_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // Loading the script is the probe: it proves Redis answers, and that the script
        // is there (a Redis that restarted has lost it).
        let answers = inner.open(true).await.is_ok();
        if answers {
            inner.probing.store(false, Ordering::Release);
            inner.up.store(true, Ordering::Release);
            tracing::info!(
                redis = %inner.shown,
                "Redis answers again: rate-limit budgets are shared again"
            );
            return;
        }
    }
}
