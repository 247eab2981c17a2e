//! `commons demo`, as CI runs it: no terminal, so it runs start to end and
//! exits 0 once the ledger is verified.

mod common;

use common::commons;

#[test]
fn the_demo_runs_end_to_end_and_leaves_a_verifiable_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = commons().args(["demo", "--requests", "5", "--dir"]).arg(&data).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "exit {:?}\n{stderr}\n{stdout}", out.status);
    for step in 1..=12 {
        assert!(stderr.contains(&format!("[{step}/12]")), "step {step} missing:\n{stderr}");
    }
    assert!(stderr.contains(", 0 failed; versions seen: 1.0.0, 1.1.0"), "{stderr}");
    assert!(stderr.contains("402"), "free users were refused the premium route:\n{stderr}");
    assert!(stderr.contains("200 with the handed-off session"), "{stderr}");
    assert!(stdout.contains("alice paid 1000 cents → 9,900,000 µCC in escrow"), "{stdout}");
    assert!(stdout.contains("bob paid 500 cents"), "{stdout}");
    // Each fee followed through every level, adding up to that fee.
    for line in stdout.lines().filter(|l| l.contains("where it ends, to the µCC")) {
        let sum: u64 = line
            .split(": ")
            .nth(1)
            .unwrap()
            .split(", ")
            .map(|part| part.rsplit(' ').next().unwrap().replace(',', "").parse::<u64>().unwrap())
            .sum();
        assert!(sum == 9_900_000 || sum == 4_900_500, "{line}");
    }
    assert_eq!(stdout.matches("where it ends").count(), 2);

    // The ledger it leaves verifies with the plain CLI, and its balances add
    // up to what was minted.
    let verify = commons().args(["ledger", "verify"]).arg(data.join("ledger.jsonl")).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let balances = commons().arg("--data").arg(&data).args(["ledger", "balances", "--json"]).output().unwrap();
    let balances: serde_json::Value = serde_json::from_slice(&balances.stdout).unwrap();
    let minted = balances["custody"]["supply_micros"].as_u64().unwrap();
    assert_eq!(balances["total"].as_u64().unwrap(), minted);
    let total_line = stdout.lines().find(|l| l.trim_start().starts_with("total")).unwrap();
    let printed: u64 = total_line.split_whitespace().nth(1).unwrap().replace(',', "").parse().unwrap();
    assert_eq!(printed, minted, "the earnings printed are what the ledger holds");
    // Providers were paid by metered resources, both of them.
    assert!(balances["accounts"]["provider:pat"].as_u64().unwrap() > 0);
    assert!(balances["accounts"]["provider:pia"].as_u64().unwrap() > 0);

    let history = commons().arg("--data").arg(&data).arg("history").output().unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    let actions: Vec<&str> = history.lines().map(|l| l.split_whitespace().nth(2).unwrap_or("")).collect();
    assert_eq!(actions, ["deploy", "deploy", "update"], "{history}");

    // A second run into the same directory is refused: the demo starts from
    // nothing.
    let again = commons().args(["demo", "--dir"]).arg(&data).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
}
