//! `integrations.yaml` loading: good files, every kind of mistake with its line and
//! column, `${VAR}` substitution, precedence of overrides, and secrets kept out of output.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use blueprint::{
    Blueprint, ClientAuth, ConfigError, ConfigErrorKind, Integrations, OAuthSettings, Region,
    Registry, ResetFormat, RetryRule,
};
use http::Method;

const SECRET: &str = "sup3r-s3cr3t-value";
const FILE: &str = "integrations.yaml";

/// A hand-made Intercom blueprint: OAuth, EU and AU regions, default headers, one rule.
fn intercom(version: &str, base_url: &str) -> Blueprint {
    let region = |name: &str, api: &str, app: &str| Region {
        name: name.into(),
        base_url: format!("https://{api}"),
        authorization_url: Some(format!("https://{app}/oauth")),
        token_url: Some(format!("https://{api}/auth/eagle/token")),
    };
    Blueprint::new("intercom", version, base_url)
        .unwrap()
        .default_header("accept", "application/json")
        .unwrap()
        .default_header("intercom-version", "2.10")
        .unwrap()
        .with_oauth(OAuthSettings {
            authorization_url: "https://app.intercom.com/oauth".into(),
            token_url: "https://api.intercom.io/auth/eagle/token".into(),
            pkce: false,
            scopes: vec![],
            scope_separator: " ".into(),
            client_auth: ClientAuth::RequestBody,
            extra_authorization_params: vec![("lang".into(), "en".into())],
        })
        .with_region(region("us", "api.intercom.io", "app.intercom.com"))
        .with_region(region("eu", "api.eu.intercom.io", "app.eu.intercom.com"))
        .with_region(region("au", "api.au.intercom.io", "app.au.intercom.com"))
        .map_retry(|r| {
            r.rules.push(RetryRule {
                method: Method::POST,
                path: "/companies".into(),
                retry_safe: true,
            });
        })
        .with_tokens_expire(false)
}

/// What the loaded rules say about a call: the first rule that covers it (the stack's
/// policy reads them in the same order).
fn retry_rule(bp: &Blueprint, method: &Method, path: &str) -> Option<bool> {
    bp.retry()
        .rules
        .iter()
        .find(|r| r.matches(method, path))
        .map(|r| r.retry_safe)
}

fn registry() -> Registry {
    Registry::new()
        .with(intercom("v0", "https://api.intercom.io"))
        .with(Blueprint::new("plain", "v1", "https://api.plain.test").unwrap())
}

