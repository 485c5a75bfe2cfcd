//! Helpers shared by the proxy tests: an HTTP client, raw requests, an upstream that
//! answers only when told, and the proxy in-process or as its real binary.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

pub mod postgres;
pub mod relay;
pub mod windowed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use blueprint::Integrations;
use blueprint_proxy::{Proxy, SecretKey};
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, oneshot, watch};

/// The proxy's secret key in every test.
pub const KEY: &str = "test-secret-key-0123456789";
/// The OAuth client secret in every test configuration.
pub const CLIENT_SECRET: &str = "client-s3cret-VALUE-77";

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The proxy's error code.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", String::from_utf8_lossy(&self.body)))
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Where a proxy listens, and how to call it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
}

impl Target {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the secret key.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("authorization", format!("Bearer {KEY}"))
    }

    /// `/proxy{path}` for a connection of an integration.
    pub fn proxy(
        &self,
        method: Method,
        path: &str,
        integration: &str,
        connection: &str,
    ) -> http::request::Builder {
        self.request(method, &format!("/proxy{path}"))
            .header("provider-config-key", integration)
            .header("connection-id", connection)
    }

    pub async fn send(&self, request: http::request::Builder) -> Reply {
        self.send_body(request, Bytes::new()).await
    }

    pub async fn send_body(
        &self,
        request: http::request::Builder,
        body: impl Into<Bytes>,
    ) -> Reply {
        let request = request.body(Full::new(body.into())).expect("request");
        let response = client().request(request).await.expect("the proxy answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body arrives").to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// Imports `token` (and optional extras) for a connection.
    pub async fn import(&self, integration: &str, connection: &str, json: Value) -> Reply {
        self.send_body(
            self.request(
                Method::PUT,
                &format!("/connections/{integration}/{connection}"),
            )
            .header("content-type", "application/json"),
            json.to_string(),
        )
        .await
    }

    /// `GET /connections`, as JSON.
    pub async fn connections(&self) -> Value {
        let reply = self.send(self.request(Method::GET, "/connections")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        let reply = self.send(self.request(Method::GET, "/metrics")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.text()
    }

    /// Sends `head` (the request line and headers, without the final blank line) as it is,
    /// on its own connection, and reads the whole answer.
    pub async fn raw(&self, head: &str) -> (u16, String) {
        raw(self.addr, head).await
    }
}

/// Sends a hand-written request; the status (0 if none came) and the whole answer.
pub async fn raw(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("{head}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// Like [`raw`], but a refused or reset connection is status 0.
pub async fn raw_or_refused(addr: SocketAddr, head: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (0, String::from("connection refused"));
    };
    let request = format!("{head}\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::from("write failed"));
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The integrations file of the tests: `intercom` against `upstream` (a mock standing in
/// for Intercom, its API and its OAuth endpoints), with `retry` settings, plus any
/// `extra` integrations.
pub fn yaml(upstream: &str, retry: &str, extra: &str) -> String {
    format!(
        "integrations:
  intercom:
    extends_blueprint: intercom
    base_url: {upstream}/
    oauth_authorization_url: {upstream}/oauth
    oauth_token_url: {upstream}/auth/eagle/token
    oauth_client_id: test-client
    oauth_client_secret: {CLIENT_SECRET}
    retry: {retry}
{extra}"
    )
}

/// Quick retries, short deadlines: what most tests want.
pub const FAST_RETRY: &str = "{ max_attempts: 2, base_delay_ms: 1, max_delay_ms: 5, deadline_ms: 5000, attempt_timeout_ms: 3000, max_server_wait_ms: 1000 }";

/// The proxy in this process, served on a loopback port.
pub struct InProcess {
    pub target: Target,
    pub proxy: Proxy,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    pub async fn start(yaml: &str) -> InProcess {
        Self::start_with(yaml, |builder| builder).await
    }

    /// Like [`InProcess::start`], with more settings on the builder.
    pub async fn start_with(
        yaml: &str,
        configure: impl FnOnce(blueprint_proxy::ProxyBuilder) -> blueprint_proxy::ProxyBuilder,
    ) -> InProcess {
        let registry = blueprint_proxy::registry().expect("registry");
        let integrations = Integrations::parse(yaml, "test.yaml", &registry, |_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let builder = Proxy::builder(integrations, SecretKey::new(KEY).expect("key"))
            .public_url(format!("http://{addr}"));
        let proxy = configure(builder).build().unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(blueprint_proxy::serve(
            listener,
            proxy.router(),
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        InProcess {
            target: Target { addr },
            proxy,
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl std::ops::Deref for InProcess {
    type Target = Target;
    fn deref(&self) -> &Target {
        &self.target
    }
}

/// An HTTP/1.1 upstream written by hand: it answers each request only when released, and
/// says when a request has arrived. A request never released is never answered.
#[derive(Clone)]
pub struct HeldUpstream {
    pub addr: SocketAddr,
    arrived: Arc<Notify>,
    release: watch::Sender<bool>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HeldUpstream {
    pub async fn start(body: &'static str) -> HeldUpstream {
        Self::start_with("HTTP/1.1 200 OK", body).await
    }

    /// Answers with `status_line` (such as `HTTP/1.0 200 OK`).
    pub async fn start_with(status_line: &'static str, body: &'static str) -> HeldUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let arrived = Arc::new(Notify::new());
        let (release, released) = watch::channel(false);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let upstream = HeldUpstream {
            addr,
            arrived: Arc::clone(&arrived),
            release,
            requests: Arc::clone(&requests),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let arrived = Arc::clone(&arrived);
                let mut released = released.clone();
                let requests = Arc::clone(&requests);
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push_str(&line),
                        }
                    }
                    requests
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(head);
                    arrived.notify_one();
                    if released.wait_for(|r| *r).await.is_err() {
                        return;
                    }
                    let answer = format!(
                        "{status_line}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = reader.get_mut().write_all(answer.as_bytes()).await;
                    let _ = reader.get_mut().shutdown().await;
                });
            }
        });
        upstream
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a request has arrived.
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Answers every request held, and every later one at once.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// The request heads received.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A connect session for `connection` of `integration`: `(token, url)`.
pub async fn connect_session(
    target: &Target,
    integration: &str,
    connection: &str,
) -> (String, String) {
    let reply = target
        .send_body(
            target
                .request(Method::POST, "/connect/sessions")
                .header("content-type", "application/json"),
            serde_json::json!({ "integration": integration, "connection_id": connection })
                .to_string(),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let json = reply.json();
    (
        json["token"].as_str().expect("a token").to_owned(),
        json["url"].as_str().expect("a url").to_owned(),
    )
}

/// The `state` parameter of a provider's authorization URL.
pub fn state_of(location: &str) -> String {
    location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .expect("a state")
        .to_owned()
}

/// An upstream written by hand that answers every request with exactly `answer` (bytes
/// as given, then the connection closed), after reading the request head.
pub async fn raw_upstream(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let _ = reader.get_mut().write_all(answer).await;
                let _ = reader.get_mut().shutdown().await;
            });
        }
    });
    addr
}

/// A loopback address where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "blueprint-proxy-{name}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish()
}

/// The `blueprint-proxy` binary `cargo test --workspace` built next to this test.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/blueprint-proxy
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = dir.join(format!("blueprint-proxy{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build -p blueprint-proxy` \
         (`cargo test --workspace` does)",
        binary.display()
    );
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| assert_not_stale(&binary));
    binary
}

/// Fails when a source of the crates is newer than the binary: `cargo test --test <file>`
/// of this package does not rebuild another package's binary, and a stale one would test
/// the code as it was.
fn assert_not_stale(binary: &std::path::Path) {
    /// The newest `.rs` or `.toml` file under `dir`.
    fn newest(dir: &std::path::Path, found: &mut Option<(std::time::SystemTime, PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                newest(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
                let modified = entry.metadata().and_then(|m| m.modified());
                if let Ok(modified) = modified {
                    if found.as_ref().is_none_or(|(at, _)| modified > *at) {
                        *found = Some((modified, path));
                    }
                }
            }
        }
    }
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .expect("the binary's time");
    let mut found = None;
    newest(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates"),
        &mut found,
    );
    if let Some((modified, source)) = found {
        assert!(
            modified <= built,
            "{} is older than {}: rebuild it with `cargo build -p blueprint-proxy --features otlp` \
             (`cargo test --workspace` does)",
            binary.display(),
            source.display()
        );
    }
}

/// The real binary, running.
pub struct Process {
    pub child: Child,
    pub target: Target,
    logs: Arc<Mutex<String>>,
    log_lines: watch::Receiver<usize>,
    /// Reads stderr until the process closes it.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Starts `blueprint-proxy --config <config> --store sqlite://<store> --listen 127.0.0.1:0`
    /// with `env`, and waits until it listens.
    pub async fn start(
        config: &std::path::Path,
        store: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Process {
        let store = format!("sqlite://{}", store.display());
        Self::start_with(config, &store, "127.0.0.1:0", env).await
    }

    /// Starts `blueprint-proxy --config <config> --store <store> --listen <listen>` with
    /// `env`, and waits until it listens.
    pub async fn start_with(
        config: &std::path::Path,
        store: &str,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Process {
        Self::start_full(config, store, listen, env, &[], None).await
    }

    /// Like [`Process::start_with`], with more arguments, and with at most `nofile` open
    /// file descriptors (`prlimit --nofile`) if given.
    pub async fn start_full(
        config: &std::path::Path,
        store: &str,
        listen: &str,
        env: &[(&str, &str)],
        args: &[&str],
        nofile: Option<u64>,
    ) -> Process {
        let mut command = match nofile {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        command
            .args(args)
            .arg("--config")
            .arg(config)
            .args([
                "--store",
                store,
                "--listen",
                listen,
                "--shutdown-grace",
                "10",
            ])
            .env_remove("BLUEPRINT_STORE")
            .env_remove("BLUEPRINT_ENCRYPTION_KEY")
            .env_remove("BLUEPRINT_PUBLIC_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "info")
            .env("BLUEPRINT_SECRET_KEY", KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let logs = Arc::new(Mutex::new(String::new()));
        let (count, log_lines) = watch::channel(0usize);
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut logs = sink.lock().unwrap_or_else(PoisonError::into_inner);
                logs.push_str(&line);
                logs.push('\n');
                drop(logs);
                count.send_modify(|n| *n += 1);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the proxy did not start; its logs:\n{}",
                    logs.lock().unwrap()
                )
            })
            .expect("stdout")
            .unwrap_or_else(|| panic!("the proxy exited; its logs:\n{}", logs.lock().unwrap()));
        let addr = first
            .strip_prefix("blueprint-proxy listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Process {
            child,
            target: Target { addr },
            logs,
            log_lines,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// What the process has logged so far.
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the logs contain `text`.
    pub async fn wait_for_log(&mut self, text: &str) {
        let wait = async {
            loop {
                if self.logs().contains(text) {
                    return;
                }
                if self.log_lines.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no log line with {text:?}; logs:\n{}", self.logs()));
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, and for its last log lines; its exit status.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the proxy did not exit; logs:\n{}", self.logs()))
            .expect("wait");
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status
    }

    /// A line of `/proc/<pid>/status`, in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl std::ops::Deref for Process {
    type Target = Target;
    fn deref(&self) -> &Target {
        &self.target
    }
}
