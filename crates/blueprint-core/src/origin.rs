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
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin(Arc<Inner>);

#[derive(PartialEq, Eq, Hash)]
struct Inner {
    https: bool,
    /// Lower-cased; IPv6 literals keep their brackets.
    host: Box<str>,
    port: u16,
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
        Some(Origin(Arc::new(Inner {
            https,
            host: host.to_ascii_lowercase().into_boxed_str(),
            port: port_of(uri, https),
        })))
    }

    /// Whether an absolute URI points at this origin. A relative URI does not match.
    /// Allocates nothing.
    pub fn matches(&self, uri: &Uri) -> bool {
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
