//! `integrations.yaml` loading: good files, every kind of mistake with its line and
//! column, `${VAR}` substitution, precedence of overrides, and secrets kept out of output.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use blueprint::{
    Blueprint, BlueprintSource, ClientAuth, ConfigError, ConfigErrorKind, Integrations,
    OAuthSettings, ParamSource, Region, Registry, ResetFormat, RetryRule, WaitFrom,
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
    // The example pins no Intercom-Version (a copy of it must not freeze an old one):
    // the blueprint's own stays.
    assert_eq!(
        prod.blueprint().default_headers()["intercom-version"],
        "2.10"
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
fn a_syntax_error_at_the_end_points_at_a_line_that_exists() {
    // Found by fuzzing: the parser placed this error on line 4 of a three-line text.
    let e = fails("a: &a [x, x]\nb:\nintegra\u{13}te");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert_eq!(e.line(), Some(3), "{e}");
    // And this empty explicit key on line 2 of a one-line text.
    let e = fails("? ");
    assert_eq!(
        (e.kind(), e.line(), e.column()),
        (ConfigErrorKind::UnknownKey, Some(1), Some(3)),
        "{e}"
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
fn header_values_from_the_environment_stay_hidden_in_blueprints_that_declare_them() {
    let loaded = load(
        "blueprints:\n  b:\n    base_url: https://b.test\n    headers: { X-Plain: '${API_KEY}' }\nintegrations:\n  i:\n    extends_blueprint: b\n",
    )
    .unwrap();
    let bp = loaded.registry().get("b").unwrap();
    assert_eq!(bp.default_headers()["x-plain"], SECRET);
    for shown in [
        bp.to_string(),
        format!("{bp:?}"),
        loaded.to_string(),
        format!("{loaded:?}"),
    ] {
        assert!(!shown.contains(SECRET), "secret shown in: {shown}");
    }
    assert!(bp.to_string().contains("x-plain: <redacted>"), "{bp}");
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

// ---- Issue 13: hostile sizes get an error, never a panic or a long wait ----

/// An integration with `n` default headers (flow style, one line).
fn with_headers(n: usize) -> String {
    let mut yaml =
        String::from("integrations:\n  i:\n    extends_blueprint: intercom\n    headers:\n");
    for i in 0..n {
        yaml.push_str(&format!("      X-H{i}: v\n"));
    }
    yaml
}

#[test]
fn a_huge_headers_mapping_is_an_error_not_a_panic() {
    // 24,600 entries used to overflow `http`'s HeaderMap (a panic, exit 101).
    let e = fails(&with_headers(24_600));
    assert_eq!(e.kind(), ConfigErrorKind::TooLarge, "{e}");
    assert_eq!((e.line(), e.column()), (Some(1_005), Some(7)), "{e}");
    assert!(e.to_string().contains("more than 1000 keys"), "{e}");

    // Below the mapping bound, the header bound names the first header too many.
    let e = fails(&with_headers(65));
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::TooLarge,
            "integrations.i.headers.X-H64",
            69,
            7
        )
    );
    assert!(load(&with_headers(64)).is_ok());
}

#[test]
fn a_mapping_with_sixty_thousand_keys_is_refused_and_duplicates_are_found_in_one_pass() {
    let mut yaml = String::from("integrations:\n");
    for i in 0..60_000 {
        yaml.push_str(&format!("  i{i}: 0\n"));
    }
    assert!(yaml.len() < 1024 * 1024);
    let e = fails(&yaml);
    assert_eq!(e.kind(), ConfigErrorKind::TooLarge, "{e}");
    assert_eq!((e.line(), e.column()), (Some(1_002), Some(3)), "{e}");

    // A duplicate at the end of a full mapping is still found, and named with the first.
    let mut yaml = String::from("integrations:\n");
    for i in 0..999 {
        yaml.push_str(&format!("  i{i}: {{ extends_blueprint: intercom }}\n"));
    }
    yaml.push_str("  i3: { extends_blueprint: intercom }\n");
    let e = fails(&yaml);
    assert_eq!(
        at(&e),
        (ConfigErrorKind::DuplicateKey, "integrations.i3", 1_001, 3)
    );
    assert!(e.to_string().contains("first at line 5, column 3"), "{e}");
}

#[test]
fn every_size_is_bounded_with_a_position() {
    // The file.
    let mut big = String::from("integrations:\n  i:\n    extends_blueprint: intercom\n# ");
    big.push_str(&"x".repeat(1024 * 1024));
    let e = fails(&big);
    assert_eq!(e.kind(), ConfigErrorKind::TooLarge, "{e}");
    assert_eq!(e.line(), Some(4), "{e}");
    assert!(e.to_string().contains("larger than 1024 KiB"), "{e}");

    // One value.
    let long = format!(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_client_id: {}\n",
        "a".repeat(17 * 1024)
    );
    let e = fails(&long);
    assert_eq!(
        (e.kind(), e.line(), e.column()),
        (ConfigErrorKind::TooLarge, Some(4), Some(22)),
        "{e}"
    );

    // One list.
    let items = vec!["s"; 1_001].join(", ");
    let e = fails(&format!(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_scopes: [{items}]\n"
    ));
    assert_eq!(
        (e.kind(), e.line()),
        (ConfigErrorKind::TooLarge, Some(4)),
        "{e}"
    );
    assert!(e.to_string().contains("more than 1000 items"), "{e}");

    // Nesting.
    let deep = format!("integrations: {}{}\n", "[".repeat(40), "]".repeat(40));
    let e = fails(&deep);
    assert_eq!(
        (e.kind(), e.line()),
        (ConfigErrorKind::TooLarge, Some(1)),
        "{e}"
    );
    assert!(e.to_string().contains("nested too deeply"), "{e}");
}

// ---- Issue 13: values that can never work are refused where they are written ----

#[test]
fn base_urls_that_cannot_work_are_refused_with_their_position() {
    for (url, why) in [
        (
            "http://127.0.0.1:99999/",
            "port must be a number from 1 to 65535",
        ),
        ("https://api.acme.test/api/../", "`..` segments"),
        ("https://api.acme.test/./v1", "`..` segments"),
    ] {
        let e = fails(&format!(
            "integrations:\n  i:\n    extends_blueprint: plain\n    base_url: {url}\n"
        ));
        assert_eq!(
            at(&e),
            (
                ConfigErrorKind::InvalidValue,
                "integrations.i.base_url",
                4,
                15
            ),
            "{url}: {e}"
        );
        assert!(e.to_string().contains(why), "{url}: {e}");
    }
}

#[test]
fn plain_http_oauth_urls_are_refused_with_their_position_unless_loopback() {
    let e = fails(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_token_url: http://auth.example.com/token\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::InvalidValue,
            "integrations.i.oauth_token_url",
            4,
            22
        )
    );
    assert!(e.to_string().contains("plain http"), "{e}");
    let e = fails(
        "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_authorization_url: http://app.example.com/oauth\n",
    );
    assert_eq!(at(&e).1, "integrations.i.oauth_authorization_url");
    for host in ["127.0.0.1:9000", "localhost", "[::1]:8080"] {
        let yaml = format!(
            "integrations:\n  i:\n    extends_blueprint: intercom\n    oauth_token_url: http://{host}/token\n"
        );
        assert!(load(&yaml).is_ok(), "{host}");
    }
}

// ---- Issue 12: blueprints as data ----

const ACME: &str = r#"
blueprints:
  acme:
    version: v2
    base_url: https://api.acme.test/v2
    regions:
      eu: { base_url: "https://eu.acme.test/v2", oauth_token_url: "https://eu.acme.test/token" }
    headers: { Accept: application/json, X-Acme-Client: blueprint }
    oauth_authorization_url: https://acme.test/authorize
    oauth_token_url: https://acme.test/token
    oauth_client_auth: basic
    oauth_pkce: true
    oauth_scopes: [read, write]
    oauth_scope_separator: ","
    oauth_authorization_params: { access_type: offline }
    tokens_expire: true
    rate_limit_headers: { limit: X-Limit, remaining: X-Left, reset: X-Reset, reset_format: epoch_millis }
    rate_limited:
      - { status: 403, when: { X-Left: "0" }, wait_from: reset }
      - { status: 429 }
    max_server_wait_ms: 120000
    retry:
      max_attempts: 4
      rules: [{ method: POST, path: /search, retry_safe: true }]
    routes: ["/users/{id}", "/users/{id}/orders"]
  acme-lite:
    extends_blueprint: acme
    version: v1
    tokens_expire: false
    headers: { X-Acme-Client: lite }
integrations:
  acme:
    extends_blueprint: acme-lite
    oauth_client_id: id
"#;

#[test]
fn a_blueprints_section_declares_every_setting() {
    let loaded = load(ACME).unwrap();
    let acme = loaded.registry().get("acme:v2").unwrap();
    assert_eq!(acme.base_url().to_string(), "https://api.acme.test/v2/");
    assert_eq!(acme.regions()[0].name, "eu");
    assert_eq!(
        acme.regions()[0].token_url.as_deref(),
        Some("https://eu.acme.test/token")
    );
    assert_eq!(acme.default_headers()["x-acme-client"], "blueprint");
    let oauth = acme.oauth().unwrap();
    assert_eq!(oauth.authorization_url, "https://acme.test/authorize");
    assert_eq!(oauth.client_auth, ClientAuth::Basic);
    assert!(oauth.pkce);
    assert_eq!(oauth.scope_param(), "read,write");
    assert_eq!(
        oauth.extra_authorization_params,
        [("access_type".to_owned(), "offline".to_owned())]
    );
    let rate = acme.rate_limit();
    assert_eq!(
        (
            rate.limit.as_str(),
            rate.remaining.as_str(),
            rate.reset.as_str()
        ),
        ("x-limit", "x-left", "x-reset")
    );
    assert_eq!(rate.reset_format, ResetFormat::EpochMillis);
    let rules = acme.rate_limited();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].status, http::StatusCode::FORBIDDEN);
    assert_eq!(
        rules[0].when,
        [(http::HeaderName::from_static("x-left"), "0".to_owned())]
    );
    assert_eq!(rules[0].wait_from, WaitFrom::Reset);
    assert_eq!(rules[1].wait_from, WaitFrom::RetryAfterOrReset);
    assert_eq!(acme.max_server_wait(), Duration::from_secs(120));
    assert_eq!(acme.retry().max_attempts, 4);
    assert_eq!(retry_rule(acme, &Method::POST, "/search"), Some(true));
    assert_eq!(
        blueprint::Routes::of(acme)
            .find("/users/7/orders")
            .map(|r| &**r),
        Some("/users/{id}/orders")
    );
    assert_eq!(
        loaded.registry().source("acme:v2"),
        Some(&BlueprintSource::File {
            file: FILE.into(),
            line: 3,
            column: 3
        })
    );
}

