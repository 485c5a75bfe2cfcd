//! `integrations.yaml` (and a blueprint file) from any text: never a panic, and every error
//! but an I/O one names a line and column.
#![no_main]

use std::sync::OnceLock;

use blueprint::{ConfigError, ConfigErrorKind, Integrations, Registry};
use libfuzzer_sys::fuzz_target;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::builtin().unwrap_or_default())
}

fn env(name: &str) -> Option<String> {
    match name {
        "SECRET" => Some("s3cr3t-from-env".into()),
        "PORT" => Some("9000".into()),
        _ => None,
    }
}

fn check(error: &ConfigError, text: &str) {
    assert_ne!(error.kind(), ConfigErrorKind::Io);
    let (Some(line), Some(column)) = (error.line(), error.column()) else {
        panic!("no position: {error}");
    };
    assert!(line >= 1 && column >= 1, "{error}");
    // YAML counts `\r\n`, `\r` and `\n` each as one line break.
    let lines = text
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .matches('\n')
        .count()
        + 1;
    assert!(line <= lines, "line past the end ({lines} lines): {error}");
    assert!(
        !error.to_string().contains("s3cr3t-from-env"),
        "a secret in: {error}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Integrations::parse(text, "fuzz.yaml", registry(), env) {
        Ok(loaded) => {
            let shown = format!("{loaded} {loaded:?}");
            assert!(
                !shown.contains("s3cr3t-from-env"),
                "a secret in the summary"
            );
        }
        Err(error) => check(&error, text),
    }
    let mut files = registry().clone();
    if let Err(error) = files.load_files(&[("fuzz.yaml".to_owned(), text)], &env) {
        check(&error, text);
    }
});
