//! The authorization-code flow: send a person to the provider, take the callback,
//! exchange the code and store the credentials.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use blueprint_core::{ConnectionId, instant_after};
use oauth2::{CsrfToken, PkceCodeChallenge, PkceCodeVerifier};
use tokio::time::Instant;

use crate::provider::{Granted, ParamError, ProviderConfigError, TokenEndpointError};
use crate::store::{ConnectionParams, StoreError, TokenRecord, TokenStatus};
use crate::{OAuth2TokenSource, Secret};

/// How long a person has to complete an authorization, by default: 10 minutes.
pub const DEFAULT_PENDING_TTL: Duration = Duration::from_secs(600);

/// The authorization-code flow of one integration; stores what it gets through an
/// [`OAuth2TokenSource`], which starts using it at once.
///
/// 1. [`AuthorizationFlow::authorize`] makes the URL to send the person to, with a random
///    `state` (CSRF) and, when the provider is configured for it, a PKCE S256 challenge.
/// 2. The provider sends the person back with `code` and `state` (or `error`):
///    [`AuthorizationFlow::callback`] checks the state (known, not expired, not used
///    before), exchanges the code and stores the credentials.
#[derive(Debug)]
pub struct AuthorizationFlow {
    source: OAuth2TokenSource,
    pending: PendingAuthorizations,
}

/// Where to send the person, and the state that will come back.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    /// The provider's authorization URL with every parameter set.
    pub url: String,
    /// The random `state` in the URL.
    pub state: String,
}

/// The query parameters of a callback.
///
/// `Debug` shows the code as `<redacted>`.
#[derive(Debug, Clone, Default)]
pub struct CallbackParams {
    /// `code`.
    pub code: Option<Secret>,
    /// `state`.
    pub state: Option<String>,
    /// `error`, when the provider (or the person) refused.
    pub error: Option<String>,
    /// `error_description`.
    pub error_description: Option<String>,
}

impl CallbackParams {
    /// Reads the parameters from a query string (`code=…&state=…`, without the `?`).
    pub fn from_query(query: &str) -> Self {
        let mut params = CallbackParams::default();
        for (name, value) in oauth2::url::form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "code" => params.code = Some(Secret::new(value.into_owned())),
                "state" => params.state = Some(value.into_owned()),
                "error" => params.error = Some(value.into_owned()),
                "error_description" => params.error_description = Some(value.into_owned()),
                _ => {}
            }
        }
        params
    }
}

/// A connection authorized by [`AuthorizationFlow::callback`].
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The connection.
    pub connection: ConnectionId,
    /// When its access token expires, if it does.
    pub expires_at: Option<SystemTime>,
    /// Whether a refresh token came with it.
    pub refreshable: bool,
    /// The scopes granted (or asked for, if the provider did not say).
    pub scopes: Vec<String>,
}

impl AuthorizationFlow {
    /// A flow whose authorizations expire after [`DEFAULT_PENDING_TTL`].
    pub fn new(source: OAuth2TokenSource) -> Self {
        Self::with_pending(source, PendingAuthorizations::new(DEFAULT_PENDING_TTL))
    }

    /// A flow that keeps its pending authorizations in `pending`.
    pub fn with_pending(source: OAuth2TokenSource, pending: PendingAuthorizations) -> Self {
        AuthorizationFlow { source, pending }
    }

    /// The token source the credentials go to.
    pub fn source(&self) -> &OAuth2TokenSource {
        &self.source
    }

    /// The pending authorizations.
    pub fn pending(&self) -> &PendingAuthorizations {
        &self.pending
    }

    /// Starts authorizing `connection`: the URL to send the person to.
    ///
    /// # Errors
    ///
    /// [`ProviderConfigError`] when the provider has no `auth_url`.
    pub fn authorize(
        &self,
        connection: ConnectionId,
    ) -> Result<AuthorizationRequest, ProviderConfigError> {
        self.authorize_with(connection, ConnectionParams::new())
            .map_err(|e| match e {
                AuthorizeError::Config(e) => e,
                AuthorizeError::Params(e) => {
                    ProviderConfigError::new("connection_params", e.to_string())
                }
            })
    }

    /// Starts authorizing `connection`, whose parameters (Zendesk's subdomain) are
    /// `params`: the provider's URLs are filled in with them, and they are stored with the
    /// credentials, with what the token answer adds.
    ///
    /// # Errors
    ///
    /// [`AuthorizeError`] when the provider has no `auth_url`, or a parameter its URLs
    /// need is missing or does not fit.
    pub fn authorize_with(
        &self,
        connection: ConnectionId,
        params: ConnectionParams,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        for (name, value) in &params {
            self.source
                .provider()
                .check_param(name, value)
                .map_err(AuthorizeError::Params)?;
        }
        let provider = self
            .source
            .provider()
            .for_connection(&params)
            .map_err(AuthorizeError::Params)?;
        let state = CsrfToken::new_random();
        let (challenge, verifier) = if provider.uses_pkce() {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            (Some(challenge), Some(verifier))
        } else {
            (None, None)
        };
        let url = provider
            .authorize_url(state.clone(), challenge)
            .map_err(AuthorizeError::Config)?;
        let state = state.secret().clone();
        self.pending
            .insert(state.clone(), connection, verifier, params);
        Ok(AuthorizationRequest {
            url: url.into(),
            state,
        })
    }

