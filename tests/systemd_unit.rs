//! `deploy/systemd/blueprint-proxy.service`: systemd accepts it (`systemd-analyze verify`,
//! where installed), its sandbox rates "OK" (`systemd-analyze security`), and its
//! `ExecStart` script really starts the proxy with the secret key read from the credential,
//! the SQLite file in the state directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http::Method;
use proxy_support::{KEY, Target, TempDir, binary};
use tokio::io::{AsyncBufReadExt, BufReader};

const UNIT: &str = include_str!("../deploy/systemd/blueprint-proxy.service");
/// The binary, config and address the unit's `ExecStart` names.
const UNIT_BINARY: &str = "/usr/local/bin/blueprint-proxy";
const UNIT_CONFIG: &str = "/etc/blueprint-proxy/integrations.yaml";
const UNIT_LISTEN: &str = "--listen 127.0.0.1:3003";

/// `systemd-analyze`, where it is installed.
fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The values of `key=` lines in the unit, in order.
fn values<'a>(key: &str) -> Vec<&'a str> {
    UNIT.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_runs_unprivileged_in_a_sandbox_with_the_key_as_a_credential() {
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "blueprint-proxy"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        (
            "LoadCredential",
            "secret-key:/etc/blueprint-proxy/secret-key",
        ),
    ] {
        assert!(
            values(key).contains(&want),
            "the unit has no `{key}={want}`"
        );
    }
    assert!(values("User").is_empty(), "DynamicUser, not a fixed User=");
    for line in UNIT.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.starts_with("Environment=BLUEPRINT_SECRET_KEY")
                && !line.starts_with("Environment=\"BLUEPRINT_SECRET_KEY"),
            "the secret key is in the unit file: {line}"
        );
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Some(tool) = systemd_analyze() else {
        eprintln!("systemd-analyze is not installed: the unit is not verified here");
        return;
    };
    let dir = TempDir::new("unit");
    let unit = dir.path("blueprint-proxy.service");
    std::fs::write(&unit, UNIT).unwrap();
    // `verify` exits 0 on unknown keys and bad values too: it must also print nothing.
    let output = std::process::Command::new(&tool)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        output.status
    );

    // The sandbox: "OK" is 2.0 or less on systemd's scale of 0 (locked) to 10 (exposed);
    // `--threshold` is in tenths.
    let output = std::process::Command::new(&tool)
        .args(["security", "--offline=yes", "--no-pager", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(no overall level)");
    assert!(
        output.status.success(),
        "the unit's sandbox is weaker than systemd's \"OK\": {overall}\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sends SIGKILL to a process group when dropped (a test that failed midway included).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

/// The shell script of `ExecStart=/bin/sh -c '…'`, with systemd's `$$` turned into `$`.
fn exec_start_script() -> String {
    let exec = values("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    let script = exec[0]
        .strip_prefix("/bin/sh -c '")
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or_else(|| panic!("ExecStart is not `/bin/sh -c '…'`: {}", exec[0]));
    assert!(!script.contains('\''), "the script holds a quote: {script}");
    script.replace("$$", "$")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_start_starts_the_proxy_with_the_key_from_the_credential() {
    let script = exec_start_script();
    for part in [UNIT_BINARY, UNIT_CONFIG, UNIT_LISTEN] {
        assert!(
            script.contains(part),
            "ExecStart no longer names {part}: {script}"
        );
    }
    let credentials = TempDir::new("credentials");
    let state = TempDir::new("state");
    let etc = TempDir::new("etc");
    // As `openssl rand -hex 32 > secret-key` writes it: with a final newline.
    std::fs::write(credentials.path("secret-key"), format!("{KEY}\n")).unwrap();
    std::fs::write(
        etc.path("integrations.yaml"),
        "integrations:\n  intercom:\n    extends_blueprint: intercom\n",
    )
    .unwrap();
    // The same script, on this machine's paths.
    let script = script
        .replace(UNIT_BINARY, &binary().display().to_string())
        .replace(
            UNIT_CONFIG,
            &etc.path("integrations.yaml").display().to_string(),
        )
        .replace(UNIT_LISTEN, "--listen 127.0.0.1:0");
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CREDENTIALS_DIRECTORY", &credentials.0)
        .env("STATE_DIRECTORY", &state.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so whatever it started is stopped with it, even if a
        // broken script left the proxy as the shell's child instead of `exec`ing it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("sh starts");
    let pid = child.id().expect("running");
    let _group = Group(pid);
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = child.stderr.take().expect("stderr");
    let logs = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let first = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
        .await
        .expect("the proxy starts within 20 s")
        .expect("stdout");
    let Some(first) = first else {
        let status = child.wait().await;
        panic!("the script exited ({status:?}): {}", logs.await.unwrap());
    };
    let addr = first
        .strip_prefix("blueprint-proxy listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let target = Target { addr };

    // The key from the credential file opens the routes that need it.
    let listed = target
        .send(target.request(Method::GET, "/connections"))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let wrong = target
        .send(
            http::Request::get(target.url("/connections"))
                .header("authorization", "Bearer not-the-key-0123456789"),
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    // The store is in the state directory.
    assert!(
        Path::new(&state.path("blueprint.db")).exists(),
        "no blueprint.db in the state directory"
    );
    // `exec`: the service's main process is the proxy itself (systemd's SIGTERM reaches
    // it), and the key is not on its command line.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(
        comm.trim(),
        "blueprint-proxy",
        "the shell did not exec the proxy"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(KEY),
        "the key is on the command line"
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the proxy exits on SIGTERM")
        .expect("wait");
    let logs = tokio::time::timeout(Duration::from_secs(5), logs)
        .await
        .expect("logs end")
        .unwrap();
    assert!(status.success(), "exit {status}: {logs}");
    assert!(!logs.contains(KEY), "the key reached the logs: {logs}");
}
