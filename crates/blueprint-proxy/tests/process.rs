//! The real binary, served: readiness, and how it stops on SIGTERM. Every wait for the
//! process is bounded; nothing sleeps.

#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_blueprint-proxy");
const KEY: &str = "process-test-key-0123456789";

/// A folder of its own under the temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("bp-proxy-process-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the temporary folder");
        TempDir(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary, serving on a loopback port, its stderr collected.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    log_lines: watch::Receiver<usize>,
}

impl Proxy {
    /// Starts the binary with an `intercom` integration at `upstream`, a SQLite store in
    /// `dir` and `args`, and waits until it listens.
    async fn start(dir: &TempDir, upstream: SocketAddr, args: &[&str]) -> Proxy {
        let config = dir.path("i.yaml");
        std::fs::write(
            &config,
            format!(
                "integrations:\n  intercom:\n    extends_blueprint: intercom\n    \
                 base_url: http://{upstream}/\n    retry: {{ max_attempts: 1, \
                 deadline_ms: 120000, attempt_timeout_ms: 120000 }}\n"
            ),
        )
        .expect("write the config");
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--store")
            .arg(format!("sqlite://{}", dir.path("store.db").display()))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("BLUEPRINT_STORE")
            .env_remove("BLUEPRINT_ENCRYPTION_KEY")
            .env_remove("BLUEPRINT_PUBLIC_URL")
            .env_remove("BLUEPRINT_REDIS_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "info")
            .env("BLUEPRINT_SECRET_KEY", KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let logs = Arc::new(Mutex::new(String::new()));
        let (count, log_lines) = watch::channel(0usize);
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = Arc::clone(&logs);
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let mut logs = sink.lock().unwrap_or_else(PoisonError::into_inner);
                logs.push_str(&line);
                logs.push('\n');
                drop(logs);
                count.send_modify(|n| *n += 1);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("the proxy listens within 30 s")
            .expect("stdout")
            .unwrap_or_else(|| {
                panic!(
                    "the proxy exited; its logs:\n{}",
                    logs.lock().unwrap_or_else(PoisonError::into_inner)
                )
            });
        let addr = first
            .strip_prefix("blueprint-proxy listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Proxy {
            child,
            addr,
            logs,
            log_lines,
        }
    }

    fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits at most `within` for the process to exit.
    async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the proxy did not exit within {within:?}; logs:\n{}",
                    self.logs()
                )
            })
            .expect("wait");
        // Its last lines: stderr ends when it exits.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.log_lines.changed().await.is_ok() {}
        })
        .await;
        status
    }
}

/// Sends one request on a connection of its own: the status and the raw body.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_ready_without_the_key_while_the_store_answers() {
    let dir = TempDir::new("readyz");
    let nowhere = "127.0.0.1:9".parse().expect("an address");
    let mut proxy = Proxy::start(&dir, nowhere, &[]).await;
    let (status, body) = send(proxy.addr, "GET", "/readyz", &[], "").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ready\n"),
        "{}",
        proxy.logs()
    );
    let (status, body) = send(proxy.addr, "GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    proxy.terminate();
    assert!(proxy.exit_within(Duration::from_secs(15)).await.success());
}