#[test]
fn a_blueprint_extends_another_and_inherits_what_it_does_not_set() {
    let loaded = load(ACME).unwrap();
    let lite = loaded.registry().get("acme-lite").unwrap();
    assert_eq!(lite.id(), "acme-lite:v1");
    assert!(!lite.tokens_expire(), "its own setting");
    assert_eq!(
        lite.default_headers()["x-acme-client"],
        "lite",
        "merged, its own wins"
    );
    assert_eq!(
        lite.default_headers()["accept"],
        "application/json",
        "inherited"
    );
    assert_eq!(lite.base_url().to_string(), "https://api.acme.test/v2/");
    assert_eq!(lite.oauth().unwrap().scope_separator, ",");
    assert_eq!(lite.rate_limited().len(), 2);
    assert_eq!(lite.max_server_wait(), Duration::from_secs(120));
    assert_eq!(lite.routes().len(), 2);
    let i = loaded.get("acme").unwrap();
    assert_eq!(i.extends(), "acme-lite:v1");
    assert!(!i.blueprint().tokens_expire());

    // Declared in any order: the child first.
    let reordered = "blueprints:\n  child:\n    extends_blueprint: parent\n  parent:\n    base_url: https://p.test\n    tokens_expire: false\nintegrations: {}\n";
    let loaded = load(reordered).unwrap();
    assert!(!loaded.registry().get("child").unwrap().tokens_expire());
    assert_eq!(
        loaded
            .registry()
            .get("child")
            .unwrap()
            .base_url()
            .to_string(),
        "https://p.test/"
    );
    // A blueprint may extend a registered one too.
    let loaded = load("blueprints:\n  mine:\n    extends_blueprint: intercom:v0\n    version: v1\nintegrations: {}\n").unwrap();
    assert_eq!(loaded.registry().get("mine:v1").unwrap().regions().len(), 3);
}

