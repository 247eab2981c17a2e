//! Level 4: a project's payout contract divides what the project keeps
//! among its contributors.
//!
//! The engine asks each project's contract once per period and checks that
//! the outputs add up to the input exactly; a contract that errs or does not
//! add up pays nothing, the amount stays in the project's account and the
//! failure is reported. An account listed more than once is paid the sum of
//! its entries, as one posting. The WebAssembly contracts implement this
//! same trait.

use commons_core::{Account, Micros};

/// Divides a project's kept amount among accounts.
pub trait PayoutContract {
    /// `amount` is what `project` keeps this period; the result lists who
    /// gets what and must sum to `amount`. Entries for the same account are
    /// added together.
    fn payout(&self, project: &str, amount: Micros) -> Result<Vec<(Account, Micros)>, ContractError>;
}

/// Why a contract produced no payout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The contract's own failure (a trap, fuel exhausted, a bad output).
    #[error("the payout contract failed: {0}")]
    Failed(String),
}

/// The default contract: everything to the project's own account.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProjectAccount;

impl PayoutContract for ProjectAccount {
    fn payout(&self, project: &str, amount: Micros) -> Result<Vec<(Account, Micros)>, ContractError> {
        Ok(vec![(Account::Project(project.to_owned()), amount)])
    }
}
