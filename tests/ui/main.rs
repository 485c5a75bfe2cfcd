//! The connections page (`GET /`) of the real `blueprint-proxy` binary, in a real browser:
//! headless Chromium driven by Playwright (`tests/ui/connections_page.cjs`), against a
//! fake provider on loopback whose tokens can be revoked.
//!
//! The browser test needs Debian's `chromium` and the npm packages of
//! `tests/ui/package-lock.json` installed outside the repository; `bash .ci/browser.sh`
//! installs both (CI runs it). When they are missing it fails under `CI=true` and is
//! skipped otherwise, saying so on the terminal.
//!
//! Environment (all optional): `BLUEPRINT_UI_CHROMIUM` (default `/usr/bin/chromium`),
//! `BLUEPRINT_UI_NODE` (where `npm ci` put `node_modules`, default
//! `/var/tmp/blueprint-ui-node`), `BLUEPRINT_UI_SCREENSHOTS` (where the screenshots go,
//! default this test's temporary folder under the target directory).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../proxy_support/mod.rs"]
mod proxy_support;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use blueprint_core::{AccessToken, ConnectionId};
use blueprint_refresh::{SqliteStore, StoreKey, TokenRecord, TokenStatus, TokenStore};
use http::Method;
use proxy_support::{FAST_RETRY, KEY, Process, TempDir, yaml};
use serde_json::{Value, json};
use tokio::time::Instant;

/// The token imported through the page.
const IMPORTED_TOKEN: &str = "tok_UI_imported_5eCr3t";
/// What the fake provider's token endpoint issues, with a counter after it.
const ISSUED_PREFIX: &str = "tok_UI_issued_";
/// A `last_error` that would run script and load an image if it were parsed as HTML.
const HOSTILE_ERROR: &str =
    "<script>window.__pwned = true</script><img src=x onerror=\"window.__pwned = true\">";
/// Scopes the fake provider grants, that would make an image if parsed as HTML.
const HOSTILE_SCOPE: &str = "read <img src=y onerror=window.__pwned=true>";
/// How long the whole browser script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_NODE_MODULES: &str = "/var/tmp/blueprint-ui-node";

// --- the fake provider ----------------------------------------------------------------

/// What the fake provider has seen and been told.
#[derive(Default)]
struct Provider {
    issued: u32,
    revoked: Vec<String>,
    /// `(token, status answered)` for each API call.
    calls: Vec<(String, u16)>,
    token_requests: u32,
}

type Shared = Arc<Mutex<Provider>>;

fn lock(provider: &Shared) -> std::sync::MutexGuard<'_, Provider> {
    provider.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An OAuth provider and API on loopback: `GET /oauth` approves at once and sends the
/// browser back, `POST /auth/eagle/token` issues tokens, `GET /me` answers 401 for a
/// revoked token, and `POST /test/revoke {"token"}` revokes one.
async fn fake_provider() -> (SocketAddr, Shared) {
    let shared = Shared::default();
    let app = axum::Router::new()
        .route("/oauth", get(authorize))
        .route("/auth/eagle/token", post(token))
        .route("/me", get(me))
        .route("/test/revoke", post(revoke))
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, shared)
}

/// The person approves at once: back to `redirect_uri` with a code and the `state`.
async fn authorize(Query(query): Query<HashMap<String, String>>) -> Response {
    let (Some(redirect), Some(state)) = (query.get("redirect_uri"), query.get("state")) else {
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri and state are required",
        )
            .into_response();
    };
    let url_safe = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    };
    if !url_safe(state) || !redirect.starts_with("http://127.0.0.1:") {
        return (StatusCode::BAD_REQUEST, "unexpected state or redirect_uri").into_response();
    }
    let location = format!("{redirect}?code=ui-code&state={state}");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn token(State(provider): State<Shared>) -> Json<Value> {
    let mut provider = lock(&provider);
    provider.issued += 1;
    provider.token_requests += 1;
    Json(json!({
        "access_token": format!("{ISSUED_PREFIX}{}", provider.issued),
        "token_type": "bearer",
        "scope": HOSTILE_SCOPE,
    }))
}

async fn me(State(provider): State<Shared>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let mut provider = lock(&provider);
    let status = if token.is_empty() || provider.revoked.contains(&token) {
        401
    } else {
        200
    };
    provider.calls.push((token, status));
    if status == 401 {
        let body = json!({"type": "error.list", "errors": [{"code": "unauthorized", "message": "Access Token Invalid"}]});
        (StatusCode::UNAUTHORIZED, Json(body)).into_response()
    } else {
        Json(json!({"type": "admin", "name": "UI test"})).into_response()
    }
}