fn env(name: &str) -> Option<String> {
    match name {
        "INTERCOM_CLIENT_SECRET" | "API_KEY" => Some(SECRET.into()),
        "PORT" => Some("9000".into()),
        "ATTEMPTS" => Some("5".into()),
        "SCOPE" => Some("write_users".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn load(yaml: &str) -> Result<Integrations, ConfigError> {
    Integrations::parse(yaml, FILE, &registry(), env)
}

#[track_caller]
fn fails(yaml: &str) -> ConfigError {
    match load(yaml) {
        Ok(loaded) => panic!("expected an error, loaded:\n{loaded}"),
        Err(e) => e,
    }
}

/// Where an error points: (kind, key, line, column).
fn at(e: &ConfigError) -> (ConfigErrorKind, &str, usize, usize) {
    (
        e.kind(),
        e.key().unwrap_or(""),
        e.line().unwrap(),
        e.column().unwrap(),
    )
}

/// The issue's example, verbatim.
const ISSUE_EXAMPLE: &str = r#"
integrations:
  intercom:                          # the integration's name
    extends_blueprint: intercom:v0   # name[:version]; no version = latest
    oauth_client_id: abc123
    oauth_client_secret: ${INTERCOM_CLIENT_SECRET}
    oauth_scopes: [read_users]       # optional
    # any blueprint setting may be overridden, e.g.
    region: eu
    base_url: http://127.0.0.1:9000/
    oauth_authorization_url: http://127.0.0.1:9000/oauth
    oauth_token_url: http://127.0.0.1:9000/auth/eagle/token
    headers: { Intercom-Version: "2.11" }
"#;

#[test]
fn the_issue_example_loads_with_its_overrides_applied() {
    let loaded = load(ISSUE_EXAMPLE).unwrap();
    assert_eq!(loaded.len(), 1);
    let intercom = loaded.get("intercom").unwrap();
    assert_eq!(intercom.name(), "intercom");
    assert_eq!(intercom.extends(), "intercom:v0");
    assert_eq!(intercom.region(), Some("eu"));
    assert_eq!(intercom.oauth_client_id(), Some("abc123"));
    assert_eq!(intercom.oauth_client_secret().unwrap().expose(), SECRET);
    assert_eq!(intercom.scopes(), ["read_users"]);
    let bp = intercom.blueprint();
    assert_eq!(bp.base_url().to_string(), "http://127.0.0.1:9000/");
    let oauth = bp.oauth().unwrap();
    assert_eq!(oauth.authorization_url, "http://127.0.0.1:9000/oauth");
    assert_eq!(oauth.token_url, "http://127.0.0.1:9000/auth/eagle/token");
    // Headers merge: the file's value wins, the blueprint's other headers stay.
    assert_eq!(bp.default_headers()["intercom-version"], "2.11");
    assert_eq!(bp.default_headers()["accept"], "application/json");
    // Settings the file does not touch are the blueprint's.
    assert!(!bp.tokens_expire());
    assert_eq!(retry_rule(bp, &Method::POST, "/companies"), Some(true));
}

#[test]
fn the_example_file_loads_with_a_stub_environment() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/integrations.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let loaded = Integrations::parse(&text, "examples/integrations.yaml", &registry(), env)
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = loaded.iter().map(blueprint::Integration::name).collect();
    assert_eq!(names, ["intercom", "intercom-local"], "file order");

    let prod = loaded.get("intercom").unwrap();
    assert_eq!(
        prod.blueprint().base_url().to_string(),
        "https://api.intercom.io/"
    );
    assert_eq!(prod.oauth_client_secret().unwrap().expose(), SECRET);
    assert_eq!(
        prod.blueprint().default_headers()["intercom-version"],
        "2.11"
    );

    let local = loaded.get("intercom-local").unwrap();
    assert_eq!(local.extends(), "intercom:v0");
    let bp = local.blueprint();
    assert_eq!(bp.base_url().to_string(), "http://127.0.0.1:9000/");
    let oauth = bp.oauth().unwrap();
    assert_eq!(oauth.token_url, "http://127.0.0.1:9000/auth/eagle/token");
    assert_eq!(oauth.client_auth, ClientAuth::RequestBody);
    assert!(
        oauth
            .extra_authorization_params
            .contains(&("prompt".into(), "consent".into()))
    );
    assert_eq!(bp.default_headers()["user-agent"], "blueprint-dev");
    let retry = bp.retry();
    assert_eq!(retry.max_attempts, 3);
    assert_eq!(retry.max_delay, Duration::from_secs(2));
    assert_eq!(retry.deadline, Some(Duration::from_secs(30)));
    assert_eq!(retry_rule(bp, &Method::POST, "/events"), Some(true));
    assert_eq!(
        retry_rule(bp, &Method::POST, "/conversations/7/reply"),
        Some(false)
    );
    assert_eq!(bp.rate_limit().reset_format, ResetFormat::EpochSeconds);
}

#[test]
fn every_setting_can_be_overridden() {
    let loaded = load(
        r"
integrations:
  custom:
    extends_blueprint: intercom
    oauth_pkce: true
    oauth_client_auth: basic
    oauth_authorization_params: { lang: fr, prompt: consent }
    rate_limit_headers: { remaining: RateLimit-Remaining, reset_format: delta_seconds }
    retry:
      max_attempts: 5
      base_delay_ms: 50
      max_delay_ms: 1_000
      deadline_ms: null
      attempt_timeout_ms: 2000
      max_server_wait_ms: 0
      rules:
        - { method: post, path: /companies, retry_safe: false }
    tokens_expire: true
",
    )
    .unwrap();
    let bp = loaded.get("custom").unwrap().blueprint();
    let oauth = bp.oauth().unwrap();
    assert!(oauth.pkce);
    assert_eq!(oauth.client_auth, ClientAuth::Basic);
    assert_eq!(
        oauth.extra_authorization_params,
        [
            ("lang".to_owned(), "fr".to_owned()),
            ("prompt".to_owned(), "consent".to_owned())
        ]
    );
    let rate = bp.rate_limit();
    assert_eq!(rate.remaining, "ratelimit-remaining");
    assert_eq!(
        rate.limit, "x-ratelimit-limit",
        "keys left out keep the blueprint's"
    );
    assert_eq!(rate.reset_format, ResetFormat::DeltaSeconds);
    let retry = bp.retry();
    assert_eq!(retry.max_attempts, 5);
    assert_eq!(retry.base_delay, Duration::from_millis(50));
    assert_eq!(retry.max_delay, Duration::from_secs(1));
    assert_eq!(retry.deadline, None);
    assert_eq!(retry.attempt_timeout, Some(Duration::from_secs(2)));
    assert_eq!(retry.max_server_wait, Duration::ZERO);
    // The file's rule is checked before the blueprint's, so it wins.
    assert_eq!(retry.rules.len(), 2);
    assert_eq!(retry_rule(bp, &Method::POST, "/companies"), Some(false));
    assert!(bp.tokens_expire());
}

#[test]
fn oauth_urls_add_oauth_to_a_blueprint_without_it() {
    let loaded = load(
        "integrations:\n  p:\n    extends_blueprint: plain:v1\n    oauth_authorization_url: https://plain.test/authorize\n    oauth_token_url: https://plain.test/token\n    oauth_client_id: id\n",
    )
    .unwrap();
    let p = loaded.get("p").unwrap();
    assert_eq!(
        p.blueprint().oauth().unwrap().token_url,
        "https://plain.test/token"
    );
    assert_eq!(p.oauth_client_id(), Some("id"));
    assert!(
        p.oauth_client_secret().is_none(),
        "credentials are optional at load time"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_column_and_a_suggestion() {
    let e = fails(
        "integrations:\n  intercom:\n    extends_blueprint: intercom:v0\n    bsae_url: http://x.test/\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::UnknownKey,
            "integrations.intercom.bsae_url",
            4,
            5
        )
    );
    let text = e.to_string();
    assert!(
        text.starts_with(
            "integrations.yaml:4:5: `integrations.intercom.bsae_url`: unknown key `bsae_url`"
        ),
        "{text}"
    );
    assert!(text.contains("did you mean `base_url`?"), "{text}");

    // Nested, and at the top level.
    let e = fails(
        "integrations:\n  intercom:\n    extends_blueprint: intercom\n    retry:\n      max_atempts: 2\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::UnknownKey,
            "integrations.intercom.retry.max_atempts",
            5,
            7
        )
    );
    let e = fails("integrations: {}\nmodels: {}\n");
    assert_eq!(at(&e), (ConfigErrorKind::UnknownKey, "models", 2, 1));
}

#[test]
fn an_unknown_blueprint_is_named_with_the_registered_ones() {
    let e = fails("integrations:\n  intercom:\n    extends_blueprint: intercom:v9\n");
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::UnknownBlueprint,
            "integrations.intercom.extends_blueprint",
            3,
            24
        )
    );
    assert!(
        e.to_string()
            .contains("no blueprint `intercom:v9` is registered; use one of: intercom:v0"),
        "{e}"
    );

    let e = fails("integrations:\n  x:\n    extends_blueprint: hubspot\n");
    assert_eq!(e.kind(), ConfigErrorKind::UnknownBlueprint);
    assert!(e.to_string().contains("intercom:v0, plain:v1"), "{e}");

    let e = Integrations::parse(
        "integrations:\n  x:\n    extends_blueprint: x\n",
        FILE,
        &Registry::new(),
        env,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("no blueprint is registered at all"),
        "{e}"
    );
}

