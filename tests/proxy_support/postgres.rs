//! A database of one test's own on the shared PostgreSQL server (127.0.0.1:5432, or
//! `BLUEPRINT_TEST_POSTGRES`), dropped when the test ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

/// The shared server of the tests.
pub fn shared_postgres() -> String {
    std::env::var("BLUEPRINT_TEST_POSTGRES")
        .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/test"))
}

/// A fresh database on the shared server; dropped (with `FORCE`) on drop.
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    /// Creates `<prefix>_<pid>_<n>_<nanos>`; panics with how to start PostgreSQL when the
    /// server does not answer.
    pub async fn create(prefix: &str) -> TestDatabase {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            UNIX_EPOCH.elapsed().unwrap().subsec_nanos()
        );
        let pool = sqlx::PgPool::connect(&shared_postgres())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need PostgreSQL at {} (user postgres, trust authentication, \
                     database `test`): {e}\nStart it with `pg_ctlcluster --skip-systemctl-redirect \
                     $(ls /etc/postgresql) main start` (what .ci/run does), or set \
                     BLUEPRINT_TEST_POSTGRES to another server's URL.",
                    shared_postgres()
                )
            });
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        TestDatabase { name }
    }

    /// Its URL on the shared server.
    pub fn url(&self) -> String {
        let base = shared_postgres();
        let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
        format!("{server}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // Drop may run inside a runtime: a thread of its own with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&shared_postgres()).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&pool)
                            .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}
