//! The command line of the `blueprint-proxy` binary.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use blueprint::{Integrations, Registry};
use blueprint_ratelimit::{RedisBudgets, RedisBudgetsBuilder};
use blueprint_refresh::{
    EncryptionKey, PostgresOptions, PostgresStore, SqliteStore, StoreError, TokenStore,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::server::{Drained, stop_signals};
use crate::{Limits, Metrics, Proxy, SecretKey, check, registry};

/// The environment variable with the key that encrypts stored credentials.
pub const ENCRYPTION_KEY_VAR: &str = "BLUEPRINT_ENCRYPTION_KEY";
/// The environment variable with the URL at which the provider reaches the proxy.
pub const PUBLIC_URL_VAR: &str = "BLUEPRINT_PUBLIC_URL";
/// The environment variable that says where connections are kept, when `--store` does not.
pub const STORE_VAR: &str = "BLUEPRINT_STORE";
/// The environment variable with the Redis that replicas share rate-limit budgets in
/// (like `--redis`).
pub const REDIS_URL_VAR: &str = "BLUEPRINT_REDIS_URL";
/// The exit status of a serving process that cut calls off as it stopped: the grace period
/// (`--shutdown-grace`) ran out, or a second SIGINT or SIGTERM stopped it at once while
/// calls were in flight.
pub const EXIT_CALLS_CUT_OFF: u8 = 3;

/// On a stop, how long the binary waits for the store to take refreshed credentials it
/// failed to take before (see [`Proxy::flush_unstored`]): 10 seconds, after the calls in
/// flight have drained. Only a stop that finds such credentials waits.
pub const FLUSH_ON_STOP: Duration = Duration::from_secs(10);
/// The environment variable of the OpenTelemetry collector's base URL (like
/// `--otlp-endpoint`), as the OpenTelemetry specification names it.
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The most seconds a timeout flag takes: one day. Longer ones mean nothing more, and some
/// cannot be added to the clock.
const MAX_SECS: u64 = 86_400;

const ENVIRONMENT: &str = "\
Environment:
  BLUEPRINT_SECRET_KEY      Required to serve. Callers send it as `Authorization: Bearer <key>` to every
                            route but /healthz, /readyz, /connect, /oauth/callback, the retired
                            /oauth/connect/{name} and the connections page (/, /assets/page.js,
                            /assets/page.css). At least 16 characters,
                            e.g. `export BLUEPRINT_SECRET_KEY=$(openssl rand -hex 32)`.
  BLUEPRINT_ENCRYPTION_KEY  Optional. 32 bytes in base64 (`openssl rand -base64 32`): stored
                            access and refresh tokens are encrypted with AES-256-GCM. Keep it:
                            connections stored with it cannot be read without it.
  BLUEPRINT_PUBLIC_URL      Optional. The URL at which the OAuth provider sends people back
                            (the callback is <url>/oauth/callback). Default http://<--listen>.
  BLUEPRINT_STORE           Optional. What --store says, when it is not given: sqlite://PATH,
                            or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE for replicas
                            that share their connections. --store wins.
  BLUEPRINT_REDIS_URL       Optional, like --redis: redis://[:PASSWORD@]HOST:PORT/DB. Replicas naming
                            the same Redis share each connection's rate-limit budget; while it does
                            not answer, each replica paces alone (one WARN, metric
                            blueprint_fallback_active) and goes back to it by itself. Prefer
                            it to --redis for a URL with a password.
  OTEL_EXPORTER_OTLP_ENDPOINT  Optional, like --otlp-endpoint: an OpenTelemetry collector's OTLP/HTTP
                            base URL (http://HOST:4318); each proxied call's trace is sent to
                            <url>/v1/traces, as JSON, without a header, token or query value.
  RUST_LOG                  Optional. Log filter, e.g. `info` (the default) or
                            `info,blueprint_retry=debug`. Logs go to stderr; one line per
                            proxied call, never a token (`blueprint_trace=debug` adds each
                            call's span and outcome as the stack saw them).
  TOKIO_WORKER_THREADS      Optional. Threads of the async runtime, when --worker-threads is
                            not given (default: one per CPU core; 1 to 1024).
  ${VAR}                    Any variable integrations.yaml names, such as INTERCOM_CLIENT_SECRET.

Routes (\"key\": needs BLUEPRINT_SECRET_KEY):
  ANY    /proxy/{path}          key; forward to the integration (headers Provider-Config-Key,
                                Connection-Id); TRACE, TRACK and CONNECT are refused
  POST   /connect/sessions      key; {\"integration\", \"connection_id\", \"expires_in\"?, \"params\"?} -> 201
                                {\"token\", \"url\", \"expires_at\"}: send the person to `url` to authorize
                                the connection (expires_in: 60 to 86400 seconds, default 1800; used up
                                by its callback)
  GET    /connect?session=TOKEN the session's `url`: redirects to the provider
  GET    /oauth/callback        where the provider sends them back: stores the credentials
  ANY    /oauth/connect/{name}  retired: 410, use POST /connect/sessions
  PUT    /connections/{name}/{id}   key; import {\"access_token\", \"refresh_token\"?, \"expires_at\"?, \"params\"?}
  GET    /connections           key; connections and their status, without secrets
                                (?integration=NAME, ?connection_id=ID)
  DELETE /connections/{name}/{id}   key; forget a connection
  GET    /integrations          key; the integrations and whether each has an OAuth app
  GET    /                      the connections page for people, with /assets/page.js and
                                /assets/page.css (the page asks for the key itself)
  GET    /healthz               liveness: `ok` while the process serves
  GET    /readyz                readiness: `ready` while the token store answers; 503 not_ready while
                                it fails or does not answer within 2 s, and once shutdown has begun
  GET    /metrics               key; OpenMetrics text format (Prometheus scrapes it)

Connection ids are 1 to 256 characters of [A-Za-z0-9._:@-], everywhere (headers, paths,
filters, sessions). Every error the proxy answers itself is JSON {\"error\": {\"code\", \"message\"}},
but for the HTML pages a person sees at /connect and /oauth/callback.

Stopping: on SIGINT or SIGTERM /readyz answers 503 not_ready; the proxy serves on as usual for
--drain-delay seconds (default 0), then stops accepting connections and waits up to
--shutdown-grace seconds for the calls in flight. A second SIGINT or SIGTERM stops it at once.
Exit status: 0 stopped with every call finished; 1 could not start, or the server failed;
2 a bad command line; 3 stopped and cut calls off (the grace period ran out, or a second signal
came while calls were in flight).";

/// `blueprint-proxy`: holds OAuth connections and forwards calls to any endpoint of the
/// integrations' APIs through the Blueprint stack (token refresh, rate-limit pacing, safe
/// retries, logging).
#[derive(Debug, Parser)]
#[command(
    name = "blueprint-proxy",
    version,
    about = "Holds OAuth connections and forwards calls to any endpoint of an API through the Blueprint stack.",
    after_help = ENVIRONMENT,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate integrations.yaml and print the resolved blueprints (with where each comes
    /// from) and integrations, secrets redacted.
    Check(CheckArgs),
    /// List the blueprints: the built-in catalog, a `--blueprints` folder and the
    /// `blueprints:` of a `--config` file.
    Blueprints(BlueprintsArgs),
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The integrations file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// A folder of YAML blueprint files (one blueprint each), added to the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub blueprints: Option<PathBuf>,
}

/// Arguments of `blueprints`.
#[derive(Debug, Args)]
pub struct BlueprintsArgs {
    /// An integrations file whose `blueprints:` are listed too.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A folder of YAML blueprint files (one blueprint each), added to the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub blueprints: Option<PathBuf>,
}

/// Arguments of serving (the default).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The integrations file (see examples/integrations.yaml).
    #[arg(long, value_name = "FILE", required = true)]
    pub config: Option<PathBuf>,
    /// A folder of YAML blueprint files (one blueprint each), added to the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub blueprints: Option<PathBuf>,
    /// The address to listen on: IP:PORT, or HOST:PORT (resolved at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3003", value_parser = listen_address)]
    pub listen: String,
    /// Where connections are kept: `sqlite://PATH` (created on first start), or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` so that several replicas share them.
    #[arg(
        long,
        value_name = "URL",
        default_value = "sqlite://blueprint.db",
        env = STORE_VAR,
        hide_env_values = true
    )]
    pub store: StoreUrl,
    /// The log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// On SIGINT or SIGTERM, how long calls in flight may take to finish once the proxy
    /// stops accepting connections (0 to 86400); a second signal stops at once. Calls cut
    /// off make the exit status 3.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=MAX_SECS))]
    pub shutdown_grace: u64,
    /// On SIGINT or SIGTERM, how long the proxy goes on accepting connections and serving
    /// calls as usual while /readyz answers 503, so that a load balancer sees the 503 before
    /// the listening socket closes (0 to 86400; default 0: it stops accepting at once). Set
    /// it a little above the readiness probe's period times its failure threshold;
    /// --shutdown-grace counts from its end, and a second signal during it stops at once.
    #[arg(long, value_name = "SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_SECS))]
    pub drain_delay: u64,
    /// How long a client has to send a request's head (line and headers), counted from
    /// when its connection opens or its previous answer ends; then the connection is closed
    /// (1 to 86400).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub header_read_timeout: u64,
    /// How long a connection may stay open with no call in flight; then it is closed (an
    /// idle connection lives at most the smaller of this and --header-read-timeout; 1 to
    /// 86400).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub keep_alive_timeout: u64,
    /// How long the proxy waits for the next piece of a request body before answering
    /// 408 `request_timeout` (time while the provider is not reading does not count; 1 to
    /// 86400).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub request_body_timeout: u64,
    /// The most bytes a /proxy call's request body may have, as nginx's
    /// `client_max_body_size` (a plain number of bytes, at least 1: 10485760 is 10 MiB).
    /// Beyond it the caller gets 413 `body_too_large`: before anything is sent when the
    /// Content-Length says so, else when the streamed body passes it (the call to the
    /// provider is cut off). Without it, bodies of any size are streamed through.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_request_body: Option<u64>,
    /// The most client connections served at once; beyond it, new connections are closed
    /// at once. Keep it well under the file-descriptor limit (`ulimit -n`): each proxied
    /// call also holds a connection to the provider.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Forward the callers' `Forwarded` and `X-Forwarded-Host` headers to the providers
    /// (by default they are dropped, so a caller cannot choose the host a provider sees).
    #[arg(long)]
    pub forward_host_headers: bool,
    /// Threads of the async runtime that serves calls (default: `TOKIO_WORKER_THREADS`, else
    /// one per CPU core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub worker_threads: Option<u64>,
    /// Share rate-limit budgets with the other replicas through this Redis,
    /// `redis://HOST:PORT/DB` (or `BLUEPRINT_REDIS_URL`). Without it, each process paces
    /// alone. An unreachable Redis is no error: the proxy paces alone until it answers.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// How long a call to Redis may take before the call is paced in-process.
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_timeout_ms: u64,
    /// The prefix of the proxy's keys in Redis: replicas that share budgets use the same one.
    #[arg(long, value_name = "PREFIX", default_value = blueprint_ratelimit::DEFAULT_PREFIX)]
    pub redis_prefix: String,
    /// How long a refresh lease lasts. Replicas sharing a store refresh each connection's
    /// token once between them: one holds the lease and calls the token endpoint (that
    /// call is bounded by 3/4 of the lease, at most 30 s), the others wait for its token;
    /// if it dies, another takes over once the lease lapses.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub refresh_lease: u64,
    /// Export the trace of each proxied call to this OpenTelemetry collector, over
    /// OTLP/HTTP (JSON): its base URL, `http://HOST:4318`, to which `/v1/traces` is appended
    /// (or `OTEL_EXPORTER_OTLP_ENDPOINT`). Needs the `otlp` cargo feature.
    #[arg(long, value_name = "URL", env = OTLP_ENDPOINT_VAR)]
    pub otlp_endpoint: Option<String>,
}

/// The URL traces are sent to, from `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`);
/// `None` without one (an empty variable is none).
fn otlp_settings(args: &ServeArgs) -> Result<Option<String>, String> {
    let Some(endpoint) = args
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    #[cfg(feature = "otlp")]
    {
        crate::otlp::traces_url(endpoint).map(Some)
    }
    #[cfg(not(feature = "otlp"))]
    {
        // A variable meant for other programs of the environment is no reason to refuse to
        // start; the flag, given to this one, is.
        let from_env = std::env::var(OTLP_ENDPOINT_VAR).is_ok_and(|value| {
            value.trim() == endpoint && !std::env::args().any(|a| a.starts_with("--otlp-endpoint"))
        });
        if from_env {
            eprintln!(
                "warning: {OTLP_ENDPOINT_VAR} is set, but this blueprint-proxy was built \
                 without the `otlp` feature: no traces are exported"
            );
            return Ok(None);
        }
        Err(format!(
            "--otlp-endpoint {endpoint}: this blueprint-proxy was built without the `otlp` \
             feature; build it with `cargo build -p blueprint-proxy --features otlp`"
        ))
    }
}

/// The Redis of `--redis` (or `BLUEPRINT_REDIS_URL`), checked but not connected; `None`
/// without one.
fn redis_settings(args: &ServeArgs) -> Result<Option<RedisBudgetsBuilder>, String> {
    let url = match &args.redis {
        Some(url) => Some(url.trim().to_owned()),
        None => std::env::var(REDIS_URL_VAR)
            .ok()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty()),
    };
    let Some(url) = url else {
        return Ok(None);
    };
    let builder = RedisBudgets::builder(&url).map_err(|e| format!("--redis: {e}"))?;
    Ok(Some(
        builder
            .timeout(Duration::from_millis(args.redis_timeout_ms))
            .prefix(args.redis_prefix.clone()),
    ))
}

/// What the hardening flags of [`ServeArgs`] set.
#[derive(Debug, Clone, Copy)]
struct Hardening {
    limits: Limits,
    request_body_timeout: Duration,
    max_request_body: Option<u64>,
    forward_host_headers: bool,
}

impl From<&ServeArgs> for Hardening {
    fn from(args: &ServeArgs) -> Self {
        Hardening {
            limits: Limits::default()
                .header_read_timeout(Duration::from_secs(args.header_read_timeout))
                .keep_alive_timeout(Duration::from_secs(args.keep_alive_timeout))
                .max_connections(usize::try_from(args.max_connections).unwrap_or(usize::MAX))
                .drain_delay(Duration::from_secs(args.drain_delay)),
            request_body_timeout: Duration::from_secs(args.request_body_timeout),
            max_request_body: args.max_request_body,
            forward_host_headers: args.forward_host_headers,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs the command line; what the binary's `main` does.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => run_check(&args.config, args.blueprints.as_deref()),
        Some(Command::Blueprints(args)) => {
            run_blueprints(args.config.as_deref(), args.blueprints.as_deref())
        }
        None => run_serve(cli.serve),
    }
}

/// The built-in blueprints and those of `dir`.
fn blueprints(dir: Option<&Path>) -> Result<Registry, String> {
    let mut registry = registry().map_err(|e| e.to_string())?;
    if let Some(dir) = dir {
        registry.load_dir(dir).map_err(|e| e.to_string())?;
    }
    Ok(registry)
}

fn load(path: &Path, dir: Option<&Path>) -> Result<Integrations, String> {
    let registry = blueprints(dir)?;
    Integrations::load(path, &registry).map_err(|e| e.to_string())
}

/// How a blueprint's connections are made.
fn auth_kind(blueprint: &blueprint::Blueprint) -> &'static str {
    if blueprint.oauth().is_some() {
        "oauth2"
    } else {
        "token import only"
    }
}

/// The catalog as a table: name, version, base URL, auth kind, where it comes from.
fn catalog_table(registry: &Registry) -> String {
    let rows: Vec<[String; 5]> = registry
        .iter_with_source()
        .map(|(bp, source)| {
            [
                bp.name().to_owned(),
                bp.version().to_owned(),
                bp.base_url_template()
                    .map_or_else(|| bp.base_url().to_string(), str::to_owned),
                auth_kind(bp).to_owned(),
                source.to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "VERSION", "BASE URL", "AUTH", "FROM"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn run_blueprints(config: Option<&Path>, dir: Option<&Path>) -> ExitCode {
    let registry = match config {
        Some(path) => load(path, dir).map(|i| i.registry().clone()),
        None => blueprints(dir),
    };
    let registry = match registry {
        Ok(registry) => registry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if out.write_all(catalog_table(&registry).as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run_check(path: &Path, dir: Option<&Path>) -> ExitCode {
    let integrations = match load(path, dir).and_then(|i| {
        check(&i).map_err(|e| e.to_string())?;
        Ok(i)
    }) {
        Ok(integrations) => integrations,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let registry = integrations.registry();
    let mut text = String::from("blueprints:\n");
    for (bp, source) in registry.iter_with_source() {
        text.push_str(&format!("  {}: {source}\n", bp.id()));
    }
    // The blueprints a file declares are printed whole, as resolved.
    for (bp, source) in registry.iter_with_source() {
        if matches!(source, blueprint::BlueprintSource::File { .. }) {
            text.push_str(&format!("{bp}\n  from: {source}\n"));
        }
    }
    text.push_str(&format!("{integrations}\n"));
    for integration in &integrations {
        let name = integration.name();
        if let Some(source) = registry.source(integration.extends()) {
            text.push_str(&format!(
                "{name}: extends {} ({source})\n",
                integration.extends()
            ));
        }
        if integration.oauth_client_id().is_some() && integration.blueprint().oauth().is_some() {
            text.push_str(&format!(
                "{name}: connect through POST /connect/sessions, or import a token\n"
            ));
        } else {
            text.push_str(&format!(
                "{name}: no OAuth app; import tokens with PUT /connections/{name}/<id>\n"
            ));
        }
    }
    text.push_str("ok: the configuration is valid\n");
    if out.write_all(text.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// What `--store` says. `Debug` hides a password the URL may hold.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn kind(&self) -> Result<StoreKind, String> {
        let url = self.0.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreKind::Postgres);
        }
        if url.starts_with("sqlite:") || !url.contains("://") {
            return Ok(StoreKind::Sqlite);
        }
        let scheme = url.split("://").next().unwrap_or_default();
        Err(format!(
            "--store {scheme}://… is not supported: keep connections in SQLite \
             (sqlite://PATH) or PostgreSQL (postgres://USER@HOST:PORT/DATABASE)"
        ))
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(StoreUrl(url.to_owned()))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            Ok(StoreKind::Sqlite) => write!(f, "StoreUrl({:?})", self.0),
            _ => f.write_str("StoreUrl(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Sqlite,
    Postgres,
}

/// `--listen`: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`; the host is resolved at start.
fn listen_address(text: &str) -> Result<String, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` has no port: use HOST:PORT, e.g. 127.0.0.1:3003"))?;
    if host.is_empty() {
        return Err(format!(
            "`{text}` has no host: use HOST:PORT, e.g. 127.0.0.1:3003"
        ));
    }
    port.parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port (0 to 65535)"))?;
    Ok(text.to_owned())
}

/// The open store, whichever it is.
#[derive(Clone)]
enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    /// Opens what `url` names, with `key`, and checks that what it holds can be read.
    async fn open(url: &StoreUrl, key: Option<EncryptionKey>) -> Result<Self, String> {
        let encrypted = key.is_some();
        let store = match url.kind()? {
            StoreKind::Sqlite => {
                let store = SqliteStore::open_url(url.as_str().trim())
                    .await
                    .map_err(|e| store_failed(&e))?;
                Store::Sqlite(match key {
                    Some(key) => store.with_encryption(key),
                    None => store,
                })
            }
            StoreKind::Postgres => {
                let options =
                    PostgresOptions::from_url(url.as_str().trim()).map_err(|e| store_failed(&e))?;
                let options = match key {
                    Some(key) => options.encryption(key),
                    None => options,
                };
                Store::Postgres(options.connect().await.map_err(|e| store_failed(&e))?)
            }
        };
        let check = match store.as_dyn().check_encryption().await {
            Ok(check) => check,
            Err(e) => {
                store.close().await;
                return Err(key_problem(&e, encrypted));
            }
        };
        if encrypted && check.plaintext > 0 {
            tracing::warn!(
                unencrypted = check.plaintext,
                "some connections are stored unencrypted (written before {ENCRYPTION_KEY_VAR} \
                 was set); each is encrypted the next time it is written"
            );
        }
        Ok(store)
    }

    fn as_dyn(&self) -> Arc<dyn TokenStore> {
        match self {
            Store::Sqlite(store) => Arc::new(store.clone()),
            Store::Postgres(store) => Arc::new(store.clone()),
        }
    }

    /// Where it is, for logs: a path, or `HOST:PORT (PostgreSQL, …)`; never a password.
    fn describe(&self) -> String {
        match self {
            Store::Sqlite(store) => store.path().display().to_string(),
            Store::Postgres(store) => store.target().to_owned(),
        }
    }

    async fn close(&self) {
        match self {
            Store::Sqlite(store) => store.close().await,
            Store::Postgres(store) => store.close().await,
        }
    }
}

fn store_failed(error: &StoreError) -> String {
    match error {
        StoreError::Config(_) => format!("--store (or {STORE_VAR}): {error}"),
        _ => error.to_string(),
    }
}

/// The start-up message for a store that cannot read what it holds.
fn key_problem(error: &StoreError, encrypted: bool) -> String {
    match error {
        StoreError::MissingKey { key, .. } => format!(
            "{ENCRYPTION_KEY_VAR} is not set, but the store holds encrypted connections \
             (`{key}` is one): set it to the key they were written with"
        ),
        StoreError::Decrypt { key, .. } if encrypted => format!(
            "{ENCRYPTION_KEY_VAR} is not the key the stored connections were written with \
             (`{key}` does not decrypt with it): set the original key"
        ),
        other => format!("cannot read the store: {other}"),
    }
}

fn run_serve(args: ServeArgs) -> ExitCode {
    let fail = |message: &dyn std::fmt::Display| {
        eprintln!("error: {message}");
        ExitCode::FAILURE
    };
    let secret_key = match SecretKey::from_env() {
        Ok(key) => key,
        Err(e) => return fail(&e),
    };
    let encryption = match std::env::var(ENCRYPTION_KEY_VAR) {
        Ok(text) if !text.trim().is_empty() => match EncryptionKey::from_base64(&text) {
            Ok(key) => Some(key),
            Err(e) => {
                return fail(&format!(
                    "{ENCRYPTION_KEY_VAR} is not a usable key ({e}); make one with `openssl rand -base64 32`"
                ));
            }
        },
        _ => None,
    };
    let hardening = Hardening::from(&args);
    let redis = match redis_settings(&args) {
        Ok(redis) => redis,
        Err(e) => return fail(&e),
    };
    let traces_url = match otlp_settings(&args) {
        Ok(url) => url,
        Err(e) => return fail(&e),
    };
    let Some(config) = args.config else {
        return fail(&"--config is required");
    };
    let integrations = match load(&config, args.blueprints.as_deref()) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    if let Err(e) = args.store.kind() {
        return fail(&e);
    }
    let public_url = std::env::var(PUBLIC_URL_VAR)
        .ok()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty());
    let metrics = Arc::new(Metrics::new(
        integrations.iter().map(blueprint::Integration::name),
    ));

    let threads = match runtime_threads(
        args.worker_threads,
        std::env::var("TOKIO_WORKER_THREADS").ok(),
    ) {
        Ok(threads) => threads,
        Err(e) => return fail(&e),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    // Kept until the process ends: dropping it flushes the log lines still queued; the
    // exporter, shut down below, sends the traces still queued.
    let telemetry = match init_logging(args.log_format, traces_url.as_deref(), runtime.handle()) {
        Ok(telemetry) => telemetry,
        Err(e) => return fail(&e),
    };
    let settings = Settings {
        hardening,
        integrations,
        secret_key,
        encryption,
        store: args.store,
        public_url,
        listen: args.listen,
        grace: Duration::from_secs(args.shutdown_grace),
        metrics,
        redis,
        refresh_lease: Duration::from_secs(args.refresh_lease),
    };
    let served = runtime.block_on(serve_main(settings));
    if let Err(Failure::Run(e)) = &served {
        tracing::error!(error = %e, "the proxy stopped");
    }
    // While the runtime still runs: the exporter's last requests are made on it.
    telemetry.shutdown();
    match served {
        Ok(Drained::Finished | Drained::StoppedAtOnce { cut_off: 0 }) => ExitCode::SUCCESS,
        Ok(Drained::GraceOver | Drained::StoppedAtOnce { .. }) => {
            ExitCode::from(EXIT_CALLS_CUT_OFF)
        }
        // Before serving, nothing was logged: the one line says it all.
        Err(Failure::Start(e) | Failure::Run(e)) => fail(&e),
    }
}

/// The runtime's threads: `--worker-threads`, else `TOKIO_WORKER_THREADS`, else `None` (one
/// per CPU core). The variable is read here rather than by tokio, so that a bad value is an
/// error that says so instead of tokio's panic.
fn runtime_threads(flag: Option<u64>, variable: Option<String>) -> Result<Option<usize>, String> {
    if let Some(threads) = flag {
        return Ok(Some(usize::try_from(threads).unwrap_or(usize::MAX)));
    }
    match variable.filter(|text| !text.trim().is_empty()) {
        // Unset, or set to nothing (as an env file's `TOKIO_WORKER_THREADS=` does).
        None => Ok(None),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(threads) if (1..=1024).contains(&threads) => Ok(Some(threads)),
            _ => Err(format!(
                "TOKIO_WORKER_THREADS must be a number of threads from 1 to 1024, not `{text}`"
            )),
        },
    }
}

/// Why serving ended badly.
enum Failure {
    /// Before the proxy listened (the store, the address): said once, on stderr.
    Start(String),
    /// While it served: also logged.
    Run(String),
}

struct Settings {
    hardening: Hardening,
    integrations: Integrations,
    secret_key: SecretKey,
    encryption: Option<EncryptionKey>,
    store: StoreUrl,
    /// `None`: `http://<the listening address>`.
    public_url: Option<String>,
    /// `HOST:PORT`, resolved at start.
    listen: String,
    grace: Duration,
    metrics: Arc<Metrics>,
    /// Where rate-limit budgets are shared, if anywhere.
    redis: Option<RedisBudgetsBuilder>,
    /// `--refresh-lease`.
    refresh_lease: Duration,
}

async fn serve_main(settings: Settings) -> Result<Drained, Failure> {
    let encrypted = settings.encryption.is_some();
    let store = Store::open(&settings.store, settings.encryption)
        .await
        .map_err(Failure::Start)?;
    let listener = match bind(&settings.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            store.close().await;
            return Err(Failure::Start(e));
        }
    };
    let address = listener
        .local_addr()
        .map_err(|e| Failure::Start(format!("cannot read the listening address: {e}")))?;
    let public_url = settings.public_url.unwrap_or_else(|| {
        let mut reachable = address;
        if reachable.ip().is_unspecified() {
            reachable.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{reachable}")
    });
    let names: Vec<String> = settings
        .integrations
        .iter()
        .map(|i| i.name().to_owned())
        .collect();
    let mut builder = Proxy::builder(settings.integrations, settings.secret_key)
        .store(store.as_dyn())
        .public_url(&public_url)
        .metrics(settings.metrics)
        .request_body_timeout(settings.hardening.request_body_timeout)
        .forward_host_headers(settings.hardening.forward_host_headers)
        .refresh_lease(settings.refresh_lease);
    if let Some(max) = settings.hardening.max_request_body {
        builder = builder.max_request_body(max);
    }
    if let Some(redis) = settings.redis {
        // Unreachable is no error: the budgets start away and are tried again.
        builder = builder.shared_budgets(redis.connect().await);
    }
    let proxy = match builder.build() {
        Ok(proxy) => proxy,
        Err(e) => {
            store.close().await;
            return Err(Failure::Start(e.to_string()));
        }
    };
    // Signals are listened for before the server says it listens: a SIGTERM that comes
    // right after shuts it down gracefully. On the first, `/readyz` says not ready (for
    // the drain delay, while the server serves on); a second stops at once.
    let signals = stop_signals();
    let shutdown = {
        let (proxy, first) = (proxy.clone(), signals.first());
        async move {
            first.await;
            proxy.begin_shutdown();
        }
    };
    let stop_now = signals.second();
    tracing::info!(
        %address,
        store = %store.describe(),
        encrypted,
        public_url = %public_url,
        integrations = ?names,
        "blueprint-proxy listening"
    );
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "blueprint-proxy listening on http://{address}");
        let _ = out.flush();
    }
    let served = crate::server::serve_service(
        listener,
        proxy.front(),
        shutdown,
        stop_now,
        settings.grace,
        settings.hardening.limits,
    )
    .await;
    // Refreshed credentials the store missed (it was away) are written before the store
    // closes and the runtime drops their background writes, with the rotated refresh
    // tokens only this process holds. A stop at once (a second signal) tries them once
    // and does not wait.
    let wait = match served {
        Ok(Drained::StoppedAtOnce { .. }) => Duration::ZERO,
        _ => FLUSH_ON_STOP,
    };
    let unstored = proxy.flush_unstored(wait).await;
    if !unstored.is_empty() {
        tracing::error!(
            connections = unstored.len(),
            "stopping with refreshed credentials the store did not take: those connections may need to be authorized again"
        );
    }
    store.close().await;
    tracing::info!("store closed");
    served.map_err(|e| Failure::Run(format!("the server failed: {e}")))
}

/// Resolves `HOST:PORT` and listens on the first address that works.
async fn bind(listen: &str) -> Result<tokio::net::TcpListener, String> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| format!("--listen {listen}: the host does not resolve ({e})"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!(
            "--listen {listen}: the host resolves to no address"
        ));
    }
    tokio::net::TcpListener::bind(&addresses[..])
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))
}

/// What [`init_logging`] set up, kept until the process ends.
struct Telemetry {
    /// Dropping it flushes the log lines still queued.
    _log_writer: crate::logwriter::FlushGuard,
    #[cfg(feature = "otlp")]
    otlp: Option<crate::otlp::Otlp>,
}

impl Telemetry {
    /// Sends the traces still queued, then the log lines.
    fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(otlp) = self.otlp {
            otlp.shutdown();
        }
    }
}

/// Logs go to stderr in batches through a writer thread ([`crate::logwriter`]), so that a
/// log line costs the request only its formatting, never a write to a slow terminal or
/// pipe. When the reader falls behind by more than 16 MiB, further lines are dropped (and
/// counted in a line that says so) rather than stall calls.
///
/// With `traces_url`, the trace layer's span of each call is also exported over OTLP
/// ([`crate::otlp`]), whatever `RUST_LOG` says; its requests run on `runtime`.
fn init_logging(
    format: LogFormat,
    traces_url: Option<&str>,
    runtime: &tokio::runtime::Handle,
) -> Result<Telemetry, String> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(e) => {
            if std::env::var_os("RUST_LOG").is_some() {
                eprintln!("warning: RUST_LOG is not a valid filter ({e}); logging at info");
            }
            EnvFilter::new("info")
        }
    };
    let (writer, guard) = crate::logwriter::batched(std::io::stderr())
        .map_err(|e| format!("cannot start the log writer's thread: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match format {
        LogFormat::Text => fmt
            .event_format(crate::logfmt::TextFormat::new())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    #[cfg(feature = "otlp")]
    let (otlp, otlp_layer) = match traces_url {
        Some(url) => {
            let (otlp, layer) = crate::otlp::Otlp::start(url, runtime.clone())?;
            (Some(otlp), Some(layer))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otlp"))]
    let otlp_layer: Option<tracing_subscriber::layer::Identity> = {
        // `otlp_settings` refused an endpoint already.
        let _ = (traces_url, runtime);
        None
    };
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(otlp_layer)
        .try_init();
    if let Err(e) = result {
        eprintln!("warning: logging could not be set up: {e}");
    }
    Ok(Telemetry {
        _log_writer: guard,
        #[cfg(feature = "otlp")]
        otlp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn store_urls_say_which_store() {
        let kind = |url: &str| StoreUrl(url.to_owned()).kind();
        for sqlite in [
            "sqlite://blueprint.db",
            "sqlite:x.db",
            "x.db",
            "/var/lib/bp.db",
        ] {
            assert_eq!(kind(sqlite), Ok(StoreKind::Sqlite), "{sqlite}");
        }
        for postgres in ["postgres://u@h:5432/db", "postgresql://u:p@h/db"] {
            assert_eq!(kind(postgres), Ok(StoreKind::Postgres), "{postgres}");
        }
        let err = kind("mysql://root:hunter2@db/x").unwrap_err();
        assert!(err.contains("mysql://… is not supported"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let debug = format!("{:?}", StoreUrl("postgres://u:hunter2@h/db".into()));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn the_runtime_threads_come_from_the_flag_then_the_variable() {
        let var = |v: &str| Some(v.to_owned());
        assert_eq!(runtime_threads(None, None), Ok(None));
        assert_eq!(runtime_threads(Some(1), var("8")), Ok(Some(1)));
        assert_eq!(runtime_threads(Some(4), None), Ok(Some(4)));
        assert_eq!(runtime_threads(None, var(" 1 ")), Ok(Some(1)));
        assert_eq!(runtime_threads(None, var("3")), Ok(Some(3)));
        assert_eq!(runtime_threads(None, var(" ")), Ok(None), "set to nothing");
        for bad in ["0", "-1", "two", "1025"] {
            let err = runtime_threads(None, var(bad)).unwrap_err();
            assert!(err.contains("TOKIO_WORKER_THREADS"), "{bad}: {err}");
        }
    }

    #[test]
    fn listen_addresses_need_a_host_and_a_port() {
        for good in ["127.0.0.1:3003", "localhost:0", "[::1]:80", "0.0.0.0:65535"] {
            assert_eq!(listen_address(good).as_deref(), Ok(good));
        }
        for bad in ["localhost", ":3003", "localhost:http", "h:70000"] {
            assert!(listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_catalog_table_names_every_built_in_blueprint() {
        let table = catalog_table(&registry().unwrap());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        for name in ["github", "hubspot", "intercom", "slack", "zendesk"] {
            let line = lines
                .iter()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} missing:\n{table}"));
            assert!(line.contains("oauth2"), "{line}");
            assert!(
                line.contains(&format!(
                    "built-in (crates/blueprint/blueprints/{name}.yaml)"
                )),
                "{line}"
            );
        }
        assert!(
            table.contains("https://${connection.subdomain}.zendesk.com/api/v2  "),
            "{table}"
        );
        let plain =
            Registry::new().with(blueprint::Blueprint::new("p", "v1", "https://p.test").unwrap());
        assert!(catalog_table(&plain).contains("token import only"));
    }

    /// The routes of `--help`, as `(method, path, needs the key)`: each line of its list
    /// that starts with a method, the paths of the connections page's assets added.
    fn help_routes() -> Vec<(String, String, bool)> {
        let list = ENVIRONMENT
            .split_once("\nRoutes")
            .and_then(|(_, rest)| rest.split_once("\n\n"))
            .map(|(list, _)| list)
            .unwrap();
        let mut routes = Vec::new();
        for line in list.lines() {
            let mut words = line.split_whitespace();
            let (Some(method), Some(path)) = (words.next(), words.next()) else {
                continue;
            };
            if !["ANY", "GET", "POST", "PUT", "DELETE"].contains(&method) {
                continue;
            }
            let keyed = words.next() == Some("key;");
            routes.push((method.to_owned(), path.to_owned(), keyed));
            if path == "/" {
                for asset in ["/assets/page.js", "/assets/page.css"] {
                    assert!(line.contains(asset) || list.contains(asset), "{asset}");
                    routes.push((method.to_owned(), asset.to_owned(), keyed));
                }
            }
        }
        routes
    }

    /// What `--help` says of each route is what the router does: those it marks `key`
    /// answer 401 without the key, the others do not; the secret key's paragraph names
    /// exactly the others; `/metrics` is in the format its answer says.
    #[tokio::test]
    async fn the_help_says_which_routes_need_the_key_as_the_router_does() {
        use tower::ServiceExt as _;

        let routes = help_routes();
        let paths: Vec<&str> = routes.iter().map(|(_, path, _)| path.as_str()).collect();
        for path in [
            "/proxy/{path}",
            "/connect/sessions",
            "/connect?session=TOKEN",
            "/oauth/callback",
            "/oauth/connect/{name}",
            "/connections/{name}/{id}",
            "/connections",
            "/integrations",
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(
                paths.contains(&path),
                "--help does not list {path}: {paths:?}"
            );
        }
        let yaml = "integrations:\n  intercom:\n    extends_blueprint: intercom\n";
        let integrations =
            Integrations::parse(yaml, "test.yaml", &registry().unwrap(), |_| None).unwrap();
        let proxy = Proxy::builder(
            integrations,
            SecretKey::new("a-key-of-16-chars-or-more").unwrap(),
        )
        .build()
        .unwrap();
        for (method, path, keyed) in &routes {
            let method = if method == "ANY" { "GET" } else { method };
            let target = path
                .replace("{path}", "me")
                .replace("{name}", "intercom")
                .replace("{id}", "acme")
                .replace("TOKEN", "not-a-session");
            let request = http::Request::builder()
                .method(method)
                .uri(&target)
                .header("provider-config-key", "intercom")
                .header("connection-id", "acme")
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{}"))
                .unwrap();
            let status = proxy.router().oneshot(request).await.unwrap().status();
            assert_eq!(
                status == http::StatusCode::UNAUTHORIZED,
                *keyed,
                "{method} {target}: {status}, but --help says it needs the key: {keyed}"
            );
        }
        let paragraph = ENVIRONMENT
            .split_once("BLUEPRINT_SECRET_KEY      ")
            .and_then(|(_, rest)| rest.split_once("At least 16"))
            .map(|(paragraph, _)| paragraph)
            .unwrap();
        let named: Vec<&str> = paragraph
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')'))
            .filter(|word| word.starts_with('/'))
            .collect();
        let mut unkeyed: Vec<&str> = routes
            .iter()
            .filter(|(_, _, keyed)| !keyed)
            .map(|(_, path, _)| path.split('?').next().unwrap())
            .collect();
        let mut named_sorted = named.clone();
        named_sorted.sort_unstable();
        unkeyed.sort_unstable();
        assert_eq!(named_sorted, unkeyed, "{paragraph}");
        assert!(Metrics::CONTENT_TYPE.contains("openmetrics"));
        assert!(
            ENVIRONMENT.contains("/metrics               key; OpenMetrics text format"),
            "{ENVIRONMENT}"
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["blueprint-proxy", "check", "--config", "i.yaml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Check(_))));
        let cli =
            Cli::try_parse_from(["blueprint-proxy", "blueprints", "--blueprints", "bp"]).unwrap();
        assert!(
            matches!(&cli.command, Some(Command::Blueprints(a)) if a.blueprints.as_deref() == Some(Path::new("bp")) && a.config.is_none())
        );
        let cli = Cli::try_parse_from([
            "blueprint-proxy",
            "--config",
            "i.yaml",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.serve.log_format, LogFormat::Json);
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:3003");
        let hardening = Hardening::from(&cli.serve);
        assert_eq!(hardening.max_request_body, None, "no cap by default");
        assert_eq!(hardening.limits.get_drain_delay(), Duration::ZERO);
        let cli = Cli::try_parse_from([
            "blueprint-proxy",
            "--config",
            "i.yaml",
            "--max-request-body",
            "10485760",
            "--drain-delay",
            "12",
        ])
        .unwrap();
        let hardening = Hardening::from(&cli.serve);
        assert_eq!(hardening.max_request_body, Some(10_485_760));
        assert_eq!(hardening.limits.get_drain_delay(), Duration::from_secs(12));
        assert!(Cli::try_parse_from(["blueprint-proxy"]).is_err());
    }
}
