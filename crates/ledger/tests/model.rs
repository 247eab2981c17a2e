//! The ledger against a plain in-memory model: random payments,
//! allocations, redemptions and retries, some of them overdrawing; after
//! every step the ledger accepted exactly what the model allows, balances
//! are identical, and every invariant holds. Reproducible from the seed
//! proptest prints.

use std::collections::BTreeMap;

use commons_core::{Bps, Period};
use ledger::{
    AccountKind, AccountName, AppendOutcome, Asset, Ledger, LedgerConfig, Signer, Transfer, TransferId, TransferKind,
    payment, read_export, redemption, write_block_line, write_header_line,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Pay {
        user: u8,
        cents: u64,
        reserve_bps: u64,
    },
    /// Move `take` µCC (may exceed the escrow) from an escrow: part to the
    /// general fund, the rest to a holder.
    Allocate {
        user: u8,
        holder: u8,
        take_extra: i64,
        fund_part: u64,
    },
    Redeem {
        holder: u8,
        micros: u64,
    },
    RetryLast,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u64..5_000, 0u64..500).prop_map(|(user, cents, reserve_bps)| Op::Pay { user, cents, reserve_bps }),
        (0u8..4, 0u8..3, -2i64..3, 0u64..1_000_000).prop_map(|(user, holder, take_extra, fund_part)| Op::Allocate {
            user,
            holder,
            take_extra: if take_extra == 0 { 0 } else { take_extra * 1000 },
            fund_part,
        }),
        (0u8..3, 0u64..20_000_000).prop_map(|(holder, micros)| Op::Redeem { holder, micros }),
        Just(Op::RetryLast),
    ]
}

fn period() -> Period {
    Period::parse("2026-11").unwrap()
}

/// The model: balances by name, and what a batch must satisfy.
#[derive(Default)]
struct Model {
    balances: BTreeMap<String, i128>,
}

impl Model {
    /// Applies the batch if every rule holds; says whether it did.
    fn apply(&mut self, batch: &[Transfer]) -> bool {
        let mut next = self.balances.clone();
        let mut paid_out = BTreeMap::new();
        for t in batch {
            if t.amount == 0 {
                return false;
            }
            *next.entry(t.debit.to_string()).or_default() -= i128::from(t.amount);
            *next.entry(t.credit.to_string()).or_default() += i128::from(t.amount);
            if t.debit.kind() == AccountKind::Escrow {
                paid_out.insert(t.debit.to_string(), ());
            }
        }
        let negative_ok = |name: &str| name == "world" || name == "issuance";
        if next.iter().any(|(name, &b)| b < 0 && !negative_ok(name)) {
            return false;
        }
        if paid_out.keys().any(|name| next[name] != 0) {
            return false;
        }
        self.balances = next;
        true
    }
}

fn holder(h: u8) -> AccountName {
    AccountName::parse(&format!("provider:p{h}")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ledger_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let signer = Signer::from_seed([3; 32]);
        let mut ledger = Ledger::new(LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer.public_key() });
        let mut model = Model::default();
        let mut blocks = Vec::new();
        let mut last: Option<Vec<Transfer>> = None;
        let mut next_id = 1u128;
        let mut last_nav = (0u128, 0u128);
        for (step, op) in ops.into_iter().enumerate() {
            let batch = match op {
                Op::Pay { user, cents, reserve_bps } => {
                    match payment(&ledger.nav(), period(), &format!("u{user}"), cents, Bps::new(reserve_bps).unwrap(), &step.to_le_bytes()) {
                        Ok((batch, _)) => batch,
                        Err(_) => continue,
                    }
                }
                Op::Allocate { user, holder: h, take_extra, fund_part } => {
                    let escrow = AccountName::escrow(period(), &format!("u{user}")).unwrap();
                    let take = (ledger.balance(&escrow) as i64 + take_extra).max(0) as u64;
                    let fund = fund_part.min(take);
                    let mut batch = Vec::new();
                    for (to, amount) in [(AccountName::parse("general-fund").unwrap(), fund), (holder(h), take - fund)] {
                        if amount > 0 {
                            batch.push(Transfer { id: TransferId(next_id), kind: TransferKind::Allocate, debit: escrow.clone(), credit: to, amount });
                            next_id += 1;
                        }
                    }
                    batch
                }
                Op::Redeem { holder: h, micros } => {
                    if micros == 0 { continue; }
                    match redemption(&ledger.nav(), &holder(h), micros, &step.to_le_bytes()) {
                        Ok((batch, _)) => batch,
                        // More than the supply: refused before it is a batch.
                        Err(_) => continue,
                    }
                }
                Op::RetryLast => match &last {
                    Some(batch) => batch.clone(),
                    None => continue,
                },
            };
            if batch.is_empty() {
                continue;
            }
            let retry = matches!(op, Op::RetryLast);
            let before = ledger.balances();
            match ledger.prepare(batch.clone(), step as u64, &signer) {
                Ok(AppendOutcome::Sealed(block)) => {
                    prop_assert!(!retry, "a retry was sealed again");
                    prop_assert!(model.apply(&batch), "the ledger accepted what the model refuses: {batch:?}");
                    ledger.apply(&block).unwrap();
                    blocks.push(block);
                    last = Some(batch);
                }
                Ok(AppendOutcome::AlreadyRecorded) => prop_assert!(retry),
                Err(rejection) => {
                    let mut scratch = Model { balances: model.balances.clone() };
                    prop_assert!(!scratch.apply(&batch), "the ledger refused what the model allows: {rejection}");
                    prop_assert_eq!(ledger.balances(), before);
                }
            }
            // Identical balances, double entry, and NAV never falls.
            let ours: BTreeMap<String, i128> = ledger.balances().into_iter().map(|(a, b)| (a.to_string(), b)).collect();
            let theirs: BTreeMap<String, i128> = model.balances.iter().filter(|(_, b)| **b != 0).map(|(a, b)| (a.clone(), *b)).collect();
            prop_assert_eq!(ours, theirs);
            prop_assert_eq!(ledger.asset_sums(), [(Asset::Cc, 0), (Asset::Fiat, 0)]);
            let nav = ledger.nav();
            let (reserve, supply) = (u128::from(nav.reserve_cents), u128::from(nav.supply_micros));
            if last_nav.1 > 0 {
                prop_assert!(reserve * last_nav.1 >= last_nav.0 * supply, "NAV fell");
            }
            last_nav = (reserve, supply);
        }
        // The export of whatever happened verifies to the same state.
        let mut out = Vec::new();
        write_header_line(&ledger, &mut out).unwrap();
        for block in &blocks {
            write_block_line(block.block(), &mut out).unwrap();
        }
        let verified = read_export(out.as_slice(), None).unwrap();
        prop_assert_eq!(verified.balances(), ledger.balances());
    }
}
