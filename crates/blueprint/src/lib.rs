//! The Blueprint engine.
//!
//! (Being written: see the crate's modules.)

mod base_url;
mod blueprint;
mod client;
mod config;

pub use base_url::{BaseUrl, BaseUrlFuture, BaseUrlLayer, InvalidBaseUrl, InvalidPath, SetBaseUrl};
pub use blueprint::{
    Blueprint, BlueprintError, ClientAuth, OAuthSettings, RateLimitHeaders, Region, ResetFormat,
    RetryRule, RetrySettings,
};
pub use client::{ClientError, HttpsClient, default_client};
pub use config::{ClientSecret, ConfigError, ConfigErrorKind, Integration, Integrations, Registry};
