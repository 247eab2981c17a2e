//! What goes into the control plane's decisions: the nodes, the desired
//! deployments, and the agents' reports.

use std::net::SocketAddr;

pub use commons_core::DeploymentState;

/// A machine a provider contributes, as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: String,
    pub provider: String,
    pub capacity_mb: u64,
    /// Served by an agent on another machine; else by the control plane's own.
    pub remote: bool,
}

/// A site as its operator wants it deployed: the latest request only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentSpec {
    pub site: String,
    /// Bumped by every request; each one gets its own outcome.
    pub generation: u64,
    /// Each node runs one instance; all on this machine or all joined.
    pub nodes: Vec<String>,
    /// What one instance may use (the manifest's `resources.memory_mb`).
    pub memory_mb: u64,
    pub state: DeploymentState,
}

/// An instance a node runs, as its agent reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceReport {
    pub site: String,
    pub generation: u64,
    pub addr: SocketAddr,
    pub healthy: bool,
}

/// A generation a node could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub site: String,
    pub generation: u64,
    pub detail: String,
}

/// One node agent's report: everything it runs now, and what failed since
/// its last report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub instances: Vec<InstanceReport>,
    pub failures: Vec<Failure>,
}

/// What a node should run: one instance of this generation of this site.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Assignment {
    pub site: String,
    pub generation: u64,
}
