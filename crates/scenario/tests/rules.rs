//! The settlement rules of docs/economics.md §4, one case each, written as
//! scenarios. `check` settles a scenario and shows every non-zero account;
//! `check_error` shows the error a bad scenario is refused with.
//!
//! Most cases set `cents_per_cc = 1000000` and no reserve contribution, so
//! that paying N cents puts exactly N µCC in escrow and the arithmetic can
//! be followed by hand.

use std::path::Path;

use commons_core::Period;
use expect_test::{Expect, expect};
use settlement::{ProjectAccount, settle};

const EXACT: &str = "[params]\ncents_per_cc = 1000000\nreserve_contribution_bps = 0\ngeneral_fund_bps = 0\n";

fn run(text: &str) -> Result<String, String> {
    let period = Period::parse("2026-11").unwrap();
    let scenario = scenario::from_toml(Path::new("scenario.toml"), text, period).map_err(|e| e.to_string())?;
    let settlement = settle(&scenario.params, &scenario.registry, &scenario.activity, &ProjectAccount);
    let mut out = String::new();
    for (account, amount) in &settlement.accounts {
        out.push_str(&format!("{account} {}\n", amount.get()));
    }
    out.push_str(&format!("total {}\n", settlement.minted.get()));
    Ok(out)
}

fn check(text: &str, expect: Expect) {
    match run(text) {
        Ok(out) => expect.assert_eq(&out),
        Err(e) => panic!("scenario refused: {e}"),
    }
}

fn check_error(text: &str, expect: Expect) {
    match run(text) {
        Ok(out) => panic!("scenario accepted, settling to\n{out}"),
        Err(e) => expect.assert_eq(&e),
    }
}

