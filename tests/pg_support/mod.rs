//! A private PostgreSQL server for tests that stop and start it (an outage), so that the
//! shared server at 127.0.0.1:5432 that other tests use is never touched.
//!
//! It runs the installed server binaries (`/usr/lib/postgresql/<version>/bin`) on a free
//! loopback port with its data and socket in a temporary directory, with trust
//! authentication; as the `postgres` user when the tests run as root (initdb refuses root).

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL server of this test's own; stopped and removed on drop.
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Creates a cluster in a fresh temporary directory and starts it. Takes about a second.
    pub fn start(name: &str) -> PrivatePostgres {
        let bin = server_binaries();
        let as_postgres = output("id", &["-u"]).trim() == "0";
        let dir = std::env::temp_dir().join(format!(
            "blueprint-pg-{name}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if as_postgres {
            run("chown", &["postgres:postgres", path(&dir)]);
        }
        let port = free_port();
        let server = PrivatePostgres {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = server.data();
        server.pg(
            "initdb",
            &[
                "-D",
                path(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.start_again();
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on (also while stopped: it comes back there).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`pg_ctl stop -m fast`: connections are closed at once).
    pub fn stop(&self) {
        let data = self.data();
        self.pg("pg_ctl", &["-D", path(&data), "-m", "fast", "-w", "stop"]);
    }

    /// Starts it again after [`PrivatePostgres::stop`], waiting until it accepts connections.
    pub fn start_again(&self) {
        let data = self.data();
        let log = self.dir.join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            self.dir.display()
        );
        self.pg(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-o",
                &options,
                "-l",
                path(&log),
                "-t",
                "30",
                "-w",
                "start",
            ],
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs a server binary (as `postgres` when root), panicking with its output if it fails.
    fn pg(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let status = if self.as_postgres {
            let mut all = vec!["-u", "postgres", "--", path(&program)];
            all.extend_from_slice(args);
            Command::new("runuser").args(&all).output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            status.status.success(),
            "{} {args:?} failed: {}{}\nserver log:\n{}",
            program.display(),
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let program = self.bin.join("pg_ctl");
            let args = ["-D", path(&data), "-m", "immediate", "-w", "stop"];
            let _ = if self.as_postgres {
                let mut all = vec!["-u", "postgres", "--", path(&program)];
                all.extend_from_slice(&args);
                Command::new("runuser").args(&all).output()
            } else {
                Command::new(&program).args(args).output()
            };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn server_binaries() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/<version>/bin: this test \
             starts a private server of its own; install the `postgresql` package"
        )
    })
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

fn output(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish()
}