    /// Completes an authorization from its callback: checks the state, exchanges the code,
    /// stores the credentials.
    ///
    /// # Errors
    ///
    /// [`CallbackError`]: the state is missing, unknown, expired or used already; the
    /// provider sent an error; the code exchange or the store failed.
    pub async fn callback(&self, params: CallbackParams) -> Result<Authorized, CallbackError> {
        let state = params.state.ok_or(CallbackError::MissingState)?;
        // Taken (used up) even when the provider sent an error: a state works once.
        let pending = self.pending.take(&state)?;
        if let Some(raw) = params.error {
            // Only a standard code is shown; the provider's own text (which could carry
            // anything, the client secret included) goes to a DEBUG log, redacted.
            let provider = self.source.provider();
            let code = crate::provider::oauth_error_code(&raw);
            tracing::debug!(
                code,
                raw_error = %crate::provider::printable(&provider.redact(&raw, &[]), 64),
                raw_description = params
                    .error_description
                    .map(|d| crate::provider::printable(&provider.redact(&d, &[]), 200))
                    .as_deref(),
                "the provider refused the authorization"
            );
            return Err(CallbackError::Provider {
                code: code.to_owned(),
                description: None,
            });
        }
        let code = params.code.ok_or(CallbackError::MissingCode)?;
        let provider = self
            .source
            .provider()
            .for_connection(&pending.params)
            .map_err(CallbackError::Params)?;
        let granted = provider
            .exchange_code(self.source.http_client(), &code, pending.verifier)
            .await
            .map_err(CallbackError::Exchange)?;
        let Granted {
            access_token,
            refresh_token,
            expires_in,
            token_type,
            scopes,
            params: fields,
        } = granted;
        let mut connection_params = pending.params;
        for (name, field) in provider.token_fields() {
            let Some(value) = fields.get(name) else {
                return Err(CallbackError::Params(ParamError::new(format!(
                    "the token endpoint's answer has no `{field}` field for the connection                      parameter `{name}`"
                ))));
            };
            provider
                .check_param(name, value)
                .map_err(CallbackError::Params)?;
            connection_params.insert(name.clone(), value.clone());
        }
        let now = self.source.clock().now();
        let record = TokenRecord {
            access_token,
            refresh_token,
            expires_at: expires_in.and_then(|d| crate::clock::expiry_after(now, d)),
            token_type,
            scopes: scopes.unwrap_or_else(|| provider.scopes().to_vec()),
            status: TokenStatus::Ok,
            last_error: None,
            updated_at: now,
            lease: None,
            params: connection_params,
        };
        let authorized = Authorized {
            connection: pending.connection.clone(),
            expires_at: record.expires_at,
            refreshable: record.refresh_token.is_some(),
            scopes: record.scopes.clone(),
        };
        self.source
            .put_credentials(&pending.connection, record)
            .await
            .map_err(CallbackError::Store)?;
        Ok(authorized)
    }
}

/// The most authorizations kept pending at once (older ones are forgotten first).
pub const MAX_PENDING: usize = 10_000;

