//! `integrations.yaml`: which APIs a program talks to, each extending a registered
//! [`Blueprint`] and overriding its settings.
//!
//! The YAML is parsed into a tree that remembers the line and column of every key and value
//! (`yaml`), then walked key by key (`load`): unknown keys, wrong types and values that
//! cannot work are reported at their position, and `${VAR}` is substituted in each text value
//! after parsing, so a substituted value keeps the position it was written at.

mod error;
mod load;
mod registry;
mod secret;
mod summary;
mod vars;
mod yaml;

use std::path::Path;

use http::HeaderName;

pub use error::{ConfigError, ConfigErrorKind};
pub use registry::Registry;
pub use secret::ClientSecret;

use crate::Blueprint;

/// The integrations of an `integrations.yaml`, in file order.
///
/// The format is the one Nango users know:
///
/// ```yaml
/// integrations:
///   intercom:                          # the integration's name
///     extends_blueprint: intercom:v0   # name[:version]; no version = the latest
///     oauth_client_id: abc123
///     oauth_client_secret: ${INTERCOM_CLIENT_SECRET}
///     oauth_scopes: [read_users]
///     region: eu                       # then any blueprint setting may be overridden
///     base_url: http://127.0.0.1:9000/
///     headers: { Intercom-Version: "2.11" }
/// ```
///
/// Keys of an integration (only `extends_blueprint` is required):
///
/// | key | value |
/// |---|---|
/// | `extends_blueprint` | `name` or `name:version` of a blueprint in the [`Registry`] |
/// | `oauth_client_id`, `oauth_client_secret` | the OAuth app's credentials; optional, since a connection can also be made by importing a token (a private-app token), which needs none |
/// | `oauth_scopes` | list of scopes, replacing the blueprint's |
/// | `region` | a region of the blueprint; applied first, so explicit URLs below win |
/// | `base_url` | absolute `http(s)` URL without query, fragment or user info |
/// | `headers` | mapping of default headers, merged over the blueprint's (yours win) |
/// | `oauth_authorization_url`, `oauth_token_url` | absolute `http(s)` URLs; giving both adds OAuth to a blueprint without it |
/// | `oauth_pkce` | `true` or `false` |
/// | `oauth_client_auth` | `body` (form fields) or `basic` (HTTP Basic) |
/// | `oauth_authorization_params` | mapping of extra authorization-URL parameters, merged over the blueprint's |
/// | `rate_limit_headers` | `{limit, remaining, reset, reset_format}`; format `epoch_seconds`, `epoch_millis` or `delta_seconds`; keys left out keep the blueprint's |
/// | `retry` | `{max_attempts, base_delay_ms, max_delay_ms, deadline_ms, attempt_timeout_ms, max_server_wait_ms, rules}`; `deadline_ms: null` removes the deadline, `attempt_timeout_ms: null` the attempt timeout; `rules` is a list of `{method, path, retry_safe}` checked before the blueprint's own |
/// | `tokens_expire` | `true` or `false` |
///
/// `${NAME}` in any text value (also in list items and mapping values, never in keys) is
/// replaced with the environment variable `NAME`; a variable that is not set is an error
/// naming it and the key. `$${` is a literal `${`; a `$` not followed by `{` is kept as it
/// is; substituted text is not expanded again.
///
/// Every mistake is a [`ConfigError`] naming the file, line, column and key, and what to do.
///
/// # Example
///
/// ```
/// use blueprint::{Blueprint, Integrations, Registry};
///
/// let registry = Registry::new().with(Blueprint::new("acme", "v1", "https://api.acme.test")?);
/// let yaml = "
/// integrations:
///   acme:
///     extends_blueprint: acme
///     headers: { X-Team: '${TEAM}' }
/// ";
/// let env = |name: &str| (name == "TEAM").then(|| "blue".to_owned());
/// let integrations = Integrations::parse(yaml, "integrations.yaml", &registry, env)?;
/// let acme = integrations.get("acme").ok_or("no acme")?;
/// assert_eq!(acme.blueprint().id(), "acme:v1");
/// assert_eq!(acme.blueprint().default_headers()["x-team"], "blue");
///
/// let typo = yaml.replace("headers", "hedaers");
/// let err = Integrations::parse(&typo, "integrations.yaml", &registry, env).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "integrations.yaml:5:5: `integrations.acme.hedaers`: unknown key `hedaers`; \
///      did you mean `headers`? the keys here are: extends_blueprint, oauth_client_id, \
///      oauth_client_secret, oauth_scopes, region, base_url, headers, oauth_authorization_url, \
///      oauth_token_url, oauth_pkce, oauth_client_auth, oauth_authorization_params, \
///      rate_limit_headers, retry, tokens_expire",
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Integrations {
    file: String,
    integrations: Vec<Integration>,
}

