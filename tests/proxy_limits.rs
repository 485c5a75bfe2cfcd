//! The real `blueprint-proxy` binary against hostile clients: half-open requests, more
//! connections than it serves, too few file descriptors, idle kept-alive connections,
//! request bodies over `--max-request-body`. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proxy_support::{FAST_RETRY, HeldUpstream, Process, Target, TempDir, yaml};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const HALF_OPEN: &[u8] = b"GET /healthz HTTP/1.1\r\n";

async fn start(name: &str, args: &[&str], nofile: Option<u64>) -> (Process, TempDir) {
    let dir = TempDir::new(name);
    std::fs::write(
        dir.path("i.yaml"),
        yaml("http://127.0.0.1:9", FAST_RETRY, ""),
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path("store.db").display());
    let proxy = Process::start_full(
        &dir.path("i.yaml"),
        &store,
        "127.0.0.1:0",
        &[],
        args,
        nofile,
    )
    .await;
    (proxy, dir)
}

/// Opens `n` connections that each send a request line and nothing more.
async fn half_open(target: &Target, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(target.addr).await.expect("connect");
        // A connection the proxy already refused may fail to take the write.
        let _ = stream.write_all(HALF_OPEN).await;
        streams.push(stream);
    }
    streams
}

/// Waits up to `bound` for the proxy to close `stream`; whether it did, and the bytes it sent.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    match tokio::time::timeout(bound, stream.read_to_end(&mut received)).await {
        Ok(_) => Some(received),
        Err(_) => None,
    }
}

/// `GET /healthz` on a new connection, bounded by `bound`: the status, 0 if none came.
async fn healthz(target: &Target, bound: Duration) -> u16 {
    let call = proxy_support::raw_or_refused(target.addr, "GET /healthz HTTP/1.1\r\nhost: x");
    tokio::time::timeout(bound, call)
        .await
        .map_or(0, |(status, _)| status)
}

