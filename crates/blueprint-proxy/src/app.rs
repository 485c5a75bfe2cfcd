//! The proxy's state and router: one Blueprint stack per integration, one shared HTTP
//! client, one shared token store.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use blueprint::{
    Blueprint, BlueprintError, BlueprintService, ClientError, HttpsClient, Integration,
    Integrations, Registry, StackBody, StackBuilder, default_client, default_hyper_client,
};
use blueprint_ratelimit::SharedBudgets;
use blueprint_refresh::{
    AuthorizationFlow, DEFAULT_LEASE, DEFAULT_LEASE_POLL, HttpClient, MemoryStore,
    OAuth2TokenSource, Provider, ProviderConfig, ProviderConfigError, Secret, StoreKey, TokenStore,
};
use blueprint_trace::{Level, TraceLayer};
use http::StatusCode;

use crate::auth::SecretKey;
use crate::error::ApiError;
use crate::metrics::{IntegrationMetrics, Metrics};
use crate::sessions::Sessions;
use crate::stacks::ConnectionStacks;
use crate::{body, connections, oauth, page, proxy, ready, sessions};

/// The HTTP client every integration's stack sends through.
pub(crate) type Client = HttpsClient<StackBody<Body>>;

/// One integration's stack.
pub(crate) type Stack = BlueprintService<Client>;

/// The blueprints the proxy knows: the built-in catalog ([`Registry::builtin`]).
///
/// # Errors
///
/// Never in practice: the catalog's files are embedded and tested.
pub fn registry() -> Result<Registry, BlueprintError> {
    Registry::builtin().map_err(|e| BlueprintError::new("blueprints", e.to_string()))
}

/// The ready-to-run proxy: an axum [`Router`] with the routes of the crate docs, over one
/// Blueprint stack per integration.
#[derive(Debug, Clone)]
pub struct Proxy {
    state: ProxyState,
}

/// Builds a [`Proxy`]; from [`Proxy::builder`].
pub struct ProxyBuilder {
    integrations: Integrations,
    secret_key: SecretKey,
    store: Option<Arc<dyn TokenStore>>,
    public_url: Option<String>,
    metrics: Option<Arc<Metrics>>,
    forward_host_headers: bool,
    body_idle_timeout: Duration,
    max_request_body: Option<u64>,
    shared_budgets: Option<Arc<dyn SharedBudgets>>,
    refresh_lease: Duration,
}

impl fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("integrations", &self.integrations.len())
            .field("store", &self.store)
            .field("public_url", &self.public_url)
            .field("forward_host_headers", &self.forward_host_headers)
            .field("body_idle_timeout", &self.body_idle_timeout)
            .field("max_request_body", &self.max_request_body)
            .field("refresh_lease", &self.refresh_lease)
            .field(
                "shared_budgets",
                &self
                    .shared_budgets
                    .as_ref()
                    .map(|b| SharedBudgets::component(b)),
            )
            .finish_non_exhaustive()
    }
}

