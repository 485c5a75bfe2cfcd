//! `PUT`/`DELETE /connections/{integration}/{connection_id}`, `GET /connections` and
//! `GET /integrations`.

use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use blueprint::ParamSource;
use blueprint_core::AccessToken;
use blueprint_refresh::{
    ConnectionParams, MAX_PARAM_LEN, Secret, StoreError, StoreKey, TokenRecord, TokenStatus,
};
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::app::{Connector, ProxyState};
use crate::auth::Authorized;
use crate::error::{ApiError, printable};
use crate::time::{format_rfc3339, parse_rfc3339};

const FIELDS: [&str; 4] = ["access_token", "refresh_token", "expires_at", "params"];

/// Imports credentials for a connection (a private app's static token, or tokens
/// obtained elsewhere).
pub(crate) async fn import(
    State(state): State<ProxyState>,
    _auth: Authorized,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (integration, connection) = path_names(path)?;
    let connector = state.connector(&integration)?;
    let connection = crate::ids::connection_id(&connection)?;
    let body = body.map_err(|e| crate::body::rejection(&e))?;
    let fields = read_body(&body)?;
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(invalid(format!("`{name}` must be a string"))),
        }
    };
    let access_token = text("access_token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("`access_token` is required"))?;
    let access_token = AccessToken::new(access_token)
        .map_err(|_| invalid("`access_token` holds characters that cannot be sent in a header"))?;
    let now = SystemTime::now();
    let mut record = TokenRecord::new(access_token, now);
    if let Some(refresh) = text("refresh_token")?.filter(|t| !t.is_empty()) {
        if !connector.has_oauth_app {
            return Err(invalid(format!(
                "integration `{integration}` has no OAuth app (`oauth_client_id` in \
                 integrations.yaml), so a refresh token could never be used; import the \
                 access token alone, or configure the app"
            )));
        }
        record = record.with_refresh_token(Secret::new(refresh));
    }
    if let Some(at) = text("expires_at")? {
        let at = parse_rfc3339(at).ok_or_else(|| {
            invalid("`expires_at` must be an RFC 3339 time such as `2030-01-31T12:00:00Z`")
        })?;
        record = record.with_expires_at(at);
    }
    if let Some(params) = fields.get("params") {
        record = record.with_params(read_params(connector, params, |_| true)?);
    }
    let key = connector.source.key(&connection);
    let existed = state
        .store()
        .get(&key)
        .await
        .map(|found| found.is_some())
        .unwrap_or(false);
    let summary = summary(&key, Ok(Some(&record)));
    connector
        .source
        .put_credentials(&connection, record)
        .await
        .map_err(|e| ApiError::store(&e))?;
    connector.forget_stack(&connection);
    tracing::info!(
        integration = %connector.name,
        connection = %connection,
        replaced = existed,
        "credentials imported"
    );
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(summary)).into_response())
}

/// Lists connections, without secrets; `?integration=<name>` for one integration,
/// `?connection_id=<id>` for one connection id.
pub(crate) async fn list(
    State(state): State<ProxyState>,
    _auth: Authorized,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let only = crate::params::param(query.as_deref(), "integration")?;
    if let Some(name) = &only {
        state.connector(name)?;
    }
    let only_id = crate::params::param(query.as_deref(), "connection_id")?
        .map(|id| crate::ids::connection_id(&id))
        .transpose()?;
    let mut connections = Vec::new();
    for connector in state.connectors() {
        if only.as_deref().is_some_and(|name| name != &*connector.name) {
            continue;
        }
        let ids = state
            .store()
            .list(&connector.name)
            .await
            .map_err(|e| ApiError::store(&e))?;
        for id in ids {
            if only_id.as_ref().is_some_and(|only| *only != id) {
                continue;
            }
            let key = connector.source.key(&id);
            let found = state.store().get(&key).await;
            match found {
                Ok(None) => {} // deleted meanwhile
                Ok(Some(stored)) => connections.push(summary(&key, Ok(Some(&stored.record)))),
                Err(error) => connections.push(summary(&key, Err(&error))),
            }
        }
    }
    Ok(Json(json!({ "connections": connections })).into_response())
}

/// Lists the integrations of the configuration, in file order: `{"integrations": [{"name",
/// "oauth_app"}]}`. `oauth_app` says whether connections can be authorized through a
/// connect session (and refresh tokens imported). Never a client id or secret.
pub(crate) async fn integrations(State(state): State<ProxyState>, _auth: Authorized) -> Response {
    let integrations: Vec<Value> = state
        .connectors()
        .iter()
        .map(|connector| {
            json!({
                "name": &*connector.name,
                "oauth_app": connector.flow.is_some(),
            })
        })
        .collect();
    Json(json!({ "integrations": integrations })).into_response()
}