#[test]
fn missing_required_keys_are_named_where_they_belong() {
    let e = fails("integrations:\n  intercom:\n    oauth_client_id: abc\n");
    assert_eq!(
        at(&e),
        (ConfigErrorKind::MissingKey, "integrations.intercom", 2, 3)
    );
    assert!(
        e.to_string().contains("`extends_blueprint` is missing"),
        "{e}"
    );

    // An integration with nothing under it.
    let e = fails("integrations:\n  intercom:\n");
    assert_eq!(
        at(&e),
        (ConfigErrorKind::MissingKey, "integrations.intercom", 2, 3)
    );

    // A retry rule without `retry_safe`.
    let e = fails(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    retry:\n      rules:\n        - { method: GET, path: /x }\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::MissingKey,
            "integrations.i.retry.rules[0]",
            6,
            11
        )
    );
    assert!(e.to_string().contains("`retry_safe` is missing"), "{e}");

    // No `integrations:` at all, and an empty file.
    let e = fails("intergrations: {}\n");
    assert_eq!(at(&e).0, ConfigErrorKind::UnknownKey);
    let e = fails("# nothing yet\n");
    assert_eq!(at(&e), (ConfigErrorKind::MissingKey, "integrations", 1, 1));
}

#[test]
fn an_empty_integrations_list_is_fine() {
    assert!(load("integrations:\n").unwrap().is_empty());
    assert!(load("integrations: {}\n").unwrap().is_empty());
}

