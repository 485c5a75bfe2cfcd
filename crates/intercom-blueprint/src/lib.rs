//! Intercom through the Blueprint stack. (Being written.)

mod definition;
mod error;
pub mod webhook;

pub use definition::{API_VERSION, BLUEPRINT_ID, IntercomRegion, US_BASE_URL, intercom};
pub use error::{ApiError, ErrorItem, IntercomError};
