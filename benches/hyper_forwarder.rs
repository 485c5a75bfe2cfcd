//! The floor under `benches/proxy.sh`: the least a proxy built on hyper can do for a call —
//! a hyper server on one worker thread that sets `Authorization` and forwards each request
//! to the upstream through a hyper-util client (keep-alive pool), streaming the answer
//! back. No routing, no store, no key check, no stack, no access log. `proxy.sh` runs it
//! as the row `hyper_floor`, so that the proxy's CPU per call can be split into what hyper
//! costs on its own and what is ours.
//!
//! ```text
//! FORWARD_LISTEN=127.0.0.1:8081 FORWARD_UPSTREAM=127.0.0.1:8080 \
//!     cargo bench --bench hyper_forwarder
//! ```
//!
//! Without `FORWARD_LISTEN` it says so and exits (so that `cargo bench` runs through).
//!
//! It allocates with mimalloc, as the proxy binary does by default: the floor and the
//! proxy then differ only by what the proxy does.

#![allow(missing_docs, clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::net::SocketAddr;

use http::header::AUTHORIZATION;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Incoming>;

async fn forward(
    client: Upstream,
    authority: Authority,
    mut request: Request<Incoming>,
) -> Result<Response<http_body_util::Either<Incoming, String>>, Infallible> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = request.uri().path_and_query().cloned();
    match Uri::from_parts(parts) {
        Ok(uri) => *request.uri_mut() = uri,
        Err(e) => return Ok(failed(StatusCode::BAD_REQUEST, e.to_string())),
    }
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer bench-token"),
    );
    request.headers_mut().remove(http::header::HOST);
    match client.request(request).await {
        Ok(response) => Ok(response.map(http_body_util::Either::Left)),
        Err(e) => Ok(failed(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}

fn failed(
    status: StatusCode,
    message: String,
) -> Response<http_body_util::Either<Incoming, String>> {
    let mut response = Response::new(http_body_util::Either::Right(message));
    *response.status_mut() = status;
    response
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(listen) = std::env::var("FORWARD_LISTEN") else {
        println!(
            "hyper_forwarder: set FORWARD_LISTEN and FORWARD_UPSTREAM to run it (benches/proxy.sh does)"
        );
        return Ok(());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: Authority = std::env::var("FORWARD_UPSTREAM")?.parse()?;
    // As the proxy's `--worker-threads 1`: a multi-thread runtime with one worker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let client = client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(move |request| forward(client.clone(), upstream.clone(), request));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    eprintln!("hyper_forwarder: connection: {e}");
                }
            });
        }
    })
}
