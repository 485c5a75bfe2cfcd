use std::fmt;
use std::sync::Arc;

use http::Uri;

/// The scheme, host and port a request is sent to (RFC 6454), the unit of trust for
/// credentials and of rate-limit budgets.
///
/// Hosts compare case-insensitively and a missing port means the scheme's default, so
/// `https://API.intercom.io` and `https://api.intercom.io:443/` are the same origin.
///
/// ```
/// use blueprint_core::Origin;
///
/// let origin = Origin::parse("https://api.intercom.io/")?;
/// assert!(origin.matches(&"https://API.intercom.io:443/contacts".parse()?));
/// assert!(!origin.matches(&"http://api.intercom.io/contacts".parse()?));
/// assert_eq!(origin.to_string(), "https://api.intercom.io");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Origin(Arc<Inner>);

struct Inner {
    https: bool,
    /// Lower-cased; IPv6 literals keep their brackets.
    host: Box<str>,
    port: u16,
    /// `host[:port]` as a URI of this origin most often writes it (the port only when it
    /// is not the scheme's default): a URI whose authority is exactly this matches without
    /// a case-insensitive compare or a port parse.
    authority: Box<str>,
    /// A hash of the three fields above, made once (not keyed: origins come from
    /// configuration, not from callers), so that hashing an origin is hashing one word.
    fingerprint: u64,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.fingerprint == other.0.fingerprint
                && self.0.https == other.0.https
                && self.0.port == other.0.port
                && self.0.host == other.0.host)
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.fingerprint);
    }
}

impl Inner {
    fn new(https: bool, host: &str, port: u16) -> Self {
        let host = host.to_ascii_lowercase().into_boxed_str();
        let default_port = if https { 443 } else { 80 };
        let authority = if port == default_port {
            host.clone()
        } else {
            format!("{host}:{port}").into_boxed_str()
        };
        // FNV-1a over the fields.
        let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in host
            .bytes()
            .chain(port.to_le_bytes())
            .chain([u8::from(https)])
        {
            fingerprint ^= u64::from(byte);
            fingerprint = fingerprint.wrapping_mul(0x0100_0000_01b3);
        }
        Inner {
            https,
            host,
            port,
            authority,
            fingerprint,
        }
    }
}

impl Origin {
    /// Parses an absolute `http` or `https` URL; anything after the authority is ignored.
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] when the text is not an absolute `http(s)` URL with a host.
    pub fn parse(url: &str) -> Result<Self, InvalidOrigin> {
        let uri: Uri = url
            .parse()
            .map_err(|_| InvalidOrigin::new(url, "it is not a URL"))?;
        Origin::from_uri(&uri)
            .ok_or_else(|| InvalidOrigin::new(url, "it needs an http or https scheme and a host"))
    }

    /// The origin of an absolute `http(s)` URI; `None` for a relative one or another scheme.
    pub fn from_uri(uri: &Uri) -> Option<Self> {
        let https = https_of(uri)?;
        let host = uri.host().filter(|h| !h.is_empty())?;
        Some(Origin(Arc::new(Inner::new(
            https,
            host,
            port_of(uri, https),
        ))))
    }

    /// Whether an absolute URI points at this origin. A relative URI does not match.
    /// Allocates nothing.
    pub fn matches(&self, uri: &Uri) -> bool {
        // The common case: a URI built from this origin, written as it writes itself.
        let scheme_is = |scheme: &http::uri::Scheme| {
            if self.0.https {
                *scheme == http::uri::Scheme::HTTPS
            } else {
                *scheme == http::uri::Scheme::HTTP
            }
        };
        if let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) {
            if scheme_is(scheme) && authority.as_str() == &*self.0.authority {
                return true;
            }
        }
        self.matches_slowly(uri)
    }

    /// [`Origin::matches`] without its fast path.
    fn matches_slowly(&self, uri: &Uri) -> bool {
        let Some(https) = https_of(uri) else {
            return false;
        };
        https == self.0.https
            && uri
                .host()
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.0.host))
            && port_of(uri, https) == self.0.port
    }

    /// `"https"` or `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.0.https { "https" } else { "http" }
    }

    /// The host, lower-cased.
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// The port, the scheme's default when the URL gave none.
    pub fn port(&self) -> u16 {
        self.0.port
    }
}