/// Each case: lines added under `integrations.i` (after `extends_blueprint`), the key the
/// error must name, its kind, and the text the error must point at (its first occurrence in
/// the added lines gives the expected line and column).
const BAD_VALUES: &[(&str, &str, ConfigErrorKind, &str)] = {
    use ConfigErrorKind::{DuplicateKey, InvalidValue};
    &[
        ("base_url: [a, b]", "base_url", InvalidValue, "["),
        ("base_url:", "base_url", InvalidValue, "base_url"),
        ("base_url: htp://x", "base_url", InvalidValue, "htp"),
        (
            "base_url: https://x.test/?q=1",
            "base_url",
            InvalidValue,
            "https",
        ),
        ("region: mars", "region", InvalidValue, "mars"),
        ("headers: [a]", "headers", InvalidValue, "["),
        (
            "headers: { Bad Name: x }",
            "headers.Bad Name",
            InvalidValue,
            "Bad",
        ),
        (
            "headers: { X-A: \"a\\nb\" }",
            "headers.X-A",
            InvalidValue,
            "\"a",
        ),
        (
            "oauth_token_url: not a url",
            "oauth_token_url",
            InvalidValue,
            "not",
        ),
        (
            "oauth_authorization_url: ftp://x.test/",
            "oauth_authorization_url",
            InvalidValue,
            "ftp",
        ),
        (
            "oauth_scopes: read_users",
            "oauth_scopes",
            InvalidValue,
            "read_users",
        ),
        (
            "oauth_scopes: [ok, \"two words\"]",
            "oauth_scopes[1]",
            InvalidValue,
            "\"two",
        ),
        ("oauth_pkce: yes", "oauth_pkce", InvalidValue, "yes"),
        (
            "oauth_client_auth: digest",
            "oauth_client_auth",
            InvalidValue,
            "digest",
        ),
        (
            "oauth_authorization_params: { state: x }",
            "oauth_authorization_params.state",
            InvalidValue,
            "state",
        ),
        ("oauth_client_id: ''", "oauth_client_id", InvalidValue, "''"),
        (
            "rate_limit_headers: { reset: 'x y' }",
            "rate_limit_headers.reset",
            InvalidValue,
            "'x",
        ),
        (
            "rate_limit_headers: { reset_format: rfc3339 }",
            "rate_limit_headers.reset_format",
            InvalidValue,
            "rfc",
        ),
        (
            "retry: { max_attempts: 0 }",
            "retry.max_attempts",
            InvalidValue,
            "0",
        ),
        (
            "retry: { max_attempts: three }",
            "retry.max_attempts",
            InvalidValue,
            "three",
        ),
        (
            "retry: { max_attempts: -1 }",
            "retry.max_attempts",
            InvalidValue,
            "-1",
        ),
        (
            "retry: { base_delay_ms: 20000 }",
            "retry.base_delay_ms",
            InvalidValue,
            "20000",
        ),
        (
            "retry: { deadline_ms: 0 }",
            "retry.deadline_ms",
            InvalidValue,
            "0",
        ),
        (
            "retry: { attempt_timeout_ms: 0 }",
            "retry.attempt_timeout_ms",
            InvalidValue,
            "0",
        ),
        (
            "retry: { rules: { method: GET } }",
            "retry.rules",
            InvalidValue,
            "{ method",
        ),
        (
            "retry:\n  rules:\n    - { method: FETCH, path: /x, retry_safe: true }",
            "retry.rules[0].method",
            InvalidValue,
            "FETCH",
        ),
        (
            "retry:\n  rules:\n    - { method: GET, path: x, retry_safe: true }",
            "retry.rules[0].path",
            InvalidValue,
            "x,",
        ),
        (
            "retry:\n  rules:\n    - { method: GET, path: /x, retry_safe: maybe }",
            "retry.rules[0].retry_safe",
            InvalidValue,
            "maybe",
        ),
        ("tokens_expire: 1", "tokens_expire", InvalidValue, "1"),
        (
            "region: eu\nregion: au",
            "region",
            DuplicateKey,
            "region: au",
        ),
    ]
};

