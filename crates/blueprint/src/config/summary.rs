//! Human-readable summaries of loaded integrations, secrets redacted.

use std::fmt;

use http::HeaderValue;

use http::HeaderName;

use super::{Integration, Integrations};
use crate::{Blueprint, ClientAuth, ParamSource, ResetFormat, Route, WaitFrom};

const REDACTED: &str = "<redacted>";

impl Integration {
    fn header_text(&self, name: &HeaderName, value: &HeaderValue) -> String {
        if self.hides_header(name) || value.is_sensitive() {
            REDACTED.to_owned()
        } else {
            value.to_str().unwrap_or("<not text>").to_owned()
        }
    }
}

/// The resolved settings, one per line, named like the file's keys; the client secret and
/// credential-like header values print as `<redacted>`.
impl fmt::Display for Integration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bp = &self.blueprint;
        write!(f, "{}: extends {}", self.name, self.extends)?;
        if let Some(region) = &self.region {
            write!(f, ", region {region}")?;
        }
        writeln!(f)?;
        let credentials = Credentials {
            client_id: Some(self.oauth_client_id.as_deref().unwrap_or("not set")),
            client_secret: Some(if self.oauth_client_secret.is_some() {
                REDACTED
            } else {
                "not set"
            }),
        };
        settings(f, bp, &|n, v| self.header_text(n, v), &credentials)
    }
}

/// What an integration adds to a blueprint's summary.
struct Credentials<'a> {
    client_id: Option<&'a str>,
    client_secret: Option<&'a str>,
}

fn reset_format(format: ResetFormat) -> &'static str {
    match format {
        ResetFormat::EpochSeconds => "epoch_seconds",
        ResetFormat::EpochMillis => "epoch_millis",
        ResetFormat::DeltaSeconds => "delta_seconds",
        _ => "auto",
    }
}

/// A blueprint's settings, one per line, each line indented by two spaces; the last line
/// without a line break.
fn settings(
    f: &mut fmt::Formatter<'_>,
    bp: &Blueprint,
    header_text: &dyn Fn(&HeaderName, &HeaderValue) -> String,
    credentials: &Credentials<'_>,
) -> fmt::Result {
    match bp.base_url_template() {
        Some(template) => writeln!(f, "  base_url: {template}")?,
        None => writeln!(f, "  base_url: {}", bp.base_url())?,
    }
    for region in bp.regions() {
        write!(f, "  region {}: {}", region.name, region.base_url)?;
        if let Some(url) = &region.authorization_url {
            write!(f, ", oauth_authorization_url {url}")?;
        }
        if let Some(url) = &region.token_url {
            write!(f, ", oauth_token_url {url}")?;
        }
        writeln!(f)?;
    }
    f.write_str("  headers:")?;
    if bp.default_headers().is_empty() {
        f.write_str(" none")?;
    }
    for (i, (name, value)) in bp.default_headers().iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        write!(f, "{sep}{name}: {}", header_text(name, value))?;
    }
    writeln!(f)?;
    match bp.oauth() {
        None => writeln!(f, "  oauth: none (tokens are imported)")?,
        Some(oauth) => {
            writeln!(f, "  oauth_authorization_url: {}", oauth.authorization_url)?;
            writeln!(f, "  oauth_token_url: {}", oauth.token_url)?;
            writeln!(f, "  oauth_scopes: [{}]", oauth.scopes.join(", "))?;
            if oauth.scope_separator != " " {
                writeln!(f, "  oauth_scope_separator: {:?}", oauth.scope_separator)?;
            }
            writeln!(f, "  oauth_pkce: {}", oauth.pkce)?;
            let auth = match oauth.client_auth {
                ClientAuth::RequestBody => "body",
                ClientAuth::Basic => "basic",
            };
            writeln!(f, "  oauth_client_auth: {auth}")?;
            f.write_str("  oauth_authorization_params:")?;
            if oauth.extra_authorization_params.is_empty() {
                f.write_str(" none")?;
            }
            for (i, (name, value)) in oauth.extra_authorization_params.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                write!(f, "{sep}{name}={value}")?;
            }
            writeln!(f)?;
            if let Some(id) = credentials.client_id {
                writeln!(f, "  oauth_client_id: {id}")?;
            }
            if let Some(secret) = credentials.client_secret {
                writeln!(f, "  oauth_client_secret: {secret}")?;
            }
        }
    }
    let rate = bp.rate_limit();
    writeln!(
        f,
        "  rate_limit_headers: limit {}, remaining {}, reset {}, reset_format {}",
        rate.limit,
        rate.remaining,
        rate.reset,
        reset_format(rate.reset_format)
    )?;
    for rule in bp.rate_limited() {
        write!(f, "  rate_limited: {}", rule.status.as_u16())?;
        for (name, value) in &rule.when {
            write!(f, " when {name}: {value}")?;
        }
        let from = match rule.wait_from {
            WaitFrom::RetryAfter => "retry_after",
            WaitFrom::Reset => "reset",
            WaitFrom::RetryAfterOrReset => "retry_after_or_reset",
        };
        writeln!(f, ", wait_from {from}")?;
    }
    writeln!(
        f,
        "  max_server_wait_ms: {}",
        bp.max_server_wait().as_millis()
    )?;
    let retry = bp.retry();
    write!(
        f,
        "  retry: max_attempts {}, base_delay_ms {}, max_delay_ms {}, deadline_ms ",
        retry.max_attempts,
        retry.base_delay.as_millis(),
        retry.max_delay.as_millis()
    )?;
    match retry.deadline {
        Some(deadline) => write!(f, "{}", deadline.as_millis())?,
        None => f.write_str("none")?,
    }
    f.write_str(", attempt_timeout_ms ")?;
    match retry.attempt_timeout {
        Some(timeout) => write!(f, "{}", timeout.as_millis())?,
        None => f.write_str("none")?,
    }
    writeln!(
        f,
        ", max_server_wait_ms {}",
        retry.max_server_wait.as_millis()
    )?;
    for rule in &retry.rules {
        let verdict = if rule.retry_safe {
            "retry_safe"
        } else {
            "never retried"
        };
        writeln!(f, "  retry rule: {} {} {verdict}", rule.method, rule.path)?;
    }
    if !bp.routes().is_empty() {
        let routes: Vec<&str> = bp.routes().iter().map(Route::as_str).collect();
        writeln!(f, "  routes: {}", routes.join(", "))?;
    }
    for param in bp.connection_params() {
        let from = match param.from() {
            ParamSource::Import => "import",
            ParamSource::ConnectQuery => "connect_query",
            ParamSource::TokenField => "token_field",
        };
        write!(
            f,
            "  connection param {}: from {from}, field {}",
            param.name(),
            param.field_name()
        )?;
        if let Some(pattern) = param.pattern_str() {
            write!(f, ", pattern {pattern}")?;
        }
        writeln!(f)?;
    }
    write!(f, "  tokens_expire: {}", bp.tokens_expire())
}

