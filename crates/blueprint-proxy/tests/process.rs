//! The real binary, served: readiness, and how it stops on SIGTERM. Every wait for the
//! process is bounded; nothing sleeps.

#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, watch};

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

/// An upstream that holds every request until it is released, then answers `finally`.
struct Held {
    addr: SocketAddr,
    arrived: Arc<Notify>,
    release: watch::Sender<bool>,
}

impl Held {
    async fn start() -> Held {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let arrived = Arc::new(Notify::new());
        let (release, released) = watch::channel(false);
        let notify = Arc::clone(&arrived);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let arrived = Arc::clone(&notify);
                let mut released = released.clone();
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
                    arrived.notify_one();
                    if released.wait_for(|r| *r).await.is_err() {
                        return;
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nfinally";
                    let _ = reader.get_mut().write_all(answer.as_bytes()).await;
                });
            }
        });
        Held {
            addr,
            arrived,
            release,
        }
    }

    /// Waits until a request has arrived.
    async fn arrived(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.arrived.notified())
            .await
            .expect("the call reached the upstream within 10 s");
    }

    fn release(&self) {
        let _ = self.release.send(true);
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

    /// Waits (10 s at most) until the logs hold `text`.
    async fn wait_for_log(&mut self, text: &str) {
        let wait = async {
            while !self.logs().contains(text) {
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
    fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits at most `within` for the process to exit with status `code`, having logged
    /// each of `said` and none of `not_said`; its logs.
    async fn exits_saying(
        &mut self,
        within: Duration,
        code: i32,
        said: &[&str],
        not_said: &[&str],
    ) -> String {
        let status = self.exit_within(within).await;
        let logs = self.logs();
        assert_eq!(status.code(), Some(code), "{status}; logs:\n{logs}");
        for line in said {
            assert!(logs.contains(line), "no {line:?} in the logs:\n{logs}");
        }
        for line in not_said {
            assert!(!logs.contains(line), "{line:?} in the logs:\n{logs}");
        }
        logs
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

    /// Imports a token for connection `acme` of `intercom`.
    async fn import(&self) {
        let (status, body) = send(
            self.addr,
            "PUT",
            "/connections/intercom/acme",
            &[
                ("authorization", &format!("Bearer {KEY}")),
                ("content-type", "application/json"),
            ],
            r#"{"access_token": "tok"}"#,
        )
        .await;
        assert!(matches!(status, 200 | 201), "{status} {body}");
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
    let upstream = Held::start().await;
    let dir = TempDir::new("readyz");
    let mut proxy = Proxy::start(&dir, upstream.addr, &[]).await;
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

/// Starts the binary with `args`, imports a token, and has one call wait at the held
/// upstream; the call's answer comes from the task returned.
async fn with_a_call_in_flight(
    dir: &TempDir,
    upstream: &Held,
    args: &[&str],
) -> (Proxy, tokio::task::JoinHandle<(u16, String)>) {
    let proxy = Proxy::start(dir, upstream.addr, args).await;
    proxy.import().await;
    let call = proxied_call(proxy.addr);
    upstream.arrived().await;
    (proxy, call)
}

/// A second SIGTERM while a call keeps the drain waiting stops the process at once (not
/// at the end of its 60 s grace period), says so, and exits with status 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_stops_at_once_with_status_3() {
    let upstream = Held::start().await;
    let dir = TempDir::new("second-term");
    let (mut proxy, call) =
        with_a_call_in_flight(&dir, &upstream, &["--shutdown-grace", "60"]).await;
    proxy.terminate();
    proxy.wait_for_log("shutting down").await;
    // Draining: the call keeps it waiting.
    let early = tokio::time::timeout(Duration::from_millis(300), proxy.child.wait()).await;
    assert!(early.is_err(), "exited with a call in flight: {early:?}");

    proxy.terminate();
    proxy
        .exits_saying(
            Duration::from_secs(10),
            3,
            &[CUT_OFF_AT_ONCE, "store closed"],
            &["all calls finished"],
        )
        .await;
    // The call was cut off, unanswered.
    let (status, body) = call.await.expect("the call's task");
    assert_eq!(status, 0, "the call was answered: {body}");
    upstream.release();
}

/// Calls still in flight when the grace period runs out are cut off, and the exit status
/// says so: 3, not 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_off_when_the_grace_period_runs_out_make_the_exit_status_3() {
    let upstream = Held::start().await;
    let dir = TempDir::new("grace-over");
    let (mut proxy, call) =
        with_a_call_in_flight(&dir, &upstream, &["--shutdown-grace", "1"]).await;
    proxy.terminate();
    proxy
        .exits_saying(
            Duration::from_secs(15),
            3,
            &[
                "grace period over: cutting off the calls still in flight",
                "store closed",
            ],
            &[],
        )
        .await;
    let (status, body) = call.await.expect("the call's task");
    assert_eq!(status, 0, "the call was answered: {body}");
    upstream.release();
}

/// What the binary logs when a second signal cuts calls off.
const CUT_OFF_AT_ONCE: &str =
    "signalled again: stopping at once, cutting off the calls still in flight";

/// `GET /proxy/slow` for connection `acme`, on a connection of its own: the status and body.
fn proxied_call(addr: SocketAddr) -> tokio::task::JoinHandle<(u16, String)> {
    tokio::spawn(async move {
        let bearer = format!("Bearer {KEY}");
        let headers = [
            ("authorization", bearer.as_str()),
            ("provider-config-key", "intercom"),
            ("connection-id", "acme"),
        ];
        send(addr, "GET", "/proxy/slow", &headers, "").await
    })
}

/// With `--drain-delay 2`, after SIGTERM the proxy accepts new connections and serves them
/// for 2 s, `/readyz` answering 503 `not_ready` and a proxied call going through as usual;
/// then it stops accepting (the port refuses connections) and drains as without a delay,
/// the grace period counted from then, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_drain_delay_it_serves_on_with_readyz_503_then_stops_accepting() {
    let upstream = Held::start().await;
    let dir = TempDir::new("drain-delay");
    let mut proxy = Proxy::start(
        &dir,
        upstream.addr,
        &["--drain-delay", "2", "--shutdown-grace", "10"],
    )
    .await;
    proxy.import().await;
    let signalled = tokio::time::Instant::now();
    proxy.terminate();
    proxy.wait_for_log("draining").await;

    // New connections are still accepted: `/readyz` says not ready, `/healthz` ok.
    let (status, body) = send(proxy.addr, "GET", "/readyz", &[], "").await;
    assert_eq!(status, 503, "{body}; logs:\n{}", proxy.logs());
    assert!(body.contains(r#""code":"not_ready""#), "{body}");
    assert!(body.contains("shutting down"), "{body}");
    let (status, body) = send(proxy.addr, "GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // A call on a new connection reaches the provider, and is held there across the end
    // of the delay.
    let call = proxied_call(proxy.addr);
    upstream.arrived().await;
    assert!(
        !proxy.logs().contains("stopped accepting"),
        "stopped accepting before the delay ended:\n{}",
        proxy.logs()
    );

    proxy.wait_for_log("shutting down: stopped accepting").await;
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "stopped accepting {waited:?} after SIGTERM, before the 2 s delay ended"
    );
    let refused = TcpStream::connect(proxy.addr).await;
    assert!(
        refused.is_err(),
        "a connection was accepted after the drain delay"
    );
    // The drain waits for the call in flight, which is then answered.
    let early = tokio::time::timeout(Duration::from_millis(300), proxy.child.wait()).await;
    assert!(early.is_err(), "exited with a call in flight: {early:?}");
    upstream.release();
    let (status, body) = call.await.expect("the call's task");
    assert_eq!((status, body.as_str()), (200, "finally"));
    proxy
        .exits_saying(
            Duration::from_secs(15),
            0,
            &["all calls finished", "store closed"],
            &[],
        )
        .await;
}

/// A second SIGTERM during a 60 s drain delay stops the process at once: with no call in
/// flight it exits 0, with one it cuts it off and exits 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_delay_stops_at_once() {
    let upstream = Held::start().await;

    let dir = TempDir::new("drain-delay-idle");
    let mut proxy = Proxy::start(&dir, upstream.addr, &["--drain-delay", "60"]).await;
    proxy.terminate();
    proxy.wait_for_log("draining").await;
    proxy.terminate();
    proxy
        .exits_saying(
            Duration::from_secs(10),
            0,
            &[
                "signalled again during the drain delay",
                "signalled again: stopping at once; no call was in flight",
                "store closed",
            ],
            &[],
        )
        .await;

    let dir = TempDir::new("drain-delay-busy");
    let mut proxy = Proxy::start(&dir, upstream.addr, &["--drain-delay", "60"]).await;
    proxy.import().await;
    proxy.terminate();
    proxy.wait_for_log("draining").await;
    let call = proxied_call(proxy.addr);
    upstream.arrived().await;
    proxy.terminate();
    proxy
        .exits_saying(
            Duration::from_secs(10),
            3,
            &[CUT_OFF_AT_ONCE],
            &["shutting down: stopped accepting"],
        )
        .await;
    let (status, body) = call.await.expect("the call's task");
    assert_eq!(status, 0, "the call was answered: {body}");
    upstream.release();
}
