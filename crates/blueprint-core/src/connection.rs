use std::fmt;
use std::sync::Arc;

/// Which tenant's credentials and rate-limit budget a request uses.
///
/// Put it in the request's extensions; a request without one uses
/// [`ConnectionId::default()`], whose id is `"default"`. Cloning is cheap (a reference
/// count at most) and the default id allocates nothing.
///
/// ```
/// use blueprint_core::ConnectionId;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(ConnectionId::new("workspace-42"));
/// assert_eq!(ConnectionId::of(&request).as_str(), "workspace-42");
/// assert_eq!(ConnectionId::of(&http::Request::new(())), ConnectionId::default());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Repr {
    fn as_str(&self) -> &str {
        match self {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl PartialEq for Repr {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.as_str(), other.as_str());
        // Ids are compared on every call (a rate-limit key's check): clones of one id share
        // their text, and are equal without comparing it.
        std::ptr::eq(a, b) || a == b
    }
}
impl Eq for Repr {}
impl std::hash::Hash for Repr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}
impl PartialOrd for Repr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Repr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl ConnectionId {
    /// The id of the connection used when a request names none.
    pub const DEFAULT: ConnectionId = ConnectionId(Repr::Static("default"));

    /// A connection id from any string.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        ConnectionId(Repr::Shared(id.into()))
    }

    /// A connection id from a string literal, without allocating.
    pub const fn from_static(id: &'static str) -> Self {
        ConnectionId(Repr::Static(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The connection a request names in its extensions, or the default one.
    pub fn of<B>(request: &http::Request<B>) -> ConnectionId {
        Self::from_extensions(request.extensions())
    }

    /// The connection named in these extensions, or the default one.
    pub fn from_extensions(extensions: &http::Extensions) -> ConnectionId {
        Self::in_extensions(extensions).clone()
    }

    /// [`ConnectionId::from_extensions`] by reference, for a layer that only compares or
    /// hashes the id: no clone, no reference count.
    pub fn in_extensions(extensions: &http::Extensions) -> &ConnectionId {
        static DEFAULT: ConnectionId = ConnectionId::DEFAULT;
        extensions.get::<ConnectionId>().unwrap_or(&DEFAULT)
    }
}

impl Default for ConnectionId {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ConnectionId {
    fn from(id: &str) -> Self {
        ConnectionId::new(id)
    }
}

impl From<String> for ConnectionId {
    fn from(id: String) -> Self {
        ConnectionId::new(id)
    }
}

impl AsRef<str> for ConnectionId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_shared_ids_compare_by_value() {
        assert_eq!(ConnectionId::from_static("a"), ConnectionId::new("a"));
        assert_ne!(ConnectionId::new("a"), ConnectionId::new("b"));
        assert_eq!(ConnectionId::default().as_str(), "default");
    }

    #[test]
    fn hash_agrees_with_eq() {
        let mut set = std::collections::HashSet::new();
        set.insert(ConnectionId::from_static("x"));
        assert!(set.contains(&ConnectionId::new(String::from("x"))));
    }
}