/// A proxy that cannot be built; names the integration at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The HTTP client could not be set up.
    Client(ClientError),
    /// An integration's stack could not be built from its settings.
    Stack {
        /// The integration.
        integration: String,
        /// Why.
        error: BlueprintError,
    },
    /// An integration's OAuth settings cannot work.
    OAuth {
        /// The integration.
        integration: String,
        /// Why.
        error: ProviderConfigError,
    },
    /// The public URL is not an absolute `http(s)` URL.
    PublicUrl(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Client(e) => write!(f, "{e}"),
            BuildError::Stack { integration, error } => {
                write!(f, "integration `{integration}`: {error}")
            }
            BuildError::OAuth { integration, error } => {
                write!(f, "integration `{integration}`: {error}")
            }
            BuildError::PublicUrl(url) => write!(
                f,
                "BLUEPRINT_PUBLIC_URL `{url}` is not an absolute http(s) URL (such as \
                 `https://proxy.example.com`); the OAuth callback URL is built from it"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

impl Proxy {
    /// A builder for a proxy over `integrations` that admits callers sending `secret_key`.
    pub fn builder(integrations: Integrations, secret_key: SecretKey) -> ProxyBuilder {
        ProxyBuilder {
            integrations,
            secret_key,
            store: None,
            public_url: None,
            metrics: None,
            forward_host_headers: false,
            body_idle_timeout: body::DEFAULT_BODY_IDLE_TIMEOUT,
            max_request_body: None,
            shared_budgets: None,
            refresh_lease: DEFAULT_LEASE,
        }
    }

    /// The routes, ready for [`serve`](crate::serve) (or `axum::serve`).
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let json_body = DefaultBodyLimit::max(body::MAX_JSON_BODY);
        Router::new()
            .route("/proxy/{*path}", any(proxy::forward))
            .route("/connect/sessions", post(sessions::create).layer(json_body))
            .route("/connect", get(sessions::start))
            .route("/oauth/connect/{integration}", any(oauth::gone))
            .route("/oauth/callback", get(oauth::callback))
            .route("/connections", get(connections::list))
            .route("/integrations", get(connections::integrations))
            .route(
                "/connections/{integration}/{connection_id}",
                put(connections::import)
                    .delete(connections::remove)
                    .layer(json_body),
            )
            .route("/healthz", get(healthz))
            .route("/readyz", get(ready::readyz))
            .route("/", get(page::index))
            .route("/assets/page.js", get(page::script))
            .route("/assets/page.css", get(page::style))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(crate::edge::EdgeLayer::new(state.clone()))
            .with_state(state)
    }

    /// The router behind a fast path for `/proxy` calls ([`crate::edge::Front`]): what
    /// the binary serves.
    pub(crate) fn front(&self) -> crate::edge::Front {
        crate::edge::Front::new(self.router(), self.state.clone())
    }

    /// The metrics the router records.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.0.metrics
    }

    /// The token store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.state.0.store
    }

    /// Says that the process is shutting down: from now on `GET /readyz` answers 503
    /// `not_ready`, so that a load balancer stops sending calls here. Nothing else changes;
    /// stopping the server is the caller's (the binary calls this on its first SIGINT or
    /// SIGTERM, then serves on for `--drain-delay`, [`Limits::drain_delay`](crate::Limits::drain_delay),
    /// before it stops accepting connections).
    pub fn begin_shutdown(&self) {
        self.state.0.readiness.begin_shutdown();
    }

    /// Writes now what the token sources hold and the store failed to take: refreshed
    /// credentials whose write is retried in the background
    /// ([`OAuth2TokenSource::flush_unstored`], for every integration at once), waiting up
    /// to `within`. For a program about to stop: its runtime would drop those writes, and
    /// a rotated refresh token that only this process holds with them. Returns the
    /// connections still not stored, each also logged at ERROR; at once when there are
    /// none. The binary calls it once its calls have drained, before it closes the store.
    pub async fn flush_unstored(&self, within: Duration) -> Vec<StoreKey> {
        let mut flushes = tokio::task::JoinSet::new();
        for connector in self.state.connectors() {
            if connector.source.unstored() > 0 {
                let source = connector.source.clone();
                flushes.spawn(async move { source.flush_unstored(within).await });
            }
        }
        let mut left = Vec::new();
        while let Some(flushed) = flushes.join_next().await {
            if let Ok(keys) = flushed {
                left.extend(keys);
            }
        }
        left
    }
}

impl ProxyBuilder {
    /// Where connections are kept (default: in memory, lost on exit; the binary uses an
    /// SQLite file).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The URL at which the provider reaches this proxy: the OAuth callback is
    /// `<public_url>/oauth/callback`. Default `http://127.0.0.1:3003`.
    #[must_use]
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// Forwards the caller's `Forwarded` and `X-Forwarded-Host` headers to the provider
    /// (default: dropped, so that a caller cannot make the provider believe it was asked
    /// for another host).
    #[must_use]
    pub fn forward_host_headers(mut self, forward: bool) -> Self {
        self.forward_host_headers = forward;
        self
    }

    /// How long the proxy waits for the next piece of a caller's request body before
    /// answering 408 `request_timeout` (default 30 s). Time spent while the provider is
    /// not reading does not count. One too long to add to the clock (`Duration::MAX`)
    /// means never.
    #[must_use]
    pub fn request_body_timeout(mut self, idle: Duration) -> Self {
        self.body_idle_timeout = idle;
        self
    }

    /// The most bytes a `/proxy` call's request body may have (the binary's
    /// `--max-request-body`; default: no cap, bodies of any size are streamed through). A
    /// call whose `Content-Length` is larger is answered 413 `body_too_large` before
    /// anything is sent; a body without one (chunked) that grows past it is cut there, the
    /// call to the provider fails, and the caller gets 413 unless the provider's answer has
    /// started. Nothing more is buffered for it: the body is only counted. The JSON routes
    /// keep their own cap of 64 KiB.
    #[must_use]
    pub fn max_request_body(mut self, max: u64) -> Self {
        self.max_request_body = Some(max);
        self
    }

