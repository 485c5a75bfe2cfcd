//! Human-readable summaries of loaded integrations, secrets redacted.

use std::fmt;

use http::HeaderValue;

use super::{Integration, Integrations};
use crate::{ClientAuth, ResetFormat};

const REDACTED: &str = "<redacted>";

impl Integration {
    fn header_text<'a>(&self, name: &http::HeaderName, value: &'a HeaderValue) -> &'a str {
        if self.hides_header(name) || value.is_sensitive() {
            REDACTED
        } else {
            value.to_str().unwrap_or("<not text>")
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
        writeln!(f, "  base_url: {}", bp.base_url())?;
        f.write_str("  headers:")?;
        if bp.default_headers().is_empty() {
            f.write_str(" none")?;
        }
        for (i, (name, value)) in bp.default_headers().iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{name}: {}", self.header_text(name, value))?;
        }
        writeln!(f)?;
        match bp.oauth() {
            None => writeln!(f, "  oauth: none")?,
            Some(oauth) => {
                writeln!(f, "  oauth_authorization_url: {}", oauth.authorization_url)?;
                writeln!(f, "  oauth_token_url: {}", oauth.token_url)?;
                writeln!(f, "  oauth_scopes: [{}]", oauth.scopes.join(", "))?;
                writeln!(f, "  oauth_pkce: {}", oauth.pkce)?;
                let auth = match oauth.client_auth {
                    ClientAuth::RequestBody => "body",
                    ClientAuth::BasicAuth => "basic",
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
                let id = self.oauth_client_id.as_deref().unwrap_or("not set");
                writeln!(f, "  oauth_client_id: {id}")?;
                let secret = if self.oauth_client_secret.is_some() {
                    REDACTED
                } else {
                    "not set"
                };
                writeln!(f, "  oauth_client_secret: {secret}")?;
            }
        }
        let rate = bp.rate_limit();
        let format = match rate.reset_format {
            ResetFormat::EpochSeconds => "epoch_seconds",
            ResetFormat::EpochMillis => "epoch_millis",
            ResetFormat::DeltaSeconds => "delta_seconds",
        };
        writeln!(
            f,
            "  rate_limit_headers: limit {}, remaining {}, reset {}, reset_format {format}",
            rate.limit, rate.remaining, rate.reset
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
        write!(f, "  tokens_expire: {}", bp.tokens_expire())
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
