//! Stores to run the same tests against: the embedded SQLite in a fresh
//! directory, and PostgreSQL in a fresh schema (see `test_support`).

#![allow(dead_code)]

use store::Location;
use test_support::{drop_schema, fresh_schema, postgres_url};

pub struct TestStore {
    pub name: &'static str,
    pub location: Location,
    _dir: tempfile::TempDir,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(url) = &self.location.database {
            drop_schema(url);
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
        let database = Some(fresh_schema(&url));
        all.push(TestStore {
            name: "postgres",
            location: Location::new(Some(dir.path().to_owned()), database),
            _dir: dir,
        });
    }
    all
}
