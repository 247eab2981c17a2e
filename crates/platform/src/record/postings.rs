//! A settlement's postings as ledger transfers: the one place that knows
//! both vocabularies, so that `ledger` knows nothing about settlement and
//! `settlement` nothing about the ledger.
//!
//! Level 1 moves each subscriber's escrow into the general fund and into
//! site pools (`allocate`); levels 2 to 4 move pools on to other pools and
//! to holders (`distribute`). Ids derive from what a transfer means
//! (period, from, to, round), so recording a period again after a crash
//! repeats the same ids: retries are no-ops, never double counts.
//!
//! # Invariants
//! - One posting, one transfer, with the posting's amount; the id is a
//!   function of (period, debit, credit, round) alone. Two postings with the
//!   same (from, to, round) would share an id: the engine never makes them
//!   (level 1 merges a subscriber's postings per site, level 4 merges a
//!   contract's outputs per account).

use commons_core::Period;
use ledger::{AccountName, AccountNameError, Transfer, TransferId, TransferKind};
use settlement::{Node, Posting};

/// The ledger account of a settlement node in `period`.
pub fn account_of(period: Period, node: Node<'_>) -> Result<AccountName, AccountNameError> {
    match node {
        Node::Escrow { user } => AccountName::escrow(period, user),
        Node::SitePool { site } => AccountName::site_pool(period, site),
        Node::ProjectPool { project } => AccountName::project_pool(period, project),
        Node::Account(account) => AccountName::holder(account),
    }
}

/// The transfer that records `posting`.
pub fn transfer_for(period: Period, posting: &Posting<'_>) -> Result<Transfer, AccountNameError> {
    let debit = account_of(period, posting.from)?;
    let credit = account_of(period, posting.to)?;
    let kind =
        if matches!(posting.from, Node::Escrow { .. }) { TransferKind::Allocate } else { TransferKind::Distribute };
    let id = TransferId::derive(&[
        b"settle",
        debit.as_str().as_bytes(),
        credit.as_str().as_bytes(),
        &posting.round.to_le_bytes(),
    ]);
    let transfer = Transfer { id, kind, debit, credit, amount: posting.amount.get() };
    // The engine posts no zero amounts and only the movements these kinds allow.
    assert!(transfer.amount > 0, "a posting moves a positive amount");
    assert!(kind.allows(transfer.debit.kind(), transfer.credit.kind()), "a posting moves money a kind allows");
    Ok(transfer)
}
