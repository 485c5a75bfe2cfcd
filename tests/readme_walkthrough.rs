//! The README's offline walkthrough, kept true: its `sh` block is read from README.md, the
//! stand-in of Intercom (`examples/intercom_standin.rs`) and the real `blueprint-proxy`
//! binary are started as the block starts them (on free ports instead of 3004 and 3003),
//! and every `curl` command of the block is run as written, by `sh`, with the secret key
//! exported. Each command's answer is checked; a command this test does not know fails it,
//! so a new step in the README needs a check here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

#[allow(dead_code)]
#[path = "../examples/intercom_standin.rs"]
mod standin;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use http::Method;
use proxy_support::{KEY, Process, TempDir, binary};
use serde_json::{Value, json};
use standin::{DEFAULT_LIMIT, DEFAULT_LISTEN, Standin};

const README: &str = include_str!("../README.md");
const SECTION: &str = "## The proxy in one screen, offline";
const STANDIN_CONFIG: &str = "examples/integrations.standin.yaml";
/// Where the README's proxy listens (`--listen`'s default).
const PROXY_URL: &str = "http://127.0.0.1:3003";

/// The commands of the walkthrough's `sh` block: comments and blank lines dropped, lines
/// ending in `\` joined to the next.
fn walkthrough() -> Vec<String> {
    let section = README
        .split_once(SECTION)
        .unwrap_or_else(|| panic!("README.md has no `{SECTION}` section"))
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no ```sh block under `{SECTION}`"))
        .0;
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "the block ends inside a command: {current}"
    );
    commands
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs a README command with `sh`, as a reader's shell would, against `proxy`.
async fn run(command: &str, proxy: &str) -> String {
    let command = command.replace(PROXY_URL, proxy);
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(&command)
        .env("BLUEPRINT_SECRET_KEY", KEY)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), child.output())
        .await
        .unwrap_or_else(|_| panic!("`{command}` did not finish within 30 s"))
        .unwrap_or_else(|e| panic!("`sh -c {command}` could not start ({e}); is curl installed?"));
    assert!(
        output.status.success(),
        "`{command}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json_of(what: &str, text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// Checks one curl command's output; panics for a command it does not know.
fn check(command: &str, out: &str) {
    if command.contains("/healthz") {
        assert_eq!(out.trim(), "ok", "{command}");
    } else if command.contains("-X PUT") && command.contains("/connections/intercom/acme") {
        let imported = json_of(command, out);
        assert_eq!(imported["connection_id"], "acme", "{out}");
        assert_eq!(imported["status"], "ok", "{out}");
    } else if command.contains("/proxy/me") {
        let (head, body) = out
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("`curl -i` printed no head: {out}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("x-ratelimit-limit: {DEFAULT_LIMIT}")),
            "{head}"
        );
        assert!(head.contains("x-ratelimit-remaining:"), "{head}");
        assert!(head.contains("x-ratelimit-reset:"), "{head}");
        assert_eq!(json_of(command, body)["type"], "admin", "{body}");
    } else if command.contains("/proxy/contacts?per_page=2") {
        let page = json_of(command, out);
        assert_eq!(page["data"].as_array().map(Vec::len), Some(2), "{page}");
        assert!(
            page["pages"]["next"]["starting_after"].is_string(),
            "{page}"
        );
    } else if command.contains("/connections -H") {
        let list = json_of(command, out);
        assert_eq!(list["connections"][0]["connection_id"], "acme", "{list}");
        assert!(!out.contains("standin-token"), "a token was listed: {out}");
    } else if command.contains("/metrics") {
        assert!(
            out.contains(
                r#"blueprint_proxy_requests_total{integration="intercom",status="200"} 2"#
            ),
            "{out}"
        );
    } else {
        panic!(
            "README.md's walkthrough runs `{command}`, which tests/readme_walkthrough.rs does \
             not check: add what it should print"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_the_readme_walkthrough_works() {
    let commands = walkthrough();
    let has = |want: &str| {
        assert!(
            commands.iter().any(|c| c == want),
            "the walkthrough no longer runs `{want}`:\n{commands:#?}"
        );
    };
    // The setup, as the block writes it: what this test starts in its place.
    has("export BLUEPRINT_SECRET_KEY=$(openssl rand -hex 32)");
    has("cargo build -p blueprint-proxy && cargo build --example intercom_standin");
    has("cargo run --example intercom_standin &");
    has("standin=$!");
    let start = format!(
        "cargo run -p blueprint-proxy -- --config {STANDIN_CONFIG} --store sqlite://walkthrough.db &"
    );
    has(&start);
    has("proxy=$!");
    has("kill $proxy $standin");
    has("wait");
    let setup = ["export ", "cargo ", "standin=", "proxy=", "kill ", "wait"];
    for command in &commands {
        assert!(
            command.starts_with("curl ") || setup.iter().any(|s| command.starts_with(s)),
            "README.md's walkthrough runs `{command}`, which this test neither runs nor \
             stands in for"
        );
    }

    // The stand-in, where the config file points (its port replaced by a free one).
    let config = std::fs::read_to_string(repo(STANDIN_CONFIG)).unwrap();
    let standin_url = format!("http://{DEFAULT_LISTEN}/");
    assert!(
        config.contains(&format!("base_url: {standin_url}")),
        "{STANDIN_CONFIG} does not point at the stand-in's default address {standin_url}"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin_addr = listener.local_addr().unwrap();
    let app = Standin::new(DEFAULT_LIMIT).router();
    let standin = tokio::spawn(async move { axum::serve(listener, app).await });

    // The real binary with the README's config, pointed at that port.
    let dir = TempDir::new("readme");
    let config_path = dir.path("integrations.standin.yaml");
    std::fs::write(
        &config_path,
        config.replace(&standin_url, &format!("http://{standin_addr}/")),
    )
    .unwrap();
    let mut proxy = Process::start(&config_path, &dir.path("walkthrough.db"), &[]).await;
    let proxy_url = proxy.url("");

    let mut ran = 0;
    for command in commands.iter().filter(|c| c.starts_with("curl ")) {
        let out = run(command, &proxy_url).await;
        check(command, &out);
        ran += 1;
    }
    assert!(ran >= 6, "only {ran} curl commands ran");

    // `kill $proxy`: SIGTERM, and the proxy stops cleanly.
    proxy.terminate();
    let status = proxy.wait().await;
    assert!(status.success(), "the proxy exited with {status}");
    standin.abort();
}

/// The config the walkthrough names is valid as written (`blueprint-proxy check`).
#[tokio::test]
async fn the_walkthrough_config_passes_check() {
    let output = tokio::process::Command::new(binary())
        .args(["check", "--config", STANDIN_CONFIG])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("check finishes")
        .expect("check runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("127.0.0.1:3004"), "{stdout}");
}

/// When the API cannot be reached, the proxy's error says why, not only
/// "client error (Connect)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upstream_connection_is_named_in_the_proxys_error() {
    let closed = proxy_support::closed_port().await;
    let dir = TempDir::new("refused");
    let config_path = dir.path("integrations.yaml");
    let config = std::fs::read_to_string(repo(STANDIN_CONFIG)).unwrap();
    std::fs::write(
        &config_path,
        config.replace(
            &format!("http://{DEFAULT_LISTEN}/"),
            &format!("http://{closed}/"),
        ),
    )
    .unwrap();
    let proxy = Process::start(&config_path, &dir.path("store.db"), &[]).await;
    let imported = proxy
        .import(
            "intercom",
            "acme",
            json!({ "access_token": "standin-token" }),
        )
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    let reply = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.code(), "upstream_unreachable");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        message.contains("connection refused"),
        "the cause is missing: {message}"
    );
}
