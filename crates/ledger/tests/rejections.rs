//! Every rule a block or batch can break, one case each, with the exact
//! message it is refused with. `check` appends a history of batches (each
//! must be accepted), then offers one more batch; `check_block` offers a
//! block built, and perhaps tampered with, by hand. Either way the ledger
//! must be left as it was.
//!
//! Payments are made at the initial price, 100 cents per CC with nothing
//! kept in the reserve, so paying N cents mints exactly N × 10,000 µCC.

use commons_core::{Bps, Period};
use expect_test::{Expect, expect};
use ledger::{
    AccountKind, AccountName, AppendOutcome, Block, Ledger, LedgerConfig, Nav, Rejection, Signer, Transfer, TransferId,
    TransferKind, payment,
};

fn signer() -> Signer {
    Signer::from_seed([7; 32])
}

fn ledger_signed_by(signer: &Signer) -> Ledger {
    Ledger::new(LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer.public_key() })
}

fn append(ledger: &mut Ledger, signer: &Signer, batch: Vec<Transfer>) -> Result<Option<Block>, Rejection> {
    match ledger.prepare(batch, 1_700_000_000_000 + ledger.height(), signer)? {
        AppendOutcome::Sealed(block) => {
            ledger.apply(&block).unwrap();
            Ok(Some(block.into_block()))
        }
        AppendOutcome::AlreadyRecorded => Ok(None),
    }
}

/// A ledger that accepted every batch of `history`, and the blocks it made.
fn given(signer: &Signer, history: Vec<Vec<Transfer>>) -> (Ledger, Vec<Block>) {
    let mut ledger = ledger_signed_by(signer);
    let mut blocks = Vec::new();
    for (i, batch) in history.into_iter().enumerate() {
        match append(&mut ledger, signer, batch) {
            Ok(Some(block)) => blocks.push(block),
            other => panic!("history batch {i} was not sealed: {other:?}"),
        }
    }
    (ledger, blocks)
}

/// After `history`, `batch` is refused with `expect`, changing nothing.
fn check(history: Vec<Vec<Transfer>>, batch: Vec<Transfer>, expect: Expect) {
    let (mut ledger, _) = given(&signer(), history);
    let before = (ledger.height(), ledger.head(), ledger.balances());
    match append(&mut ledger, &signer(), batch) {
        Ok(outcome) => panic!("accepted: {outcome:?}"),
        Err(rejection) => expect.assert_eq(&rejection.to_string()),
    }
    assert_eq!((ledger.height(), ledger.head(), ledger.balances()), before, "a refused batch changes nothing");
}

/// After `history`, the block `make` builds from the history's blocks is
/// refused with `expect`, changing nothing.
fn check_block(history: Vec<Vec<Transfer>>, make: impl FnOnce(Vec<Block>) -> Block, expect: Expect) {
    let (mut ledger, blocks) = given(&signer(), history);
    let before = (ledger.height(), ledger.head(), ledger.balances());
    match ledger.apply_block(make(blocks)) {
        Ok(()) => panic!("accepted"),
        Err(error) => expect.assert_eq(&error.to_string()),
    }
    assert_eq!((ledger.height(), ledger.head(), ledger.balances()), before, "a refused block changes nothing");
}

fn period() -> Period {
    Period::parse("2026-11").unwrap()
}

