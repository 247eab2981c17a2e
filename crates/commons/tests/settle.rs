//! `commons settle` as a user runs it.

use std::process::{Command, Output};

use expect_test::expect;

fn commons(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_commons"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "exit {:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn golden_json_is_the_table_of_the_design() {
    let json = stdout(&commons(&["settle", "--scenario", "examples/golden.toml", "--json"]));
    expect![[r#"
        {
          "accounts": {
            "general-fund": 500000,
            "operator:olga": 3990000,
            "operator:otto": 855000,
            "operator:sam": 332500,
            "project:chat": 106875,
            "project:http": 356250,
            "project:markdown": 249375,
            "project:search": 83125,
            "project:wiki": 498750,
            "provider:pat": 2315625,
            "provider:pia": 712500
          },
          "total": 10000000
        }
    "#]]
    .assert_eq(&json);
    let csv = stdout(&commons(&["settle", "--scenario", "examples/golden-csv", "--json"]));
    assert_eq!(json, csv);
}

#[test]
fn the_table_shows_amounts_in_cc_and_the_conservation_check() {
    let table = stdout(&commons(&["settle", "--scenario", "examples/golden.toml"]));
    expect![[r#"
        period 2026-11: 1 subscribers, 2 usage rows, 3 sites, 5 projects

        account                                 µCC                    CC
        general-fund                        500,000              0.500000
        provider:pat                      2,315,625              2.315625
        provider:pia                        712,500              0.712500
        operator:olga                     3,990,000              3.990000
        operator:otto                       855,000              0.855000
        operator:sam                        332,500              0.332500
        project:chat                        106,875              0.106875
        project:http                        356,250              0.356250
        project:markdown                    249,375              0.249375
        project:search                       83,125              0.083125
        project:wiki                        498,750              0.498750
        total                            10,000,000             10.000000

        minted 10,000,000 µCC, allocated 10,000,000 µCC: conserved
    "#]]
    .assert_eq(&table);
}

#[test]
fn bad_scenarios_exit_2_with_the_error_and_print_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[project]]\nid = \"a\"\ndeps = [{ project = \"a\" }]\n").unwrap();
    for args in [
        vec!["settle", "--scenario", bad.to_str().unwrap(), "--json"],
        vec!["settle", "--scenario", "does/not/exist.toml"],
        vec!["settle"],
    ] {
        let output = commons(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
    let stderr = String::from_utf8(commons(&["settle", "--scenario", bad.to_str().unwrap()]).stderr).unwrap();
    assert!(
        stderr.contains("bad.toml:3: [[project]] #1, field `deps[0].project`: project \"a\" cannot depend on itself"),
        "{stderr}"
    );
}