/// Deletes a connection's credentials.
pub(crate) async fn remove(
    State(state): State<ProxyState>,
    _auth: Authorized,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (integration, connection) = path_names(path)?;
    let connector = state.connector(&integration)?;
    let connection = crate::ids::connection_id(&connection)?;
    let key = connector.source.key(&connection);
    let deleted = state
        .store()
        .delete(&key)
        .await
        .map_err(|e| ApiError::store(&e))?;
    connector.forget(&connection);
    if !deleted {
        return Err(ApiError::unknown_connection(
            &integration,
            connection.as_str(),
        ));
    }
    tracing::info!(integration = %connector.name, connection = %connection, "connection deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The most parameters a connection may be given (each must be declared anyway).
const MAX_PARAMS: usize = 64;

/// A `"params"` object of strings, each a parameter the integration's blueprint declares
/// (and `allowed` lets this route set), with a value that fits: 400
/// `invalid_connection_param` naming the first one that does not.
pub(crate) fn read_params(
    connector: &Connector,
    value: &Value,
    allowed: impl Fn(ParamSource) -> bool,
) -> Result<ConnectionParams, ApiError> {
    let object = match value {
        Value::Null => return Ok(ConnectionParams::new()),
        Value::Object(object) => object,
        _ => {
            return Err(ApiError::invalid_param(
                "`params` must be a JSON object of strings, such as {\"subdomain\": \"acme\"}",
            ));
        }
    };
    if object.len() > MAX_PARAMS {
        return Err(ApiError::invalid_param(&format!(
            "`params` holds more than {MAX_PARAMS} parameters"
        )));
    }
    let mut params = ConnectionParams::new();
    for (name, value) in object {
        let Value::String(value) = value else {
            return Err(ApiError::invalid_param(&format!(
                "the connection parameter `{}` must be a string",
                printable(name)
            )));
        };
        check_param(connector, name, value, &allowed)?;
        params.insert(name.clone(), value.clone());
    }
    Ok(params)
}

/// Checks one parameter's value against the integration's blueprint.
pub(crate) fn check_param(
    connector: &Connector,
    name: &str,
    value: &str,
    allowed: &dyn Fn(ParamSource) -> bool,
) -> Result<(), ApiError> {
    let name_shown = printable(name);
    if value.len() > MAX_PARAM_LEN {
        return Err(ApiError::invalid_param(&format!(
            "the value of the connection parameter `{name_shown}` is longer than \
             {MAX_PARAM_LEN} bytes"
        )));
    }
    let declared = connector
        .blueprint
        .connection_params()
        .iter()
        .find(|p| p.name() == name);
    if let Some(param) = declared {
        if !allowed(param.from()) {
            return Err(ApiError::invalid_param(&format!(
                "the connection parameter `{name_shown}` comes from {} and cannot be set here",
                match param.from() {
                    ParamSource::Import => "an import (PUT /connections/…)",
                    ParamSource::ConnectQuery => "the connect session or URL",
                    ParamSource::TokenField => "the token endpoint's answer",
                }
            )));
        }
    }
    connector
        .blueprint
        .check_param(name, value)
        .map_err(|e| ApiError::invalid_param(&printable(e.message())))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

/// The integration and connection id of `/connections/{integration}/{id}`, percent-decoded;
/// 400 `invalid_path` when they are not UTF-8.
fn path_names(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    match path {
        Ok(Path(names)) => Ok(names),
        Err(rejection) => Err(ApiError::bad_request(
            "invalid_path",
            format!(
                "the path cannot be read ({}): /connections/<integration>/<connection id>, \
                 percent-encoded UTF-8",
                printable(&rejection.body_text())
            ),
        )),
    }
}

/// The body as a JSON object of known fields. Messages name fields, never quote values
/// (a value may be a token).
fn read_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "the body is not JSON (line {}, column {}); send {{\"access_token\": \"…\", \
             \"refresh_token\": \"…\", \"expires_at\": \"RFC 3339\", \"params\": {{…}}}}, \
             the last three optional",
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
    Ok(fields)
}

/// A connection as `GET /connections` shows it: never a token.
fn summary(key: &StoreKey, record: Result<Option<&TokenRecord>, &StoreError>) -> Value {
    match record {
        Ok(Some(record)) => json!({
            "integration": key.integration(),
            "connection_id": key.connection().as_str(),
            "status": record.status.as_str(),
            "last_error": record.last_error,
            "expires_at": record.expires_at.map(format_rfc3339),
            "refreshable": record.refresh_token.is_some()
                && record.status != TokenStatus::NeedsReauthorization,
            "scopes": record.scopes,
            // Not secrets: what fills the blueprint's `${connection.NAME}` placeholders.
            "params": record.params,
            "updated_at": format_rfc3339(record.updated_at),
        }),
        Ok(None) => json!({
            "integration": key.integration(),
            "connection_id": key.connection().as_str(),
            "status": "missing",
        }),
        Err(error) => json!({
            "integration": key.integration(),
            "connection_id": key.connection().as_str(),
            "status": "unreadable",
            "last_error": error.to_string(),
        }),
    }
}
