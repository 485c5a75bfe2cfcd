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
    /// Parses an absolute `http(s)` URL without query, fragment or user info, with a port
    /// (if any) from 1 to 65535 and a path free of dot segments (`.`, `..`, also
    /// percent-encoded) and of anything [`BaseUrl::resolve`] would refuse in a request path.
    ///
    /// ```
    /// use blueprint::BaseUrl;
    ///
    /// assert!(BaseUrl::parse("http://127.0.0.1:9000/api").is_ok());
    /// assert!(BaseUrl::parse("http://127.0.0.1:99999/").is_err()); // no such port
    /// assert!(BaseUrl::parse("https://api.example.com/api/../").is_err());
    /// ```
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
        // `http` reads `:99999` as no port at all (the scheme's default): refuse it.
        if !port_ok(authority.as_str()) {
            return Err(InvalidBaseUrl::Port);
        }
        let prefix = uri.path().trim_end_matches('/');
        for segment in prefix.split('/') {
            match decode_dots(segment).map_err(|e| InvalidBaseUrl::Path(e.reason))? {
                Segment::Empty | Segment::Name(_) => {}
                Segment::Dot | Segment::DotDot => {
                    return Err(InvalidBaseUrl::Path(
                        "a base URL's path cannot hold `.` or `..` segments",
                    ));
                }
            }
        }
        if prefix.contains('\\') {
            return Err(InvalidBaseUrl::Path("a backslash is not allowed in a path"));
        }
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
    /// The result is always on the base URL's origin and under its path prefix, and no
    /// segment of its path reads as `.` or `..`, neither as sent nor after the server
    /// decodes it once more (a server or proxy that percent-decodes twice). `.` and `..`
    /// segments (also percent-encoded, `%2e%2E`) are resolved, never above the prefix;
    /// what could be read as a dot segment or a separator in another way is refused:
    ///
    /// - an encoded slash or backslash (`%2f`, `%5c`), and a raw backslash;
    /// - double encoding that decodes to a dot, slash, backslash, percent sign or control
    ///   character (`%252e`, `%25%32%65`, `%%32%65`), and a `%` not followed by two hex
    ///   digits;
    /// - a dot segment with path parameters (`..;/`, `.;x`, `%2e%2e%3b`): Java servers
    ///   drop what follows `;` and read `..`;
    /// - a segment of only dots and spaces other than `.` and `..` (`...`, `.. `):
    ///   Windows servers trim trailing dots and spaces;
    /// - encoded bytes that are not UTF-8, among them overlong forms of `.` and `/`
    ///   (`%c0%ae`, `%c0%af`, `%e0%80%ae`), which old decoders read as ASCII;
    /// - characters that Unicode compatibility normalization turns into a dot, slash or
    ///   backslash, raw or encoded: full-width `．` `／` `＼` (`%ef%bc%8e`), the one- and
    ///   two-dot leaders `․` `‥`, the ellipsis `…`, small `﹒` and `﹨`;
    /// - control characters and spaces (raw or encoded), and absolute-form targets
    ///   (`https://…`).
    ///
    /// Refusing is the safe default: these never occur in a real API's paths.
    ///
    /// ```
    /// use blueprint::BaseUrl;
    ///
    /// let base = BaseUrl::parse("https://api.example.com/v2")?;
    /// assert_eq!(base.resolve("/a/%2e%2e/b")?, "https://api.example.com/v2/b");
    /// for bad in ["/%25%32%65%25%32%65/admin", "/%%32%65%%32%65/x", "/..;/x", "/%c0%ae%c0%ae/x", "/%ef%bc%8e%ef%bc%8e/x"] {
    ///     assert!(base.resolve(bad).is_err(), "{bad}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidPath`] when the path would leave the base (`..` past the prefix) or holds
    /// any of the above.
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

/// Whether the authority's port, if it names one, is a number from 1 to 65535.
fn port_ok(authority: &str) -> bool {
    let after_host = authority
        .rfind(']')
        .map_or(authority, |at| &authority[at..]);
    match after_host.rsplit_once(':') {
        None => true,
        Some((_, port)) => port.parse::<u16>().is_ok_and(|p| p != 0),
    }
}

