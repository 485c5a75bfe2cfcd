//! A fake OAuth2 provider and API on loopback (axum), for the catalog and YAML-blueprint
//! tests: a token endpoint that exchanges codes and refreshes (rotating the refresh token
//! on every use when told to, refusing any but the current one with `invalid_grant`), and
//! an API that takes only the current access token, unexpired, and answers canned
//! rate-limit answers when some are queued.
//!
//! Any `POST` whose path ends in `/token`, `/tokens`, `/access_token` or `.access` is the
//! token endpoint; everything else is the API.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How the fake behaves; change it with [`Fake::set`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `expires_in` of every access token, if they expire.
    pub lifetime: Option<Duration>,
    /// Whether every refresh issues a new refresh token (and the old one stops working).
    pub rotate: bool,
    /// Whether refreshes are refused (`invalid_grant`) whatever the token.
    pub refuse_refresh: bool,
    /// Extra fields of every token answer (Salesforce's `instance_url`).
    pub extra: Vec<(String, Value)>,
    /// A `token_type` other than `bearer` (Slack's `bot`).
    pub token_type: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lifetime: None,
            rotate: true,
            refuse_refresh: false,
            extra: Vec::new(),
            token_type: "bearer".into(),
        }
    }
}

/// One request to the fake's token endpoint.
#[derive(Debug, Clone)]
pub struct TokenCall {
    pub path: String,
    pub grant_type: String,
    pub form: Vec<(String, String)>,
    /// Whether it was granted.
    pub granted: bool,
}

impl TokenCall {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request to the fake's API.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub headers: HeaderMap,
    pub status: u16,
}

/// An answer the API gives to the next call instead of its own.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Inner {
    settings: Settings,
    issued: u32,
    access: Option<(String, Option<SystemTime>)>,
    refresh: Option<String>,
    token_calls: Vec<TokenCall>,
    api_calls: Vec<ApiCall>,
    canned: VecDeque<Canned>,
    revoke_next: bool,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake, serving until dropped.
pub struct Fake {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start(settings: Settings) -> Fake {
        let shared = Shared::default();
        shared.lock().settings = settings;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the settings.
    pub fn set(&self, f: impl FnOnce(&mut Settings)) {
        f(&mut self.shared.lock().settings);
    }

    /// The next API calls get these answers, in order.
    pub fn queue(&self, status: u16, headers: &[(&str, &str)]) {
        self.shared.lock().canned.push_back(Canned {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        });
    }

    /// The next API call with the current access token gets a 401, and the token stops
    /// working (it was revoked early).
    pub fn revoke_next(&self) {
        self.shared.lock().revoke_next = true;
    }

    pub fn token_calls(&self) -> Vec<TokenCall> {
        self.shared.lock().token_calls.clone()
    }

    /// The refreshes asked for (granted or not).
    pub fn refreshes(&self) -> Vec<TokenCall> {
        self.token_calls()
            .into_iter()
            .filter(|c| c.grant_type == "refresh_token")
            .collect()
    }

    pub fn api_calls(&self) -> Vec<ApiCall> {
        self.shared.lock().api_calls.clone()
    }

    /// The refresh token the fake takes now.
    pub fn current_refresh(&self) -> Option<String> {
        self.shared.lock().refresh.clone()
    }

    /// When the current access token expires, if it does.
    pub fn access_expires_at(&self) -> Option<SystemTime> {
        self.shared.lock().access.as_ref().and_then(|(_, at)| *at)
    }

    /// The access token the fake takes now.
    pub fn current_access(&self) -> Option<String> {
        self.shared.lock().access.as_ref().map(|(t, _)| t.clone())
    }
}

fn is_token_path(path: &str) -> bool {
    ["/token", "/tokens", "/access_token", ".access"]
        .iter()
        .any(|end| path.ends_with(end))
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    if parts.method == http::Method::POST && is_token_path(&path) {
        return token(&shared, path, &body);
    }
    api(&shared, &parts, &path)
}

fn token(shared: &Shared, path: String, body: &[u8]) -> Response {
    let form: Vec<(String, String)> = form_pairs(body);
    let get = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let grant_type = get("grant_type").unwrap_or_default();
    let mut inner = shared.lock();
    let refused = match grant_type.as_str() {
        "authorization_code" => !get("code").is_some_and(|c| c.starts_with("code-")),
        "refresh_token" => {
            inner.settings.refuse_refresh
                || get("refresh_token").is_none()
                || get("refresh_token") != inner.refresh
        }
        _ => true,
    };
    inner.token_calls.push(TokenCall {
        path,
        grant_type: grant_type.clone(),
        form: form.clone(),
        granted: !refused,
    });
    if refused {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_grant" })),
        )
            .into_response();
    }
    inner.issued += 1;
    let n = inner.issued;
    let access = format!("at-{n}");
    let expires = inner
        .settings
        .lifetime
        .map(|lifetime| SystemTime::now() + lifetime);
    inner.access = Some((access.clone(), expires));
    if grant_type == "authorization_code" || inner.settings.rotate {
        inner.refresh = Some(format!("rt-{n}"));
    }
    let mut answer = json!({
        "access_token": access,
        "token_type": inner.settings.token_type,
        "refresh_token": inner.refresh,
    });
    if let Some(lifetime) = inner.settings.lifetime {
        answer["expires_in"] = json!(lifetime.as_secs());
    }
    for (name, value) in &inner.settings.extra {
        answer[name] = value.clone();
    }
    axum::Json(answer).into_response()
}

fn api(shared: &Shared, parts: &http::request::Parts, path: &str) -> Response {
    let authorization = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut inner = shared.lock();
    let record = |inner: &mut Inner, status: u16| {
        inner.api_calls.push(ApiCall {
            method: parts.method.to_string(),
            path: path.to_owned(),
            authorization: authorization.clone(),
            headers: parts.headers.clone(),
            status,
        });
    };
    if let Some(canned) = inner.canned.pop_front() {
        record(&mut inner, canned.status);
        let mut response = StatusCode::from_u16(canned.status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
        for (name, value) in &canned.headers {
            response.headers_mut().insert(
                HeaderName::try_from(name.as_str()).unwrap(),
                HeaderValue::try_from(value.as_str()).unwrap(),
            );
        }
        return response;
    }
    let valid = inner.access.as_ref().is_some_and(|(token, expires)| {
        authorization.as_deref() == Some(&format!("Bearer {token}"))
            && expires.is_none_or(|at| SystemTime::now() < at)
    });
    if valid && inner.revoke_next {
        inner.revoke_next = false;
        inner.access = None;
        record(&mut inner, 401);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if !valid {
        record(&mut inner, 401);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    record(&mut inner, 200);
    axum::Json(json!({ "ok": true, "path": path })).into_response()
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    // The token requests are `application/x-www-form-urlencoded`.
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of query parameter `name` in `url`, percent-decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(n) == name).then(|| decode(v))
    })
}
