//! Stores to run the same tests against: the embedded SQLite in a fresh
//! directory, and PostgreSQL (COMMONS_TEST_DATABASE_URL, by default the
//! local server's `test` database) in a fresh schema.
//!
//! PostgreSQL missing is a failure that says so, not a silent pass; set
//! COMMONS_TEST_SKIP_POSTGRES=1 to run without it, with a warning.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use store::Location;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct TestStore {
    pub name: &'static str,
    pub location: Location,
    _dir: tempfile::TempDir,
}

pub fn postgres_url() -> Option<String> {
    if std::env::var_os("COMMONS_TEST_SKIP_POSTGRES").is_some() {
        eprintln!("WARNING: COMMONS_TEST_SKIP_POSTGRES is set: the PostgreSQL half of the store tests did not run");
        return None;
    }
    Some(std::env::var("COMMONS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()))
}

/// A fresh schema on the test server, and a URL that uses it.
pub fn fresh_postgres(url: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let schema = format!("t{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos());
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {url} is not reachable ({e}). Start it (.ci/run does: pg_ctlcluster --skip-systemctl-redirect \
             $(ls /etc/postgresql) main start), point COMMONS_TEST_DATABASE_URL at one, or set COMMONS_TEST_SKIP_POSTGRES=1"
        )
    });
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000
}

impl Drop for TestStore {
    fn drop(&mut self) {
        // Drop the test's schema; a failure only leaves it behind.
        if let Some(url) = &self.location.database
            && let Some(schema) = url.rsplit("search_path%3D").next()
            && let Some(base) = postgres_url()
            && let Ok(mut client) = postgres::Client::connect(&base, postgres::NoTls)
        {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// One SQLite store and one PostgreSQL store, each empty.
pub fn stores() -> Vec<TestStore> {
    let mut all = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    all.push(TestStore { name: "sqlite", location: Location::new(Some(dir.path().to_owned()), None), _dir: dir });
    if let Some(url) = postgres_url() {
        let dir = tempfile::tempdir().unwrap();
        let database = Some(fresh_postgres(&url));
        all.push(TestStore {
            name: "postgres",
            location: Location::new(Some(dir.path().to_owned()), database),
            _dir: dir,
        });
    }
    all
}
