//! `commons settle --ledger` and `commons ledger …`, on the embedded store
//! and on PostgreSQL.

use std::process::{Command, Output};

use store::testing::{drop_schema, fresh_schema, postgres_url};

struct Place {
    name: &'static str,
    dir: tempfile::TempDir,
    database: Option<String>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(url) = &self.database {
            drop_schema(url);
        }
    }
}

fn places() -> Vec<Place> {
    let mut all = vec![Place { name: "sqlite", dir: tempfile::tempdir().unwrap(), database: None }];
    if let Some(url) = postgres_url() {
        all.push(Place { name: "postgres", dir: tempfile::tempdir().unwrap(), database: Some(fresh_schema(&url)) });
    }
    all
}

fn commons(place: Option<&Place>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_commons"));
    command.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    command.env_remove("COMMONS_DATA").env_remove("COMMONS_DATABASE");
    if let Some(place) = place {
        command.arg("--data").arg(place.dir.path());
        if let Some(url) = &place.database {
            command.args(["--database", url]);
        }
    }
    command.args(args).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "exit {:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn accounts(json: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(json).unwrap()["accounts"].clone()
}

#[test]
fn golden_settled_on_the_ledger_has_the_balances_of_settle_json() {
    let expected = accounts(&ok(commons(None, &["settle", "--scenario", "examples/golden.toml", "--json"])));
    for place in places() {
        let recorded =
            ok(commons(Some(&place), &["settle", "--scenario", "examples/golden.toml", "--ledger", "--json"]));
        assert_eq!(accounts(&recorded), expected, "{}", place.name);
        let balances = ok(commons(Some(&place), &["ledger", "balances", "--json"]));
        assert_eq!(accounts(&balances), expected, "{}", place.name);
        let custody = &serde_json::from_str::<serde_json::Value>(&balances).unwrap()["custody"];
        assert_eq!(custody["reserve_cents"], 1000, "{}", place.name);
        assert_eq!(custody["supply_micros"], 10_000_000, "{}", place.name);
    }
}

#[test]
fn a_period_is_settled_once() {
    for place in places() {
        ok(commons(Some(&place), &["settle", "--scenario", "examples/golden.toml", "--ledger"]));
        let again = commons(Some(&place), &["settle", "--scenario", "examples/golden-csv", "--ledger"]);
        assert_eq!(again.status.code(), Some(2), "{}", place.name);
        assert!(again.stdout.is_empty());
        let stderr = String::from_utf8(again.stderr).unwrap();
        assert!(stderr.contains("period 2026-11 is settled already"), "{}: {stderr}", place.name);
        let height = ok(commons(Some(&place), &["ledger", "nav"]));
        assert!(height.starts_with("height 3:"), "{}: {height}", place.name);
    }
}

#[test]
fn an_export_verifies_offline_and_a_changed_one_does_not() {
    for place in places() {
        ok(commons(Some(&place), &["settle", "--scenario", "examples/golden.toml", "--ledger"]));
        let export = place.dir.path().join("ledger.jsonl");
        ok(commons(Some(&place), &["ledger", "export", "--out", export.to_str().unwrap()]));
        // Verification needs no store: run it with none.
        let verified = ok(commons(None, &["ledger", "verify", export.to_str().unwrap()]));
        assert!(verified.contains("verifies: 3 blocks, 23 transfers"), "{}: {verified}", place.name);

        let text = std::fs::read_to_string(&export).unwrap();
        let tampered = text.replacen("\"amount\":712500}", "\"amount\":712501}", 1);
        assert_ne!(tampered, text);
        let bad = place.dir.path().join("bad.jsonl");
        std::fs::write(&bad, tampered).unwrap();
        let output = commons(None, &["ledger", "verify", bad.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains("does not verify at block 3") && stderr.contains("Merkle root"),
            "{}: {stderr}",
            place.name
        );

        let other_key = "11".repeat(32);
        let output = commons(None, &["ledger", "verify", export.to_str().unwrap(), "--key", &other_key]);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("at block 1") && stderr.contains("signed by"), "{}: {stderr}", place.name);
    }
}

#[test]
fn show_prints_a_block_and_refuses_one_that_does_not_exist() {
    let place = &places()[0];
    ok(commons(Some(place), &["settle", "--scenario", "examples/golden.toml", "--ledger"]));
    let block = ok(commons(Some(place), &["ledger", "show", "1"]));
    assert!(block.contains("payment    world -> reserve 1,000 cents"), "{block}");
    assert!(block.contains("mint       issuance -> escrow:2026-11:alice 10,000,000 µCC"), "{block}");
    let missing = commons(Some(place), &["ledger", "show", "9"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn a_holder_redeems_at_nav_once() {
    let place = &places()[0];
    ok(commons(Some(place), &["settle", "--scenario", "examples/golden.toml", "--ledger"]));
    let paid = ok(commons(Some(place), &["ledger", "redeem", "provider:pat", "1000000", "--id", "pat-1"]));
    assert!(paid.contains("redeemed 1,000,000 µCC from provider:pat for 100 cents"), "{paid}");
    let again = ok(commons(Some(place), &["ledger", "redeem", "provider:pat", "1000000", "--id", "pat-1"]));
    assert!(again.contains("recorded before"), "{again}");
    let balances = ok(commons(Some(place), &["ledger", "balances", "--json"]));
    let value: serde_json::Value = serde_json::from_str(&balances).unwrap();
    assert_eq!(value["accounts"]["provider:pat"], 1_315_625);
    assert_eq!(value["custody"]["reserve_cents"], 900);
    let too_much = commons(Some(place), &["ledger", "redeem", "provider:pia", "999999999", "--id", "x"]);
    assert_eq!(too_much.status.code(), Some(2));
}