#[test]
fn bad_values_are_named_with_their_key_line_and_column() {
    for &(lines, key, kind, token) in BAD_VALUES {
        let indented: Vec<String> = lines.lines().map(|l| format!("    {l}")).collect();
        let yaml = format!(
            "integrations:\n  i:\n    extends_blueprint: intercom:v0\n{}\n",
            indented.join("\n")
        );
        let (line, column) = indented
            .iter()
            .enumerate()
            .find_map(|(n, l)| l.find(token).map(|c| (n + 4, c + 1)))
            .unwrap();
        let e = fails(&yaml);
        assert_eq!(
            at(&e),
            (kind, format!("integrations.i.{key}").as_str(), line, column),
            "case `{lines}`: {e}"
        );
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{FILE}:{line}:{column}: `integrations.i.{key}`: ")),
            "{text}"
        );
        assert!(text.contains("; "), "says what to do: {text}");
    }
}

#[test]
fn oauth_keys_on_a_blueprint_without_oauth_are_refused() {
    let e = fails(
        "integrations:\n  p:\n    extends_blueprint: plain\n    oauth_client_secret: ${INTERCOM_CLIENT_SECRET}\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::InvalidValue,
            "integrations.p.oauth_client_secret",
            4,
            5
        )
    );
    assert!(
        e.to_string().contains("plain:v1 has no OAuth settings"),
        "{e}"
    );
    assert!(!e.to_string().contains(SECRET));
}

