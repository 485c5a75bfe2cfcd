//! What can be wrong with an `integrations.yaml`.

use std::fmt;
use std::io;

use super::yaml::Pos;

/// What kind of mistake a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Io,
    /// The file is not valid YAML.
    Syntax,
    /// A key the format does not know (often a typo).
    UnknownKey,
    /// A key given twice in one mapping.
    DuplicateKey,
    /// A required key is absent.
    MissingKey,
    /// `extends_blueprint` names no registered blueprint.
    UnknownBlueprint,
    /// A value of the wrong type, or one that cannot work (a bad URL, header or method).
    InvalidValue,
    /// A `${VAR}` names an environment variable that is not set.
    UnsetVariable,
    /// A `${` without its `}`, or a `${...}` that holds no variable name.
    BadVariable,
    /// The file, or something in it, is larger than the loader takes (a bound on the size
    /// of the file, of a mapping, a list, a value, the nesting, or the headers).
    TooLarge,
    /// Blueprints extend one another in a circle.
    ExtendsCycle,
}

/// A mistake in an `integrations.yaml`: what is wrong, the key (such as
/// `integrations.intercom.base_url`), the file, line and column, and what to do about it.
///
/// The message never holds a secret: the value of `oauth_client_secret`, of a header, or of
/// anything that came from an environment variable is never quoted.
#[derive(Debug)]
pub struct ConfigError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ConfigErrorKind,
    file: String,
    pos: Option<Pos>,
    key: Option<String>,
    message: String,
    hint: Option<String>,
    variable: Option<String>,
    source: Option<io::Error>,
}

impl ConfigError {
    pub(crate) fn new(
        kind: ConfigErrorKind,
        file: &str,
        pos: Pos,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let key: String = key.into();
        ConfigError(Box::new(Inner {
            kind,
            file: file.to_owned(),
            pos: Some(pos),
            key: (!key.is_empty()).then_some(key),
            message: message.into(),
            hint: None,
            variable: None,
            source: None,
        }))
    }

    pub(crate) fn io(file: &str, error: io::Error) -> Self {
        ConfigError(Box::new(Inner {
            kind: ConfigErrorKind::Io,
            file: file.to_owned(),
            pos: None,
            key: None,
            message: format!("cannot read the file: {error}"),
            hint: Some("check the path and that the file is readable".to_owned()),
            variable: None,
            source: Some(error),
        }))
    }

    /// Adds what to do about it.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    pub(crate) fn with_variable(mut self, name: &str) -> Self {
        self.0.variable = Some(name.to_owned());
        self
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.0.kind
    }

    /// The file, as it was named to the loader.
    pub fn file(&self) -> &str {
        &self.0.file
    }

    /// The line (from 1), when the mistake is inside the file.
    pub fn line(&self) -> Option<usize> {
        self.0.pos.map(|p| p.line)
    }

    /// The column (from 1, in characters), when the mistake is inside the file.
    pub fn column(&self) -> Option<usize> {
        self.0.pos.map(|p| p.column)
    }

    /// The key at fault, dotted from the top (`integrations.intercom.retry.max_attempts`;
    /// list items as `[0]`).
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// For [`ConfigErrorKind::UnsetVariable`]: the variable's name.
    pub fn variable(&self) -> Option<&str> {
        self.0.variable.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        f.write_str(&inner.file)?;
        if let Some(pos) = inner.pos {
            write!(f, ":{}:{}", pos.line, pos.column)?;
        }
        f.write_str(": ")?;
        if let Some(key) = &inner.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&inner.message)?;
        if let Some(hint) = &inner.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
