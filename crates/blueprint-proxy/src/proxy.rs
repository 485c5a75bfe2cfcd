//! `ANY /proxy/{*path}`: a caller's request, through the integration's stack, with the
//! connection's token; the provider's answer streamed back.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use blueprint::Error as StackError;
use blueprint_core::{
    Attempt, AttemptCount, ConnectionId, NeedsReauthorization, TokenError, TokenErrorKind,
};
use http::header::{self, HeaderMap, HeaderName};
use http::uri::PathAndQuery;
use http::{StatusCode, Uri};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::app::ProxyState;
use crate::auth::Authorized;
use crate::error::{ApiError, printable};

/// The header that names the integration (as Nango's proxy does).
pub const PROVIDER_CONFIG_KEY: HeaderName = HeaderName::from_static("provider-config-key");
/// The header that names the connection.
pub const CONNECTION_ID: HeaderName = HeaderName::from_static("connection-id");

/// The route's prefix, taken off the raw path.
const PREFIX: &str = "/proxy";

/// What every path of the route starts with.
pub(crate) const ROUTE_PREFIX: &str = "/proxy/";

/// The longest integration name read from `Provider-Config-Key`.
const MAX_INTEGRATION_NAME: usize = 256;

// The lists of names are statics: a `const` array of names is built, and dropped, at each
// use.

/// Hop-by-hop headers (RFC 9110 section 7.6.1): never forwarded in either direction.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

/// Further headers of the caller's request that are not forwarded: `Host` (the stack sets
/// the provider's), the caller's credentials meant for the proxy, and the proxy's own
/// control headers.
// The request-only names the `match` of `dropped_from_request` is tested against.
#[cfg(test)]
static REQUEST_ONLY_DROP: [HeaderName; 5] = [
    header::HOST,
    header::AUTHORIZATION,
    header::COOKIE,
    PROVIDER_CONFIG_KEY,
    CONNECTION_ID,
];

/// The index in [`HOP_BY_HOP`] of `name`, if it is one: one `match` on the name's text (a
/// length switch and a comparison or two) instead of comparing it with each name in turn,
/// for every header of every call. A unit test holds the two lists together.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-authenticate" => Some(2),
        "proxy-authorization" => Some(3),
        "te" => Some(4),
        "trailer" => Some(5),
        "transfer-encoding" => Some(6),
        "upgrade" => Some(7),
        "proxy-connection" => Some(8),
        _ => None,
    }
}

/// Whether a caller's header stays out of the call to the provider: hop-by-hop or one of
/// the request-only names (`Host`, the proxy's `Authorization`, `Cookie`, the two naming
/// the call), with one `match` as [`hop_by_hop_index`].
fn dropped_from_request(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "authorization" | "cookie" | "provider-config-key" | "connection-id"
    ) || hop_by_hop_index(name).is_some()
}

/// Headers that tell a server which host and scheme the client asked for. Forwarded, they
/// could make the provider build links or route for a host the caller chose, so they are
/// dropped unless the proxy is built with
/// [`forward_host_headers`](crate::ProxyBuilder::forward_host_headers)
/// (`--forward-host-headers`).
pub(crate) static HOST_HEADERS: [HeaderName; 2] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-host"),
];

/// Methods never forwarded: `TRACE` (and IIS's `TRACK`) would have a provider that echoes
/// requests send back the connection's token; `CONNECT` asks for a tunnel, not an API call.
fn refused_method(method: &http::Method) -> bool {
    *method == http::Method::TRACE || *method == http::Method::CONNECT || method.as_str() == "TRACK"
}

/// The answer to a `/proxy` call whose method is never forwarded (405 JSON with `Allow`),
/// or `None` when it may be forwarded. Checked at the edge ([`crate::edge`]).
pub(crate) fn refuse_method(method: &http::Method) -> Option<Response> {
    if !refused_method(method) {
        return None;
    }
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is never forwarded: a provider that echoes requests would send back the \
             connection's token"
        ),
    )
    .into_response();
    response.headers_mut().insert(
        header::ALLOW,
        http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    Some(response)
}

/// What the access log says about one call.
struct Call<'a> {
    integration: &'a str,
    connection: &'a str,
    method: &'a http::Method,
    path: &'a str,
}

