//! Walks the parsed YAML, checks every key and value, and applies the settings: of a
//! blueprint (declared in a `blueprints:` section or a file of its own) and of an
//! integration (overriding the blueprint it extends).

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};

use super::Integration;
use super::error::{ConfigError, ConfigErrorKind as Kind};
use super::registry::{BlueprintSource, Registry, compare_versions};
use super::secret::ClientSecret;
use super::vars::{self, VarError};
use super::yaml::{self, Key, Node, Pos, Value};
use crate::base_url::{BaseUrl, InvalidBaseUrl};
use crate::template;
use crate::{
    Blueprint, ClientAuth, ConnectionParam, OAuthSettings, ParamSource, RateLimitRule, Region,
    ResetFormat, RetryRule, Route, WaitFrom,
};

/// The largest file the loader reads.
pub(crate) const MAX_FILE_BYTES: usize = 1024 * 1024;
/// The most default headers one blueprint or integration sets.
const MAX_HEADERS: usize = 64;
/// The longest chain of blueprints extending one another.
const MAX_EXTENDS_DEPTH: usize = 32;

const TOP_KEYS: &[&str] = &["integrations", "blueprints"];
/// Settings shared by blueprints and integrations.
const SETTING_KEYS: &[&str] = &[
    "base_url",
    "headers",
    "oauth_authorization_url",
    "oauth_token_url",
    "oauth_pkce",
    "oauth_client_auth",
    "oauth_scopes",
    "oauth_scope_separator",
    "oauth_authorization_params",
    "rate_limit_headers",
    "rate_limited",
    "max_server_wait_ms",
    "retry",
    "tokens_expire",
    "routes",
    "connection_params",
];
const INTEGRATION_ONLY: &[&str] = &[
    "extends_blueprint",
    "oauth_client_id",
    "oauth_client_secret",
    "region",
];
const BLUEPRINT_ONLY: &[&str] = &["extends_blueprint", "version", "regions"];
const RATE_LIMIT_KEYS: &[&str] = &["limit", "remaining", "reset", "reset_format"];
const RATE_LIMITED_KEYS: &[&str] = &["status", "when", "wait_from"];
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
const REGION_KEYS: &[&str] = &["base_url", "oauth_authorization_url", "oauth_token_url"];
const PARAM_KEYS: &[&str] = &["from", "field", "pattern"];
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

pub(crate) fn integration_keys() -> Vec<&'static str> {
    INTEGRATION_ONLY
        .iter()
        .chain(SETTING_KEYS)
        .copied()
        .collect()
}

pub(crate) fn blueprint_keys() -> Vec<&'static str> {
    BLUEPRINT_ONLY.iter().chain(SETTING_KEYS).copied().collect()
}

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

/// What a file holds, loaded.
pub(crate) struct Loaded {
    pub(crate) integrations: Vec<Integration>,
    /// The registry the integrations were resolved against: the given one and the file's
    /// own blueprints.
    pub(crate) registry: Registry,
}

/// A blueprint declared in YAML, not yet resolved.
pub(crate) struct Decl<'n> {
    file: String,
    /// The dotted key of the declaration (`blueprints.github`; empty for a file of its own).
    path: String,
    name: String,
    /// Where the declaration starts (its key, or the file's first value).
    pos: Pos,
    version: String,
    map: &'n Entries,
}

