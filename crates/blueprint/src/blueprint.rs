//! An API described as data.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

pub use blueprint_ratelimit::ResetFormat;
pub use blueprint_refresh::ClientAuth;

pub use blueprint_ratelimit::{RateLimitRule, WaitFrom};

use crate::base_url::{BaseUrl, InvalidBaseUrl};
use crate::template::{self, Part, TemplateError};

/// The OAuth2 endpoints and habits of a provider.
///
/// ```
/// use blueprint::OAuthSettings;
///
/// let oauth = OAuthSettings::new("https://slack.com/oauth/v2/authorize", "https://slack.com/api/oauth.v2.access")
///     .scope_separator(",");
/// assert_eq!(oauth.scope_separator, ",");
/// assert!(!oauth.pkce);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// Where the user is sent to authorize (`https://app.intercom.com/oauth`).
    pub authorization_url: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_url: String,
    /// Whether the provider supports PKCE (S256).
    pub pkce: bool,
    /// Scopes asked for, if the provider takes them in the URL.
    pub scopes: Vec<String>,
    /// What joins the scopes in the `scope` parameter: a space (RFC 6749, the default) or
    /// what the provider wants instead (Slack: `,`).
    pub scope_separator: String,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
    /// Extra query parameters for the authorization URL.
    pub extra_authorization_params: Vec<(String, String)>,
}

impl OAuthSettings {
    /// The two endpoints, with the defaults: no PKCE, no scopes, scopes joined by a space,
    /// client credentials in the request body, no extra parameters.
    pub fn new(authorization_url: impl Into<String>, token_url: impl Into<String>) -> Self {
        OAuthSettings {
            authorization_url: authorization_url.into(),
            token_url: token_url.into(),
            pkce: false,
            scopes: Vec::new(),
            scope_separator: " ".to_owned(),
            client_auth: ClientAuth::default(),
            extra_authorization_params: Vec::new(),
        }
    }

    /// Sets what joins the scopes.
    #[must_use]
    pub fn scope_separator(mut self, separator: impl Into<String>) -> Self {
        self.scope_separator = separator.into();
        self
    }

    /// The `scope` parameter's value: the scopes joined by the separator.
    pub fn scope_param(&self) -> String {
        self.scopes.join(&self.scope_separator)
    }
}

/// The response headers that carry the rate limit, and the reset's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Requests allowed per window (`X-RateLimit-Limit`).
    pub limit: HeaderName,
    /// Requests left in the window (`X-RateLimit-Remaining`).
    pub remaining: HeaderName,
    /// When the window resets (`X-RateLimit-Reset`).
    pub reset: HeaderName,
    /// How the reset tells time.
    pub reset_format: ResetFormat,
}

impl Default for RateLimitHeaders {
    fn default() -> Self {
        RateLimitHeaders {
            limit: HeaderName::from_static("x-ratelimit-limit"),
            remaining: HeaderName::from_static("x-ratelimit-remaining"),
            reset: HeaderName::from_static("x-ratelimit-reset"),
            reset_format: ResetFormat::EpochSeconds,
        }
    }
}

/// The default longest server-announced wait a blueprint believes: five minutes.
pub const DEFAULT_MAX_SERVER_WAIT: Duration = Duration::from_secs(300);

/// Requests matching a method and a path pattern that may be retried like idempotent ones
/// (an upsert `POST`), or never retried at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRule {
    /// The method the rule applies to.
    pub method: Method,
    /// The path, relative to the base URL: exact (`/companies`), or a prefix ending in `*`
    /// (`/events*`). A `{id}`-style segment matches any one segment.
    pub path: String,
    /// `true`: safe to retry (like `PUT`); `false`: never retried.
    pub retry_safe: bool,
}

impl RetryRule {
    /// Whether the rule covers this method and path.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        *method == self.method && path_matches(&self.path, path)
    }
}

/// Whether `path` fits `pattern`: exact, with `{name}` segments matching any one
/// non-empty segment, or a prefix when the pattern ends in `*`.
pub(crate) fn path_matches(pattern: &str, path: &str) -> bool {
    let (pattern, prefix) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let mut want = pattern.trim_end_matches('/').split('/').peekable();
    let mut have = path.trim_end_matches('/').split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (None, Some(_)) => return prefix,
            (Some(_), None) => return false,
            (Some(w), Some(h)) => {
                if w == h || (is_placeholder_segment(w) && !h.is_empty()) {
                    continue;
                }
                return prefix && want.peek().is_none() && h.starts_with(w);
            }
        }
    }
}

pub(crate) fn is_placeholder_segment(segment: &str) -> bool {
    segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}')
}

/// A route template (`/contacts/{id}/tags`): names a call in logs and metrics without
/// the raw ids in its path.
///
/// ```
/// use blueprint::Route;
///
/// let route = Route::new("/contacts/{id}/tags")?;
/// assert!(route.matches("/contacts/6789/tags"));
/// assert!(!route.matches("/contacts/6789"));
/// assert!(Route::new("contacts").is_err());
/// # Ok::<(), blueprint::BlueprintError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route(String);

