//! The command line of the real binary: help, `check`, and refusing to start without a
//! usable secret key. (Having an integration test here also makes `cargo test --workspace`
//! build the binary, which the root `tests/proxy_process.rs` runs.)

#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_blueprint-proxy");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("BLUEPRINT_SECRET_KEY")
        .env_remove("BLUEPRINT_ENCRYPTION_KEY")
        .env_remove("INTERCOM_CLIENT_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config(name: &str, yaml: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("bp-cli-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, yaml).expect("write config");
    path
}

#[test]
fn help_documents_every_flag_and_variable() {
    let output = run(&["--help"], &[]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    for word in [
        "--config",
        "--listen",
        "--store",
        "--log-format",
        "--shutdown-grace",
        "--drain-delay",
        "--header-read-timeout",
        "--keep-alive-timeout",
        "--request-body-timeout",
        "--max-request-body",
        "--max-connections",
        "--forward-host-headers",
        "/connect/sessions",
        "check",
        "BLUEPRINT_SECRET_KEY",
        "BLUEPRINT_ENCRYPTION_KEY",
        "BLUEPRINT_PUBLIC_URL",
        "RUST_LOG",
        "/proxy/",
        "/metrics",
        "/integrations",
        "/readyz",
        "OpenMetrics",
        "Exit status",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
}

#[test]
fn check_prints_the_integrations_with_secrets_redacted() {
    let path = config(
        "ok",
        "integrations:\n  intercom:\n    extends_blueprint: intercom\n    oauth_client_id: app\n    oauth_client_secret: ${INTERCOM_CLIENT_SECRET}\n",
    );
    let output = run(
        &["check", "--config", path.to_str().unwrap()],
        &[("INTERCOM_CLIENT_SECRET", "very-secret-value")],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("intercom: extends intercom:v0"), "{stdout}");
    assert!(
        stdout.contains("oauth_client_secret: <redacted>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok: the configuration is valid"),
        "{stdout}"
    );
    assert!(!stdout.contains("very-secret-value"), "{stdout}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn check_names_the_file_line_and_key_of_a_mistake() {
    let path = config(
        "typo",
        "integrations:\n  intercom:\n    extends_blueprint: intercom\n    base_ulr: https://x.test/\n",
    );
    let output = run(&["check", "--config", path.to_str().unwrap()], &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(":4:5: `integrations.intercom.base_ulr`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `base_url`"), "{stderr}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn serving_needs_a_usable_secret_key() {
    let path = config(
        "key",
        "integrations:\n  intercom:\n    extends_blueprint: intercom\n",
    );
    let args = [
        "--config",
        path.to_str().unwrap(),
        "--store",
        "sqlite:///nonexistent/dir/x.db",
    ];
    let missing = run(&args, &[]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("BLUEPRINT_SECRET_KEY is not set"),
        "{}",
        text(&missing.stderr)
    );
    let short = run(&args, &[("BLUEPRINT_SECRET_KEY", "tooshort")]);
    assert!(!short.status.success());
    let stderr = text(&short.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(!stderr.contains("tooshort"), "{stderr}");
    let bad_encryption = run(
        &args,
        &[
            ("BLUEPRINT_SECRET_KEY", "a-long-enough-secret-key"),
            ("BLUEPRINT_ENCRYPTION_KEY", "not-base64!"),
        ],
    );
    assert!(!bad_encryption.status.success());
    assert!(text(&bad_encryption.stderr).contains("BLUEPRINT_ENCRYPTION_KEY is not a usable key"));
    let _ = std::fs::remove_file(path);
}

/// A timeout too long for the clock is refused by the command line, naming the flag and
/// the range, before anything starts (it used to reach `Instant + Duration` and panic).
#[test]
fn timeouts_longer_than_a_day_are_refused_with_the_range() {
    for (flag, range) in [
        ("--request-body-timeout", "1..=86400"),
        ("--header-read-timeout", "1..=86400"),
        ("--keep-alive-timeout", "1..=86400"),
        ("--shutdown-grace", "0..=86400"),
        ("--drain-delay", "0..=86400"),
    ] {
        for value in ["86401", "18446744073709551615"] {
            let output = run(
                &["--config", "i.yaml", flag, value],
                &[("BLUEPRINT_SECRET_KEY", "a-long-enough-secret-key")],
            );
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
            assert!(
                stderr.contains(&format!("invalid value '{value}' for '{flag} <SECS>'"))
                    && stderr.contains(&format!("{value} is not in {range}")),
                "{flag} {value}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
        }
    }
}

/// `--max-request-body` takes a plain number of bytes, at least 1: 0 is refused rather
/// than taken as nginx's "no cap" (here it would refuse every body), and so are suffixes.
#[test]
fn max_request_body_takes_a_plain_number_of_bytes_of_at_least_one() {
    for (value, why) in [
        ("0", "0 is not in 1.."),
        ("10MiB", "invalid digit found in string"),
        ("-5", "unexpected argument"),
    ] {
        let output = run(
            &["--config", "i.yaml", "--max-request-body", value],
            &[("BLUEPRINT_SECRET_KEY", "a-long-enough-secret-key")],
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains(why), "{value}: {stderr}");
    }
}