/// One site `s` of project `p`, operator `o`, provider `v`, and subscriber
/// `alice` who paid `cents` and used it for a minute.
fn one_site(params: &str, cents: u64) -> String {
    format!(
        "{params}
[[project]]
id = \"p\"
[[site]]
id = \"s\"
operator = \"o\"
project = \"p\"
providers = [{{ provider = \"v\" }}]
[[subscription]]
user = \"alice\"
paid_cents = {cents}
[[usage]]
user = \"alice\"
site = \"s\"
active_minutes = 1
"
    )
}

#[test]
fn worked_example_of_the_design_reproduces_to_the_micro() {
    check(
        include_str!("../../../examples/golden.toml"),
        expect![[r#"
            general-fund 500000
            provider:pat 2315625
            provider:pia 712500
            operator:olga 3990000
            operator:otto 855000
            operator:sam 332500
            project:chat 106875
            project:http 356250
            project:markdown 249375
            project:search 83125
            project:wiki 498750
            total 10000000
        "#]],
    );
}

#[test]
fn minting_takes_the_reserve_contribution_then_converts_at_the_price() {
    // Defaults: 100 bps reserve, 100 cents per CC. 1000 cents: 10 reserved,
    // 990 cents = 9.9 CC.
    check(
        &one_site("", 1000),
        expect![[r#"
            general-fund 495000
            provider:v 2821500
            operator:o 5266800
            project:p 1316700
            total 9900000
        "#]],
    );
    // 1 cent at 3 cents per CC: floor(1_000_000 / 3).
    check(
        &one_site("[params]\ncents_per_cc = 3\nreserve_contribution_bps = 0\ngeneral_fund_bps = 0\n", 1),
        expect![[r#"
            provider:v 99999
            operator:o 186668
            project:p 46666
            total 333333
        "#]],
    );
}

#[test]
fn percentage_cuts_round_down_and_leave_the_dust_with_the_rest() {
    // 999 µCC: fund floor(49.95) = 49; provider floor(950 * 0.3) = 285;
    // developer floor(665 * 0.2) = 133; the operator keeps 532.
    check(
        &one_site("[params]\ncents_per_cc = 1000000\nreserve_contribution_bps = 0\n", 999),
        expect![[r#"
            general-fund 49
            provider:v 285
            operator:o 532
            project:p 133
            total 999
        "#]],
    );
}

#[test]
fn subscriber_without_usage_pays_it_all_to_the_general_fund() {
    check(
        &format!("{EXACT}\n[[subscription]]\nuser = \"idle\"\npaid_cents = 777\n"),
        expect![[r#"
            general-fund 777
            total 777
        "#]],
    );
}

#[test]
fn usage_by_people_without_a_subscription_allocates_nothing() {
    let text = one_site(EXACT, 1000) + "[[usage]]\nuser = \"freeloader\"\nsite = \"s\"\nactive_minutes = 500\n";
    check(
        &text,
        expect![[r#"
            provider:v 300
            operator:o 560
            project:p 140
            total 1000
        "#]],
    );
}

const THREE_SITES: &str = "
[[project]]
id = \"p\"
[[site]]
id = \"a\"
operator = \"oa\"
project = \"p\"
provider_share_bps = 0
developer_share_bps = 0
providers = [{ provider = \"v\" }]
[[site]]
id = \"b\"
operator = \"ob\"
project = \"p\"
provider_share_bps = 0
developer_share_bps = 0
providers = [{ provider = \"v\" }]
[[site]]
id = \"c\"
operator = \"oc\"
project = \"p\"
provider_share_bps = 0
developer_share_bps = 0
providers = [{ provider = \"v\" }]
";

const NO_FLOOR: &str =
    "[params]\ncents_per_cc = 1000000\nreserve_contribution_bps = 0\ngeneral_fund_bps = 0\ndeveloper_share_bps = 0\n";

#[test]
fn escrow_is_split_by_active_minutes_with_largest_remainders() {
    // 10 µCC by 1:2:4 minutes = 1.43, 2.86, 5.71: floors 1, 2, 5 and the two
    // left over go to the largest fractions, b and c.
    let text = format!(
        "{NO_FLOOR}{THREE_SITES}
[[subscription]]
user = \"u\"
paid_cents = 10
[[usage]]
user = \"u\"
site = \"c\"
active_minutes = 4
[[usage]]
user = \"u\"
site = \"a\"
active_minutes = 1
[[usage]]
user = \"u\"
site = \"b\"
active_minutes = 2
"
    );
    check(
        &text,
        expect![[r#"
            operator:oa 1
            operator:ob 3
            operator:oc 6
            total 10
        "#]],
    );
}

#[test]
fn equal_remainders_go_to_the_lower_site_id() {
    // 2 µCC over three equal sites: one each to a and b, whatever the order.
    let usage = |site: &str| format!("[[usage]]\nuser = \"u\"\nsite = \"{site}\"\nactive_minutes = 5\n");
    let text = format!(
        "{NO_FLOOR}{THREE_SITES}[[subscription]]\nuser = \"u\"\npaid_cents = 2\n{}{}{}",
        usage("c"),
        usage("b"),
        usage("a")
    );
    check(
        &text,
        expect![[r#"
            operator:oa 1
            operator:ob 1
            total 2
        "#]],
    );
}

#[test]
fn zero_active_minutes_weigh_nothing_whatever_the_service_time() {
    // Zero active minutes is zero weight: such a site gets nothing.
    let text = format!(
        "{NO_FLOOR}{THREE_SITES}[[subscription]]\nuser = \"u\"\npaid_cents = 100\n\
         [[usage]]\nuser = \"u\"\nsite = \"a\"\nactive_minutes = 0\nservice_ms = 99999\n\
         [[usage]]\nuser = \"u\"\nsite = \"b\"\nactive_minutes = 1\n"
    );
    check(
        &text,
        expect![[r#"
            operator:ob 100
            total 100
        "#]],
    );
}

#[test]
fn a_site_shares_with_the_services_it_called_by_service_time() {
    // a's 100 µCC: a served 100 ms itself, called b for 300 ms and c for 100 ms.
    let text = format!(
        "{NO_FLOOR}{THREE_SITES}[[subscription]]\nuser = \"u\"\npaid_cents = 100\n\
         [[usage]]\nuser = \"u\"\nsite = \"a\"\nactive_minutes = 3\nservice_ms = 100\n\
         calls = [{{ service = \"c\", ms = 100 }}, {{ service = \"b\", ms = 300 }}]\n"
    );
    check(
        &text,
        expect![[r#"
            operator:oa 20
            operator:ob 60
            operator:oc 20
            total 100
        "#]],
    );
}

#[test]
fn a_site_without_measured_service_times_keeps_its_amount() {
    let text = format!(
        "{NO_FLOOR}{THREE_SITES}[[subscription]]\nuser = \"u\"\npaid_cents = 100\n\
         [[usage]]\nuser = \"u\"\nsite = \"a\"\nactive_minutes = 3\n\
         calls = [{{ service = \"b\", ms = 0 }}]\n"
    );
    check(
        &text,
        expect![[r#"
            operator:oa 100
            total 100
        "#]],
    );
}

#[test]
fn site_cuts_apply_to_period_totals_not_per_subscriber() {
    // Two subscribers give 1 µCC each to s; a 50 % provider cut of the total
    // 2 is 1, where cutting each 1 separately would give 0.
    let text = format!(
        "{EXACT}
[[project]]
id = \"p\"
[[site]]
id = \"s\"
operator = \"o\"
project = \"p\"
provider_share_bps = 5000
providers = [{{ provider = \"v\" }}]
[[subscription]]
user = \"u1\"
paid_cents = 1
[[subscription]]
user = \"u2\"
paid_cents = 1
[[usage]]
user = \"u1\"
site = \"s\"
active_minutes = 1
[[usage]]
user = \"u2\"
site = \"s\"
active_minutes = 1
"
    );
    check(
        &text,
        expect![[r#"
            provider:v 1
            operator:o 1
            total 2
        "#]],
    );
}

#[test]
fn the_provider_cut_is_split_by_resource_weight() {
    let text = format!(
        "{EXACT}
[[project]]
id = \"p\"
[[site]]
id = \"s\"
operator = \"o\"
project = \"p\"
provider_share_bps = 10000
providers = [{{ provider = \"small\", resource_weight = 1 }}, {{ provider = \"big\", resource_weight = 3 }}]
[[subscription]]
user = \"u\"
paid_cents = 1000
[[usage]]
user = \"u\"
site = \"s\"
active_minutes = 1
"
    );
    check(
        &text,
        expect![[r#"
            provider:big 750
            provider:small 250
            total 1000
        "#]],
    );
}

#[test]
fn an_operator_may_raise_the_developer_share_above_the_floor() {
    let text = one_site(EXACT, 1000).replace("project = \"p\"\n", "project = \"p\"\ndeveloper_share_bps = 5000\n");
    check(
        &text,
        expect![[r#"
            provider:v 300
            operator:o 350
            project:p 350
            total 1000
        "#]],
    );
}

fn graph(deps: &str, inflow_cents: u64) -> String {
    // Site s sends all it gets to project `top` (developer share 100 %).
    format!(
        "{EXACT}{deps}
[[site]]
id = \"s\"
operator = \"o\"
project = \"top\"
provider_share_bps = 0
developer_share_bps = 10000
providers = [{{ provider = \"v\" }}]
[[subscription]]
user = \"u\"
paid_cents = {inflow_cents}
[[usage]]
user = \"u\"
site = \"s\"
active_minutes = 1
"
    )
}

#[test]
fn a_project_passes_half_to_its_dependencies_by_weight_and_keeps_the_rest() {
    let deps = "
[[project]]
id = \"top\"
deps = [{ project = \"a\", weight = 3 }, { project = \"b\" }]
[[project]]
id = \"a\"
[[project]]
id = \"b\"
";
    check(
        &graph(deps, 1000),
        expect![[r#"
            project:a 375
            project:b 125
            project:top 500
            total 1000
        "#]],
    );
}

#[test]
fn flow_continues_transitively_and_a_project_may_pass_more_or_less() {
    // top passes 90 % to mid, mid 50 % (default) to leaf.
    let deps = "
[[project]]
id = \"top\"
pass_bps = 9000
deps = [{ project = \"mid\" }]
[[project]]
id = \"mid\"
deps = [{ project = \"leaf\" }]
[[project]]
id = \"leaf\"
";
    check(
        &graph(deps, 1000),
        expect![[r#"
            project:leaf 450
            project:mid 450
            project:top 100
            total 1000
        "#]],
    );
}

#[test]
fn cycle_between_two_projects_terminates_and_conserves() {
    let deps = "
[[project]]
id = \"top\"
deps = [{ project = \"other\" }]
[[project]]
id = \"other\"
deps = [{ project = \"top\" }]
";
    check(
        &graph(deps, 1_000_000),
        expect![[r#"
            project:other 333333
            project:top 666667
            total 1000000
        "#]],
    );
}

#[test]
fn a_dependency_reached_by_two_paths_receives_from_both() {
    // The same as the worked example's `http`.
    let deps = "
[[project]]
id = \"top\"
deps = [{ project = \"left\" }, { project = \"right\" }]
[[project]]
id = \"left\"
deps = [{ project = \"shared\" }]
[[project]]
id = \"right\"
deps = [{ project = \"shared\" }]
[[project]]
id = \"shared\"
";
    check(
        &graph(deps, 1000),
        expect![[r#"
            project:left 125
            project:right 125
            project:shared 250
            project:top 500
            total 1000
        "#]],
    );
}

#[test]
fn period_defaults_to_the_given_month_and_is_checked() {
    check_error(
        "[params]\nperiod = \"2026-13\"\n",
        expect![[
            r#"scenario.toml:2: [params], field `period`: period "2026-13" is not a month in the form YYYY-MM (for example 2026-11)"#
        ]],
    );
}

#[test]
fn unknown_project_is_refused() {
    check_error(
        &one_site("", 1).replace("project = \"p\"\nproviders", "project = \"q\"\nproviders"),
        expect![[r#"scenario.toml:4: [[site]] #1, field `project`: there is no project "q""#]],
    );
}

#[test]
fn unknown_dependency_is_refused() {
    check_error(
        "[[project]]\nid = \"a\"\ndeps = [{ project = \"nope\" }]\n",
        expect![[r#"scenario.toml:3: [[project]] #1, field `deps[0].project`: there is no project "nope""#]],
    );
}

#[test]
fn duplicate_project_id_is_refused_at_the_second() {
    check_error(
        "[[project]]\nid = \"a\"\n[[project]]\nid = \"b\"\n[[project]]\nid = \"a\"\n",
        expect![[r#"scenario.toml:5: [[project]] #3, field `id`: "a" is declared twice"#]],
    );
}

#[test]
fn duplicate_site_id_is_refused() {
    let text = one_site("", 1)
        + "[[site]]\nid = \"s\"\noperator = \"x\"\nproject = \"p\"\nproviders = [{ provider = \"v\" }]\n";
    check_error(&text, expect![[r#"scenario.toml:16: [[site]] #2, field `id`: "s" is declared twice"#]]);
}

#[test]
fn self_dependency_is_refused() {
    check_error(
        "[[project]]\nid = \"a\"\ndeps = [{ project = \"a\" }]\n",
        expect![[r#"scenario.toml:3: [[project]] #1, field `deps[0].project`: project "a" cannot depend on itself"#]],
    );
}

#[test]
fn pass_bps_over_9000_is_refused() {
    check_error(
        "[[project]]\nid = \"a\"\npass_bps = 9001\n",
        expect![[
            r#"scenario.toml:1: [[project]] #1, field `pass_bps`: pass_bps 9001 is more than 9000: a project keeps at least 10 % of what it receives"#
        ]],
    );
    check_error(
        "[params]\npass_bps = 10000\n",
        expect![[
            r#"scenario.toml:2: [params], field `pass_bps`: pass_bps 10000 is more than 9000: a project keeps at least 10 % of what it receives"#
        ]],
    );
}

#[test]
fn developer_share_below_the_floor_is_refused() {
    let text =
        one_site("", 1).replace("project = \"p\"\nproviders", "project = \"p\"\ndeveloper_share_bps = 1999\nproviders");
    check_error(
        &text,
        expect![[
            r#"scenario.toml:4: [[site]] #1, field `developer_share_bps`: developer share 1999 bps is below the floor of 2000 bps"#
        ]],
    );
}

#[test]
fn basis_points_over_10000_are_refused() {
    check_error(
        "[params]\ngeneral_fund_bps = 10001\n",
        expect![[
            r#"scenario.toml:2: [params], field `general_fund_bps`: 10001 basis points is more than 10000 (100 %)"#
        ]],
    );
}

#[test]
fn negative_numbers_are_refused() {
    check_error(
        &one_site("", 1).replace("paid_cents = 1", "paid_cents = -1"),
        expect!["scenario.toml:11: [[subscription]] #1, field `paid_cents`: invalid value: integer `-1`, expected u64"],
    );
}

#[test]
fn numbers_too_large_are_refused() {
    check_error(
        &one_site("", 1).replace("active_minutes = 1", "active_minutes = 99999999999999999999"),
        expect![
            "scenario.toml:15: [[usage]] #1, field `active_minutes`: invalid type: integer `99999999999999999999` as i128, expected u64"
        ],
    );
}

#[test]
fn minting_beyond_64_bits_is_refused() {
    let text = one_site("[params]\ncents_per_cc = 1\n", 9_000_000_000_000_000_000);
    check_error(
        &text,
        expect![
            "scenario.toml:11: [[subscription]] #1, field `user`: the CommonCents minted for this period would overflow 64 bits"
        ],
    );
}

#[test]
fn unknown_keys_are_refused() {
    check_error(
        "[[project]]\nid = \"a\"\npass_pbs = 100\n",
        expect![
            "scenario.toml:3: [[project]] #1, field `pass_pbs`: unknown field `pass_pbs`, expected one of `id`, `deps`, `pass_bps`"
        ],
    );
    check_error(
        "[parms]\n",
        expect![
            "scenario.toml:1: [parms]: unknown field `parms`, expected one of `params`, `project`, `site`, `subscription`, `usage`"
        ],
    );
}

#[test]
fn wrong_types_are_refused() {
    check_error(
        "[[project]]\nid = 7\n",
        expect!["scenario.toml:2: [[project]] #1, field `id`: invalid type: integer `7`, expected a string"],
    );
}

#[test]
fn usage_of_an_unknown_site_is_refused() {
    check_error(
        &one_site("", 1).replace("site = \"s\"", "site = \"nope\""),
        expect![[r#"scenario.toml:12: [[usage]] #1, field `site`: there is no site "nope""#]],
    );
}

#[test]
fn calls_to_an_unknown_service_are_refused() {
    let text = one_site("", 1) + "calls = [{ service = \"nope\", ms = 1 }]\n";
    check_error(
        &text,
        expect![[r#"scenario.toml:16: [[usage]] #1, field `calls[0].service`: there is no site "nope""#]],
    );
}

#[test]
fn a_site_calling_itself_is_refused() {
    let text = one_site("", 1) + "calls = [{ service = \"s\", ms = 1 }]\n";
    check_error(&text, expect![[r#"scenario.toml:16: [[usage]] #1: site "s" cannot call itself"#]]);
}

#[test]
fn duplicate_usage_rows_are_refused() {
    let text = one_site("", 1) + "[[usage]]\nuser = \"alice\"\nsite = \"s\"\nactive_minutes = 2\n";
    check_error(
        &text,
        expect![[r#"scenario.toml:16: [[usage]] #2: usage of site "s" by user "alice" is given twice"#]],
    );
}

#[test]
fn duplicate_subscriptions_are_refused() {
    let text = one_site("", 1) + "[[subscription]]\nuser = \"alice\"\npaid_cents = 5\n";
    check_error(
        &text,
        expect![[r#"scenario.toml:16: [[subscription]] #2, field `user`: user "alice" has a subscription already"#]],
    );
}

#[test]
fn a_site_needs_a_provider() {
    check_error(
        "[[project]]\nid = \"p\"\n[[site]]\nid = \"s\"\noperator = \"o\"\nproject = \"p\"\n",
        expect!["scenario.toml:3: [[site]] #1, field `providers`: a site needs at least one provider"],
    );
}

#[test]
fn zero_weights_are_refused() {
    check_error(
        "[[project]]\nid = \"a\"\ndeps = [{ project = \"b\", weight = 0 }]\n[[project]]\nid = \"b\"\n",
        expect!["scenario.toml:3: [[project]] #1, field `deps[0].weight`: the weight must be at least 1"],
    );
}

#[test]
fn malformed_toml_is_refused_with_its_line() {
    check_error(
        "[[project]\nid = \"a\"\n",
        expect!["scenario.toml:1: [[project]] #1: unclosed array table, expected `]`"],
    );
}