impl Route {
    /// A template: starts with `/`; a `{name}` placeholder (letters, digits, `_`) is a whole
    /// segment.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when it is not one.
    pub fn new(template: &str) -> Result<Self, BlueprintError> {
        check_route(template).map_err(|why| BlueprintError::new("routes", why))?;
        Ok(Route(template.to_owned()))
    }

    /// The template.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a path (relative to the base URL) fits the template.
    pub fn matches(&self, path: &str) -> bool {
        path_matches(&self.0, path)
    }
}

/// Checks a route template or a retry rule's path; says why it is not one.
pub(crate) fn check_route(template: &str) -> Result<(), String> {
    if !template.starts_with('/') {
        return Err(format!("`{template}` does not start with `/`"));
    }
    let body = template.strip_suffix('*').unwrap_or(template);
    for segment in body.split('/') {
        if segment.contains(['{', '}']) {
            let name = segment
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|n| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
            if name.is_none() {
                return Err(format!(
                    "`{segment}` is not a placeholder: write `{{name}}` as a whole segment"
                ));
            }
        }
        if segment == "." || segment == ".." || segment.contains(['?', '#', '%', '\\', ' ']) {
            return Err(format!(
                "`{segment}` cannot be a segment of a route (no dot segments, `?`, `#`, `%`, backslash or space)"
            ));
        }
    }
    Ok(())
}

/// Where a connection parameter's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamSource {
    /// A field of the body that imports a connection.
    Import,
    /// A query parameter of the connect URL (`/oauth/connect/zendesk?subdomain=acme`).
    ConnectQuery,
    /// A field of the token endpoint's answer (Salesforce's `instance_url`).
    TokenField,
}

/// A value each connection has for itself (Zendesk's subdomain), used as
/// `${connection.NAME}` in the base URL, the OAuth URLs and header values.
///
/// ```
/// use blueprint::{ConnectionParam, ParamSource};
///
/// let subdomain = ConnectionParam::new("subdomain", ParamSource::ConnectQuery)?
///     .pattern("[a-z0-9][a-z0-9-]*")?;
/// assert!(subdomain.accepts("acme"));
/// assert!(!subdomain.accepts("Acme Corp"));
/// # Ok::<(), blueprint::BlueprintError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionParam {
    name: String,
    from: ParamSource,
    field: Option<String>,
    pattern: Option<regex::Regex>,
}

/// The longest pattern a connection parameter takes, in bytes of its compiled program.
const PATTERN_SIZE_LIMIT: usize = 64 * 1024;

impl ConnectionParam {
    /// A parameter named `name` (letters, digits, `_`), taken from `from`.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when the name is not one.
    pub fn new(name: &str, from: ParamSource) -> Result<Self, BlueprintError> {
        if !template::is_param_name(name) {
            return Err(BlueprintError::new(
                "connection_params",
                format!(
                    "`{name}` is not a parameter name (letters, digits and `_`, not starting with a digit)"
                ),
            ));
        }
        Ok(ConnectionParam {
            name: name.to_owned(),
            from,
            field: None,
            pattern: None,
        })
    }

    /// Reads the value from this field (query parameter, body or token-answer field)
    /// instead of the one named like the parameter.
    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Values must match this regular expression, whole.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when it is not a regular expression (or a huge one).
    pub fn pattern(mut self, pattern: &str) -> Result<Self, BlueprintError> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let why = match e {
                    regex::Error::CompiledTooBig(_) => "the pattern is too large".to_owned(),
                    other => format!("not a regular expression: {other}"),
                };
                BlueprintError::new("connection_params", why)
            })?;
        self.pattern = Some(regex);
        Ok(self)
    }

    /// The name, as in `${connection.NAME}`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the value comes from.
    pub fn from(&self) -> ParamSource {
        self.from
    }

    /// The field the value is read from (by default the parameter's name).
    pub fn field_name(&self) -> &str {
        self.field.as_deref().unwrap_or(&self.name)
    }

    /// The pattern values must match, as given (without the anchors added).
    pub fn pattern_str(&self) -> Option<&str> {
        self.pattern.as_ref().map(|r| {
            let s = r.as_str();
            s.strip_prefix("^(?:")
                .and_then(|s| s.strip_suffix(")$"))
                .unwrap_or(s)
        })
    }

    /// Whether `value` matches the pattern (always, without one). Where the value goes
    /// adds its own rules (see [`Blueprint::for_connection`]).
    pub fn accepts(&self, value: &str) -> bool {
        self.pattern.as_ref().is_none_or(|r| r.is_match(value))
    }
}

impl PartialEq for ConnectionParam {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.from == other.from
            && self.field == other.field
            && self.pattern_str() == other.pattern_str()
    }
}

