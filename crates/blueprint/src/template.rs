//! `${connection.NAME}` placeholders: where they may stand, and filling them in.
//!
//! A placeholder may stand only where its value cannot change the shape of a URL's host:
//! as a whole DNS label followed by at least two literal labels (so the registrable domain
//! stays the API's), or as a whole path segment; in header values, anywhere. The values
//! are checked again when filled in ([`fits`]).

use std::fmt;

use crate::BlueprintError;

const OPEN: &str = "${connection.";

/// Where a value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// A DNS label of a URL's host.
    Host,
    /// A segment of a URL's path.
    Path,
    /// A header value.
    Text,
}

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateError {
    /// A `${connection.` without its `}`, or without a usable name.
    Malformed,
    /// The placeholder names no declared parameter.
    Undeclared(String),
    /// The placeholder stands where its value could change the URL's shape.
    Misplaced(&'static str),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Malformed => f.write_str(
                "a `${connection.` placeholder is not closed or names no parameter (write `${connection.NAME}`)",
            ),
            TemplateError::Undeclared(name) => write!(
                f,
                "`${{connection.{name}}}` names no declared connection parameter (declare it under `connection_params`)"
            ),
            TemplateError::Misplaced(why) => write!(
                f,
                "a `${{connection.…}}` placeholder cannot stand {why}: only as a whole DNS label before at least two literal ones, or as a whole path segment"
            ),
        }
    }
}

/// Whether the text holds a `${connection.` placeholder.
pub(crate) fn has_placeholder(text: &str) -> bool {
    text.contains(OPEN)
}

/// Letters, digits and `_`, not starting with a digit.
pub(crate) fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// The placeholders of a text, in order: (start, end, name).
fn placeholders(text: &str) -> Result<Vec<(usize, usize, &str)>, TemplateError> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(OPEN) {
        let start = from + at;
        let body = &text[start + OPEN.len()..];
        let close = body.find('}').ok_or(TemplateError::Malformed)?;
        let name = &body[..close];
        if !is_param_name(name) {
            return Err(TemplateError::Malformed);
        }
        let end = start + OPEN.len() + close + 1;
        found.push((start, end, name));
        from = end;
    }
    Ok(found)
}

/// Checks that every placeholder of a text names a declared parameter.
pub(crate) fn check_text(text: &str, declared: &dyn Fn(&str) -> bool) -> Result<(), TemplateError> {
    for (_, _, name) in placeholders(text)? {
        if !declared(name) {
            return Err(TemplateError::Undeclared(name.to_owned()));
        }
    }
    Ok(())
}

/// A URL template cut where placeholders may stand: each piece is literal text, or a
/// placeholder in the host or the path.
enum Piece<'a> {
    Literal(String),
    Param(&'a str, Part),
    /// Where the host ends.
    HostEnd,
}

/// Stands for placeholder `i` while the URL is cut (no URL holds a NUL).
const MARK: char = '\0';

fn pieces(url: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let found = placeholders(url)?;
    if url.contains(MARK) {
        return Err(TemplateError::Malformed);
    }
    // Each placeholder becomes `\0i\0`, which holds none of `.:/@?#`.
    let mut masked = String::with_capacity(url.len());
    let mut from = 0;
    for (i, (start, end, _)) in found.iter().enumerate() {
        masked.push_str(&url[from..*start]);
        masked.push(MARK);
        masked.push_str(&i.to_string());
        masked.push(MARK);
        from = *end;
    }
    masked.push_str(&url[from..]);
    let marked = |text: &str| text.contains(MARK);
    // The name of a part that is exactly one placeholder.
    let whole = |part: &str| -> Option<&str> {
        let index = part.strip_prefix(MARK)?.strip_suffix(MARK)?;
        let i: usize = index.parse().ok()?;
        found.get(i).map(|(_, _, name)| *name)
    };

    let Some((scheme, rest)) = masked.split_once("://") else {
        return Err(TemplateError::Misplaced("in a URL without `scheme://`"));
    };
    if marked(scheme) {
        return Err(TemplateError::Misplaced("in the scheme"));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, after) = tail.split_at(path_end);
    if marked(after) {
        return Err(TemplateError::Misplaced("in the query or fragment"));
    }
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    if marked(&authority[..host_start]) {
        return Err(TemplateError::Misplaced("in user info"));
    }
    let host_and_port = &authority[host_start..];
    let (host, port) = if host_and_port.starts_with('[') {
        match host_and_port.find(']') {
            Some(end) => host_and_port.split_at(end + 1),
            None => (host_and_port, ""),
        }
    } else {
        match host_and_port.find(':') {
            Some(at) => host_and_port.split_at(at),
            None => (host_and_port, ""),
        }
    };
    if host.starts_with('[') && marked(host) {
        return Err(TemplateError::Misplaced("in an IP address"));
    }
    if marked(port) {
        return Err(TemplateError::Misplaced("in the port"));
    }
    let mut out = vec![Piece::Literal(format!(
        "{scheme}://{}",
        &authority[..host_start]
    ))];
    let labels: Vec<&str> = host.split('.').collect();
    if let Some(last) = labels.iter().rposition(|l| marked(l)) {
        if labels.len() < last + 3 {
            return Err(TemplateError::Misplaced(
                "in the domain (at least two literal labels must follow it)",
            ));
        }
    }
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(Piece::Literal(".".to_owned()));
        }
        if marked(label) {
            let name = whole(label).ok_or(TemplateError::Misplaced("as part of a DNS label"))?;
            out.push(Piece::Param(name, Part::Host));
        } else {
            out.push(Piece::Literal((*label).to_owned()));
        }
    }
    out.push(Piece::HostEnd);
    out.push(Piece::Literal(port.to_owned()));
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push(Piece::Literal("/".to_owned()));
        }
        if marked(segment) {
            let name =
                whole(segment).ok_or(TemplateError::Misplaced("as part of a path segment"))?;
            out.push(Piece::Param(name, Part::Path));
        } else {
            out.push(Piece::Literal(segment.to_owned()));
        }
    }
    out.push(Piece::Literal(after.to_owned()));
    Ok(out)
}

