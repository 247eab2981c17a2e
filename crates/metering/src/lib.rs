//! Usage metering: what splits each subscription, measured exactly and
//! kept safe from crashes.
//!
//! - [`MinuteSet`] counts *distinct* minutes with at least one direct
//!   request, so an app that multiplies its requests gains nothing.
//! - [`Usage`] aggregates events per (period, user, site) and per (period,
//!   user, site, called service), and merges exactly with another
//!   aggregate (a flushed one, a recovered one).
//! - [`wal`] writes every event to a write-ahead log before the request it
//!   belongs to is answered, and replays the log after a crash from the
//!   checkpoint that the store last recorded, so nothing answered is lost
//!   and nothing is counted twice.
//!
//! # Invariants
//! - An answered request's event is in the log before its answer leaves.
//! - A flushed aggregate is recorded with the checkpoint that excludes its
//!   events from replay: nothing is lost, nothing counted twice.
//! - Aggregates merge exactly: merging in any order gives the same totals.
//!
//! # Deliberately absent
//! No clock (events carry their minute), no sockets, no database: the
//! gateway records, the store keeps flushed aggregates and checkpoints.

mod event;
mod meter;
mod minutes;
mod usage;
pub mod wal;

pub use event::{Event, EventError};
pub use meter::{Flush, Meter, SHARDS_MAX};
pub use minutes::{Insert, MINUTE_WINDOW, MinuteSet};
pub use usage::{CallKey, DirectKey, DirectUsage, Usage};
