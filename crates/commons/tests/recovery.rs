//! `commons settle --ledger` killed at every block boundary and run again,
//! on SQLite and on PostgreSQL: each rerun finishes the period exactly as
//! one uninterrupted run does. It prints the balances of `settle --json`,
//! the ledger holds them with every escrow and pool of the period empty and
//! the period settled, and its export verifies, with as many blocks and
//! transfers as the uninterrupted run's.
//!
//! How a crash is made. The run is started with the hidden
//! `--test-pause-after-blocks K`: right after its K-th block is appended
//! (`Store::append` has returned, so that block's transaction is committed
//! durably) it says so on stderr and waits, and the test SIGKILLs it there.
//! A block is appended in one transaction, so a crash anywhere between the
//! K-th commit and the next one, including in the middle of appending block
//! K + 1, leaves exactly the first K blocks (`store/tests/crash.rs` kills
//! appenders at random moments to check that). Killing the real process at
//! that point, rather than deleting rows from a finished run, is faithful
//! in everything else too: nothing after the K-th append runs, and the
//! database recovers on the next open from a connection that was cut.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use test_support::{Place, places};

fn fresh(name: &str) -> Place {
    places().into_iter().find(|p| p.name == name).unwrap()
}

fn command(place: Option<&Place>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_commons"));
    command.env_remove("COMMONS_DATA").env_remove("COMMONS_DATABASE").env("COMMONS_LOG", "warn");
    if let Some(place) = place {
        command.arg("--data").arg(place.dir.path());
        if let Some(url) = &place.database {
            command.args(["--database", url]);
        }
    }
    command.args(args);
    command
}

fn commons(place: Option<&Place>, args: &[&str]) -> Output {
    command(place, args).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "exit {:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// A period to record, and how: the scenario file and the extra arguments.
struct Case {
    name: &'static str,
    scenario: String,
    args: Vec<&'static str>,
}

/// The worked example (three blocks: payments, level 1, levels 2 to 4),
/// and a period of seven subscribers recorded four transfers to a block:
/// four blocks of payments, four of level 1, one of levels 2 to 4, with a
/// dependency cycle, called services and a subscriber who used nothing.
fn cases(dir: &std::path::Path) -> Vec<Case> {
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/golden.toml").to_owned();
    let several = dir.join("several.toml");
    std::fs::write(&several, SEVERAL_BLOCKS).unwrap();
    vec![
        Case { name: "golden", scenario: golden, args: vec![] },
        Case {
            name: "several blocks",
            scenario: several.to_str().unwrap().to_owned(),
            args: vec!["--test-batch-transfers", "4"],
        },
    ]
}

const SEVERAL_BLOCKS: &str = r#"
[params]
period = "2026-11"
reserve_contribution_bps = 0   # the ledger mints exactly the scenario's escrow

[[project]]
id = "wiki"
deps = [{ project = "markdown" }, { project = "http", weight = 2 }]
[[project]]
id = "markdown"
deps = [{ project = "wiki" }]
[[project]]
id = "chat"
deps = [{ project = "http" }]
[[project]]
id = "http"
[[project]]
id = "search"

[[site]]
id = "wiki"
operator = "olga"
project = "wiki"
providers = [{ provider = "pat" }, { provider = "pia", resource_weight = 2 }]
[[site]]
id = "chat"
operator = "otto"
project = "chat"
provider_share_bps = 4000
providers = [{ provider = "pia" }]
[[site]]
id = "search"
operator = "sam"
project = "search"
providers = [{ provider = "pat" }]

[[subscription]]
user = "alice"
paid_cents = 1000
[[subscription]]
user = "bob"
paid_cents = 2500
[[subscription]]
user = "carol"
paid_cents = 700
[[subscription]]
user = "dave"
paid_cents = 1200
[[subscription]]
user = "erin"
paid_cents = 3
[[subscription]]
user = "frank"
paid_cents = 900
[[subscription]]
user = "grace"
paid_cents = 1500

[[usage]]
user = "alice"
site = "wiki"
active_minutes = 30
[[usage]]
user = "alice"
site = "chat"
active_minutes = 10
service_ms = 300
calls = [{ service = "search", ms = 100 }]
[[usage]]
user = "bob"
site = "wiki"
active_minutes = 5
[[usage]]
user = "carol"
site = "chat"
active_minutes = 20
[[usage]]
user = "carol"
site = "search"
active_minutes = 3
[[usage]]
user = "erin"
site = "wiki"
active_minutes = 1
[[usage]]
user = "frank"
site = "search"
active_minutes = 7
[[usage]]
user = "frank"
site = "chat"
active_minutes = 2
service_ms = 50
calls = [{ service = "search", ms = 150 }]
[[usage]]
user = "grace"
site = "wiki"
active_minutes = 12
[[usage]]
user = "grace"
site = "chat"
active_minutes = 12
[[usage]]
user = "grace"
site = "search"
active_minutes = 12
"#;

/// What a finished period leaves on the ledger: the holders' balances, the
/// reserve and supply, the export's count of blocks and transfers.
struct Finished {
    accounts: serde_json::Value,
    custody: (serde_json::Value, serde_json::Value),
    summary: String,
    /// What each block does: `payments`, `level 1` or `levels 2-4`.
    blocks: Vec<&'static str>,
}

fn settle_args(case: &Case, json: bool) -> Vec<&str> {
    let mut args = vec!["settle", "--scenario", &case.scenario, "--ledger"];
    args.extend(case.args.iter().copied());
    if json {
        args.push("--json");
    }
    args
}

/// The state of the ledger at `place`, checked to be a finished period:
/// no escrow or pool holds anything, the export verifies and says the
/// period is settled.
fn finished_state(place: &Place) -> Finished {
    let balances = json(&ok(commons(Some(place), &["ledger", "balances", "--json"])));
    let accounts = balances["accounts"].clone();
    for name in accounts.as_object().unwrap().keys() {
        assert!(!name.starts_with("escrow:") && !name.starts_with("pool:"), "{}: {name} is not empty", place.name);
    }
    let custody = (balances["custody"]["reserve_cents"].clone(), balances["custody"]["supply_micros"].clone());
    let export = place.dir.path().join("ledger.jsonl");
    ok(commons(Some(place), &["ledger", "export", "--out", export.to_str().unwrap()]));
    let verified = ok(commons(None, &["ledger", "verify", export.to_str().unwrap()]));
    assert!(verified.contains("periods settled once: 2026-11"), "{}: {verified}", place.name);
    let summary = verified.split("; head").next().unwrap().rsplit(": ").next().unwrap().to_owned();
    let blocks = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            if line.contains("\"kind\":\"distribute\"") {
                "levels 2-4"
            } else if line.contains("\"kind\":\"allocate\"") {
                "level 1"
            } else {
                "payments"
            }
        })
        .collect();
    Finished { accounts, custody, summary, blocks }
}

