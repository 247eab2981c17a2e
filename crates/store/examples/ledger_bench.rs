//! Ledger benchmark: durable appends in batches on SQLite and PostgreSQL,
//! offline verification, and a plain PostgreSQL baseline (one row per
//! transfer in a hand-rolled double-entry table, same batches), in one run.
//!
//! ```text
//! cargo run --release -p store --example ledger_bench -- [--transfers N] [--batch N] [--database URL]
//! ```
//! See bench/ledger.sh and bench/RESULTS.md.

use std::time::Instant;

use commons_core::{Bps, Period};
use ledger::{Transfer, payment, read_export, write_block_line, write_header_line};
use store::{Location, Store};

fn main() {
    let mut transfers = 2_000_000usize;
    let mut batch_size = 10_000usize;
    let mut database = test_support::DEFAULT_URL.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().expect("a value after each flag");
        match arg.as_str() {
            "--transfers" => transfers = value.parse().expect("a number"),
            "--batch" => batch_size = value.parse().expect("a number"),
            "--database" => database = value,
            _ => panic!("unknown argument {arg}"),
        }
    }
    let n_batches = transfers.div_ceil(batch_size);
    println!("{n_batches} batches of {batch_size} transfers (payments and their mints), each committed durably");

    let dir = tempfile::tempdir().unwrap();
    let sqlite = append_all(&Location::new(Some(dir.path().join("sqlite")), None), n_batches, batch_size);
    let schema = test_support::fresh_schema(&database);
    let postgres = append_all(&Location::new(Some(dir.path().join("pg")), Some(schema.clone())), n_batches, batch_size);
    test_support::drop_schema(&schema);
    let baseline = plain_postgres(&database, n_batches, batch_size);

    println!("{:<44} {:>12} {:>14}", "", "seconds", "transfers/s");
    let row = |name: &str, seconds: f64| {
        println!("{name:<44} {seconds:>12.2} {:>14.0}", (n_batches * batch_size) as f64 / seconds)
    };
    row("append, commons ledger on SQLite (embedded)", sqlite.append);
    row("append, commons ledger on PostgreSQL", postgres.append);
    row("append, plain PostgreSQL, INSERT per row (*)", baseline.row_by_row);
    row("append, plain PostgreSQL, one INSERT per batch", baseline.bulk);
    row("read back and re-verify on open, SQLite", sqlite.reopen);
    row("read back and re-verify on open, PostgreSQL", postgres.reopen);
    row("verify an export offline", sqlite.verify);
    println!("(*) timed on the first 5 batches and scaled: it is that slow");
    println!(
        "ratios: SQLite ledger / plain PostgreSQL row-by-row = {:.1}x, / plain PostgreSQL bulk = {:.1}x; PostgreSQL ledger / bulk = {:.1}x",
        baseline.row_by_row / sqlite.append,
        baseline.bulk / sqlite.append,
        baseline.bulk / postgres.append,
    );
}

struct Timings {
    append: f64,
    reopen: f64,
    verify: f64,
}

/// Valid batches: payments (world → reserve) and their mints (issuance →
/// escrow) at the NAV that the batch itself moves.
fn batches(store: &Store, n: usize, size: usize) -> impl Iterator<Item = Vec<Transfer>> + '_ {
    let period = Period::parse("2026-11").unwrap();
    let mut nav = store.ledger().nav();
    (0..n).map(move |b| {
        let mut batch = Vec::with_capacity(size);
        for i in 0..size / 2 {
            let user = format!("user{b}-{i}");
            let (legs, minted) = payment(&nav, period, &user, 1000, Bps::new(100).unwrap(), user.as_bytes()).unwrap();
            nav = nav.after_payment(1000, minted).unwrap();
            batch.extend(legs);
        }
        batch
    })
}

fn append_all(location: &Location, n: usize, size: usize) -> Timings {
    let mut store = Store::open(location).unwrap();
    let prepared: Vec<_> = batches(&store, n, size).collect();
    let start = Instant::now();
    for (i, batch) in prepared.into_iter().enumerate() {
        store.append(batch, i as u64).unwrap();
    }
    let append = start.elapsed().as_secs_f64();
    drop(store);

    let start = Instant::now();
    let mut store = Store::open(location).unwrap();
    let reopen = start.elapsed().as_secs_f64();

    let mut export = Vec::new();
    write_header_line(store.ledger(), &mut export).unwrap();
    for block in store.blocks().unwrap() {
        write_block_line(&block, &mut export).unwrap();
    }
    let start = Instant::now();
    let verified = read_export(export.as_slice(), None).unwrap();
    let verify = start.elapsed().as_secs_f64();
    assert_eq!(verified.head(), store.ledger().head());
    Timings { append, reopen, verify }
}

struct Baseline {
    row_by_row: f64,
    bulk: f64,
}

/// The usual hand-rolled double-entry table: one row per transfer, a
/// unique id, the two accounts and the amount, committed per batch.
fn plain_postgres(url: &str, n: usize, size: usize) -> Baseline {
    let schema_url = test_support::fresh_schema(url);
    let mut client = postgres::Client::connect(&schema_url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE transfers (id BYTEA PRIMARY KEY, kind SMALLINT NOT NULL, debit TEXT NOT NULL,
                                     credit TEXT NOT NULL, amount BIGINT NOT NULL CHECK (amount > 0))",
        )
        .unwrap();
    let location = Location::new(Some(tempfile::tempdir().unwrap().keep()), None);
    let prepared: Vec<Vec<Transfer>> = batches(&Store::open(&location).unwrap(), n, size).collect();

    let insert =
        client.prepare("INSERT INTO transfers (id, kind, debit, credit, amount) VALUES ($1, $2, $3, $4, $5)").unwrap();
    // Row by row is slow: time the first batches only, and scale.
    let sample = prepared.len().min(5);
    let start = Instant::now();
    for batch in &prepared[..sample] {
        let mut transaction = client.transaction().unwrap();
        for t in batch {
            let id = t.id.0.to_le_bytes();
            let kind = i16::from(t.kind.code());
            transaction
                .execute(&insert, &[&&id[..], &kind, &t.debit.as_str(), &t.credit.as_str(), &(t.amount as i64)])
                .unwrap();
        }
        transaction.commit().unwrap();
    }
    let row_by_row = start.elapsed().as_secs_f64() * n as f64 / sample as f64;

    client.batch_execute("TRUNCATE transfers").unwrap();
    let bulk_insert = client
        .prepare(
            "INSERT INTO transfers (id, kind, debit, credit, amount)
             SELECT * FROM UNNEST($1::BYTEA[], $2::SMALLINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[])",
        )
        .unwrap();
    let start = Instant::now();
    for batch in &prepared {
        let ids: Vec<Vec<u8>> = batch.iter().map(|t| t.id.0.to_le_bytes().to_vec()).collect();
        let kinds: Vec<i16> = batch.iter().map(|t| i16::from(t.kind.code())).collect();
        let debits: Vec<&str> = batch.iter().map(|t| t.debit.as_str()).collect();
        let credits: Vec<&str> = batch.iter().map(|t| t.credit.as_str()).collect();
        let amounts: Vec<i64> = batch.iter().map(|t| t.amount as i64).collect();
        client.execute(&bulk_insert, &[&ids, &kinds, &debits, &credits, &amounts]).unwrap();
    }
    let bulk = start.elapsed().as_secs_f64();
    drop(client);
    test_support::drop_schema(&schema_url);
    Baseline { row_by_row, bulk }
}
