//! `commons settle --ledger` and `commons ledger …`, on the embedded store
//! and on PostgreSQL.

use std::process::{Command, Output};

use test_support::{Place, places};

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
        let output = commons(None, &["ledger", "verify", export.to_str().unwrap(), "--signer", &other_key]);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(&format!("not the trusted signer {other_key}")), "{}: {stderr}", place.name);
    }
}

/// A settled golden period's export in `place`, with what its publisher
/// publishes: `(export, head, signer)`.
fn published_export(place: &Place) -> (std::path::PathBuf, String, String) {
    ok(commons(Some(place), &["settle", "--scenario", "examples/golden.toml", "--ledger"]));
    let export = place.dir.path().join("ledger.jsonl");
    ok(commons(Some(place), &["ledger", "export", "--out", export.to_str().unwrap()]));
    let head: serde_json::Value =
        serde_json::from_str(&ok(commons(Some(place), &["ledger", "head", "--json"]))).unwrap();
    assert_eq!(head["height"], 3);
    (export, head["head"].as_str().unwrap().to_owned(), head["signer"].as_str().unwrap().to_owned())
}

#[test]
fn verify_without_a_signer_says_loudly_that_only_self_consistency_was_proven() {
    let place = &places()[0];
    let (export, _, signer) = published_export(place);
    let output = commons(None, &["ledger", "verify", export.to_str().unwrap()]);
    assert!(output.status.success(), "a self-consistent export exits 0");
    let (stdout, stderr) = (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap());
    assert!(
        stderr.contains("warning: no trusted signer given (--signer): only self-consistency was proven"),
        "{stderr}"
    );
    assert!(stderr.contains("warning: no published head given"), "{stderr}");
    assert!(stdout.contains(&format!("signer: {signer}, NOT TRUSTED: named by the export itself")), "{stdout}");
    assert!(stdout.contains("head: NOT CHECKED"), "{stdout}");
    assert!(
        stdout.contains("header: currency USD, initial price 100 cents per CC: bound by block 1's signature"),
        "{stdout}"
    );
}

#[test]
fn verify_against_the_published_signer_and_head_says_both_were_proven() {
    let place = &places()[0];
    let (export, head, signer) = published_export(place);
    let key_file = place.dir.path().join("signer.pub");
    std::fs::write(&key_file, format!("{signer}\n")).unwrap();
    for trust in [["--signer", signer.as_str()], ["--signer-file", key_file.to_str().unwrap()]] {
        let output =
            commons(None, &[&["ledger", "verify", export.to_str().unwrap(), "--head", &head][..], &trust].concat());
        let (stdout, stderr) = (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap());
        assert!(output.status.success(), "{stderr}");
        assert!(!stderr.contains("warning"), "{stderr}");
        assert!(stdout.contains("verifies: 3 blocks, 23 transfers"), "{stdout}");
        assert!(stdout.contains(&format!("signer: {signer}, trusted (given)")), "{stdout}");
        assert!(stdout.contains(&format!("head: {head}, the published head, at height 3")), "{stdout}");
    }
}