#[test]
fn bad_integration_names_and_duplicates_are_refused() {
    let e = fails("integrations:\n  bad name:\n    extends_blueprint: intercom\n");
    assert_eq!(
        at(&e),
        (ConfigErrorKind::InvalidValue, "integrations.bad name", 2, 3)
    );
    let e = fails(
        "integrations:\n  a:\n    extends_blueprint: intercom\n  a:\n    extends_blueprint: intercom\n",
    );
    assert_eq!(
        at(&e),
        (ConfigErrorKind::DuplicateKey, "integrations.a", 4, 3)
    );
    assert!(e.to_string().contains("first at line 2, column 3"), "{e}");
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let e = fails("integrations:\n  intercom:\n    extends_blueprint: [intercom\n");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert!(e.line().unwrap() >= 3, "{e}");
    assert!(e.to_string().starts_with(&format!("{FILE}:")), "{e}");
    let e = fails("integrations: {}\n---\nintegrations: {}\n");
    assert_eq!(
        (e.kind(), e.line(), e.column()),
        (ConfigErrorKind::Syntax, Some(2), Some(1))
    );
}

#[test]
fn an_unset_variable_is_named_with_the_key() {
    let e = fails(
        "integrations:\n  intercom:\n    extends_blueprint: intercom\n    oauth_client_secret: ${INTERCOM_SECRET}\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::UnsetVariable,
            "integrations.intercom.oauth_client_secret",
            4,
            26
        )
    );
    assert_eq!(e.variable(), Some("INTERCOM_SECRET"));
    assert_eq!(
        e.to_string(),
        "integrations.yaml:4:26: `integrations.intercom.oauth_client_secret`: the environment \
         variable `INTERCOM_SECRET` is not set; set `INTERCOM_SECRET`, or write `$${` for a literal `${`"
    );

    // Inside a list item and a nested mapping value too.
    let e = fails(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_scopes: [a, '${NOPE}']\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::UnsetVariable,
            "integrations.i.oauth_scopes[1]",
            4,
            23
        )
    );
    let e = fails(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    retry:\n      rules:\n        - method: GET\n          path: /${NOPE}\n          retry_safe: true\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::UnsetVariable,
            "integrations.i.retry.rules[0].path",
            7,
            17
        )
    );
}

#[test]
fn variables_expand_in_every_value_but_not_in_keys() {
    let loaded = load(
        r"
integrations:
  i:
    extends_blueprint: ${NOPE_NOT_HERE_EITHER:-x}
",
    );
    assert_eq!(loaded.unwrap_err().kind(), ConfigErrorKind::BadVariable);

    let loaded = load(
        r"
integrations:
  i:
    extends_blueprint: intercom
    base_url: http://127.0.0.1:${PORT}/api
    oauth_scopes: [read, '${SCOPE}']
    headers: { X-Api-Key: '${API_KEY}', X-Note: 'costs $5' }
    retry:
      max_attempts: ${ATTEMPTS}
      rules: [{ method: GET, path: '/v${PORT}', retry_safe: true }]
    rate_limit_headers: { limit: 'X-Limit-${PORT}' }
",
    )
    .unwrap();
    let i = loaded.get("i").unwrap();
    let bp = i.blueprint();
    assert_eq!(bp.base_url().to_string(), "http://127.0.0.1:9000/api/");
    assert_eq!(i.scopes(), ["read", "write_users"]);
    assert_eq!(bp.default_headers()["x-api-key"], SECRET);
    assert_eq!(bp.default_headers()["x-note"], "costs $5");
    assert_eq!(bp.retry().max_attempts, 5);
    assert_eq!(retry_rule(bp, &Method::GET, "/v9000"), Some(true));
    assert_eq!(bp.rate_limit().limit, "x-limit-9000");

    // Keys are taken as written.
    let e = fails(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    headers: { '${PORT}': x }\n",
    );
    assert_eq!(at(&e).1, "integrations.i.headers.${PORT}");

    // A variable set to nothing leaves a required value empty.
    let e = fails(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_client_id: ${EMPTY}\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::InvalidValue,
            "integrations.i.oauth_client_id",
            4,
            22
        )
    );
}

