//! The Intercom blueprint: its settings come from the built-in YAML file
//! `crates/blueprint/blueprints/intercom.yaml`, loaded by the engine like any user's.

use blueprint::{Blueprint, BlueprintError, Registry};

/// The Intercom API version the blueprint pins with the `Intercom-Version` header (the
/// version of the OpenAPI description the crate is tested against). Override it per client
/// or per request. The blueprint file says the same (a test checks).
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
}

/// The Intercom blueprint (`intercom:v0`), in the US region, as the built-in YAML file
/// declares it, with this crate's `User-Agent` added.
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
/// ```
/// let intercom = intercom_blueprint::intercom()?;
/// assert_eq!(intercom.id(), intercom_blueprint::BLUEPRINT_ID);
/// assert_eq!(intercom.default_headers()["intercom-version"], intercom_blueprint::API_VERSION);
/// # Ok::<(), blueprint::BlueprintError>(())
/// ```
///
/// # Errors
///
/// Never for the file as shipped (a test loads it); a [`BlueprintError`] if it were broken.
pub fn intercom() -> Result<Blueprint, BlueprintError> {
    let registry =
        Registry::builtin().map_err(|e| BlueprintError::new("blueprints", e.to_string()))?;
    let blueprint = registry.get(BLUEPRINT_ID).cloned().ok_or_else(|| {
        BlueprintError::new("blueprints", "the built-in catalog has no intercom:v0")
    })?;
    blueprint.default_header(
        "user-agent",
        concat!("blueprint-intercom/", env!("CARGO_PKG_VERSION")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use blueprint::{
        ClientAuth, OAuthSettings, RateLimitHeaders, RateLimitRule, Region, ResetFormat, RetryRule,
        Route, WaitFrom,
    };
    use http::{HeaderName, Method, StatusCode};

    fn app_host(region: IntercomRegion) -> &'static str {
        match region {
            IntercomRegion::Us => "https://app.intercom.com",
            IntercomRegion::Eu => "https://app.eu.intercom.com",
            IntercomRegion::Au => "https://app.au.intercom.com",
        }
    }

    /// What the crate's constants and Intercom's documentation say, built by hand; the
    /// YAML file must agree, field by field.
    fn expected() -> Blueprint {
        let mut bp = Blueprint::new("intercom", "v0", US_BASE_URL)
            .unwrap()
            .default_header("accept", "application/json")
            .unwrap()
            .default_header("intercom-version", API_VERSION)
            .unwrap()
            .with_oauth(OAuthSettings {
                authorization_url: format!("{}/oauth", app_host(IntercomRegion::Us)),
                token_url: format!("{US_BASE_URL}/auth/eagle/token"),
                pkce: false,
                scopes: Vec::new(),
                scope_separator: " ".to_owned(),
                client_auth: ClientAuth::RequestBody,
                extra_authorization_params: Vec::new(),
            })
            .with_rate_limit(RateLimitHeaders {
                limit: HeaderName::from_static("x-ratelimit-limit"),
                remaining: HeaderName::from_static("x-ratelimit-remaining"),
                reset: HeaderName::from_static("x-ratelimit-reset"),
                reset_format: ResetFormat::EpochSeconds,
            })
            .with_rate_limited([RateLimitRule::new(
                StatusCode::TOO_MANY_REQUESTS,
                WaitFrom::RetryAfterOrReset,
            )])
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
            bp = bp.with_region(Region {
                name: region.name().to_owned(),
                base_url: region.base_url().to_owned(),
                authorization_url: Some(format!("{}/oauth", app_host(region))),
                token_url: Some(format!("{}/auth/eagle/token", region.base_url())),
            });
        }
        bp
    }

    #[test]
    fn the_yaml_file_agrees_with_the_crate_field_by_field() {
        let loaded = intercom().unwrap();
        let want = expected();
        assert_eq!(loaded.id(), want.id());
        assert_eq!(loaded.base_url(), want.base_url());
        assert_eq!(loaded.regions(), want.regions());
        assert_eq!(loaded.oauth(), want.oauth());
        assert_eq!(loaded.rate_limit(), want.rate_limit());
        assert_eq!(loaded.rate_limited(), want.rate_limited());
        assert_eq!(loaded.retry(), want.retry());
        assert_eq!(loaded.tokens_expire(), want.tokens_expire());
        assert_eq!(loaded.max_server_wait(), want.max_server_wait());
        assert!(loaded.connection_params().is_empty());
        for (name, value) in want.default_headers() {
            assert_eq!(loaded.default_headers().get(name), Some(value), "{name}");
        }
        assert_eq!(
            loaded.default_headers()["user-agent"],
            concat!("blueprint-intercom/", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            loaded.default_headers().len(),
            want.default_headers().len() + 1
        );
        // The routes name calls in logs; they are the file's alone.
        assert!(
            loaded
                .routes()
                .contains(&Route::new("/contacts/{id}").unwrap())
        );
        let routes = blueprint::Routes::of(&loaded);
        assert_eq!(
            routes.find("/contacts/6789").map(|r| &**r),
            Some("/contacts/{id}")
        );
        assert_eq!(
            routes.find("/contacts/search").map(|r| &**r),
            Some("/contacts/search")
        );
    }

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
}