#[test]
fn blueprint_mistakes_are_named_with_file_line_and_column() {
    // A cycle.
    let e = fails(
        "blueprints:\n  a:\n    extends_blueprint: b\n  b:\n    extends_blueprint: a\nintegrations: {}\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::ExtendsCycle,
            "blueprints.b.extends_blueprint",
            5,
            24
        )
    );
    assert!(
        e.to_string()
            .contains("b:v0 extends a:v0, which extends it back"),
        "{e}"
    );
    let e = fails("blueprints:\n  a:\n    extends_blueprint: a\nintegrations: {}\n");
    assert_eq!(at(&e).0, ConfigErrorKind::ExtendsCycle);
    // An unknown parent.
    let e = fails("blueprints:\n  a:\n    extends_blueprint: nope\nintegrations: {}\n");
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::UnknownBlueprint,
            "blueprints.a.extends_blueprint",
            3,
            24
        )
    );
    // An unknown key, with a suggestion.
    let e = fails(
        "blueprints:\n  a:\n    base_url: https://a.test\n    rate_limted: []\nintegrations: {}\n",
    );
    assert_eq!(
        at(&e),
        (
            ConfigErrorKind::UnknownKey,
            "blueprints.a.rate_limted",
            4,
            5
        )
    );
    assert!(
        e.to_string().contains("did you mean `rate_limited`?"),
        "{e}"
    );
    // A blueprint that extends none needs a base URL.
    let e = fails("blueprints:\n  a:\n    tokens_expire: true\nintegrations: {}\n");
    assert_eq!(at(&e), (ConfigErrorKind::MissingKey, "blueprints.a", 2, 3));
    // Integration-only keys are not a blueprint's, and the other way round.
    let e = fails(
        "blueprints:\n  a:\n    base_url: https://a.test\n    oauth_client_secret: x\nintegrations: {}\n",
    );
    assert_eq!(at(&e).0, ConfigErrorKind::UnknownKey);
    let e = fails("integrations:\n  i:\n    extends_blueprint: intercom\n    version: v1\n");
    assert_eq!(
        at(&e),
        (ConfigErrorKind::UnknownKey, "integrations.i.version", 4, 5)
    );
    // Bad new values.
    for (lines, key, token) in [
        (
            "rate_limited: [{ status: 200 }]",
            "rate_limited[0].status",
            "200",
        ),
        (
            "rate_limited: [{ wait_from: reset }]",
            "rate_limited[0]",
            "{",
        ),
        (
            "rate_limited: [{ status: 429, wait_from: later }]",
            "rate_limited[0].wait_from",
            "later",
        ),
        ("max_server_wait_ms: 0", "max_server_wait_ms", "0"),
        ("routes: [contacts]", "routes[0]", "contacts"),
        ("routes: ['/a/{b c}']", "routes[0]", "'/a"),
        ("oauth_scope_separator: ab", "oauth_scope_separator", "ab"),
        (
            "connection_params: { 1x: { from: import } }",
            "connection_params.1x",
            "1x",
        ),
        (
            "connection_params: { x: { from: nowhere } }",
            "connection_params.x.from",
            "nowhere",
        ),
        (
            "connection_params: { x: { pattern: a } }",
            "connection_params.x",
            "x:",
        ),
        (
            "connection_params: { x: { from: import, pattern: '(' } }",
            "connection_params.x.pattern",
            "'('",
        ),
        (
            "regions: { eu: { oauth_token_url: 'https://x.test' } }",
            "regions.eu",
            "eu:",
        ),
    ] {
        let yaml = format!(
            "blueprints:\n  a:\n    base_url: https://a.test\n    {lines}\nintegrations: {{}}\n"
        );
        let e = fails(&yaml);
        let column = format!("    {lines}").find(token).unwrap() + 1;
        assert_eq!(
            (e.key().unwrap_or(""), e.line(), e.column()),
            (
                format!("blueprints.a.{key}").as_str(),
                Some(4),
                Some(column)
            ),
            "{lines}: {e}"
        );
    }
}