#[test]
fn a_doubled_dollar_brace_is_a_literal_and_an_unclosed_one_an_error() {
    let loaded = load("integrations:\n  i:\n    extends_blueprint: intercom\n    headers: { X-Template: 'Hi $${NAME}, ${PORT}' }\n").unwrap();
    let headers = loaded.get("i").unwrap().blueprint().default_headers();
    assert_eq!(headers["x-template"], "Hi ${NAME}, 9000");

    let e = fails(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    headers: { X-A: '${PORT' }\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::BadVariable,
            "integrations.i.headers.X-A",
            4,
            21
        )
    );
    assert!(e.to_string().contains("has no closing `}`"), "{e}");
}

#[test]
fn a_region_applies_first_and_explicit_urls_win_over_it() {
    let base = "integrations:\n  i:\n    extends_blueprint: intercom\n    region: EU\n";
    let loaded = load(base).unwrap();
    let i = loaded.get("i").unwrap();
    assert_eq!(i.region(), Some("eu"));
    let bp = i.blueprint();
    assert_eq!(bp.base_url().to_string(), "https://api.eu.intercom.io/");
    assert_eq!(
        bp.oauth().unwrap().authorization_url,
        "https://app.eu.intercom.com/oauth"
    );
    assert_eq!(
        bp.oauth().unwrap().token_url,
        "https://api.eu.intercom.io/auth/eagle/token"
    );

    // The keys' order in the file does not matter: `base_url` before `region` still wins.
    let loaded = load(
        "integrations:\n  i:\n    base_url: http://127.0.0.1:9000/\n    extends_blueprint: intercom\n    region: eu\n    oauth_token_url: http://127.0.0.1:9000/token\n",
    )
    .unwrap();
    let bp = loaded.get("i").unwrap().blueprint();
    assert_eq!(bp.base_url().to_string(), "http://127.0.0.1:9000/");
    assert_eq!(bp.oauth().unwrap().token_url, "http://127.0.0.1:9000/token");
    assert_eq!(
        bp.oauth().unwrap().authorization_url,
        "https://app.eu.intercom.com/oauth",
        "the region's, not overridden"
    );
}

#[test]
fn no_version_means_the_latest_registered_one() {
    let registry = Registry::new()
        .with(intercom("v9", "https://v9.test"))
        .with(intercom("v10", "https://v10.test"))
        .with(intercom("v2", "https://v2.test"));
    let yaml = "integrations:\n  latest:\n    extends_blueprint: intercom\n  pinned:\n    extends_blueprint: intercom:v9\n";
    let loaded = Integrations::parse(yaml, FILE, &registry, env).unwrap();
    assert_eq!(loaded.get("latest").unwrap().extends(), "intercom:v10");
    assert_eq!(
        loaded
            .get("latest")
            .unwrap()
            .blueprint()
            .base_url()
            .to_string(),
        "https://v10.test/"
    );
    assert_eq!(loaded.get("pinned").unwrap().extends(), "intercom:v9");
    let ids: Vec<String> = registry.iter().map(Blueprint::id).collect();
    assert_eq!(ids, ["intercom:v2", "intercom:v9", "intercom:v10"]);
}