/// Authorizations started and not yet completed: each expires (default 10 minutes) and
/// can be completed once.
///
/// A state that was used stays known until it would have expired, so that a replayed
/// callback is told apart from a forged one.
pub struct PendingAuthorizations {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

enum Entry {
    Pending {
        connection: ConnectionId,
        verifier: Option<PkceCodeVerifier>,
        params: ConnectionParams,
        expires: Instant,
    },
    Used {
        forget_at: Instant,
        expired: bool,
    },
}

/// A pending authorization, taken by its state.
#[derive(Debug)]
pub struct Pending {
    /// The connection being authorized.
    pub connection: ConnectionId,
    verifier: Option<PkceCodeVerifier>,
    /// The connection's parameters given when it started.
    pub params: ConnectionParams,
}

impl PendingAuthorizations {
    /// Authorizations that expire `ttl` after they start.
    pub fn new(ttl: Duration) -> Self {
        PendingAuthorizations {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// How many states are remembered (pending or used).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(
        &self,
        state: String,
        connection: ConnectionId,
        verifier: Option<PkceCodeVerifier>,
        params: ConnectionParams,
    ) {
        let now = Instant::now();
        let mut entries = self.lock();
        // Forget what can no longer be reported on: used states past their expiry, and
        // expired states one more ttl later.
        let ttl = self.ttl;
        entries.retain(|_, entry| match entry {
            Entry::Pending { expires, .. } => now < instant_after(*expires, ttl),
            Entry::Used { forget_at, .. } => now < *forget_at,
        });
        // Bounded memory whoever starts authorizations: past the cap the oldest goes.
        if entries.len() >= MAX_PENDING {
            let oldest = entries
                .iter()
                .min_by_key(|(_, entry)| match entry {
                    Entry::Pending { expires, .. } => *expires,
                    Entry::Used { forget_at, .. } => *forget_at,
                })
                .map(|(state, _)| state.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            state,
            Entry::Pending {
                connection,
                verifier,
                params,
                expires: instant_after(now, self.ttl),
            },
        );
    }

    /// Takes the authorization of `state`, which cannot be taken again.
    ///
    /// # Errors
    ///
    /// [`CallbackError::UnknownState`], [`CallbackError::Expired`] or
    /// [`CallbackError::Reused`].
    pub fn take(&self, state: &str) -> Result<Pending, CallbackError> {
        let now = Instant::now();
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(state) else {
            return Err(CallbackError::UnknownState);
        };
        let expires = match entry {
            Entry::Used { expired: true, .. } => {
                return Err(CallbackError::Expired { ttl: self.ttl });
            }
            Entry::Used { expired: false, .. } => return Err(CallbackError::Reused),
            Entry::Pending { expires, .. } => *expires,
        };
        let taken = std::mem::replace(
            entry,
            Entry::Used {
                forget_at: instant_after(expires.max(now), self.ttl),
                expired: now >= expires,
            },
        );
        if now >= expires {
            return Err(CallbackError::Expired { ttl: self.ttl });
        }
        match taken {
            Entry::Pending {
                connection,
                verifier,
                params,
                ..
            } => Ok(Pending {
                connection,
                verifier,
                params,
            }),
            Entry::Used { .. } => Err(CallbackError::Reused),
        }
    }
}

impl Default for PendingAuthorizations {
    fn default() -> Self {
        Self::new(DEFAULT_PENDING_TTL)
    }
}

impl fmt::Debug for PendingAuthorizations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorizations")
            .field("ttl", &self.ttl)
            .field("remembered", &self.len())
            .finish()
    }
}

/// A callback that does not complete an authorization. Never contains the code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The callback has no `state`.
    #[error("the callback has no `state` parameter; start the authorization again")]
    MissingState,
    /// No authorization was started with this state here (forged, or the process restarted).
    #[error(
        "the callback's `state` matches no authorization started here (forged, or started before a restart); start the authorization again"
    )]
    UnknownState,
    /// The authorization was started too long ago.
    #[error(
        "the authorization expired: it must be completed within {} s of starting; start it again",
        .ttl.as_secs()
    )]
    Expired {
        /// How long authorizations last.
        ttl: Duration,
    },
    /// The callback was already used.
    #[error(
        "this authorization was already completed: a callback works once; start the authorization again"
    )]
    Reused,
    /// The provider (or the person) refused.
    #[error(
        "the provider refused the authorization (`{code}`{})",
        .description.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    Provider {
        /// The `error` parameter if it is a standard OAuth code (RFC 6749 section
        /// 4.1.2.1), else `other`.
        code: String,
        /// Always `None`: the provider's `error_description` is free text that could carry
        /// anything, and is only logged at DEBUG.
        description: Option<String>,
    },
    /// The callback has a state but no `code`.
    #[error("the callback has no `code` parameter; start the authorization again")]
    MissingCode,
    /// The token endpoint did not give tokens for the code.
    #[error("could not exchange the authorization code: {0}")]
    Exchange(TokenEndpointError),
    /// The credentials could not be stored.
    #[error("could not store the new credentials: {0}")]
    Store(StoreError),
    /// A connection parameter is missing or does not fit (one the token answer should
    /// have held, or one the provider's URLs need).
    #[error("{0}")]
    Params(ParamError),
}

/// An authorization that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// The provider's settings cannot work (no `auth_url`).
    #[error(transparent)]
    Config(ProviderConfigError),
    /// A connection parameter is missing or does not fit; names it.
    #[error(transparent)]
    Params(ParamError),
}

impl AuthorizeError {
    /// Whether a connection parameter is at fault (the caller's), not the settings.
    pub fn is_params(&self) -> bool {
        matches!(self, AuthorizeError::Params(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_time_to_live_too_long_for_the_clock_never_expires_and_never_panics() {
        // `Instant + Duration::MAX` panics; such a ttl means "never" here.
        let pending = PendingAuthorizations::new(Duration::MAX);
        for state in ["a", "b"] {
            pending.insert(
                state.to_owned(),
                ConnectionId::new("c"),
                None,
                ConnectionParams::new(),
            );
        }
        tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
        assert_eq!(
            pending.take("a").map(|p| p.connection).ok(),
            Some(ConnectionId::new("c"))
        );
        assert!(matches!(pending.take("a"), Err(CallbackError::Reused)));
        assert_eq!(pending.len(), 2);
    }
}
