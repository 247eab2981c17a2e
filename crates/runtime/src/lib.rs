//! The app runtime: manifests ([`Manifest`]) and supervised instances
//! ([`Instance`]) — what a node agent does on a provider's machine.
//!
//! An instance is installed into its own directory (the app's files copied,
//! its install steps run there), started as its own process group with
//! `$PORT` and the OS limits its manifest asks for (address space, open
//! files), checked on its health path before it gets traffic, started again
//! with backoff when it dies, stopped with SIGTERM then SIGKILL, and
//! metered: CPU time and resident memory of its processes, sampled each
//! second from /proc, which become the provider split of a site.
//!
//! An app reaches the outside network only through its [`egress`] proxy
//! (`HTTPS_PROXY`), which refuses this machine, its private networks and
//! cloud metadata endpoints ([`Policy::outside`]).
//!
//! # Invariants
//! - An instance gets traffic only after its health path answers.
//! - An app dies with the thread that started it (`PR_SET_PDEATHSIG`
//!   follows the forking *thread*): start instances from long-lived
//!   threads (Tokio's workers), never from `spawn_blocking`.
//! - Every instance runs as its own process group and is stopped as one.
//! - The egress proxy connects only to addresses its policy allows, checked
//!   after resolving and never resolved again.
//!
//! # Deliberately absent (so far)
//! Containers and cgroups: processes and rlimits are what every Linux
//! machine has; a Kubernetes backend comes later.

pub mod egress;
mod instance;
mod manifest;

pub use egress::{Policy, serve as serve_egress};

pub use instance::{
    INHERITED_ENV, INHERITED_ENV_PREFIXES, Instance, InstanceError, InstanceSpec, ResourceUse, copy_dir, log_path,
    log_tail, probe,
};
pub use manifest::{Health, Manifest, ManifestError, OSI_APPROVED, Resources, Tier, check_license, is_name};
