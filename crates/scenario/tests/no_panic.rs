//! No input makes loading or settling panic: mangled scenarios are either
//! refused with an error or settle and conserve.

use std::path::Path;

use commons_core::Period;
use proptest::prelude::*;
use settlement::{ProjectAccount, settle};

const GOLDEN: &str = include_str!("../../../examples/golden.toml");

fn load_and_settle(text: &str) {
    let period = Period::parse("2026-11").unwrap();
    if let Ok(scenario) = scenario::from_toml(Path::new("fuzz.toml"), text, period) {
        let settlement = settle(&scenario.params, &scenario.registry, &scenario.activity, &ProjectAccount);
        assert_eq!(
            settlement.accounts.values().map(|m| u128::from(m.get())).sum::<u128>(),
            u128::from(settlement.minted.get())
        );
    }
}

/// Pieces scenario files are made of, to build inputs that get past the
/// TOML parser often enough to reach validation and settlement.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[params]\n".to_owned()),
        Just("[[project]]\n".to_owned()),
        Just("[[site]]\n".to_owned()),
        Just("[[subscription]]\n".to_owned()),
        Just("[[usage]]\n".to_owned()),
        "(id|user|site|project|operator|service) = \"(a|b|wiki|chat|search|)\"\n",
        "(paid_cents|active_minutes|service_ms|pass_bps|general_fund_bps|cents_per_cc|developer_share_bps) = -?[0-9]{1,21}\n",
        Just("providers = [{ provider = \"v\" }]\n".to_owned()),
        "deps = \\[\\{ project = \"(a|b|wiki)\", weight = [0-9]{1,3} \\}\\]\n",
        "calls = \\[\\{ service = \"(a|b|search)\", ms = [0-9]{1,20} \\}\\]\n",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        load_and_settle(&text);
    }

    #[test]
    fn scenario_shaped_text_never_panics(tokens in proptest::collection::vec(token(), 0..40)) {
        load_and_settle(&tokens.concat());
    }

    #[test]
    fn the_golden_scenario_with_a_byte_changed_never_panics(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = GOLDEN.as_bytes().to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        load_and_settle(&String::from_utf8_lossy(&bytes));
    }
}