impl Decl<'_> {
    fn id(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// Parses a YAML text, refusing a file larger than the loader reads.
pub(crate) fn parse_text(file: &str, text: &str) -> Result<Option<Node>, ConfigError> {
    if text.len() > MAX_FILE_BYTES {
        let pos = yaml::position_of(text, MAX_FILE_BYTES);
        return Err(ConfigError::new(
            Kind::TooLarge,
            file,
            pos,
            "",
            format!(
                "the file is larger than {} KiB (the limit is passed here)",
                MAX_FILE_BYTES / 1024
            ),
        )
        .hint("split it, or remove what is not needed"));
    }
    yaml::parse(text).map_err(|e| {
        let kind = if e.too_large {
            Kind::TooLarge
        } else {
            Kind::Syntax
        };
        let prefix = if e.too_large { "" } else { "invalid YAML: " };
        ConfigError::new(kind, file, e.pos, "", format!("{prefix}{}", e.message)).hint(
            if e.too_large {
                "make it smaller: the loader bounds every size"
            } else {
                "fix the YAML at this position"
            },
        )
    })
}

impl<'a> Loader<'a> {
    fn error(&self, kind: Kind, pos: Pos, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(kind, self.file, pos, key, message)
    }

    fn invalid(&self, pos: Pos, key: &str, message: impl Into<String>) -> ConfigError {
        self.error(Kind::InvalidValue, pos, key, message)
    }

    /// With another file name (a declaration from another file).
    fn for_file<'b>(&'b self, file: &'b str) -> Loader<'b> {
        Loader {
            file,
            env: self.env,
            registry: self.registry,
        }
    }

    /// Parses an `integrations.yaml` and builds its blueprints and every integration, in
    /// file order.
    pub(crate) fn load(&self, text: &str) -> Result<Loaded, ConfigError> {
        let Some(root) = parse_text(self.file, text)? else {
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
        let mut registry = self.registry.clone();
        if let Some(section) = find(top, "blueprints") {
            let mut decls = Vec::new();
            for (name, node) in self.entries(section, "blueprints")? {
                let path = join("blueprints", &name.text);
                decls.push(self.declaration(name.text.clone(), name.pos, node, path)?);
            }
            self.resolve(&decls, &mut registry)?;
        }
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
        let loader = Loader {
            file: self.file,
            env: self.env,
            registry: &registry,
        };
        let integrations = entries
            .iter()
            .map(|(name, node)| loader.integration(name, node))
            .collect::<Result<_, _>>()?;
        Ok(Loaded {
            integrations,
            registry,
        })
    }

    /// A blueprint declaration: a name, a position, and a mapping of settings.
    fn declaration<'n>(
        &self,
        name: String,
        pos: Pos,
        node: &'n Node,
        path: String,
    ) -> Result<Decl<'n>, ConfigError> {
        let keys = blueprint_keys();
        let map = self.fields(node, &path, &keys)?;
        self.declared(name, pos, map, path)
    }

    /// A declaration whose keys are checked.
    fn declared<'n>(
        &self,
        name: String,
        pos: Pos,
        map: &'n Entries,
        path: String,
    ) -> Result<Decl<'n>, ConfigError> {
        check_name(&name).map_err(|why| {
            self.invalid(
                pos,
                &path,
                format!("`{name}` is not a usable blueprint name: {why}"),
            )
            .hint("use letters, digits, `-` and `_`, such as `github` or `acme-crm`")
        })?;
        let version = match find(map, "version") {
            Some(node) => {
                let k = join(&path, "version");
                let text = self.non_empty(node, &k)?;
                check_name(&text.text).map_err(|why| {
                    self.invalid(
                        text.pos,
                        &k,
                        format!("{} is not a usable version: {why}", text.shown()),
                    )
                    .hint("use letters, digits, `.`, `-` and `_`, such as `v1` or `2024-10-01`")
                })?;
                text.text
            }
            None => "v0".to_owned(),
        };
        Ok(Decl {
            file: self.file.to_owned(),
            path,
            name,
            pos,
            version,
            map,
        })
    }

    /// A file holding one blueprint: `name:` and the settings at the top level.
    pub(crate) fn single<'n>(&self, root: Option<&'n Node>) -> Result<Decl<'n>, ConfigError> {
        let Some(root) = root else {
            return Err(self
                .error(
                    Kind::MissingKey,
                    Pos { line: 1, column: 1 },
                    "name",
                    "the file is empty",
                )
                .hint("a blueprint file starts with `name:` and `base_url:`"));
        };
        let mut keys = vec!["name"];
        keys.extend(blueprint_keys());
        let map = self.fields(root, "", &keys)?;
        let Some(name) = find(map, "name") else {
            return Err(self
                .error(Kind::MissingKey, root.pos, "name", "`name` is missing")
                .hint("add `name: NAME`, the blueprint's name"));
        };
        let name = self.non_empty(name, "name")?;
        self.declared(name.text, name.pos, map, String::new())
    }

    /// Builds the declared blueprints, each after the one it extends (declared here, or in
    /// the registry), and registers them.
    pub(crate) fn resolve(
        &self,
        decls: &[Decl<'_>],
        registry: &mut Registry,
    ) -> Result<(), ConfigError> {
        let mut ids: HashMap<String, usize> = HashMap::with_capacity(decls.len());
        for (i, decl) in decls.iter().enumerate() {
            if let Some(&first) = ids.get(&decl.id()) {
                let first = &decls[first];
                return Err(self
                    .for_file(&decl.file)
                    .error(
                        Kind::DuplicateKey,
                        decl.pos,
                        &decl.path,
                        format!(
                            "the blueprint {} is declared twice (first at {}:{}:{})",
                            decl.id(),
                            first.file,
                            first.pos.line,
                            first.pos.column
                        ),
                    )
                    .hint("keep one of them, or give one another version"));
            }
            ids.insert(decl.id(), i);
        }
        let mut state = vec![State::Todo; decls.len()];
        let mut built: Vec<Option<Blueprint>> = vec![None; decls.len()];
        for i in 0..decls.len() {
            self.build(i, decls, &ids, registry, &mut state, &mut built, 0)?;
        }
        for (decl, bp) in decls.iter().zip(built) {
            if let Some(bp) = bp {
                registry.register_from(
                    bp,
                    BlueprintSource::File {
                        file: decl.file.clone(),
                        line: decl.pos.line,
                        column: decl.pos.column,
                    },
                );
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        i: usize,
        decls: &[Decl<'_>],
        ids: &HashMap<String, usize>,
        registry: &Registry,
        state: &mut [State],
        built: &mut [Option<Blueprint>],
        depth: usize,
    ) -> Result<(), ConfigError> {
        if state[i] == State::Done {
            return Ok(());
        }
        let decl = &decls[i];
        let here = self.for_file(&decl.file);
        state[i] = State::Building;
        let key = |k: &str| join(&decl.path, k);
        let parent = match find(decl.map, "extends_blueprint") {
            None => None,
            Some(node) => {
                let k = key("extends_blueprint");
                let text = here.non_empty(node, &k)?;
                let in_files = match text.text.split_once(':') {
                    Some(_) => ids.get(&text.text).copied(),
                    None => decls
                        .iter()
                        .enumerate()
                        .filter(|(_, d)| d.name == text.text)
                        .max_by(|(_, a), (_, b)| compare_versions(&a.version, &b.version))
                        .map(|(j, _)| j),
                };
                match in_files {
                    Some(j) if state[j] == State::Building => {
                        return Err(here
                            .error(
                                Kind::ExtendsCycle,
                                text.pos,
                                &k,
                                format!(
                                    "{} extends {}, which extends it back",
                                    decl.id(),
                                    decls[j].id()
                                ),
                            )
                            .hint("a blueprint cannot extend itself, directly or through others"));
                    }
                    Some(j) => {
                        if depth >= MAX_EXTENDS_DEPTH {
                            return Err(here
                                .invalid(text.pos, &k, format!("more than {MAX_EXTENDS_DEPTH} blueprints extend one another"))
                                .hint("shorten the chain of `extends_blueprint`"));
                        }
                        self.build(j, decls, ids, registry, state, built, depth + 1)?;
                        built[j].clone()
                    }
                    None => match registry.get(&text.text) {
                        Some(bp) => Some(bp.clone()),
                        None => {
                            let name = text.text.split(':').next().unwrap_or_default();
                            let mut known = registry.known_ids(name);
                            known.extend(decls.iter().map(Decl::id));
                            return Err(here
                                .error(
                                    Kind::UnknownBlueprint,
                                    text.pos,
                                    &k,
                                    format!(
                                        "no blueprint {} is registered or declared",
                                        text.shown()
                                    ),
                                )
                                .hint(format!("use one of: {}", known.join(", "))));
                        }
                    },
                }
            }
        };
        let bp = match parent {
            Some(parent) => parent.renamed(decl.name.clone(), decl.version.clone()),
            None => {
                if find(decl.map, "base_url").is_none() {
                    return Err(here
                        .error(
                            Kind::MissingKey,
                            decl.pos,
                            &decl.path,
                            "`base_url` is missing",
                        )
                        .hint("a blueprint that extends none needs `base_url`"));
                }
                // A stand-in, replaced by the declared base URL below (which may name
                // connection parameters, declared first).
                Blueprint::new(
                    decl.name.clone(),
                    decl.version.clone(),
                    "https://blueprint.invalid",
                )
                .map_err(|e| here.invalid(decl.pos, &decl.path, e.to_string()))?
            }
        };
        let applied = here.apply(decl.map, &decl.path, bp, Scope::Blueprint)?;
        built[i] = Some(applied.blueprint);
        state[i] = State::Done;
        Ok(())
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

    /// A mapping's entries, each key given once (checked in one pass); `null` counts as
    /// empty.
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
        let mut seen: HashMap<&str, Pos> = HashMap::with_capacity(entries.len());
        for (key, _) in entries {
            if let Some(first) = seen.insert(key.text.as_str(), key.pos) {
                return Err(self
                    .error(
                        Kind::DuplicateKey,
                        key.pos,
                        &join(path, &key.text),
                        format!(
                            "`{}` is given twice (first at line {}, column {})",
                            key.text, first.line, first.column
                        ),
                    )
                    .hint("keep one of them"));
            }
        }
        Ok(entries)
    }

    /// A text value, `${VAR}` expanded; a `${connection.…}` placeholder is refused.
    fn text(&self, node: &Node, key: &str) -> Result<Text, ConfigError> {
        let text = self.template(node, key)?;
        if template::has_placeholder(&text.text) {
            return Err(self
                .invalid(text.pos, key, "a `${connection.…}` placeholder is not allowed in this value")
                .hint("connection parameters may stand in `base_url`, the OAuth URLs, region URLs and header values; write `$${` for a literal `${`"));
        }
        Ok(text)
    }

    /// A text value, `${VAR}` expanded; `${connection.…}` placeholders are kept.
    fn template(&self, node: &Node, key: &str) -> Result<Text, ConfigError> {
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
        self.check_non_empty(text, key)
    }

    fn check_non_empty(&self, text: Text, key: &str) -> Result<Text, ConfigError> {
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
                .hint(format!("name a variable as `${{NAME}}` (or a connection parameter as `${{connection.NAME}}`), or {ESCAPE}")),
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

    /// An absolute `http(s)` URL; with `bp`, it may name that blueprint's connection
    /// parameters. With `credentials`, plain `http` is only for loopback hosts.
    fn url(
        &self,
        node: &Node,
        key: &str,
        bp: Option<&Blueprint>,
        credentials: bool,
    ) -> Result<Text, ConfigError> {
        let text = match bp {
            Some(_) => self.template(node, key)?,
            None => self.text(node, key)?,
        };
        let text = self.check_non_empty(text, key)?;
        let checked = match bp {
            Some(bp) if template::has_placeholder(&text.text) => bp
                .url_stand_in("url", &text.text)
                .map_err(|e| self.invalid(text.pos, key, e.message().to_owned()).hint("declare the parameter under `connection_params`, and use it as a whole DNS label or path segment"))?,
            _ => text.text.clone(),
        };
        let uri = checked.parse::<Uri>().ok().filter(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri
                    .authority()
                    .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        });
        let Some(uri) = uri.filter(|_| !checked.contains('#')) else {
            return Err(self
                .invalid(
                    text.pos,
                    key,
                    format!("{} is not an absolute http(s) URL", text.shown()),
                )
                .hint(
                    "give a URL such as https://example.com/oauth, without user info or fragment",
                ));
        };
        if credentials
            && uri.scheme_str() == Some("http")
            && !is_loopback(uri.host().unwrap_or_default())
        {
            return Err(self
                .invalid(
                    text.pos,
                    key,
                    format!("{} uses plain http to a host other than loopback: OAuth codes, client secrets and tokens would travel unencrypted", text.shown()),
                )
                .hint("use https (plain http is only for 127.0.0.1, ::1 or localhost)"));
        }
        Ok(text)
    }

    fn base_url(&self, node: &Node, key: &str, bp: &Blueprint) -> Result<Text, ConfigError> {
        let text = self.template(node, key)?;
        let text = self.check_non_empty(text, key)?;
        let checked = if template::has_placeholder(&text.text) {
            bp.url_stand_in("base_url", &text.text).map_err(|e| {
                self.invalid(text.pos, key, e.message().to_owned()).hint(
                    "declare the parameter under `connection_params`, and use it as a whole DNS label or path segment",
                )
            })?
        } else {
            text.text.clone()
        };
        if let Err(e) = BaseUrl::parse(&checked) {
            let why = match e {
                InvalidBaseUrl::NotPlain => "it must not have a query, fragment or user info",
                InvalidBaseUrl::Port => "its port must be a number from 1 to 65535",
                InvalidBaseUrl::Path(reason) => reason,
                _ => "it must be an absolute http(s) URL with a host",
            };
            return Err(self
                .invalid(
                    text.pos,
                    key,
                    format!("{} is not a usable base URL: {why}", text.shown()),
                )
                .hint("give a URL such as https://api.example.com/"));
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
        let keys = integration_keys();
        let map = self.fields(node, &path, &keys)?;
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
        let bp = base.clone();
        let extends_id = bp.id();
        let applied = self.apply(map, &path, bp, Scope::Integration)?;
        Ok(Integration {
            name: name.text.clone(),
            extends: extends_id,
            region: applied.region,
            blueprint: applied.blueprint,
            oauth_client_id: applied.client_id,
            oauth_client_secret: applied.client_secret,
            secret_headers: applied.secret_headers,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Todo,
    Building,
    Done,
}

/// Whose settings are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Blueprint,
    Integration,
}

/// The settings applied, and what an integration adds.
struct Applied {
    blueprint: Blueprint,
    region: Option<String>,
    client_id: Option<String>,
    client_secret: Option<ClientSecret>,
    /// Default headers whose values came from the environment.
    secret_headers: Vec<HeaderName>,
}

/// A blueprint's or version's name: letters, digits, `.`, `-` and `_`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("it must have 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("it may hold only letters, digits, `.`, `-` and `_`");
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Loader<'_> {
    /// Applies the settings of a blueprint declaration or an integration onto `bp`.
    fn apply(
        &self,
        map: &Entries,
        path: &str,
        mut bp: Blueprint,
        scope: Scope,
    ) -> Result<Applied, ConfigError> {
        let key = |k: &str| join(path, k);

        // Connection parameters first: the settings below may name them.
        if let Some(node) = find(map, "connection_params") {
            bp = self.connection_params(node, &key("connection_params"), bp)?;
        }

        // The region first, so that explicit URLs below win over the region's.
        let mut region = None;
        if let Some(node) = find(map, "region") {
            let k = key("region");
            let text = self.non_empty(node, &k)?;
            let extends_id = bp.id();
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
        if let Some(node) = find(map, "regions") {
            bp = self.regions(node, &key("regions"), bp)?;
        }

        if let Some(node) = find(map, "base_url") {
            let k = key("base_url");
            let text = self.base_url(node, &k, &bp)?;
            bp = bp
                .with_base_url(&text.text)
                .map_err(|e| self.invalid(text.pos, &k, e.to_string()))?;
        }

        // Header values that came from the environment: summaries hide them.
        let mut secret_headers = Vec::new();
        if let Some(node) = find(map, "headers") {
            let k = key("headers");
            let entries = self.entries(node, &k)?;
            if entries.len() > MAX_HEADERS {
                let (name, _) = &entries[MAX_HEADERS];
                return Err(self
                    .error(
                        Kind::TooLarge,
                        name.pos,
                        &join(&k, &name.text),
                        format!("more than {MAX_HEADERS} default headers"),
                    )
                    .hint("keep the headers every request needs; set others per request"));
            }
            for (name, value) in entries {
                let hk = join(&k, &name.text);
                let header = self.header_name(&name.text, name.pos, &hk)?;
                let value = self.template(value, &hk)?;
                if HeaderValue::try_from(value.text.as_str()).is_err() {
                    return Err(self
                        .invalid(value.pos, &hk, "the value is not a valid header value")
                        .hint("remove line breaks and control characters from it"));
                }
                bp = bp
                    .default_header(header.as_str(), &value.text)
                    .map_err(|e| {
                        self.invalid(value.pos, &hk, e.message().to_owned())
                            .hint("declare the parameter under `connection_params`")
                    })?;
                if value.from_env {
                    // Hidden wherever the blueprint is shown, also in blueprints that
                    // extend this one.
                    bp.hide_header(&header);
                    secret_headers.push(header);
                }
            }
        }

        let oauth = self.oauth(map, path, bp, scope)?;
        bp = oauth.blueprint;

        if let Some(node) = find(map, "rate_limit_headers") {
            bp = self.rate_limit_headers(node, &key("rate_limit_headers"), bp)?;
        }
        if let Some(node) = find(map, "rate_limited") {
            bp = self.rate_limited(node, &key("rate_limited"), bp)?;
        }
        if let Some(node) = find(map, "max_server_wait_ms") {
            let k = key("max_server_wait_ms");
            let (wait, pos) = self.millis(node, &k)?;
            if wait.is_zero() {
                return Err(self
                    .invalid(pos, &k, "0 would ignore every server-announced wait")
                    .hint("give a number of milliseconds, such as 300000 (five minutes)"));
            }
            bp = bp.with_max_server_wait(wait);
        }
        if let Some(node) = find(map, "retry") {
            bp = self.retry(node, &key("retry"), bp)?;
        }
        if let Some(node) = find(map, "tokens_expire") {
            bp = bp.with_tokens_expire(self.boolean(node, &key("tokens_expire"))?);
        }
        if let Some(node) = find(map, "routes") {
            let k = key("routes");
            let mut routes = Vec::new();
            for (i, item) in self.list(node, &k)?.iter().enumerate() {
                let rk = format!("{k}[{i}]");
                let text = self.non_empty(item, &rk)?;
                let route = Route::new(&text.text).map_err(|e| {
                    self.invalid(text.pos, &rk, e.message().to_owned())
                        .hint("write a path such as `/contacts/{id}/tags`")
                })?;
                routes.push(route);
            }
            bp = bp.with_routes(routes);
        }
        Ok(Applied {
            blueprint: bp,
            region,
            client_id: oauth.client_id,
            client_secret: oauth.client_secret,
            secret_headers,
        })
    }

    fn connection_params(
        &self,
        node: &Node,
        path: &str,
        mut bp: Blueprint,
    ) -> Result<Blueprint, ConfigError> {
        for (name, value) in self.entries(node, path)? {
            let k = join(path, &name.text);
            if !template::is_param_name(&name.text) {
                return Err(self
                    .invalid(name.pos, &k, format!("`{}` is not a parameter name", name.text))
                    .hint("use letters, digits and `_`, not starting with a digit, such as `subdomain`"));
            }
            let fields = self.fields(value, &k, PARAM_KEYS)?;
            let Some(from) = find(fields, "from") else {
                return Err(self
                    .error(Kind::MissingKey, name.pos, &k, "`from` is missing")
                    .hint("say where the value comes from: `import`, `connect_query` or `token_field`"));
            };
            let fk = join(&k, "from");
            let text = self.non_empty(from, &fk)?;
            let from = match text.text.as_str() {
                "import" => ParamSource::Import,
                "connect_query" => ParamSource::ConnectQuery,
                "token_field" => ParamSource::TokenField,
                _ => {
                    return Err(self
                        .invalid(
                            text.pos,
                            &fk,
                            format!("{} is not a source of a connection parameter", text.shown()),
                        )
                        .hint("use `import`, `connect_query` or `token_field`"));
                }
            };
            let mut param = ConnectionParam::new(&name.text, from)
                .map_err(|e| self.invalid(name.pos, &k, e.message().to_owned()))?;
            if let Some(field) = find(fields, "field") {
                let fk = join(&k, "field");
                let text = self.non_empty(field, &fk)?;
                if !text
                    .text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                {
                    return Err(self
                        .invalid(
                            text.pos,
                            &fk,
                            format!("{} is not a field name", text.shown()),
                        )
                        .hint("use letters, digits, `_`, `-` and `.`, such as `instance_url`"));
                }
                param = param.field(text.text);
            }
            if let Some(pattern) = find(fields, "pattern") {
                let pk = join(&k, "pattern");
                let text = self.non_empty(pattern, &pk)?;
                param = param.pattern(&text.text).map_err(|e| {
                    self.invalid(text.pos, &pk, e.message().to_owned())
                        .hint("write a regular expression the whole value must match, such as `[a-z0-9-]+`")
                })?;
            }
            bp = bp.with_connection_param(param);
        }
        Ok(bp)
    }

    fn regions(
        &self,
        node: &Node,
        path: &str,
        mut bp: Blueprint,
    ) -> Result<Blueprint, ConfigError> {
        for (name, value) in self.entries(node, path)? {
            let k = join(path, &name.text);
            check_name(&name.text).map_err(|why| {
                self.invalid(
                    name.pos,
                    &k,
                    format!("`{}` is not a usable region name: {why}", name.text),
                )
                .hint("use a short name such as `eu`")
            })?;
            let fields = self.fields(value, &k, REGION_KEYS)?;
            let existing = bp
                .regions()
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(&name.text))
                .cloned();
            let base_url = match (find(fields, "base_url"), &existing) {
                (Some(node), _) => self.base_url(node, &join(&k, "base_url"), &bp)?.text,
                (None, Some(region)) => region.base_url.clone(),
                (None, None) => {
                    return Err(self
                        .error(Kind::MissingKey, name.pos, &k, "`base_url` is missing")
                        .hint("a region needs the API's base URL in that region"));
                }
            };
            let url = |field: &str, old: Option<String>| -> Result<Option<String>, ConfigError> {
                match find(fields, field) {
                    Some(node) => Ok(Some(
                        self.url(node, &join(&k, field), Some(&bp), true)?.text,
                    )),
                    None => Ok(old),
                }
            };
            let authorization_url = url(
                "oauth_authorization_url",
                existing.as_ref().and_then(|r| r.authorization_url.clone()),
            )?;
            let token_url = url(
                "oauth_token_url",
                existing.as_ref().and_then(|r| r.token_url.clone()),
            )?;
            bp = bp.with_region(Region {
                name: name.text.to_ascii_lowercase(),
                base_url,
                authorization_url,
                token_url,
            });
        }
        Ok(bp)
    }

    fn rate_limit_headers(
        &self,
        node: &Node,
        k: &str,
        bp: Blueprint,
    ) -> Result<Blueprint, ConfigError> {
        let fields = self.fields(node, k, RATE_LIMIT_KEYS)?;
        let mut rate = bp.rate_limit().clone();
        for (name, value) in fields {
            let fk = join(k, &name.text);
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
                        "auto" => ResetFormat::Auto,
                        _ => {
                            return Err(self
                                .invalid(
                                    text.pos,
                                    &fk,
                                    format!("{} is not a reset format", text.shown()),
                                )
                                .hint(
                                    "use `epoch_seconds`, `epoch_millis`, `delta_seconds` or `auto`",
                                ));
                        }
                    };
                }
            }
        }
        Ok(bp.with_rate_limit(rate))
    }

    fn rate_limited(&self, node: &Node, k: &str, bp: Blueprint) -> Result<Blueprint, ConfigError> {
        let mut rules = Vec::new();
        for (i, item) in self.list(node, k)?.iter().enumerate() {
            let rk = format!("{k}[{i}]");
            let fields = self.fields(item, &rk, RATE_LIMITED_KEYS)?;
            let Some(status) = find(fields, "status") else {
                return Err(self
                    .error(Kind::MissingKey, item.pos, &rk, "`status` is missing")
                    .hint("a rule needs the status of the answer, such as `429` or `403`"));
            };
            let sk = join(&rk, "status");
            let (code, pos) = self.number(status, &sk)?;
            let status = u16::try_from(code)
                .ok()
                .filter(|c| (400..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    self.invalid(pos, &sk, format!("{code} is not an error status"))
                        .hint("use a status from 400 to 599, such as 429")
                })?;
            let wait_from = match find(fields, "wait_from") {
                None => WaitFrom::default(),
                Some(node) => {
                    let wk = join(&rk, "wait_from");
                    let text = self.non_empty(node, &wk)?;
                    match text.text.as_str() {
                        "retry_after" => WaitFrom::RetryAfter,
                        "reset" => WaitFrom::Reset,
                        "retry_after_or_reset" => WaitFrom::RetryAfterOrReset,
                        _ => {
                            return Err(self
                                .invalid(
                                    text.pos,
                                    &wk,
                                    format!("{} is not where a wait is read from", text.shown()),
                                )
                                .hint("use `retry_after`, `reset` or `retry_after_or_reset`"));
                        }
                    }
                }
            };
            let mut rule = RateLimitRule::new(status, wait_from);
            if let Some(when) = find(fields, "when") {
                let wk = join(&rk, "when");
                for (name, value) in self.entries(when, &wk)? {
                    let hk = join(&wk, &name.text);
                    let header = self.header_name(&name.text, name.pos, &hk)?;
                    let value = self.text(value, &hk)?;
                    rule.when.push((header, value.text));
                }
            }
            rules.push(rule);
        }
        Ok(bp.with_rate_limited(rules))
    }
}

/// The OAuth part: the blueprint with its OAuth settings, and an integration's client
/// credentials.
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
        scope: Scope,
    ) -> Result<OAuthPart, ConfigError> {
        let key = |k: &str| join(path, k);
        let get = |k: &str| find(map, k).map(|node| (node, key(k)));
        let authorization_url = get("oauth_authorization_url")
            .map(|(n, k)| self.url(n, &k, Some(&bp), true))
            .transpose()?;
        let token_url = get("oauth_token_url")
            .map(|(n, k)| self.url(n, &k, Some(&bp), true))
            .transpose()?;
        let scopes = get("oauth_scopes")
            .map(|(n, k)| self.scopes(n, &k))
            .transpose()?;
        let separator = get("oauth_scope_separator")
            .map(|(n, k)| self.separator(n, &k))
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
        let (client_id, client_secret) = if scope == Scope::Integration {
            let id = get("oauth_client_id")
                .map(|(n, k)| self.non_empty(n, &k))
                .transpose()?
                .map(|t| t.text);
            let secret = get("oauth_client_secret")
                .map(|(n, k)| self.non_empty(n, &k))
                .transpose()?
                .map(|t| ClientSecret::new(t.text));
            (id, secret)
        } else {
            (None, None)
        };

        if bp.oauth().is_none() {
            if let (Some(a), Some(t)) = (&authorization_url, &token_url) {
                bp = bp.with_oauth(OAuthSettings::new(a.text.clone(), t.text.clone()));
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
            if let Some(separator) = separator {
                oauth.scope_separator = separator;
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

    fn separator(&self, node: &Node, key: &str) -> Result<String, ConfigError> {
        let text = self.text(node, key)?;
        let ok = !text.text.is_empty()
            && text.text.len() <= 4
            && text
                .text
                .bytes()
                .all(|b| b == b' ' || (b.is_ascii_punctuation() && b != b'"' && b != b'\\'));
        if !ok {
            return Err(self
                .invalid(
                    text.pos,
                    key,
                    format!("{} is not a scope separator", text.shown()),
                )
                .hint("use a space (`\" \"`, the default) or punctuation such as `\",\"`"));
        }
        Ok(text.text)
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
            "basic" => Ok(ClientAuth::Basic),
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
            // The new rules are checked before the extended blueprint's, so they win.
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
        if let Err(why) = crate::blueprint::check_route(&text.text) {
            return Err(self
                .invalid(text.pos, &k, why)
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
    // Keys are short; a long one is no typo of a known key (and would cost time).
    if key.len() > 64 {
        return None;
    }
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