impl Integrations {
    /// Reads and loads the file at `path`, taking `${VAR}` values from the process
    /// environment (a variable that is not valid UTF-8 counts as not set).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the file cannot be read (naming the path) or holds a mistake.
    pub fn load(path: &Path, registry: &Registry) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(&file, e))?;
        Self::parse(&text, &file, registry, |name| {
            std::env::var_os(name).and_then(|v| v.into_string().ok())
        })
    }

    /// Loads `text`, naming it `file_name` in errors and taking `${VAR}` values from `env`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for the first mistake in the text.
    pub fn parse<E>(
        text: &str,
        file_name: &str,
        registry: &Registry,
        env: E,
    ) -> Result<Self, ConfigError>
    where
        E: Fn(&str) -> Option<String>,
    {
        let loader = load::Loader {
            file: file_name,
            env: &env,
            registry,
        };
        Ok(Integrations {
            file: file_name.to_owned(),
            integrations: loader.load(text)?,
        })
    }

    /// The file the integrations came from, as named to the loader.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The integration named `name`.
    pub fn get(&self, name: &str) -> Option<&Integration> {
        self.integrations.iter().find(|i| i.name == name)
    }

    /// The integrations, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Integration> {
        self.integrations.iter()
    }

    /// How many integrations the file holds.
    pub fn len(&self) -> usize {
        self.integrations.len()
    }

    /// Whether the file holds none.
    pub fn is_empty(&self) -> bool {
        self.integrations.is_empty()
    }
}

impl<'a> IntoIterator for &'a Integrations {
    type Item = &'a Integration;
    type IntoIter = std::slice::Iter<'a, Integration>;

    fn into_iter(self) -> Self::IntoIter {
        self.integrations.iter()
    }
}

impl IntoIterator for Integrations {
    type Item = Integration;
    type IntoIter = std::vec::IntoIter<Integration>;

    fn into_iter(self) -> Self::IntoIter {
        self.integrations.into_iter()
    }
}

/// One integration: its name, the blueprint it extends with the file's overrides applied,
/// and the OAuth app's credentials.
///
/// `Debug` and `Display` never show the client secret, nor header values that came from
/// the environment or whose names suggest a credential.
#[derive(Clone)]
pub struct Integration {
    name: String,
    extends: String,
    region: Option<String>,
    blueprint: Blueprint,
    oauth_client_id: Option<String>,
    oauth_client_secret: Option<ClientSecret>,
    /// Default headers whose values came from the environment.
    secret_headers: Vec<HeaderName>,
}

impl Integration {
    /// The integration's name (its key under `integrations:`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id (`name:version`) of the blueprint it extends.
    pub fn extends(&self) -> &str {
        &self.extends
    }

    /// The region chosen with `region:`, in lower case.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The blueprint with the file's overrides applied.
    pub fn blueprint(&self) -> &Blueprint {
        &self.blueprint
    }

    /// Takes the resolved blueprint.
    pub fn into_blueprint(self) -> Blueprint {
        self.blueprint
    }

    /// The OAuth client id, if the file gives one.
    pub fn oauth_client_id(&self) -> Option<&str> {
        self.oauth_client_id.as_deref()
    }

    /// The OAuth client secret, if the file gives one.
    pub fn oauth_client_secret(&self) -> Option<&ClientSecret> {
        self.oauth_client_secret.as_ref()
    }

    /// The OAuth scopes asked for (empty without OAuth).
    pub fn scopes(&self) -> &[String] {
        self.blueprint.oauth().map_or(&[], |o| o.scopes.as_slice())
    }

    /// Whether a default header's value is hidden in summaries: it came from the
    /// environment, or its name suggests a credential.
    pub(crate) fn hides_header(&self, name: &HeaderName) -> bool {
        const CREDENTIAL_WORDS: &[&str] = &[
            "auth",
            "token",
            "secret",
            "key",
            "cookie",
            "password",
            "session",
            "signature",
        ];
        self.secret_headers.contains(name)
            || CREDENTIAL_WORDS.iter().any(|w| name.as_str().contains(w))
    }
}
