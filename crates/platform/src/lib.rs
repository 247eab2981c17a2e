//! The composition root of OneCommons: [`Platform::start`] puts together
//! the store, the gateway, the metering log, the control plane and this
//! machine's node agents, and runs the loops that keep them in step.
//!
//! Each loop is its own task, so none waits for another: the registry is
//! followed every second, usage flushed every `flush_ms`, and the control
//! loop decides every half second (a deploy waiting for an app's health
//! runs in the agent's own task, never in the loop). The control listener
//! serves `/metrics`, `/healthz` and the agent protocol of joined nodes.
//!
//! # Invariants
//! - One owner of the store: a thread of its own ([`StoreHandle`]). No
//!   lock is held across an await and no database I/O runs on an async
//!   worker.
//! - Every action `control` decides is carried out, in order, before the
//!   agents are given their next assignments: a site is routed to a new
//!   generation before the old one's instances are told to stop.
//! - A site is published only with instances that answered their health
//!   check; a failed deploy changes nothing but the deployment's outcome
//!   and the history.
//!
//! # Deliberately absent
//! Argument parsing and printing (the `commons` binary's); decisions
//! (`control`'s); starting processes (`agent`'s and `runtime`'s).

#![forbid(unsafe_code)]

mod config;
mod control_api;
mod control_loop;
pub mod deploy;
pub mod hosts;
pub mod metered;
pub mod record;
mod registry;
mod sessions;
mod settings;
mod store_handle;
pub mod tls;
mod up;

pub use control_loop::{app_memory_mb, deployment_spec};
pub use settings::{Overrides, Settings};
pub use store_handle::StoreHandle;
pub use up::{Platform, wait_for_outcome};

/// An error that is the input's fault (a bad setting, a port taken):
/// `commons` exits with code 2 for it.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Milliseconds since the Unix epoch: block timestamps, history entries.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The month it is (UTC): who subscribed for it has the premium tier.
pub fn current_period() -> commons_core::Period {
    commons_core::Period::from_days_since_epoch((now_ms() / 86_400_000) as i64)
}