/// Checks a URL template; gives the URL with each placeholder replaced by a stand-in: its
/// name, and the host then ends in `.invalid` (a name that never resolves).
pub(crate) fn url_stand_in(
    url: &str,
    declared: &dyn Fn(&str) -> bool,
) -> Result<String, TemplateError> {
    check_text(url, declared)?;
    let mut out = String::with_capacity(url.len() + 8);
    let mut in_host = false;
    for piece in pieces(url)? {
        match piece {
            Piece::Param(name, part) => {
                in_host |= part == Part::Host;
                out.push_str(&name.replace('_', "-").to_ascii_lowercase());
            }
            Piece::Literal(text) => out.push_str(&text),
            Piece::HostEnd if in_host => out.push_str(".invalid"),
            Piece::HostEnd => {}
        }
    }
    Ok(out)
}

/// The URL with each placeholder replaced by `value(name, part)`.
pub(crate) fn render_url(
    url: &str,
    value: &dyn Fn(&str, Part) -> Result<String, BlueprintError>,
) -> Result<String, BlueprintError> {
    if !has_placeholder(url) {
        return Ok(url.to_owned());
    }
    let mut out = String::with_capacity(url.len());
    for piece in pieces(url).map_err(|e| BlueprintError::template("base_url", &e))? {
        match piece {
            Piece::Literal(text) => out.push_str(&text),
            Piece::Param(name, part) => out.push_str(&value(name, part)?),
            Piece::HostEnd => {}
        }
    }
    Ok(out)
}

/// The text with each placeholder replaced by `value(name, Part::Text)`.
pub(crate) fn render_text(
    text: &str,
    value: &dyn Fn(&str, Part) -> Result<String, BlueprintError>,
) -> Result<String, BlueprintError> {
    let found = placeholders(text).map_err(|e| BlueprintError::template("headers", &e))?;
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for (start, end, name) in found {
        out.push_str(&text[from..start]);
        out.push_str(&value(name, Part::Text)?);
        from = end;
    }
    out.push_str(&text[from..]);
    Ok(out)
}

/// The placeholders of a URL template and where each stands; none for a template that is
/// not one (templates are checked when set).
pub(crate) fn url_params(url: &str) -> Vec<(&str, Part)> {
    pieces(url)
        .map(|pieces| {
            pieces
                .into_iter()
                .filter_map(|piece| match piece {
                    Piece::Param(name, part) => Some((name, part)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a header value template names the parameter `name`.
pub(crate) fn text_names(text: &str, name: &str) -> bool {
    placeholders(text).is_ok_and(|found| found.iter().any(|(_, _, n)| *n == name))
}

/// Whether a connection's value may go where the placeholder stands.
pub(crate) fn fits(value: &str, part: Part) -> bool {
    match part {
        Part::Host => {
            (1..=63).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !value.starts_with('-')
                && !value.ends_with('-')
        }
        Part::Path => {
            !value.is_empty()
                && value != "."
                && value != ".."
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        }
        Part::Text => value.bytes().all(|b| (0x20..0x7f).contains(&b)),
    }
}