    /// Shares every integration's rate-limit budgets with the other replicas that use the
    /// same `budgets` (the binary's `--redis`: `blueprint_ratelimit::RedisBudgets`), so
    /// that together they spend each connection's budget once. Default: each process paces
    /// alone. While the store is away each replica paces alone, and the
    /// `blueprint_fallback_active` metric says so.
    #[must_use]
    pub fn shared_budgets(mut self, budgets: impl SharedBudgets) -> Self {
        self.shared_budgets = Some(Arc::new(budgets));
        self
    }

    /// How long a refresh lease lasts (the binary's `--refresh-lease`, default 60 s): with
    /// a store shared by several replicas, one of them refreshes a connection's token
    /// while the others wait for it; if that one dies, another takes over once the lease
    /// lapses. The token-endpoint call of a refresh is bounded by ¾ of it (and by 30 s).
    #[must_use]
    pub fn refresh_lease(mut self, lease: Duration) -> Self {
        self.refresh_lease = lease;
        self
    }

    /// Records into these metrics (default: new ones, one set per integration).
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Builds every integration's stack over one shared HTTP client.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the integration whose settings cannot work.
    pub fn build(self) -> Result<Proxy, BuildError> {
        let public_url = self
            .public_url
            .unwrap_or_else(|| String::from("http://127.0.0.1:3003"));
        let public_url = public_url.trim_end_matches('/').to_owned();
        let scheme_ok = public_url
            .strip_prefix("https://")
            .or_else(|| public_url.strip_prefix("http://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' ']));
        if !scheme_ok {
            return Err(BuildError::PublicUrl(public_url));
        }
        let redirect_url = format!("{public_url}/oauth/callback");
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn TokenStore>);
        let metrics = self.metrics.unwrap_or_else(|| {
            Arc::new(Metrics::new(
                self.integrations.iter().map(Integration::name),
            ))
        });
        let client: Client = default_client().map_err(BuildError::Client)?;
        let token_http =
            HttpClient::from_hyper(default_hyper_client().map_err(BuildError::Client)?);
        let mut connectors = Vec::with_capacity(self.integrations.len());
        for integration in &self.integrations {
            let connector = Connector::build(
                integration,
                &store,
                TokenSettings {
                    http: &token_http,
                    lease: self.refresh_lease,
                },
                &redirect_url,
                client.clone(),
                &metrics,
                self.shared_budgets.as_ref(),
            )?;
            connectors.push(connector);
        }
        let index = connectors
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.to_string(), i))
            .collect();
        Ok(Proxy {
            state: ProxyState(Arc::new(Shared {
                connectors,
                index,
                store,
                secret_key: self.secret_key,
                metrics,
                public_url,
                sessions: Sessions::default(),
                readiness: ready::Readiness::default(),
                forward_host_headers: self.forward_host_headers,
                body_idle_timeout: self.body_idle_timeout,
                max_request_body: self.max_request_body,
            })),
        })
    }
}

/// Checks that every integration of `integrations` can be built (stack and OAuth
/// settings), without opening a store or a socket: what `blueprint-proxy check` runs.
///
/// # Errors
///
/// The first [`BuildError`].
pub fn check(integrations: &Integrations) -> Result<(), BuildError> {
    for integration in integrations {
        StackBuilder::new(integration.blueprint().clone(), no_tokens())
            .layer()
            .map_err(|error| BuildError::Stack {
                integration: integration.name().to_owned(),
                error,
            })?;
        if let Some(config) = provider_config(integration, "http://127.0.0.1:3003/oauth/callback") {
            Provider::new(config).map_err(|error| BuildError::OAuth {
                integration: integration.name().to_owned(),
                error,
            })?;
        }
    }
    Ok(())
}

/// A token source that never gives a token: `check` only builds layers.
fn no_tokens() -> impl blueprint_core::TokenSource {
    struct NoTokens;
    impl blueprint_core::TokenSource for NoTokens {
        fn token(&self, _: &blueprint_core::ConnectionId) -> blueprint_core::TokenFuture {
            blueprint_core::TokenFuture::ready(Err(blueprint_core::TokenError::not_found()))
        }
    }
    NoTokens
}

