//! The shared vocabulary of OneCommons: amounts, basis points, periods, and
//! the two pieces of arithmetic every money path is built from.
//!
//! # Invariants
//! - Money is an integer: [`Micros`] (µCC, 10^-6 CommonCents) or [`Cents`]
//!   (the fiat currency's minor unit). There are no floats here.
//! - [`Bps`] is at most 10,000 by construction.
//! - [`cut`] and [`split`] conserve: what goes in comes out, to the unit.
//!
//! # Deliberately absent
//! No I/O, no clock, no entropy: [`SplitMix64`] is deterministic from a seed. The current period is chosen by the
//! caller ([`Period::parse`] or [`Period::from_days_since_epoch`]).

#![forbid(unsafe_code)]

mod account;
mod amount;
mod deployment;
mod period;
mod rng;
mod split;

pub use account::Account;
pub use amount::{Bps, BpsError, Cents, MICROS_PER_CC, Micros};
pub use deployment::DeploymentState;
pub use period::{Period, PeriodError, civil_from_days};
pub use rng::SplitMix64;
pub use split::{Splitter, cut, split};

/// How an API token is looked up and stored: the SHA-256 of the token, in
/// hex. Tokens themselves are shown once and never kept.
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
