//! Stores to run the same tests against: the embedded SQLite in a fresh
//! directory, and PostgreSQL in a fresh schema (see `test_support`).

#![allow(dead_code)]

use store::Location;
use test_support::{Place, places};

pub struct TestStore {
    pub name: &'static str,
    pub location: Location,
    _place: Place,
}

/// One SQLite store and one PostgreSQL store, each empty.
pub fn stores() -> Vec<TestStore> {
    places()
        .into_iter()
        .map(|place| TestStore {
            name: place.name,
            location: Location::new(Some(place.dir.path().to_owned()), place.database.clone()),
            _place: place,
        })
        .collect()
}