/// The OAuth provider of an integration whose blueprint has OAuth endpoints.
fn provider_config(integration: &Integration, redirect_url: &str) -> Option<ProviderConfig> {
    let config = integration.blueprint().provider_config()?;
    Some(ProviderConfig {
        // A connection can be imported without an OAuth app; such a connection's token is
        // never refreshed (a refresh token is refused on import), so the id is not sent.
        client_id: integration
            .oauth_client_id()
            .unwrap_or("no-oauth-app-configured")
            .to_owned(),
        client_secret: integration
            .oauth_client_secret()
            .map(|s| Secret::new(s.expose())),
        redirect_url: Some(redirect_url.to_owned()),
        ..config
    })
}

/// A handle on the proxy's shared state, as axum's router state.
#[derive(Clone)]
pub(crate) struct ProxyState(Arc<Shared>);

impl fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyState")
            .field("integrations", &self.0.index.keys().collect::<Vec<_>>())
            .field("store", &self.0.store)
            .finish_non_exhaustive()
    }
}

struct Shared {
    connectors: Vec<Connector>,
    /// Integration names, fixed at start: foldhash costs less per call than `SipHash`.
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    store: Arc<dyn TokenStore>,
    secret_key: SecretKey,
    metrics: Arc<Metrics>,
    public_url: String,
    sessions: Sessions,
    readiness: ready::Readiness,
    forward_host_headers: bool,
    body_idle_timeout: Duration,
    max_request_body: Option<u64>,
}

/// One integration, ready to call: its stack, its token source (over the shared store),
/// its OAuth flow if it has an OAuth app.
pub(crate) struct Connector {
    pub(crate) name: Arc<str>,
    pub(crate) stack: Stack,
    pub(crate) source: OAuth2TokenSource,
    pub(crate) flow: Option<AuthorizationFlow>,
    /// The integration's blueprint (connection parameters are checked against it).
    pub(crate) blueprint: Blueprint,
    /// Each connection's own stack, when the base URL or headers name connection
    /// parameters.
    pub(crate) per_connection: Option<ConnectionStacks>,
    /// Whether the integration names an OAuth app (`oauth_client_id`), so that tokens can
    /// be refreshed.
    pub(crate) has_oauth_app: bool,
    pub(crate) metrics: Arc<IntegrationMetrics>,
}

/// How every integration's token source talks to token endpoints.
#[derive(Clone, Copy)]
struct TokenSettings<'a> {
    /// The token-endpoint client.
    http: &'a HttpClient,
    /// How long a refresh lease lasts.
    lease: Duration,
}

impl Connector {
    fn build(
        integration: &Integration,
        store: &Arc<dyn TokenStore>,
        tokens: TokenSettings<'_>,
        redirect_url: &str,
        client: Client,
        metrics: &Arc<Metrics>,
        shared_budgets: Option<&Arc<dyn SharedBudgets>>,
    ) -> Result<Connector, BuildError> {
        let name = integration.name();
        let config = provider_config(integration, redirect_url).unwrap_or_else(|| {
            // No OAuth endpoints at all: imported tokens only. The token URL is never
            // called (a refresh token is refused on import).
            ProviderConfig {
                client_id: String::from("no-oauth-app-configured"),
                token_url: String::from("http://127.0.0.1:9/no-token-endpoint"),
                ..ProviderConfig::default()
            }
        });
        let provider = Provider::new(config).map_err(|error| BuildError::OAuth {
            integration: name.to_owned(),
            error,
        })?;
        let has_oauth_app =
            integration.oauth_client_id().is_some() && integration.blueprint().oauth().is_some();
        let metrics = metrics
            .integration(name)
            .unwrap_or_else(|| Arc::new(IntegrationMetrics::new()));
        let events = metrics.event_sink();
        let source = OAuth2TokenSource::builder_shared(provider, Arc::clone(store))
            .integration(name)
            .http_client(tokens.http.clone())
            .lease(tokens.lease, DEFAULT_LEASE_POLL)
            .events(events.clone())
            .build();
        // The proxy writes one access-log line per call; the engine's own event for each
        // call is detail, at DEBUG (`RUST_LOG=blueprint_trace=debug`).
        // The span of each call is detail too: at INFO nothing of it is made or formatted.
        let trace = TraceLayer::new()
            .span_level(Level::DEBUG)
            .success_level(Level::DEBUG)
            .client_error_level(Level::DEBUG)
            .server_error_level(Level::DEBUG)
            .failure_level(Level::DEBUG);
        let mut stack = StackBuilder::with_shared_tokens(
            integration.blueprint().clone(),
            Arc::new(source.clone()),
        )
        .trace(trace)
        .event_sink(events);
        if let Some(budgets) = shared_budgets {
            stack = stack.shared_budgets(Arc::clone(budgets));
        }
        let blueprint = integration.blueprint().clone();
        let uses_params = blueprint.base_url_template().is_some()
            || blueprint
                .default_headers()
                .values()
                .any(|v| v.to_str().is_ok_and(|t| t.contains("${connection.")));
        let per_connection =
            uses_params.then(|| ConnectionStacks::new(stack.clone(), client.clone()));
        let stack = stack.service(client).map_err(|error| BuildError::Stack {
            integration: name.to_owned(),
            error,
        })?;
        let flow = has_oauth_app.then(|| AuthorizationFlow::new(source.clone()));
        Ok(Connector {
            name: Arc::from(name),
            stack,
            source,
            flow,
            blueprint,
            per_connection,
            has_oauth_app,
            metrics,
        })
    }
}