/// [`forward`] with what its extractors do (the caller's key, checked as [`Authorized`]
/// does): the edge's fast path calls it without axum's router ([`crate::edge::Front`]).
pub(crate) async fn forward_direct(state: ProxyState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match crate::auth::authorize(&parts, &state) {
        Ok(authorized) => forward(State(state), authorized, Request::from_parts(parts, body)).await,
        Err(refused) => refused.into_response(),
    }
}

pub(crate) async fn forward(
    State(state): State<ProxyState>,
    _auth: Authorized,
    request: Request,
) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics().in_flight();
    let (parts, body) = request.into_parts();
    let refused = |error: ApiError| {
        tracing::warn!(
            target: "blueprint_proxy::access",
            method = %parts.method,
            status = error.status().as_u16(),
            error.code = error.code(),
            error.message = error.message(),
            "refused"
        );
        error.into_response()
    };
    let (integration, connection) = match names(&parts.headers) {
        Ok(names) => names,
        Err(error) => return refused(error),
    };
    let connector = match state.connector(integration) {
        Ok(connector) => connector,
        Err(error) => return refused(error),
    };
    let path = parts.uri.path();
    let call = Call {
        integration,
        connection,
        method: &parts.method,
        path: path.strip_prefix(PREFIX).unwrap_or(path),
    };
    let outcome = send(&state, connector, &call, &parts, body).await;
    let elapsed = started.elapsed();
    let response = match outcome {
        Ok((response, attempts)) => {
            connector.metrics.record_latency(call.method, elapsed);
            log(&call, response.status(), attempts, elapsed, None);
            response
        }
        Err(Failure::BeforeStack(error)) => {
            log(&call, error.status(), 0, elapsed, Some(&error));
            error.into_response()
        }
        Err(Failure::InStack(error, attempts)) => {
            connector.metrics.record_latency(call.method, elapsed);
            log(&call, error.status(), attempts, elapsed, Some(&error));
            error.into_response()
        }
    };
    connector.metrics.record_status(response.status().as_u16());
    response
}

enum Failure {
    /// Refused before anything reached the stack.
    BeforeStack(ApiError),
    /// The stack failed, after this many attempts went out (0: none did).
    InStack(ApiError, u32),
}

/// The integration and connection the caller named. The connection id follows the one
/// rule for ids ([`crate::ids`]), as sent: never trimmed.
fn names(headers: &HeaderMap) -> Result<(&str, &str), ApiError> {
    let present = |name: &HeaderName| {
        headers.get(name).ok_or_else(|| {
            ApiError::bad_request(
                "missing_header",
                format!(
                    "the `{name}` header is missing: send `Provider-Config-Key: <integration>` \
                     and `Connection-Id: <connection>`"
                ),
            )
        })
    };
    let integration = present(&PROVIDER_CONFIG_KEY)?
        .to_str()
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= MAX_INTEGRATION_NAME)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_header",
                format!(
                    "the `{PROVIDER_CONFIG_KEY}` header must be 1 to {MAX_INTEGRATION_NAME} \
                     visible ASCII characters"
                ),
            )
        })?;
    let connection = present(&CONNECTION_ID)?
        .to_str()
        .ok()
        .filter(|id| crate::ids::is_valid_connection_id(id))
        .ok_or_else(crate::ids::invalid)?;
    Ok((integration, connection))
}