fn account(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

fn escrow(user: &str) -> AccountName {
    AccountName::escrow(period(), user).unwrap()
}

fn transfer(id: u128, kind: TransferKind, debit: AccountName, credit: AccountName, amount: u64) -> Transfer {
    Transfer { id: TransferId(id), kind, debit, credit, amount }
}

/// `user` pays `cents` for the period: N × 10,000 µCC into their escrow.
fn paid(user: &str, cents: u64) -> Vec<Transfer> {
    let initial = Nav { height: 0, reserve_cents: 0, supply_micros: 0, initial_cents_per_cc: 100 };
    payment(&initial, period(), user, cents, Bps::new(0).unwrap(), user.as_bytes()).unwrap().0
}

/// Moves `amount` out of `user`'s escrow to `to`.
fn allocated(id: u128, user: &str, to: &str, amount: u64) -> Transfer {
    transfer(id, TransferKind::Allocate, escrow(user), account(to), amount)
}

/// Alice's 10 CC, all to the wiki's pool, and on to its operator: the
/// period is settled.
fn a_settled_period() -> Vec<Vec<Transfer>> {
    let pool = "pool:2026-11:site:wiki";
    vec![
        paid("alice", 1000),
        vec![allocated(1, "alice", pool, 10_000_000)],
        vec![transfer(2, TransferKind::Distribute, account(pool), account("operator:olga"), 10_000_000)],
    ]
}

#[test]
fn a_batch_holds_at_least_one_transfer() {
    check(vec![], vec![], expect!["a batch must hold between 1 and 16777216 transfers, not 0"]);
}

#[test]
fn a_block_holds_at_least_one_transfer() {
    check_block(
        vec![paid("alice", 1000)],
        |mut blocks| {
            let mut block = blocks.remove(0);
            block.transfers.clear();
            block.header.n_transfers = 0;
            block
        },
        expect!["block 2: a batch must hold between 1 and 16777216 transfers, not 0"],
    );
}

#[test]
fn blocks_come_in_height_order() {
    check_block(
        vec![paid("alice", 1000)],
        |_| given(&signer(), vec![paid("bob", 1000), paid("carol", 1000), paid("dave", 1000)]).1.remove(2),
        expect!["block 2: height 3 where 2 comes next"],
    );
}

#[test]
fn a_block_links_to_the_previous_block() {
    check_block(
        vec![paid("alice", 1000)],
        |_| given(&signer(), vec![paid("bob", 1000), paid("carol", 1000)]).1.remove(1),
        expect!["block 2: the previous-block hash does not match block 1"],
    );
}

#[test]
fn the_merkle_root_covers_every_transfer() {
    check_block(
        vec![paid("alice", 1000)],
        |_| {
            let mut block = given(&signer(), vec![paid("alice", 1000), paid("bob", 1000)]).1.remove(1);
            block.transfers[1].amount += 1;
            block
        },
        expect!["block 2: the Merkle root does not match the transfers"],
    );
}

#[test]
fn the_header_counts_the_transfers() {
    check_block(
        vec![paid("alice", 1000)],
        |_| {
            let mut block = given(&signer(), vec![paid("alice", 1000), paid("bob", 1000)]).1.remove(1);
            block.transfers.pop();
            block
        },
        expect!["block 2: the header says 2 transfers, the block holds 1"],
    );
}

#[test]
fn blocks_are_signed_by_the_ledger_s_key() {
    let mallory = Signer::from_seed([8; 32]);
    check_block(
        vec![],
        |_| given(&mallory, vec![paid("alice", 1000)]).1.remove(0),
        expect![
            "block 1: signed by 1398f62c6d1a457c51ba6a4b5f3dbd2f69fca93216218dc8997e416bd17d93ca, not by the ledger's key ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        ],
    );
}

#[test]
fn a_signature_must_verify() {
    check_block(
        vec![paid("alice", 1000)],
        |_| {
            let mut block = given(&signer(), vec![paid("alice", 1000), paid("bob", 1000)]).1.remove(1);
            block.signature[0] ^= 1;
            block
        },
        expect!["block 2: the signature does not verify"],
    );
}

#[test]
fn an_id_appears_once_in_a_batch() {
    check(
        vec![paid("alice", 1000)],
        vec![allocated(5, "alice", "general-fund", 4_000_000), allocated(5, "alice", "provider:pat", 6_000_000)],
        expect!["transfer 00000000000000000000000000000005 appears twice"],
    );
}

#[test]
fn an_id_recorded_before_is_not_reused_for_other_content() {
    check(
        vec![paid("alice", 1000), vec![allocated(7, "alice", "general-fund", 10_000_000)]],
        vec![allocated(7, "alice", "general-fund", 9_000_000)],
        expect!["transfer 00000000000000000000000000000007 was recorded before with different content"],
    );
}

#[test]
fn a_batch_is_recorded_whole_or_not_at_all() {
    check(
        vec![paid("alice", 1000), paid("bob", 1000), vec![allocated(7, "alice", "general-fund", 10_000_000)]],
        vec![allocated(7, "alice", "general-fund", 10_000_000), allocated(8, "bob", "general-fund", 10_000_000)],
        expect![
            "some of the batch's transfers were recorded before and some were not: a batch is applied whole or not at all"
        ],
    );
}

#[test]
fn kinds_fix_which_accounts_money_moves_between() {
    check(
        vec![],
        vec![transfer(1, TransferKind::Mint, AccountName::issuance(), account("provider:pat"), 5)],
        expect!["transfer 00000000000000000000000000000001: mint cannot move from issuance to provider:pat"],
    );
}

#[test]
fn every_kind_moves_one_asset() {
    use AccountKind::*;
    let kinds = [World, Reserve, Issuance, Escrow, Pool, Holder];
    for kind in TransferKind::ALL {
        for debit in kinds {
            for credit in kinds {
                if kind.allows(debit, credit) {
                    assert_eq!(debit.asset(), credit.asset(), "{} from {debit:?} to {credit:?}", kind.as_str());
                }
            }
        }
    }
}

#[test]
fn an_account_holds_the_asset_of_its_kind() {
    let names = [
        "world",
        "reserve",
        "issuance",
        "general-fund",
        "escrow:2026-11:alice",
        "pool:2026-11:site:wiki",
        "pool:2026-11:project:wiki",
        "provider:pat",
        "operator:olga",
        "project:wiki",
        "contributor:wiki/ann",
        "holder:h",
    ];
    for name in names {
        let account = account(name);
        assert_eq!(account.asset(), account.kind().asset(), "{name}");
    }
}

#[test]
fn a_transfer_moves_a_positive_amount() {
    check(
        vec![],
        vec![transfer(1, TransferKind::Payment, AccountName::world(), AccountName::reserve(), 0)],
        expect!["transfer 00000000000000000000000000000001: the amount is zero"],
    );
}

#[test]
fn escrows_and_pools_of_different_periods_do_not_mix() {
    check(
        vec![paid("alice", 1000)],
        vec![allocated(1, "alice", "pool:2026-12:site:wiki", 10_000_000)],
        expect![
            "transfer 00000000000000000000000000000001: escrow and pool accounts of different periods (escrow:2026-11:alice to pool:2026-12:site:wiki)"
        ],
    );
}

#[test]
fn only_world_and_issuance_go_negative() {
    check(
        vec![paid("alice", 1000)],
        vec![transfer(1, TransferKind::Distribute, account("pool:2026-11:site:wiki"), account("operator:olga"), 5)],
        expect!["account pool:2026-11:site:wiki would end at -5, and only world and issuance may go negative"],
    );
}

#[test]
fn an_escrow_pays_out_exactly_what_it_holds() {
    check(
        vec![paid("alice", 1000)],
        vec![allocated(1, "alice", "general-fund", 9_999_999)],
        expect![
            "escrow:2026-11:alice paid out 9999999 but held 10000000: settlement must move exactly what an escrow or pool holds"
        ],
    );
}

#[test]
fn a_settled_period_takes_no_more_transfers() {
    check(a_settled_period(), paid("carol", 1000), expect!["period 2026-11 is settled already"]);
}

#[test]
fn a_mint_is_backed_by_the_reserve() {
    check(
        vec![],
        vec![transfer(1, TransferKind::Mint, AccountName::issuance(), escrow("mallory"), 5)],
        expect!["NAV would fall: reserve 0 cents for 5 µCC, after 0 cents for 0 µCC"],
    );
}

#[test]
fn balances_stay_within_64_bits() {
    let pay = |id, cents| transfer(id, TransferKind::Payment, AccountName::world(), AccountName::reserve(), cents);
    check(vec![vec![pay(1, u64::MAX)]], vec![pay(2, 1)], expect!["a balance would exceed the ledger's range"]);
}

#[test]
fn a_reserve_and_a_supply_near_2_64_are_compared_without_overflow() {
    // Block 1: 2^63 cents back u64::MAX µCC at the initial price. Block 2
    // nearly doubles the reserve: NAV rises. Comparing NAVs multiplies a
    // reserve by a supply, ~2^128: more than an i128 holds.
    let pay = |id, cents| transfer(id, TransferKind::Payment, AccountName::world(), AccountName::reserve(), cents);
    let (ledger, _) = given(
        &signer(),
        vec![
            vec![pay(1, 1 << 63), transfer(2, TransferKind::Mint, AccountName::issuance(), escrow("whale"), u64::MAX)],
            vec![pay(3, (1 << 63) - 1)],
        ],
    );
    assert_eq!((ledger.nav().reserve_cents, ledger.nav().supply_micros), (u64::MAX, u64::MAX));
}
