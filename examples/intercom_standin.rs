//! A local stand-in for Intercom's REST API, so the proxy and the client can be tried
//! offline: `GET /me`, `GET /contacts` (pages with `pages.next.starting_after`) and
//! `POST /contacts/search` (Intercom's query language, paged the same way), over seven
//! made-up contacts.
//!
//! It behaves like Intercom where the Blueprint stack cares: every call needs
//! `Authorization: Bearer <any token>` (401 `unauthorized` otherwise), a wrong
//! `Intercom-Version` is a 400, and authenticated answers carry `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds) for 10-second windows
//! per token, with Intercom's 429 `error.list` once a window's calls are spent. Errors are
//! Intercom's `{"type":"error.list","request_id":…,"errors":[{"code","message"}]}`.
//!
//! ```text
//! cargo run --example intercom_standin                       # on 127.0.0.1:3004
//! cargo run --example intercom_standin -- --listen 127.0.0.1:4000 --limit 5
//! curl -s http://127.0.0.1:3004/contacts?per_page=2 -H 'Authorization: Bearer anything'
//! ```
//!
//! `examples/integrations.standin.yaml` points the proxy's `intercom` integration at it.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Where the stand-in listens unless told otherwise (the address
/// `examples/integrations.standin.yaml` points at).
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:3004";
/// Calls per token per 10-second window: Intercom's figure for an app allowed 1,000 calls
/// a minute.
pub(crate) const DEFAULT_LIMIT: u32 = 166;
/// Intercom spreads its per-minute limit over 10-second windows.
pub(crate) const WINDOW_SECS: u64 = 10;
/// The most tokens whose windows are counted apart; more share one count.
const MAX_TOKENS: usize = 4096;
/// Intercom allows up to 150 items per page.
const MAX_PER_PAGE: usize = 150;
/// Intercom allows two levels of nested filters.
const MAX_NESTING: usize = 2;
/// And up to 15 filters in one AND or OR group.
const MAX_GROUP: usize = 15;
/// The Intercom-Version values Intercom accepts.
const VERSIONS: &[&str] = &[
    "1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7",
    "2.8", "2.9", "2.10", "2.11", "2.12", "2.13", "2.14", "2.15", "2.16", "Preview", "Unstable",
];

/// The clock of the rate-limit windows: seconds since the UNIX epoch.
pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The stand-in's state: its contacts, its clock and the calls counted per window.
#[derive(Clone)]
pub(crate) struct Standin {
    inner: Arc<Inner>,
}

struct Inner {
    limit: u32,
    clock: Clock,
    contacts: Vec<Value>,
    /// Per token: the window (epoch seconds / 10) and the calls counted in it.
    windows: Mutex<HashMap<String, (u64, u32)>>,
}

/// Numbers the error answers' `request_id`s.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// An answer with Intercom's `error.list` body.
#[derive(Debug)]
pub(crate) struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The rate-limit headers, on a 429.
    rate: Option<Box<HeaderMap>>,
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refused {
            status,
            code,
            message: message.into(),
            rate: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Refused::new(StatusCode::BAD_REQUEST, "parameter_invalid", message)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let n = REQUESTS.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "type": "error.list",
            "request_id": format!("00000000-0000-4000-8000-{n:012x}"),
            "errors": [{ "code": self.code, "message": self.message }],
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(rate) = self.rate {
            response.headers_mut().extend(*rate);
        }
        response
    }
}

impl Standin {
    /// A stand-in allowing `limit` calls per token per window, on the system clock.
    pub(crate) fn new(limit: u32) -> Self {
        Self::with_clock(limit, Arc::new(system_seconds))
    }

