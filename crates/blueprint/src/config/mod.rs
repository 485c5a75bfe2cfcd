//! `integrations.yaml`: which APIs a program talks to, each extending a [`Blueprint`] and
//! overriding its settings, and YAML blueprints: a `blueprints:` section, a folder of
//! files, and the built-in catalog.
//!
//! The YAML is parsed into a tree that remembers the line and column of every key and value
//! (`yaml`), then walked key by key (`load`): unknown keys, wrong types and values that
//! cannot work are reported at their position, and `${VAR}` is substituted in each text value
//! after parsing, so a substituted value keeps the position it was written at. Every size is
//! bounded (the file, each mapping and list, each value, the nesting, the headers), so a
//! hostile file costs little time and memory and gets an error, never a panic.

mod builtin;
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
pub use registry::{BlueprintSource, Registry};
pub use secret::ClientSecret;

use crate::Blueprint;

/// Reads a file of at most [`load::MAX_FILE_BYTES`] (a larger one is refused without
/// being read whole).
pub(crate) fn read_bounded(path: &Path, file: &str) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let handle = std::fs::File::open(path).map_err(|e| ConfigError::io(file, e))?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(load::MAX_FILE_BYTES).unwrap_or(u64::MAX) + 1;
    handle
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::io(file, e))?;
    // A file over the limit is reported by the loader, at the position the limit is passed.
    String::from_utf8(bytes).map_err(|e| {
        ConfigError::io(
            file,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        )
    })
}

/// The integrations of an `integrations.yaml`, in file order, and the blueprints they were
/// resolved against.
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
///
/// blueprints:                          # optional: APIs of your own, as data
///   acme:
///     version: v1
///     base_url: https://api.acme.test/v1
///     oauth_authorization_url: https://acme.test/oauth/authorize
///     oauth_token_url: https://acme.test/oauth/token
///     rate_limited: [{ status: 429, wait_from: retry_after }]
///     routes: ["/users/{id}"]
/// ```
///
/// A blueprint is declared under `blueprints:` by name (or in a file of its own with a
/// `name:` key, see [`Registry::load_files`]); it may extend another (declared in the same
/// file, in any order, or registered), inheriting every setting it does not set. An
/// integration extends a blueprint and overrides its settings.
///
/// Keys of an integration (only `extends_blueprint` is required) and of a blueprint:
///
/// | key | in | value |
/// |---|---|---|
/// | `extends_blueprint` | both | `name` or `name:version` of a blueprint; required for an integration; for a blueprint, its parent (a cycle is an error) |
/// | `version` | blueprint | the blueprint's version (default `v0`); the blueprint's id is `name:version` |
/// | `oauth_client_id`, `oauth_client_secret` | integration | the OAuth app's credentials; optional, since a connection can also be made by importing a token (a private-app token), which needs none |
/// | `region` | integration | a region of the blueprint; applied first, so explicit URLs win |
/// | `regions` | blueprint | mapping of region name → `{base_url, oauth_authorization_url, oauth_token_url}` (only `base_url` required), merged over the parent's |
/// | `base_url` | both | absolute `http(s)` URL without query, fragment, user info or dot segments, with a port from 1 to 65535; required for a blueprint that extends none |
/// | `headers` | both | mapping of default headers (at most 64), merged over the extended blueprint's (yours win) |
/// | `oauth_authorization_url`, `oauth_token_url` | both | absolute URLs, `https` (plain `http` only to loopback); giving both adds OAuth to a blueprint without it |
/// | `oauth_pkce` | both | `true` or `false` |
/// | `oauth_client_auth` | both | `body` (form fields) or `basic` (HTTP Basic) |
/// | `oauth_scopes` | both | list of scopes, replacing the extended blueprint's |
/// | `oauth_scope_separator` | both | what joins the scopes: `" "` (the default) or punctuation such as `","` |
/// | `oauth_authorization_params` | both | mapping of extra authorization-URL parameters, merged over the extended blueprint's |
/// | `tokens_expire` | both | `true` or `false` |
/// | `rate_limit_headers` | both | `{limit, remaining, reset, reset_format}`; format `epoch_seconds`, `epoch_millis`, `delta_seconds` or `auto`; keys left out keep the extended blueprint's |
/// | `rate_limited` | both | which answers mean "rate limited": a list of `{status, when, wait_from}`, `when` a mapping of header → value the answer must carry, `wait_from` `retry_after`, `reset` or `retry_after_or_reset` (the default); replaces the extended blueprint's (default: `[{status: 429}]`) |
/// | `max_server_wait_ms` | both | the longest server-announced wait believed (default 300000, five minutes): a longer `Retry-After` or reset is cut to it |
/// | `retry` | both | `{max_attempts, base_delay_ms, max_delay_ms, deadline_ms, attempt_timeout_ms, max_server_wait_ms, rules}`; `deadline_ms: null` removes the deadline, `attempt_timeout_ms: null` the attempt timeout; `rules` is a list of `{method, path, retry_safe}` checked before the extended blueprint's own |
/// | `routes` | both | list of route templates (`/contacts/{id}`) that name calls in logs; added to the extended blueprint's |
/// | `connection_params` | both | mapping of name → `{from, field, pattern}`: `from` is `import`, `connect_query` or `token_field`, `field` the field read (default the name), `pattern` a regular expression the whole value must match; added to the extended blueprint's |
///
/// `${NAME}` in any text value (also in list items and mapping values, never in keys) is
/// replaced with the environment variable `NAME`; a variable that is not set is an error
/// naming it and the key. `$${` is a literal `${`; a `$` not followed by `{` is kept as it
/// is; substituted text is not expanded again. `${connection.NAME}` names a declared
/// connection parameter, filled in per connection; it may stand in `base_url`, region and
/// OAuth URLs (only as a whole DNS label followed by two literal ones, or a whole path
/// segment) and in header values.
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
///      oauth_client_secret, region, base_url, headers, oauth_authorization_url, \
///      oauth_token_url, oauth_pkce, oauth_client_auth, oauth_scopes, oauth_scope_separator, \
///      oauth_authorization_params, rate_limit_headers, rate_limited, max_server_wait_ms, \
///      retry, tokens_expire, routes, connection_params",
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Integrations {
    file: String,
    integrations: Vec<Integration>,
    registry: Registry,
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
        let text = read_bounded(path, &file)?;
        Self::parse(&text, &file, registry, |name| {
            std::env::var_os(name).and_then(|v| v.into_string().ok())
        })
    }

    /// Loads `text`, naming it `file_name` in errors and taking `${VAR}` values from `env`.
    /// Its `blueprints:` are added to (a copy of) `registry`.
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
        let loaded = loader.load(text)?;
        Ok(Integrations {
            file: file_name.to_owned(),
            integrations: loaded.integrations,
            registry: loaded.registry,
        })
    }

    /// The file the integrations came from, as named to the loader.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The blueprints the integrations were resolved against: those given to the loader and
    /// the file's own `blueprints:`.
    pub fn registry(&self) -> &Registry {
        &self.registry
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
