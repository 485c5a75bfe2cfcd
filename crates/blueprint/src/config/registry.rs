//! The blueprints an `integrations.yaml` may extend, and where each came from.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use super::error::{ConfigError, ConfigErrorKind};
use super::load::{self, Loader};
use super::yaml::Pos;
use crate::Blueprint;

/// Where a blueprint in a [`Registry`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlueprintSource {
    /// A YAML file of the catalog embedded in the binary ([`Registry::builtin`]).
    BuiltIn {
        /// The file's path in the repository (`crates/blueprint/blueprints/github.yaml`).
        file: &'static str,
    },
    /// A user's YAML: a `blueprints:` section or a file of its own.
    File {
        /// The file, as named to the loader.
        file: String,
        /// The line where the blueprint is declared.
        line: usize,
        /// The column where the blueprint is declared.
        column: usize,
    },
    /// Registered by code ([`Registry::register`]).
    Code,
}

impl fmt::Display for BlueprintSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlueprintSource::BuiltIn { file } => write!(f, "built-in ({file})"),
            BlueprintSource::File { file, line, column } => write!(f, "{file}:{line}:{column}"),
            BlueprintSource::Code => f.write_str("registered by the program"),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    blueprint: Blueprint,
    source: BlueprintSource,
}

/// The known blueprints, by name and version, each with where it came from.
/// `extends_blueprint: intercom:v0` picks one version; `extends_blueprint: intercom` picks
/// the latest.
///
/// [`Registry::builtin`] holds the catalog of YAML blueprints embedded in the binary
/// (Intercom, GitHub, `HubSpot`, Slack, Zendesk); [`Registry::new`] starts empty. YAML
/// blueprints of your own come from [`Registry::load_dir`] or a `blueprints:` section of
/// `integrations.yaml`, loaded by the same code as the built-in ones.
///
/// Versions compare part by part, numbers as numbers: `v10` is later than `v9`, `v1.10`
/// later than `v1.2`.
///
/// ```
/// use blueprint::{Blueprint, Registry};
///
/// let mut registry = Registry::new();
/// registry.register(Blueprint::new("acme", "v9", "https://api.acme.test")?);
/// registry.register(Blueprint::new("acme", "v10", "https://v10.acme.test")?);
/// assert_eq!(registry.get("acme").map(Blueprint::id).as_deref(), Some("acme:v10"));
/// assert_eq!(registry.get("acme:v9").map(Blueprint::id).as_deref(), Some("acme:v9"));
/// assert!(registry.get("acme:v3").is_none());
/// # Ok::<(), blueprint::BlueprintError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Name -> versions, oldest first.
    blueprints: BTreeMap<String, Vec<Entry>>,
}