impl Connector {
    /// The stack a call for `connection` goes through: the integration's, or the
    /// connection's own when its blueprint names connection parameters.
    pub(crate) async fn stack_for(
        &self,
        store: &dyn TokenStore,
        connection: &str,
    ) -> Result<Stack, ApiError> {
        match &self.per_connection {
            None => Ok(self.stack.clone()),
            Some(stacks) => {
                let key = self
                    .source
                    .key(&blueprint_core::ConnectionId::new(connection));
                stacks.stack(store, &key).await
            }
        }
    }

    /// Forgets what is held in memory for `connection` (its token, its stack).
    pub(crate) fn forget(&self, connection: &blueprint_core::ConnectionId) {
        self.source.forget(connection);
        self.forget_stack(connection);
    }

    /// Forgets `connection`'s own stack: its parameters are read again on its next call.
    pub(crate) fn forget_stack(&self, connection: &blueprint_core::ConnectionId) {
        if let Some(stacks) = &self.per_connection {
            stacks.forget(connection);
        }
    }
}

impl ProxyState {
    pub(crate) fn secret_key(&self) -> &SecretKey {
        &self.0.secret_key
    }

    pub(crate) fn store(&self) -> &Arc<dyn TokenStore> {
        &self.0.store
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// The integration named `name`.
    pub(crate) fn connector(&self, name: &str) -> Result<&Connector, ApiError> {
        self.connector_index(name).map(|i| &self.0.connectors[i])
    }

    /// The index in [`connectors`](Self::connectors) of the integration named `name`.
    pub(crate) fn connector_index(&self, name: &str) -> Result<usize, ApiError> {
        self.0
            .index
            .get(name)
            .copied()
            .ok_or_else(|| ApiError::unknown_integration(name))
    }

    /// The URL at which the proxy is reached, without a trailing `/`.
    pub(crate) fn public_url(&self) -> &str {
        &self.0.public_url
    }

    /// The live connect sessions.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }

    /// Whether the proxy is shutting down, and whether its store answers.
    pub(crate) fn readiness(&self) -> &ready::Readiness {
        &self.0.readiness
    }

    /// How long a caller's body may stall between frames.
    pub(crate) fn body_idle_timeout(&self) -> Duration {
        self.0.body_idle_timeout
    }

    /// The most bytes a `/proxy` call's request body may have, if there is a cap.
    pub(crate) fn max_request_body(&self) -> Option<u64> {
        self.0.max_request_body
    }

    /// Whether `Forwarded` and `X-Forwarded-Host` are forwarded.
    pub(crate) fn forwards_host_headers(&self) -> bool {
        self.0.forward_host_headers
    }

    /// Every integration, in file order.
    pub(crate) fn connectors(&self) -> &[Connector] {
        &self.0.connectors
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(
    _auth: crate::auth::Authorized,
    axum::extract::State(state): axum::extract::State<ProxyState>,
) -> Response {
    for connector in state.connectors() {
        connector.metrics.set_unstored(connector.source.unstored());
    }
    (
        [(http::header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        state.metrics().render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; the routes are /proxy/{path}, /connect/sessions, /connect, \
         /oauth/callback, /connections, /integrations, /healthz, /readyz, /metrics and the \
         connections page at /",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
