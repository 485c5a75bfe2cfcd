//! The blueprints an `integrations.yaml` may extend.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::Blueprint;

/// The known blueprints, by name and version. `extends_blueprint: intercom:v0` picks one
/// version; `extends_blueprint: intercom` picks the latest.
///
/// The engine knows no API by itself (the Intercom blueprint lives in a crate above it), so
/// a registry starts empty and callers register the blueprints they offer.
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
    blueprints: BTreeMap<String, Vec<Blueprint>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a blueprint; hands back the one it replaces (same name and version), if any.
    pub fn register(&mut self, blueprint: Blueprint) -> Option<Blueprint> {
        let versions = self
            .blueprints
            .entry(blueprint.name().to_owned())
            .or_default();
        match versions.binary_search_by(|b| compare_versions(b.version(), blueprint.version())) {
            Ok(i) => Some(std::mem::replace(&mut versions[i], blueprint)),
            Err(i) => {
                versions.insert(i, blueprint);
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

    /// The blueprint `name:version`, or the latest version of `name`.
    pub fn get(&self, id: &str) -> Option<&Blueprint> {
        match id.split_once(':') {
            Some((name, version)) => self
                .blueprints
                .get(name)?
                .iter()
                .find(|b| b.version() == version),
            None => self.latest(id),
        }
    }

    /// The latest version of the blueprint `name`.
    pub fn latest(&self, name: &str) -> Option<&Blueprint> {
        self.blueprints.get(name)?.last()
    }

    /// Every blueprint, by name, then version (oldest first).
    pub fn iter(&self) -> impl Iterator<Item = &Blueprint> + '_ {
        self.blueprints.values().flatten()
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
            Some(versions) => versions.iter().map(Blueprint::id).collect(),
            None => self.iter().map(Blueprint::id).collect(),
        }
    }
}

impl<'a> IntoIterator for &'a Registry {
    type Item = &'a Blueprint;
    type IntoIter =
        std::iter::Flatten<std::collections::btree_map::Values<'a, String, Vec<Blueprint>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.blueprints.values().flatten()
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