enum Segment<'a> {
    Empty,
    Dot,
    DotDot,
    Name(&'a str),
}

/// Characters that Unicode compatibility normalization (NFKC) turns into a dot, slash or
/// backslash: a server that normalizes would read them as separators or dot segments.
const LOOKALIKES: &[char] = &[
    '\u{2024}', // ONE DOT LEADER → .
    '\u{2025}', // TWO DOT LEADER → ..
    '\u{2026}', // HORIZONTAL ELLIPSIS → ...
    '\u{FE52}', // SMALL FULL STOP → .
    '\u{FF0E}', // FULLWIDTH FULL STOP → .
    '\u{FF0F}', // FULLWIDTH SOLIDUS → /
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS → \
    '\u{FE68}', // SMALL REVERSE SOLIDUS → \
];

fn decode_dots(segment: &str) -> Result<Segment<'_>, InvalidPath> {
    match segment {
        "" => return Ok(Segment::Empty),
        "." => return Ok(Segment::Dot),
        ".." => return Ok(Segment::DotDot),
        _ => {}
    }
    // The common case: plain ASCII, nothing encoded, no parameters.
    if segment
        .bytes()
        .all(|b| b.is_ascii() && b != b'%' && b != b';')
    {
        return check_dots(segment).map(|()| Segment::Name(segment));
    }
    if segment.chars().any(|c| LOOKALIKES.contains(&c)) {
        return Err(lookalike());
    }
    let once = decode_strict(segment)?;
    if once.contains(&b'/') || once.contains(&b'\\') {
        return Err(InvalidPath::new(
            "an encoded slash or backslash is not allowed in a path",
        ));
    }
    if once.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(InvalidPath::new(
            "an encoded control character is not allowed in a path",
        ));
    }
    let Ok(text) = std::str::from_utf8(&once) else {
        return Err(InvalidPath::new(
            "encoded bytes that are not UTF-8 (such as an overlong `%c0%ae`) are not allowed in a path",
        ));
    };
    if text.chars().any(|c| LOOKALIKES.contains(&c)) {
        return Err(lookalike());
    }
    // Double encoding: what a second decoding would turn into a dot, a separator, a
    // percent sign (a third level), a control character or a non-ASCII byte.
    if has_dangerous_escape(&once) {
        return Err(InvalidPath::new(
            "a double-encoded dot, slash, percent sign or control character is not allowed in a path",
        ));
    }
    match text {
        "." => Ok(Segment::Dot),
        ".." => Ok(Segment::DotDot),
        _ => check_dots(text).map(|()| Segment::Name(segment)),
    }
}

fn lookalike() -> InvalidPath {
    InvalidPath::new(
        "a character that normalizes to a dot, slash or backslash (such as a full-width `．`) is not allowed in a path",
    )
}

