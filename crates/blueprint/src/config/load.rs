//! Walks the parsed YAML, checks every key and value, and applies the overrides.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};

use super::Integration;
use super::error::{ConfigError, ConfigErrorKind as Kind};
use super::registry::Registry;
use super::secret::ClientSecret;
use super::vars::{self, VarError};
use super::yaml::{self, Key, Node, Pos, Value};
use crate::base_url::{BaseUrl, InvalidBaseUrl};
use crate::{Blueprint, ClientAuth, OAuthSettings, ResetFormat, RetryRule};

const TOP_KEYS: &[&str] = &["integrations"];
pub(crate) const INTEGRATION_KEYS: &[&str] = &[
    "extends_blueprint",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scopes",
    "region",
    "base_url",
    "headers",
    "oauth_authorization_url",
    "oauth_token_url",
    "oauth_pkce",
    "oauth_client_auth",
    "oauth_authorization_params",
    "rate_limit_headers",
    "retry",
    "tokens_expire",
];
const RATE_LIMIT_KEYS: &[&str] = &["limit", "remaining", "reset", "reset_format"];
const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "base_delay_ms",
    "max_delay_ms",
    "deadline_ms",
    "attempt_timeout_ms",
    "max_server_wait_ms",
    "rules",
];
const RULE_KEYS: &[&str] = &["method", "path", "retry_safe"];
/// Authorization-URL parameters the OAuth flow sets itself.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "scope",
    "code_challenge",
    "code_challenge_method",
];
/// Longest value quoted in an error message.
const SHOWN_MAX: usize = 80;

type Entries = [(Key, Node)];

/// One load: the file's name for errors, where variables come from, the known blueprints.
pub(crate) struct Loader<'a> {
    pub(crate) file: &'a str,
    pub(crate) env: &'a dyn Fn(&str) -> Option<String>,
    pub(crate) registry: &'a Registry,
}

/// A text value after `${VAR}` substitution, and where it was written.
struct Text {
    text: String,
    from_env: bool,
    pos: Pos,
}

impl Text {
    /// The value quoted for an error message, unless it came from the environment (it could
    /// be a secret, and the file does not show it).
    fn shown(&self) -> String {
        if self.from_env {
            return "the value (from the environment)".to_owned();
        }
        let mut text: String = self.text.chars().take(SHOWN_MAX).collect();
        if text.len() < self.text.len() {
            text.push('…');
        }
        format!("`{text}`")
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn find<'n>(entries: &'n Entries, key: &str) -> Option<&'n Node> {
    entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v)
}

