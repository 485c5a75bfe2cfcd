//! `GET /`: the connections page, a small HTML page with its script and style sheet
//! embedded in the binary (no build step).
//!
//! The page holds nothing: it loads without the secret key, asks for it once, keeps it in
//! the tab's `sessionStorage` only and sends it as `Authorization: Bearer …` on every call
//! to the JSON API (`GET /integrations`, `GET /connections`, `PUT` and `DELETE
//! /connections/{integration}/{id}`, `POST /connect/sessions`). No cookie is ever set, so
//! there is nothing for another site to ride on (no CSRF).
//!
//! Every value from outside (ids, errors, scopes, times) is put in the page with
//! `textContent`, never parsed as HTML. The answers carry a strict
//! `Content-Security-Policy` ([`CONTENT_SECURITY_POLICY`]: scripts only from this origin,
//! no inline script, Trusted Types required so that a string can never be assigned to an
//! HTML sink, no framing, no form submission), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, header};

const INDEX_HTML: &str = include_str!("assets/index.html");
const PAGE_JS: &str = include_str!("assets/page.js");
const PAGE_CSS: &str = include_str!("assets/page.css");

/// The policy of the page and its assets. `require-trusted-types-for 'script'` with no
/// policy allowed makes `innerHTML = string` (and every other HTML sink) throw in the
/// browsers that enforce it; `form-action 'none'` keeps a form from being submitted as a
/// plain GET (a token in a URL) should the script not run.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// `GET /`.
pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/page.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

/// `GET /assets/page.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 7] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HTML loads its script from a file and has none of its own (the policy would
    /// refuse it anyway; this says why the page broke).
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = INDEX_HTML.to_ascii_lowercase();
        let scripts: Vec<&str> = html
            .match_indices("<script")
            .map(|(i, _)| &html[i..])
            .collect();
        assert_eq!(scripts.len(), 1, "one script tag");
        assert!(
            scripts[0].starts_with("<script src=\"assets/page.js\" defer></script>"),
            "{}",
            &scripts[0][..60.min(scripts[0].len())]
        );
        for inline in [
            "<style",
            " style=",
            " onclick",
            " onload",
            " onsubmit",
            "javascript:",
        ] {
            assert!(!html.contains(inline), "inline `{inline}` in index.html");
        }
    }

    /// The script never parses data as HTML and never keeps the key anywhere but
    /// `sessionStorage`.
    #[test]
    fn the_script_uses_no_html_sink_and_no_lasting_storage() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "localStorage",
            "document.cookie",
            "indexedDB",
        ] {
            assert!(!PAGE_JS.contains(sink), "page.js uses `{sink}`");
        }
        assert!(PAGE_JS.contains("sessionStorage"));
        assert!(PAGE_JS.contains("textContent"));
    }

    #[test]
    fn every_answer_carries_the_headers() {
        for response in [
            asset("text/html; charset=utf-8", INDEX_HTML),
            asset("text/javascript; charset=utf-8", PAGE_JS),
        ] {
            let headers = response.headers();
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        }
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self';"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
