//! The names of the accounts money is allocated to.

use std::fmt;

/// Who an amount belongs to. Displayed as `general-fund`, `provider:<id>`,
/// `operator:<id>`, `project:<id>` or `contributor:<project>/<id>`: one
/// spelling across the CLI, the JSON output and the ledger.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// Shared infrastructure: the general fund cut, unused escrow, and
    /// unclaimed amounts.
    GeneralFund,
    /// A cloud provider whose nodes ran sites.
    Provider(String),
    /// A site operator.
    Operator(String),
    /// A developer project's own account.
    Project(String),
    /// A contributor paid by a project's payout contract.
    Contributor { project: String, contributor: String },
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::GeneralFund => f.write_str("general-fund"),
            Account::Provider(id) => write!(f, "provider:{id}"),
            Account::Operator(id) => write!(f, "operator:{id}"),
            Account::Project(id) => write!(f, "project:{id}"),
            Account::Contributor { project, contributor } => write!(f, "contributor:{project}/{contributor}"),
        }
    }
}
