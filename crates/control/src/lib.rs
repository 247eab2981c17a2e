//! The control plane's decisions, as a pure function: what operators asked
//! for (desired state), what the node agents report (observed state) and
//! the time go in; actions come out.
//!
//! [`Control`] remembers only what it decided (which generation of each site
//! is published) and what it was told (each node's last report and when it
//! came). [`Control::decide`] turns that and the desired deployments into
//! [`Action`]s: publish a generation once every one of its nodes runs a
//! healthy instance of it, keep the routes to the live healthy instances
//! of what is published, fail a generation a node could not start (or that
//! found no outcome in [`PENDING_MAX_MS`]), move a silent node's sites
//! onto a live node with room ([`capacity`]), withdraw sites no longer
//! asked for. [`Control::assignments`] says what each node should run.
//!
//! # Invariants
//! - A site is published (and routed) only with instances whose node
//!   reported them healthy within [`NODE_TIMEOUT_MS`].
//! - A published generation stays assigned to its nodes until a newer one
//!   is published or the site is withdrawn: an update, or a failed one,
//!   never takes a running site down.
//! - Every generation asked for gets an outcome: published, or failed.
//! - A node is never booked beyond its capacity by a move.
//!
//! # Deliberately absent
//! No I/O, no clock, no threads: "now" is an argument, so any schedule can
//! be replayed from a seed (`tests/sim.rs`). Carrying actions out (the
//! store, the gateway, starting instances) is `platform`'s and `agent`'s.

#![forbid(unsafe_code)]

pub mod capacity;
mod decide;
mod model;

pub use decide::{Action, Control, NODE_TIMEOUT_MS, PENDING_MAX_MS, Publication};
pub use model::{Assignment, DeploymentSpec, DeploymentState, Failure, InstanceReport, NodeSpec, Report};