/// The blueprint's id and its settings, one per line, named like the YAML keys; header
/// values marked sensitive print as `<redacted>`.
///
/// ```
/// let registry = blueprint::Registry::builtin()?;
/// let summary = registry.get("zendesk").ok_or("no zendesk")?.to_string();
/// assert!(summary.starts_with("zendesk:v2\n"));
/// assert!(summary.contains("  base_url: https://${connection.subdomain}.zendesk.com/api/v2"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl fmt::Display for Blueprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.id())?;
        let text = |_: &HeaderName, v: &HeaderValue| {
            if v.is_sensitive() {
                REDACTED.to_owned()
            } else {
                v.to_str().unwrap_or("<not text>").to_owned()
            }
        };
        settings(
            f,
            self,
            &text,
            &Credentials {
                client_id: None,
                client_secret: None,
            },
        )
    }
}

/// Every integration's summary, in file order.
impl fmt::Display for Integrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.integrations.len();
        let s = if n == 1 { "" } else { "s" };
        write!(f, "{}: {n} integration{s}", self.file)?;
        for integration in &self.integrations {
            write!(f, "\n{integration}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Integration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Headers<'a>(&'a Integration);
        impl fmt::Debug for Headers<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let headers = self.0.blueprint.default_headers();
                f.debug_map()
                    .entries(
                        headers
                            .iter()
                            .map(|(n, v)| (n.as_str(), self.0.header_text(n, v))),
                    )
                    .finish()
            }
        }
        let bp = &self.blueprint;
        f.debug_struct("Integration")
            .field("name", &self.name)
            .field("extends", &self.extends)
            .field("region", &self.region)
            .field("base_url", &format_args!("{}", bp.base_url()))
            .field("headers", &Headers(self))
            .field("oauth", &bp.oauth())
            .field("oauth_client_id", &self.oauth_client_id)
            .field("oauth_client_secret", &self.oauth_client_secret)
            .field("rate_limit", bp.rate_limit())
            .field("retry", bp.retry())
            .field("tokens_expire", &bp.tokens_expire())
            .finish()
    }
}
