//! The ledger as its users meet it: payments mint at NAV, retries are
//! no-ops, batches are atomic, and an export with any byte changed fails
//! verification at the block that was changed.

use commons_core::{Bps, Period};
use ledger::{
    AccountName, AppendOutcome, Block, CustodyError, ExportError, Ledger, LedgerConfig, Nav, Rejection, Signer,
    Transfer, TransferId, TransferKind, TransferLocation, payment, read_export, redemption, write_block_line,
    write_header_line,
};

fn signer() -> Signer {
    Signer::from_seed([7; 32])
}

fn new_ledger() -> Ledger {
    Ledger::new(LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer().public_key() })
}

fn period() -> Period {
    Period::parse("2026-11").unwrap()
}

fn append(ledger: &mut Ledger, batch: Vec<Transfer>) -> Result<Option<Block>, Rejection> {
    match ledger.prepare(batch, 1_700_000_000_000 + ledger.height(), &signer())? {
        AppendOutcome::Sealed(block) => {
            ledger.apply(&block).unwrap();
            Ok(Some(block.into_block()))
        }
        AppendOutcome::AlreadyRecorded => Ok(None),
    }
}

fn pay(ledger: &mut Ledger, user: &str, cents: u64, reserve_bps: u64) -> u64 {
    let (batch, minted) =
        payment(&ledger.nav(), period(), user, cents, Bps::new(reserve_bps).unwrap(), user.as_bytes()).unwrap();
    append(ledger, batch).unwrap();
    minted
}

fn allocate(ledger: &mut Ledger, id: u128, user: &str, to: &str, amount: u64) -> Result<Option<Block>, Rejection> {
    let transfer = Transfer {
        id: TransferId(id),
        kind: TransferKind::Allocate,
        debit: AccountName::escrow(period(), user).unwrap(),
        credit: AccountName::parse(to).unwrap(),
        amount,
    };
    append(ledger, vec![transfer])
}

#[test]
fn the_first_payment_mints_at_the_initial_price_and_later_ones_at_nav() {
    let mut ledger = new_ledger();
    // 1000 cents, 1 % to the reserve unminted: 990 cents at 100 cents/CC.
    assert_eq!(pay(&mut ledger, "alice", 1000, 100), 9_900_000);
    let nav = ledger.nav();
    assert_eq!((nav.reserve_cents, nav.supply_micros), (1000, 9_900_000));
    assert_eq!(nav.cents_per_cc(), "101.010101");
    // Bob pays the same and gets fewer tokens: each is worth more now.
    assert_eq!(pay(&mut ledger, "bob", 1000, 100), 9_801_000);
    assert!(ledger.nav().cents_per_cc().as_str() >= "101.010101");
    assert_eq!(ledger.nav_at(1).unwrap().supply_micros, 9_900_000);
    assert_eq!(ledger.nav_at(0).unwrap().supply_micros, 0);
}

#[test]
fn redemption_pays_nav_and_leaves_nav_unchanged_or_higher() {
    let mut ledger = new_ledger();
    pay(&mut ledger, "alice", 1000, 100);
    allocate(&mut ledger, 1, "alice", "provider:pat", 9_900_000).unwrap();
    let before = ledger.nav();
    let holder = AccountName::parse("provider:pat").unwrap();
    let (batch, cents) = redemption(&before, &holder, 4_950_000, b"r1").unwrap();
    assert_eq!(cents, 500);
    append(&mut ledger, batch).unwrap();
    assert_eq!(ledger.balance(&holder), 4_950_000);
    assert_eq!(ledger.balance(&AccountName::reserve()), 500);
    assert!(ledger.nav().cents_per_cc() >= before.cents_per_cc());
}

#[test]
fn a_retried_batch_is_a_no_op_and_a_reused_id_is_refused() {
    let mut ledger = new_ledger();
    pay(&mut ledger, "alice", 1000, 0);
    assert!(allocate(&mut ledger, 42, "alice", "general-fund", 10_000_000).unwrap().is_some());
    let height = ledger.height();
    assert_eq!(allocate(&mut ledger, 42, "alice", "general-fund", 10_000_000), Ok(None));
    assert_eq!(ledger.height(), height);
    assert_eq!(allocate(&mut ledger, 42, "alice", "general-fund", 9), Err(Rejection::IdReused(TransferId(42))));
}