#[test]
fn connection_parameters_are_declared_checked_and_placed_safely() {
    let yaml = r#"
blueprints:
  desk:
    version: v2
    connection_params:
      subdomain: { from: connect_query, pattern: "[a-z0-9-]+" }
      instance: { from: token_field, field: instance_url }
    base_url: https://${connection.subdomain}.desk.example.com/api/${PORT}
    oauth_token_url: https://${connection.subdomain}.desk.example.com/oauth/tokens
    oauth_authorization_url: https://desk.example.com/${connection.subdomain}/authorize
    headers: { X-Desk-Tenant: "${connection.subdomain}" }
integrations:
  desk:
    extends_blueprint: desk
"#;
    let loaded = load(yaml).unwrap();
    let desk = loaded.registry().get("desk").unwrap();
    assert_eq!(
        desk.base_url_template(),
        Some("https://${connection.subdomain}.desk.example.com/api/9000"),
        "`${{VAR}}` expands beside a connection parameter"
    );
    assert!(desk.base_url().origin().host().ends_with(".invalid"));
    assert!(desk.needs_connection_params());
    let params = desk.connection_params();
    assert_eq!(params.len(), 2);
    assert_eq!(params[0].from(), ParamSource::ConnectQuery);
    assert_eq!(params[0].pattern_str(), Some("[a-z0-9-]+"));
    assert_eq!(params[1].field_name(), "instance_url");
    let acme = desk
        .for_connection(|n| (n == "subdomain").then(|| "acme".to_owned()))
        .unwrap();
    assert_eq!(
        acme.base_url().to_string(),
        "https://acme.desk.example.com/api/9000/"
    );
    assert_eq!(
        acme.oauth().unwrap().authorization_url,
        "https://desk.example.com/acme/authorize"
    );
    assert_eq!(acme.default_headers()["x-desk-tenant"], "acme");

    let base = "blueprints:\n  d:\n    connection_params: { sub: { from: import } }\n";
    for (line, key, token, why) in [
        (
            "base_url: https://${connection.nope}.d.example.com",
            "base_url",
            "https",
            "names no declared",
        ),
        (
            "base_url: https://x${connection.sub}.d.example.com",
            "base_url",
            "https",
            "part of a DNS label",
        ),
        (
            "base_url: https://${connection.sub}.com",
            "base_url",
            "https",
            "two literal labels",
        ),
        (
            "base_url: 'https://d.example.com:${connection.sub}'",
            "base_url",
            "'https",
            "port",
        ),
        (
            "base_url: https://d.example.com/a${connection.sub}",
            "base_url",
            "https",
            "part of a path segment",
        ),
        (
            "headers: { X-A: '${connection.nope}' }",
            "headers.X-A",
            "'$",
            "names no declared",
        ),
        (
            "oauth_scopes: ['${connection.sub}']",
            "oauth_scopes[0]",
            "'$",
            "not allowed in this value",
        ),
    ] {
        let yaml =
            format!("{base}    base_url: https://d.example.com\n    {line}\nintegrations: {{}}\n");
        let yaml = if line.starts_with("base_url") {
            format!("{base}    {line}\nintegrations: {{}}\n")
        } else {
            yaml
        };
        let e = fails(&yaml);
        let line_no = if line.starts_with("base_url") { 4 } else { 5 };
        let column = format!("    {line}").find(token).unwrap() + 1;
        assert_eq!(
            (e.key().unwrap_or(""), e.line(), e.column()),
            (
                format!("blueprints.d.{key}").as_str(),
                Some(line_no),
                Some(column)
            ),
            "{line}: {e}"
        );
        assert!(e.to_string().contains(why), "{line}: {e}");
    }
}

