//! The Blueprint engine.
//!
//! (Being written: see the crate's modules.)

mod base_url;
mod blueprint;
mod client;

pub use base_url::{BaseUrl, BaseUrlFuture, BaseUrlLayer, InvalidBaseUrl, InvalidPath, SetBaseUrl};
pub use client::{ClientError, HttpsClient, default_client};
pub use blueprint::{
    Blueprint, BlueprintError, ClientAuth, OAuthSettings, RateLimitHeaders, Region, ResetFormat,
    RetryRule, RetrySettings,
};
