//! Connect sessions: the only way to start authorizing a connection.
//!
//! The application's backend, holding the secret key, asks for a session with
//! `POST /connect/sessions` and sends the person's browser to the `url` it answers
//! (`/connect?session=<token>`), which redirects to the provider. Without a live session
//! nothing is started and nothing is stored, and every invalid token gets the same answer,
//! so nobody without the key can bind a connection, flood pending authorizations, or tell
//! existing connection ids apart.
//!
//! A session names one integration and one connection id; it dies at its `expires_at`
//! (default 30 minutes, at most a day) and is used up by the callback that ends its flow,
//! whatever the outcome. Visiting its URL again while the provider's page is still valid
//! sends the person to the same authorization; later visits start a fresh one, which
//! replaces it. Tokens are 256 random bits, kept only as their SHA-256, looked up by that
//! hash, and never logged.
//!
//! At most [`MAX_SESSIONS`] live at once; past that, `POST /connect/sessions` answers
//! 503 `too_many_sessions` with `Retry-After` until one expires or is used: live sessions
//! are never evicted to make room.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use blueprint::ParamSource;
use blueprint_core::ConnectionId;
use blueprint_refresh::{AuthorizeError, ConnectionParams, DEFAULT_PENDING_TTL};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::app::ProxyState;
use crate::auth::Authorized;
use crate::error::{ApiError, printable};

/// How long a session lives unless `expires_in` says otherwise: 30 minutes.
pub(crate) const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// The shortest `expires_in` accepted: one minute.
pub(crate) const MIN_SESSION_TTL: Duration = Duration::from_secs(60);
/// The longest `expires_in` accepted: one day.
pub(crate) const MAX_SESSION_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The most sessions live at once.
pub const MAX_SESSIONS: usize = 10_000;

/// How long a started authorization is reused by a second visit: a minute less than the
/// flow keeps it, so the person never lands on a provider page whose state has expired.
const REUSE_FOR: Duration = Duration::from_secs(DEFAULT_PENDING_TTL.as_secs() - 60);

const FIELDS: [&str; 4] = ["integration", "connection_id", "expires_in", "params"];

type TokenHash = [u8; 32];

/// The live connect sessions of one proxy.
#[derive(Default)]
pub(crate) struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_token: HashMap<TokenHash, Session>,
    /// The `state` of each session's current authorization, to its session.
    by_state: HashMap<String, TokenHash>,
}

struct Session {
    integration: usize,
    connection: ConnectionId,
    params: ConnectionParams,
    expires: Instant,
    started: Option<Started>,
}

struct Started {
    state: String,
    url: String,
    at: Instant,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.lock().by_token.len())
            .finish()
    }
}

/// A new session's token (shown once) and expiry.
pub(crate) struct Created {
    pub(crate) token: String,
    pub(crate) expires_at: SystemTime,
}

/// The bound is reached; one frees up after this long.
#[derive(Debug)]
pub(crate) struct Full(pub(crate) Duration);

/// No live session has this token (never issued, expired, or used up).
#[derive(Debug)]
pub(crate) struct Invalid;

/// What a visit of a session's URL leads to.
pub(crate) struct Begun {
    /// The integration (index into the proxy's connectors).
    pub(crate) integration: usize,
    pub(crate) url: String,
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session for `connection` of the integration at `integration`.
    #[cfg(test)]
    pub(crate) fn create(
        &self,
        integration: usize,
        connection: ConnectionId,
        ttl: Duration,
    ) -> Result<Created, Full> {
        self.create_with(integration, connection, ConnectionParams::new(), ttl)
    }

    /// Starts a session for `connection` of the integration at `integration`, with the
    /// connection parameters the backend gave.
    pub(crate) fn create_with(
        &self,
        integration: usize,
        connection: ConnectionId,
        params: ConnectionParams,
        ttl: Duration,
    ) -> Result<Created, Full> {
        let mut random = [0u8; 32];
        if getrandom::fill(&mut random).is_err() {
            // No randomness, no session: say when to try again rather than issue a weak token.
            return Err(Full(Duration::from_secs(1)));
        }
        let mut token = String::with_capacity(64);
        for byte in random {
            let _ = write!(token, "{byte:02x}");
        }
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge(now);
        if inner.by_token.len() >= MAX_SESSIONS {
            let soonest = inner
                .by_token
                .values()
                .map(|s| s.expires.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(1));
            return Err(Full(soonest));
        }
        inner.by_token.insert(
            hash(&token),
            Session {
                integration,
                connection,
                params,
                expires: now + ttl,
                started: None,
            },
        );
        Ok(Created {
            token,
            expires_at: SystemTime::now() + ttl,
        })
    }

