//! `${VAR}` substitution in values.

/// A value after substitution.
pub(crate) struct Expanded {
    pub(crate) text: String,
    /// Whether any part came from an environment variable (such a value is never quoted in
    /// an error or shown in a summary where it could be a secret).
    pub(crate) from_env: bool,
}

/// Why a value could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VarError {
    /// `${` with no `}` after it.
    Unclosed,
    /// `${...}` whose inside is not a variable name.
    BadName,
    /// The variable is not set.
    Unset(String),
}

/// Replaces each `${NAME}` with the variable's value; `$${` is a literal `${`. A `$` not
/// followed by `{` stays as it is, and so does a connection parameter
/// (`${connection.NAME}`). Substituted text is not expanded again.
pub(crate) fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, VarError> {
    if !text.contains('$') {
        return Ok(Expanded {
            text: text.to_owned(),
            from_env: false,
        });
    }
    let mut out = String::with_capacity(text.len());
    let mut from_env = false;
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body.find('}').ok_or(VarError::Unclosed)?;
            let name = &body[..end];
            if name.starts_with("connection.") {
                // A connection parameter, filled in per connection: kept as written.
                out.push_str(&after[..end + 3]);
                rest = &body[end + 1..];
                continue;
            }
            if !is_variable_name(name) {
                return Err(VarError::BadName);
            }
            let value = env(name).ok_or_else(|| VarError::Unset(name.to_owned()))?;
            out.push_str(&value);
            from_env = true;
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Expanded {
        text: out,
        from_env,
    })
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("${A}".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<(String, bool), VarError> {
        expand(text, &env).map(|e| (e.text, e.from_env))
    }

    #[test]
    fn substitutes_escapes_and_leaves_lone_dollars() {
        assert_eq!(run("x${A}y${A}").unwrap(), ("xalphayalpha".into(), true));
        assert_eq!(run("$${A}").unwrap(), ("${A}".into(), false));
        // Read left to right: a lone `$`, then the escape.
        assert_eq!(run("$$${A}").unwrap(), ("$${A}".into(), false));
        assert_eq!(
            run("cost $5, $A, $").unwrap(),
            ("cost $5, $A, $".into(), false)
        );
        assert_eq!(run("${EMPTY}").unwrap(), (String::new(), true));
        // Substituted text is not expanded again.
        assert_eq!(run("${DOLLAR}").unwrap(), ("${A}".into(), true));
        assert_eq!(run("plain").unwrap(), ("plain".into(), false));
        assert_eq!(
            run("https://${connection.sub}.x/${A}").unwrap(),
            ("https://${connection.sub}.x/alpha".into(), true)
        );
    }

    #[test]
    fn unclosed_bad_and_unset_variables_are_errors() {
        assert_eq!(run("${A").unwrap_err(), VarError::Unclosed);
        assert_eq!(run("${}").unwrap_err(), VarError::BadName);
        assert_eq!(run("${1A}").unwrap_err(), VarError::BadName);
        assert_eq!(run("${A:-x}").unwrap_err(), VarError::BadName);
        assert_eq!(run("a${NOPE}").unwrap_err(), VarError::Unset("NOPE".into()));
    }
}
