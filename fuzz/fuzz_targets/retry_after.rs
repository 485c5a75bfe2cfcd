//! `Retry-After` (delta seconds or an HTTP-date) on any bytes: never a panic.
#![no_main]

use std::time::{Duration, SystemTime};

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    for secs in [0, 1_445_412_480, u64::from(u32::MAX)] {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let _ = blueprint_core::parse_retry_after(&value, now);
    }
});