    /// A visit of the session's URL: the authorization URL to send the person to, from
    /// `authorize(integration, connection, params)` (called under the lock, so that two
    /// visits at once start one authorization) or the one started by an earlier visit.
    pub(crate) fn begin<E>(
        &self,
        token: &str,
        authorize: impl FnOnce(usize, &ConnectionId, &ConnectionParams) -> Result<(String, String), E>,
    ) -> Result<Result<Begun, E>, Invalid> {
        let now = Instant::now();
        let key = hash(token);
        let mut inner = self.lock();
        inner.purge(now);
        let Some(session) = inner.by_token.get_mut(&key) else {
            return Err(Invalid);
        };
        let integration = session.integration;
        if let Some(started) = &session.started {
            if now.saturating_duration_since(started.at) < REUSE_FOR {
                return Ok(Ok(Begun {
                    integration,
                    url: started.url.clone(),
                }));
            }
        }
        let (url, state) = match authorize(integration, &session.connection, &session.params) {
            Ok(started) => started,
            Err(e) => return Ok(Err(e)),
        };
        let replaced = session.started.replace(Started {
            state: state.clone(),
            url: url.clone(),
            at: now,
        });
        if let Some(old) = replaced {
            inner.by_state.remove(&old.state);
        }
        inner.by_state.insert(state, key);
        Ok(Ok(Begun { integration, url }))
    }

    /// The callback of `state`: uses up its session and names its integration, if the
    /// session is live and `state` is its current authorization.
    pub(crate) fn finish(&self, state: &str) -> Option<usize> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge(now);
        let key = inner.by_state.remove(state)?;
        inner.by_token.remove(&key).map(|s| s.integration)
    }

    /// How many sessions are live.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_token.len()
    }
}

impl Inner {
    /// Forgets the sessions that have expired.
    fn purge(&mut self, now: Instant) {
        let by_state = &mut self.by_state;
        self.by_token.retain(|_, session| {
            let live = now < session.expires;
            if !live {
                if let Some(started) = &session.started {
                    by_state.remove(&started.state);
                }
            }
            live
        });
    }
}

/// `POST /connect/sessions`: `{"integration", "connection_id", "expires_in"?}` → 201
/// `{"token", "url", "expires_at"}`.
pub(crate) async fn create(
    State(state): State<ProxyState>,
    _auth: Authorized,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| crate::body::rejection(&e))?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        invalid(format!(
            "the body must be JSON {{\"integration\": \"…\", \"connection_id\": \"…\", \
             \"expires_in\": seconds}} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(fields) = value else {
        return Err(invalid("the body must be a JSON object"));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field `{}`; the fields are {}",
            printable(unknown),
            FIELDS.join(", ")
        )));
    }
    let text = |name: &str| match fields.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        _ => Err(invalid(format!(
            "`{name}` is required and must be a string"
        ))),
    };
    let integration = text("integration")?;
    let connection = text("connection_id")?;
    let ttl = match fields.get("expires_in") {
        None | Some(Value::Null) => DEFAULT_SESSION_TTL,
        Some(value) => value
            .as_u64()
            .map(Duration::from_secs)
            .filter(|ttl| (MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(ttl))
            .ok_or_else(|| {
                invalid(format!(
                    "`expires_in` must be a whole number of seconds from {} to {} (one day); \
                     leave it out for {}",
                    MIN_SESSION_TTL.as_secs(),
                    MAX_SESSION_TTL.as_secs(),
                    DEFAULT_SESSION_TTL.as_secs()
                ))
            })?,
    };
    let index = state.connector_index(integration)?;
    let connector = &state.connectors()[index];
    if connector.flow.is_none() {
        return Err(crate::oauth::not_configured(integration));
    }
    let connection = crate::ids::connection_id(connection)?;
    // The backend may give the parameters a person would give on the connect URL, and
    // those of an import.
    let params = match fields.get("params") {
        None => ConnectionParams::new(),
        Some(value) => crate::connections::read_params(connector, value, |from| {
            from != ParamSource::TokenField
        })?,
    };
    let created = state
        .sessions()
        .create_with(index, connection.clone(), params, ttl)
        .map_err(|Full(after)| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                format!(
                    "{MAX_SESSIONS} connect sessions are live, the most the proxy keeps; one \
                     frees up when it is used or expires"
                ),
            )
            .retry_after(after)
        })?;
    tracing::info!(
        integration = %connector.name,
        connection = %connection,
        expires_in_secs = ttl.as_secs(),
        "connect session created"
    );
    let url = format!("{}/connect?session={}", state.public_url(), created.token);
    let body = json!({
        "token": created.token,
        "url": url,
        "expires_at": crate::time::format_rfc3339(created.expires_at),
    });
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response())
}

