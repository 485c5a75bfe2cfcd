//! Instructions per call of the engine's stack in memory, for a profiler that counts them
//! (`valgrind --tool=callgrind`): the whole stack, each layer alone, or the bare inner
//! service, over `N` calls on a current-thread runtime. Run it twice with different `N` and
//! take the slope, so that start-up costs drop out:
//!
//! ```text
//! B=$(cargo bench --bench stack_callgrind --no-run 2>&1 | sed -n 's/.*(\(.*\))/\1/p')
//! for n in 2000 4000; do WHICH=stack N=$n valgrind --tool=callgrind \
//!     --callgrind-out-file=cg.$n "$B"; done
//! # (summary of cg.4000 - summary of cg.2000) / 2000 = instructions per call
//! ```
//!
//! `WHICH` is `bare`, `stack` (the engine's default stack, a static token), or one layer
//! alone over the bare service: `trace`, `retry`, `ratelimit`, `refresh`, `auth`,
//! `timeout`. The inner service answers at once with Intercom's rate-limit headers, so the
//! rate-limit layer parses real ones. Unlike the criterion bench (`stack_overhead`), the
//! figure does not depend on what else the machine does.

#![allow(missing_docs, clippy::print_stdout)]

use std::convert::Infallible;
use std::time::Duration;

use blueprint::{Blueprint, StackBody, StackBuilder};
use blueprint_auth::{AuthLayer, StaticToken};
use blueprint_core::ReplayBody;
use blueprint_ratelimit::RateLimitLayer;
use blueprint_refresh::RefreshLayer;
use blueprint_retry::{AttemptTimeoutLayer, RetryLayer};
use blueprint_trace::TraceLayer;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt, service_fn};

const ORIGIN: &str = "http://api.example.com";
const ABSOLUTE: &str = "http://api.example.com/contacts";

fn ok<B>(_req: Request<B>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from_static("10000"));
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("9999"));
    headers.insert("x-ratelimit-reset", HeaderValue::from_static("4102444800"));
    std::future::ready(Ok(response))
}

fn token() -> StaticToken {
    StaticToken::new("bench-token").unwrap_or_else(|e| panic!("{e}"))
}

/// `n` calls of `uri` through clones of `service`, as a stack is called.
async fn run<S>(service: S, uri: &str, n: u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>> + Clone,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        let request = Request::get(uri)
            .body(Full::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = service
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        std::hint::black_box(response);
    }
}

fn main() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let which = std::env::var("WHICH").unwrap_or_else(|_| "stack".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let api = Blueprint::new("bench", "v1", ORIGIN)
        .and_then(|bp| bp.default_header("accept", "application/json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stack = StackBuilder::new(api, token())
        .layer()
        .unwrap_or_else(|e| panic!("{e}"));
    let chosen = which.clone();
    runtime.block_on(async move {
        match chosen.as_str() {
            "bare" => run(service_fn(ok::<Full<Bytes>>), ABSOLUTE, n).await,
            "stack" => {
                let service = stack.layer(service_fn(ok::<StackBody<Full<Bytes>>>));
                run(service, "/contacts", n).await;
            }
            "trace" => run(TraceLayer::new().layer(service_fn(ok)), ABSOLUTE, n).await,
            "retry" => {
                let service = RetryLayer::new().layer(service_fn(ok::<ReplayBody<Full<Bytes>>>));
                run(service, ABSOLUTE, n).await;
            }
            "ratelimit" => {
                run(
                    RateLimitLayer::intercom().layer(service_fn(ok)),
                    ABSOLUTE,
                    n,
                )
                .await;
            }
            "refresh" => {
                let service =
                    RefreshLayer::new(token()).layer(service_fn(ok::<ReplayBody<Full<Bytes>>>));
                run(service, ABSOLUTE, n).await;
            }
            "auth" => {
                let layer = AuthLayer::new(ORIGIN, token()).unwrap_or_else(|e| panic!("{e}"));
                run(layer.layer(service_fn(ok)), ABSOLUTE, n).await;
            }
            "timeout" => {
                let layer = AttemptTimeoutLayer::new(Duration::from_secs(30));
                run(layer.layer(service_fn(ok)), ABSOLUTE, n).await;
            }
            other => panic!(
                "WHICH={other}: one of bare, stack, trace, retry, ratelimit, refresh, auth, timeout"
            ),
        }
    });
    println!("stack_callgrind: {n} calls of `{which}`");
}
