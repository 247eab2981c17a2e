//! Capacity accounting: what a node's memory leaves after the deployments
//! booked on it. The same rule refuses a deploy (`commons deploy`) and
//! chooses where a silent node's sites move.

use crate::model::{DeploymentSpec, NodeSpec};

/// The memory `node` has left after every deployment that names it, `except`
/// the one of that site (a site's update replaces its own booking).
pub fn free_memory_mb(node: &NodeSpec, deployments: &[DeploymentSpec], except: Option<&str>) -> u64 {
    let booked: u64 = deployments
        .iter()
        .filter(|d| Some(d.site.as_str()) != except && d.nodes.contains(&node.id))
        .map(|d| d.memory_mb)
        // saturating: a sum past u64 books the node full, which is right.
        .fold(0u64, u64::saturating_add);
    node.capacity_mb.saturating_sub(booked)
}

/// The memory booked on `node`, for checking that nothing overbooks it.
pub fn booked_mb(node: &NodeSpec, deployments: &[DeploymentSpec]) -> u64 {
    deployments.iter().filter(|d| d.nodes.contains(&node.id)).map(|d| d.memory_mb).fold(0, u64::saturating_add)
}

/// Slack on a resource report's window: clocks and sampling are not exact.
pub const USAGE_SLACK_MS: u64 = 5_000;

/// The most a node of `cores` cores and `capacity_mb` MiB could have used
/// in `window_ms` of wall time (plus [`USAGE_SLACK_MS`]): CPU milliseconds
/// and MiB·s. A report over either is not believed.
pub fn usage_bound(cores: u64, capacity_mb: u64, window_ms: u64) -> (u64, u64) {
    let window = window_ms.saturating_add(USAGE_SLACK_MS);
    (cores.saturating_mul(window), capacity_mb.saturating_mul(window) / 1000)
}
