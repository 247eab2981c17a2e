//! The app runtime: manifests ([`Manifest`]) and supervised instances
//! ([`Instance`]) — what a node agent does on a provider's machine.
//!
//! An instance is installed into its own directory (the app's files copied,
//! its install steps run there) and run, with its install steps, confined
//! ([`Confinement`]; the `sandbox` module says how): as its site's own
//! user, in namespaces of its own, with `no_new_privs` and a seccomp
//! filter, in a control group of its own ([`Cgroup`]; cgroup v2, or v1
//! where the machine has only that) that caps its resident memory,
//! processes and CPU and meters what every process of it used, however it
//! forked. It listens on `$PORT` inside its own network namespace; it
//! gets traffic only once its health path answers, is started again with
//! backoff when it dies (an OOM kill said so in its log), and is stopped
//! with SIGTERM then SIGKILL. It reaches the platform's internal listener
//! on its own loopback, and the outside network only through its
//! [`egress`] proxy (`HTTPS_PROXY`), which refuses this machine, its
//! private networks and cloud metadata endpoints ([`Policy::outside`]).
//!
//! # Invariants
//! - An instance gets traffic only after its health path answers.
//! - An app dies with the thread that started it (`PR_SET_PDEATHSIG`
//!   follows the forking *thread*): start instances from long-lived
//!   threads (Tokio's workers), never from `spawn_blocking`.
//! - A confined instance's every process is in its control group from
//!   before its first instruction (joined between fork and exec), and
//!   "stopped" means that group is empty.
//! - The egress proxy connects only to addresses its policy allows, checked
//!   after resolving and never resolved again.
//!
//! # Deliberately absent (so far)
//! Containers: namespaces and cgroups are what every Linux machine has; a
//! container engine (Docker, Swarm) behind the same `Instance` interface
//! comes later.

mod cgroup;
pub mod egress;
mod instance;
mod manifest;
mod sandbox;
mod seccomp;

pub use cgroup::{Cgroup, Hierarchy, Join, Limits, Version};
pub use egress::{Policy, serve as serve_egress};
pub use instance::{
    INHERITED_ENV, INHERITED_ENV_PREFIXES, INTERNAL_URL_ENV, Instance, InstanceError, InstanceSpec, ResourceUse,
    STATE_DIR_ENV, copy_dir, log_path, log_tail, probe, read_end,
};
pub use manifest::{
    Auth, ENV_ENTRIES_MAX, ENV_VALUE_BYTES_MAX, EnvValue, Health, Interpreter, Manifest, ManifestError, Network,
    Resources, Tier, check_env_name, check_license, is_name, is_version,
};
pub use sandbox::{Confinement, SITE_UID_BASE, SITE_USERS_FILE, Sandbox, keep_files_private};
pub use seccomp::DENIED_SYSCALLS;