fn https_of(uri: &Uri) -> Option<bool> {
    match uri.scheme_str()? {
        s if s.eq_ignore_ascii_case("https") => Some(true),
        s if s.eq_ignore_ascii_case("http") => Some(false),
        _ => None,
    }
}

fn port_of(uri: &Uri, https: bool) -> u16 {
    uri.port_u16().unwrap_or(if https { 443 } else { 80 })
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default_port = if self.0.https { 443 } else { 80 };
        write!(f, "{}://{}", self.scheme(), self.0.host)?;
        if self.0.port != default_port {
            write!(f, ":{}", self.0.port)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

impl std::str::FromStr for Origin {
    type Err = InvalidOrigin;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Origin::parse(s)
    }
}

/// Text that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrigin {
    input: String,
    reason: &'static str,
}

impl InvalidOrigin {
    fn new(input: &str, reason: &'static str) -> Self {
        // Keep only what is before any `@`-userinfo or query, in case a secret was pasted in.
        let shown: String = input
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        InvalidOrigin {
            input: shown,
            reason,
        }
    }
}

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not an origin: {}", self.input, self.reason)
    }
}

impl std::error::Error for InvalidOrigin {}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn default_ports_and_case_are_normalised() {
        let o = Origin::parse("https://Api.Example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.port(), 443);
        assert_eq!(o.host(), "api.example.com");
        assert!(o.matches(&uri("HTTPS://api.example.COM:443/x?y")));
        assert!(!o.matches(&uri("https://api.example.com:8443/")));
        assert!(!o.matches(&uri("https://api.example.com.evil.net/")));
        assert!(!o.matches(&uri("/relative")));
        assert_eq!(
            Origin::parse("http://127.0.0.1:9000/base/").map(|o| o.to_string()),
            Ok("http://127.0.0.1:9000".to_owned())
        );
    }

    proptest::proptest! {
        #[test]
        fn the_fast_match_agrees_with_the_slow_one(
            scheme in "(http|https|HTTP)",
            host in "(api\\.example\\.com|API\\.Example\\.com|127\\.0\\.0\\.1|evil\\.net)",
            port in proptest::option::of(proptest::sample::select(vec![80u16, 443, 8080])),
            of_scheme in "(http|https)",
            of_port in proptest::option::of(proptest::sample::select(vec![80u16, 443, 8080])),
        ) {
            let text = |scheme: &str, port: Option<u16>| match port {
                Some(p) => format!("{scheme}://{host}:{p}/x"),
                None => format!("{scheme}://{host}/x"),
            };
            let origin = Origin::parse(&text(&of_scheme, of_port)).unwrap();
            let uri: Uri = text(&scheme, port).parse().unwrap();
            proptest::prop_assert_eq!(origin.matches(&uri), origin.matches_slowly(&uri));
        }
    }

    #[test]
    fn equal_origins_hash_alike_and_differ_by_each_field() {
        use std::collections::HashSet;
        let a = Origin::parse("https://api.example.com").unwrap();
        let b = Origin::parse("https://API.example.com:443/x").unwrap();
        assert_eq!(a, b);
        let set: HashSet<Origin> = [a.clone(), b].into_iter().collect();
        assert_eq!(set.len(), 1);
        for other in [
            "http://api.example.com",
            "https://api.example.com:8443",
            "https://api.example.org",
        ] {
            assert_ne!(a, Origin::parse(other).unwrap(), "{other}");
        }
    }

    #[test]
    fn non_origins_are_refused_without_echoing_userinfo() {
        for bad in ["", "/path", "ftp://x", "not a url", "https://"] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = Origin::parse("ftp://user:hunter2@host/")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| !e.contains("hunter2")));
    }
}
