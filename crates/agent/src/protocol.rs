//! The agent protocol, version [`PROTOCOL_VERSION`]: what a joined node's
//! agent and the control listener say to each other. Wire types only; the
//! decisions behind them are `control`'s.
//!
//! - `POST /agent/v2/sync` (bearer: the node's join token), body
//!   [`SyncRequest`], answer [`SyncResponse`]: every half second.
//! - `GET /agent/v2/bundles/<id>` (same bearer): an app's bundle, fetched
//!   once per id (see [`crate::bundle`]).
//!
//! Version 1 (`/agent/v1/sync`) shipped every app's files, hex-encoded, on
//! every sync; it is refused with 410 and the version to use. A request
//! whose `protocol` is not this one is refused with 400.

use serde::{Deserialize, Serialize};

/// The protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest sync body either side accepts.
pub const SYNC_BYTES_MAX: usize = 1 << 20;
/// Instances, failures, usage rows or events in one sync, at most.
pub const SYNC_ITEMS_MAX: usize = 4096;
/// Longest event a node may report (what the history keeps of it).
pub const EVENT_BYTES_MAX: usize = 512;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReportedInstance {
    pub site: String,
    pub generation: u64,
    pub port: u16,
    pub healthy: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReportedFailure {
    pub site: String,
    pub generation: u64,
    pub detail: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReportedUsage {
    pub site: String,
    pub cpu_ms: u64,
    pub memory_mib_s: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub protocol: u32,
    pub instances: Vec<ReportedInstance>,
    pub failures: Vec<ReportedFailure>,
    pub usage: Vec<ReportedUsage>,
    /// What happened to running instances (restarts, and why), for the
    /// public history; absent is none.
    #[serde(default)]
    pub events: Vec<ReportedFailure>,
}

/// One instance to run: the app's manifest and the id of its bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WireAssignment {
    pub site: String,
    pub generation: u64,
    pub bundle: String,
    /// The site's own settings for this generation (its `[env]`, what its
    /// operator set, its secrets), over the pinned TLS link only.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncResponse {
    pub protocol: u32,
    pub node: String,
    pub env: Vec<(String, String)>,
    pub assignments: Vec<WireAssignment>,
    /// What of the sync was refused, and why: claims about what this node
    /// was not given, resource use it could not have had. Not to be sent
    /// again.
    #[serde(default)]
    pub refused: Vec<String>,
}

impl SyncRequest {
    /// Refuses a request of another version or with more than the limits.
    pub fn check(&self) -> Result<(), String> {
        if self.protocol != PROTOCOL_VERSION {
            return Err(format!(
                "agent protocol {} is not spoken here; this control plane speaks {PROTOCOL_VERSION}: run the same commons version on both machines",
                self.protocol
            ));
        }
        let longest = self.instances.len().max(self.failures.len()).max(self.usage.len()).max(self.events.len());
        if longest > SYNC_ITEMS_MAX {
            return Err(format!("a sync holds at most {SYNC_ITEMS_MAX} instances, failures, usage rows or events"));
        }
        if let Some(e) = self.events.iter().find(|e| e.detail.len() > EVENT_BYTES_MAX) {
            return Err(format!("an event of {} is longer than {EVENT_BYTES_MAX} bytes", e.site));
        }
        Ok(())
    }
}
