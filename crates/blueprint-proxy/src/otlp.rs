//! OpenTelemetry export: the trace of each proxied call, sent over OTLP/HTTP (JSON) to the
//! collector of `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! What is exported is the trace layer's `http.client` span of each call (see
//! [`blueprint_trace`]): `http.request.method`, `server.address`, `server.port`,
//! `url.template`, `http.response.status_code`, `http.request.resend_count`,
//! `error.type`, the connection id, and the span's end event; never a header, a query
//! value or a raw path. The proxy logs that span only at `blueprint_trace=debug`; the
//! exporter takes it whatever `RUST_LOG` says.
//!
//! Spans are batched by the OpenTelemetry SDK on a thread of its own and sent by the
//! engine's hyper client (rustls, so `https://` collectors work), run on the proxy's
//! runtime: no second HTTP stack. An unreachable collector costs the calls nothing
//! (a full batch queue drops spans, 2,048 at most); on shutdown, what is queued is sent
//! before the process exits.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::HttpError;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Handle;
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a collector's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;

/// The URL spans are sent to: the collector's base URL (`http://HOST:4318`) with the
/// specification's `/v1/traces` appended, as for `OTEL_EXPORTER_OTLP_ENDPOINT`; a URL that
/// already ends with it is kept.
///
/// # Errors
///
/// A message naming the flag, for a URL that is not `http://` or `https://` with a host.
pub(crate) fn traces_url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("--otlp-endpoint `{endpoint}` is not a URL ({e})"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "--otlp-endpoint `{endpoint}` must be http://HOST[:PORT] or https://HOST[:PORT] \
             (the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318)"
        ));
    }
    if uri.query().is_some() {
        return Err(format!(
            "--otlp-endpoint `{endpoint}` must not have a query"
        ));
    }
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        Ok(base.to_owned())
    } else {
        Ok(format!("{base}/v1/traces"))
    }
}

/// The exporter, running; [`Otlp::shutdown`] sends what is queued.
pub(crate) struct Otlp {
    provider: SdkTracerProvider,
}

impl fmt::Debug for Otlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otlp").finish_non_exhaustive()
    }
}

impl Otlp {
    /// An exporter to `traces_url` (see [`traces_url`]) whose requests run on `runtime`,
    /// and the `tracing` layer that feeds it the trace layer's spans.
    pub(crate) fn start<S>(
        traces_url: &str,
        runtime: Handle,
    ) -> Result<(Otlp, impl Layer<S>), String>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let client = blueprint::default_client::<Full<Bytes>>()
            .map_err(|e| format!("--otlp-endpoint: {e}"))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ExportClient { client, runtime })
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(traces_url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("--otlp-endpoint: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name("blueprint-proxy")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("blueprint-proxy");
        // The trace layer's spans (DEBUG in the proxy) and their end events; nothing else.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("blueprint_trace", Level::DEBUG));
        Ok((Otlp { provider }, layer))
    }

    /// Sends the spans still queued and stops. Call it while the runtime given to
    /// [`Otlp::start`] still runs, from outside it.
    pub(crate) fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the last traces could not be sent to the OTLP collector");
        }
    }
}

type HyperClient = blueprint::HttpsClient<Full<Bytes>>;

/// The exporter's HTTP client: the engine's hyper client, each request run on the proxy's
/// runtime (the SDK exports from a thread of its own, where no runtime is).
#[derive(Clone)]
struct ExportClient {
    client: HyperClient,
    runtime: Handle,
}

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportClient").finish_non_exhaustive()
    }
}

/// The collector did not answer within [`EXPORT_TIMEOUT`].
#[derive(Debug)]
struct ExportTimedOut;

impl fmt::Display for ExportTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the OTLP collector did not answer within {} s",
            EXPORT_TIMEOUT.as_secs()
        )
    }
}

impl std::error::Error for ExportTimedOut {}

impl opentelemetry_http::HttpClient for ExportClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let send = async {
                let response = client.request(request.map(Full::new)).await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(EXPORT_TIMEOUT, send).await {
                Ok(answer) => answer,
                Err(_) => Err(Box::new(ExportTimedOut) as HttpError),
            }
        });
        Box::pin(async move { task.await.map_err(|e| Box::new(e) as HttpError)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_the_base_url_and_v1_traces() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url(" https://otel.example.com/ ").as_deref(),
            Ok("https://otel.example.com/v1/traces")
        );
        assert_eq!(
            traces_url("http://c:4318/otlp/v1/traces").as_deref(),
            Ok("http://c:4318/otlp/v1/traces")
        );
        for bad in [
            "127.0.0.1:4318",
            "grpc://c:4317",
            "http://",
            "http://c/?x=1",
            "not a url",
        ] {
            let err = traces_url(bad).unwrap_err();
            assert!(err.contains("--otlp-endpoint"), "{bad}: {err}");
        }
    }
}
