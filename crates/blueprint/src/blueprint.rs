//! An API described as data.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::base_url::{BaseUrl, InvalidBaseUrl};

/// How a client proves its identity to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields in the request body.
    #[default]
    RequestBody,
    /// HTTP Basic authentication with the client id and secret.
    BasicAuth,
}

/// How a rate-limit reset header tells time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResetFormat {
    /// Seconds since the Unix epoch (Intercom, GitHub).
    #[default]
    EpochSeconds,
    /// Milliseconds since the Unix epoch.
    EpochMillis,
    /// Seconds from now (the IETF `RateLimit-Reset`).
    DeltaSeconds,
}

/// The OAuth2 endpoints and habits of a provider.
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
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
    /// Extra query parameters for the authorization URL.
    pub extra_authorization_params: Vec<(String, String)>,
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
        if *method != self.method {
            return false;
        }
        let (pattern, prefix) = match self.path.strip_suffix('*') {
            Some(p) => (p, true),
            None => (self.path.as_str(), false),
        };
        let mut want = pattern.trim_end_matches('/').split('/');
        let mut have = path.trim_end_matches('/').split('/');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (None, Some(_)) => return prefix,
                (Some(w), Some(h)) if w == h || (w.starts_with('{') && w.ends_with('}')) => {}
                (Some(w), Some(h)) if prefix && want.clone().next().is_none() => {
                    return h.starts_with(w);
                }
                _ => return false,
            }
        }
    }
}

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
    /// The longest server-directed wait to sit through.
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
/// into a stack of layers; `integrations.yaml` extends one by name and overrides its
/// settings.
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
#[derive(Debug, Clone)]
pub struct Blueprint {
    name: String,
    version: String,
    base_url: BaseUrl,
    regions: Vec<Region>,
    default_headers: HeaderMap,
    oauth: Option<OAuthSettings>,
    rate_limit: RateLimitHeaders,
    retry: RetrySettings,
    tokens_expire: bool,
}

impl Blueprint {
    /// A blueprint for the API at `base_url`, with default settings: no OAuth, the
    /// `X-RateLimit-*` headers with an epoch-seconds reset, the default retry settings,
    /// tokens that may expire.
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
            regions: Vec::new(),
            default_headers: HeaderMap::new(),
            oauth: None,
            rate_limit: RateLimitHeaders::default(),
            retry: RetrySettings::default(),
            tokens_expire: true,
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

    /// The base URL requests with a relative path are sent to.
    pub fn base_url(&self) -> &BaseUrl {
        &self.base_url
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

    /// Sets the base URL.
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when it is not a plain `http(s)` URL.
    pub fn with_base_url(mut self, base_url: &str) -> Result<Self, BlueprintError> {
        self.base_url =
            BaseUrl::parse(base_url).map_err(|e| BlueprintError::base_url("base_url", &e))?;
        Ok(self)
    }

    /// Adds a region variant.
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
        self.base_url =
            BaseUrl::parse(&region.base_url).map_err(|e| BlueprintError::base_url("region", &e))?;
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

    /// Adds a default header (replacing one of the same name).
    ///
    /// # Errors
    ///
    /// [`BlueprintError`] when the name or value is not a valid header.
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
        // Credentials put in default headers (an API key) stay out of logs and Debug output.
        if looks_secret(&header) {
            value.set_sensitive(true);
        }
        self.default_headers.insert(header, value);
        Ok(self)
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

    /// Whether a request is safe to retry by the blueprint's rules: `Some(true)` safe,
    /// `Some(false)` never, `None` when no rule covers it (the default policy decides).
    pub fn retry_rule(&self, method: &Method, path: &str) -> Option<bool> {
        let path = path
            .strip_prefix(self.base_url.prefix())
            .filter(|p| p.is_empty() || p.starts_with('/'))
            .unwrap_or(path);
        self.retry
            .rules
            .iter()
            .find(|rule| rule.matches(method, path))
            .map(|rule| rule.retry_safe)
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

    /// The setting at fault.
    pub fn key(&self) -> &'static str {
        self.key
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
    fn regions_switch_hosts_and_unknown_ones_are_named() {
        let bp = Blueprint::new("x", "v0", "https://api.x.test")
            .unwrap()
            .with_oauth(OAuthSettings {
                authorization_url: "https://app.x.test/oauth".into(),
                token_url: "https://api.x.test/token".into(),
                pkce: false,
                scopes: vec![],
                client_auth: ClientAuth::RequestBody,
                extra_authorization_params: vec![],
            })
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