/// Sends the call through the integration's stack.
async fn send(
    state: &ProxyState,
    connector: &crate::app::Connector,
    call: &Call<'_>,
    parts: &http::request::Parts,
    body: Body,
) -> Result<(Response, u32), Failure> {
    let stack = connector
        .stack_for(&**state.store(), call.connection)
        .await
        .map_err(Failure::BeforeStack)?;
    let uri = target(&parts.uri, call.path).ok_or_else(|| {
        Failure::BeforeStack(ApiError::bad_request(
            "invalid_path",
            "the path and query cannot form a request target",
        ))
    })?;
    let mut request = http::Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    let named_by_connection = connection_named(&parts.headers);
    for (name, value) in &parts.headers {
        if dropped_from_request(name) || named_by_connection.iter().any(|n| n == name) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    request
        .extensions_mut()
        .insert(ConnectionId::new(call.connection));
    // A failed call has no response to say how many attempts it took: the retry layer
    // counts them here.
    let count = AttemptCount::new();
    request.extensions_mut().insert(count.clone());

    match stack.oneshot(request).await {
        Ok(response) => {
            let attempts = response
                .extensions()
                .get::<Attempt>()
                .map_or(1, |a| a.number());
            if response
                .extensions()
                .get::<NeedsReauthorization>()
                .is_some()
            {
                return Err(Failure::InStack(
                    needs_reauthorization(call, "the provider refused the connection's token"),
                    attempts,
                ));
            }
            Ok((pass_through(response), attempts))
        }
        Err(error) => Err(Failure::InStack(classify(call, &error), count.get())),
    }
}

/// The relative target sent into the stack: the caller's path less [`PREFIX`], and its
/// query. Built from the raw path, still percent-encoded, so that the engine's base-URL
/// layer sees `%2e%2e` and `%2f` as sent and refuses them.
fn target(uri: &Uri, path: &str) -> Option<Uri> {
    // The caller's path and query are one slice, `path?query`: parsed as it is, without
    // putting it together again. (A URI without one is `CONNECT`'s, refused at the edge.)
    let slice = uri
        .path_and_query()
        .and_then(|pq| pq.as_str().strip_prefix(PREFIX))
        .filter(|rest| rest.starts_with(path));
    let parsed = match slice {
        Some(target) => PathAndQuery::try_from(target).map(Uri::from),
        None => match uri.query() {
            Some(query) => format!("{path}?{query}").parse(),
            None => path.parse(),
        },
    };
    parsed.ok()
}

/// Headers named by a message's `Connection` header, hop-by-hop too: only those that are
/// not hop-by-hop anyway and that the message holds, each once, for the rest would be
/// skipped or removed for nothing. So the list is never longer than the message's own
/// headers, however many names the `Connection` header lists, and the usual `keep-alive`
/// and `close` cost no allocation.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let values = headers.get_all(header::CONNECTION);
    // The usual cases, decided without looking at the list: no `Connection` header, or
    // one saying `keep-alive` (itself hop-by-hop).
    let mut each = values.iter();
    match (each.next(), each.next()) {
        (None, _) => return Vec::new(),
        (Some(only), None) if only.as_bytes().eq_ignore_ascii_case(b"keep-alive") => {
            return Vec::new();
        }
        _ => {}
    }
    // On bytes: a value `to_str` takes is visible ASCII, spaces and tabs, which `trim`
    // and `trim_ascii` trim alike.
    let matters = |token: &[u8]| {
        !HOP_BY_HOP
            .iter()
            .any(|name| name.as_str().as_bytes().eq_ignore_ascii_case(token))
            && std::str::from_utf8(token).is_ok_and(|token| headers.contains_key(token))
    };
    let mut named: Vec<HeaderName> = Vec::new();
    let tokens = values
        .iter()
        .filter(|v| v.to_str().is_ok())
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii);
    for token in tokens {
        if !matters(token) {
            continue;
        }
        // A name the map holds parses; the list holds each once.
        if let Ok(name) = HeaderName::from_bytes(token) {
            if !named.contains(&name) {
                named.push(name);
            }
        }
    }
    named
}

/// The provider's answer, streamed: status and headers as received, less hop-by-hop ones,
/// and less a `Content-Length` that may not describe the body sent on.
fn pass_through<B>(response: http::Response<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<blueprint_core::BoxError>,
{
    let (mut parts, body) = response.into_parts();
    // With `Transfer-Encoding` the body was framed by it, and a `Content-Length` beside it
    // is stale (RFC 9112 section 6.3); forwarded, it would cut the answer short.
    let framed_by_encoding = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let named = connection_named(&parts.headers);
    // One pass over the names held, then removals of those present only, in the order of
    // the list (a removal moves the last header into the gap: the order is kept as before).
    let mut present = 0u16;
    for name in parts.headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            parts.headers.remove(name);
        }
    }
    for name in &named {
        parts.headers.remove(name);
    }
    if framed_by_encoding || !content_length_fits(&parts.headers, parts.status, &body) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    // Extensions of the client and layers stay inside the proxy, and the provider's HTTP
    // version (1.0, 2) is not this connection's. Cleared rather than replaced: the map
    // the client made is reused, and the marker, a zero-sized value, allocates nothing.
    parts.extensions.clear();
    parts.extensions.insert(crate::error::Verbatim);
    parts.version = http::Version::default();
    Response::from_parts(parts, Body::new(body))
}