impl Loader<'_> {
    fn error(&self, kind: Kind, pos: Pos, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(kind, self.file, pos, key, message)
    }

    fn invalid(&self, pos: Pos, key: &str, message: impl Into<String>) -> ConfigError {
        self.error(Kind::InvalidValue, pos, key, message)
    }

    /// Parses the text and builds every integration, in file order.
    pub(crate) fn load(&self, text: &str) -> Result<Vec<Integration>, ConfigError> {
        let root = yaml::parse(text).map_err(|e| {
            self.error(
                Kind::Syntax,
                e.pos,
                "",
                format!("invalid YAML: {}", e.message),
            )
            .hint("fix the YAML at this position")
        })?;
        let Some(root) = root else {
            return Err(self
                .error(
                    Kind::MissingKey,
                    Pos { line: 1, column: 1 },
                    "integrations",
                    "the file is empty",
                )
                .hint("start it with `integrations:` and one entry per integration"));
        };
        let top = self.fields(&root, "", TOP_KEYS)?;
        let Some(list) = find(top, "integrations") else {
            return Err(self
                .error(
                    Kind::MissingKey,
                    root.pos,
                    "integrations",
                    "the key is missing",
                )
                .hint("start the file with `integrations:` and one entry per integration"));
        };
        let entries = self.entries(list, "integrations")?;
        entries
            .iter()
            .map(|(name, node)| self.integration(name, node))
            .collect()
    }

    /// A mapping's entries, each key known and given once; `null` counts as empty.
    fn fields<'n>(
        &self,
        node: &'n Node,
        path: &str,
        known: &[&str],
    ) -> Result<&'n Entries, ConfigError> {
        let entries = self.entries(node, path)?;
        for (key, _) in entries {
            if !known.contains(&key.text.as_str()) {
                let mut hint = String::new();
                if let Some(close) = closest(&key.text, known) {
                    hint.push_str(&format!("did you mean `{close}`? "));
                }
                hint.push_str(&format!("the keys here are: {}", known.join(", ")));
                return Err(self
                    .error(
                        Kind::UnknownKey,
                        key.pos,
                        &join(path, &key.text),
                        format!("unknown key `{}`", key.text),
                    )
                    .hint(hint));
            }
        }
        Ok(entries)
    }

    /// A mapping's entries, each key given once; `null` counts as empty.
    fn entries<'n>(&self, node: &'n Node, path: &str) -> Result<&'n Entries, ConfigError> {
        let entries: &Entries = match &node.value {
            Value::Map(entries) => entries,
            _ if node.is_null() => &[],
            _ => {
                return Err(self
                    .invalid(
                        node.pos,
                        path,
                        format!(
                            "expected a mapping (`key: value` lines), found {}",
                            node.kind()
                        ),
                    )
                    .hint("write one `key: value` per line under it"));
            }
        };
        for (i, (key, _)) in entries.iter().enumerate() {
            if let Some((first, _)) = entries[..i].iter().find(|(k, _)| k.text == key.text) {
                return Err(self
                    .error(
                        Kind::DuplicateKey,
                        key.pos,
                        &join(path, &key.text),
                        format!(
                            "`{}` is given twice (first at line {}, column {})",
                            key.text, first.pos.line, first.pos.column
                        ),
                    )
                    .hint("keep one of them"));
            }
        }
        Ok(entries)
    }

    fn text(&self, node: &Node, key: &str) -> Result<Text, ConfigError> {
        match &node.value {
            Value::Scalar { text, .. } if !node.is_null() => {
                let expanded =
                    vars::expand(text, self.env).map_err(|e| self.var_error(e, node.pos, key))?;
                Ok(Text {
                    text: expanded.text,
                    from_env: expanded.from_env,
                    pos: node.pos,
                })
            }
            _ if node.is_null() => Err(self
                .invalid(node.pos, key, "the key has no value")
                .hint("give it a value, or remove the key")),
            _ => Err(self
                .invalid(
                    node.pos,
                    key,
                    format!("expected a single value, found {}", node.kind()),
                )
                .hint("write one value after the colon")),
        }
    }

    fn non_empty(&self, node: &Node, key: &str) -> Result<Text, ConfigError> {
        let text = self.text(node, key)?;
        if text.text.trim().is_empty() {
            let from = if text.from_env {
                " (its environment variable is empty)"
            } else {
                ""
            };
            return Err(self
                .invalid(text.pos, key, format!("the value is empty{from}"))
                .hint("give it a value, or remove the key"));
        }
        Ok(text)
    }

    fn var_error(&self, error: VarError, pos: Pos, key: &str) -> ConfigError {
        const ESCAPE: &str = "write `$${` for a literal `${`";
        match error {
            VarError::Unset(name) => self
                .error(
                    Kind::UnsetVariable,
                    pos,
                    key,
                    format!("the environment variable `{name}` is not set"),
                )
                .hint(format!("set `{name}`, or {ESCAPE}"))
                .with_variable(&name),
            VarError::Unclosed => self
                .error(Kind::BadVariable, pos, key, "a `${` has no closing `}`")
                .hint(format!("close it as `${{NAME}}`, or {ESCAPE}")),
            VarError::BadName => self
                .error(
                    Kind::BadVariable,
                    pos,
                    key,
                    "a `${...}` does not hold a variable name (letters, digits and `_`, not starting with a digit)",
                )
                .hint(format!("name a variable as `${{NAME}}`, or {ESCAPE}")),
        }
    }

    fn boolean(&self, node: &Node, key: &str) -> Result<bool, ConfigError> {
        let text = self.text(node, key)?;
        match text.text.as_str() {
            "true" | "True" | "TRUE" => Ok(true),
            "false" | "False" | "FALSE" => Ok(false),
            _ => Err(self
                .invalid(
                    text.pos,
                    key,
                    format!("{} is not `true` or `false`", text.shown()),
                )
                .hint("write `true` or `false`")),
        }
    }

    fn number(&self, node: &Node, key: &str) -> Result<(u64, Pos), ConfigError> {
        let text = self.text(node, key)?;
        let digits = text.text.replace('_', "");
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = digits.parse() {
                return Ok((n, text.pos));
            }
        }
        Err(self
            .invalid(
                text.pos,
                key,
                format!("{} is not a whole number, 0 or more", text.shown()),
            )
            .hint("write a number such as `3` or `1000`"))
    }

    fn millis(&self, node: &Node, key: &str) -> Result<(Duration, Pos), ConfigError> {
        self.number(node, key)
            .map(|(n, pos)| (Duration::from_millis(n), pos))
    }

    fn list<'n>(&self, node: &'n Node, key: &str) -> Result<&'n [Node], ConfigError> {
        match &node.value {
            Value::Seq(items) => Ok(items),
            _ => Err(self
                .invalid(
                    node.pos,
                    key,
                    format!("expected a list, found {}", node.kind()),
                )
                .hint("write a list, such as `[a, b]` or one `- item` per line")),
        }
    }

    fn url(&self, node: &Node, key: &str) -> Result<Text, ConfigError> {
        let text = self.non_empty(node, key)?;
        let ok = text.text.parse::<Uri>().ok().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri
                    .authority()
                    .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        }) && !text.text.contains('#');
        if !ok {
            return Err(self
                .invalid(
                    text.pos,
                    key,
                    format!("{} is not an absolute http(s) URL", text.shown()),
                )
                .hint(
                    "give a URL such as https://example.com/oauth, without user info or fragment",
                ));
        }
        Ok(text)
    }

    fn header_name(&self, text: &str, pos: Pos, key: &str) -> Result<HeaderName, ConfigError> {
        HeaderName::try_from(text).map_err(|_| {
            self.invalid(pos, key, format!("`{text}` is not a valid header name"))
                .hint("use letters, digits and `-`, such as `X-RateLimit-Limit`")
        })
    }

    fn integration(&self, name: &Key, node: &Node) -> Result<Integration, ConfigError> {
        let path = format!("integrations.{}", name.text);
        if name.text.is_empty()
            || !name
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self
                .invalid(
                    name.pos,
                    &path,
                    format!("`{}` is not a usable integration name", name.text),
                )
                .hint("use letters, digits, `-` and `_`, such as `intercom` or `intercom-eu`"));
        }
        let map = self.fields(node, &path, INTEGRATION_KEYS)?;
        let key = |k: &str| join(&path, k);

        let Some(extends) = find(map, "extends_blueprint") else {
            let known = self.registry.known_ids("");
            return Err(self
                .error(
                    Kind::MissingKey,
                    name.pos,
                    &path,
                    "`extends_blueprint` is missing",
                )
                .hint(format!(
                    "add `extends_blueprint: NAME[:VERSION]` naming the blueprint to extend{}",
                    known_list(&known)
                )));
        };
        let extends = self.non_empty(extends, &key("extends_blueprint"))?;
        let Some(base) = self.registry.get(&extends.text) else {
            let name = extends.text.split(':').next().unwrap_or_default();
            let known = self.registry.known_ids(name);
            return Err(self
                .error(
                    Kind::UnknownBlueprint,
                    extends.pos,
                    &key("extends_blueprint"),
                    format!("no blueprint {} is registered", extends.shown()),
                )
                .hint(if known.is_empty() {
                    "no blueprint is registered at all: the program must register its blueprints before loading the file".to_owned()
                } else {
                    format!("use one of: {}", known.join(", "))
                }));
        };
        let mut bp = base.clone();
        let extends_id = bp.id();

        // The region first, so that explicit URLs below win over the region's.
        let mut region = None;
        if let Some(node) = find(map, "region") {
            let k = key("region");
            let text = self.non_empty(node, &k)?;
            let known: Vec<&str> = bp.regions().iter().map(|r| r.name.as_str()).collect();
            if !known.iter().any(|r| r.eq_ignore_ascii_case(&text.text)) {
                return Err(self
                    .invalid(
                        text.pos,
                        &k,
                        format!("{} is not a region of {extends_id}", text.shown()),
                    )
                    .hint(if known.is_empty() {
                        "this blueprint has no regions: remove the key".to_owned()
                    } else {
                        format!("use one of: {}", known.join(", "))
                    }));
            }
            bp = bp
                .in_region(&text.text)
                .map_err(|e| self.invalid(text.pos, &k, e.to_string()))?;
            region = Some(text.text.to_ascii_lowercase());
        }

        if let Some(node) = find(map, "base_url") {
            let k = key("base_url");
            let text = self.non_empty(node, &k)?;
            if let Err(e) = BaseUrl::parse(&text.text) {
                let why = match e {
                    InvalidBaseUrl::Origin(_) => "it must be an absolute http(s) URL with a host",
                    InvalidBaseUrl::NotPlain => "it must not have a query, fragment or user info",
                    InvalidBaseUrl::Port => "its port must be a number from 1 to 65535",
                    InvalidBaseUrl::Path(reason) => reason,
                };
                return Err(self
                    .invalid(
                        text.pos,
                        &k,
                        format!("{} is not a usable base URL: {why}", text.shown()),
                    )
                    .hint("give a URL such as https://api.example.com/"));
            }
            bp = bp
                .with_base_url(&text.text)
                .map_err(|e| self.invalid(text.pos, &k, e.to_string()))?;
        }

        // Header values that came from the environment: summaries hide them.
        let mut secret_headers = Vec::new();
        if let Some(node) = find(map, "headers") {
            let k = key("headers");
            for (name, value) in self.entries(node, &k)? {
                let hk = join(&k, &name.text);
                let header = self.header_name(&name.text, name.pos, &hk)?;
                let value = self.text(value, &hk)?;
                if HeaderValue::try_from(value.text.as_str()).is_err() {
                    return Err(self
                        .invalid(value.pos, &hk, "the value is not a valid header value")
                        .hint("remove line breaks and control characters from it"));
                }
                bp = bp
                    .default_header(header.as_str(), &value.text)
                    .map_err(|e| self.invalid(value.pos, &hk, e.to_string()))?;
                if value.from_env {
                    secret_headers.push(header);
                }
            }
        }

        let oauth = self.oauth(map, &path, bp)?;
        bp = oauth.blueprint;

        if let Some(node) = find(map, "rate_limit_headers") {
            let k = key("rate_limit_headers");
            let fields = self.fields(node, &k, RATE_LIMIT_KEYS)?;
            let mut rate = bp.rate_limit().clone();
            for (name, value) in fields {
                let fk = join(&k, &name.text);
                let text = self.non_empty(value, &fk)?;
                match name.text.as_str() {
                    "limit" => rate.limit = self.header_name(&text.text, text.pos, &fk)?,
                    "remaining" => rate.remaining = self.header_name(&text.text, text.pos, &fk)?,
                    "reset" => rate.reset = self.header_name(&text.text, text.pos, &fk)?,
                    _ => {
                        rate.reset_format = match text.text.as_str() {
                            "epoch_seconds" => ResetFormat::EpochSeconds,
                            "epoch_millis" => ResetFormat::EpochMillis,
                            "delta_seconds" => ResetFormat::DeltaSeconds,
                            _ => {
                                return Err(self
                                    .invalid(
                                        text.pos,
                                        &fk,
                                        format!("{} is not a reset format", text.shown()),
                                    )
                                    .hint(
                                        "use `epoch_seconds`, `epoch_millis` or `delta_seconds`",
                                    ));
                            }
                        };
                    }
                }
            }
            bp = bp.with_rate_limit(rate);
        }

        if let Some(node) = find(map, "retry") {
            bp = self.retry(node, &key("retry"), bp)?;
        }

        if let Some(node) = find(map, "tokens_expire") {
            bp = bp.with_tokens_expire(self.boolean(node, &key("tokens_expire"))?);
        }

        Ok(Integration {
            name: name.text.clone(),
            extends: extends_id,
            region,
            blueprint: bp,
            oauth_client_id: oauth.client_id,
            oauth_client_secret: oauth.client_secret,
            secret_headers,
        })
    }
}

