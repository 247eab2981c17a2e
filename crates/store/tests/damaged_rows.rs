//! A damaged row is an error that names its table and column, never a
//! default: a NULL `paid_cents` must not read as a free subscription, nor a
//! negative one as a fortune. On SQLite and PostgreSQL.
//!
//! Each case fills a store with one record of every kind, damages one
//! column behind the store's back (as a hand-edited database or another
//! program would), and reads it through the store.

mod common;

use commons_core::{Bps, Period};
use metering::wal::Checkpoint;
use metering::{Event, Usage};
use store::{
    DeploymentRecord, Location, NodeRecord, ProjectRecord, ResourceTotals, SessionRecord, SiteRecord, Store, StoreError,
};

fn period() -> Period {
    Period::parse("2026-11").unwrap()
}

/// What is written in place of a column's value.
#[derive(Clone, Copy)]
enum Damage {
    /// NULL, once the column's NOT NULL is gone.
    Null,
    /// Text, once the column takes text (SQLite always does).
    Text(&'static str),
    /// A number of the column's own type, out of the range the store uses.
    Number(i64),
}

use Damage::{Null, Number, Text};

/// How a case reads the damaged record back.
type Read = fn(&mut Store) -> Result<(), StoreError>;

#[test]
fn a_null_paid_cents_is_an_error_not_a_free_subscription() {
    check(
        ("subscriptions", "paid_cents", Null),
        |store| store.subscriptions(period()).map(drop),
        "the stored subscriptions.paid_cents is corrupt: expected an integer, found NULL",
    );
}

#[test]
fn a_paid_cents_holding_text_is_an_error() {
    check(
        ("subscriptions", "paid_cents", Text("lots")),
        |store| store.subscriptions(period()).map(drop),
        "the stored subscriptions.paid_cents is corrupt: expected an integer, found text",
    );
}

#[test]
fn a_negative_paid_cents_is_an_error_not_a_fortune() {
    check(
        ("subscriptions", "paid_cents", Number(-1)),
        |store| store.subscriptions(period()).map(drop),
        "the stored subscriptions.paid_cents is corrupt: expected a non-negative integer, found -1",
    );
}

#[test]
fn a_negative_block_height_stops_the_store_from_opening() {
    check(
        ("ledger_blocks", "height", Number(-1)),
        |_| Ok(()),
        "the stored ledger_blocks.height is corrupt: expected a non-negative integer, found -1",
    );
}

#[test]
fn a_share_too_large_for_basis_points_is_an_error_not_a_truncation() {
    check(
        ("deployments", "provider_share_bps", Number(4_294_967_297)),
        |store| store.deployments().map(drop),
        "the stored deployments.provider_share_bps is corrupt: expected an integer from 0 to 4294967295, found 4294967297",
    );
}

#[test]
fn a_null_node_capacity_is_an_error_not_an_empty_node() {
    check(
        ("nodes", "capacity_mb", Null),
        |store| store.nodes().map(drop),
        "the stored nodes.capacity_mb is corrupt: expected an integer, found NULL",
    );
}

#[test]
fn a_flag_that_is_neither_0_nor_1_is_an_error() {
    check(
        ("sites", "anonymous", Number(7)),
        |store| store.sites().map(drop),
        "the stored sites.anonymous is corrupt: expected 0 or 1, found 7",
    );
}

#[test]
fn a_null_operator_is_an_error_not_an_empty_name() {
    check(
        ("sites", "operator", Null),
        |store| store.sites().map(drop),
        "the stored sites.operator is corrupt: expected text, found NULL",
    );
}

#[test]
fn negative_request_counts_are_an_error() {
    check(
        ("usage_direct", "requests", Number(-5)),
        |store| store.usage(period()).map(drop),
        "the stored usage_direct.requests is corrupt: expected a non-negative integer, found -5",
    );
}

#[test]
fn a_history_time_holding_text_is_an_error() {
    check(
        ("history", "at_ms", Text("soon")),
        |store| store.history().map(drop),
        "the stored history.at_ms is corrupt: expected an integer, found text",
    );
}

#[test]
fn a_null_password_hash_is_an_error_not_an_empty_password() {
    check(
        ("accounts", "password_hash", Null),
        |store| store.accounts().map(drop),
        "the stored accounts.password_hash is corrupt: expected text, found NULL",
    );
}

#[test]
fn resource_usage_below_zero_is_an_error() {
    check(
        ("resource_usage", "memory_mib_s", Number(-1)),
        |store| store.resource_usage(period()).map(drop),
        "the stored resource_usage.memory_mib_s is corrupt: expected a non-negative integer, found -1",
    );
}

#[test]
fn a_negative_provider_weight_is_an_error() {
    check(
        ("site_providers", "weight", Number(-1)),
        |store| store.sites().map(drop),
        "the stored site_providers.weight is corrupt: expected a non-negative integer, found -1",
    );
}

#[test]
fn a_null_dependency_is_an_error_not_an_empty_name() {
    check(
        ("project_dependencies", "dependency", Null),
        |store| store.projects().map(drop),
        "the stored project_dependencies.dependency is corrupt: expected text, found NULL",
    );
}

#[test]
fn an_instance_that_is_not_an_address_is_an_error() {
    check(
        ("site_instances", "address", Text("nowhere")),
        |store| store.sites().map(drop),
        "the stored site_instances.address is corrupt: \"nowhere\" is not an address",
    );
}

#[test]
fn a_deployment_state_that_is_none_of_the_three_is_an_error() {
    check(
        ("deployments", "state", Text("half-running")),
        |store| store.deployments().map(drop),
        "the stored deployments.state is corrupt: no deployment state \"half-running\"",
    );
}

#[test]
fn a_negative_checkpoint_segment_is_an_error() {
    check(
        ("metering_checkpoint", "segment", Number(-1)),
        |store| store.metering_checkpoint().map(drop),
        "the stored metering_checkpoint.segment is corrupt: expected a non-negative integer, found -1",
    );
}

/// Fills a store, damages `column` of `table`, and expects opening the
/// store and `read`ing to fail with `expect`, on both databases.
fn check((table, column, damage): (&str, &str, Damage), read: Read, expect: &str) {
    let mut wrong = Vec::new();
    for s in common::stores() {
        fill(&mut Store::open(&s.location).unwrap());
        spoil(&s.location, table, column, damage);
        match Store::open(&s.location).and_then(|mut store| read(&mut store)) {
            Err(error @ StoreError::Corrupt { .. }) if error.to_string() == expect => {}
            other => wrong.push(format!("{}: a damaged {table}.{column} read as {other:?}", s.name)),
        }
    }
    assert!(wrong.is_empty(), "expected {expect:?}\n{}", wrong.join("\n"));
}

/// One record of every kind the store keeps.
fn fill(store: &mut Store) {
    let (batch, _) =
        ledger::payment(&store.ledger().nav(), period(), "alice", 1000, Bps::new(100).unwrap(), b"alice").unwrap();
    store.append(batch, 1).unwrap();
    store.subscribe(period(), "alice", 1000).unwrap();
    store.add_account("alice", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", 1).unwrap();
    store.add_token("alice", 0).unwrap();
    let session = SessionRecord {
        token_sha256: "aa".into(),
        user: "alice".into(),
        site: String::new(),
        created_ms: 0,
        expires_ms: 9,
    };
    store.put_session(&session, 1, 8).unwrap();
    store
        .put_site(&SiteRecord {
            id: "wiki".into(),
            instances: vec!["127.0.0.1:8001".parse().unwrap()],
            custom_hosts: vec!["wiki.example.org".into()],
            anonymous: true,
            free_requests_per_minute: Some(60),
            free_concurrent_requests: None,
            premium_prefixes: vec!["/pro".into()],
            operator: "olga".into(),
            project: "wiki".into(),
            provider_share_bps: 3000,
            developer_share_bps: 2500,
            providers: vec![("pat".into(), 3)],
            health_path: Some("/healthz".into()),
            pass_authorization: false,
            user_header: None,
        })
        .unwrap();
    store
        .put_project(&ProjectRecord { id: "wiki".into(), deps: vec![("http".into(), 2)], repository: String::new() })
        .unwrap();
    let node = NodeRecord {
        id: "pat-1".into(),
        provider: "pat".into(),
        location: "eu".into(),
        capacity_mb: 4096,
        remote: false,
    };
    store.put_node(&node).unwrap();
    store
        .request_deployment(&DeploymentRecord {
            site: "wiki".into(),
            app_dir: "/apps/wiki".into(),
            nodes: vec!["pat-1".into()],
            operator: "olga".into(),
            provider_share_bps: 3000,
            developer_share_bps: 2500,
            anonymous: true,
            hosts: vec!["wiki.example.org".into()],
            generation: 0,
            state: commons_core::DeploymentState::Pending,
            detail: String::new(),
        })
        .unwrap();
    store.record_history(10, "deploy", "wiki", "app wiki 1.0 on pat-1").unwrap();
    store.add_resource_usage(period(), "wiki", "pat", ResourceTotals { cpu_ms: 5, memory_mib_s: 100 }).unwrap();
    let mut usage = Usage::default();
    usage.record(&Event::Direct {
        period: period(),
        user: "alice".into(),
        site: "wiki".into(),
        minute: 1,
        service_ms: 3,
    });
    let mut checkpoint = Checkpoint::default();
    checkpoint.flushed.insert(0, 1);
    store.record_usage(&usage, &checkpoint).unwrap();
}

/// Writes `damage` into every row's `column` of `table`, loosening the
/// schema first where the damage needs it.
fn spoil(location: &Location, table: &str, column: &str, damage: Damage) {
    let value = match damage {
        Null => "NULL".to_owned(),
        Text(text) => format!("'{text}'"),
        Number(n) => n.to_string(),
    };
    let update = format!("UPDATE {table} SET {column} = {value}");
    match &location.database {
        None => {
            let path = store::sqlite_path(&location.data_dir);
            if let Null = damage {
                // SQLite cannot drop a NOT NULL: edit the stored schema.
                let connection = rusqlite::Connection::open(&path).unwrap();
                let sql: String = connection
                    .query_row("SELECT sql FROM sqlite_schema WHERE name = ?1", [table], |row| row.get(0))
                    .unwrap();
                let start = sql.find(&format!(" {column} ")).expect("the column's definition");
                let not_null = start + sql[start..].find(" NOT NULL").expect("a NOT NULL column");
                let loosened = format!("{}{}", &sql[..not_null], &sql[not_null + " NOT NULL".len()..]);
                connection
                    .execute_batch("PRAGMA writable_schema = ON")
                    .and_then(|()| {
                        connection.execute("UPDATE sqlite_schema SET sql = ?1 WHERE name = ?2", [&loosened, table])
                    })
                    .unwrap();
            }
            rusqlite::Connection::open(&path).unwrap().execute_batch(&update).unwrap();
        }
        Some(url) => {
            let loosen = match damage {
                Null => format!("ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL;"),
                Text(_) => format!("ALTER TABLE {table} ALTER COLUMN {column} TYPE TEXT USING {column}::text;"),
                Number(_) => String::new(),
            };
            let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
            client.batch_execute(&format!("{loosen} {update}")).unwrap();
        }
    }
}