/// Whether the answer's `Content-Length` (if any) can be sent with `body`: one value, a
/// number, and the body's exact size where that is known. An empty body keeps it (the
/// answer to `HEAD`, a 304), and so do answers that never have a body.
fn content_length_fits<B: http_body::Body>(
    headers: &HeaderMap,
    status: StatusCode,
    body: &B,
) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return true;
    };
    let declared = first
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared else {
        return false;
    };
    if values.any(|v| v != first) {
        return false;
    }
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return true;
    }
    let hint = body.size_hint();
    match hint.exact() {
        Some(0) => true,
        Some(exact) => exact == declared,
        None => hint.lower() <= declared && hint.upper().is_none_or(|upper| upper >= declared),
    }
}

fn needs_reauthorization(call: &Call<'_>, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FAILED_DEPENDENCY,
        "needs_reauthorization",
        format!(
            "{why}: connection `{}` of `{}` must be authorized again (a connect session, POST /connect/sessions, or PUT /connections/{}/…)",
            printable(call.connection),
            call.integration,
            call.integration
        ),
    )
}

/// The proxy's answer for a call the stack failed.
fn classify(call: &Call<'_>, error: &StackError) -> ApiError {
    // The caller's own body failing (a stall, malformed chunks) is the caller's fault.
    if let Some(caller) = error.find::<crate::body::CallerBodyError>() {
        return caller.to_api();
    }
    let token_kind = error.find::<TokenError>().map(TokenError::kind);
    if error.is_invalid_path() {
        let reason = error
            .find::<blueprint::InvalidPath>()
            .map_or("it would leave the integration's base URL", |e| e.reason());
        return ApiError::bad_request(
            "invalid_path",
            format!("the path was refused, nothing was sent: {reason}"),
        );
    }
    if token_kind == Some(TokenErrorKind::NotFound) {
        return ApiError::unknown_connection(call.integration, call.connection);
    }
    if error.needs_reauthorization() {
        return needs_reauthorization(call, "the connection's credentials were refused");
    }
    if error.is_rate_limited() {
        let after = error.retry_after().unwrap_or(Duration::from_secs(1));
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "connection `{}` has spent its rate limit and it frees up after the call's \
                 deadline; nothing was sent: try again after {} s",
                printable(call.connection),
                crate::error::retry_after_secs(after)
            ),
        )
        .retry_after(after);
    }
    if error.is_deadline() {
        return ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            format!("the call's deadline passed before the provider answered: {error}"),
        );
    }
    if error.is_timeout() {
        return ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the provider did not answer in time: {error}"),
        );
    }
    if let Some(store) = error.find::<blueprint_refresh::StoreError>() {
        return ApiError::store(store);
    }
    if error.is_token_unavailable() {
        let api = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "token_unavailable",
            format!("no access token could be had for now; nothing was sent: {error}"),
        );
        return match error.retry_after() {
            Some(after) => api.retry_after(after),
            None => api,
        };
    }
    if error.is_transport() {
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!("the provider could not be reached: {error}"),
        );
    }
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!("the call failed without an answer: {error}"),
    )
}