    /// The same on another clock (tests fix it, so a window never ends mid-test).
    pub(crate) fn with_clock(limit: u32, clock: Clock) -> Self {
        Standin {
            inner: Arc::new(Inner {
                limit,
                clock,
                contacts: contacts(),
                windows: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The routes.
    pub(crate) fn router(self) -> Router {
        Router::new()
            .route("/me", get(me))
            .route("/contacts", get(list_contacts))
            .route("/contacts/search", post(search_contacts))
            .fallback(not_found)
            .with_state(self)
    }

    /// Checks what Intercom checks before any endpoint, and counts the call. The rate-limit
    /// headers for the answer, or the refusal.
    fn admit(&self, headers: &HeaderMap) -> Result<HeaderMap, Refused> {
        if let Some(version) = headers.get("intercom-version") {
            let known = version.to_str().is_ok_and(|v| VERSIONS.contains(&v));
            if !known {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    "intercom_version_invalid",
                    "The requested Intercom-Version is not a version of the API",
                ));
            }
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            // Unauthenticated answers carry no rate-limit headers, as Intercom's.
            return Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Access Token Invalid",
            ));
        };
        let now = (self.inner.clock)();
        let window = now / WINDOW_SECS;
        let used = {
            let mut windows = self
                .inner
                .windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            windows.retain(|_, (w, _)| *w == window);
            let key = if windows.len() < MAX_TOKENS || windows.contains_key(token) {
                token.to_owned()
            } else {
                String::from("<others>")
            };
            let entry = windows.entry(key).or_insert((window, 0));
            entry.1 = entry.1.saturating_add(1);
            entry.1
        };
        let limit = self.inner.limit;
        let mut rate = HeaderMap::new();
        rate.insert("x-ratelimit-limit", HeaderValue::from(limit));
        rate.insert(
            "x-ratelimit-remaining",
            HeaderValue::from(limit.saturating_sub(used)),
        );
        rate.insert(
            "x-ratelimit-reset",
            HeaderValue::from((window + 1) * WINDOW_SECS),
        );
        if used > limit {
            let mut refused = Refused::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                format!("Exceeded rate limit of {limit} in 10_seconds"),
            );
            refused.rate = Some(Box::new(rate));
            return Err(refused);
        }
        Ok(rate)
    }

    /// One page of `items` after the `starting_after` cursor (the id of the last item
    /// of the page before).
    fn page(
        &self,
        items: &[&Value],
        per_page: usize,
        starting_after: Option<&str>,
    ) -> Result<Value, Refused> {
        let start = match starting_after {
            None => 0,
            Some(cursor) => match items.iter().position(|c| c["id"] == cursor) {
                Some(at) => at + 1,
                None => {
                    return Err(Refused::bad(
                        "starting_after is not a cursor of this listing",
                    ));
                }
            },
        };
        let data: Vec<&Value> = items.iter().skip(start).take(per_page).copied().collect();
        let total_pages = items.len().div_ceil(per_page);
        let page = start / per_page + 1;
        let mut pages = json!({
            "type": "pages",
            "page": page,
            "per_page": per_page,
            "total_pages": total_pages,
        });
        if start + data.len() < items.len() {
            if let Some(last) = data.last() {
                pages["next"] = json!({ "page": page + 1, "starting_after": last["id"] });
            }
        }
        Ok(json!({
            "type": "list",
            "data": data,
            "total_count": items.len(),
            "pages": pages,
        }))
    }

    fn per_page(value: Option<&Value>) -> Result<usize, Refused> {
        let invalid = || {
            Refused::bad(format!(
                "per_page must be a whole number from 1 to {MAX_PER_PAGE}"
            ))
        };
        let n = match value {
            None => return Ok(50),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(invalid)?,
            Some(Value::String(s)) => s.parse().map_err(|_| invalid())?,
            Some(_) => return Err(invalid()),
        };
        match usize::try_from(n) {
            Ok(n @ 1..=MAX_PER_PAGE) => Ok(n),
            _ => Err(invalid()),
        }
    }
}

fn system_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The answer with the rate-limit headers of the call.
fn answer(rate: HeaderMap, body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    response.headers_mut().extend(rate);
    response
}

async fn me(State(standin): State<Standin>, headers: HeaderMap) -> Result<Response, Refused> {
    let rate = standin.admit(&headers)?;
    Ok(answer(
        rate,
        json!({
            "type": "admin",
            "id": "991267460",
            "email": "admin@standin.example",
            "name": "Stand-in Admin",
            "email_verified": true,
            "has_inbox_seat": true,
            "app": {
                "type": "app",
                "id_code": "standin",
                "name": "Blueprint stand-in workspace",
                "created_at": 1_700_000_000,
                "secure": false,
                "identity_verification": false,
                "timezone": "UTC",
                "region": "US",
            },
        }),
    ))
}

async fn list_contacts(
    State(standin): State<Standin>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Refused> {
    let rate = standin.admit(&headers)?;
    let Ok(Query(query)) = query else {
        return Err(Refused::bad("the query string could not be read"));
    };
    let per_page = query.get("per_page").map(|p| Value::String(p.clone()));
    let per_page = Standin::per_page(per_page.as_ref())?;
    let all: Vec<&Value> = standin.inner.contacts.iter().collect();
    let page = standin.page(
        &all,
        per_page,
        query.get("starting_after").map(String::as_str),
    )?;
    Ok(answer(rate, page))
}

async fn search_contacts(
    State(standin): State<Standin>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    let rate = standin.admit(&headers)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|_| Refused::bad("the body is not JSON"))?;
    let query = body.get("query").ok_or_else(|| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            "parameter_not_found",
            "query is required",
        )
    })?;
    let pagination = body.get("pagination");
    let per_page = Standin::per_page(pagination.and_then(|p| p.get("per_page")))?;
    let starting_after = pagination
        .and_then(|p| p.get("starting_after"))
        .and_then(Value::as_str);
    let mut found = Vec::new();
    for contact in &standin.inner.contacts {
        if matches(query, contact, 0).map_err(Refused::bad)? {
            found.push(contact);
        }
    }
    let page = standin.page(&found, per_page, starting_after)?;
    Ok(answer(rate, page))
}

async fn not_found(State(standin): State<Standin>, headers: HeaderMap) -> Refused {
    if let Err(refused) = standin.admit(&headers) {
        return refused;
    }
    Refused::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "The stand-in answers only GET /me, GET /contacts and POST /contacts/search",
    )
}

