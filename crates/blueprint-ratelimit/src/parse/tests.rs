use super::*;
use proptest::prelude::*;

/// Tue, 14 Nov 2023 22:13:20 GMT.
const EPOCH_NOW: u64 = 1_700_000_000;

fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_NOW)
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, v) in pairs {
        map.append(*name, value(v));
    }
    map
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn counts_are_non_negative_integers_and_the_first_list_member() {
    let count = |s: &str| parse_count(&value(s));
    assert_eq!(count("0"), Some(0));
    assert_eq!(count(" 166 "), Some(166));
    assert_eq!(count("100, 100;w=60"), Some(100));
    assert_eq!(count("100;w=60"), Some(100));
    assert_eq!(count("18446744073709551615"), Some(u64::MAX));
    for bad in [
        "",
        " ",
        "-1",
        "+1",
        "1.5",
        "1e3",
        "0x10",
        "ten",
        "18446744073709551616",
        ",5",
    ] {
        assert_eq!(count(bad), None, "{bad:?}");
    }
    let not_text = HeaderValue::from_bytes(b"\xff1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parse_count(&not_text), None);
}

#[test]
fn reset_formats() {
    let reset = |s: &str, f| parse_reset(&value(s), f, wall());
    use ResetFormat::*;
    assert_eq!(reset("1700000010", EpochSeconds), Some(secs(10)));
    assert_eq!(
        reset("1700000010.25", EpochSeconds),
        Some(Duration::from_millis(10_250))
    );
    assert_eq!(reset("1700000010000", EpochMillis), Some(secs(10)));
    assert_eq!(
        reset("1700000000001.5", EpochMillis),
        Some(Duration::from_micros(1_500))
    );
    assert_eq!(reset("10", DeltaSeconds), Some(secs(10)));
    assert_eq!(reset("0.5", DeltaSeconds), Some(Duration::from_millis(500)));
    // Auto guesses from the size.
    assert_eq!(reset("30", Auto), Some(secs(30)));
    assert_eq!(reset("1700000030", Auto), Some(secs(30)));
    assert_eq!(reset("1700000030000", Auto), Some(secs(30)));
}

#[test]
fn resets_in_the_past_or_now_are_ignored() {
    let reset = |s: &str, f| parse_reset(&value(s), f, wall());
    assert_eq!(reset("1699999999", ResetFormat::EpochSeconds), None);
    assert_eq!(reset("1700000000", ResetFormat::EpochSeconds), None);
    assert_eq!(reset("1699999999999", ResetFormat::EpochMillis), None);
    assert_eq!(reset("0", ResetFormat::DeltaSeconds), None);
    // Epoch seconds read as delta-seconds would be decades ahead: a wrong format is visible.
    assert_eq!(reset("5", ResetFormat::EpochSeconds), None);
}

#[test]
fn garbage_resets_are_absent() {
    for bad in [
        "",
        "-5",
        "+5",
        "soon",
        "1.",
        ".5",
        "1.2.3",
        "1e9",
        "1_000",
        "99999999999999999999",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        " - 1",
    ] {
        for format in [
            ResetFormat::EpochSeconds,
            ResetFormat::EpochMillis,
            ResetFormat::DeltaSeconds,
            ResetFormat::Auto,
        ] {
            assert_eq!(
                parse_reset(&value(bad), format, wall()),
                None,
                "{bad:?} {format:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn intercom_headers_become_an_extension_with_the_reset_as_an_instant() {
    let now = Instant::now();
    let map = headers(&[
        ("x-ratelimit-limit", "166"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1700000007"),
    ]);
    let limit = parse_headers(&map, &HeaderConfig::intercom(), wall(), now);
    assert_eq!(
        limit,
        Some(RateLimit {
            limit: Some(166),
            remaining: Some(0),
            reset: Some(now + secs(7)),
            retry_after: None,
            limited: false,
        })
    );
    assert_eq!(limit.and_then(|l| l.retry_at()), Some(now + secs(7)));
}

#[tokio::test(start_paused = true)]
async fn nothing_or_garbage_gives_no_extension() {
    let now = Instant::now();
    let config = HeaderConfig::default();
    assert_eq!(parse_headers(&HeaderMap::new(), &config, wall(), now), None);
    let garbage = headers(&[
        ("x-ratelimit-limit", "lots"),
        ("x-ratelimit-remaining", "-3"),
        ("x-ratelimit-reset", "yesterday"),
        ("ratelimit", "\"unterminated;r=;t"),
        ("ratelimit-policy", ";;,,q="),
        ("content-type", "application/json"),
    ]);
    assert_eq!(parse_headers(&garbage, &config, wall(), now), None);
    // A reset in the past is dropped; the counts are kept.
    let past = headers(&[
        ("x-ratelimit-remaining", "3"),
        ("x-ratelimit-reset", "1699999990"),
    ]);
    let limit = parse_headers(&past, &config, wall(), now);
    assert_eq!(limit.map(|l| (l.remaining, l.reset)), Some((Some(3), None)));
}

#[tokio::test(start_paused = true)]
async fn distant_resets_are_capped() {
    let now = Instant::now();
    let config = HeaderConfig::intercom().max_reset(secs(60));
    let far = headers(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "99999999999"), // year 5138
    ]);
    let limit = parse_headers(&far, &config, wall(), now);
    assert_eq!(limit.and_then(|l| l.reset), Some(now + secs(60)));
    let default_cap = parse_headers(&far, &HeaderConfig::intercom(), wall(), now);
    assert_eq!(
        default_cap.and_then(|l| l.reset),
        Some(now + DEFAULT_MAX_RESET)
    );
}

#[tokio::test(start_paused = true)]
async fn ietf_headers_are_read_after_the_configured_ones() {
    let now = Instant::now();
    let ietf = headers(&[
        ("ratelimit-limit", "100"),
        ("ratelimit-remaining", "40"),
        ("ratelimit-reset", "20"),
    ]);
    for config in [
        HeaderConfig::intercom(),
        HeaderConfig::ietf(),
        HeaderConfig::default(),
    ] {
        let limit = parse_headers(&ietf, &config, wall(), now);
        assert_eq!(
            limit.map(|l| (l.limit, l.remaining, l.reset)),
            Some((Some(100), Some(40), Some(now + secs(20)))),
            "{config:?}"
        );
    }
    // The configured headers win, field by field.
    let both = headers(&[
        ("x-ratelimit-remaining", "7"),
        ("ratelimit-limit", "100"),
        ("ratelimit-remaining", "40"),
        ("ratelimit-reset", "20"),
    ]);
    let limit = parse_headers(&both, &HeaderConfig::intercom(), wall(), now);
    assert_eq!(
        limit.map(|l| (l.limit, l.remaining, l.reset)),
        Some((Some(100), Some(7), Some(now + secs(20))))
    );
}

#[tokio::test(start_paused = true)]
async fn custom_header_names_and_formats() {
    let now = Instant::now();
    let config = HeaderConfig::new(
        HeaderName::from_static("x-rate-limit-max"),
        HeaderName::from_static("x-rate-limit-left"),
        HeaderName::from_static("x-rate-limit-resets-at"),
        ResetFormat::EpochMillis,
    );
    let map = headers(&[
        ("x-rate-limit-max", "10"),
        ("x-rate-limit-left", "2"),
        ("x-rate-limit-resets-at", "1700000001500"),
    ]);
    let limit = parse_headers(&map, &config, wall(), now);
    assert_eq!(
        limit.map(|l| (l.limit, l.remaining, l.reset)),
        Some((Some(10), Some(2), Some(now + Duration::from_millis(1500))))
    );
    assert_eq!(config.reset_header(), "x-rate-limit-resets-at");
}

#[tokio::test(start_paused = true)]
async fn structured_fields_current_draft() {
    let now = Instant::now();
    // Two policies: the one with the least left rules, its limit from the policy of that name.
    let map = headers(&[
        ("ratelimit", "\"burst\";r=50;t=5, \"daily\";r=7;t=3600"),
        (
            "ratelimit-policy",
            "\"burst\";q=100;w=10, \"daily\";q=1000;w=86400",
        ),
    ]);
    let limit = parse_headers(&map, &HeaderConfig::ietf(), wall(), now);
    assert_eq!(
        limit.map(|l| (l.limit, l.remaining, l.reset)),
        Some((Some(1000), Some(7), Some(now + secs(3600))))
    );
    // A quoted name may hold the separators.
    let map = headers(&[
        ("ratelimit", "\"a,b;c\";r=3;t=2"),
        ("ratelimit-policy", "\"other\";q=9, \"a,b;c\";q=10;w=2"),
    ]);
    let limit = parse_headers(&map, &HeaderConfig::ietf(), wall(), now);
    assert_eq!(
        limit.map(|l| (l.limit, l.remaining, l.reset)),
        Some((Some(10), Some(3), Some(now + secs(2))))
    );
}

#[tokio::test(start_paused = true)]
async fn structured_fields_older_drafts() {
    let now = Instant::now();
    let map = headers(&[("ratelimit", "limit=100, remaining=50, reset=30")]);
    let limit = parse_headers(&map, &HeaderConfig::default(), wall(), now);
    assert_eq!(
        limit.map(|l| (l.limit, l.remaining, l.reset)),
        Some((Some(100), Some(50), Some(now + secs(30))))
    );
    let map = headers(&[
        ("ratelimit-remaining", "4"),
        ("ratelimit-policy", "10;w=1, 50;w=60"),
    ]);
    let limit = parse_headers(&map, &HeaderConfig::default(), wall(), now);
    assert_eq!(
        limit.map(|l| (l.limit, l.remaining)),
        Some((Some(10), Some(4)))
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_read_on_errors_and_capped() {
    let now = Instant::now();
    let config = HeaderConfig::intercom().max_reset(secs(120));
    let read = |status: StatusCode, v: &str| {
        let map = headers(&[("retry-after", v)]);
        parse_response(status, &map, &config, wall(), now)
    };
    let limited = read(StatusCode::TOO_MANY_REQUESTS, "3");
    assert_eq!(
        limited,
        Some(RateLimit {
            retry_after: Some(now + secs(3)),
            limited: true,
            ..RateLimit::default()
        })
    );
    // An HTTP-date, 30 s after the wall clock's now.
    let date = httpdate::fmt_http_date(wall() + secs(30));
    let at = read(StatusCode::SERVICE_UNAVAILABLE, &date);
    assert_eq!(at.and_then(|l| l.retry_after), Some(now + secs(30)));
    assert_eq!(at.map(|l| l.limited), Some(false));
    assert_eq!(
        read(StatusCode::TOO_MANY_REQUESTS, "86400").and_then(|l| l.retry_after),
        Some(now + secs(120))
    );
    // A redirect's Retry-After is not about rate limits; garbage is absent.
    assert_eq!(read(StatusCode::MOVED_PERMANENTLY, "3"), None);
    assert_eq!(read(StatusCode::SERVICE_UNAVAILABLE, "later"), None);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_headers_is_still_reported() {
    let now = Instant::now();
    let limit = parse_response(
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
        &HeaderConfig::intercom(),
        wall(),
        now,
    );
    assert_eq!(
        limit,
        Some(RateLimit {
            limited: true,
            ..RateLimit::default()
        })
    );
    assert_eq!(limit.and_then(|l| l.retry_at()), None);
}

#[tokio::test(start_paused = true)]
async fn observations_tell_a_past_reset_from_a_missing_one() {
    let now = Instant::now();
    let read = |pairs: &[(&'static str, &str)]| {
        Observation::read(
            &headers(pairs),
            false,
            &HeaderConfig::intercom(),
            &Wall::fixed(wall()),
            now,
        )
        .reset
    };
    assert_eq!(read(&[("x-ratelimit-remaining", "1")]), Reset::Absent);
    assert_eq!(
        read(&[("x-ratelimit-reset", "1699999999")]),
        Reset::Past {
            instant: now.checked_sub(secs(1)),
            precision: EPOCH_PRECISION
        }
    );
    assert_eq!(
        read(&[("x-ratelimit-reset", "1700000002")]),
        Reset::At {
            instant: now + secs(2),
            precision: EPOCH_PRECISION
        }
    );
    assert_eq!(
        read(&[("ratelimit-reset", "2")]),
        Reset::At {
            instant: now + secs(2),
            precision: DELTA_PRECISION
        }
    );
}

fn any_header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_filter_map("not a header value", |b| HeaderValue::from_bytes(&b).ok()),
        "[0-9.,;=\" a-z-]{0,40}"
            .prop_filter_map("not a header value", |s| HeaderValue::from_str(&s).ok()),
        any::<i128>().prop_map(|n| value(&n.to_string())),
        any::<f64>().prop_map(|n| value(&n.to_string())),
    ]
}

fn any_format() -> impl Strategy<Value = ResetFormat> {
    prop_oneof![
        Just(ResetFormat::EpochSeconds),
        Just(ResetFormat::EpochMillis),
        Just(ResetFormat::DeltaSeconds),
        Just(ResetFormat::Auto),
    ]
}

const NAMES: [&str; 9] = [
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

proptest! {
    #[test]
    fn no_header_value_panics_and_no_reset_passes_the_cap(
        values in proptest::collection::vec(any_header_value(), NAMES.len()),
        format in any_format(),
        wall_secs in any::<u64>(),
        cap_secs in 0u64..1_000_000,
        status in prop_oneof![Just(200u16), Just(429), Just(503)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
        let _guard = rt.enter();
        let now = Instant::now();
        let wall_now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(wall_secs)).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut map = HeaderMap::new();
        for (name, v) in NAMES.iter().zip(values) {
            map.insert(*name, v);
        }
        let config = HeaderConfig::x_ratelimit(format).max_reset(Duration::from_secs(cap_secs));
        let status = StatusCode::from_u16(status)?;
        if let Some(limit) = parse_response(status, &map, &config, wall_now, now) {
            let cap = now + Duration::from_secs(cap_secs);
            prop_assert!(limit.reset.is_none_or(|r| r > now && r <= cap));
            prop_assert!(limit.retry_after.is_none_or(|r| r >= now && r <= cap));
        }
        for (name, v) in map.iter() {
            let _ = parse_count(v);
            let _ = parse_reset(v, format, wall_now);
            let _ = name;
        }
    }

    #[test]
    fn delta_and_epoch_resets_round_trip_up_to_the_cap(delta in 1u64..u64::MAX / 2, cap_secs in 1u64..100_000) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
        let _guard = rt.enter();
        let now = Instant::now();
        let config = HeaderConfig::x_ratelimit(ResetFormat::DeltaSeconds).max_reset(Duration::from_secs(cap_secs));
        let map = headers(&[("x-ratelimit-reset", &delta.to_string()), ("x-ratelimit-remaining", "0")]);
        let limit = parse_headers(&map, &config, wall(), now);
        prop_assert_eq!(limit.and_then(|l| l.reset), Some(now + Duration::from_secs(delta.min(cap_secs))));

        let epoch = EPOCH_NOW.saturating_add(delta % 1_000_000_000);
        prop_assert_eq!(
            parse_reset(&value(&epoch.to_string()), ResetFormat::EpochSeconds, wall()),
            Some(Duration::from_secs(epoch - EPOCH_NOW)).filter(|d| !d.is_zero())
        );
    }

    #[test]
    fn structured_fields_never_panic(field in "[\"a-z0-9;=, \\\\]{0,60}", policy in "[\"a-z0-9;=, \\\\]{0,60}") {
        let _ = Structured::read(&field, Some(&policy));
    }
}
