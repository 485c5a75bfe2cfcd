//! Request paths with values from outside (ids, external ids, emails) put in safely.
//!
//! `format!("/contacts/{id}")` sends a different request when `id` holds `?` (the rest
//! becomes a query), `#` (the rest is dropped), `%` (read as an escape), a space (refused)
//! or `..` (another resource). [`ApiPath`] and [`path!`](crate::path!) percent-encode each
//! value as exactly one path segment and refuse the values no encoding can make one.

use std::fmt::{self, Display, Write as _};
use std::ops::Deref;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a path segment or a query component keeps as is: RFC 3986's unreserved
/// characters. Everything else is percent-encoded (UTF-8 bytes).
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A request path (`/contacts/6657a%3Fb`) whose segments taken from values were
/// percent-encoded one by one. It dereferences to `&str`, so it goes wherever the client
/// takes a path.
///
/// ```
/// use intercom_blueprint::ApiPath;
///
/// let id = "ada lovelace?#1";
/// let path = ApiPath::new("/contacts").segment(id)?.segment("notes")?;
/// assert_eq!(path.as_str(), "/contacts/ada%20lovelace%3F%231/notes");
/// assert!(ApiPath::new("/contacts").segment("..").is_err());
/// # Ok::<(), intercom_blueprint::InvalidSegment>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiPath(String);

impl ApiPath {
    /// Starts from a path written in the code (`"/contacts"`), taken as is: only values
    /// added with [`segment`](ApiPath::segment) are encoded.
    pub fn new(base: &str) -> Self {
        let mut path = String::with_capacity(base.len() + 32);
        if !base.starts_with('/') {
            path.push('/');
        }
        path.push_str(base.trim_end_matches('/'));
        ApiPath(path)
    }

    /// Appends `value` (its `Display` text) as one percent-encoded path segment.
    ///
    /// # Errors
    ///
    /// [`InvalidSegment`] when the text is empty, `.` or `..`, or holds `/`, `\` or a
    /// control character: the stack never sends an encoded slash, backslash or control
    /// character (servers disagree on what they mean), so no encoding of such a value
    /// could reach the resource meant.
    pub fn segment(mut self, value: impl Display) -> Result<Self, InvalidSegment> {
        let text = value.to_string();
        check(&text)?;
        self.0.push('/');
        let _ = write!(self.0, "{}", utf8_percent_encode(&text, COMPONENT));
        Ok(self)
    }

