//! What verifying an export proves, attacked: a signed export's header
//! cannot be changed, a truncated export does not reach the published head,
//! and a trusted signer the export does not name is refused at its header.

use commons_core::{Bps, Period};
use ledger::{AppendOutcome, Ledger, LedgerConfig, Signer, payment, read_export, write_block_line, write_header_line};

fn signer() -> Signer {
    Signer::from_seed([7; 32])
}

/// An export of three payments, and the ledger that wrote it.
fn export() -> (Ledger, String) {
    let mut ledger =
        Ledger::new(LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer().public_key() });
    let mut out = Vec::new();
    write_header_line(&ledger, &mut out).unwrap();
    for user in ["alice", "bob", "carol"] {
        let period = Period::parse("2026-11").unwrap();
        let (batch, _) = payment(&ledger.nav(), period, user, 1000, Bps::new(100).unwrap(), user.as_bytes()).unwrap();
        let AppendOutcome::Sealed(block) = ledger.prepare(batch, 1_700_000_000_000, &signer()).unwrap() else {
            panic!("a new payment is sealed")
        };
        ledger.apply(&block).unwrap();
        write_block_line(block.block(), &mut out).unwrap();
    }
    (ledger, String::from_utf8(out).unwrap())
}

fn verify(text: &str, signer: Option<[u8; 32]>) -> Result<Ledger, String> {
    read_export(text.as_bytes(), signer).map_err(|e| format!("{e} (height {:?})", e.height()))
}

#[test]
fn an_export_written_today_commits_to_its_header() {
    let (_, text) = export();
    assert!(verify(&text, Some(signer().public_key())).unwrap().header_bound());
}

#[test]
fn changing_the_currency_of_a_signed_export_fails_at_block_1() {
    let (_, text) = export();
    let changed = text.replacen("\"currency\":\"USD\"", "\"currency\":\"EUR\"", 1);
    assert_ne!(changed, text);
    let error = verify(&changed, Some(signer().public_key())).unwrap_err();
    assert!(error.contains("block 1 does not commit to this header") && error.contains("Some(1)"), "{error}");
}

#[test]
fn changing_the_initial_price_of_a_signed_export_fails_at_block_1() {
    let (_, text) = export();
    let changed = text.replacen("\"initial_cents_per_cc\":100", "\"initial_cents_per_cc\":99", 1);
    assert_ne!(changed, text);
    let error = verify(&changed, Some(signer().public_key())).unwrap_err();
    assert!(error.contains("block 1 does not commit to this header"), "{error}");
}

#[test]
fn a_signed_export_cannot_pass_for_one_written_before_header_binding() {
    let (_, text) = export();
    let changed = text.replacen("onecommons-ledger/2", "onecommons-ledger/1", 1);
    assert_ne!(changed, text);
    let error = verify(&changed, Some(signer().public_key())).unwrap_err();
    assert!(error.contains("format onecommons-ledger/1 has block 1 link to zeros"), "{error}");
}

#[test]
fn an_export_written_before_header_binding_verifies_and_says_its_header_is_not_bound() {
    let legacy = include_str!("data/legacy-v1.jsonl");
    let ledger = verify(legacy, Some(signer().public_key())).unwrap();
    assert_eq!((ledger.height(), ledger.header_bound()), (2, false));
    // Its header is what it says, unproven: changing it goes unnoticed,
    // which is why `header_bound` says so.
    let changed = legacy.replacen("\"currency\":\"USD\"", "\"currency\":\"EUR\"", 1);
    assert!(!verify(&changed, None).unwrap().header_bound());
}

#[test]
fn a_trusted_signer_the_header_does_not_name_is_refused_at_the_header() {
    let (_, text) = export();
    let other = Signer::from_seed([8; 32]).public_key();
    let error = verify(&text, Some(other)).unwrap_err();
    let expected = format!(
        "line 1: the export names signer {}, not the trusted signer {}",
        hex::encode(signer().public_key()),
        hex::encode(other)
    );
    assert!(error.starts_with(&expected), "{error}");
}

#[test]
fn the_published_head_is_checked_and_a_truncated_export_falls_short_of_it() {
    let (ledger, text) = export();
    let published = ledger.head();
    assert_eq!(verify(&text, None).unwrap().check_head(&published), Ok(3));

    let truncated: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    let short = verify(&truncated, None).unwrap();
    let error = short.check_head(&published).unwrap_err().to_string();
    let expected = format!(
        "the export ends at height 2, hash {}; the published head {} is not in it",
        hex::encode(short.head()),
        hex::encode(published)
    );
    assert_eq!(error, expected);

    // A head the export passes before its end is found, with its height.
    let earlier = short.head();
    let error = verify(&text, None).unwrap().check_head(&earlier).unwrap_err().to_string();
    let expected = format!(
        "the export ends at height 3, hash {}; the published head {} is at height 2",
        hex::encode(published),
        hex::encode(earlier)
    );
    assert_eq!(error, expected);
}
