//! Level 4, one rule each: a project's payout contract divides what the
//! project keeps. `check` settles one period with a test contract and shows
//! every non-zero account, each level-4 posting, and each contract failure.
//!
//! The period: subscriber `alice` pays 1,000 cents for 1,000 µCC (one
//! cent buys one µCC, nothing to the reserve or the general fund) and uses
//! site `s`, whose whole income goes to its project `p` (no provider cut,
//! a 100 % developer share); `p` has no dependencies, so it keeps the
//! 1,000 µCC and its contract is asked to divide exactly that.

use commons_core::{Account, Cents, Micros, Period};
use expect_test::{Expect, expect};
use settlement::{
    ActivityBuilder, ContractError, Node, Params, ParamsSpec, PayoutContract, ProjectSpec, ProviderSpec, Registry,
    SiteSpec, UsageRow, settle_journaled,
};

/// What a contract answers.
type Payout = Result<Vec<(Account, Micros)>, ContractError>;

/// A contract that answers with a fixed function of (project, amount).
struct Contract(fn(&str, Micros) -> Payout);

impl PayoutContract for Contract {
    fn payout(&self, project: &str, amount: Micros) -> Payout {
        (self.0)(project, amount)
    }
}

fn contributor(name: &str) -> Account {
    Account::Contributor { project: "p".into(), contributor: name.into() }
}

fn check(contract: Contract, expect: Expect) {
    let period = Period::parse("2026-11").unwrap();
    let spec = ParamsSpec {
        cents_per_cc: Some(1_000_000),
        reserve_contribution_bps: Some(0),
        general_fund_bps: Some(0),
        provider_share_bps: Some(0),
        ..ParamsSpec::default()
    };
    let params = Params::new(period, &spec).unwrap();
    let projects = [ProjectSpec { id: "p".into(), pass_bps: None, deps: vec![] }];
    let sites = [SiteSpec {
        id: "s".into(),
        operator: "o".into(),
        project: "p".into(),
        provider_share_bps: None,
        developer_share_bps: Some(10_000),
        providers: vec![ProviderSpec { provider: "v".into(), resource_weight: 1 }],
    }];
    let registry = Registry::new(&params, &projects, &sites).unwrap();
    let mut builder = ActivityBuilder::new(&params, &registry);
    let alice = builder.add_subscription("alice", Cents::new(1_000), 0).unwrap();
    let site = registry.site_ix("s").unwrap();
    builder.add_usage([UsageRow { user: alice, site, active_minutes: 1, service_ms: 0, tag: 0 }]);
    let activity = builder.finish().unwrap();

    let mut out = String::new();
    let mut journal = |posting: settlement::Posting<'_>| {
        if posting.level == 4 {
            let Node::Account(account) = posting.to else { panic!("level 4 pays accounts: {posting:?}") };
            out.push_str(&format!("posted {account} {}\n", posting.amount.get()));
        }
    };
    let settlement = settle_journaled(&params, &registry, &activity, &contract, Some(&mut journal));
    for (account, amount) in &settlement.accounts {
        out.push_str(&format!("{account} {}\n", amount.get()));
    }
    for failure in &settlement.contract_failures {
        out.push_str(&format!("failed: {} keeps {}: {}\n", failure.project, failure.amount.get(), failure.error));
    }
    expect.assert_eq(&out);
}

#[test]
fn the_default_contract_pays_the_project_s_own_account() {
    check(
        Contract(|project, amount| Ok(vec![(Account::Project(project.into()), amount)])),
        expect![[r#"
            posted project:p 1000
            project:p 1000
        "#]],
    );
}

#[test]
fn a_contract_divides_what_the_project_keeps() {
    check(
        Contract(|_, amount| {
            Ok(vec![(contributor("ann"), Micros::new(700)), (contributor("bob"), amount_less(amount, 700))])
        }),
        expect![[r#"
            posted contributor:p/ann 700
            posted contributor:p/bob 300
            contributor:p/ann 700
            contributor:p/bob 300
        "#]],
    );
}

#[test]
fn outputs_to_one_account_are_paid_as_one_posting_of_their_sum() {
    check(
        Contract(|_, _| {
            Ok(vec![
                (contributor("ann"), Micros::new(300)),
                (contributor("bob"), Micros::new(200)),
                (contributor("ann"), Micros::new(500)),
            ])
        }),
        expect![[r#"
            posted contributor:p/ann 800
            posted contributor:p/bob 200
            contributor:p/ann 800
            contributor:p/bob 200
        "#]],
    );
}

#[test]
fn a_zero_output_is_not_posted() {
    check(
        Contract(|_, amount| Ok(vec![(contributor("ann"), amount), (contributor("bob"), Micros::ZERO)])),
        expect![[r#"
            posted contributor:p/ann 1000
            contributor:p/ann 1000
        "#]],
    );
}

#[test]
fn a_contract_that_errs_pays_nothing_and_the_project_keeps_the_amount() {
    check(
        Contract(|_, _| Err(ContractError::Failed("trap: unreachable".into()))),
        expect![[r#"
            posted project:p 1000
            project:p 1000
            failed: p keeps 1000: the payout contract failed: trap: unreachable
        "#]],
    );
}

#[test]
fn outputs_that_sum_to_less_than_the_input_pay_nothing() {
    check(
        Contract(|_, _| Ok(vec![(contributor("ann"), Micros::new(999))])),
        expect![[r#"
            posted project:p 1000
            project:p 1000
            failed: p keeps 1000: the payout contract failed: paid 999 µCC out of 1000 µCC
        "#]],
    );
}

#[test]
fn outputs_that_sum_to_more_than_the_input_pay_nothing() {
    check(
        Contract(|_, _| Ok(vec![(contributor("ann"), Micros::new(600)), (contributor("ann"), Micros::new(600))])),
        expect![[r#"
            posted project:p 1000
            project:p 1000
            failed: p keeps 1000: the payout contract failed: paid 1200 µCC out of 1000 µCC
        "#]],
    );
}

#[test]
fn outputs_that_overflow_64_bits_pay_nothing() {
    check(
        Contract(|_, amount| {
            Ok(vec![
                (contributor("ann"), Micros::new(u64::MAX)),
                (contributor("bob"), amount),
                (contributor("ann"), amount),
            ])
        }),
        expect![[r#"
            posted project:p 1000
            project:p 1000
            failed: p keeps 1000: the payout contract failed: paid more than 2^64 µCC µCC out of 1000 µCC
        "#]],
    );
}

fn amount_less(amount: Micros, less: u64) -> Micros {
    amount.checked_sub(Micros::new(less)).unwrap()
}
