//! What the crate knows about one OAuth2 provider, and the two calls it makes to its token
//! endpoint: exchanging a code and refreshing a token.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use blueprint_core::AccessToken;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::url::{self, Url};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, HttpRequest, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse,
    TokenResponse, TokenUrl,
};

use crate::store::ConnectionParams;
use crate::{HttpClient, Secret};

/// The longest value a connection parameter may have, in bytes.
pub const MAX_PARAM_LEN: usize = 1024;

/// A provider's URLs for one connection, filled in by [`PerConnection::urls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUrls {
    /// The authorization URL, if the provider has one.
    pub auth_url: Option<String>,
    /// The token endpoint.
    pub token_url: String,
}

/// A connection parameter that is missing or cannot be used. Names the parameter, never
/// quotes its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(String);

impl ParamError {
    /// An error saying `message` (which names the parameter).
    pub fn new(message: impl Into<String>) -> Self {
        ParamError(message.into())
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// Fills in a provider's URLs for one connection, when they name connection parameters
/// (`https://${connection.subdomain}.zendesk.com/oauth/tokens`): the engine implements it
/// from a blueprint, so that this crate needs none.
pub trait PerConnection: Send + Sync + fmt::Debug + 'static {
    /// The URLs of a connection with `params`.
    ///
    /// # Errors
    ///
    /// [`ParamError`] naming a parameter that is missing or does not fit.
    fn urls(&self, params: &ConnectionParams) -> Result<ProviderUrls, ParamError>;

    /// Checks one value for the parameter `name` (its pattern, and every place it goes).
    ///
    /// # Errors
    ///
    /// [`ParamError`] naming the parameter.
    fn check(&self, name: &str, value: &str) -> Result<(), ParamError>;
}

/// The fields of a token answer besides the standard ones (Salesforce's `instance_url`).
#[derive(Debug, Clone, Default)]
struct ExtraFields(serde_json::Map<String, serde_json::Value>);

impl serde::Serialize for ExtraFields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for ExtraFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Map::deserialize(deserializer).map(ExtraFields)
    }
}

impl ExtraTokenFields for ExtraFields {}

/// A token answer, its extra fields kept.
type TokenAnswer = StandardTokenResponse<ExtraFields, BasicTokenType>;

type OAuthClient<HasAuthUrl = EndpointNotSet, HasTokenUrl = EndpointNotSet> = oauth2::Client<
    BasicErrorResponse,
    TokenAnswer,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    HasTokenUrl,
>;

/// How the client id and secret are sent to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields in the body (Intercom; the default).
    #[default]
    RequestBody,
    /// HTTP Basic authentication (RFC 6749 section 2.3.1).
    Basic,
}

/// An OAuth2 provider as configured: the plain data, checked by [`Provider::new`].
///
/// `Debug` shows the client secret as `<redacted>`.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    /// The client (app) id.
    pub client_id: String,
    /// The client secret, if the provider issued one.
    pub client_secret: Option<Secret>,
    /// Where a person is sent to authorize (`https://app.intercom.com/oauth`); needed only
    /// for the authorization-code flow.
    pub auth_url: Option<String>,
    /// The token endpoint (`https://api.intercom.io/auth/eagle/token`).
    pub token_url: String,
    /// Where the provider sends the person back, if it must be named.
    pub redirect_url: Option<String>,
    /// Scopes to ask for (empty for providers that set them in the app's settings).
    pub scopes: Vec<String>,
    /// Whether to use PKCE (S256) in the authorization-code flow.
    pub pkce: bool,
    /// How the client credentials are sent to the token endpoint.
    pub client_auth: ClientAuth,
    /// Extra query parameters for the authorization URL (`access_type=offline`, ...).
    pub extra_auth_params: Vec<(String, String)>,
    /// What joins the scopes in the authorization URL's `scope` (`None`: a space, as RFC
    /// 6749 says; Slack wants `,`).
    pub scope_separator: Option<String>,
    /// Connection parameters read from the token endpoint's answer: (parameter, field).
    pub token_fields: Vec<(String, String)>,
    /// Fills in the URLs for each connection when they name connection parameters; the
    /// URLs above may then hold `${connection.NAME}` placeholders.
    pub per_connection: Option<Arc<dyn PerConnection>>,
}