/// The most blueprint files [`Registry::load_dir`] reads from one folder.
const MAX_FILES: usize = 1_000;

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The catalog embedded in the binary: every YAML file of `crates/blueprint/blueprints/`
    /// (Intercom, GitHub, `HubSpot`, Slack, Zendesk), loaded like a user's.
    ///
    /// ```
    /// let registry = blueprint::Registry::builtin()?;
    /// let github = registry.get("github").ok_or("no github")?;
    /// assert_eq!(github.base_url().to_string(), "https://api.github.com/");
    /// assert!(registry.source("intercom:v0").is_some_and(|s| s.to_string().starts_with("built-in")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Never for the files as shipped (a test loads them); a [`ConfigError`] naming the file
    /// if one were broken.
    pub fn builtin() -> Result<Self, ConfigError> {
        // Loaded once per process; each caller gets its own copy.
        static CATALOG: OnceLock<Registry> = OnceLock::new();
        if let Some(catalog) = CATALOG.get() {
            return Ok(catalog.clone());
        }
        let mut registry = Registry::new();
        let files: Vec<(String, &str)> = super::builtin::FILES
            .iter()
            .map(|(file, text)| ((*file).to_owned(), *text))
            .collect();
        registry.load_files(&files, &|_| None)?;
        for entry in registry.blueprints.values_mut().flatten() {
            if let BlueprintSource::File { file, .. } = &entry.source {
                if let Some((path, _)) = super::builtin::FILES.iter().find(|(f, _)| f == file) {
                    entry.source = BlueprintSource::BuiltIn { file: path };
                }
            }
        }
        Ok(CATALOG.get_or_init(|| registry).clone())
    }

    /// Adds a blueprint; hands back the one it replaces (same name and version), if any.
    pub fn register(&mut self, blueprint: Blueprint) -> Option<Blueprint> {
        self.register_from(blueprint, BlueprintSource::Code)
    }

    /// Adds a blueprint that came from `source`; hands back the one it replaces.
    pub fn register_from(
        &mut self,
        blueprint: Blueprint,
        source: BlueprintSource,
    ) -> Option<Blueprint> {
        let versions = self
            .blueprints
            .entry(blueprint.name().to_owned())
            .or_default();
        let entry = Entry { blueprint, source };
        match versions.binary_search_by(|e| {
            compare_versions(e.blueprint.version(), entry.blueprint.version())
        }) {
            Ok(i) => Some(std::mem::replace(&mut versions[i], entry).blueprint),
            Err(i) => {
                versions.insert(i, entry);
                None
            }
        }
    }

    /// Adds a blueprint, builder style.
    #[must_use]
    pub fn with(mut self, blueprint: Blueprint) -> Self {
        self.register(blueprint);
        self
    }

    /// Loads YAML blueprint files (each holds one blueprint: `name:`, `version:` and its
    /// settings, as in a `blueprints:` section), named `file` in errors, `${VAR}` taken from
    /// `env`. They may extend one another in any order, and the blueprints registered
    /// already.
    ///
    /// ```
    /// let mut registry = blueprint::Registry::builtin()?;
    /// let acme = "name: acme\nversion: v1\nbase_url: https://api.acme.test\n";
    /// let mine = "name: acme-eu\nextends_blueprint: acme:v1\nbase_url: https://eu.acme.test\n";
    /// registry.load_files(&[("acme-eu.yaml".into(), mine), ("acme.yaml".into(), acme)], &|_| None)?;
    /// assert_eq!(registry.get("acme-eu").ok_or("no acme-eu")?.id(), "acme-eu:v0");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for the first mistake, naming its file, line, column and key.
    pub fn load_files(
        &mut self,
        files: &[(String, &str)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let snapshot = self.clone();
        let roots = files
            .iter()
            .map(|(file, text)| load::parse_text(file, text))
            .collect::<Result<Vec<_>, _>>()?;
        let mut decls = Vec::with_capacity(files.len());
        for ((file, _), root) in files.iter().zip(&roots) {
            let loader = Loader {
                file,
                env,
                registry: &snapshot,
            };
            decls.push(loader.single(root.as_ref())?);
        }
        let loader = Loader {
            file: "",
            env,
            registry: &snapshot,
        };
        loader.resolve(&decls, self)
    }

    /// Loads every `*.yaml` and `*.yml` file of `dir` (in name order) with
    /// [`Registry::load_files`], `${VAR}` taken from the process environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the folder or a file cannot be read, or holds a mistake.
    pub fn load_dir(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let shown = dir.display().to_string();
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| ConfigError::io(&shown, e))? {
            let path = entry.map_err(|e| ConfigError::io(&shown, e))?.path();
            let yaml = path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml");
            if yaml && path.is_file() {
                paths.push(path);
            }
            if paths.len() > MAX_FILES {
                return Err(ConfigError::new(
                    ConfigErrorKind::TooLarge,
                    &shown,
                    Pos { line: 1, column: 1 },
                    "",
                    format!("the folder holds more than {MAX_FILES} YAML files"),
                )
                .hint("keep one file per blueprint you use"));
            }
        }
        paths.sort();
        let mut texts = Vec::with_capacity(paths.len());
        for path in &paths {
            let file = path.display().to_string();
            let text = super::read_bounded(path, &file)?;
            texts.push((file, text));
        }
        let files: Vec<(String, &str)> =
            texts.iter().map(|(f, t)| (f.clone(), t.as_str())).collect();
        self.load_files(&files, &|name| {
            std::env::var_os(name).and_then(|v| v.into_string().ok())
        })
    }

    /// The blueprint `name:version`, or the latest version of `name`.
    pub fn get(&self, id: &str) -> Option<&Blueprint> {
        self.entry(id).map(|e| &e.blueprint)
    }

    /// Where the blueprint `name:version` (or the latest `name`) came from.
    pub fn source(&self, id: &str) -> Option<&BlueprintSource> {
        self.entry(id).map(|e| &e.source)
    }

    fn entry(&self, id: &str) -> Option<&Entry> {
        match id.split_once(':') {
            Some((name, version)) => self
                .blueprints
                .get(name)?
                .iter()
                .find(|e| e.blueprint.version() == version),
            None => self.blueprints.get(id)?.last(),
        }
    }

    /// The latest version of the blueprint `name`.
    pub fn latest(&self, name: &str) -> Option<&Blueprint> {
        self.blueprints.get(name)?.last().map(|e| &e.blueprint)
    }

    /// Every blueprint, by name, then version (oldest first).
    pub fn iter(&self) -> impl Iterator<Item = &Blueprint> + '_ {
        self.blueprints.values().flatten().map(|e| &e.blueprint)
    }

    /// Every blueprint with where it came from, by name, then version.
    pub fn iter_with_source(&self) -> impl Iterator<Item = (&Blueprint, &BlueprintSource)> + '_ {
        self.blueprints
            .values()
            .flatten()
            .map(|e| (&e.blueprint, &e.source))
    }

    /// How many blueprints (versions counted apart) the registry holds.
    pub fn len(&self) -> usize {
        self.blueprints.values().map(Vec::len).sum()
    }

    /// Whether the registry holds none.
    pub fn is_empty(&self) -> bool {
        self.blueprints.is_empty()
    }

    /// The ids (`name:version`) of the versions of `name`, or of every blueprint when `name`
    /// has none; for error messages.
    pub(crate) fn known_ids(&self, name: &str) -> Vec<String> {
        match self.blueprints.get(name) {
            Some(versions) => versions.iter().map(|e| e.blueprint.id()).collect(),
            None => self.iter().map(Blueprint::id).collect(),
        }
    }
}