#[test]
fn a_batch_with_one_bad_leg_changes_nothing() {
    let mut ledger = new_ledger();
    pay(&mut ledger, "alice", 1000, 0);
    let balances = ledger.balances();
    let escrow = AccountName::escrow(period(), "alice").unwrap();
    let leg = |id, to: &str, amount| Transfer {
        id: TransferId(id),
        kind: TransferKind::Allocate,
        debit: escrow.clone(),
        credit: AccountName::parse(to).unwrap(),
        amount,
    };
    // Together the legs overdraw the escrow.
    let result = append(&mut ledger, vec![leg(1, "general-fund", 6_000_000), leg(2, "provider:pat", 6_000_000)]);
    assert!(matches!(result, Err(Rejection::Negative { .. })), "{result:?}");
    assert_eq!(ledger.balances(), balances);
    assert_eq!(ledger.height(), 1);
    // Ids of a refused batch stay free.
    append(&mut ledger, vec![leg(1, "general-fund", 6_000_000), leg(2, "provider:pat", 4_000_000)]).unwrap();
}

#[test]
fn an_escrow_pays_out_exactly_what_it_holds() {
    let mut ledger = new_ledger();
    pay(&mut ledger, "alice", 1000, 0);
    assert_eq!(
        allocate(&mut ledger, 1, "alice", "general-fund", 9_999_999),
        Err(Rejection::NotEmptied {
            account: AccountName::escrow(period(), "alice").unwrap(),
            paid: 9_999_999,
            held: 10_000_000
        })
    );
}

#[test]
fn kinds_fix_which_accounts_money_moves_between() {
    let mut ledger = new_ledger();
    let mint_to_holder = Transfer {
        id: TransferId(1),
        kind: TransferKind::Mint,
        debit: AccountName::issuance(),
        credit: AccountName::parse("provider:pat").unwrap(),
        amount: 5,
    };
    assert!(matches!(append(&mut ledger, vec![mint_to_holder]), Err(Rejection::KindNotAllowed { .. })));
    let unbacked_mint = Transfer {
        id: TransferId(2),
        kind: TransferKind::Mint,
        debit: AccountName::issuance(),
        credit: AccountName::escrow(period(), "mallory").unwrap(),
        amount: 5,
    };
    assert!(matches!(append(&mut ledger, vec![unbacked_mint]), Err(Rejection::Underbacked { .. })));
}

#[test]
fn redeeming_more_than_the_supply_is_refused_before_it_is_a_batch() {
    let mut ledger = new_ledger();
    pay(&mut ledger, "alice", 1000, 0);
    let holder = AccountName::parse("provider:pat").unwrap();
    assert_eq!(
        redemption(&ledger.nav(), &holder, 10_000_001, b"r1"),
        Err(CustodyError::MoreThanSupply { micros: 10_000_001, supply: 10_000_000 })
    );
}

#[test]
fn pricing_a_payment_past_2_64_fails_instead_of_saturating() {
    let nav = Nav { height: 1, reserve_cents: u64::MAX - 1, supply_micros: 5, initial_cents_per_cc: 100 };
    assert_eq!(nav.after_payment(1, 1).map(|n| (n.reserve_cents, n.supply_micros)), Some((u64::MAX, 6)));
    assert_eq!(nav.after_payment(2, 1), None);
    assert_eq!(nav.after_payment(1, u64::MAX), None);
}

#[test]
fn a_recorded_transfer_is_found_in_the_block_that_holds_it() {
    let mut ledger = new_ledger();
    let mut blocks = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let (batch, _) = payment(&ledger.nav(), period(), user, 1000, Bps::new(0).unwrap(), user.as_bytes()).unwrap();
        blocks.push(append(&mut ledger, batch).unwrap().unwrap());
    }
    let bobs_mint = TransferId::derive(&[b"mint", b"bob"]);
    let location = ledger.locate(bobs_mint).unwrap();
    assert_eq!(location, TransferLocation { height: 2, index: 1 });
    let found = &blocks[location.height as usize - 1].transfers[location.index];
    assert_eq!((found.id, found.kind, found.amount), (bobs_mint, TransferKind::Mint, 10_000_000));
    assert_eq!(ledger.locate(TransferId::derive(&[b"mint", b"dave"])), None);
}

#[test]
fn a_period_s_escrows_and_pools_are_listed_until_they_are_emptied() {
    let mut ledger = new_ledger();
    pay(&mut ledger, "alice", 1000, 0);
    let escrow = AccountName::escrow(period(), "alice").unwrap();
    assert_eq!(ledger.period_balances(period()), vec![(escrow, 10_000_000)]);
    assert_eq!(ledger.period_balances(Period::parse("2026-12").unwrap()), vec![]);
    allocate(&mut ledger, 1, "alice", "general-fund", 10_000_000).unwrap();
    assert_eq!(ledger.period_balances(period()), vec![]);
}

