//! What the Redis tests share: the real Redis at 127.0.0.1:6379 (or `BLUEPRINT_TEST_REDIS_URL`),
//! a unique key prefix per test, and a TCP relay in front of Redis that a test cuts and
//! restores (the shared Redis server itself is never stopped).

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("BLUEPRINT_TEST_REDIS_URL")
        .unwrap_or_else(|_| String::from("redis://127.0.0.1:6379/0"))
}

/// The address of that Redis, checked to answer: a test that needs Redis fails at once
/// with what to do, instead of hanging.
pub async fn redis_addr() -> SocketAddr {
    let url = redis_url();
    let hostport = url
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()
        .unwrap_or("127.0.0.1:6379")
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    let addr: SocketAddr = tokio::net::lookup_host(&hostport)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve the test Redis `{hostport}`"));
    let connected = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await;
    assert!(
        matches!(connected, Ok(Ok(_))),
        "these tests need a Redis server at {addr} (set BLUEPRINT_TEST_REDIS_URL for another); \
         start one with `redis-server --daemonize yes`"
    );
    addr
}

/// A key prefix no other test (or run) uses.
pub fn prefix(test: &str) -> String {
    format!("bptest:{test}:{}:{}", std::process::id(), fastrand::u64(..))
}

/// A plain connection for looking at keys.
pub async fn inspector() -> redis::aio::MultiplexedConnection {
    redis_addr().await;
    redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const STALL: u8 = 2;

/// A TCP relay to Redis: passes bytes both ways, or, once cut, closes every connection and
/// every new one at once (`refuse`), or stops forwarding while keeping them open (`stall`).
pub struct Relay {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    changed: watch::Sender<u8>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    pub async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(AtomicU8::new(PASS));
        let (changed, watching) = watch::channel(PASS);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let mode = Arc::clone(&mode);
            let tasks = Arc::clone(&tasks);
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    match mode.load(Ordering::SeqCst) {
                        REFUSE => {
                            let _ = client.shutdown().await;
                            continue;
                        }
                        STALL => {
                            // Accepted, never answered.
                            let task = tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_secs(600)).await;
                                drop(client);
                            });
                            tasks
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(task);
                            continue;
                        }
                        _ => {}
                    }
                    let mut watching = watching.clone();
                    let task = tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(to).await else {
                            return;
                        };
                        let (mut cr, mut cw) = client.split();
                        let (mut sr, mut sw) = server.split();
                        let pass = async {
                            tokio::select! {
                                _ = tokio::io::copy(&mut cr, &mut sw) => {}
                                _ = tokio::io::copy(&mut sr, &mut cw) => {}
                            }
                        };
                        tokio::select! {
                            () = pass => {}
                            mode = until(&mut watching, |m| m != PASS) => {
                                if mode == STALL {
                                    // Hold both ends open, forwarding nothing.
                                    until(&mut watching, |m| m == REFUSE).await;
                                }
                            }
                        }
                    });
                    tasks
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(task);
                }
            })
        };
        Relay {
            addr,
            mode,
            changed,
            tasks,
            accept,
        }
    }

    /// The Redis URL through this relay.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Closes every connection, and every new one at once: Redis is down.
    pub fn refuse(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
        let _ = self.changed.send(REFUSE);
    }

    /// Forwards nothing, closing nothing: Redis hangs.
    pub fn stall(&self) {
        self.mode.store(STALL, Ordering::SeqCst);
        let _ = self.changed.send(STALL);
    }

    /// Passes bytes again (to new connections).
    pub fn restore(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
        let _ = self.changed.send(PASS);
    }
}

/// Waits until the relay's mode satisfies `pred`; the mode then.
async fn until(watching: &mut watch::Receiver<u8>, pred: impl Fn(u8) -> bool) -> u8 {
    loop {
        let mode = *watching.borrow_and_update();
        if pred(mode) {
            return mode;
        }
        if watching.changed().await.is_err() {
            return mode;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

/// Log lines written while the test runs, to count WARNs.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// Where this thread's log lines go, while a test captures them.
    static SINK: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the capturing test's [`Logs`], if this thread has one.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|sink| {
            if let Some(logs) = &*sink.borrow() {
                logs.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ends a capture when dropped.
pub struct Capture;

impl Drop for Capture {
    fn drop(&mut self) {
        SINK.with(|sink| sink.borrow_mut().take());
    }
}

impl Logs {
    /// Collects this thread's logs (use a current-thread runtime) until the guard is
    /// dropped. One global subscriber serves every test, so that no test's filter decides
    /// for another whether a log line is written at all.
    pub fn capture() -> (Logs, Capture) {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadSink)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        let logs = Logs::default();
        SINK.with(|sink| *sink.borrow_mut() = Some(logs.clone()));
        (logs, Capture)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

/// Waits (really: Redis keeps real time) until `check` holds, at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