    /// Fills the `{}` placeholders of `template` with `values`, each percent-encoded as one
    /// segment; `{{` and `}}` are literal braces. What [`path!`](crate::path!) calls.
    ///
    /// ```
    /// use intercom_blueprint::ApiPath;
    ///
    /// let path = ApiPath::from_template("/contacts/{}/tags/{}", &[&"a b?", &42])?;
    /// assert_eq!(path.as_str(), "/contacts/a%20b%3F/tags/42");
    /// # Ok::<(), intercom_blueprint::InvalidSegment>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidSegment`] for a value [`segment`](ApiPath::segment) refuses, or when the
    /// template's placeholders and the values do not match one for one (a named
    /// placeholder such as `{id}` is refused: it would be filled by no value).
    pub fn from_template(template: &str, values: &[&dyn Display]) -> Result<Self, InvalidSegment> {
        let mut path = String::with_capacity(template.len() + 32);
        if !template.starts_with('/') {
            path.push('/');
        }
        let mut values = values.iter();
        let mut placeholders = 0usize;
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('{', Some('{')) | ('}', Some('}')) => {
                    chars.next();
                    path.push(c);
                }
                ('{', Some('}')) => {
                    chars.next();
                    placeholders += 1;
                    let Some(value) = values.next() else {
                        return Err(InvalidSegment::new(
                            template,
                            Reason::Count {
                                placeholders: placeholders + count_rest(chars),
                                values: placeholders - 1,
                            },
                        ));
                    };
                    let text = value.to_string();
                    check(&text)?;
                    let _ = write!(path, "{}", utf8_percent_encode(&text, COMPONENT));
                }
                ('{' | '}', _) => {
                    return Err(InvalidSegment::new(template, Reason::Placeholder));
                }
                _ => path.push(c),
            }
        }
        let left = values.len();
        if left > 0 {
            return Err(InvalidSegment::new(
                template,
                Reason::Count {
                    placeholders,
                    values: placeholders + left,
                },
            ));
        }
        Ok(ApiPath(path))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as a `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// How many `{}` are left (for the error message only).
fn count_rest(chars: std::iter::Peekable<std::str::Chars<'_>>) -> usize {
    chars.collect::<String>().matches("{}").count()
}

fn check(text: &str) -> Result<(), InvalidSegment> {
    let reason = if text.is_empty() {
        Reason::Empty
    } else if text == "." || text == ".." {
        Reason::Dots
    } else if text.contains('/') || text.contains('\\') {
        Reason::Slash
    } else if text.chars().any(char::is_control) {
        Reason::Control
    } else {
        return Ok(());
    };
    Err(InvalidSegment::new(text, reason))
}

impl Deref for ApiPath {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ApiPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Display for ApiPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ApiPath> for String {
    fn from(path: ApiPath) -> Self {
        path.0
    }
}

/// A value cannot be one path segment, or a [`path!`](crate::path!) template does not
/// match its values. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSegment {
    /// The value or template at fault, shortened.
    text: String,
    reason: Reason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Empty,
    Dots,
    Slash,
    Control,
    Placeholder,
    Count { placeholders: usize, values: usize },
}

impl InvalidSegment {
    fn new(text: &str, reason: Reason) -> Self {
        // The value may be long, or hold control characters: keep a short, printable start.
        let text = text
            .chars()
            .take(64)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        InvalidSegment { text, reason }
    }
}

impl Display for InvalidSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.text;
        match self.reason {
            Reason::Empty => f.write_str("an empty value cannot be a path segment"),
            Reason::Dots => write!(
                f,
                "`{text}` cannot be a path segment: it would name another resource"
            ),
            Reason::Slash => write!(
                f,
                "`{text}` cannot be a path segment: it holds a slash or backslash, which \
                 the stack never sends encoded"
            ),
            Reason::Control => write!(
                f,
                "`{text}` cannot be a path segment: it holds a control character"
            ),
            Reason::Placeholder => write!(
                f,
                "the path template `{text}` may hold only `{{}}` placeholders (`{{{{` and \
                 `}}}}` for braces)"
            ),
            Reason::Count {
                placeholders,
                values,
            } => write!(
                f,
                "the path template `{text}` has {placeholders} `{{}}` placeholder(s) for \
                 {values} value(s)"
            ),
        }
    }
}

impl std::error::Error for InvalidSegment {}

/// A request path from a template, each value percent-encoded as one segment:
/// `path!("/contacts/{}/notes", id)` is `Result<ApiPath, InvalidSegment>`.
///
/// Use it where `format!` would build a path from a value that comes from outside. The
/// template is taken as written; only `{}` placeholders are allowed (checked against the
/// values when compiling, and again when running).
///
/// ```
/// use intercom_blueprint::path;
///
/// let id = "6657add46abd0167d9419cd2";
/// assert_eq!(path!("/contacts/{}", id)?.as_str(), "/contacts/6657add46abd0167d9419cd2");
///
/// let external_id = "crm 42?source=import#x";
/// assert_eq!(
///     path!("/contacts/find_by_external_id/{}", external_id)?.as_str(),
///     "/contacts/find_by_external_id/crm%2042%3Fsource%3Dimport%23x"
/// );
/// assert!(path!("/contacts/{}", "..").is_err());
/// # Ok::<(), intercom_blueprint::InvalidSegment>(())
/// ```
///
/// With the client, `?` turns the error into an
/// [`IntercomError::InvalidRequest`](crate::IntercomError::InvalidRequest):
///
/// ```no_run
/// use intercom_blueprint::{path, IntercomClient, IntercomError};
/// use serde_json::Value;
///
/// async fn contact(intercom: &IntercomClient, id: &str) -> Result<Value, IntercomError> {
///     intercom.get(&path!("/contacts/{}", id)?).await
/// }
/// ```
#[macro_export]
macro_rules! path {
    ($template:literal $(, $value:expr)* $(,)?) => {{
        // Never run: makes the compiler check the placeholders against the values.
        if false {
            let _ = ::std::format!($template $(, $value)*);
        }
        $crate::ApiPath::from_template(
            $template,
            &[$(&$value as &dyn ::core::fmt::Display),*],
        )
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_becomes_exactly_one_encoded_segment() {
        let cases = [
            ("abc-123_X.y~z", "abc-123_X.y~z"),
            ("a?b", "a%3Fb"),
            ("a#b", "a%23b"),
            ("100%", "100%25"),
            ("%2e%2e", "%252e%252e"),
            ("two words", "two%20words"),
            ("a+b=c&d", "a%2Bb%3Dc%26d"),
            ("ada@example.com", "ada%40example.com"),
            ("zoë", "zo%C3%AB"),
            ("...", "..."),
        ];
        for (value, encoded) in cases {
            let path = ApiPath::new("/contacts").segment(value).unwrap();
            assert_eq!(path.as_str(), format!("/contacts/{encoded}"), "{value:?}");
            let templated = crate::path!("/contacts/{}/notes", value).unwrap();
            assert_eq!(
                templated.as_str(),
                format!("/contacts/{encoded}/notes"),
                "{value:?}"
            );
        }
    }

    #[test]
    fn values_no_encoding_can_make_one_segment_are_refused() {
        for (value, says) in [
            ("", "empty"),
            (".", "another resource"),
            ("..", "another resource"),
            ("a/b", "slash"),
            ("a\\b", "slash"),
            ("a\nb", "control"),
            ("a\u{0}b", "control"),
        ] {
            let error = ApiPath::new("/contacts").segment(value).unwrap_err();
            assert!(error.to_string().contains(says), "{value:?}: {error}");
            let error = crate::path!("/contacts/{}", value).unwrap_err();
            assert!(error.to_string().contains(says), "{value:?}: {error}");
        }
    }

    #[test]
    fn templates_must_match_their_values() {
        let values: [&dyn Display; 1] = [&"x"];
        for (template, values, says) in [
            (
                "/contacts/{}/{}",
                &values[..],
                "2 `{}` placeholder(s) for 1 value(s)",
            ),
            (
                "/contacts",
                &values[..],
                "0 `{}` placeholder(s) for 1 value(s)",
            ),
            ("/contacts/{id}", &values[..], "only `{}` placeholders"),
            ("/contacts/{", &values[..], "only `{}` placeholders"),
            (
                "/contacts/{}",
                &[][..],
                "1 `{}` placeholder(s) for 0 value(s)",
            ),
        ] {
            let error = ApiPath::from_template(template, values).unwrap_err();
            assert!(error.to_string().contains(says), "{template}: {error}");
        }
        let braces = ApiPath::from_template("/a{{b}}/{}", &[&1]).unwrap();
        assert_eq!(braces.as_str(), "/a{b}/1");
        assert_eq!(ApiPath::new("contacts/").as_str(), "/contacts");
    }
}
