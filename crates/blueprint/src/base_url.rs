//! An API's base URL, and joining a request's path onto it safely.

use std::fmt;
use std::sync::Arc;

use blueprint_core::{InvalidOrigin, Origin};
use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

/// The base URL of an API: an origin and a path prefix (`https://api.example.com/v2`).
///
/// [`BaseUrl::resolve`] joins a relative request target onto it and guarantees the result
/// stays on the origin and under the prefix: dot segments (also percent-encoded), encoded
/// slashes, backslashes and control characters are resolved or refused, never followed
/// out of the base.
///
/// ```
/// use blueprint::BaseUrl;
///
/// let base = BaseUrl::parse("https://api.intercom.io/")?;
/// assert_eq!(base.resolve("/contacts?per_page=5")?, "https://api.intercom.io/contacts?per_page=5");
/// assert_eq!(base.resolve("contacts/./1")?, "https://api.intercom.io/contacts/1");
/// assert_eq!(base.resolve("//evil.example/x")?, "https://api.intercom.io/evil.example/x");
/// assert!(base.resolve("/a/../../etc/passwd").is_err());
/// assert!(base.resolve("/%2e%2e/admin").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUrl {
    origin: Origin,
    scheme: Scheme,
    authority: Authority,
    /// Without a trailing slash; empty for the root.
    prefix: Arc<str>,
}

impl BaseUrl {
    /// Parses an absolute `http(s)` URL without query, fragment or user info.
    ///
    /// # Errors
    ///
    /// [`InvalidBaseUrl`] when it is not one.
    pub fn parse(url: &str) -> Result<Self, InvalidBaseUrl> {
        let origin = Origin::parse(url).map_err(InvalidBaseUrl::Origin)?;
        let uri: Uri = url.parse().map_err(|_| InvalidBaseUrl::NotPlain)?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(InvalidBaseUrl::NotPlain);
        };
        if uri.query().is_some() || url.contains('#') || authority.as_str().contains('@') {
            return Err(InvalidBaseUrl::NotPlain);
        }
        let prefix = uri.path().trim_end_matches('/');
        Ok(BaseUrl {
            origin,
            scheme,
            authority,
            prefix: Arc::from(prefix),
        })
    }

    /// The origin (scheme, host, port).
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The path prefix, without a trailing slash (empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The authority (host and port, as written).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Joins `target` (a path with an optional query, relative to the base) onto the base.
    ///
    /// # Errors
    ///
    /// [`InvalidPath`] when the path would leave the base (`..` past the prefix), holds an
    /// encoded slash or dot-dot, a backslash, a control character, or is absolute-form
    /// (`https://…`).
    pub fn resolve(&self, target: &str) -> Result<Uri, InvalidPath> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let path = path.split_once('#').map_or(path, |(p, _)| p);
        if path.contains("://") || path.starts_with("http:") || path.starts_with("https:") {
            return Err(InvalidPath::new("an absolute URL is not a path"));
        }
        if path.contains('\\') {
            return Err(InvalidPath::new("a backslash is not allowed in a path"));
        }
        if target.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(InvalidPath::new(
                "control characters and spaces are not allowed",
            ));
        }
        let mut joined = String::with_capacity(self.prefix.len() + target.len() + 1);
        joined.push_str(&self.prefix);
        let base_len = joined.len();
        for segment in path.split('/') {
            match decode_dots(segment)? {
                Segment::Empty | Segment::Dot => {}
                Segment::DotDot => {
                    // Pop the last segment, never into the prefix.
                    match joined[base_len..].rfind('/') {
                        Some(at) => joined.truncate(base_len + at),
                        None => {
                            return Err(InvalidPath::new("`..` would leave the API's base URL"));
                        }
                    }
                }
                Segment::Name(name) => {
                    joined.push('/');
                    joined.push_str(name);
                }
            }
        }
        if joined.len() == base_len || (path.ends_with('/') && !joined.ends_with('/')) {
            joined.push('/');
        }
        if let Some(query) = query {
            joined.push('?');
            joined.push_str(query);
        }
        let path_and_query = PathAndQuery::try_from(joined)
            .map_err(|_| InvalidPath::new("the path holds characters a URI cannot"))?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts)
            .map_err(|_| InvalidPath::new("the path holds characters a URI cannot"))
    }
}

enum Segment<'a> {
    Empty,
    Dot,
    DotDot,
    Name(&'a str),
}