/// `GET /connect?session=<token>`: a redirect to the provider, for a live session only.
/// The connection parameters the blueprint takes from the connect URL
/// (`from: connect_query`) may follow (`&subdomain=acme`); the session's own win.
pub(crate) async fn start(State(state): State<ProxyState>, RawQuery(query): RawQuery) -> Response {
    let token = crate::params::param(query.as_deref(), "session")
        .ok()
        .flatten()
        .unwrap_or_default();
    let begun = state.sessions().begin(&token, |index, connection, given| {
        let connector = &state.connectors()[index];
        let Some(flow) = &connector.flow else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the OAuth settings cannot work: the integration has no OAuth app",
            ));
        };
        let params = query_params(connector, query.as_deref(), given)?;
        flow.authorize_with(connection.clone(), params)
            .map(|request| (request.url, request.state))
            .map_err(|e| match e {
                AuthorizeError::Params(e) => ApiError::invalid_param(&printable(e.message())),
                other => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    format!("the OAuth settings cannot work: {other}"),
                ),
            })
    });
    let begun = match begun {
        Err(Invalid) => return crate::oauth::invalid_session_page(),
        Ok(Err(error)) => return error.into_response(),
        Ok(Ok(begun)) => begun,
    };
    tracing::info!(
        integration = %state.connectors()[begun.integration].name,
        "sending a person to the provider to authorize a connection"
    );
    let Ok(location) = HeaderValue::try_from(begun.url) else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the provider's authorization URL cannot be sent in a header",
        )
        .into_response();
    };
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // The session's URL must not reach the provider in a Referer.
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
    )
        .into_response()
}

/// The session's parameters, and those of the connect URL's query the blueprint takes from
/// it (`from: connect_query`); other query parameters are not read. 400
/// `invalid_connection_param` for one whose value does not fit.
fn query_params(
    connector: &crate::app::Connector,
    query: Option<&str>,
    given: &ConnectionParams,
) -> Result<ConnectionParams, ApiError> {
    let mut params = given.clone();
    for param in connector.blueprint.connection_params() {
        if param.from() != ParamSource::ConnectQuery || params.contains_key(param.name()) {
            continue;
        }
        let Some(value) = crate::params::param(query, param.field_name())? else {
            continue;
        };
        crate::connections::check_param(connector, param.name(), &value, &|_| true)?;
        params.insert(param.name().to_owned(), value);
    }
    Ok(params)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(n: u32) -> Result<(String, String), ()> {
        Ok((format!("https://provider/auth?state=s{n}"), format!("s{n}")))
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_dies_at_its_expiry_and_is_used_up_by_its_callback() {
        let sessions = Sessions::default();
        let a = sessions
            .create(0, ConnectionId::new("acme"), Duration::from_secs(120))
            .unwrap();
        assert_eq!(a.token.len(), 64, "256 bits, hex");
        let b = sessions
            .create(1, ConnectionId::new("beta"), Duration::from_secs(120))
            .unwrap();
        assert_ne!(a.token, b.token);

        // A second visit goes to the same authorization; the callback uses the session up.
        let first = sessions
            .begin(&a.token, |_, _, _| started(1))
            .unwrap()
            .unwrap();
        let again = sessions
            .begin(&a.token, |_, _, _| -> Result<_, ()> {
                panic!("started twice")
            })
            .unwrap()
            .unwrap();
        assert_eq!(first.url, again.url);
        assert_eq!(sessions.finish("s1"), Some(0));
        assert!(
            sessions.begin(&a.token, |_, _, _| started(2)).is_err(),
            "used up"
        );
        assert_eq!(sessions.finish("s1"), None, "a state finishes once");

        // `b` expires: nothing can be begun or finished with it any more.
        sessions
            .begin(&b.token, |_, _, _| started(3))
            .unwrap()
            .unwrap();
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(sessions.begin(&b.token, |_, _, _| started(4)).is_err());
        assert_eq!(sessions.finish("s3"), None);
        assert_eq!(sessions.len(), 0);
        assert!(sessions.begin("", |_, _, _| started(5)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_visit_starts_a_fresh_authorization_that_replaces_the_first() {
        let sessions = Sessions::default();
        let a = sessions
            .create(0, ConnectionId::new("acme"), MAX_SESSION_TTL)
            .unwrap();
        sessions
            .begin(&a.token, |_, _, _| started(1))
            .unwrap()
            .unwrap();
        tokio::time::advance(REUSE_FOR).await;
        let fresh = sessions
            .begin(&a.token, |_, _, _| started(2))
            .unwrap()
            .unwrap();
        assert!(fresh.url.ends_with("s2"));
        assert_eq!(
            sessions.finish("s1"),
            None,
            "the replaced state finishes nothing"
        );
        assert_eq!(sessions.finish("s2"), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_bound_new_sessions_are_refused_until_one_expires() {
        let sessions = Sessions::default();
        for i in 0..MAX_SESSIONS {
            let ttl = MIN_SESSION_TTL + Duration::from_secs(u64::try_from(i % 7).unwrap());
            sessions
                .create(0, ConnectionId::new(format!("c{i}")), ttl)
                .unwrap();
        }
        let Err(Full(after)) = sessions.create(0, ConnectionId::new("x"), MIN_SESSION_TTL) else {
            panic!("the bound was passed");
        };
        assert_eq!(after, MIN_SESSION_TTL);
        tokio::time::advance(after).await;
        assert!(
            sessions
                .create(0, ConnectionId::new("x"), MIN_SESSION_TTL)
                .is_ok()
        );
    }
}
