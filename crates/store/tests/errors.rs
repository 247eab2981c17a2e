//! What a caller can tell apart in a `StoreError`: a write the schema
//! refuses (retrying cannot help) from a database out of reach (a retry
//! later may). On SQLite and PostgreSQL.

mod common;

use commons_core::{Bps, Period};
use store::{Location, NodeRecord, Store, StoreError};

#[test]
fn a_second_writer_appending_at_the_same_height_is_refused_by_a_constraint() {
    let period = Period::parse("2026-11").unwrap();
    for s in common::stores() {
        let mut first = Store::open(&s.location).unwrap();
        let mut second = Store::open(&s.location).unwrap();
        let pay = |store: &Store, user: &str| {
            ledger::payment(&store.ledger().nav(), period, user, 1000, Bps::new(100).unwrap(), user.as_bytes())
                .unwrap()
                .0
        };
        let (alice, bob) = (pay(&first, "alice"), pay(&second, "bob"));
        first.append(alice, 1).unwrap();
        let refused = second.append(bob, 2);
        assert!(matches!(refused, Err(StoreError::Constraint(_))), "{}: {refused:?}", s.name);
        assert_eq!(Store::open(&s.location).unwrap().ledger().height(), 1, "{}", s.name);
    }
}

#[test]
fn a_database_out_of_reach_is_unavailable_not_a_refusal() {
    for s in common::stores() {
        let node = NodeRecord {
            id: "pat-1".into(),
            provider: "pat".into(),
            location: "eu".into(),
            capacity_mb: 1,
            remote: false,
        };
        let outcome = match &s.location.database {
            None => {
                // Another writer holds SQLite's lock past the store's busy timeout.
                let mut store = Store::open(&s.location).unwrap();
                let other = rusqlite::Connection::open(store::sqlite_path(&s.location.data_dir)).unwrap();
                other.execute_batch("BEGIN EXCLUSIVE").unwrap();
                store.put_node(&node)
            }
            Some(url) => {
                // The server ends the store's connection.
                let name = format!("store_errors_{}", std::process::id());
                let location =
                    Location::new(Some(s.location.data_dir.clone()), Some(format!("{url}&application_name={name}")));
                let mut store = Store::open(&location).unwrap();
                let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
                admin
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                        &[&name],
                    )
                    .unwrap();
                store.put_node(&node)
            }
        };
        assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{}: {outcome:?}", s.name);
    }
}
