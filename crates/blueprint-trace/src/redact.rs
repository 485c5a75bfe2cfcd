use std::fmt::{self, Write};

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, HeaderName};

pub(crate) const REDACTED: &str = "[redacted]";

/// Which header values and query parameters may be shown.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redaction {
    /// Header names whose values are hidden on top of the built-in ones.
    pub(crate) extra_headers: Vec<HeaderName>,
    /// Query parameters whose values may be shown; empty = leave the query out.
    pub(crate) query_params: Vec<String>,
}

impl Redaction {
    fn hides(&self, name: &HeaderName) -> bool {
        name == AUTHORIZATION
            || name == PROXY_AUTHORIZATION
            || name == COOKIE
            || name == SET_COOKIE
            || self.extra_headers.contains(name)
    }

    /// The headers as `name: value` pairs, hidden values as `[redacted]`.
    pub(crate) fn headers(&self, headers: &HeaderMap) -> String {
        let mut out = String::new();
        for (name, value) in headers {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let shown = if value.is_sensitive() || self.hides(name) {
                REDACTED
            } else {
                value.to_str().unwrap_or("[not text]")
            };
            let _ = write!(out, "{name}: {shown}");
        }
        out
    }

    /// The query with only the listed parameters' values; `None` when the query is to be
    /// left out (no parameters listed, or no query).
    pub(crate) fn query(&self, query: Option<&str>) -> Option<String> {
        let query = query.filter(|q| !q.is_empty())?;
        if self.query_params.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(query.len());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            if !out.is_empty() {
                out.push('&');
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if self.query_params.iter().any(|p| p == key) {
                out.push_str(key);
                out.push('=');
                out.push_str(value);
            } else {
                out.push_str(key);
                out.push('=');
                out.push_str(REDACTED);
            }
        }
        Some(out)
    }
}

/// Shows a `Display` value lazily in a `tracing` field.
pub(crate) struct Shown<'a>(pub(crate) &'a dyn fmt::Display);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn secrets_in_headers_are_hidden() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
        headers.insert(COOKIE, HeaderValue::from_static("sid=cookie-secret"));
        headers.insert("x-api-key", HeaderValue::from_static("key-secret"));
        let mut marked = HeaderValue::from_static("marked-secret");
        marked.set_sensitive(true);
        headers.insert("x-marked", marked);
        headers.insert("accept", HeaderValue::from_static("application/json"));

        let redaction = Redaction {
            extra_headers: vec![HeaderName::from_static("x-api-key")],
            ..Redaction::default()
        };
        let shown = redaction.headers(&headers);
        for secret in ["tok", "cookie-secret", "key-secret", "marked-secret"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("accept: application/json"), "{shown}");
        assert!(shown.contains("authorization: [redacted]"), "{shown}");
    }

    #[test]
    fn query_is_left_out_unless_parameters_are_listed() {
        let none = Redaction::default();
        assert_eq!(none.query(Some("token=abc&page=2")), None);

        let some = Redaction {
            query_params: vec!["page".into()],
            ..Redaction::default()
        };
        assert_eq!(
            some.query(Some("token=abc&page=2&flag")),
            Some("token=[redacted]&page=2&flag=[redacted]".into())
        );
        assert_eq!(some.query(None), None);
    }
}