/// A chain of a few blocks and its export, line by line.
fn exported_chain() -> (Ledger, Vec<String>) {
    let mut ledger = new_ledger();
    let mut blocks = Vec::new();
    for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
        let (batch, _) =
            payment(&ledger.nav(), period(), user, 1000 + i as u64, Bps::new(100).unwrap(), user.as_bytes()).unwrap();
        blocks.push(append(&mut ledger, batch).unwrap().unwrap());
    }
    let escrow = AccountName::escrow(period(), "alice").unwrap();
    let held = ledger.balance(&escrow) as u64;
    let legs = vec![
        Transfer {
            id: TransferId(10),
            kind: TransferKind::Allocate,
            debit: escrow.clone(),
            credit: AccountName::parse("general-fund").unwrap(),
            amount: 1000,
        },
        Transfer {
            id: TransferId(11),
            kind: TransferKind::Allocate,
            debit: escrow,
            credit: AccountName::parse("operator:olga").unwrap(),
            amount: held - 1000,
        },
    ];
    blocks.push(append(&mut ledger, legs).unwrap().unwrap());
    let mut out = Vec::new();
    write_header_line(&ledger, &mut out).unwrap();
    for block in &blocks {
        write_block_line(block, &mut out).unwrap();
    }
    let lines = String::from_utf8(out).unwrap().lines().map(str::to_owned).collect();
    (ledger, lines)
}

fn verify(lines: &[String], key: Option<[u8; 32]>) -> Result<Ledger, ExportError> {
    read_export(lines.join("\n").as_bytes(), key)
}

#[test]
fn an_export_verifies_offline_to_the_same_balances() {
    let (ledger, lines) = exported_chain();
    let verified = verify(&lines, None).unwrap();
    assert_eq!(verified.balances(), ledger.balances());
    assert_eq!(verified.head(), ledger.head());
    assert_eq!(verify(&lines, Some(signer().public_key())).unwrap().height(), 4);
}

#[test]
fn a_chain_signed_by_another_key_fails_at_block_1() {
    let (_, mut lines) = exported_chain();
    let other = hex::encode(Signer::from_seed([8; 32]).public_key());
    lines[0] = lines[0].replace(&hex::encode(signer().public_key()), &other);
    let error = verify(&lines, Some(Signer::from_seed([8; 32]).public_key())).unwrap_err();
    assert_eq!(error.height(), Some(1));
    assert!(error.to_string().contains("signed by"), "{error}");
}

#[test]
fn changing_any_byte_of_any_block_is_detected_at_that_block() {
    let (_, lines) = exported_chain();
    for height in 1..lines.len() {
        let line = &lines[height];
        for at in 0..line.len() {
            let original = line.as_bytes()[at];
            let replacement = match original {
                b'0'..=b'8' => original + 1,
                b'9' => b'0',
                b'a'..=b'y' => original + 1,
                b'z' => b'a',
                _ => b'x',
            };
            let mut tampered = lines.clone();
            let mut bytes = line.clone().into_bytes();
            bytes[at] = replacement;
            tampered[height] = String::from_utf8_lossy(&bytes).into_owned();
            match verify(&tampered, None) {
                Ok(_) => panic!("byte {at} of block {height} changed to {:?} went unnoticed", replacement as char),
                Err(error) => assert_eq!(error.height(), Some(height as u64), "byte {at}: {error}"),
            }
        }
    }
}

#[test]
fn reordering_transfers_or_blocks_is_detected() {
    let (_, lines) = exported_chain();
    let swapped_transfers = lines[4].replacen("\"id\":\"0000000000000000000000000000000a\"", "\"id\":\"SWAP\"", 1);
    let swapped_transfers = swapped_transfers
        .replacen("\"id\":\"0000000000000000000000000000000b\"", "\"id\":\"0000000000000000000000000000000a\"", 1)
        .replacen("\"id\":\"SWAP\"", "\"id\":\"0000000000000000000000000000000b\"", 1);
    let mut tampered = lines.clone();
    tampered[4] = swapped_transfers;
    let error = verify(&tampered, None).unwrap_err();
    assert_eq!(error.height(), Some(4), "{error}");
    assert!(error.to_string().contains("Merkle"), "{error}");

    let mut tampered = lines.clone();
    tampered.swap(2, 3);
    let error = verify(&tampered, None).unwrap_err();
    assert!(error.to_string().contains("height 3 where 2 comes next"), "{error}");

    let mut tampered = lines.clone();
    tampered.remove(2);
    let error = verify(&tampered, None).unwrap_err();
    assert!(error.to_string().contains("height 3 where 2 comes next"), "{error}");
}
