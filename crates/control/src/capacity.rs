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

/// What a node is, for bounding its resource reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeBound {
    pub cores: u64,
    pub capacity_mb: u64,
    /// Where its next report's window starts (wall clock, ms): the end of
    /// what its last accepted report was credited for, else its first sync.
    pub since_ms: u64,
    /// When the current period began (wall clock, ms): a report is recorded
    /// in the current period, so it covers no time before it.
    pub period_start_ms: u64,
}

/// One site's part of a resource report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteClaim {
    pub site: String,
    /// When the site was first given to the node in its current stay there
    /// (wall clock, ms): it ran nothing of the site before.
    pub given_since_ms: u64,
    /// The memory booked for the site on the node (MiB): all it may hold.
    pub booked_mb: u64,
    pub cpu_ms: u64,
    pub memory_mib_s: u64,
}

/// Checks a node's resource report at `wall_ms` against what it could
/// physically have used, and says until when an accepted one is credited.
///
/// Each site's window starts at the latest of the node's `since_ms`, the
/// period's start and when the site was given to the node, and ends at
/// `wall_ms` + [`USAGE_SLACK_MS`]: its CPU is at most the node's cores over
/// it, its memory at most its booking over it. The node's sums are at most
/// its cores and its capacity over the window from the earliest site's
/// start. Ok: the time the next report's window starts, the end of the
/// time the report accounts for at the rates it is bounded by (at least
/// `wall_ms`), so neither the slack nor a window is credited twice.
/// Err: why it is not believed, one line per site (a report is taken
/// whole or not at all).
pub fn check_usage(node: &NodeBound, claims: &[SiteClaim], wall_ms: u64) -> Result<u64, Vec<String>> {
    let end = wall_ms.saturating_add(USAGE_SLACK_MS);
    let node_start = node.since_ms.max(node.period_start_ms);
    // What `amount` at `rate` per second (×1000: per ms) accounts for,
    // from `start`: the end of that time, and whether it fits before `end`.
    let credit = |start: u64, amount: u64, rate_per_s: u64, per_ms: bool| -> (u64, bool) {
        let window = end.saturating_sub(start);
        let max = if per_ms { rate_per_s.saturating_mul(window) } else { rate_per_s.saturating_mul(window) / 1000 };
        if amount == 0 {
            return (start, true);
        }
        if amount > max || rate_per_s == 0 {
            return (end, false);
        }
        let ms = if per_ms { amount.div_ceil(rate_per_s) } else { amount.saturating_mul(1000).div_ceil(rate_per_s) };
        (start.saturating_add(ms).min(end), true)
    };
    let mut until = wall_ms;
    let (mut refused, mut believed) = (Vec::new(), Vec::new());
    let mut earliest = u64::MAX;
    for c in claims {
        let start = node_start.max(c.given_since_ms);
        earliest = earliest.min(start);
        let (cpu_until, cpu_ok) = credit(start, c.cpu_ms, node.cores, true);
        let (memory_until, memory_ok) = credit(start, c.memory_mib_s, c.booked_mb, false);
        if cpu_ok && memory_ok {
            until = until.max(cpu_until).max(memory_until);
            believed.push(format!("resource use of {}: refused with the rest of this report", c.site));
        } else {
            refused.push(format!(
                "resource use of {}: {} CPU ms and {} MiB·s is more than {} cores and its booked {} MiB could use since the last accepted report or since it was given to this node in this period (at most {} ms and {} MiB·s)",
                c.site,
                c.cpu_ms,
                c.memory_mib_s,
                node.cores,
                c.booked_mb,
                node.cores.saturating_mul(end.saturating_sub(start)),
                c.booked_mb.saturating_mul(end.saturating_sub(start)) / 1000,
            ));
        }
    }
    if !refused.is_empty() {
        refused.extend(believed);
        return Err(refused);
    }
    let cpu = claims.iter().map(|c| c.cpu_ms).fold(0, u64::saturating_add);
    let memory = claims.iter().map(|c| c.memory_mib_s).fold(0, u64::saturating_add);
    let start = node_start.max(earliest.min(end));
    let (cpu_until, cpu_ok) = credit(start, cpu, node.cores, true);
    let (memory_until, memory_ok) = credit(start, memory, node.capacity_mb, false);
    if !(cpu_ok && memory_ok) {
        let window = end.saturating_sub(start);
        let (cpu_max, memory_max) = (node.cores.saturating_mul(window), node.capacity_mb.saturating_mul(window) / 1000);
        return Err(claims
            .iter()
            .map(|c| {
                format!(
                    "resource use of {}: {cpu} CPU ms and {memory} MiB·s in all is more than {} cores and {} MiB could use since the last accepted report (at most {cpu_max} ms and {memory_max} MiB·s)",
                    c.site, node.cores, node.capacity_mb
                )
            })
            .collect());
    }
    Ok(until.max(cpu_until).max(memory_until))
}