fn decode_dots(segment: &str) -> Result<Segment<'_>, InvalidPath> {
    match segment {
        "" => return Ok(Segment::Empty),
        "." => return Ok(Segment::Dot),
        ".." => return Ok(Segment::DotDot),
        // The common case: nothing encoded, nothing to decode.
        _ if !segment.contains('%') => return Ok(Segment::Name(segment)),
        _ => {}
    }
    let lower = segment.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(InvalidPath::new(
            "an encoded slash or backslash is not allowed in a path",
        ));
    }
    // Double-encoded dots and slashes would become `..` or `/` if the server decodes twice.
    if ["%252e", "%252f", "%255c"]
        .iter()
        .any(|d| lower.contains(d))
    {
        return Err(InvalidPath::new(
            "a double-encoded dot or slash is not allowed in a path",
        ));
    }
    if has_encoded_control(&lower) {
        return Err(InvalidPath::new(
            "an encoded control character is not allowed in a path",
        ));
    }
    match lower.replace("%2e", ".").as_str() {
        "." => Ok(Segment::Dot),
        ".." => Ok(Segment::DotDot),
        _ => Ok(Segment::Name(segment)),
    }
}

/// Whether a (lower-cased) segment holds `%00`–`%1f` or `%7f`.
fn has_encoded_control(lower: &str) -> bool {
    lower.match_indices('%').any(|(at, _)| {
        let hex = lower.get(at + 1..at + 3).unwrap_or_default();
        u8::from_str_radix(hex, 16).is_ok_and(|b| b < 0x20 || b == 0x7f)
    })
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}/", self.scheme, self.authority, self.prefix)
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BaseUrl({self})")
    }
}

/// Text that cannot be a base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidBaseUrl {
    /// It is not an absolute `http(s)` URL with a host.
    Origin(InvalidOrigin),
    /// It has a query, a fragment or user info.
    NotPlain,
}

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidBaseUrl::Origin(e) => write!(f, "invalid base URL: {e}"),
            InvalidBaseUrl::NotPlain => f.write_str(
                "invalid base URL: it must be a plain http(s) URL, without query, fragment or user info",
            ),
        }
    }
}

impl std::error::Error for InvalidBaseUrl {}

/// A request path that cannot be joined onto the base URL; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPath {
    reason: &'static str,
}

impl InvalidPath {
    fn new(reason: &'static str) -> Self {
        InvalidPath { reason }
    }

    /// Why the path was refused.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid request path: {}", self.reason)
    }
}

impl std::error::Error for InvalidPath {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_base() {
        let base = BaseUrl::parse("https://api.example.com/v2/").unwrap();
        let ok = |t: &str| base.resolve(t).map(|u| u.to_string());
        assert_eq!(ok("/me").unwrap(), "https://api.example.com/v2/me");
        assert_eq!(ok("me/").unwrap(), "https://api.example.com/v2/me/");
        assert_eq!(ok("").unwrap(), "https://api.example.com/v2/");
        assert_eq!(
            ok("/a/b/../c?x=1&y=..").unwrap(),
            "https://api.example.com/v2/a/c?x=1&y=.."
        );
        assert_eq!(
            ok("//evil.com/x").unwrap(),
            "https://api.example.com/v2/evil.com/x"
        );
        assert_eq!(ok("/a/%2E/b").unwrap(), "https://api.example.com/v2/a/b");
        assert_eq!(ok("/a/..").unwrap(), "https://api.example.com/v2/");
        for bad in [
            "/..",
            "/a/../..",
            "/%2e%2e",
            "/.%2E/x",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "https://evil.com/",
            "http://evil.com",
            "/a b",
            "/%252e%252e/admin",
            "/a%00b",
            "/a%0d%0aHost:%20x",
            "/a\r\nHost: x",
        ] {
            assert!(base.resolve(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn base_urls_must_be_plain() {
        assert!(BaseUrl::parse("https://api.example.com").is_ok());
        assert!(BaseUrl::parse("api.example.com").is_err());
        assert!(BaseUrl::parse("https://user:pw@api.example.com/").is_err());
        assert!(BaseUrl::parse("https://api.example.com/?q=1").is_err());
        assert_eq!(
            BaseUrl::parse("http://127.0.0.1:9000").unwrap().to_string(),
            "http://127.0.0.1:9000/"
        );
    }
}