#[test]
fn blueprint_files_load_together_and_duplicates_are_named() {
    let mut registry = Registry::new();
    registry
        .load_files(
            &[
                (
                    "b.yaml".into(),
                    "name: b\nextends_blueprint: a:v1\ntokens_expire: false\n",
                ),
                (
                    "a.yaml".into(),
                    "name: a\nversion: v1\nbase_url: https://a.test\n",
                ),
            ],
            &|_| None,
        )
        .unwrap();
    assert!(!registry.get("b").unwrap().tokens_expire());
    assert_eq!(registry.source("b").unwrap().to_string(), "b.yaml:1:7");
    let e = Registry::new()
        .load_files(
            &[
                ("a.yaml".into(), "name: a\nbase_url: https://a.test\n"),
                (
                    "a2.yaml".into(),
                    "# again\nname: a\nbase_url: https://b.test\n",
                ),
            ],
            &|_| None,
        )
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.file(), e.line(), e.column()),
        (ConfigErrorKind::DuplicateKey, "a2.yaml", Some(2), Some(7))
    );
    assert!(e.to_string().contains("first at a.yaml:1:7"), "{e}");
    let e = Registry::new()
        .load_files(&[("c.yaml".into(), "base_url: https://c.test\n")], &|_| {
            None
        })
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.key()),
        (ConfigErrorKind::MissingKey, Some("name"))
    );

    // A folder of files.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("blueprints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("acme.yaml"),
        "name: acme\nversion: v3\nbase_url: https://acme.test\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a blueprint").unwrap();
    let mut registry = Registry::builtin().unwrap();
    registry.load_dir(&dir).unwrap();
    assert_eq!(registry.get("acme").unwrap().id(), "acme:v3");
    assert!(registry.get("github").is_some());
    std::fs::write(dir.join("bad.yaml"), "name: bad\nbase_url: ftp://x\n").unwrap();
    let e = Registry::new().load_dir(&dir).unwrap_err();
    assert!(e.file().ends_with("bad.yaml"), "{e}");
    assert_eq!(e.line(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_built_in_catalog_loads_with_its_facts() {
    let registry = Registry::builtin().unwrap();
    let ids: Vec<String> = registry.iter().map(Blueprint::id).collect();
    assert_eq!(
        ids,
        [
            "github:v1",
            "hubspot:v1",
            "intercom:v0",
            "slack:v2",
            "zendesk:v2"
        ]
    );
    for (bp, source) in registry.iter_with_source() {
        assert!(
            matches!(source, BlueprintSource::BuiltIn { file } if file.ends_with(&format!("{}.yaml", bp.name()))),
            "{source}"
        );
        assert!(bp.oauth().is_some(), "{}", bp.id());
    }
    let github = registry.get("github").unwrap();
    let mut headers = http::HeaderMap::new();
    assert!(
        github
            .rate_limit_rule(http::StatusCode::FORBIDDEN, &headers)
            .is_none(),
        "a plain 403 is a refusal"
    );
    headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
    assert_eq!(
        github
            .rate_limit_rule(http::StatusCode::FORBIDDEN, &headers)
            .unwrap()
            .wait_from,
        WaitFrom::Reset
    );
    assert!(github.tokens_expire());
    let slack = registry.get("slack").unwrap();
    assert_eq!(
        slack.oauth().unwrap().scope_param(),
        "channels:read,chat:write"
    );
    let zendesk = registry.get("zendesk").unwrap();
    assert!(zendesk.needs_connection_params());
    let acme = zendesk.for_connection(|_| Some("acme".to_owned())).unwrap();
    assert_eq!(
        acme.base_url().to_string(),
        "https://acme.zendesk.com/api/v2/"
    );
    assert_eq!(
        acme.oauth().unwrap().token_url,
        "https://acme.zendesk.com/oauth/tokens"
    );
    assert!(
        zendesk
            .for_connection(|_| Some("evil.com/".to_owned()))
            .is_err()
    );
    assert_eq!(
        registry.get("hubspot").unwrap().base_url().to_string(),
        "https://api.hubapi.com/"
    );
    // Integrations extend the catalog like any registry.
    let loaded = Integrations::parse(
        "integrations:\n  gh:\n    extends_blueprint: github\n    oauth_client_id: Iv1.abc\n",
        FILE,
        &registry,
        env,
    )
    .unwrap();
    assert_eq!(loaded.get("gh").unwrap().extends(), "github:v1");
}
