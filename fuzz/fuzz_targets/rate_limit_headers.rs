//! Every rate-limit header parser, on any bytes: none may panic, and what they read must
//! be consistent (a reset is in the future, `limited` only for a 429).
#![no_main]

use std::time::{Duration, SystemTime};

use blueprint_ratelimit::parse::{
    HeaderConfig, ResetFormat, parse_count, parse_headers, parse_reset, parse_response,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
];
const FORMATS: &[ResetFormat] = &[
    ResetFormat::EpochSeconds,
    ResetFormat::EpochMillis,
    ResetFormat::DeltaSeconds,
    ResetFormat::Auto,
];

fuzz_target!(|data: &[u8]| {
    // The first bytes choose a status, a format and a wall clock; the rest, split on
    // newlines, are the header values in the order of NAMES.
    let [status, format, clock @ ..] = data else {
        return;
    };
    let (clock, rest) = clock.split_at(clock.len().min(4));
    let mut secs = [0u8; 4];
    secs[..clock.len()].copy_from_slice(clock);
    let wall_now =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::from_le_bytes(secs)) * 4);
    let format = FORMATS[usize::from(*format) % FORMATS.len()];
    let status = StatusCode::from_u16(400 + u16::from(*status) % 200)
        .unwrap_or(StatusCode::TOO_MANY_REQUESTS);

    let mut headers = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(rest.split(|&b| b == b'\n')) {
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let _ = parse_count(&value);
        for &f in FORMATS {
            if let Some(d) = parse_reset(&value, f, wall_now) {
                assert!(!d.is_zero(), "a reset is in the future");
            }
        }
        let _ = blueprint_core::parse_retry_after(&value, wall_now);
        headers.append(HeaderName::from_static(name), value);
    }
    let now = tokio::time::Instant::now();
    let config = HeaderConfig::x_ratelimit(format).max_reset(Duration::from_secs(300));
    if let Some(limit) = parse_headers(&headers, &config, wall_now, now) {
        assert!(!limit.limited);
        if let Some(reset) = limit.reset {
            assert!(
                reset <= now + Duration::from_secs(300),
                "capped by max_reset"
            );
        }
    }
    for config in [
        config.clone(),
        HeaderConfig::ietf(),
        HeaderConfig::default(),
    ] {
        if let Some(limit) = parse_response(status, &headers, &config, wall_now, now) {
            assert_eq!(limit.limited, status == StatusCode::TOO_MANY_REQUESTS);
        }
    }
});