/// Refuses a (decoded) segment that a server could read as a dot segment in another way:
/// `..;x` (path parameters) and only dots and spaces (`...`, `.. `).
fn check_dots(decoded: &str) -> Result<(), InvalidPath> {
    let before_params = decoded.split(';').next().unwrap_or_default();
    if decoded.contains(';') && matches!(before_params, "." | "..") {
        return Err(InvalidPath::new(
            "a dot segment with parameters (`..;`) is not allowed in a path",
        ));
    }
    if decoded.bytes().all(|b| b == b'.' || b == b' ') && decoded.len() > 2 {
        return Err(InvalidPath::new(
            "a segment of only dots and spaces is not allowed in a path",
        ));
    }
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a segment; every `%` must start an escape of two hex digits.
fn decode_strict(segment: &str) -> Result<Vec<u8>, InvalidPath> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let value = bytes
                .get(i + 1)
                .and_then(|&h| hex(h))
                .zip(bytes.get(i + 2).and_then(|&l| hex(l)));
            let Some((high, low)) = value else {
                return Err(InvalidPath::new(
                    "a `%` not followed by two hex digits is not allowed in a path",
                ));
            };
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Whether once-decoded bytes still hold an escape that a second decoding would turn into
/// a dot, slash, backslash, percent sign, semicolon, control character or non-ASCII byte.
fn has_dangerous_escape(once: &[u8]) -> bool {
    once.windows(3).any(|w| {
        w[0] == b'%'
            && hex(w[1]).zip(hex(w[2])).is_some_and(|(h, l)| {
                let b = h << 4 | l;
                matches!(b, b'.' | b'/' | b'\\' | b'%' | b';') || !(0x20..0x7f).contains(&b)
            })
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
    /// Its port is not a number from 1 to 65535.
    Port,
    /// Its path holds a dot segment or something a request path may not hold.
    Path(&'static str),
}

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidBaseUrl::Origin(e) => write!(f, "invalid base URL: {e}"),
            InvalidBaseUrl::Port => {
                f.write_str("invalid base URL: the port must be a number from 1 to 65535")
            }
            InvalidBaseUrl::Path(reason) => write!(f, "invalid base URL: {reason}"),
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
    pub(crate) fn new(reason: &'static str) -> Self {
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

    /// Issue 13: what an upstream that decodes twice, trims, drops `;` parameters or
    /// normalizes Unicode would read as `..` or `/` is refused.
    #[test]
    fn double_encoding_and_other_dot_disguises_are_refused() {
        let base = BaseUrl::parse("https://api.example.com/v2/").unwrap();
        for bad in [
            "/%25%32%65%25%32%65/admin",
            "/%%32%65%%32%65/admin",
            "/%25%32%45%25%32%45",
            "/a%25%32%66b",
            "/a%25%35%63b",
            "/%25252e%25252e/x",
            "/a%2525b",
            "/a%",
            "/a%4",
            "/a%zz",
            "/%%2e",
            "/..;/admin",
            "/.;x/y",
            "/%2e%2e;jsessionid=1/x",
            "/..%3b/x",
            "/.../x",
            "/..%20/x",
            "/%c0%ae%c0%ae/x",
            "/%c0%af",
            "/%e0%80%ae%e0%80%ae/x",
            "/%ef%bc%8e%ef%bc%8e/x",
            "/a%ef%bc%8fb",
            "/a%ef%bc%bcb",
            "/%e2%80%a5/x",
            "/\u{ff0e}\u{ff0e}/x",
        ] {
            assert!(base.resolve(bad).is_err(), "{bad:?} accepted");
        }
        // Ordinary encoded text still passes, untouched.
        for (good, want) in [
            ("/search/caf%C3%A9", "/v2/search/caf%C3%A9"),
            ("/tags/100%25", "/v2/tags/100%25"),
            ("/a%2eb", "/v2/a%2eb"),
            ("/a;b", "/v2/a;b"),
            ("/file.tar.gz", "/v2/file.tar.gz"),
            ("/a%20b", "/v2/a%20b"),
        ] {
            assert_eq!(base.resolve(good).unwrap().path(), want, "{good:?}");
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
        assert_eq!(
            BaseUrl::parse("http://[::1]:9000/x").unwrap().to_string(),
            "http://[::1]:9000/x/"
        );
        assert!(BaseUrl::parse("http://[::1]/").is_ok());
    }

    #[test]
    fn base_urls_need_a_real_port_and_no_dot_segments() {
        for bad in [
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:65536/",
            "http://127.0.0.1:0/",
            "http://[::1]:70000/",
        ] {
            assert_eq!(BaseUrl::parse(bad), Err(InvalidBaseUrl::Port), "{bad}");
        }
        for bad in [
            "https://api.example.com/api/../",
            "https://api.example.com/./api",
            "https://api.example.com/api/%2e%2e",
            "https://api.example.com/a%2fb",
            "https://api.example.com/%25%32%65%25%32%65",
        ] {
            assert!(
                matches!(BaseUrl::parse(bad), Err(InvalidBaseUrl::Path(_))),
                "{bad}"
            );
        }
        assert!(BaseUrl::parse("http://127.0.0.1:65535/api.v2/").is_ok());
    }
}
