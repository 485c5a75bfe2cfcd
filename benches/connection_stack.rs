//! What a connection's own stack costs, for blueprints whose base URL names connection
//! parameters (Zendesk's subdomain): the proxy builds one per connection when it is first
//! called (and when its parameters change), then reuses it.
//!
//! - `build`: `StackBuilder::for_connection` (the blueprint filled in and checked) and
//!   the stack built around an inner service: the cost of a cache miss;
//! - `call/shared` and `call/per_connection`: one request through the integration's stack
//!   and through a connection's, the inner service answering at once.
//!
//! `cargo bench --bench connection_stack`

#![allow(missing_docs, clippy::semicolon_if_nothing_returned)]

use std::convert::Infallible;

use blueprint::{Blueprint, ConnectionParam, ParamSource, StackBody, StackBuilder};
use blueprint_auth::StaticToken;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use tower::ServiceExt;

fn ok(
    _req: Request<StackBody<Full<Bytes>>>,
) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
}

fn builders() -> (StackBuilder, StackBuilder) {
    let token = || StaticToken::new("bench-token").unwrap_or_else(|e| panic!("{e}"));
    let shared = Blueprint::new("zd", "v2", "https://acme.zendesk.test/api/v2")
        .and_then(|bp| bp.default_header("accept", "application/json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let templated = Blueprint::new("zd", "v2", "https://zd.invalid")
        .map(|bp| {
            bp.with_connection_param(
                ConnectionParam::new("subdomain", ParamSource::ConnectQuery)
                    .and_then(|p| p.pattern("[a-z0-9][a-z0-9-]{0,62}"))
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .and_then(|bp| bp.with_base_url("https://${connection.subdomain}.zendesk.test/api/v2"))
        .and_then(|bp| bp.default_header("accept", "application/json"))
        .unwrap_or_else(|e| panic!("{e}"));
    (
        StackBuilder::new(shared, token()),
        StackBuilder::new(templated, token()).share_rate_limit(),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (shared, template) = builders();
    let inner = tower::service_fn(ok);
    c.bench_function("connection_stack/build", |b| {
        b.iter(|| {
            template
                .for_connection(|_| Some("acme".to_owned()))
                .and_then(|builder| builder.service(inner))
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    let one = shared.service(inner).unwrap_or_else(|e| panic!("{e}"));
    let own = template
        .for_connection(|_| Some("acme".to_owned()))
        .and_then(|builder| builder.service(inner))
        .unwrap_or_else(|e| panic!("{e}"));
    let request = || {
        Request::get("/tickets/1")
            .body(Full::<Bytes>::default())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    c.bench_function("connection_stack/call/shared", |b| {
        b.iter(|| rt.block_on(one.clone().oneshot(request())))
    });
    c.bench_function("connection_stack/call/per_connection", |b| {
        b.iter(|| rt.block_on(own.clone().oneshot(request())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
