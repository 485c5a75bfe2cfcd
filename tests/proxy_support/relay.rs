//! A TCP relay in front of Redis that a test cuts and restores, so that "Redis is down"
//! never means stopping the shared Redis server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Redis the tests use: `BLUEPRINT_TEST_REDIS_URL`, else 127.0.0.1:6379, checked to
/// answer, so that a test that needs it fails at once saying what to do instead of hanging.
pub async fn redis_addr() -> SocketAddr {
    let url = std::env::var("BLUEPRINT_TEST_REDIS_URL")
        .unwrap_or_else(|_| String::from("redis://127.0.0.1:6379/0"));
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
        "this test needs a Redis server at {addr} (set BLUEPRINT_TEST_REDIS_URL for another); \
         start one with `redis-server --daemonize yes`"
    );
    addr
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

/// How many times Redis has run `command` since it started (`INFO commandstats`), asked
/// over a connection of its own.
pub async fn command_calls(redis: SocketAddr, command: &str) -> u64 {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(redis))
        .await
        .expect("Redis answers")
        .expect("connect to Redis");
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .await
        .expect("write");
    let mut head = String::new();
    stream.read_line(&mut head).await.expect("read");
    let len: usize = head
        .trim()
        .trim_start_matches('$')
        .parse()
        .expect("a bulk reply");
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.expect("read");
    let body = String::from_utf8_lossy(&body);
    let prefix = format!("cmdstat_{command}:calls=");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