impl Eq for ConnectionParam {}

/// Retry and timeout settings of an API.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// The time budget of a whole call, retries and waits included.
    pub deadline: Option<Duration>,
    /// The longest one network attempt may take; `None` for no limit.
    pub attempt_timeout: Option<Duration>,
    /// The longest server-directed wait the retry layer sits through before it hands the
    /// answer back (see also [`Blueprint::max_server_wait`]).
    pub max_server_wait: Duration,
    /// Per method and path exceptions to the default policy.
    pub rules: Vec<RetryRule>,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            deadline: Some(Duration::from_secs(60)),
            attempt_timeout: Some(Duration::from_secs(30)),
            max_server_wait: Duration::from_secs(60),
            rules: Vec::new(),
        }
    }
}

/// One region's hosts (Intercom has US, EU and AU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The region's name, e.g. `eu`.
    pub name: String,
    /// The API's base URL in the region.
    pub base_url: String,
    /// The authorization URL in the region, if it differs.
    pub authorization_url: Option<String>,
    /// The token URL in the region, if it differs.
    pub token_url: Option<String>,
}

/// An API described as data: where it is, how to authenticate, how it signals rate limits
/// and what is safe to retry. The engine's [`StackBuilder`](crate::StackBuilder) turns it
/// into a stack of layers; a `blueprints:` section declares one in YAML, and
/// `integrations.yaml` extends one by name and overrides its settings.
///
/// ```
/// use blueprint::Blueprint;
///
/// let api = Blueprint::new("acme", "v1", "https://api.acme.test/v1")?
///     .default_header("accept", "application/json")?;
/// assert_eq!(api.id(), "acme:v1");
/// assert_eq!(api.base_url().to_string(), "https://api.acme.test/v1/");
/// # Ok::<(), blueprint::BlueprintError>(())
/// ```
///
/// A base URL may name a connection parameter as a whole DNS label or path segment; each
/// connection then gets its own blueprint from [`Blueprint::for_connection`]:
///
/// ```
/// use blueprint::{Blueprint, ConnectionParam, ParamSource};
///
/// let zendesk = Blueprint::new("zendesk", "v2", "https://zendesk.invalid")?
///     .with_connection_param(ConnectionParam::new("subdomain", ParamSource::ConnectQuery)?)
///     .with_base_url("https://${connection.subdomain}.zendesk.com/api/v2")?;
/// assert!(zendesk.needs_connection_params());
/// let acme = zendesk.for_connection(|name| (name == "subdomain").then(|| "acme".to_owned()))?;
/// assert_eq!(acme.base_url().to_string(), "https://acme.zendesk.com/api/v2/");
/// assert!(zendesk.for_connection(|_| Some("evil.com/x".to_owned())).is_err());
/// # Ok::<(), blueprint::BlueprintError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Blueprint {
    name: String,
    version: String,
    base_url: BaseUrl,
    /// The base URL as written, when it names connection parameters.
    base_url_template: Option<String>,
    regions: Vec<Region>,
    default_headers: HeaderMap,
    oauth: Option<OAuthSettings>,
    rate_limit: RateLimitHeaders,
    rate_limited: Vec<RateLimitRule>,
    max_server_wait: Duration,
    retry: RetrySettings,
    tokens_expire: bool,
    routes: Vec<Route>,
    connection_params: Vec<ConnectionParam>,
}

