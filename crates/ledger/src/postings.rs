//! A settlement's postings as ledger transfers.
//!
//! Level 1 moves each subscriber's escrow into the general fund and into
//! site pools (`allocate`); levels 2 to 4 move pools on to other pools and
//! to holders (`distribute`). Ids derive from what a transfer means
//! (period, from, to, round), so recording a period again after a crash
//! repeats the same ids: retries are no-ops, never double counts.

use commons_core::Period;
use settlement::{Node, Posting};

use crate::model::{AccountName, AccountNameError, Transfer, TransferId, TransferKind};

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
    Ok(Transfer { id, kind, debit, credit, amount: posting.amount.get() })
}
