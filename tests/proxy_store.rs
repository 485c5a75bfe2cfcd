//! The real `blueprint-proxy` binary and its store: replicas sharing PostgreSQL, clear
//! start-up errors (a bad `--store`, an unreachable server, a wrong or missing encryption
//! key, a missing directory, `--listen` with a host name), and a PostgreSQL outage while it
//! serves (on a private server: the shared one at 127.0.0.1:5432 is never stopped).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;
mod proxy_support;

use std::process::ExitStatus;
use std::time::Duration;

use http::Method;
use pg_support::PrivatePostgres;
use proxy_support::postgres::TestDatabase;
use proxy_support::{FAST_RETRY, KEY, Process, TempDir, binary, yaml};
use serde_json::json;
use tokio::time::Instant;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes, base64
const KEY_B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="; // another 32 bytes

/// The access tokens as `db` holds them.
async fn stored_access_tokens(db: &TestDatabase) -> Vec<String> {
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let tokens = sqlx::query_scalar("SELECT access_token FROM blueprint_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    tokens
}

/// An upstream that answers `GET /me` with the name of each token it knows.
async fn upstream(tokens: &[&str]) -> MockServer {
    let server = MockServer::start().await;
    for token in tokens {
        Mock::given(method("GET"))
            .and(path("/me"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_string(format!("me:{token}")))
            .mount(&server)
            .await;
    }
    server
}

/// The proxy run until it exits (it should fail to start): its status, stderr, and how
/// long it took.
async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, Duration) {
    let mut command = tokio::process::Command::new(binary());
    command
        .args(args)
        .env_remove("BLUEPRINT_STORE")
        .env_remove("BLUEPRINT_ENCRYPTION_KEY")
        .env("BLUEPRINT_SECRET_KEY", KEY)
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let started = Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the proxy exits")
        .expect("the binary runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

/// One `error: …` line and nothing else: no panic, no log lines repeating it.
#[track_caller]
fn assert_one_error_line(status: ExitStatus, stderr: &str) -> String {
    assert_eq!(status.code(), Some(1), "exit {status:?}; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgresql_share_an_imported_connection() {
    const TOKEN: &str = "tok_REPLICA_5ecret";
    let upstream = upstream(&[TOKEN]).await;
    let db = TestDatabase::create("bp_proxy").await;
    let dir = TempDir::new("replicas");
    std::fs::write(dir.path("i.yaml"), yaml(&upstream.uri(), FAST_RETRY, "")).unwrap();
    let env = [("BLUEPRINT_ENCRYPTION_KEY", KEY_A)];
    let first = Process::start_with(&dir.path("i.yaml"), &db.url(), "127.0.0.1:0", &env).await;
    let second = Process::start_with(&dir.path("i.yaml"), &db.url(), "127.0.0.1:0", &env).await;

    let imported = first
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    let listed = second.connections().await;
    assert_eq!(
        listed["connections"][0]["connection_id"], "acme",
        "{listed}"
    );
    let me = second
        .send(second.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(
        (me.status, me.text().as_str()),
        (200, "me:tok_REPLICA_5ecret")
    );

    let stored = stored_access_tokens(&db).await;
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(TOKEN), "the token is stored in clear");
    let (mut first, mut second) = (first, second);
    first.wait_for_log("PostgreSQL").await;
    second.wait_for_log("PostgreSQL").await;
    for logs in [first.logs(), second.logs()] {
        assert!(logs.contains("PostgreSQL"), "{logs}");
        assert!(
            !logs.contains(TOKEN) && !logs.contains(KEY) && !logs.contains(KEY_A),
            "a secret in the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn a_bad_store_url_is_one_clear_line_without_the_password() {
    let dir = TempDir::new("bad-url");
    std::fs::write(
        dir.path("i.yaml"),
        yaml("http://127.0.0.1:9", FAST_RETRY, ""),
    )
    .unwrap();
    let config = dir.path("i.yaml");
    let config = config.to_str().unwrap();
    for (url, says) in [
        (
            "postgres://postgres:hunter2@127.0.0.1:notaport/test",
            "does not parse",
        ),
        ("mysql://root:hunter2@db/x", "mysql://… is not supported"),
    ] {
        // Given as --store, and as BLUEPRINT_STORE.
        for (args, env) in [
            (vec!["--config", config, "--store", url], vec![]),
            (vec!["--config", config], vec![("BLUEPRINT_STORE", url)]),
        ] {
            let (status, stderr, _) = run_to_exit(&args, &env).await;
            let line = assert_one_error_line(status, &stderr);
            assert!(line.contains(says), "{url}: {line}");
            assert!(!stderr.contains("hunter2"), "the password in:\n{stderr}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_postgresql_at_start_is_a_quick_error_naming_it() {
    let dir = TempDir::new("unreachable");
    std::fs::write(
        dir.path("i.yaml"),
        yaml("http://127.0.0.1:9", FAST_RETRY, ""),
    )
    .unwrap();
    let port = proxy_support::closed_port().await.port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/test");
    let (status, stderr, took) = run_to_exit(
        &[
            "--config",
            dir.path("i.yaml").to_str().unwrap(),
            "--store",
            &url,
        ],
        &[],
    )
    .await;
    let line = assert_one_error_line(status, &stderr);
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("connection refused"),
        "{line}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_encryption_key_stops_the_start_with_a_clear_message() {
    const TOKEN: &str = "tok_KEYED_c0ffee";
    let upstream = upstream(&[TOKEN]).await;
    let db = TestDatabase::create("bp_proxy").await;
    let dir = TempDir::new("key-check");
    std::fs::write(dir.path("i.yaml"), yaml(&upstream.uri(), FAST_RETRY, "")).unwrap();
    let config = dir.path("i.yaml");
    let url = db.url();

    let mut first = Process::start_with(
        &config,
        &url,
        "127.0.0.1:0",
        &[("BLUEPRINT_ENCRYPTION_KEY", KEY_A)],
    )
    .await;
    first
        .import("intercom", "acme", json!({ "access_token": TOKEN }))
        .await;
    first.terminate();
    assert!(first.wait().await.success(), "{}", first.logs());

    let args = ["--config", config.to_str().unwrap(), "--store", &url];
    let (status, stderr, _) = run_to_exit(&args, &[]).await;
    let line = assert_one_error_line(status, &stderr);
    assert!(
        line.contains("BLUEPRINT_ENCRYPTION_KEY is not set")
            && line.contains("encrypted connections")
            && line.contains("intercom/acme"),
        "{line}"
    );
    let (status, stderr, _) = run_to_exit(&args, &[("BLUEPRINT_ENCRYPTION_KEY", KEY_B)]).await;
    let line = assert_one_error_line(status, &stderr);
    assert!(
        line.contains("BLUEPRINT_ENCRYPTION_KEY is not the key"),
        "{line}"
    );
    assert!(!stderr.contains(KEY_A) && !stderr.contains(KEY_B) && !stderr.contains(TOKEN));

    // With the right key it starts, and the connection works.
    let again = Process::start_with(
        &config,
        &url,
        "127.0.0.1:0",
        &[("BLUEPRINT_ENCRYPTION_KEY", KEY_A)],
    )
    .await;
    let me = again
        .send(again.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(me.status, 200, "{}", me.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_given_for_plaintext_connections_starts_with_a_warning() {
    let dir = TempDir::new("plain-then-key");
    std::fs::write(
        dir.path("i.yaml"),
        yaml("http://127.0.0.1:9", FAST_RETRY, ""),
    )
    .unwrap();
    let mut plain = Process::start(&dir.path("i.yaml"), &dir.path("store.db"), &[]).await;
    plain
        .import("intercom", "acme", json!({ "access_token": "tok_plain" }))
        .await;
    plain.terminate();
    assert!(plain.wait().await.success());

    let keyed = Process::start(
        &dir.path("i.yaml"),
        &dir.path("store.db"),
        &[("BLUEPRINT_ENCRYPTION_KEY", KEY_A)],
    )
    .await;
    let mut keyed = keyed;
    // Logs reach stderr through a writer thread: wait for the line.
    keyed.wait_for_log("stored unencrypted").await;
    let logs = keyed.logs();
    assert!(
        logs.contains("stored unencrypted") && logs.contains("unencrypted=1"),
        "{logs}"
    );
    assert_eq!(keyed.connections().await["connections"][0]["status"], "ok");
}

#[tokio::test]
async fn a_store_in_a_missing_directory_is_one_message_naming_it() {
    let dir = TempDir::new("missing-dir");
    std::fs::write(
        dir.path("i.yaml"),
        yaml("http://127.0.0.1:9", FAST_RETRY, ""),
    )
    .unwrap();
    let missing = dir.path("no/such/dir");
    let store = format!("sqlite://{}/store.db", missing.display());
    let (status, stderr, _) = run_to_exit(
        &[
            "--config",
            dir.path("i.yaml").to_str().unwrap(),
            "--store",
            &store,
        ],
        &[],
    )
    .await;
    let line = assert_one_error_line(status, &stderr);
    assert!(
        line.contains(&format!(
            "the directory `{}` does not exist",
            missing.display()
        )),
        "{line}"
    );
    assert!(!line.contains("code: 14"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_a_host_name_and_says_when_it_does_not_resolve() {
    let dir = TempDir::new("listen");
    std::fs::write(
        dir.path("i.yaml"),
        yaml("http://127.0.0.1:9", FAST_RETRY, ""),
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path("store.db").display());
    let proxy = Process::start_with(&dir.path("i.yaml"), &store, "localhost:0", &[]).await;
    assert!(proxy.addr.ip().is_loopback(), "{}", proxy.addr);
    let health = proxy.send(proxy.request(Method::GET, "/healthz")).await;
    assert_eq!(health.status, 200);

    let (status, stderr, _) = run_to_exit(
        &[
            "--config",
            dir.path("i.yaml").to_str().unwrap(),
            "--store",
            &store,
            "--listen",
            "no-such-host.invalid:0",
        ],
        &[],
    )
    .await;
    let line = assert_one_error_line(status, &stderr);
    assert!(
        line.contains("no-such-host.invalid") && line.contains("does not resolve"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_fails_calls_that_need_the_store_and_they_recover_without_a_restart() {
    let tokens = [
        "tok_cached",
        "tok_during",
        "tok_after_1",
        "tok_after_2",
        "tok_after_3",
    ];
    let upstream = upstream(&tokens).await;
    let server = PrivatePostgres::start("proxy-outage");
    let dir = TempDir::new("outage");
    std::fs::write(dir.path("i.yaml"), yaml(&upstream.uri(), FAST_RETRY, "")).unwrap();
    // Another replica imports the connections, so that this one holds none of them yet
    // (an import caches the token in the replica that takes it).
    let mut importer =
        Process::start_with(&dir.path("i.yaml"), &server.url(), "127.0.0.1:0", &[]).await;
    for token in tokens {
        let imported = importer
            .import("intercom", token, json!({ "access_token": token }))
            .await;
        assert_eq!(imported.status, 201, "{}", imported.text());
    }
    importer.terminate();
    assert!(importer.wait().await.success(), "{}", importer.logs());
    let proxy = Process::start_with(&dir.path("i.yaml"), &server.url(), "127.0.0.1:0", &[]).await;
    let call = |connection: &'static str| {
        let target = proxy.target;
        async move {
            target
                .send(target.proxy(Method::GET, "/me", "intercom", connection))
                .await
        }
    };
    // The token source reads the store and keeps the token.
    assert_eq!(call("tok_cached").await.status, 200);

    server.stop();
    // A token already held keeps working.
    let cached = call("tok_cached").await;
    assert_eq!(cached.status, 200, "{}", cached.text());
    // A call that needs the store fails, quickly and clearly.
    let started = Instant::now();
    let during = call("tok_during").await;
    let took = started.elapsed();
    assert_eq!(during.status, 503, "{}", during.text());
    assert_eq!(during.code(), "store_unavailable", "{}", during.text());
    assert_eq!(
        during.header("retry-after"),
        Some("1"),
        "{:?}",
        during.headers
    );
    assert!(
        during.text().contains("token store")
            && during
                .text()
                .contains(&format!("127.0.0.1:{}", server.port())),
        "{}",
        during.text()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The routes that need the store say the same.
    let listed = proxy.send(proxy.request(Method::GET, "/connections")).await;
    assert_eq!(
        (listed.status, listed.code().as_str()),
        (503, "store_unavailable"),
        "{}",
        listed.text()
    );
    assert_eq!(listed.header("retry-after"), Some("1"));
    let imported = proxy
        .import("intercom", "tok_new", json!({ "access_token": "tok_new" }))
        .await;
    assert_eq!(
        (imported.status, imported.code().as_str()),
        (503, "store_unavailable"),
        "{}",
        imported.text()
    );
    let deleted = proxy
        .send(proxy.request(Method::DELETE, "/connections/intercom/tok_after_1"))
        .await;
    assert_eq!(
        (deleted.status, deleted.code().as_str()),
        (503, "store_unavailable"),
        "{}",
        deleted.text()
    );
    eprintln!(
        "during the outage: a call that needs the store answered {} in {took:?}; \
         GET /connections answered {}",
        during.status, listed.status
    );

    server.start_again();
    // Calls that need the store work again without a restart: the first may still find
    // the pool reconnecting (and is told to come back after `Retry-After`), so each
    // connection is tried until it answers, for a bounded time.
    let restarted = Instant::now();
    for connection in ["tok_after_1", "tok_after_2", "tok_after_3", "tok_during"] {
        let reply = loop {
            let reply = call(connection).await;
            if reply.status != 503 || restarted.elapsed() > Duration::from_secs(20) {
                break reply;
            }
            assert_eq!(reply.code(), "store_unavailable", "{}", reply.text());
            let after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_secs(after)).await;
        };
        assert_eq!(
            (reply.status, reply.text()),
            (200, format!("me:{connection}")),
            "after PostgreSQL came back"
        );
    }
    assert_eq!(
        proxy.connections().await["connections"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
    eprintln!(
        "every connection answered {:?} after PostgreSQL came back",
        restarted.elapsed()
    );
}

#[tokio::test]
async fn help_documents_the_store_url_and_its_variable() {
    let (status, _, _) = run_to_exit(&["--help"], &[]).await;
    assert!(status.success());
    let output = tokio::process::Command::new(binary())
        .arg("--help")
        .env("BLUEPRINT_STORE", "postgres://u:hunter2@h/db")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for word in [
        "--store",
        "postgres://",
        "BLUEPRINT_STORE",
        "--listen",
        "HOST:PORT",
        "--refresh-lease",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
    assert!(
        !help.contains("hunter2"),
        "--help shows the store's password:\n{help}"
    );
}

/// Answers the refresh grant with new credentials (`a-2`, `rt-2`) two seconds after it
/// arrives, and says when it arrived.
struct SlowRefresh(tokio::sync::mpsc::UnboundedSender<()>);

impl wiremock::Respond for SlowRefresh {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let _ = self.0.send(());
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": "a-2",
                "refresh_token": "rt-2",
                "token_type": "bearer",
                "expires_in": 3600,
            }))
            .set_delay(Duration::from_secs(2))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_writes_refreshed_credentials_the_store_missed_before_the_process_exits() {
    let upstream = upstream(&["a-2"]).await;
    let (arrived, mut refreshing) = tokio::sync::mpsc::unbounded_channel();
    Mock::given(method("POST"))
        .and(path("/auth/eagle/token"))
        .respond_with(SlowRefresh(arrived))
        .expect(1)
        .mount(&upstream)
        .await;
    let server = PrivatePostgres::start("proxy-flush");
    let dir = TempDir::new("flush");
    // A deadline long enough for the refresh and the failed write (the store's pool may
    // take a few seconds to say that the server is gone).
    let patient = "{ max_attempts: 1, deadline_ms: 30000, attempt_timeout_ms: 3000 }";
    std::fs::write(dir.path("i.yaml"), yaml(&upstream.uri(), patient, "")).unwrap();
    let mut proxy =
        Process::start_with(&dir.path("i.yaml"), &server.url(), "127.0.0.1:0", &[]).await;
    let imported = proxy
        .import(
            "intercom",
            "acme",
            json!({
                "access_token": "a-1",
                "refresh_token": "rt-1",
                "expires_at": "2020-01-01T00:00:00Z",
            }),
        )
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());

    // The call refreshes the expired token; PostgreSQL goes away while the token endpoint
    // answers, so the rotated credentials cannot be written.
    let target = proxy.target;
    let call = tokio::spawn(async move {
        target
            .send(target.proxy(Method::GET, "/me", "intercom", "acme"))
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), refreshing.recv())
        .await
        .expect("the proxy never called the token endpoint");
    server.stop();
    let reply = call.await.unwrap();
    assert_eq!((reply.status, reply.text()), (200, "me:a-2".to_owned()));
    proxy
        .wait_for_log("could not store refreshed credentials")
        .await;
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("blueprint_proxy_unstored_credentials{integration=\"intercom\"} 1\n"),
        "{metrics}"
    );
    // The write is retried 1 s after it failed (against the server still down), then 2 s
    // later. PostgreSQL comes back between the two, and the proxy is told to stop: it
    // writes what it holds before it exits, instead of at a try it would not live to make.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_again();
    proxy.terminate();
    let status = proxy.wait().await;
    assert!(status.success(), "{status:?}\n{}", proxy.logs());
    let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
    let stored: (String, Option<String>) =
        sqlx::query_as("SELECT access_token, refresh_token FROM blueprint_tokens")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(
        stored,
        ("a-2".to_owned(), Some("rt-2".to_owned())),
        "the rotated refresh token was lost; logs:\n{}",
        proxy.logs()
    );
    upstream.verify().await;
}