impl Blueprint {
    /// A blueprint for the API at `base_url`, with default settings: no OAuth, the
    /// `X-RateLimit-*` headers with an epoch-seconds reset, rate limited = 429 (wait from
    /// `Retry-After` or the reset), server waits believed up to five minutes, the default
    /// retry settings, tokens that may expire, no routes, no connection parameters.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when the base URL is not a plain `http(s)` URL.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        base_url: &str,
    ) -> Result<Self, BlueprintError> {
        Ok(Blueprint {
            name: name.into(),
            version: version.into(),
            base_url: BaseUrl::parse(base_url)
                .map_err(|e| BlueprintError::base_url("base_url", &e))?,
            base_url_template: None,
            regions: Vec::new(),
            default_headers: HeaderMap::new(),
            oauth: None,
            rate_limit: RateLimitHeaders::default(),
            rate_limited: vec![RateLimitRule::new(
                StatusCode::TOO_MANY_REQUESTS,
                WaitFrom::RetryAfterOrReset,
            )],
            max_server_wait: DEFAULT_MAX_SERVER_WAIT,
            retry: RetrySettings::default(),
            tokens_expire: true,
            routes: Vec::new(),
            connection_params: Vec::new(),
        })
    }

    /// `name:version`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// The API's name (`intercom`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The blueprint's version (`v0`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Gives the blueprint another name and version (a blueprint that extends another).
    #[must_use]
    pub fn renamed(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.name = name.into();
        self.version = version.into();
        self
    }

    /// The base URL requests with a relative path are sent to. When the base URL names
    /// connection parameters, this is a stand-in under `.invalid` (which never resolves):
    /// use [`Blueprint::for_connection`].
    pub fn base_url(&self) -> &BaseUrl {
        &self.base_url
    }

    /// The base URL as written, when it names connection parameters
    /// (`https://${connection.subdomain}.zendesk.com`).
    pub fn base_url_template(&self) -> Option<&str> {
        self.base_url_template.as_deref()
    }

    /// Headers every request carries unless it sets its own.
    pub fn default_headers(&self) -> &HeaderMap {
        &self.default_headers
    }

    /// The OAuth2 settings, if the API uses OAuth2.
    pub fn oauth(&self) -> Option<&OAuthSettings> {
        self.oauth.as_ref()
    }

    /// The rate-limit headers.
    pub fn rate_limit(&self) -> &RateLimitHeaders {
        &self.rate_limit
    }

    /// Which answers mean "rate limited", checked in order.
    pub fn rate_limited(&self) -> &[RateLimitRule] {
        &self.rate_limited
    }

    /// The first rule that says this answer is rate limited.
    pub fn rate_limit_rule(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<&RateLimitRule> {
        self.rate_limited
            .iter()
            .find(|r| r.matches(status, headers))
    }

    /// The longest server-announced wait (`Retry-After`, a reset) believed: a longer one is
    /// cut to this, so a server (or a typo in its header) cannot stop calls for longer.
    pub fn max_server_wait(&self) -> Duration {
        self.max_server_wait
    }

    /// The retry and timeout settings.
    pub fn retry(&self) -> &RetrySettings {
        &self.retry
    }

    /// Whether access tokens expire (and so may be refreshed). Intercom's do not: a 401
    /// means the connection must be authorized again.
    pub fn tokens_expire(&self) -> bool {
        self.tokens_expire
    }

    /// The regions the API offers.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The route templates. The stack names each call by the most specific one that fits
    /// its path, or by an exact retry rule's path ([`Routes::of`](crate::Routes::of)).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The connection parameters.
    pub fn connection_params(&self) -> &[ConnectionParam] {
        &self.connection_params
    }

    /// Whether the base URL, an OAuth URL, a region or a header names a connection
    /// parameter, so that each connection needs [`Blueprint::for_connection`].
    pub fn needs_connection_params(&self) -> bool {
        self.base_url_template.is_some()
            || self.oauth.as_ref().is_some_and(|o| {
                template::has_placeholder(&o.authorization_url)
                    || template::has_placeholder(&o.token_url)
            })
            || self.regions.iter().any(|r| {
                template::has_placeholder(&r.base_url)
                    || r.authorization_url
                        .as_deref()
                        .is_some_and(template::has_placeholder)
                    || r.token_url
                        .as_deref()
                        .is_some_and(template::has_placeholder)
            })
            || self
                .default_headers
                .values()
                .any(|v| v.to_str().is_ok_and(template::has_placeholder))
    }

    /// Sets the base URL. It may name declared connection parameters, each as a whole DNS
    /// label of the host (with at least two literal labels after it, so the domain stays
    /// the API's) or as a whole path segment.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when it is not a plain `http(s)` URL, or names a parameter that
    /// is not declared or in a place where it could change the host's shape.
    pub fn with_base_url(mut self, base_url: &str) -> Result<Self, BlueprintError> {
        if template::has_placeholder(base_url) {
            let stand_in = self.url_stand_in("base_url", base_url)?;
            self.base_url =
                BaseUrl::parse(&stand_in).map_err(|e| BlueprintError::base_url("base_url", &e))?;
            self.base_url_template = Some(base_url.to_owned());
        } else {
            self.base_url =
                BaseUrl::parse(base_url).map_err(|e| BlueprintError::base_url("base_url", &e))?;
            self.base_url_template = None;
        }
        Ok(self)
    }

    /// Checks a URL template against the declared parameters; gives the URL with each
    /// placeholder replaced by a stand-in (the host then ends in `.invalid`).
    pub(crate) fn url_stand_in(
        &self,
        key: &'static str,
        url: &str,
    ) -> Result<String, BlueprintError> {
        template::url_stand_in(url, &|name| self.param(name).is_some())
            .map_err(|e| BlueprintError::template(key, &e))
    }

    /// Checks that a header value names only declared parameters.
    pub(crate) fn check_header_template(&self, value: &str) -> Result<(), BlueprintError> {
        template::check_text(value, &|name| self.param(name).is_some())
            .map_err(|e| BlueprintError::template("headers", &e))
    }

    fn param(&self, name: &str) -> Option<&ConnectionParam> {
        self.connection_params.iter().find(|p| p.name == name)
    }

    /// Adds a region variant (replacing one of the same name).
    ///
    /// Its URLs are checked when the region is chosen ([`Blueprint::in_region`]).
    #[must_use]
    pub fn with_region(mut self, region: Region) -> Self {
        self.regions.retain(|r| r.name != region.name);
        self.regions.push(region);
        self
    }

    /// Switches to a region: its base URL and, where it has its own, OAuth endpoints.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when the blueprint has no such region, naming the ones it has.
    pub fn in_region(mut self, name: &str) -> Result<Self, BlueprintError> {
        let Some(region) = self
            .regions
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .cloned()
        else {
            let known: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
            return Err(BlueprintError::new(
                "region",
                format!(
                    "`{name}` is not a region of {} (known: {})",
                    self.id(),
                    known.join(", ")
                ),
            ));
        };
        self = self
            .with_base_url(&region.base_url)
            .map_err(|e| BlueprintError::new("region", e.message))?;
        if let Some(oauth) = &mut self.oauth {
            if let Some(url) = region.authorization_url {
                oauth.authorization_url = url;
            }
            if let Some(url) = region.token_url {
                oauth.token_url = url;
            }
        }
        Ok(self)
    }

    /// Adds a default header (replacing one of the same name). The value may name declared
    /// connection parameters (`${connection.NAME}`).
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when the name or value is not a valid header, or the value names
    /// an undeclared parameter.
    pub fn default_header(mut self, name: &str, value: &str) -> Result<Self, BlueprintError> {
        let header = HeaderName::try_from(name).map_err(|_| {
            BlueprintError::new("headers", format!("`{name}` is not a header name"))
        })?;
        let mut value = HeaderValue::try_from(value).map_err(|_| {
            BlueprintError::new(
                "headers",
                format!("the value of `{name}` is not a header value"),
            )
        })?;
        if let Ok(text) = value.to_str() {
            self.check_header_template(text)?;
        }
        // Credentials put in default headers (an API key) stay out of logs and Debug output.
        if looks_secret(&header) {
            value.set_sensitive(true);
        }
        self.default_headers.insert(header, value);
        Ok(self)
    }

    /// Marks a default header's value sensitive (it came from a secret place, such as the
    /// environment): `Debug` output and summaries then hide it.
    pub(crate) fn hide_header(&mut self, name: &HeaderName) {
        if let Some(value) = self.default_headers.get_mut(name) {
            value.set_sensitive(true);
        }
    }

    /// Sets the OAuth2 settings.
    #[must_use]
    pub fn with_oauth(mut self, oauth: OAuthSettings) -> Self {
        self.oauth = Some(oauth);
        self
    }

    /// Changes the OAuth2 settings in place (nothing happens when there are none).
    #[must_use]
    pub fn map_oauth(mut self, f: impl FnOnce(&mut OAuthSettings)) -> Self {
        if let Some(oauth) = &mut self.oauth {
            f(oauth);
        }
        self
    }

    /// Sets the rate-limit headers.
    #[must_use]
    pub fn with_rate_limit(mut self, headers: RateLimitHeaders) -> Self {
        self.rate_limit = headers;
        self
    }

    /// Sets which answers mean "rate limited" (replacing the default: 429).
    #[must_use]
    pub fn with_rate_limited(mut self, rules: impl IntoIterator<Item = RateLimitRule>) -> Self {
        self.rate_limited = rules.into_iter().collect();
        self
    }

    /// Sets the longest server-announced wait believed.
    #[must_use]
    pub fn with_max_server_wait(mut self, max: Duration) -> Self {
        self.max_server_wait = max;
        self
    }

    /// Sets the retry settings.
    #[must_use]
    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// Changes the retry settings in place.
    #[must_use]
    pub fn map_retry(mut self, f: impl FnOnce(&mut RetrySettings)) -> Self {
        f(&mut self.retry);
        self
    }

    /// Sets whether tokens expire.
    #[must_use]
    pub fn with_tokens_expire(mut self, expire: bool) -> Self {
        self.tokens_expire = expire;
        self
    }

    /// Adds route templates (after the ones it has; one already there is not repeated).
    #[must_use]
    pub fn with_routes(mut self, routes: impl IntoIterator<Item = Route>) -> Self {
        for route in routes {
            if !self.routes.contains(&route) {
                self.routes.push(route);
            }
        }
        self
    }

    /// Declares a connection parameter (replacing one of the same name).
    #[must_use]
    pub fn with_connection_param(mut self, param: ConnectionParam) -> Self {
        self.connection_params.retain(|p| p.name != param.name);
        self.connection_params.push(param);
        self
    }

    /// Checks one connection's value for the parameter `name` before it is stored: it must
    /// be a declared parameter, match its pattern, and fit every place it goes (see
    /// [`Blueprint::for_connection`]).
    ///
    /// ```
    /// use blueprint::Registry;
    ///
    /// let registry = Registry::builtin()?;
    /// let zendesk = registry.get("zendesk").ok_or("no zendesk")?;
    /// assert!(zendesk.check_param("subdomain", "acme").is_ok());
    /// let refused = zendesk.check_param("subdomain", "evil.com/").unwrap_err();
    /// assert!(refused.message().contains("`subdomain`"), "{refused}");
    /// assert!(zendesk.check_param("region", "eu").is_err(), "not declared");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] naming the parameter (never quoting the value).
    pub fn check_param(&self, name: &str, value: &str) -> Result<(), BlueprintError> {
        let Some(param) = self.param(name) else {
            let known: Vec<&str> = self
                .connection_params
                .iter()
                .map(ConnectionParam::name)
                .collect();
            return Err(BlueprintError::new(
                "connection_params",
                if known.is_empty() {
                    format!(
                        "`{name}` is not a connection parameter: {} takes none",
                        self.id()
                    )
                } else {
                    format!(
                        "`{name}` is not a connection parameter of {} (its parameters: {})",
                        self.id(),
                        known.join(", ")
                    )
                },
            ));
        };
        if !param.accepts(value) {
            return Err(BlueprintError::new(
                "connection_params",
                format!(
                    "the value for `{name}` does not match its pattern `{}`",
                    param.pattern_str().unwrap_or_default()
                ),
            ));
        }
        let oauth = self
            .oauth
            .iter()
            .flat_map(|o| [&o.authorization_url, &o.token_url]);
        let regions = self.regions.iter().flat_map(|r| {
            std::iter::once(&r.base_url)
                .chain(r.authorization_url.as_ref())
                .chain(r.token_url.as_ref())
        });
        let mut parts: Vec<Part> = self
            .base_url_template
            .iter()
            .chain(oauth)
            .chain(regions)
            .flat_map(|url| template::url_params(url))
            .filter(|(n, _)| *n == name)
            .map(|(_, part)| part)
            .collect();
        if self
            .default_headers
            .values()
            .filter_map(|v| v.to_str().ok())
            .any(|text| template::text_names(text, name))
        {
            parts.push(Part::Text);
        }
        if let Some(part) = parts.into_iter().find(|part| !template::fits(value, *part)) {
            return Err(BlueprintError::new(
                "connection_params",
                format!("the value for `{name}` does not fit {}", part_name(part)),
            ));
        }
        Ok(())
    }

    /// The OAuth settings of one connection: the authorization and token URLs filled in
    /// with `values(NAME)` (only the parameters they name are needed).
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] naming a parameter that is missing or unfit, or when the
    /// blueprint has no OAuth settings.
    pub fn oauth_for_connection(
        &self,
        values: impl Fn(&str) -> Option<String>,
    ) -> Result<OAuthSettings, BlueprintError> {
        let Some(oauth) = &self.oauth else {
            return Err(BlueprintError::new(
                "oauth_token_url",
                format!("{} has no OAuth settings", self.id()),
            ));
        };
        let value = |name: &str, part: Part| self.param_value(name, part, &values);
        let mut oauth = oauth.clone();
        oauth.authorization_url = template::render_url(&oauth.authorization_url, &value)?;
        oauth.token_url = template::render_url(&oauth.token_url, &value)?;
        Ok(oauth)
    }

    /// The value of `name` for where it goes (`part`), checked.
    fn param_value(
        &self,
        name: &str,
        part: Part,
        values: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, BlueprintError> {
        let param = self.param(name).ok_or_else(|| {
            BlueprintError::new(
                "connection_params",
                format!("`{name}` is not a declared connection parameter"),
            )
        })?;
        let value = values(name).ok_or_else(|| {
            BlueprintError::new(
                "connection_params",
                format!("the connection has no value for `{name}`"),
            )
        })?;
        if !param.accepts(&value) || !template::fits(&value, part) {
            return Err(BlueprintError::new(
                "connection_params",
                format!(
                    "the connection's value for `{name}` does not fit {}",
                    part_name(part)
                ),
            ));
        }
        Ok(value)
    }

    /// The blueprint of one connection: every `${connection.NAME}` in the base URL, the
    /// regions, the OAuth URLs and the headers replaced with `values(NAME)`.
    ///
    /// A value must match its parameter's pattern, and where it goes: in a host, a DNS
    /// label (letters, digits, `-`, at most 63); in a path, a segment of letters, digits
    /// and `-._~` (not `.` or `..`); in a header, visible ASCII and spaces.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] naming the parameter when a value is missing or unfit (the value
    /// itself is never quoted).
    pub fn for_connection(
        &self,
        values: impl Fn(&str) -> Option<String>,
    ) -> Result<Blueprint, BlueprintError> {
        let value = |name: &str, part: Part| self.param_value(name, part, &values);
        let mut out = self.clone();
        if let Some(url) = &self.base_url_template {
            let url = template::render_url(url, &value)?;
            out = out.with_base_url(&url)?;
        }
        for region in &mut out.regions {
            region.base_url = template::render_url(&region.base_url, &value)?;
            for url in [&mut region.authorization_url, &mut region.token_url]
                .into_iter()
                .flatten()
            {
                *url = template::render_url(url, &value)?;
            }
        }
        if let Some(oauth) = &mut out.oauth {
            oauth.authorization_url = template::render_url(&oauth.authorization_url, &value)?;
            oauth.token_url = template::render_url(&oauth.token_url, &value)?;
        }
        for header in out.default_headers.values_mut() {
            let Ok(text) = header.to_str() else { continue };
            if template::has_placeholder(text) {
                let rendered = template::render_text(text, &value)?;
                let sensitive = header.is_sensitive();
                let mut new = HeaderValue::try_from(rendered).map_err(|_| {
                    BlueprintError::new(
                        "headers",
                        "a connection parameter made an invalid header value",
                    )
                })?;
                new.set_sensitive(sensitive);
                *header = new;
            }
        }
        Ok(out)
    }
}