/// The OAuth part of an integration: the blueprint with its OAuth overrides, and the
/// client credentials.
struct OAuthPart {
    blueprint: Blueprint,
    client_id: Option<String>,
    client_secret: Option<ClientSecret>,
}

impl Loader<'_> {
    fn oauth(
        &self,
        map: &Entries,
        path: &str,
        mut bp: Blueprint,
    ) -> Result<OAuthPart, ConfigError> {
        let key = |k: &str| join(path, k);
        let get = |k: &str| find(map, k).map(|node| (node, key(k)));
        let authorization_url = get("oauth_authorization_url")
            .map(|(n, k)| self.url(n, &k))
            .transpose()?;
        let token_url = get("oauth_token_url")
            .map(|(n, k)| self.url(n, &k))
            .transpose()?;
        let scopes = get("oauth_scopes")
            .map(|(n, k)| self.scopes(n, &k))
            .transpose()?;
        let pkce = get("oauth_pkce")
            .map(|(n, k)| self.boolean(n, &k))
            .transpose()?;
        let client_auth = get("oauth_client_auth")
            .map(|(n, k)| self.client_auth(n, &k))
            .transpose()?;
        let params = get("oauth_authorization_params")
            .map(|(n, k)| self.params(n, &k))
            .transpose()?;
        let client_id = get("oauth_client_id")
            .map(|(n, k)| self.non_empty(n, &k))
            .transpose()?
            .map(|t| t.text);
        let client_secret = get("oauth_client_secret")
            .map(|(n, k)| self.non_empty(n, &k))
            .transpose()?
            .map(|t| ClientSecret::new(t.text));

        if bp.oauth().is_none() {
            if let (Some(a), Some(t)) = (&authorization_url, &token_url) {
                bp = bp.with_oauth(OAuthSettings {
                    authorization_url: a.text.clone(),
                    token_url: t.text.clone(),
                    pkce: false,
                    scopes: Vec::new(),
                    client_auth: ClientAuth::default(),
                    extra_authorization_params: Vec::new(),
                });
            } else if let Some((k, _)) = map.iter().find(|(k, _)| k.text.starts_with("oauth_")) {
                return Err(self
                    .invalid(k.pos, &key(&k.text), format!("the blueprint {} has no OAuth settings", bp.id()))
                    .hint("remove the key, or set both `oauth_authorization_url` and `oauth_token_url` to give it OAuth"));
            }
        }
        let bp = bp.map_oauth(|oauth| {
            if let Some(url) = authorization_url {
                oauth.authorization_url = url.text;
            }
            if let Some(url) = token_url {
                oauth.token_url = url.text;
            }
            if let Some(scopes) = scopes {
                oauth.scopes = scopes;
            }
            if let Some(pkce) = pkce {
                oauth.pkce = pkce;
            }
            if let Some(client_auth) = client_auth {
                oauth.client_auth = client_auth;
            }
            for (name, value) in params.unwrap_or_default() {
                let params = &mut oauth.extra_authorization_params;
                match params.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => params.push((name, value)),
                }
            }
        });
        Ok(OAuthPart {
            blueprint: bp,
            client_id,
            client_secret,
        })
    }

    fn scopes(&self, node: &Node, key: &str) -> Result<Vec<String>, ConfigError> {
        let mut scopes = Vec::new();
        for (i, item) in self.list(node, key)?.iter().enumerate() {
            let k = format!("{key}[{i}]");
            let text = self.non_empty(item, &k)?;
            if !text
                .text
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                return Err(self
                    .invalid(
                        text.pos,
                        &k,
                        format!("{} is not an OAuth scope", text.shown()),
                    )
                    .hint("write one scope per list item, without spaces, quotes or backslashes"));
            }
            scopes.push(text.text);
        }
        Ok(scopes)
    }

    fn client_auth(&self, node: &Node, key: &str) -> Result<ClientAuth, ConfigError> {
        let text = self.text(node, key)?;
        match text.text.as_str() {
            "body" => Ok(ClientAuth::RequestBody),
            "basic" => Ok(ClientAuth::BasicAuth),
            _ => Err(self
                .invalid(
                    text.pos,
                    key,
                    format!("{} is not a client authentication method", text.shown()),
                )
                .hint("use `body` (client id and secret as form fields) or `basic` (HTTP Basic)")),
        }
    }

    fn params(&self, node: &Node, key: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let mut params = Vec::new();
        for (name, value) in self.entries(node, key)? {
            let k = join(key, &name.text);
            if RESERVED_PARAMS.contains(&name.text.as_str()) {
                return Err(self
                    .invalid(
                        name.pos,
                        &k,
                        format!("`{}` is set by the OAuth flow itself", name.text),
                    )
                    .hint("remove it (scopes go in `oauth_scopes`)"));
            }
            params.push((name.text.clone(), self.text(value, &k)?.text));
        }
        Ok(params)
    }

    fn retry(&self, node: &Node, path: &str, bp: Blueprint) -> Result<Blueprint, ConfigError> {
        let fields = self.fields(node, path, RETRY_KEYS)?;
        let key = |k: &str| join(path, k);
        let get = |k: &str| find(fields, k).map(|node| (node, key(k)));
        let mut retry = bp.retry().clone();

        if let Some((n, k)) = get("max_attempts") {
            let (value, pos) = self.number(n, &k)?;
            if value == 0 {
                return Err(self
                    .invalid(pos, &k, "0 attempts would never send a request")
                    .hint("use 1 for no retries, or more"));
            }
            retry.max_attempts = u32::try_from(value).map_err(|_| {
                self.invalid(pos, &k, "the number is too large")
                    .hint("use a small number such as 3")
            })?;
        }
        let base = get("base_delay_ms")
            .map(|(n, k)| self.millis(n, &k).map(|v| (v, k)))
            .transpose()?;
        let max = get("max_delay_ms")
            .map(|(n, k)| self.millis(n, &k).map(|v| (v, k)))
            .transpose()?;
        if let Some(((delay, _), _)) = &base {
            retry.base_delay = *delay;
        }
        if let Some(((delay, _), _)) = &max {
            retry.max_delay = *delay;
        }
        if retry.base_delay > retry.max_delay {
            if let Some(((_, pos), k)) = base.as_ref().or(max.as_ref()) {
                return Err(self
                    .invalid(
                        *pos,
                        k,
                        format!(
                            "base_delay_ms ({}) is above max_delay_ms ({})",
                            retry.base_delay.as_millis(),
                            retry.max_delay.as_millis()
                        ),
                    )
                    .hint("make base_delay_ms at most max_delay_ms"));
            }
        }
        if let Some((n, k)) = get("deadline_ms") {
            retry.deadline = if n.is_null() {
                None
            } else {
                let (deadline, pos) = self.millis(n, &k)?;
                if deadline.is_zero() {
                    return Err(self
                        .invalid(pos, &k, "a deadline of 0 lets no call finish")
                        .hint("give a number of milliseconds, or `null` for no deadline"));
                }
                Some(deadline)
            };
        }
        if let Some((n, k)) = get("attempt_timeout_ms") {
            retry.attempt_timeout = if n.is_null() {
                None
            } else {
                let (timeout, pos) = self.millis(n, &k)?;
                if timeout.is_zero() {
                    return Err(self
                        .invalid(pos, &k, "an attempt timeout of 0 lets no attempt finish")
                        .hint("give a number of milliseconds, such as 30000, or `null` for none"));
                }
                Some(timeout)
            };
        }
        if let Some((n, k)) = get("max_server_wait_ms") {
            retry.max_server_wait = self.millis(n, &k)?.0;
        }
        if let Some((n, k)) = get("rules") {
            // The integration's rules are checked before the blueprint's, so they win.
            let mut rules = Vec::new();
            for (i, item) in self.list(n, &k)?.iter().enumerate() {
                rules.push(self.rule(item, &format!("{k}[{i}]"))?);
            }
            rules.append(&mut retry.rules);
            retry.rules = rules;
        }
        Ok(bp.with_retry(retry))
    }

    fn rule(&self, node: &Node, path: &str) -> Result<RetryRule, ConfigError> {
        let fields = self.fields(node, path, RULE_KEYS)?;
        let get = |k: &str| {
            find(fields, k).map(|n| (n, join(path, k))).ok_or_else(|| {
                self.error(
                    Kind::MissingKey,
                    node.pos,
                    path,
                    format!("`{k}` is missing"),
                )
                .hint("a rule needs `method`, `path` and `retry_safe`")
            })
        };
        let (n, k) = get("method")?;
        let text = self.non_empty(n, &k)?;
        let method = Method::from_bytes(text.text.to_ascii_uppercase().as_bytes())
            .ok()
            .filter(|m| STANDARD_METHODS.contains(m))
            .ok_or_else(|| {
                self.invalid(
                    text.pos,
                    &k,
                    format!("{} is not an HTTP method", text.shown()),
                )
                .hint("use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE or CONNECT")
            })?;
        let (n, k) = get("path")?;
        let text = self.non_empty(n, &k)?;
        if !text.text.starts_with('/') {
            return Err(self
                .invalid(
                    text.pos,
                    &k,
                    format!("{} does not start with `/`", text.shown()),
                )
                .hint("give a path relative to the base URL, such as `/companies` or `/events*`"));
        }
        let (n, k) = get("retry_safe")?;
        let retry_safe = self.boolean(n, &k)?;
        Ok(RetryRule {
            method,
            path: text.text,
            retry_safe,
        })
    }
}

const STANDARD_METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

/// Lists the registered ids for a hint.
fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (registered: {})", known.join(", "))
    }
}

/// The closest known key, when the unknown one looks like a typo of it.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}
