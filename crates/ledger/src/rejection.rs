//! [`Rejection`]: why the ledger refuses a batch or a block, one variant per
//! rule, so that a test can name the rule it breaks.

use commons_core::Period;

use crate::model::{AccountName, TransferId};

/// Most transfers in one block (one atomic batch).
pub const MAX_TRANSFERS_PER_BLOCK: usize = 1 << 24;

/// Why a batch or block is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("a batch must hold between 1 and {MAX_TRANSFERS_PER_BLOCK} transfers, not {0}")]
    BatchSize(usize),
    #[error("height {found} where {expected} comes next")]
    Height { expected: u64, found: u64 },
    #[error("the previous-block hash does not match block {0}")]
    BrokenLink(u64),
    /// Block 1 links neither to the header's hash nor, as blocks sealed
    /// before header binding do, to zeros.
    #[error(
        "block 1 does not commit to this header (currency, initial price, signer): its previous-block hash is not the header's hash"
    )]
    HeaderNotBound,
    #[error("the Merkle root does not match the transfers")]
    MerkleRoot,
    #[error("the header says {header} transfers, the block holds {actual}")]
    TransferCount { header: u32, actual: usize },
    #[error("signed by {found}, not by the ledger's key {expected}")]
    WrongSigner { expected: String, found: String },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("transfer {0} appears twice")]
    DuplicateId(TransferId),
    #[error("transfer {0} was recorded before with different content")]
    IdReused(TransferId),
    #[error(
        "some of the batch's transfers were recorded before and some were not: a batch is applied whole or not at all"
    )]
    PartlyRecorded,
    #[error("transfer {id}: {kind} cannot move from {debit} to {credit}")]
    KindNotAllowed { id: TransferId, kind: &'static str, debit: AccountName, credit: AccountName },
    #[error("transfer {0}: the amount is zero")]
    ZeroAmount(TransferId),
    #[error("transfer {id}: escrow and pool accounts of different periods ({debit} to {credit})")]
    MixedPeriods { id: TransferId, debit: AccountName, credit: AccountName },
    #[error("account {account} would end at {balance}, and only world and issuance may go negative")]
    Negative { account: AccountName, balance: i128 },
    #[error("{account} paid out {paid} but held {held}: settlement must move exactly what an escrow or pool holds")]
    NotEmptied { account: AccountName, paid: u128, held: i128 },
    #[error("period {0} is settled already")]
    PeriodSettled(Period),
    #[error(
        "NAV would fall: reserve {reserve_after} cents for {supply_after} µCC, after {reserve_before} cents for {supply_before} µCC"
    )]
    Underbacked { reserve_before: u64, supply_before: u64, reserve_after: u64, supply_after: u64 },
    #[error("a balance would exceed the ledger's range")]
    Overflow,
}