/// A kept-alive HTTP/1.1 connection to the proxy.
async fn kept_alive(target: &Target) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(target.addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

async fn healthz_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    bound: Duration,
) -> u16 {
    let call = async {
        sender.ready().await.ok()?;
        let request = http::Request::get("/healthz")
            .header("host", "x")
            .body(Empty::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        response.into_body().collect().await.ok()?;
        Some(status)
    };
    tokio::time::timeout(bound, call)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// CPU time the process has used, in clock ticks (`/proc/<pid>/stat` utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let after_name = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `fields[0]` is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_requests_are_closed_after_the_header_timeout_while_others_are_served() {
    let (proxy, _dir) = start(
        "half-open",
        &["--header-read-timeout", "1", "--max-connections", "400"],
        None,
    )
    .await;
    let opened = Instant::now();
    let mut slow = half_open(&proxy, 300).await;

    // A normal call still answers promptly.
    let started = Instant::now();
    assert_eq!(healthz(&proxy, Duration::from_secs(2)).await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a normal call took {:?} among 300 half-open requests",
        started.elapsed()
    );

    // Every slow one is closed, once its time is up and not before.
    for (i, stream) in slow.iter_mut().enumerate() {
        let answer = closed_within(stream, Duration::from_secs(5)).await;
        assert!(
            answer.is_some(),
            "half-open connection {i} is still open after 5 s"
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the header timeout",
        opened.elapsed()
    );
    assert_eq!(healthz(&proxy, Duration::from_secs(2)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_cap_new_connections_are_closed_at_once() {
    let (mut proxy, _dir) = start(
        "cap",
        &["--header-read-timeout", "2", "--max-connections", "20"],
        None,
    )
    .await;
    let mut held = half_open(&proxy, 20).await;
    for attempt in 0..5 {
        let started = Instant::now();
        let status = healthz(&proxy, Duration::from_secs(5)).await;
        assert_eq!(status, 0, "call {attempt} past the cap was served");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a connection past the cap waited {:?} instead of being closed at once",
            started.elapsed()
        );
    }
    proxy.wait_for_log("at the connection limit").await;
    assert_eq!(
        proxy.logs().matches("at the connection limit").count(),
        1,
        "one log line per burst:\n{}",
        proxy.logs()
    );
    // Once the half-open ones time out, new connections are served again.
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(6))
                .await
                .is_some()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthz(&proxy, Duration::from_secs(2)).await != 200 {
        assert!(
            Instant::now() < deadline,
            "never served again after the burst"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.wait_for_log("below the connection limit again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_open_connections_are_served_and_new_ones_closed() {
    let (mut proxy, _dir) = start(
        "emfile",
        &["--header-read-timeout", "3", "--max-connections", "1000"],
        Some(64),
    )
    .await;
    let mut open = kept_alive(&proxy).await;
    assert_eq!(healthz_on(&mut open, Duration::from_secs(2)).await, 200);

    let pid = proxy.pid();
    let mut flood = half_open(&proxy, 120).await;
    proxy.wait_for_log("out of file descriptors").await;
    let ticks_before = cpu_ticks(pid);
    let window = Instant::now();

    // The connection already open is still served, promptly.
    let started = Instant::now();
    assert_eq!(healthz_on(&mut open, Duration::from_secs(2)).await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // The connections past the limit are closed at once (before the header timeout
    // could have closed them), not left hanging in the backlog.
    let mut closed_early = 0;
    for stream in flood.iter_mut().rev().take(30) {
        if let Some(answer) = closed_within(stream, Duration::from_millis(1500)).await {
            assert!(answer.is_empty(), "a refused connection was answered");
            closed_early += 1;
        }
    }
    assert!(
        closed_early >= 20,
        "only {closed_early} of 30 were closed at once"
    );
    // Not spinning: well under one CPU for the window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let used = cpu_ticks(pid) - ticks_before;
    let elapsed_ticks = u64::try_from(window.elapsed().as_millis() / 10).unwrap();
    assert!(
        used * 3 < elapsed_ticks,
        "the proxy used {used} ticks of CPU in {elapsed_ticks}: it spins"
    );
    proxy.wait_for_log("out of file descriptors").await;
    assert_eq!(
        proxy.logs().matches("out of file descriptors").count(),
        1,
        "one log line per burst:\n{}",
        proxy.logs()
    );

    // Once the half-open requests time out, new connections are served again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(8);
    while healthz(&proxy, Duration::from_secs(2)).await != 200 {
        assert!(
            Instant::now() < deadline,
            "never served again; logs:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.wait_for_log("file descriptors available again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_but_a_slow_call_is_not() {
    let slow = HeldUpstream::start("finally").await;
    let dir = TempDir::new("keep-alive");
    std::fs::write(dir.path("i.yaml"), yaml(&slow.url(), FAST_RETRY, "")).unwrap();
    let store = format!("sqlite://{}", dir.path("store.db").display());
    let proxy = Process::start_full(
        &dir.path("i.yaml"),
        &store,
        "127.0.0.1:0",
        &[],
        &["--keep-alive-timeout", "1", "--header-read-timeout", "30"],
        None,
    )
    .await;
    proxy
        .import(
            "intercom",
            "acme",
            json!({ "access_token": "tok_keepalive" }),
        )
        .await;

    // Idle after one answer: closed after about a second.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let received = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("an idle connection is still open after 5 s");
    assert!(
        String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"),
        "{received:?}"
    );
    assert!(
        answered.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        answered.elapsed()
    );

    // A call that takes longer than the keep-alive timeout is not cut.
    let target = proxy.target;
    let call = tokio::spawn(async move {
        target
            .send(target.proxy(Method::GET, "/slow", "intercom", "acme"))
            .await
    });
    slow.arrived().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    slow.release();
    let reply = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the slow call answers")
        .unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (200, "finally"));
}

/// An upstream that answers every `POST` 200 with the length of the body it received.
async fn counting_upstream() -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &wiremock::Request| {
            ResponseTemplate::new(200).set_body_string(request.body.len().to_string())
        })
        .mount(&upstream)
        .await;
    upstream
}

/// The binary in front of `upstream` with `args`, a token imported for `intercom`/`acme`.
async fn start_before(upstream: &MockServer, name: &str, args: &[&str]) -> (Process, TempDir) {
    let dir = TempDir::new(name);
    std::fs::write(dir.path("i.yaml"), yaml(&upstream.uri(), FAST_RETRY, "")).unwrap();
    let store = format!("sqlite://{}", dir.path("store.db").display());
    let proxy =
        Process::start_full(&dir.path("i.yaml"), &store, "127.0.0.1:0", &[], args, None).await;
    let imported = proxy
        .import("intercom", "acme", json!({ "access_token": "tok" }))
        .await;
    assert_eq!(imported.status, 201, "{}", imported.text());
    (proxy, dir)
}

/// The head of `POST /proxy/upload` for `intercom`/`acme`, with `framing` (a
/// `content-length` or `transfer-encoding` line), ending with the blank line.
fn upload_head(target: &Target, framing: &str) -> Vec<u8> {
    format!(
        "POST /proxy/upload HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         provider-config-key: intercom\r\nconnection-id: acme\r\nconnection: close\r\n\
         {framing}\r\n\r\n",
        target.addr,
        proxy_support::KEY
    )
    .into_bytes()
}

/// `body` in chunked encoding, in chunks of `size` bytes, with the last chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut encoded = Vec::new();
    for chunk in body.chunks(size) {
        encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

/// Sends `request` as it is on a connection of its own and reads the answer until the
/// proxy closes the connection (10 s at most): the status (0 if none came) and the answer.
async fn exchange(target: &Target, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(target.addr).await.expect("connect");
    // The proxy may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the proxy neither answered nor closed within 10 s"
    );
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The proxy's JSON error of an answer: its code and message.
fn error_of(answer: &str) -> (String, String) {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    let text = |field: &str| json["error"][field].as_str().unwrap_or_default().to_owned();
    (text("code"), text("message"))
}

/// `len` bytes that are not text: every value a byte has, in turn.
fn binary_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_request_body_are_refused_413_and_those_under_it_forwarded_as_sent() {
    let upstream = counting_upstream().await;
    let (proxy, _dir) = start_before(&upstream, "max-body", &["--max-request-body", "1000"]).await;

    // A Content-Length over the cap: 413 before anything is sent, the body unread (here
    // it is never sent at all).
    for length in [1001, 10 * 1024 * 1024] {
        let head = upload_head(&proxy, &format!("content-length: {length}"));
        let (status, answer) = exchange(&proxy, &head).await;
        assert_eq!(status, 413, "content-length {length}: {answer}");
        let (code, message) = error_of(&answer);
        assert_eq!(code, "body_too_large", "{answer}");
        assert!(
            message.contains("1000 bytes, --max-request-body")
                && message.contains("nothing was sent"),
            "{message}"
        );
    }
    // Without the proxy's key, the caller is refused for that and learns nothing of the cap.
    let keyless = String::from_utf8(upload_head(&proxy, "content-length: 1001"))
        .unwrap()
        .replace(
            &format!("authorization: Bearer {}\r\n", proxy_support::KEY),
            "",
        );
    let (status, answer) = exchange(&proxy, keyless.as_bytes()).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(error_of(&answer).0, "unauthorized", "{answer}");
    assert!(!answer.contains("max-request-body"), "{answer}");
    assert!(
        upstream.received_requests().await.unwrap().is_empty(),
        "a body over the cap reached the provider"
    );

    // A chunked body that passes the cap as it streams: the call is cut off, 413.
    let mut over = upload_head(&proxy, "transfer-encoding: chunked");
    over.extend(chunked(&binary_body(1200), 400));
    let (status, answer) = exchange(&proxy, &over).await;
    assert_eq!(status, 413, "{answer}");
    let (code, message) = error_of(&answer);
    assert_eq!(code, "body_too_large", "{answer}");
    assert!(message.contains("cut off"), "{message}");
    assert!(
        upstream.received_requests().await.unwrap().is_empty(),
        "the provider took a whole request from a body cut at the cap"
    );

    // At the cap, chunked or with a Content-Length: forwarded byte for byte.
    let body = binary_body(1000);
    let mut at_cap = upload_head(&proxy, "transfer-encoding: chunked");
    at_cap.extend(chunked(&body, 300));
    let (status, answer) = exchange(&proxy, &at_cap).await;
    assert_eq!(status, 200, "{answer}");
    let mut sized = upload_head(&proxy, "content-length: 1000");
    sized.extend_from_slice(&body);
    let (status, answer) = exchange(&proxy, &sized).await;
    assert_eq!(status, 200, "{answer}");
    let received = upstream.received_requests().await.unwrap();
    assert_eq!(received.len(), 2, "{received:?}");
    for request in &received {
        assert!(request.body == body, "the body was not forwarded as sent");
    }
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"code="body_too_large"} 3"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("errors"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_request_body_a_large_body_is_forwarded() {
    let upstream = counting_upstream().await;
    let (proxy, _dir) = start_before(&upstream, "no-max-body", &[]).await;
    let body = binary_body(8 * 1024 * 1024);
    let reply = proxy
        .send_body(
            proxy.proxy(Method::POST, "/upload", "intercom", "acme"),
            body.clone(),
        )
        .await;
    assert_eq!((reply.status, reply.text()), (200, body.len().to_string()));
    let received = upstream.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    assert!(
        received[0].body == body,
        "the body was not forwarded as sent"
    );
}

/// An upstream that, as soon as a request's head has come, starts a chunked answer (`200`,
/// one chunk `early`) and then reads the rest of the request without ever ending it.
async fn early_answering_upstream() -> std::net::SocketAddr {
    use tokio::io::AsyncBufReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nearly\r\n";
                if reader.get_mut().write_all(answer).await.is_err() {
                    return;
                }
                let mut sink = [0u8; 4096];
                while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// When the provider's answer has started before the body passes the cap, there is no 413
/// to send: the caller gets the start of the answer, and then the proxy closes the
/// connection with the answer unfinished (its chunked body never ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_passing_the_cap_after_the_answer_started_ends_the_connection() {
    let upstream = early_answering_upstream().await;
    let dir = TempDir::new("max-body-early");
    let config = yaml(&format!("http://{upstream}"), FAST_RETRY, "");
    std::fs::write(dir.path("i.yaml"), config).unwrap();
    let store = format!("sqlite://{}", dir.path("store.db").display());
    let args = ["--max-request-body", "1000"];
    let proxy =
        Process::start_full(&dir.path("i.yaml"), &store, "127.0.0.1:0", &[], &args, None).await;
    proxy
        .import("intercom", "acme", json!({ "access_token": "tok" }))
        .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut request = upload_head(&proxy, "transfer-encoding: chunked");
    request.extend_from_slice(b"258\r\n");
    request.extend_from_slice(&[b'x'; 600]);
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).await.unwrap();
    // The answer starts while the body is under the cap.
    let mut answer = Vec::new();
    let started = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        while !answer.ends_with(b"early\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(started.is_ok(), "the answer did not start: {text:?}");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    // 600 more bytes pass the cap: the connection ends, the answer unfinished.
    let mut rest = b"258\r\n".to_vec();
    rest.extend_from_slice(&[b'x'; 600]);
    rest.extend_from_slice(b"\r\n0\r\n\r\n");
    let _ = stream.write_all(&rest).await;
    let mut after = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => after.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open after the body passed the cap"
    );
    let after = String::from_utf8_lossy(&after).into_owned();
    assert!(
        !after.contains("0\r\n\r\n"),
        "the answer was finished: {after:?}"
    );
    assert!(!after.contains("HTTP/1.1 413"), "{after:?}");
}
