//! Counters the gateway keeps, in the Prometheus text format.
//!
//! # Invariants
//! - Labels are bounded: status classes, listeners, workers, reasons.
//!
//! # Deliberately absent
//! Per-site or per-user series: their number has no bound.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::provenance::ProvenanceError;

/// Request and metering counters; bounded labels only.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Answers by status class: 1xx..5xx.
    responses: [AtomicU64; 5],
    /// Usage events written to the log.
    metered: AtomicU64,
    /// Requests refused because usage could not be written.
    metering_failures: AtomicU64,
    /// Internal calls refused: missing, forged, expired, replayed.
    provenance_refused: [AtomicU64; 4],
    /// Password checks: failed, succeeded.
    logins: [AtomicU64; 2],
    /// The listeners being served, for their connections per worker.
    listeners: Mutex<Vec<Weak<OpenConnections>>>,
}

/// The connections each worker of a listener serves: counted by the
/// server as it places them, read here.
#[derive(Debug)]
pub(crate) struct OpenConnections {
    listener: &'static str,
    open: Vec<AtomicUsize>,
}

impl OpenConnections {
    pub(crate) fn new(listener: &'static str, workers: usize) -> OpenConnections {
        OpenConnections { listener, open: (0..workers).map(|_| AtomicUsize::new(0)).collect() }
    }

    pub(crate) fn workers(&self) -> usize {
        self.open.len()
    }

    pub(crate) fn of(&self, worker: usize) -> usize {
        self.open[worker].load(Ordering::Relaxed)
    }

    pub(crate) fn opened(&self, worker: usize) {
        self.open[worker].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, worker: usize) {
        self.open[worker].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn metered(&self) {
        self.metered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn provenance_refused(&self, error: ProvenanceError) {
        let i = match error {
            ProvenanceError::Missing => 0,
            ProvenanceError::Forged => 1,
            ProvenanceError::Expired => 2,
            ProvenanceError::Replayed => 3,
        };
        self.provenance_refused[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn login(&self, succeeded: bool) {
        self.logins[usize::from(succeeded)].fetch_add(1, Ordering::Relaxed);
    }

    /// Shows `open` for as long as its listener serves.
    pub(crate) fn add_listener(&self, open: &Arc<OpenConnections>) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.retain(|b| b.strong_count() > 0);
        listeners.push(Arc::downgrade(open));
    }

    pub(crate) fn metering_failure(&self) {
        self.metering_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP commons_gateway_responses_total Answers sent, by status class.\n");
        out.push_str("# TYPE commons_gateway_responses_total counter\n");
        for (i, count) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "commons_gateway_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                count.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP commons_metering_events_total Usage events written to the write-ahead log.\n");
        out.push_str("# TYPE commons_metering_events_total counter\n");
        let _ = writeln!(out, "commons_metering_events_total {}", self.metered.load(Ordering::Relaxed));
        out.push_str("# HELP commons_metering_failures_total Requests refused because usage could not be recorded.\n");
        out.push_str("# TYPE commons_metering_failures_total counter\n");
        let _ = writeln!(out, "commons_metering_failures_total {}", self.metering_failures.load(Ordering::Relaxed));
        out.push_str("# HELP commons_provenance_refused_total Internal calls refused, by reason; never attributed.\n");
        out.push_str("# TYPE commons_provenance_refused_total counter\n");
        for (reason, count) in ["missing", "forged", "expired", "replayed"].iter().zip(&self.provenance_refused) {
            let _ = writeln!(
                out,
                "commons_provenance_refused_total{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP commons_gateway_open_connections Client connections open, by listener and worker.\n");
        out.push_str("# TYPE commons_gateway_open_connections gauge\n");
        for listener in self.listeners.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade) {
            for worker in 0..listener.workers() {
                let open = listener.of(worker);
                let listener = listener.listener;
                let _ = writeln!(
                    out,
                    "commons_gateway_open_connections{{listener=\"{listener}\",worker=\"{worker}\"}} {open}"
                );
            }
        }
        out.push_str("# HELP commons_logins_total Password checks on the login page, by outcome.\n");
        out.push_str("# TYPE commons_logins_total counter\n");
        for (outcome, count) in ["failed", "succeeded"].iter().zip(&self.logins) {
            let _ = writeln!(out, "commons_logins_total{{outcome=\"{outcome}\"}} {}", count.load(Ordering::Relaxed));
        }
        out
    }
}