/// What recording `case` in one uninterrupted run leaves.
fn uninterrupted(case: &Case, place: &str) -> Finished {
    let place = fresh(place);
    ok(commons(Some(&place), &settle_args(case, false)));
    finished_state(&place)
}

/// Runs `args` until it says it appended its `k`-th block, then SIGKILLs
/// it; `None` if it ended on its own first, with its output.
fn kill_after_block(place: &Place, args: &[&str], k: usize) -> Option<Output> {
    let pause = k.to_string();
    let mut child = command(Some(place), &[args, &["--test-pause-after-blocks", &pause]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("paused after block") {
            child.kill().unwrap(); // SIGKILL
            let status = child.wait().unwrap();
            assert!(!status.success(), "{}: killed, not exited", place.name);
            return None;
        }
        said.push_str(&line);
        line.clear();
    }
    let mut output = child.wait_with_output().unwrap();
    output.stderr = said.into_bytes();
    Some(output)
}

fn height(place: &Place) -> usize {
    let nav = ok(commons(Some(place), &["ledger", "nav"]));
    nav.strip_prefix("height ").unwrap().split(':').next().unwrap().parse().unwrap()
}

/// After a rerun: the ledger is the uninterrupted run's, and a period is
/// settled once.
fn check_finished(place: &Place, case: &Case, expected: &Finished, at: &str) {
    let found = finished_state(place);
    assert_eq!(found.accounts, expected.accounts, "{} {}, {at}: balances", place.name, case.name);
    assert_eq!(found.custody, expected.custody, "{} {}, {at}: reserve and supply", place.name, case.name);
    assert_eq!(found.summary, expected.summary, "{} {}, {at}: blocks and transfers", place.name, case.name);
    assert_eq!(found.blocks, expected.blocks, "{} {}, {at}: what each block does", place.name, case.name);
    let again = commons(Some(place), &settle_args(case, false));
    assert_eq!(again.status.code(), Some(2), "{} {}, {at}: settled once", place.name, case.name);
    assert!(String::from_utf8_lossy(&again.stderr).contains("is settled already"));
}

#[test]
fn a_run_killed_after_any_block_finishes_the_period_exactly_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases(dir.path()) {
        let settled = json(&ok(commons(None, &["settle", "--scenario", &case.scenario, "--json"])));
        for place_name in places().iter().map(|p| p.name) {
            let expected = uninterrupted(&case, place_name);
            assert_eq!(
                expected.accounts, settled["accounts"],
                "{place_name} {}: the ledger holds settle --json",
                case.name
            );
            if case.name == "several blocks" {
                let count = |what| expected.blocks.iter().filter(|&&b| b == what).count();
                assert_eq!(
                    (count("payments"), count("level 1"), count("levels 2-4")),
                    (4, 4, 1),
                    "{:?}",
                    expected.blocks
                );
            }
            for k in 1..=expected.blocks.len() {
                let place = fresh(place_name);
                let at = format!("killed after block {k} ({})", expected.blocks[k - 1]);
                let ended = kill_after_block(&place, &settle_args(&case, true), k);
                assert!(ended.is_none(), "{place_name} {}, {at}: the run ended first: {ended:?}", case.name);
                assert_eq!(height(&place), k, "{place_name} {}, {at}: the blocks left", case.name);
                if k < expected.blocks.len() {
                    let rerun = json(&ok(commons(Some(&place), &settle_args(&case, true))));
                    assert_eq!(
                        rerun["accounts"], settled["accounts"],
                        "{place_name} {}, {at}: the rerun's output",
                        case.name
                    );
                }
                check_finished(&place, &case, &expected, &at);
            }
        }
    }
}

#[test]
fn a_run_killed_after_every_block_finishes_after_as_many_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let case = cases(dir.path()).into_iter().find(|c| c.name == "several blocks").unwrap();
    for place_name in places().iter().map(|p| p.name) {
        let expected = uninterrupted(&case, place_name);
        let place = fresh(place_name);
        let mut kills = 0;
        // Each run appends one block and is killed; the run after the last
        // block finds the period settled.
        let ended = loop {
            match kill_after_block(&place, &settle_args(&case, false), 1) {
                None => kills += 1,
                Some(output) => break output,
            }
            assert!(kills <= expected.blocks.len(), "{place_name}: more runs than blocks");
        };
        assert_eq!(kills, expected.blocks.len(), "{place_name}");
        assert_eq!(ended.status.code(), Some(2), "{place_name}: {}", String::from_utf8_lossy(&ended.stderr));
        check_finished(&place, &case, &expected, "killed after every block");
    }
}
