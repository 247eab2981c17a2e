//! The settlement engine: turns one period's subscriptions and usage into
//! exact CommonCents allocations, by the four levels of docs/economics.md §4.
//!
//! - Level 1, per subscriber: general fund cut, then the rest by the
//!   subscriber's own active minutes among the sites they used, then each
//!   site's part between the site and the services it called for them.
//! - Level 2, per site, on period totals: provider cut, developer cut, the
//!   operator keeps the rest.
//! - Level 3, per project: dependency flow in rounds.
//! - Level 4, per project: the payout contract divides what it keeps.
//!
//! Inputs are built and validated by [`Params::new`], [`Registry::new`] and
//! [`ActivityBuilder`]; [`settle`] is then a pure function of them.
//!
//! # Invariants
//! - Conservation: Σ allocations == Σ minted escrow, to the µCC. [`settle`]
//!   asserts it in every build profile.
//! - Termination: dependency flow takes at most [`DEPENDENCY_ROUNDS_MAX`]
//!   rounds on any graph, asserted inside the loop with the shrinking of
//!   the amount in flight that proves it.
//! - Postings are unique per (from, to, round): a payout contract's outputs
//!   to one account are merged into one.
//! - Determinism: the result depends on the inputs' content, never on the
//!   order entries were given in. Sites, projects, providers and dependencies
//!   are held in id order, so "ties by id" is "ties by index".
//!
//! # Deliberately absent
//! No I/O, no clock, no floats, no threads.

#![forbid(unsafe_code)]

mod activity;
mod engine;
mod params;
mod payout;
mod registry;

pub use activity::{
    Activity, ActivityBuilder, ActivityError, ActivityProblem, CallRow, ROWS_MAX, SubscriberIx, UsageRow,
};
pub use engine::{
    ContractFailure, DEPENDENCY_ROUNDS_MAX, Node, Posting, Settlement, SubscriberAllocation, allocate_subscriber,
    settle, settle_journaled,
};
pub use params::{PASS_BPS_MAX, ParamError, Params, ParamsSpec};
pub use payout::{ContractError, PayoutContract, ProjectAccount};
pub use registry::{
    DepSpec, Entry, Project, ProjectIx, ProjectSpec, ProviderSpec, Registry, RegistryError, RegistryProblem, Site,
    SiteIx, SiteSpec,
};
