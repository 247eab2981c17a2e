//! A period's usage, aggregated.

use std::collections::BTreeMap;

use commons_core::Period;

use crate::{Event, Insert, MinuteSet};

/// (period, user, site) of direct use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirectKey {
    pub period: Period,
    pub user: String,
    pub site: String,
}

/// (period, user, calling site, called service).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallKey {
    pub period: Period,
    pub user: String,
    pub site: String,
    pub service: String,
}

/// A user's direct use of a site in a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectUsage {
    pub minutes: MinuteSet,
    /// Direct requests answered: not a weight (minutes are), but what
    /// shows that every answered request was counted once.
    pub requests: u64,
    /// The site's own service time for the user.
    pub service_ms: u64,
}

/// Aggregated usage. Ordered maps, so that what is flushed or shown comes
/// out in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub direct: BTreeMap<DirectKey, DirectUsage>,
    pub calls: BTreeMap<CallKey, u64>,
    /// Events too late to count exactly (see [`crate::MINUTE_WINDOW`]).
    pub too_late: u64,
}

impl Usage {
    pub fn record(&mut self, event: &Event) {
        self.record_owned(event.clone());
    }

    /// [`Usage::record`], moving the event's ids into the aggregate instead
    /// of copying them.
    pub fn record_owned(&mut self, event: Event) {
        match event {
            Event::Direct { period, user, site, minute, service_ms } => {
                let key = DirectKey { period, user, site };
                let entry = self.direct.entry(key).or_default();
                if entry.minutes.insert(minute) == Insert::TooLate {
                    self.too_late += 1;
                }
                entry.requests += 1;
                entry.service_ms = entry.service_ms.saturating_add(service_ms);
            }
            Event::Call { period, user, site, service, minute, service_ms } => {
                // The caller's direct use in the call's minute: every call
                // row has the direct row of its user and site (docs/economics.md §2.5).
                let caller =
                    self.direct.entry(DirectKey { period, user: user.clone(), site: site.clone() }).or_default();
                if minute != 0 && caller.minutes.insert(minute) == Insert::TooLate {
                    self.too_late += 1;
                }
                let key = CallKey { period, user, site, service };
                let entry = self.calls.entry(key).or_default();
                *entry = entry.saturating_add(service_ms);
            }
        }
    }

    /// Adds `newer`, aggregated after this (a later flush).
    pub fn merge(&mut self, newer: &Usage) {
        for (key, usage) in &newer.direct {
            let entry = self.direct.entry(key.clone()).or_default();
            self.too_late += u64::from(entry.minutes.merge(&usage.minutes));
            entry.requests = entry.requests.saturating_add(usage.requests);
            entry.service_ms = entry.service_ms.saturating_add(usage.service_ms);
        }
        for (key, ms) in &newer.calls {
            let entry = self.calls.entry(key.clone()).or_default();
            *entry = entry.saturating_add(*ms);
        }
        self.too_late += newer.too_late;
    }

    pub fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.calls.is_empty()
    }
}