/// Where a value goes, for messages.
fn part_name(part: Part) -> &'static str {
    match part {
        Part::Host => "a host name's label",
        Part::Path => "a path segment",
        Part::Text => "a header value",
    }
}

/// Whether a header name suggests a credential (its value is then marked sensitive).
fn looks_secret(name: &HeaderName) -> bool {
    let name = name.as_str();
    [
        "auth",
        "cookie",
        "token",
        "secret",
        "key",
        "password",
        "signature",
        "session",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// A blueprint setting that cannot work; names the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueprintError {
    key: &'static str,
    message: String,
}

impl BlueprintError {
    /// An error about the setting `key`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        BlueprintError {
            key,
            message: message.into(),
        }
    }

    fn base_url(key: &'static str, error: &InvalidBaseUrl) -> Self {
        BlueprintError::new(key, error.to_string())
    }

    pub(crate) fn template(key: &'static str, error: &TemplateError) -> Self {
        BlueprintError::new(key, error.to_string())
    }

    /// The setting at fault.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// What is wrong, without the key.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BlueprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for BlueprintError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: Method, path: &str, safe: bool) -> RetryRule {
        RetryRule {
            method,
            path: path.into(),
            retry_safe: safe,
        }
    }

    #[test]
    fn retry_rules_match_exact_prefix_and_placeholder_paths() {
        let exact = rule(Method::POST, "/companies", true);
        assert!(exact.matches(&Method::POST, "/companies"));
        assert!(exact.matches(&Method::POST, "/companies/"));
        assert!(!exact.matches(&Method::POST, "/companies/1"));
        assert!(!exact.matches(&Method::PUT, "/companies"));
        let prefix = rule(Method::POST, "/events*", true);
        assert!(prefix.matches(&Method::POST, "/events"));
        assert!(prefix.matches(&Method::POST, "/events/summaries"));
        assert!(!prefix.matches(&Method::POST, "/eve"));
        let placeholder = rule(Method::POST, "/contacts/{id}/tags", true);
        assert!(placeholder.matches(&Method::POST, "/contacts/42/tags"));
        assert!(!placeholder.matches(&Method::POST, "/contacts/42/notes"));
        assert!(!placeholder.matches(&Method::POST, "/contacts//tags"));
        let last = rule(Method::GET, "/contacts/{id}", true);
        assert!(last.matches(&Method::GET, "/contacts/42"));
        assert!(!last.matches(&Method::GET, "/contacts/42/tags"));
        assert!(!last.matches(&Method::GET, "/contacts"));
    }

    #[test]
    fn routes_name_calls_most_specific_first() {
        let bp = Blueprint::new("x", "v1", "https://api.x.test")
            .unwrap()
            .with_routes([
                Route::new("/contacts/{id}").unwrap(),
                Route::new("/contacts/{id}/tags/{tag}").unwrap(),
            ])
            .map_retry(|r| {
                r.rules = vec![
                    rule(Method::POST, "/contacts/search", true),
                    rule(Method::POST, "/events*", true),
                ];
            });
        let routes = crate::Routes::of(&bp);
        let route = |path: &str| routes.find(path).map(ToString::to_string);
        assert_eq!(route("/contacts/7").as_deref(), Some("/contacts/{id}"));
        assert_eq!(
            route("/contacts/search").as_deref(),
            Some("/contacts/search")
        );
        assert_eq!(
            route("/contacts/7/tags/9").as_deref(),
            Some("/contacts/{id}/tags/{tag}")
        );
        assert_eq!(route("/events"), None, "prefix rules name no route");
        assert_eq!(route("/contacts"), None);
        for bad in ["x", "/a/{", "/a/{b c}", "/a/../b", "/a?b", "/{}"] {
            assert!(Route::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limited_defaults_to_429_and_rules_check_headers() {
        let bp = Blueprint::new("x", "v0", "https://api.x.test").unwrap();
        let mut headers = HeaderMap::new();
        let rule = bp
            .rate_limit_rule(StatusCode::TOO_MANY_REQUESTS, &headers)
            .unwrap();
        assert_eq!(rule.wait_from, WaitFrom::RetryAfterOrReset);
        assert!(
            bp.rate_limit_rule(StatusCode::FORBIDDEN, &headers)
                .is_none()
        );
        assert_eq!(bp.max_server_wait(), Duration::from_secs(300));

        let github =
            bp.with_rate_limited([RateLimitRule::new(StatusCode::FORBIDDEN, WaitFrom::Reset)
                .when_header("x-ratelimit-remaining", "0")
                .unwrap()]);
        assert!(
            github
                .rate_limit_rule(StatusCode::FORBIDDEN, &headers)
                .is_none()
        );
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static(" 0 "));
        assert!(
            github
                .rate_limit_rule(StatusCode::FORBIDDEN, &headers)
                .is_some()
        );
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("10"));
        assert!(
            github
                .rate_limit_rule(StatusCode::FORBIDDEN, &headers)
                .is_none()
        );
    }

    #[test]
    fn credential_headers_are_marked_sensitive() {
        let bp = Blueprint::new("x", "v0", "https://api.x.test")
            .unwrap()
            .default_header("X-Api-Key", "k-123")
            .unwrap()
            .default_header("accept", "application/json")
            .unwrap();
        assert!(bp.default_headers()["x-api-key"].is_sensitive());
        assert!(!bp.default_headers()["accept"].is_sensitive());
        assert!(!format!("{:?}", bp.default_headers()).contains("k-123"));
    }

    #[test]
    fn connection_params_fill_hosts_paths_and_headers_safely() {
        let bp = Blueprint::new("z", "v2", "https://z.invalid")
            .unwrap()
            .with_connection_param(
                ConnectionParam::new("subdomain", ParamSource::ConnectQuery)
                    .unwrap()
                    .pattern("[a-z0-9-]+")
                    .unwrap(),
            )
            .with_connection_param(ConnectionParam::new("account", ParamSource::Import).unwrap())
            .with_base_url(
                "https://${connection.subdomain}.z.example.com/api/${connection.account}",
            )
            .unwrap()
            .default_header("x-account", "acct ${connection.account}")
            .unwrap();
        assert_eq!(
            bp.base_url().to_string(),
            "https://subdomain.z.example.com.invalid/api/account/",
            "the stand-in never resolves"
        );
        let ok = bp
            .for_connection(|n| Some(if n == "subdomain" { "acme" } else { "a-1" }.to_owned()))
            .unwrap();
        assert_eq!(
            ok.base_url().to_string(),
            "https://acme.z.example.com/api/a-1/"
        );
        assert_eq!(ok.default_headers()["x-account"], "acct a-1");
        assert!(!ok.needs_connection_params());
        for (sub, account) in [
            ("evil.com#", "a"),
            ("ACME", "a"),
            ("acme", ".."),
            ("acme", "a/b"),
            ("acme", "a?b"),
        ] {
            let r = bp
                .for_connection(|n| Some(if n == "subdomain" { sub } else { account }.to_owned()));
            assert!(r.is_err(), "{sub} {account}");
        }
        assert!(bp.for_connection(|_| None).is_err());

        // Undeclared, partial labels, the registrable domain, the port and the scheme.
        for bad in [
            "https://${connection.nope}.z.example.com",
            "https://x${connection.subdomain}.z.example.com",
            "https://${connection.subdomain}.com",
            "https://${connection.subdomain}",
            "https://api.z.example.com:${connection.subdomain}",
            "${connection.subdomain}://api.z.example.com",
            "https://api.z.example.com/a${connection.subdomain}",
            "https://${connection.subdomain}@api.z.example.com",
        ] {
            assert!(bp.clone().with_base_url(bad).is_err(), "{bad}");
        }
        assert!(
            bp.clone()
                .default_header("x-a", "${connection.nope}")
                .is_err()
        );
    }

    #[test]
    fn regions_switch_hosts_and_unknown_ones_are_named() {
        let bp = Blueprint::new("x", "v0", "https://api.x.test")
            .unwrap()
            .with_oauth(OAuthSettings::new(
                "https://app.x.test/oauth",
                "https://api.x.test/token",
            ))
            .with_region(Region {
                name: "eu".into(),
                base_url: "https://api.eu.x.test".into(),
                authorization_url: Some("https://app.eu.x.test/oauth".into()),
                token_url: None,
            });
        let eu = bp.clone().in_region("EU").unwrap();
        assert_eq!(eu.base_url().to_string(), "https://api.eu.x.test/");
        assert_eq!(
            eu.oauth().unwrap().authorization_url,
            "https://app.eu.x.test/oauth"
        );
        assert_eq!(eu.oauth().unwrap().token_url, "https://api.x.test/token");
        let err = bp.in_region("mars").unwrap_err();
        assert_eq!(err.key(), "region");
        assert!(err.to_string().contains("known: eu"), "{err}");
    }
}
