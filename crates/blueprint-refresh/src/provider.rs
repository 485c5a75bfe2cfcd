//! What the crate knows about one OAuth2 provider, and the two calls it makes to its token
//! endpoint: exchanging a code and refreshing a token.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use blueprint_core::AccessToken;
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::url::{self, Url};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpRequest, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, TokenResponse, TokenUrl,
};

use crate::{HttpClient, Secret};

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
}

/// A provider configuration that cannot work; names the field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid OAuth2 provider configuration: `{field}` {reason}")]
pub struct ProviderConfigError {
    field: &'static str,
    reason: String,
}

impl ProviderConfigError {
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
        let token_url = TokenUrl::from_url(checked_url("token_url", &config.token_url)?);
        let auth_url = match &config.auth_url {
            Some(url) => Some(AuthUrl::from_url(checked_url("auth_url", url)?)),
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
        })
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
        let mut client = BasicClient::new(self.client_id.clone()).set_auth_uri(auth_url.clone());
        if let Some(redirect) = &self.redirect_url {
            client = client.set_redirect_uri(redirect.clone());
        }
        let mut request = client
            .authorize_url(|| state)
            .add_scopes(self.scopes.iter().map(|s| Scope::new(s.clone())));
        for (name, value) in &self.extra_auth_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        if let Some(challenge) = pkce {
            request = request.set_pkce_challenge(challenge);
        }
        Ok(request.url().0)
    }

    pub(crate) fn oauth_client(
        &self,
    ) -> BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>
    {
        let mut client = BasicClient::new(self.client_id.clone())
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

    /// Exchanges a refresh token for new tokens.
    pub(crate) async fn refresh(
        &self,
        http: &HttpClient,
        refresh_token: &Secret,
    ) -> Result<Granted, TokenEndpointError> {
        let client = self.oauth_client();
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let send = StatusRecorder::new(http);
        let result = client
            .exchange_refresh_token(&token)
            .request_async(&send)
            .await;
        Granted::from_result(result, send.status(), &|text| {
            self.redact(text, &[refresh_token.expose()])
        })
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
        Granted::from_result(result, send.status(), &|text| {
            self.redact(text, &[code.expose()])
        })
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
}

type TokenResult = Result<
    BasicTokenResponse,
    RequestTokenError<crate::HttpClientError, oauth2::basic::BasicErrorResponse>,
>;

impl Granted {
    fn from_result(
        result: TokenResult,
        status: u16,
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
