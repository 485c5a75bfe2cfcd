//! Two OS processes refreshing one expired connection in one SQLite file call the token
//! endpoint once between them.
//!
//! The test re-runs its own binary twice in a child mode (selected by an environment
//! variable); each child opens the file, says it is ready, waits for the parent's "go" on
//! stdin, asks for the token and prints it.

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use blueprint_core::{ConnectionId, TokenSource};
use blueprint_refresh::{SqliteStore, TokenStore};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use wiremock::MockServer;

use crate::common::*;

const CHILD_DB: &str = "BLUEPRINT_REFRESH_CHILD_DB";
const CHILD_TOKEN_URL: &str = "BLUEPRINT_REFRESH_CHILD_SERVER";
const TEST_NAME: &str = "processes::two_processes_refreshing_one_connection_make_one_call";

/// One line to the parent, past the test harness's capture.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "CHILD {line}");
    let _ = out.flush();
}

async fn child(db: String, server_uri: String) {
    let server_config = blueprint_refresh::ProviderConfig {
        token_url: format!("{server_uri}/token"),
        client_id: "client-1".into(),
        ..blueprint_refresh::ProviderConfig::default()
    };
    let provider = blueprint_refresh::Provider::new(server_config).unwrap();
    let store = SqliteStore::open(&db).await.unwrap();
    let source = blueprint_refresh::OAuth2TokenSource::builder(provider, store.clone())
        .integration("test")
        .http_client(http())
        .lease(Duration::from_secs(30), Duration::from_millis(20))
        .build();
    say("ready");
    let mut go = String::new();
    tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut go))
        .await
        .unwrap()
        .unwrap();
    let token = source.token(&ConnectionId::new("acme")).await.unwrap();
    say(&format!("token {}", token.secret()));
    store.close().await;
}

async fn spawn_child(db: &TempDb, server: &MockServer) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, &db.0)
        .env(CHILD_TOKEN_URL, server.uri())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Reads the child's lines up to the one that starts with `CHILD {prefix}`.
async fn expect_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> String {
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // The harness may have printed `test … ... ` on the same line first.
            if let Some(at) = line.find("CHILD ") {
                if let Some(value) = line[at + "CHILD ".len()..].strip_prefix(prefix) {
                    return value.trim().to_owned();
                }
            }
        }
        panic!("the child ended without saying `{prefix}`");
    };
    // Bounded, so that a broken child fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("the child did not say `{prefix}` within 60 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refreshing_one_connection_make_one_call() {
    if let (Ok(db), Ok(uri)) = (std::env::var(CHILD_DB), std::env::var(CHILD_TOKEN_URL)) {
        return child(db, uri).await;
    }

    let server = MockServer::start().await;
    // A slow endpoint, so that both processes are surely asking at the same time.
    let answer = granted("a-2", Some("rt-2"), Some(3600)).set_delay(Duration::from_millis(300));
    mount_refresh(&server, "rt-1", answer, 1).await;

    let db = TempDb::new("two-processes");
    let store = SqliteStore::open(&db.0).await.unwrap();
    store
        .put(&key("acme"), expired("a-1", "rt-1", SystemTime::now()))
        .await
        .unwrap();

    let mut children = Vec::new();
    for _ in 0..2 {
        let mut child = spawn_child(&db, &server).await;
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        expect_line(&mut lines, "ready").await;
        children.push((child, lines));
    }
    // Both are ready: let them go together.
    for (child, _) in &mut children {
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        stdin.flush().await.unwrap();
    }
    for (mut child, mut lines) in children {
        assert_eq!(expect_line(&mut lines, "token").await, "a-2");
        assert!(child.wait().await.unwrap().success());
    }

    assert_eq!(
        token_calls(&server).await,
        1,
        "one token-endpoint call for two processes"
    );
    let stored = store.get(&key("acme")).await.unwrap().unwrap().record;
    assert_eq!(stored.refresh_token.unwrap().expose(), "rt-2");
    assert!(stored.lease.is_none());
    store.close().await;
}