/// A [`ProviderConfig`] whose URLs have been checked.
#[derive(Debug, Clone)]
pub struct Provider {
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    auth_url: Option<AuthUrl>,
    token_url: TokenUrl,
    redirect_url: Option<RedirectUrl>,
    scopes: Vec<String>,
    pkce: bool,
    client_auth: ClientAuth,
    extra_auth_params: Vec<(String, String)>,
    scope_separator: Option<String>,
    token_fields: Vec<(String, String)>,
    per_connection: Option<Arc<dyn PerConnection>>,
}

/// A provider configuration that cannot work; names the field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid OAuth2 provider configuration: `{field}` {reason}")]
pub struct ProviderConfigError {
    field: &'static str,
    reason: String,
}

impl ProviderConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ProviderConfigError {
            field,
            reason: reason.into(),
        }
    }

    /// The field at fault.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

fn checked_url(field: &'static str, value: &str) -> Result<Url, ProviderConfigError> {
    let url = Url::parse(value).map_err(|e| ProviderConfigError {
        field,
        reason: format!("is not a valid URL ({e})"),
    })?;
    let loopback = match url.host() {
        Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(ProviderConfigError {
            field,
            reason: String::from(
                "uses plain http to a host other than loopback; credentials would travel unencrypted (use https)",
            ),
        }),
        other => Err(ProviderConfigError {
            field,
            reason: format!("has scheme `{other}`; expected https"),
        }),
    }
}

impl Provider {
    /// Checks `config`.
    ///
    /// # Errors
    ///
    /// [`ProviderConfigError`] naming the field when the client id is empty or a URL is not
    /// valid, or is plain `http` to anything but loopback.
    pub fn new(config: ProviderConfig) -> Result<Self, ProviderConfigError> {
        if config.client_id.trim().is_empty() {
            return Err(ProviderConfigError {
                field: "client_id",
                reason: String::from("is empty"),
            });
        }
        // URLs filled in per connection are checked with a stand-in for each placeholder
        // here, and for real when a connection's are made.
        let stand_in = |url: &str| -> String {
            if config.per_connection.is_some() {
                without_placeholders(url)
            } else {
                url.to_owned()
            }
        };
        let token_url = TokenUrl::from_url(checked_url("token_url", &stand_in(&config.token_url))?);
        let auth_url = match &config.auth_url {
            Some(url) => Some(AuthUrl::from_url(checked_url("auth_url", &stand_in(url))?)),
            None => None,
        };
        let redirect_url = match &config.redirect_url {
            Some(url) => Some(RedirectUrl::from_url(Url::parse(url).map_err(|e| {
                ProviderConfigError {
                    field: "redirect_url",
                    reason: format!("is not a valid URL ({e})"),
                }
            })?)),
            None => None,
        };
        Ok(Provider {
            client_id: ClientId::new(config.client_id),
            client_secret: config
                .client_secret
                .map(|s| ClientSecret::new(s.expose().to_owned())),
            auth_url,
            token_url,
            redirect_url,
            scopes: config.scopes,
            pkce: config.pkce,
            client_auth: config.client_auth,
            extra_auth_params: config.extra_auth_params,
            scope_separator: config.scope_separator,
            token_fields: config.token_fields,
            per_connection: config.per_connection,
        })
    }

    /// Whether the URLs are filled in per connection ([`ProviderConfig::per_connection`]).
    pub fn is_per_connection(&self) -> bool {
        self.per_connection.is_some()
    }

