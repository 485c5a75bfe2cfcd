//! One connection's view of a blueprint whose URLs name connection parameters, for the
//! token-refresh crate's [`PerConnection`] (which knows no blueprints).

use std::sync::Arc;

use blueprint_refresh::{
    ConnectionParams, ParamError, PerConnection, ProviderConfig, ProviderUrls,
};

use crate::Blueprint;

/// Fills in a blueprint's OAuth URLs for each connection, and checks parameter values
/// against it: what [`Blueprint::provider_config`] hands the token-refresh crate.
#[derive(Debug, Clone)]
pub struct BlueprintUrls {
    blueprint: Arc<Blueprint>,
}

impl BlueprintUrls {
    /// The URLs of `blueprint`.
    pub fn new(blueprint: Blueprint) -> Self {
        BlueprintUrls {
            blueprint: Arc::new(blueprint),
        }
    }
}

impl PerConnection for BlueprintUrls {
    fn urls(&self, params: &ConnectionParams) -> Result<ProviderUrls, ParamError> {
        let oauth = self
            .blueprint
            .oauth_for_connection(|name| params.get(name).cloned())
            .map_err(|e| ParamError::new(e.message()))?;
        Ok(ProviderUrls {
            auth_url: Some(oauth.authorization_url),
            token_url: oauth.token_url,
        })
    }

    fn check(&self, name: &str, value: &str) -> Result<(), ParamError> {
        self.blueprint
            .check_param(name, value)
            .map_err(|e| ParamError::new(e.message()))
    }
}

impl Blueprint {
    /// The OAuth2 provider of this blueprint for the token-refresh crate, without the
    /// app's credentials (`client_id`, `client_secret`, `redirect_url` are left for the
    /// caller): its endpoints, scopes and their separator, PKCE, client authentication,
    /// extra authorization parameters, the connection parameters read from the token
    /// answer, and, when the URLs name connection parameters, what fills them in per
    /// connection. `None` without OAuth settings.
    ///
    /// ```
    /// use blueprint::Registry;
    ///
    /// let registry = Registry::builtin()?;
    /// let slack = registry.get("slack").ok_or("no slack")?.provider_config().ok_or("no oauth")?;
    /// assert_eq!(slack.scope_separator.as_deref(), Some(","));
    /// let zendesk = registry.get("zendesk").ok_or("no zendesk")?.provider_config().ok_or("no oauth")?;
    /// assert!(zendesk.per_connection.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn provider_config(&self) -> Option<ProviderConfig> {
        let oauth = self.oauth()?;
        Some(ProviderConfig {
            auth_url: Some(oauth.authorization_url.clone()),
            token_url: oauth.token_url.clone(),
            scopes: oauth.scopes.clone(),
            pkce: oauth.pkce,
            client_auth: oauth.client_auth,
            extra_auth_params: oauth.extra_authorization_params.clone(),
            scope_separator: Some(oauth.scope_separator.clone()),
            token_fields: self
                .connection_params()
                .iter()
                .filter(|p| p.from() == crate::ParamSource::TokenField)
                .map(|p| (p.name().to_owned(), p.field_name().to_owned()))
                .collect(),
            // With parameters, values are checked against the blueprint (even when only
            // its base URL or headers name them) and the OAuth URLs filled in per
            // connection.
            per_connection: (!self.connection_params().is_empty())
                .then(|| Arc::new(BlueprintUrls::new(self.clone())) as Arc<dyn PerConnection>),
            ..ProviderConfig::default()
        })
    }
}