/// The access log: one line per call, never a header or query value.
fn log(
    call: &Call<'_>,
    status: StatusCode,
    attempts: u32,
    elapsed: Duration,
    error: Option<&ApiError>,
) {
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    match error {
        None => tracing::info!(
            target: "blueprint_proxy::access",
            integration = call.integration,
            connection = call.connection,
            method = %call.method,
            path = call.path,
            status = status.as_u16(),
            attempts,
            duration_ms,
            "proxied"
        ),
        Some(error) => tracing::warn!(
            target: "blueprint_proxy::access",
            integration = call.integration,
            connection = call.connection,
            method = %call.method,
            path = call.path,
            status = status.as_u16(),
            attempts,
            duration_ms,
            error.code = error.code(),
            error.message = error.message(),
            "proxied"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `match`es say of each name what the lists say, and nothing of other names.
    #[test]
    fn the_matches_agree_with_the_lists_of_names() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
            assert!(dropped_from_request(name), "{name}");
        }
        for name in &REQUEST_ONLY_DROP {
            assert_eq!(hop_by_hop_index(name), None, "{name}");
            assert!(dropped_from_request(name), "{name}");
        }
        for kept in [
            "accept",
            "content-type",
            "content-length",
            "x-request-id",
            "connection-ids",
            "t",
            "trailers",
        ] {
            let name = HeaderName::from_static(kept);
            assert_eq!(hop_by_hop_index(&name), None, "{kept}");
            assert!(!dropped_from_request(&name), "{kept}");
        }
    }
    use http_body_util::{Empty, Full};

    fn with_length(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::CONTENT_LENGTH, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn connection_names_only_what_the_message_holds_and_is_not_hop_by_hop_anyway() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        let named = |pairs| connection_named(&headers(pairs));
        assert!(named(&[]).is_empty());
        assert!(named(&[("connection", "keep-alive")]).is_empty());
        assert!(named(&[("connection", "Keep-Alive"), ("keep-alive", "timeout=5")]).is_empty());
        assert!(
            named(&[("connection", "x-hop")]).is_empty(),
            "x-hop is not held"
        );
        assert_eq!(
            named(&[("connection", "keep-alive, X-Hop"), ("x-hop", "1")]),
            ["x-hop"]
        );
        assert_eq!(named(&[("connection", "x-hop"), ("x-hop", "1")]), ["x-hop"]);
        // Two `Connection` headers: each is read.
        assert_eq!(
            named(&[
                ("connection", "keep-alive"),
                ("connection", "x-hop"),
                ("x-hop", "1")
            ]),
            ["x-hop"]
        );
        // Named twice, listed once.
        assert_eq!(
            named(&[("connection", "x-hop, X-HOP ,x-hop"), ("x-hop", "1")]),
            ["x-hop"]
        );
        // `close` names a field only when the message has one by that name.
        assert!(named(&[("connection", "close")]).is_empty());
        assert_eq!(named(&[("connection", "close"), ("close", "1")]), ["close"]);
    }

    /// The list is bounded by the message's own headers, not by the caller's
    /// `Connection` header: 10,000 names, one of them held, give that one.
    #[test]
    fn a_connection_header_of_ten_thousand_names_gives_only_the_one_held() {
        let mut list = (0..10_000)
            .map(|i| format!("x-absent-{i}"))
            .collect::<Vec<_>>();
        list[5_000] = String::from("X-Held");
        list.push(String::from("keep-alive"));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, list.join(", ").parse().unwrap());
        headers.insert("x-held", http::HeaderValue::from_static("1"));
        headers.insert("x-other", http::HeaderValue::from_static("2"));
        assert_eq!(connection_named(&headers), ["x-held"]);
        // Named again and again, it is still one name.
        let again = vec!["x-held"; 10_000].join(",");
        headers.insert(header::CONNECTION, again.parse().unwrap());
        assert_eq!(connection_named(&headers), ["x-held"]);
    }

    #[test]
    fn a_content_length_is_kept_only_when_it_describes_the_body() {
        let five = Full::new(bytes::Bytes::from_static(b"hello"));
        let ok = StatusCode::OK;
        assert!(content_length_fits(&with_length(&[]), ok, &five));
        assert!(content_length_fits(&with_length(&["5"]), ok, &five));
        assert!(content_length_fits(&with_length(&["5", "5"]), ok, &five));
        assert!(!content_length_fits(&with_length(&["1"]), ok, &five));
        assert!(!content_length_fits(&with_length(&["100"]), ok, &five));
        assert!(!content_length_fits(&with_length(&["5", "6"]), ok, &five));
        assert!(!content_length_fits(&with_length(&["five"]), ok, &five));
        // The answer to HEAD, a 304: no body, the length of the one that would be.
        let empty = Empty::<bytes::Bytes>::new();
        assert!(content_length_fits(&with_length(&["1234"]), ok, &empty));
        assert!(content_length_fits(
            &with_length(&["1234"]),
            StatusCode::NOT_MODIFIED,
            &five
        ));
    }

    #[test]
    fn trace_track_and_connect_are_refused() {
        for method in ["TRACE", "TRACK", "CONNECT"] {
            assert!(refused_method(
                &http::Method::from_bytes(method.as_bytes()).unwrap()
            ));
        }
        for method in [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
        ] {
            assert!(!refused_method(
                &http::Method::from_bytes(method.as_bytes()).unwrap()
            ));
        }
    }
}
