//! The path resolver, on any target: the result stays on the base URL's origin and under
//! its path, and no segment of its path reads `..` (or `.`), neither as sent nor after one
//! more percent-decoding; otherwise the target is refused.
#![no_main]

use blueprint::BaseUrl;
use libfuzzer_sys::fuzz_target;

const BASES: &[&str] = &[
    "https://api.example.com",
    "https://api.example.com/v2",
    "http://127.0.0.1:9000/a/b/",
];

/// Percent-decodes leniently (as a careless server would): a `%` without two hex digits
/// stays as it is.
fn decode(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' && i + 2 < text.len() {
            if let (Some(h), Some(l)) = (hex(text[i + 1]), hex(text[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fn no_dot_segments(path: &[u8], what: &str, target: &str) {
    for segment in path.split(|&b| b == b'/') {
        assert!(
            segment != b".." && segment != b".",
            "{what} holds a dot segment for {target:?}: {:?}",
            String::from_utf8_lossy(path)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [choice, rest @ ..] = data else { return };
    let Ok(target) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(base) = BaseUrl::parse(BASES[usize::from(*choice) % BASES.len()]) else {
        return;
    };
    let Ok(uri) = base.resolve(target) else {
        return;
    };
    assert_eq!(uri.scheme_str(), Some(base.origin().scheme()), "{target:?}");
    let Some(host) = uri.host() else {
        panic!("no host for {target:?}")
    };
    assert!(
        host.eq_ignore_ascii_case(base.origin().host()),
        "{target:?} -> {uri}"
    );
    assert_eq!(
        uri.port_u16()
            .unwrap_or(if base.origin().scheme() == "https" {
                443
            } else {
                80
            }),
        base.origin().port(),
        "{target:?} -> {uri}"
    );
    let path = uri.path();
    let prefix = base.prefix();
    assert!(
        path.starts_with(prefix) && path[prefix.len()..].starts_with('/'),
        "{target:?} -> {uri} leaves {prefix:?}"
    );
    no_dot_segments(path.as_bytes(), "the path", target);
    // A server that decodes the path once, then resolves dot segments, or decodes twice.
    let once = decode(path.as_bytes());
    assert!(!once.contains(&b'\\'), "{target:?} -> {uri}");
    no_dot_segments(&once, "the once-decoded path", target);
    let twice = decode(&once);
    no_dot_segments(&twice, "the twice-decoded path", target);
});