    /// The provider of one connection: its URLs filled in with `params` when they name
    /// connection parameters; itself otherwise.
    ///
    /// # Errors
    ///
    /// [`ParamError`] naming a parameter that is missing or does not fit.
    pub fn for_connection(
        &self,
        params: &ConnectionParams,
    ) -> Result<Cow<'_, Provider>, ParamError> {
        let Some(per) = &self.per_connection else {
            return Ok(Cow::Borrowed(self));
        };
        let urls = per.urls(params)?;
        let unusable = |e: ProviderConfigError| {
            ParamError::new(format!(
                "the connection's parameters make an unusable URL: {e}"
            ))
        };
        let mut provider = self.clone();
        provider.token_url =
            TokenUrl::from_url(checked_url("token_url", &urls.token_url).map_err(unusable)?);
        provider.auth_url = match &urls.auth_url {
            Some(url) => Some(AuthUrl::from_url(
                checked_url("auth_url", url).map_err(unusable)?,
            )),
            None => None,
        };
        Ok(Cow::Owned(provider))
    }

    /// Checks a value of the connection parameter `name`: at most [`MAX_PARAM_LEN`]
    /// bytes, and what [`PerConnection::check`] says.
    ///
    /// # Errors
    ///
    /// [`ParamError`] naming the parameter.
    pub fn check_param(&self, name: &str, value: &str) -> Result<(), ParamError> {
        if value.len() > MAX_PARAM_LEN {
            return Err(ParamError::new(format!(
                "the value of `{name}` is longer than {MAX_PARAM_LEN} bytes"
            )));
        }
        match &self.per_connection {
            Some(per) => per.check(name, value),
            None => Ok(()),
        }
    }

    /// The connection parameters read from the token answer: (parameter, field).
    pub fn token_fields(&self) -> &[(String, String)] {
        &self.token_fields
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        self.client_id.as_str()
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &str {
        self.token_url.as_str()
    }

    /// Whether the authorization-code flow uses PKCE.
    pub fn uses_pkce(&self) -> bool {
        self.pkce
    }

    /// `text` with the client secret and each of `also` replaced by `<redacted>`: for text
    /// from the provider, which may echo what it was sent.
    pub(crate) fn redact(&self, text: &str, also: &[&str]) -> String {
        let mut text = text.to_owned();
        let secret = self.client_secret.as_ref().map(|s| s.secret().as_str());
        for secret in secret.into_iter().chain(also.iter().copied()) {
            if !secret.is_empty() {
                text = text.replace(secret, "<redacted>");
            }
        }
        text
    }

    pub(crate) fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The authorization URL for `state` (and a PKCE challenge when configured).
    pub(crate) fn authorize_url(
        &self,
        state: CsrfToken,
        pkce: Option<PkceCodeChallenge>,
    ) -> Result<Url, ProviderConfigError> {
        let Some(auth_url) = &self.auth_url else {
            return Err(ProviderConfigError {
                field: "auth_url",
                reason: String::from("is required for the authorization-code flow"),
            });
        };
        let mut client = OAuthClient::new(self.client_id.clone()).set_auth_uri(auth_url.clone());
        if let Some(redirect) = &self.redirect_url {
            client = client.set_redirect_uri(redirect.clone());
        }
        let mut request = client.authorize_url(|| state);
        request = match self.scope_separator.as_deref() {
            // `oauth2` joins scopes with a space; another separator is set by hand.
            Some(separator) if separator != " " && !self.scopes.is_empty() => {
                request.add_extra_param("scope", self.scopes.join(separator))
            }
            _ => request.add_scopes(self.scopes.iter().map(|s| Scope::new(s.clone()))),
        };
        for (name, value) in &self.extra_auth_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        if let Some(challenge) = pkce {
            request = request.set_pkce_challenge(challenge);
        }
        Ok(request.url().0)
    }

    fn oauth_client(&self) -> OAuthClient<EndpointNotSet, EndpointSet> {
        let mut client = OAuthClient::new(self.client_id.clone())
            .set_auth_type(match self.client_auth {
                ClientAuth::RequestBody => AuthType::RequestBody,
                ClientAuth::Basic => AuthType::BasicAuth,
            })
            .set_token_uri(self.token_url.clone());
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(secret.clone());
        }
        if let Some(redirect) = &self.redirect_url {
            client = client.set_redirect_uri(redirect.clone());
        }
        client
    }

    /// Exchanges a refresh token for new tokens, at the token endpoint of the connection
    /// with `params`. The granted `params` are `params` updated by what the answer's token
    /// fields say (a value that does not fit keeps the old one).
    pub(crate) async fn refresh(
        &self,
        http: &HttpClient,
        refresh_token: &Secret,
        params: &ConnectionParams,
    ) -> Result<Granted, TokenEndpointError> {
        let provider = self.for_connection(params).map_err(|error| {
            tracing::warn!(%error, "cannot refresh: the connection's parameters do not fill in the token URL");
            TokenEndpointError::Refused {
                code: String::from("invalid_connection_params"),
                status: None,
            }
        })?;
        let client = provider.oauth_client();
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let send = StatusRecorder::new(http);
        let result = client
            .exchange_refresh_token(&token)
            .request_async(&send)
            .await;
        let mut granted =
            Granted::from_result(result, send.status(), &self.token_fields, &|text| {
                self.redact(text, &[refresh_token.expose()])
            })?;
        self.split_scopes(&mut granted);
        let fields = std::mem::replace(&mut granted.params, params.clone());
        for (name, value) in fields {
            match self.check_param(&name, &value) {
                Ok(()) => {
                    granted.params.insert(name, value);
                }
                Err(error) => tracing::warn!(%error, "a parameter of the token answer is not used"),
            }
        }
        Ok(granted)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub(crate) async fn exchange_code(
        &self,
        http: &HttpClient,
        code: &Secret,
        verifier: Option<PkceCodeVerifier>,
    ) -> Result<Granted, TokenEndpointError> {
        let client = self.oauth_client();
        let send = StatusRecorder::new(http);
        let mut request = client.exchange_code(AuthorizationCode::new(code.expose().to_owned()));
        if let Some(verifier) = verifier {
            request = request.set_pkce_verifier(verifier);
        }
        let result = request.request_async(&send).await;
        let mut granted =
            Granted::from_result(result, send.status(), &self.token_fields, &|text| {
                self.redact(text, &[code.expose()])
            })?;
        self.split_scopes(&mut granted);
        Ok(granted)
    }
}