#[test]
fn secrets_never_reach_debug_display_or_errors() {
    let yaml = "integrations:\n  intercom:\n    extends_blueprint: intercom\n    oauth_client_secret: ${INTERCOM_CLIENT_SECRET}\n    headers: { X-Api-Key: '${API_KEY}', X-Plain: '${API_KEY}', Authorization: 'Bearer literal-token' }\n";
    let loaded = load(yaml).unwrap();
    let i = loaded.get("intercom").unwrap();
    let secret = i.oauth_client_secret().unwrap();
    assert_eq!(secret.expose(), SECRET);
    for shown in [
        format!("{secret}"),
        format!("{secret:?}"),
        format!("{i}"),
        format!("{i:?}"),
        format!("{loaded}"),
        format!("{loaded:?}"),
    ] {
        assert!(!shown.contains(SECRET), "secret shown in: {shown}");
        assert!(
            !shown.contains("literal-token"),
            "credential header shown in: {shown}"
        );
    }
    assert!(format!("{i}").contains("oauth_client_secret: <redacted>"));
    assert!(
        format!("{i}").contains("x-plain: <redacted>"),
        "an env-sourced header value is hidden"
    );

    // Errors about secret values, or values from the environment, do not quote them.
    const S: &str = "${INTERCOM_CLIENT_SECRET}";
    for body in [
        format!("    extends_blueprint: intercom\n    oauth_pkce: {S}\n"),
        format!("    extends_blueprint: intercom\n    base_url: {S}\n"),
        format!("    extends_blueprint: intercom\n    region: {S}\n"),
        format!("    extends_blueprint: {S}\n"),
        format!("    extends_blueprint: intercom\n    headers: {{ X-A: \"{S}\\n\" }}\n"),
        format!(
            "    extends_blueprint: intercom\n    retry: {{ rules: [{{ method: '{S}', path: /, retry_safe: true }}] }}\n"
        ),
        format!("    extends_blueprint: plain\n    oauth_client_secret: {S}\n"),
        format!("    extends_blueprint: intercom\n    oauth_client_secret: {S}\n    bogus: 1\n"),
        "    extends_blueprint: intercom\n    oauth_client_secret: ${NOT_SET}-sup3r-s3cr3t-value\n"
            .to_owned(),
    ] {
        let e = fails(&format!("integrations:\n  i:\n{body}"));
        let text = format!("{e} {e:?}");
        assert!(!text.contains(SECRET), "secret in error: {text}");
    }
}

#[test]
fn the_summary_prints_resolved_settings() {
    let loaded = load(ISSUE_EXAMPLE).unwrap();
    let summary = loaded.to_string();
    for line in [
        "integrations.yaml: 1 integration",
        "intercom: extends intercom:v0, region eu",
        "  base_url: http://127.0.0.1:9000/",
        "  headers: accept: application/json, intercom-version: 2.11",
        "  oauth_token_url: http://127.0.0.1:9000/auth/eagle/token",
        "  oauth_scopes: [read_users]",
        "  oauth_client_id: abc123",
        "  oauth_client_secret: <redacted>",
        "  retry rule: POST /companies retry_safe",
        "  tokens_expire: false",
    ] {
        assert!(
            summary.lines().any(|l| l == line),
            "missing `{line}` in:\n{summary}"
        );
    }
}

#[test]
fn load_reads_a_file_and_the_process_environment() {
    let dir = env!("CARGO_TARGET_TMPDIR");
    let path = std::path::Path::new(dir).join(format!("integrations-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "integrations:\n  i:\n    extends_blueprint: intercom\n",
    )
    .unwrap();
    let loaded = Integrations::load(&path, &registry()).unwrap();
    assert_eq!(loaded.file(), path.display().to_string());
    assert_eq!(loaded.len(), 1);

    // Cargo sets CARGO_PKG_NAME for the test process: a variable that is really set.
    std::fs::write(
        &path,
        "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_client_id: ${CARGO_PKG_NAME}\n",
    )
    .unwrap();
    let loaded = Integrations::load(&path, &registry()).unwrap();
    let expected = std::env::var("CARGO_PKG_NAME").unwrap();
    assert_eq!(
        loaded.get("i").unwrap().oauth_client_id(),
        Some(expected.as_str())
    );

    std::fs::write(&path, "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_client_id: ${BLUEPRINT_TEST_SURELY_UNSET_9F2C}\n").unwrap();
    let e = Integrations::load(&path, &registry()).unwrap_err();
    assert_eq!(e.variable(), Some("BLUEPRINT_TEST_SURELY_UNSET_9F2C"));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:4:22: ", path.display())),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();

    let e = Integrations::load(&path, &registry()).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Io);
    assert_eq!(e.line(), None);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}
