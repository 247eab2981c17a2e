//! The CSV form: the same meaning as TOML, and errors that name the file,
//! the line and the column.

use std::fs;
use std::path::Path;

use commons_core::Period;
use expect_test::{Expect, expect};
use settlement::{ProjectAccount, settle};

fn period() -> Period {
    Period::parse("2026-11").unwrap()
}

fn accounts(path: &Path) -> Result<String, String> {
    let scenario = scenario::load(path, period(), &|_| {}).map_err(|e| e.to_string())?;
    let settlement = settle(&scenario.params, &scenario.registry, &scenario.activity, &ProjectAccount);
    Ok(settlement.accounts.iter().map(|(a, m)| format!("{a} {}\n", m.get())).collect())
}

/// The golden CSV directory with `changes` applied (file name, contents),
/// loaded; errors shown relative to the directory.
fn check_error(changes: &[(&str, &str)], expect: Expect) {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(golden()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    for (name, contents) in changes {
        let path = dir.path().join(name);
        if contents.is_empty() { fs::remove_file(path).unwrap() } else { fs::write(path, contents).unwrap() }
    }
    match accounts(dir.path()) {
        Ok(out) => panic!("accepted:\n{out}"),
        Err(e) => expect.assert_eq(&e.replace(&format!("{}/", dir.path().display()), "")),
    }
}

fn golden() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/golden-csv")
}

#[test]
fn golden_directory_settles_like_golden_toml() {
    let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/golden.toml");
    assert_eq!(accounts(&golden()).unwrap(), accounts(&toml).unwrap());
}

#[test]
fn columns_may_come_in_any_order_and_optional_ones_may_be_left_out() {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(golden()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    fs::write(dir.path().join("projects.csv"), "id\nwiki\nchat\nsearch\nmarkdown\nhttp\n").unwrap();
    fs::write(dir.path().join("deps.csv"), "dep,project\nmarkdown,wiki\nhttp,wiki\nhttp,chat\n").unwrap();
    fs::write(
        dir.path().join("usage.csv"),
        "site,user,active_minutes,service_ms\r\nwiki,alice,30,\r\nchat,alice,10,300\r\n",
    )
    .unwrap();
    fs::write(dir.path().join("site_providers.csv"), "site,provider\n\"wiki\",pat\nchat,pia\nsearch,pat\n").unwrap();
    assert_eq!(accounts(dir.path()).unwrap(), accounts(&golden()).unwrap());
}

#[test]
fn a_missing_required_file_is_named() {
    check_error(
        &[("sites.csv", "")],
        expect!["sites.csv: this file is required in a CSV scenario directory, and is missing"],
    );
}

#[test]
fn unknown_and_missing_columns_are_refused() {
    check_error(
        &[("usage.csv", "user,site,minutes\nalice,wiki,3\n")],
        expect![[
            r#"usage.csv:1: unknown column "minutes"; the columns are user, site, active_minutes, service_ms (optional)"#
        ]],
    );
    check_error(
        &[("usage.csv", "user,site\nalice,wiki\n")],
        expect![[r#"usage.csv:1: required column "active_minutes" is missing"#]],
    );
}

#[test]
fn malformed_numbers_name_line_and_column() {
    check_error(
        &[("usage.csv", "user,site,active_minutes\nalice,wiki,30\nalice,chat,-4\n")],
        expect![[r#"usage.csv:3: field `active_minutes`: "-4" is not a whole number from 0 to 18446744073709551615"#]],
    );
    check_error(
        &[("subscriptions.csv", "user,paid_cents\nalice,18446744073709551616\n")],
        expect![[
            r#"subscriptions.csv:2: field `paid_cents`: "18446744073709551616" is not a whole number from 0 to 18446744073709551615"#
        ]],
    );
}

#[test]
fn rows_with_the_wrong_number_of_fields_are_refused() {
    check_error(
        &[("subscriptions.csv", "user,paid_cents\nalice,1000,7\n")],
        expect!["subscriptions.csv:2: 3 fields where the header has 2"],
    );
}

#[test]
fn references_are_checked_with_their_line() {
    check_error(
        &[("usage.csv", "user,site,active_minutes\nalice,wiki,30\nalice,nope,1\n")],
        expect![[r#"usage.csv:3: field `site`: there is no site "nope""#]],
    );
    check_error(
        &[("deps.csv", "project,dep\nwiki,markdown\nwiki,nope\n")],
        expect![[r#"deps.csv:3: field `dep`: there is no project "nope""#]],
    );
    check_error(
        &[("sites.csv", "id,operator,project\nwiki,olga,wiki\nchat,otto,chatt\nsearch,sam,search\n")],
        expect![[r#"sites.csv:3: field `project`: there is no project "chatt""#]],
    );
    check_error(
        &[("calls.csv", "user,site,service,ms\nalice,wiki,chat,5\nalice,search,chat,5\n")],
        expect![[r#"calls.csv:3: site "search" called a service for user "alice", who has no usage of that site"#]],
    );
}

#[test]
fn registry_rules_point_at_the_row() {
    check_error(
        &[("projects.csv", "id,pass_bps\nwiki,\nchat,9500\nsearch,\nmarkdown,\nhttp,\n")],
        expect![
            "projects.csv:3: field `pass_bps`: pass_bps 9500 is more than 9000: a project keeps at least 10 % of what it receives"
        ],
    );
    check_error(
        &[("deps.csv", "project,dep\nwiki,wiki\n")],
        expect![[r#"deps.csv:2: field `dep`: project "wiki" cannot depend on itself"#]],
    );
    check_error(
        &[
            ("params.toml", "developer_share_bps = 2500\n"),
            (
                "sites.csv",
                "id,operator,project,developer_share_bps\nwiki,olga,wiki,3000\nchat,otto,chat,2000\nsearch,sam,search,\n",
            ),
        ],
        expect!["sites.csv:3: field `developer_share_bps`: developer share 2000 bps is below the floor of 2500 bps"],
    );
    check_error(
        &[("params.toml", "pass_bps = 9100\n")],
        expect![
            "params.toml:1: [params], field `pass_bps`: pass_bps 9100 is more than 9000: a project keeps at least 10 % of what it receives"
        ],
    );
    check_error(
        &[("params.toml", "pas_bps = 100\n")],
        expect![
            "params.toml:1: field `pas_bps`: unknown field `pas_bps`, expected one of `period`, `general_fund_bps`, `provider_share_bps`, `developer_share_bps`, `pass_bps`, `cents_per_cc`, `reserve_contribution_bps`"
        ],
    );
}

#[test]
fn a_duplicate_far_into_a_big_file_is_found_by_the_parallel_parser() {
    // Over a megabyte of usage, parsed in chunks, with a duplicate at the end.
    let mut subscriptions = String::from("user,paid_cents\n");
    let mut usage = String::from("user,site,active_minutes\n");
    for u in 0..60_000 {
        subscriptions.push_str(&format!("user{u},1000\n"));
        usage.push_str(&format!("user{u},wiki,3\n"));
    }
    usage.push_str("user59999,chat,1\nuser17,wiki,9\n");
    check_error(
        &[("subscriptions.csv", &subscriptions), ("usage.csv", &usage), ("calls.csv", "")],
        expect![[r#"usage.csv:60003: usage of site "wiki" by user "user17" is given twice"#]],
    );
}
