//! The Intercom blueprint: hosts, OAuth endpoints, headers, rate limits and retry rules.

use blueprint::{
    Blueprint, BlueprintError, ClientAuth, OAuthSettings, RateLimitHeaders, Region, ResetFormat,
    RetryRule,
};
use http::{HeaderName, Method};

/// The Intercom API version the blueprint pins with the `Intercom-Version` header (the
/// version of the OpenAPI description the crate is tested against). Override it per client
/// or per request.
pub const API_VERSION: &str = "2.16";

/// The blueprint's name and version, as `integrations.yaml` names it.
pub const BLUEPRINT_ID: &str = "intercom:v0";

/// The US host.
pub const US_BASE_URL: &str = "https://api.intercom.io";

/// Intercom's hosting regions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IntercomRegion {
    /// `api.intercom.io` (which also routes to the right region, with a detour).
    #[default]
    Us,
    /// `api.eu.intercom.io`.
    Eu,
    /// `api.au.intercom.io`.
    Au,
}

impl IntercomRegion {
    /// The region's name in the blueprint (`us`, `eu`, `au`).
    pub fn name(self) -> &'static str {
        match self {
            IntercomRegion::Us => "us",
            IntercomRegion::Eu => "eu",
            IntercomRegion::Au => "au",
        }
    }

    /// The region's API base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            IntercomRegion::Us => US_BASE_URL,
            IntercomRegion::Eu => "https://api.eu.intercom.io",
            IntercomRegion::Au => "https://api.au.intercom.io",
        }
    }

    fn app_host(self) -> &'static str {
        match self {
            IntercomRegion::Us => "https://app.intercom.com",
            IntercomRegion::Eu => "https://app.eu.intercom.com",
            IntercomRegion::Au => "https://app.au.intercom.com",
        }
    }
}

/// The Intercom blueprint (`intercom:v0`), in the US region.
///
/// - Hosts per region (US, EU, AU) with their OAuth endpoints; `Accept: application/json`
///   and `Intercom-Version: 2.16` on every request (a request's own header wins).
/// - OAuth2 without PKCE (Intercom does not document it); the token endpoint takes the
///   client id and secret in the body. Intercom's tokens never expire and come without a
///   refresh token, so a 401 means the connection must be authorized again.
/// - Rate limits from `X-RateLimit-Limit`/`-Remaining`/`-Reset`, the reset in epoch seconds.
/// - `POST` is retried only when Intercom cannot have processed it (connection refused,
///   429), except where Intercom documents it as safe: `POST /events` deduplicates,
///   `POST /companies` is an upsert, and the search and list endpoints that use `POST`
///   only read.
///
/// # Errors
///
/// Never in practice: the values are constants; the `Result` comes from the builder.
pub fn intercom() -> Result<Blueprint, BlueprintError> {
    let mut blueprint = Blueprint::new("intercom", "v0", US_BASE_URL)?
        .default_header("accept", "application/json")?
        .default_header("intercom-version", API_VERSION)?
        .default_header(
            "user-agent",
            concat!("blueprint-intercom/", env!("CARGO_PKG_VERSION")),
        )?
        .with_oauth(OAuthSettings {
            authorization_url: format!("{}/oauth", IntercomRegion::Us.app_host()),
            token_url: format!("{US_BASE_URL}/auth/eagle/token"),
            pkce: false,
            scopes: Vec::new(),
            client_auth: ClientAuth::RequestBody,
            extra_authorization_params: Vec::new(),
        })
        .with_rate_limit(RateLimitHeaders {
            limit: HeaderName::from_static("x-ratelimit-limit"),
            remaining: HeaderName::from_static("x-ratelimit-remaining"),
            reset: HeaderName::from_static("x-ratelimit-reset"),
            reset_format: ResetFormat::EpochSeconds,
        })
        .with_tokens_expire(false)
        .map_retry(|retry| {
            retry.rules = [
                "/events",
                "/companies",
                "/contacts/search",
                "/conversations/search",
                "/tickets/search",
                "/companies/list",
            ]
            .into_iter()
            .map(|path| RetryRule {
                method: Method::POST,
                path: path.to_owned(),
                retry_safe: true,
            })
            .collect();
        });
    for region in [IntercomRegion::Us, IntercomRegion::Eu, IntercomRegion::Au] {
        blueprint = blueprint.with_region(Region {
            name: region.name().to_owned(),
            base_url: region.base_url().to_owned(),
            authorization_url: Some(format!("{}/oauth", region.app_host())),
            token_url: Some(format!("{}/auth/eagle/token", region.base_url())),
        });
    }
    Ok(blueprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_move_the_api_and_oauth_hosts() {
        let eu = intercom().unwrap().in_region("eu").unwrap();
        assert_eq!(eu.base_url().to_string(), "https://api.eu.intercom.io/");
        let oauth = eu.oauth().unwrap();
        assert_eq!(oauth.authorization_url, "https://app.eu.intercom.com/oauth");
        assert_eq!(
            oauth.token_url,
            "https://api.eu.intercom.io/auth/eagle/token"
        );
    }

    #[test]
    fn only_documented_posts_are_retry_safe() {
        let bp = intercom().unwrap();
        assert_eq!(bp.retry_rule(&Method::POST, "/events"), Some(true));
        assert_eq!(bp.retry_rule(&Method::POST, "/contacts/search"), Some(true));
        assert_eq!(bp.retry_rule(&Method::POST, "/conversations"), None);
        assert_eq!(bp.retry_rule(&Method::POST, "/messages"), None);
        assert!(!bp.tokens_expire());
        assert_eq!(bp.default_headers()["intercom-version"], API_VERSION);
    }
}
