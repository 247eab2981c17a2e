//! What the tests of several crates share: a fresh PostgreSQL schema for
//! each test that runs against PostgreSQL as well as SQLite.
//!
//! # Invariants
//! - PostgreSQL missing is a failure that says how to fix it, never a
//!   silent pass; COMMONS_TEST_SKIP_POSTGRES=1 runs without it, with a
//!   warning on stderr.
//! - Each schema is new and named for its process and a counter, so tests
//!   running at once never share tables.
//!
//! # Deliberately absent
//! This crate is a dev-dependency only (`publish = false`): no production
//! crate depends on it, so nothing here is compiled into `commons`.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The test server when COMMONS_TEST_DATABASE_URL does not name another.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server to test against, or `None` (with a warning on
/// stderr) when COMMONS_TEST_SKIP_POSTGRES is set.
pub fn postgres_url() -> Option<String> {
    if std::env::var_os("COMMONS_TEST_SKIP_POSTGRES").is_some() {
        eprintln!("WARNING: COMMONS_TEST_SKIP_POSTGRES is set: the PostgreSQL half of this test did not run");
        return None;
    }
    Some(std::env::var("COMMONS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()))
}

/// A fresh schema on the server at `url`, and a URL whose connections use
/// it. Panics, saying how to fix it, when the server is not reachable.
pub fn fresh_schema(url: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let schema = format!("t{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {url} is not reachable ({e}). Start it (.ci/run does: pg_ctlcluster --skip-systemctl-redirect \
             $(ls /etc/postgresql) main start), point COMMONS_TEST_DATABASE_URL at one, or set COMMONS_TEST_SKIP_POSTGRES=1"
        )
    });
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).expect("creating a test schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

/// Drops the schema a [`fresh_schema`] URL uses; errors only leave it behind.
pub fn drop_schema(schema_url: &str) {
    if let Some(schema) = schema_url.rsplit("search_path%3D").next()
        && let Some(base) = postgres_url()
        && let Ok(mut client) = postgres::Client::connect(&base, postgres::NoTls)
    {
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}

/// Where a test's store lives: a fresh data directory, and a fresh
/// PostgreSQL schema when it is the PostgreSQL half of the test. The
/// schema is dropped with it.
pub struct Place {
    /// `sqlite` or `postgres`, for messages.
    pub name: &'static str,
    pub dir: tempfile::TempDir,
    /// The `postgres://` URL of the schema, for the PostgreSQL half.
    pub database: Option<String>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(url) = &self.database {
            drop_schema(url);
        }
    }
}

/// A fresh place on each database: SQLite, then PostgreSQL.
pub fn places() -> Vec<Place> {
    let mut all = vec![Place { name: "sqlite", dir: tempdir(), database: None }];
    if let Some(url) = postgres_url() {
        all.push(Place { name: "postgres", dir: tempdir(), database: Some(fresh_schema(&url)) });
    }
    all
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory for the test")
}