impl<'a> IntoIterator for &'a Registry {
    type Item = &'a Blueprint;
    type IntoIter = Box<dyn Iterator<Item = &'a Blueprint> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Orders versions part by part: runs of digits as numbers, other runs as text, a number
/// before text; equal parts fall back to plain text order so the order is total.
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    let (x, y) = (parts(a), parts(b));
    for (p, q) in x.iter().zip(&y) {
        let order = match (is_number(p), is_number(q)) {
            (true, true) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => p.cmp(q),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    x.len().cmp(&y.len()).then_with(|| a.cmp(b))
}

fn is_number(part: &str) -> bool {
    part.starts_with(|c: char| c.is_ascii_digit())
}

fn parts(version: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut digits = None;
    for (i, c) in version.char_indices() {
        let d = c.is_ascii_digit();
        if digits.is_some_and(|was| was != d) {
            parts.push(&version[start..i]);
            start = i;
        }
        digits = Some(d);
    }
    if start < version.len() {
        parts.push(&version[start..]);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numbers_as_numbers() {
        use Ordering::{Equal, Greater, Less};
        assert_eq!(compare_versions("v10", "v9"), Greater);
        assert_eq!(compare_versions("v9", "v10"), Less);
        assert_eq!(compare_versions("v1.10", "v1.2"), Greater);
        assert_eq!(compare_versions("v2", "v2.1"), Less);
        assert_eq!(compare_versions("v0", "v0"), Equal);
        assert_eq!(
            compare_versions("v1", "v01"),
            Greater,
            "total order on ties"
        );
        assert_eq!(compare_versions("2024-10-01", "2024-09-30"), Greater);
        assert_eq!(
            compare_versions("v99999999999999999999999", "v100000000000000000000000"),
            Less
        );
    }

    #[test]
    fn register_replaces_the_same_version_and_keeps_order() {
        let mut registry = Registry::new();
        for v in ["v10", "v2", "v9"] {
            assert!(
                registry
                    .register(Blueprint::new("x", v, "https://x.test").unwrap())
                    .is_none()
            );
        }
        let replaced = registry.register(Blueprint::new("x", "v2", "https://two.test").unwrap());
        assert_eq!(registry.source("x:v2"), Some(&BlueprintSource::Code));
        assert_eq!(replaced.unwrap().base_url().to_string(), "https://x.test/");
        let ids: Vec<String> = registry.iter().map(Blueprint::id).collect();
        assert_eq!(ids, ["x:v2", "x:v9", "x:v10"]);
        assert_eq!(registry.len(), 3);
        assert_eq!(registry.get("x").unwrap().version(), "v10");
        assert_eq!(
            registry.get("x:v2").unwrap().base_url().to_string(),
            "https://two.test/"
        );
        assert!(registry.get("y").is_none());
        assert!(registry.get("x:").is_none());
    }
}
