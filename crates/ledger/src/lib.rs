//! The append-only, hash-chained record of every CommonCents movement.
//!
//! A ledger is a sequence of blocks; each block stores the hash of the one
//! before it, the Merkle root of its transfers, and the signature of the
//! node that sealed it, so agreeing on the head means agreeing on all
//! history, and anyone holding an export can check it offline.
//!
//! One code path checks everything: [`Block::check`] checks what a block
//! says about itself (count, Merkle root, signature), then
//! [`Ledger::apply`] checks it against the chain and the balances and
//! applies it whole, or refuses it with the exact reason. Appending a batch
//! seals a block and applies it; reading the store back applies every
//! stored block again; `commons ledger verify` applies an export's blocks
//! to an empty ledger (checking blocks on their own on every core).
//!
//! # Invariants (checked by `apply`, in every build profile)
//! - Heights count up from 1; each block links to the previous block's hash,
//!   and block 1 to the hash of the ledger's header (currency, initial
//!   price, signer), so its signature binds them (a chain begun before
//!   that links to zeros, and says so: [`Ledger::header_bound`]); the
//!   Merkle root and the ed25519 signature match.
//! - Double entry: each transfer moves one asset from one account to another,
//!   so per asset the balances of all accounts sum to zero.
//! - Only the `world` (fiat) and `issuance` (CC) accounts go negative.
//! - Transfer ids are unique across the whole chain.
//! - Full backing: after every block, NAV (reserve ÷ supply) is at least
//!   what it was before (at the start: the initial price), so the reserve
//!   always covers NAV × supply.
//! - Settlement conserves: an escrow or pool account a block pays out of is
//!   empty at the end of that block, and a period is settled only once.
//!
//! Checking refuses a block that breaks a rule with a [`Rejection`];
//! committing it then asserts the same invariants again (next height,
//! double entry per asset, no forbidden negative balance, unique ids, NAV
//! from the reserve and issuance balances), and custody asserts that a
//! payment or redemption conserves cash and does not lower NAV. A failed
//! assertion is a bug in this crate, never bad input. Every limit a cast
//! relies on is asserted at compile time.
//!
//! # Deliberately absent
//! No I/O and no clock: timestamps arrive as arguments, the signing key is
//! given by the caller, storage lives in the `store` crate. No knowledge of
//! settlement: whoever records a period turns its postings into transfers.

#![forbid(unsafe_code)]

mod block;
mod custody;
mod encoding;
mod export;
mod ledger;
mod model;
mod rejection;

pub use block::{Block, BlockHeader, CheckedBlock, Hash, MAX_TRANSFERS_PER_BLOCK, Signer};
pub use custody::{CustodyError, payment, redemption};
pub use export::{
    ExportError, ExportHeader, FORMAT, FORMAT_UNBOUND, HeadMismatch, read_block_line, read_export, write_block_line,
    write_header_line,
};
pub use ledger::{AppendOutcome, Ledger, LedgerConfig, LedgerError, Nav, TransferLocation, is_currency_code};
pub use model::{AccountKind, AccountName, AccountNameError, Asset, Transfer, TransferId, TransferKind};
pub use rejection::Rejection;
