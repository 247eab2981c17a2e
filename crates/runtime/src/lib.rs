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
//! # Invariants
//! - An instance gets traffic only after its health path answers.
//! - An app dies with the thread that started it (`PR_SET_PDEATHSIG`
//!   follows the forking *thread*): start instances from long-lived
//!   threads (Tokio's workers), never from `spawn_blocking`.
//! - Every instance runs as its own process group and is stopped as one.
//!
//! A control group per instance ([`Hierarchy`], [`Cgroup`]; cgroup v2, or
//! v1 where the machine has only that) caps memory, processes and CPU and
//! meters what every process of the app used, however it forked; it is
//! built and tested on its own, not yet used by [`Instance`].
//!
//! # Deliberately absent (so far)
//! Containers: processes, rlimits and cgroups are what every Linux machine
//! has; a Kubernetes backend comes later.

mod cgroup;
mod instance;
mod manifest;
mod sandbox;

pub use cgroup::{Cgroup, Hierarchy, Join, Limits, Version};

pub use instance::{
    DENIED_SYSCALLS, INHERITED_ENV, INHERITED_ENV_PREFIXES, INTERNAL_URL_ENV, Instance, InstanceError, InstanceSpec,
    ResourceUse, copy_dir, log_path, log_tail, probe,
};
pub use manifest::{Health, Manifest, ManifestError, Network, OSI_APPROVED, Resources, Tier, check_license, is_name};
pub use sandbox::{Confinement, SITE_UID_BASE, SITE_USERS_FILE, Sandbox, keep_files_private};