impl Provider {
    /// The granted scopes split by the provider's separator too (Slack answers
    /// `"scope": "channels:read,chat:write"`, which `oauth2` splits on spaces only).
    fn split_scopes(&self, granted: &mut Granted) {
        let Some(separator) = self
            .scope_separator
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        else {
            return;
        };
        if let Some(scopes) = &mut granted.scopes {
            *scopes = scopes
                .iter()
                .flat_map(|s| s.split(separator))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
    }
}

/// Sends token-endpoint requests and notes the status of the answer, which `oauth2`'s
/// errors do not keep.
struct StatusRecorder<'a> {
    http: &'a HttpClient,
    status: AtomicU16,
}

impl<'a> StatusRecorder<'a> {
    fn new(http: &'a HttpClient) -> Self {
        StatusRecorder {
            http,
            status: AtomicU16::new(0),
        }
    }

    fn status(&self) -> u16 {
        self.status.load(Ordering::Relaxed)
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for StatusRecorder<'_> {
    type Error = crate::HttpClientError;
    type Future = Pin<
        Box<dyn Future<Output = Result<oauth2::HttpResponse, crate::HttpClientError>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        let send = self.http.execute(request);
        Box::pin(async move {
            let response = send.await?;
            self.status
                .store(response.status().as_u16(), Ordering::Relaxed);
            Ok(response)
        })
    }
}

/// What a token endpoint granted.
#[derive(Debug)]
pub(crate) struct Granted {
    pub(crate) access_token: AccessToken,
    pub(crate) refresh_token: Option<Secret>,
    pub(crate) expires_in: Option<Duration>,
    pub(crate) token_type: String,
    pub(crate) scopes: Option<Vec<String>>,
    /// From a code exchange, the connection parameters the answer's token fields held;
    /// from a refresh, every parameter of the connection, updated by those.
    pub(crate) params: ConnectionParams,
}

type TokenResult =
    Result<TokenAnswer, RequestTokenError<crate::HttpClientError, BasicErrorResponse>>;

impl Granted {
    fn from_result(
        result: TokenResult,
        status: u16,
        token_fields: &[(String, String)],
        redact: &dyn Fn(&str) -> String,
    ) -> Result<Granted, TokenEndpointError> {
        let response = result.map_err(|e| classify(&e, status, redact))?;
        let access_token = AccessToken::new(response.access_token().secret()).map_err(|_| {
            TokenEndpointError::Unavailable {
                reason: String::from("it granted an access token that cannot be sent in a header"),
            }
        })?;
        Ok(Granted {
            access_token,
            refresh_token: response
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
            expires_in: response.expires_in(),
            token_type: response.token_type().as_ref().to_owned(),
            scopes: response
                .scopes()
                .map(|scopes| scopes.iter().map(|s| s.to_string()).collect()),
            params: token_fields
                .iter()
                .filter_map(|(param, field)| {
                    let value = match response.extra_fields().0.get(field)? {
                        serde_json::Value::String(text) => text.clone(),
                        serde_json::Value::Number(number) => number.to_string(),
                        _ => return None,
                    };
                    Some((param.clone(), value))
                })
                .collect(),
        })
    }
}

