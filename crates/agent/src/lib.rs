//! The node agent: carries out on one node what the control plane decided.
//!
//! A [`NodeAgent`] starts one instance per [`control::Assignment`] (in the
//! background: starting waits for the app's health), stops what is no
//! longer assigned (after a short drain, so requests in flight finish),
//! and reports what it runs, what failed and what its instances used. The
//! control plane's own machine drives one per local node in process; an
//! agent on another machine ([`remote::run`]) syncs with the control
//! listener over the versioned [`protocol`] (TLS, pinned: [`tls`]), and receives each app once per
//! generation as a content-addressed, compressed [`bundle`].
//!
//! # Invariants
//! - A node runs at most one instance per (site, generation), and only
//!   while it is assigned.
//! - A failure is reported once, with the generation it belongs to.
//! - What a stopped instance used is reported: usage is taken before it
//!   stops.
//! - Nothing from the network is trusted with memory or the filesystem:
//!   bodies are limited ([`client`]), bundles are checked against their id
//!   and unpacked only inside their directory.
//!
//! # Deliberately absent
//! Decisions: which node runs what, when to publish, where to move a site
//! are `control`'s. The store: this crate never sees it.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod client;
mod node;
pub mod protocol;
pub mod remote;
pub mod tls;

pub use node::{Event, InstanceLog, KEEP_STOPPED, NodeAgent, Reach, Source, Usage, newest_logs};
