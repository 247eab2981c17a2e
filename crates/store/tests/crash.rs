//! Crash safety: a process appending batches is killed (SIGKILL) at random
//! moments. After each restart the store opens, which re-checks every
//! block (a prefix of whole blocks that verifies), and every batch the
//! process had acknowledged is in it.
//!
//! The appender is this test binary re-run with COMMONS_CRASH_CHILD set.
//! COMMONS_CRASH_SEED reproduces a run's kill times.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use commons_core::{Bps, Period, SplitMix64};
use ledger::{Transfer, TransferId, payment};
use store::{Location, Store};

const PAYMENTS_PER_BATCH: u64 = 25;

fn batch_for(store: &Store, n: u64) -> Vec<Transfer> {
    let period = Period::parse("2026-11").unwrap();
    let mut nav = store.ledger().nav();
    let mut batch = Vec::new();
    for i in 0..PAYMENTS_PER_BATCH {
        let user = format!("user{n}-{i}");
        let (legs, minted) = payment(&nav, period, &user, 1000 + i, Bps::new(100).unwrap(), user.as_bytes()).unwrap();
        nav = nav.after_payment(1000 + i, minted).unwrap();
        batch.extend(legs);
    }
    batch
}

fn first_id(n: u64) -> TransferId {
    let user = format!("user{n}-0");
    TransferId::derive(&[b"payment", user.as_bytes()])
}

/// The child: append batches forever, printing each acknowledged one.
fn child(location: Location) {
    let mut store = Store::open(&location).unwrap();
    let mut out = std::io::stdout().lock();
    let mut n = store.ledger().height();
    loop {
        let batch = batch_for(&store, n);
        store.append(batch, n).unwrap();
        writeln!(out, "acked {n}").unwrap();
        out.flush().unwrap();
        n += 1;
    }
}

#[test]
fn killed_appender_loses_no_acknowledged_batch() {
    if let Ok(spec) = std::env::var("COMMONS_CRASH_CHILD") {
        let (dir, database) = spec.split_once('|').unwrap();
        let database = (!database.is_empty()).then(|| database.to_owned());
        return child(Location::new(Some(dir.into()), database));
    }
    let seed: u64 = std::env::var("COMMONS_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("COMMONS_CRASH_SEED={seed}");
    let mut rng = SplitMix64::new(seed);
    for s in common::stores() {
        let spec = format!("{}|{}", s.location.data_dir.display(), s.location.database.clone().unwrap_or_default());
        let mut acknowledged = Vec::new();
        for round in 0..6 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "killed_appender_loses_no_acknowledged_batch", "--nocapture", "--test-threads=1"])
                .env("COMMONS_CRASH_CHILD", &spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .filter_map(|line| line.strip_prefix("acked ").and_then(|n| n.parse::<u64>().ok()))
                    .collect::<Vec<_>>()
            });
            std::thread::sleep(Duration::from_millis(150 + rng.below(400)));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let acked = reader.join().unwrap();
            acknowledged.extend(acked.iter().copied());

            let store = Store::open(&s.location).unwrap_or_else(|e| panic!("{} round {round}: {e}", s.name));
            let ledger = store.ledger();
            for &n in &acknowledged {
                assert!(ledger.contains(first_id(n)), "{} round {round}: acknowledged batch {n} is missing", s.name);
            }
            assert_eq!(ledger.n_transfers(), ledger.height() * PAYMENTS_PER_BATCH * 2, "{}: partial block", s.name);
            eprintln!(
                "{} round {round}: {} batches acknowledged in all, {} blocks stored",
                s.name,
                acknowledged.len(),
                ledger.height()
            );
        }
        assert!(acknowledged.len() > 6, "{}: the appender made too little progress to test anything", s.name);
    }
}