/// Sorts a failed token-endpoint call into "refused for good" and "may pass".
///
/// Only a standard error code ([`oauth_error_code`]) and the status are kept: `oauth2`'s
/// parse errors hold the raw body, and a provider's `error` and `error_description` could
/// echo what was sent (the client secret). The raw text goes only to a DEBUG log, redacted.
fn classify(
    error: &RequestTokenError<crate::HttpClientError, oauth2::basic::BasicErrorResponse>,
    status: u16,
    redact: &dyn Fn(&str) -> String,
) -> TokenEndpointError {
    let transient_status = status >= 500 || status == 408 || status == 429;
    match error {
        RequestTokenError::Request(e) => TokenEndpointError::Unavailable {
            reason: e.to_string(),
        },
        RequestTokenError::ServerResponse(response) => {
            let raw = match response.error() {
                BasicErrorResponseType::Extension(code) => code.clone(),
                known => known.to_string(),
            };
            let code = oauth_error_code(&raw);
            tracing::debug!(
                status,
                code,
                raw_error = %printable(&redact(&raw), 64),
                raw_description = response
                    .error_description()
                    .map(|d| printable(&redact(d), 200))
                    .as_deref(),
                "the token endpoint answered an error"
            );
            let code = code.to_owned();
            let transient_code =
                matches!(code.as_str(), "temporarily_unavailable" | "server_error");
            if transient_status || transient_code {
                TokenEndpointError::Unavailable {
                    reason: format!("it answered HTTP {status} `{code}`"),
                }
            } else {
                TokenEndpointError::Refused {
                    code,
                    status: Some(status),
                }
            }
        }
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
            if (400..500).contains(&status) && !transient_status {
                TokenEndpointError::Refused {
                    code: String::from("unreadable_error"),
                    status: Some(status),
                }
            } else if status == 0 || status == 200 {
                TokenEndpointError::Unavailable {
                    reason: String::from("its answer could not be read as a token response"),
                }
            } else {
                TokenEndpointError::Unavailable {
                    reason: format!("it answered HTTP {status}"),
                }
            }
        }
    }
}

/// The OAuth error codes of RFC 6749 (sections 4.1.2.1 and 5.2): the only ones shown.
pub(crate) const OAUTH_ERROR_CODES: [&str; 10] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "access_denied",
    "unsupported_response_type",
    "server_error",
    "temporarily_unavailable",
];

/// `code` if it is one of [`OAUTH_ERROR_CODES`], else `other`: a provider's own text is
/// never shown, logged above DEBUG, or stored (it may echo the client secret).
pub(crate) fn oauth_error_code(code: &str) -> &'static str {
    OAUTH_ERROR_CODES
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("other")
}

/// `url` with each `${…}` placeholder replaced by `x`: a stand-in to check the rest of it.
fn without_placeholders(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push('x');
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text from outside, cut to `max` characters, control characters dropped.
pub(crate) fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A token-endpoint call failed. Never contains a secret or the endpoint's raw answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenEndpointError {
    /// The endpoint refused the grant for good (`invalid_grant`, `invalid_client`, ...):
    /// asking again will not help.
    #[error("the token endpoint refused the request (`{code}`{})", status_suffix(*.status))]
    Refused {
        /// The OAuth2 error code.
        code: String,
        /// The HTTP status, if an answer came.
        status: Option<u16>,
    },
    /// The endpoint failed in a way that may pass (5xx, timeout, network).
    #[error("the token endpoint failed: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
    },
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(", HTTP {s}")).unwrap_or_default()
}

impl TokenEndpointError {
    /// Whether the endpoint refused for good.
    pub fn is_refused(&self) -> bool {
        matches!(self, TokenEndpointError::Refused { .. })
    }
}