#[test]
fn a_truncated_export_fails_against_the_published_head() {
    let place = &places()[0];
    let (export, head, signer) = published_export(place);
    let text = std::fs::read_to_string(&export).unwrap();
    let truncated: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    let short = place.dir.path().join("short.jsonl");
    std::fs::write(&short, truncated).unwrap();
    let output = commons(None, &["ledger", "verify", short.to_str().unwrap(), "--signer", &signer, "--head", &head]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("the export ends at height 2, hash "), "{stderr}");
    assert!(stderr.contains(&format!("the published head {head} is not in it")), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_signed_export_whose_header_was_changed_does_not_verify() {
    let place = &places()[0];
    let (export, _, signer) = published_export(place);
    let text = std::fs::read_to_string(&export).unwrap();
    for (from, to) in [
        ("\"currency\":\"USD\"", "\"currency\":\"EUR\""),
        ("\"initial_cents_per_cc\":100", "\"initial_cents_per_cc\":1"),
    ] {
        let changed = place.dir.path().join("changed.jsonl");
        std::fs::write(&changed, text.replacen(from, to, 1)).unwrap();
        let output = commons(None, &["ledger", "verify", changed.to_str().unwrap(), "--signer", &signer]);
        assert_eq!(output.status.code(), Some(2), "{to}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("block 1 does not commit to this header"), "{to}: {stderr}");
    }
}

#[test]
fn a_bad_signer_or_head_argument_is_refused_by_name() {
    let place = &places()[0];
    let (export, _, _) = published_export(place);
    let file = export.to_str().unwrap();
    for (args, expected) in [
        (vec!["--signer", "abc"], "--signer \"abc\" is not a public key: expected 64 hex digits"),
        (vec!["--head", "xyz"], "--head \"xyz\" is not a block hash: expected 64 hex digits"),
        (vec!["--signer-file", "/nonexistent/key"], "--signer-file /nonexistent/key: "),
    ] {
        let output = commons(None, &[&["ledger", "verify", file][..], &args].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
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

/// The worked example's registry and usage as the platform would have
/// recorded them: by `commons project|site|subscribe`, and the gateway's
/// metering (here written straight to the store).
fn record_the_worked_example(place: &Place) {
    for project in [
        &["wiki", "--dep", "markdown", "--dep", "http"][..],
        &["chat", "--dep", "http"],
        &["search"],
        &["markdown"],
        &["http"],
    ] {
        ok(commons(Some(place), &[&["project", "add"][..], project].concat()));
    }
    for (site, operator, provider, share) in
        [("wiki", "olga", "pat", "3000"), ("chat", "otto", "pia", "4000"), ("search", "sam", "pat", "3000")]
    {
        ok(commons(
            Some(place),
            &[
                "site",
                "add",
                site,
                "--upstream",
                "127.0.0.1:9",
                "--operator",
                operator,
                "--project",
                site,
                "--provider",
                provider,
                "--provider-share-bps",
                share,
            ],
        ));
    }
    ok(commons(Some(place), &["subscribe", "alice", "--cents", "1000", "--period", "2026-11"]));

    let period = commons_core::Period::parse("2026-11").unwrap();
    let mut usage = metering::Usage::default();
    let direct = |site: &str, minute: u32, service_ms: u64| metering::Event::Direct {
        period,
        user: "alice".into(),
        site: site.into(),
        minute,
        service_ms,
    };
    // 30 distinct minutes on wiki (some twice: the count is of minutes),
    // 10 on chat with 300 ms of its own time, and chat calling search.
    for minute in 0..30 {
        usage.record(&direct("wiki", 29_000_000 + minute, 5));
        usage.record(&direct("wiki", 29_000_000 + minute, 5));
    }
    for minute in 0..10 {
        usage.record(&direct("chat", 29_000_100 + minute, 30));
    }
    usage.record(&metering::Event::Call {
        period,
        user: "alice".into(),
        site: "chat".into(),
        service: "search".into(),
        // In one of chat's minutes: the call's direct use is counted once.
        minute: 29_000_105,
        service_ms: 100,
    });
    // Bob used the sites too, on the free tier: metered, paying nobody.
    usage.record(&metering::Event::Direct {
        period,
        user: "bob".into(),
        site: "wiki".into(),
        minute: 1,
        service_ms: 9,
    });
    let location = store::Location::new(Some(place.dir.path().to_owned()), place.database.clone());
    let mut store = store::Store::open(&location).unwrap();
    store.record_usage(&usage, &metering::wal::Checkpoint::default()).unwrap();
}

#[test]
fn a_metered_period_settles_like_the_same_period_written_as_a_scenario() {
    // The worked example with the platform's default reserve contribution.
    let golden = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/golden.toml")).unwrap();
    let with_reserve = golden.replace("reserve_contribution_bps = 0", "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("golden-with-reserve.toml");
    std::fs::write(&file, with_reserve).unwrap();
    let expected = accounts(&ok(commons(None, &["settle", "--scenario", file.to_str().unwrap(), "--json"])));
    assert_eq!(expected["general-fund"], 495_000, "9,900,000 µCC minted from 990 of the 1,000 cents");

    for place in places() {
        record_the_worked_example(&place);
        let settled = ok(commons(Some(&place), &["settle", "--period", "2026-11", "--json"]));
        assert_eq!(accounts(&settled), expected, "{}", place.name);
        let recorded = ok(commons(Some(&place), &["settle", "--period", "2026-11", "--ledger", "--json"]));
        assert_eq!(accounts(&recorded), expected, "{}", place.name);
        let balances = accounts(&ok(commons(Some(&place), &["ledger", "balances", "--json"])));
        assert_eq!(balances, expected, "{}: what the ledger holds", place.name);
        let again = commons(Some(&place), &["settle", "--period", "2026-11", "--ledger"]);
        assert_eq!(again.status.code(), Some(2), "{}: settled once", place.name);
        let late = commons(Some(&place), &["subscribe", "carol", "--cents", "1000", "--period", "2026-11"]);
        assert_eq!(late.status.code(), Some(2), "{}: no subscriptions to a settled period", place.name);
        assert!(String::from_utf8_lossy(&late.stderr).contains("settled already"));
    }
}

#[test]
fn a_site_the_registry_could_not_settle_is_refused_when_it_is_added() {
    let place = &places()[0];
    ok(commons(Some(place), &["project", "add", "wiki"]));
    let site = ["site", "add", "wiki", "--upstream", "127.0.0.1:9", "--operator", "o", "--provider", "p"];
    let unknown = commons(Some(place), &[&site[..], &["--project", "nope"]].concat());
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("site \"wiki\", project: there is no project \"nope\""), "{stderr}");
    let below = commons(Some(place), &[&site[..], &["--project", "wiki", "--developer-share-bps", "1999"]].concat());
    assert_eq!(below.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&below.stderr);
    assert!(stderr.contains("developer share 1999 bps is below the floor of 2000 bps"), "{stderr}");
    let listed = commons(Some(place), &["site", "list"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("wiki"), "nothing was recorded");
    // A dependency not registered yet is registered, so the graph settles.
    ok(commons(Some(place), &["project", "add", "notes", "--dep", "markdown"]));
    ok(commons(Some(place), &[&site[..], &["--project", "notes"]].concat()));
    ok(commons(Some(place), &["settle", "--period", "2026-11"]));
    let twice = commons(Some(place), &["subscribe", "al", "--cents", "500", "--period", "2026-11"]);
    assert!(twice.status.success());
    let twice = commons(Some(place), &["subscribe", "al", "--cents", "500", "--period", "2026-11"]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("al has a subscription for 2026-11 already"));
}