/// Whether `contact` matches Intercom's search `query`: a filter `{field, operator, value}`
/// or a group `{operator: AND|OR, value: [queries]}`.
fn matches(query: &Value, contact: &Value, depth: usize) -> Result<bool, String> {
    let operator = query
        .get("operator")
        .and_then(Value::as_str)
        .ok_or("every filter needs an `operator`")?;
    let value = query.get("value").ok_or("every filter needs a `value`")?;
    if operator == "AND" || operator == "OR" {
        if depth >= MAX_NESTING {
            return Err(format!("filters nest at most {MAX_NESTING} levels deep"));
        }
        let group = value
            .as_array()
            .ok_or("the value of AND and OR is a list of filters")?;
        if group.is_empty() || group.len() > MAX_GROUP {
            return Err(format!("an AND or OR group holds 1 to {MAX_GROUP} filters"));
        }
        let mut results = Vec::with_capacity(group.len());
        for q in group {
            results.push(matches(q, contact, depth + 1)?);
        }
        return Ok(if operator == "AND" {
            results.iter().all(|m| *m)
        } else {
            results.iter().any(|m| *m)
        });
    }
    let field = query
        .get("field")
        .and_then(Value::as_str)
        .ok_or("a filter needs a `field`")?;
    let have = field
        .split('.')
        .try_fold(contact, |v, key| v.get(key))
        .unwrap_or(&Value::Null);
    let text = |v: &Value| match v {
        Value::String(s) => s.to_lowercase(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let compare = |want: &Value| -> Result<std::cmp::Ordering, String> {
        match (number(have), number(want)) {
            (Some(a), Some(b)) => Ok(a.total_cmp(&b)),
            _ => Err(format!("`{operator}` compares numbers and dates only")),
        }
    };
    let list = || {
        value
            .as_array()
            .ok_or_else(|| format!("the value of `{operator}` is a list"))
    };
    let (have_text, want_text) = (text(have), text(value));
    Ok(match operator {
        "=" => have_text == want_text,
        "!=" => have_text != want_text,
        "IN" => list()?.iter().any(|v| text(v) == have_text),
        "NIN" => !list()?.iter().any(|v| text(v) == have_text),
        "~" => have_text.contains(&want_text),
        "!~" => !have_text.contains(&want_text),
        "^" => have_text.starts_with(&want_text),
        "$" => have_text.ends_with(&want_text),
        "<" => compare(value)?.is_lt(),
        "<=" => compare(value)?.is_le(),
        ">" => compare(value)?.is_gt(),
        ">=" => compare(value)?.is_ge(),
        other => return Err(format!("`{other}` is not an operator of Intercom's search")),
    })
}

/// Seven made-up contacts, shaped like Intercom's contact object (the fields that matter).
fn contacts() -> Vec<Value> {
    [
        ("ada", "Ada Lovelace", "user", 1_700_000_100),
        ("alan", "Alan Turing", "user", 1_700_000_200),
        ("barbara", "Barbara Liskov", "user", 1_700_000_300),
        ("edsger", "Edsger Dijkstra", "lead", 1_700_000_400),
        ("grace", "Grace Hopper", "user", 1_700_000_500),
        ("katherine", "Katherine Johnson", "lead", 1_700_000_600),
        ("margaret", "Margaret Hamilton", "user", 1_700_000_700),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (handle, name, role, created_at))| {
        json!({
            "type": "contact",
            "id": format!("6657add46abd0167d9419c{:02x}", i + 1),
            "workspace_id": "standin",
            "external_id": format!("crm-{}", i + 1),
            "role": role,
            "email": format!("{handle}@example.com"),
            "name": name,
            "phone": null,
            "owner_id": null,
            "created_at": created_at,
            "updated_at": created_at,
            "signed_up_at": if role == "user" { json!(created_at) } else { Value::Null },
            "last_seen_at": null,
            "custom_attributes": {},
        })
    })
    .collect()
}

/// The command line: `[--listen ADDR] [--limit N]`.
fn settings(args: impl Iterator<Item = String>) -> Result<(SocketAddr, u32), String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut limit = DEFAULT_LIMIT;
    let mut args = args;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value("--listen")?,
            "--limit" => {
                let text = value("--limit")?;
                limit = text
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("--limit {text}: not a whole number above 0"))?;
            }
            "-h" | "--help" => {
                return Err(String::from(
                    "usage: intercom_standin [--listen ADDR] [--limit CALLS_PER_10_SECONDS]",
                ));
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let listen = listen
        .parse()
        .map_err(|_| format!("--listen {listen}: not an address such as 127.0.0.1:3004"))?;
    Ok((listen, limit))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (listen, limit) = match settings(std::env::args().skip(1)) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("intercom_standin: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("intercom_standin: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(listen, |a| a);
    println!("intercom stand-in listening on http://{addr} ({limit} calls per token per 10 s)");
    let app = Standin::new(limit).router();
    match axum::serve(listener, app).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intercom_standin: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