async fn revoke(State(provider): State<Shared>, Json(body): Json<Value>) -> StatusCode {
    let Some(token) = body["token"].as_str() else {
        return StatusCode::BAD_REQUEST;
    };
    lock(&provider).revoked.push(token.to_owned());
    StatusCode::NO_CONTENT
}

// --- the browser ----------------------------------------------------------------------

/// What the browser test needs, found.
struct Browser {
    chromium: PathBuf,
    node_modules: PathBuf,
}

/// Chromium, Node 20 or later and the locked npm packages, or why not.
fn find_browser() -> Result<Browser, String> {
    let chromium = PathBuf::from(
        std::env::var("BLUEPRINT_UI_CHROMIUM").unwrap_or_else(|_| DEFAULT_CHROMIUM.into()),
    );
    if !chromium.is_file() {
        return Err(format!(
            "no Chromium at {} (Debian: `apt-get install -y chromium`)",
            chromium.display()
        ));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    let version = match node {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => {
            return Err(String::from(
                "`node` is not installed (Node.js 20 or later)",
            ));
        }
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!(
            "Node.js {version} is too old: Playwright needs 20 or later"
        ));
    }
    let node_modules = PathBuf::from(
        std::env::var("BLUEPRINT_UI_NODE").unwrap_or_else(|_| DEFAULT_NODE_MODULES.into()),
    );
    let wanted =
        std::fs::read(ui_dir().join("package-lock.json")).expect("tests/ui/package-lock.json");
    let installed = std::fs::read(node_modules.join("package-lock.json")).unwrap_or_default();
    if installed != wanted
        || !node_modules
            .join("node_modules/playwright-core/package.json")
            .is_file()
    {
        return Err(format!(
            "the npm packages of tests/ui/package-lock.json are not installed in {} \
             (or another lock file was)",
            node_modules.display()
        ));
    }
    Ok(Browser {
        chromium,
        node_modules,
    })
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// Says something on the terminal even while the test harness captures output.
fn tell(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Whether this is CI (`CI=true`, as `.ci/run` is run).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Runs the Playwright script with `env`; panics with its output when it fails.
async fn run_script(browser: &Browser, env: &[(&str, String)]) -> String {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(ui_dir().join("connections_page.cjs"))
        .env("BLUEPRINT_UI_CHROMIUM", &browser.chromium)
        .env("BLUEPRINT_UI_NODE", &browser.node_modules)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().expect("node starts");
    let pid = child.id();
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("node runs"),
        Err(_) => {
            // Playwright closes Chromium when node is asked to stop; the drop kills node.
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            panic!(
                "the browser script did not finish within {} s",
                SCRIPT_TIMEOUT.as_secs()
            );
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the browser script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// Two integrations over the fake provider: `intercom` with an OAuth app, `helpdesk`
/// (imported tokens only) without.
fn config(provider: &str) -> String {
    let extra = format!(
        "  helpdesk:\n    extends_blueprint: intercom\n    base_url: {provider}/\n    retry: {FAST_RETRY}\n"
    );
    yaml(provider, FAST_RETRY, &extra)
}

/// Writes a connection whose `last_error` is HTML, straight into the proxy's store (as a
/// second process sharing the file would).
async fn plant_hostile_connection(store: &Path) {
    let store = SqliteStore::open(store).await.expect("the store opens");
    let mut record = TokenRecord::new(
        AccessToken::new("tok_UI_hostile_never_shown").unwrap(),
        SystemTime::now(),
    );
    record.status = TokenStatus::RefreshFailing;
    record.last_error = Some(HOSTILE_ERROR.to_owned());
    store
        .put(
            &StoreKey::new("intercom", ConnectionId::new("hostile.1")),
            record,
        )
        .await
        .expect("the record is written");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_page_works_in_headless_chromium() {
    let browser = match find_browser() {
        Ok(browser) => browser,
        Err(why) if in_ci() => panic!(
            "the connections page cannot be tested in a browser: {why}. `.ci/run` installs \
             what it needs with `bash .ci/browser.sh`; that step failed or did not run"
        ),
        Err(why) => {
            tell(&format!(
                "SKIPPED the_connections_page_works_in_headless_chromium: {why}. Run `bash \
                 .ci/browser.sh` to install Chromium and Playwright (CI=true makes this a \
                 failure)."
            ));
            return;
        }
    };
    let (provider_addr, provider) = fake_provider().await;
    let provider_url = format!("http://{provider_addr}");
    let dir = TempDir::new("ui");
    std::fs::write(dir.path("i.yaml"), config(&provider_url)).unwrap();
    let store = dir.path("store.db");
    let proxy = Process::start(&dir.path("i.yaml"), &store, &[]).await;
    plant_hostile_connection(&store).await;

    let screenshots = std::env::var("BLUEPRINT_UI_SCREENSHOTS").map_or_else(
        |_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&screenshots).unwrap();
    let started = Instant::now();
    let stdout = run_script(
        &browser,
        &[
            ("PROXY_URL", proxy.url("")),
            ("PROVIDER_URL", provider_url.clone()),
            ("SECRET_KEY", KEY.to_owned()),
            ("IMPORTED_TOKEN", IMPORTED_TOKEN.to_owned()),
            ("ISSUED_PREFIX", ISSUED_PREFIX.to_owned()),
            ("HOSTILE_ERROR", HOSTILE_ERROR.to_owned()),
            ("HOSTILE_SCOPE", HOSTILE_SCOPE.to_owned()),
            ("SCREENSHOTS", screenshots.display().to_string()),
        ],
    )
    .await;
    eprintln!(
        "{stdout}browser script: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // What the browser did reached the real parts.
    {
        let provider = lock(&provider);
        assert!(
            provider
                .calls
                .iter()
                .any(|(token, status)| token == IMPORTED_TOKEN && *status == 200),
            "the imported token was never used: {:?}",
            provider.calls
        );
        assert!(
            provider
                .calls
                .iter()
                .any(|(token, status)| token == IMPORTED_TOKEN && *status == 401),
            "the revoked token was never refused: {:?}",
            provider.calls
        );
        assert_eq!(
            provider.token_requests, 1,
            "one authorization code exchanged"
        );
    }
    let listed = proxy.connections().await;
    let ids: Vec<&str> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"acme"), "acme was deleted: {listed}");
    assert!(ids.contains(&"beta"), "beta was connected: {listed}");
    let png = std::fs::read(screenshots.join("connections-page.png")).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );
    let logs = proxy.logs();
    for secret in [KEY, IMPORTED_TOKEN, ISSUED_PREFIX] {
        assert!(
            !logs.contains(secret),
            "`{secret}` in the proxy's logs:\n{logs}"
        );
    }
}

/// Without a browser: the page, its assets and the integrations route, as the binary
/// serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_without_the_key_with_strict_headers_and_the_api_needs_it() {
    let (provider_addr, _provider) = fake_provider().await;
    let dir = TempDir::new("ui-headers");
    std::fs::write(
        dir.path("i.yaml"),
        config(&format!("http://{provider_addr}")),
    )
    .unwrap();
    let proxy = Process::start(&dir.path("i.yaml"), &dir.path("store.db"), &[]).await;
    let plain = |path: &str| {
        http::Request::builder()
            .method(Method::GET)
            .uri(proxy.url(path))
    };

    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/page.js", "text/javascript; charset=utf-8"),
        ("/assets/page.css", "text/css; charset=utf-8"),
    ] {
        let reply = proxy.send(plain(path)).await;
        assert_eq!(
            reply.status,
            200,
            "{path} without the key: {}",
            reply.text()
        );
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
        let csp = reply.header("content-security-policy").unwrap_or("");
        assert!(csp.starts_with("default-src 'self';"), "{path}: {csp}");
        for directive in [
            "script-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "form-action 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing in {csp}"
            );
        }
        assert!(!csp.contains("unsafe-"), "{path}: {csp}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            reply.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
        assert!(reply.header("set-cookie").is_none(), "{path} sets a cookie");
        assert!(!reply.text().contains(KEY));
    }
    let html = proxy.send(plain("/")).await.text();
    assert!(html.contains("<script src=\"assets/page.js\" defer></script>"));
    assert!(html.contains("<label for=\"key-input\">Secret key</label>"));

    let refused = proxy.send(plain("/integrations")).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (401, "unauthorized")
    );
    let listed = proxy
        .send(proxy.request(Method::GET, "/integrations"))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(
        listed.json(),
        json!({"integrations": [
            {"name": "intercom", "oauth_app": true},
            {"name": "helpdesk", "oauth_app": false},
        ]})
    );
    assert!(!listed.text().contains(proxy_support::CLIENT_SECRET));
}
