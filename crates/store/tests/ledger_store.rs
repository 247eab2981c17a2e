//! The ledger on disk, against SQLite and PostgreSQL alike.

mod common;

use commons_core::{Bps, Period};
use ledger::{AccountName, Transfer, TransferId, TransferKind, payment};
use store::{Store, StoreError};

fn period() -> Period {
    Period::parse("2026-11").unwrap()
}

fn pay(store: &mut Store, user: &str, cents: u64) -> Vec<Transfer> {
    let (batch, _) =
        payment(&store.ledger().nav(), period(), user, cents, Bps::new(100).unwrap(), user.as_bytes()).unwrap();
    store.append(batch.clone(), 1).unwrap();
    batch
}

#[test]
fn appended_blocks_are_read_back_and_checked_on_reopen() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        for user in ["alice", "bob", "carol"] {
            pay(&mut store, user, 1000);
        }
        let (balances, head) = (store.ledger().balances(), store.ledger().head());
        drop(store);
        let mut reopened = Store::open(&s.location).unwrap();
        assert_eq!(reopened.ledger().balances(), balances, "{}", s.name);
        assert_eq!(reopened.ledger().head(), head, "{}", s.name);
        assert_eq!(reopened.blocks().unwrap().len(), 3, "{}", s.name);
        assert_eq!(reopened.block(2).unwrap().unwrap().header.height, 2, "{}", s.name);
        assert!(reopened.block(9).unwrap().is_none(), "{}", s.name);
    }
}

#[test]
fn a_retry_after_reopen_is_a_no_op() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let batch = pay(&mut store, "alice", 1000);
        drop(store);
        let mut store = Store::open(&s.location).unwrap();
        assert!(store.append(batch, 2).unwrap().is_none(), "{}", s.name);
        assert_eq!(store.ledger().height(), 1, "{}", s.name);
    }
}

#[test]
fn a_refused_batch_leaves_the_store_unchanged() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        pay(&mut store, "alice", 1000);
        let overdraw = Transfer {
            id: TransferId(1),
            kind: TransferKind::Allocate,
            debit: AccountName::escrow(period(), "alice").unwrap(),
            credit: AccountName::parse("general-fund").unwrap(),
            amount: u64::MAX / 2,
        };
        assert!(matches!(store.append(vec![overdraw], 2), Err(StoreError::Rejected(_))), "{}", s.name);
        drop(store);
        assert_eq!(Store::open(&s.location).unwrap().ledger().height(), 1, "{}", s.name);
    }
}

#[test]
fn a_block_changed_on_disk_is_refused_on_read_back() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        pay(&mut store, "alice", 1000);
        pay(&mut store, "bob", 1000);
        drop(store);
        // Flip the last byte of block 2's body (a byte of an account name).
        let sql = "UPDATE ledger_blocks SET body = $1 WHERE height = 2";
        let body = {
            let mut store = Store::open(&s.location).unwrap();
            let mut body = store.block(2).unwrap().unwrap().encode();
            *body.last_mut().unwrap() ^= 0x01;
            body
        };
        match &s.location.database {
            None => {
                let connection = rusqlite::Connection::open(store::sqlite_path(&s.location.data_dir)).unwrap();
                connection.execute(sql, [&body]).unwrap();
            }
            Some(url) => {
                let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
                client.execute(sql, &[&body]).unwrap();
            }
        }
        let error = Store::open(&s.location).err().expect("tampering must be caught");
        let message = error.to_string();
        assert!(message.contains("block 2") || message.contains("stored block 2"), "{}: {message}", s.name);
    }
}

#[test]
fn the_node_key_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let location = store::Location::new(Some(dir.path().to_owned()), None);
    Store::open(&location).unwrap();
    let key = dir.path().join("node.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = Store::open(&location).err().unwrap().to_string();
    assert!(error.contains("chmod 600"), "{error}");
}
