//! A period's subscriptions and usage, grouped per subscriber for level 1.
//!
//! Built with [`ActivityBuilder`]: subscriptions first (each mints escrow),
//! then usage rows and the calls sites made on subscribers' behalf, both in
//! bulk so that callers can parse in parallel. Usage by people without a
//! subscription allocates nothing, so callers leave it out.
//!
//! # Invariants
//! - One subscription per user; one usage row per (user, site); one call
//!   row per (user, site, service); every call belongs to a usage row of the
//!   same user and site; no site calls itself.
//! - Σ escrow fits in a `u64`: every later sum of µCC is bounded by it.
//! - Each subscriber's rows are in ascending site order and each row's calls
//!   in ascending service order, whatever the order they were added in.

use commons_core::{Cents, Micros};
use compact_str::CompactString;
use std::collections::hash_map::Entry;

use foldhash::HashMap;

use crate::{Params, SiteIx};

/// Most usage or call rows one period may hold (positions are `u32`).
pub const ROWS_MAX: usize = u32::MAX as usize - 1;

// A position, and the end offset one past the last, fit in a u32.
const _: () = assert!(ROWS_MAX < u32::MAX as usize);

/// A subscriber's position in an [`Activity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberIx(u32);

impl SubscriberIx {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One subscriber's direct use of one site in the period.
#[derive(Clone, Copy, Debug)]
pub struct UsageRow {
    pub user: SubscriberIx,
    pub site: SiteIx,
    /// Distinct minutes with at least one direct request: the usage weight.
    pub active_minutes: u64,
    /// The site's own service time for this user, weighing it against the
    /// services it called.
    pub service_ms: u64,
    /// The caller's mark for this row (a byte offset, a line), returned in
    /// errors about it.
    pub tag: u64,
}

/// Service time a site spent calling another service for a subscriber.
#[derive(Clone, Copy, Debug)]
pub struct CallRow {
    pub user: SubscriberIx,
    pub site: SiteIx,
    pub service: SiteIx,
    pub ms: u64,
    pub tag: u64,
}

/// An input row that breaks a rule, by the tag it was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct ActivityError {
    pub tag: u64,
    pub problem: ActivityProblem,
}

/// What is wrong with an input row.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActivityProblem {
    /// A subscription with an empty user id.
    #[error("the user id is empty")]
    EmptyUser,
    /// A second subscription for the same user.
    #[error("user {0:?} has a subscription already")]
    DuplicateSubscription(String),
    /// Escrow that would not fit in 64 bits of µCC.
    #[error("the CommonCents minted for this period would overflow 64 bits")]
    MintOverflow,
    /// A second usage row for the same (user, site).
    #[error("usage of site {site:?} by user {user:?} is given twice")]
    DuplicateUsage { user: String, site: String },
    /// A second call row for the same (user, site, service).
    #[error("calls from site {site:?} to {service:?} for user {user:?} are given twice")]
    DuplicateCall { user: String, site: String, service: String },
    /// A call with no usage row of the same user and site.
    #[error("site {site:?} called a service for user {user:?}, who has no usage of that site")]
    CallWithoutUsage { user: String, site: String },
    /// A site listed as calling itself.
    #[error("site {0:?} cannot call itself")]
    SelfCall(String),
    /// More rows than [`ROWS_MAX`].
    #[error("more than {ROWS_MAX} rows")]
    TooManyRows,
}

/// Collects and validates a period's subscriptions and usage.
pub struct ActivityBuilder<'a> {
    params: &'a Params,
    site_ids: Vec<&'a str>,
    users: Vec<CompactString>,
    escrow: Vec<Micros>,
    paid: Vec<Cents>,
    minted: Micros,
    /// Ids up to 24 bytes are stored inline, so a lookup reads no memory
    /// beyond the table: this map is probed once per usage row.
    user_index: HashMap<CompactString, SubscriberIx>,
    usage: Vec<UsageRow>,
    calls: Vec<CallRow>,
}

/// Subscriptions and usage, grouped per subscriber (compressed rows).
#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub(crate) users: Vec<CompactString>,
    pub(crate) escrow: Vec<Micros>,
    pub(crate) paid: Vec<Cents>,
    pub(crate) minted: Micros,
    /// Subscriber `u`'s usage rows are `user_start[u]..user_start[u + 1]`.
    pub(crate) user_start: Vec<u32>,
    pub(crate) site: Vec<SiteIx>,
    pub(crate) active_minutes: Vec<u64>,
    pub(crate) service_ms: Vec<u64>,
    /// Usage row `r`'s calls are `call_start[r]..call_start[r + 1]`.
    pub(crate) call_start: Vec<u32>,
    pub(crate) call_service: Vec<SiteIx>,
    pub(crate) call_ms: Vec<u64>,
}

impl<'a> ActivityBuilder<'a> {
    pub fn new(params: &'a Params, registry: &'a crate::Registry) -> ActivityBuilder<'a> {
        ActivityBuilder {
            params,
            site_ids: registry.sites().iter().map(|s| s.id.as_str()).collect(),
            users: Vec::new(),
            escrow: Vec::new(),
            paid: Vec::new(),
            minted: Micros::ZERO,
            user_index: HashMap::default(),
            usage: Vec::new(),
            calls: Vec::new(),
        }
    }

    /// Records `user`'s payment and mints its escrow.
    pub fn add_subscription(&mut self, user: &str, paid: Cents, tag: u64) -> Result<SubscriberIx, ActivityError> {
        let fail = |problem| ActivityError { tag, problem };
        if user.is_empty() {
            return Err(fail(ActivityProblem::EmptyUser));
        }
        if self.users.len() >= ROWS_MAX {
            return Err(fail(ActivityProblem::TooManyRows));
        }
        let escrow = self.params.escrow_for(paid).ok_or_else(|| fail(ActivityProblem::MintOverflow))?;
        let minted = self.minted.checked_add(escrow).ok_or_else(|| fail(ActivityProblem::MintOverflow))?;
        let ix = SubscriberIx(u32::try_from(self.users.len()).expect("fewer than ROWS_MAX subscribers"));
        let user = CompactString::from(user);
        match self.user_index.entry(user.clone()) {
            Entry::Occupied(_) => return Err(fail(ActivityProblem::DuplicateSubscription(user.into()))),
            Entry::Vacant(slot) => slot.insert(ix),
        };
        self.minted = minted;
        self.users.push(user);
        self.escrow.push(escrow);
        self.paid.push(paid);
        Ok(ix)
    }

    /// The subscriber `user`, if they paid for this period.
    pub fn subscriber(&self, user: &str) -> Option<SubscriberIx> {
        self.user_index.get(user).copied()
    }

    pub fn add_usage(&mut self, rows: impl IntoIterator<Item = UsageRow>) {
        self.usage.extend(rows);
    }

    pub fn add_calls(&mut self, rows: impl IntoIterator<Item = CallRow>) {
        self.calls.extend(rows);
    }

    /// Groups the rows per subscriber and checks the rules in the module
    /// documentation. Of two rows that clash, the one with the larger tag
    /// is reported.
    pub fn finish(self) -> Result<Activity, ActivityError> {
        let n_users = self.users.len();
        let fail = |tag, problem| ActivityError { tag, problem };
        if self.usage.len() > ROWS_MAX || self.calls.len() > ROWS_MAX {
            let tag = self.usage.get(ROWS_MAX).map(|r| r.tag).or(self.calls.get(ROWS_MAX).map(|c| c.tag)).unwrap_or(0);
            return Err(fail(tag, ActivityProblem::TooManyRows));
        }
        let user_name = |u: SubscriberIx| self.users[u.index()].to_string();
        let site_name = |s: SiteIx| self.site_ids[s.index()].to_owned();

        let (user_start, mut usage_order) = group_by_user(n_users, self.usage.iter().map(|r| r.user));
        for u in 0..n_users {
            let segment = &mut usage_order[user_start[u] as usize..user_start[u + 1] as usize];
            segment.sort_unstable_by_key(|&r| (self.usage[r as usize].site, self.usage[r as usize].tag));
        }
        let (call_user_start, mut call_order) = group_by_user(n_users, self.calls.iter().map(|c| c.user));
        for u in 0..n_users {
            let segment = &mut call_order[call_user_start[u] as usize..call_user_start[u + 1] as usize];
            segment.sort_unstable_by_key(|&c| {
                let c = &self.calls[c as usize];
                (c.site, c.service, c.tag)
            });
        }

        let mut activity = Activity {
            users: Vec::new(),
            escrow: Vec::new(),
            paid: Vec::new(),
            minted: self.minted,
            user_start,
            site: Vec::with_capacity(self.usage.len()),
            active_minutes: Vec::with_capacity(self.usage.len()),
            service_ms: Vec::with_capacity(self.usage.len()),
            call_start: Vec::with_capacity(self.usage.len() + 1),
            call_service: Vec::with_capacity(self.calls.len()),
            call_ms: Vec::with_capacity(self.calls.len()),
        };
        activity.call_start.push(0);
        for u in 0..n_users {
            let rows = &usage_order[activity.user_start[u] as usize..activity.user_start[u + 1] as usize];
            let mut calls = call_order[call_user_start[u] as usize..call_user_start[u + 1] as usize]
                .iter()
                .map(|&c| &self.calls[c as usize])
                .peekable();
            let mut previous: Option<&UsageRow> = None;
            for &r in rows {
                let row = &self.usage[r as usize];
                if previous.is_some_and(|p| p.site == row.site) {
                    let problem =
                        ActivityProblem::DuplicateUsage { user: user_name(row.user), site: site_name(row.site) };
                    return Err(fail(row.tag, problem));
                }
                previous = Some(row);
                let mut previous_call: Option<&CallRow> = None;
                while let Some(call) = calls.next_if(|c| c.site <= row.site) {
                    if call.site < row.site {
                        let problem = ActivityProblem::CallWithoutUsage {
                            user: user_name(call.user),
                            site: site_name(call.site),
                        };
                        return Err(fail(call.tag, problem));
                    }
                    if call.service == call.site {
                        return Err(fail(call.tag, ActivityProblem::SelfCall(site_name(call.site))));
                    }
                    if previous_call.is_some_and(|p| p.service == call.service) {
                        let problem = ActivityProblem::DuplicateCall {
                            user: user_name(call.user),
                            site: site_name(call.site),
                            service: site_name(call.service),
                        };
                        return Err(fail(call.tag, problem));
                    }
                    previous_call = Some(call);
                    activity.call_service.push(call.service);
                    activity.call_ms.push(call.ms);
                }
                activity.site.push(row.site);
                activity.active_minutes.push(row.active_minutes);
                activity.service_ms.push(row.service_ms);
                let end = u32::try_from(activity.call_service.len()).expect("at most ROWS_MAX calls");
                activity.call_start.push(end);
            }
            if let Some(call) = calls.next() {
                let problem =
                    ActivityProblem::CallWithoutUsage { user: user_name(call.user), site: site_name(call.site) };
                return Err(fail(call.tag, problem));
            }
        }
        activity.users = self.users;
        activity.escrow = self.escrow;
        activity.paid = self.paid;
        Ok(activity)
    }
}

/// A counting sort of row positions by user: returns each user's start
/// offset (plus the end) and the row positions in user order, stable.
fn group_by_user(n_users: usize, users: impl Iterator<Item = SubscriberIx> + Clone) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; n_users + 1];
    for user in users.clone() {
        start[user.index() + 1] += 1;
    }
    for u in 0..n_users {
        start[u + 1] += start[u];
    }
    let mut next = start.clone();
    let mut order = vec![0u32; start[n_users] as usize];
    for (row, user) in users.enumerate() {
        order[next[user.index()] as usize] = u32::try_from(row).expect("at most ROWS_MAX rows");
        next[user.index()] += 1;
    }
    (start, order)
}

impl Activity {
    /// Σ escrow minted for the period.
    pub fn minted(&self) -> Micros {
        self.minted
    }

    pub fn n_subscribers(&self) -> usize {
        self.users.len()
    }

    pub fn n_usage_rows(&self) -> usize {
        self.site.len()
    }

    pub fn user(&self, u: SubscriberIx) -> &str {
        &self.users[u.index()]
    }

    pub fn escrow(&self, u: SubscriberIx) -> Micros {
        self.escrow[u.index()]
    }

    /// What subscriber `u` paid.
    pub fn paid(&self, u: SubscriberIx) -> Cents {
        self.paid[u.index()]
    }

    /// Subscriber `u` alone: their subscription, usage and calls. Settling
    /// it follows their own fee through every level, to the µCC (a
    /// statement: what their fee paid, had it been settled by itself).
    pub fn only(&self, u: SubscriberIx) -> Activity {
        let i = u.index();
        let rows = self.user_start[i] as usize..self.user_start[i + 1] as usize;
        let first_call = self.call_start[rows.start];
        let calls = first_call as usize..self.call_start[rows.end] as usize;
        Activity {
            users: vec![self.users[i].clone()],
            escrow: vec![self.escrow[i]],
            paid: vec![self.paid[i]],
            minted: self.escrow[i],
            user_start: vec![0, self.user_start[i + 1] - self.user_start[i]],
            site: self.site[rows.clone()].to_vec(),
            active_minutes: self.active_minutes[rows.clone()].to_vec(),
            service_ms: self.service_ms[rows.clone()].to_vec(),
            call_start: self.call_start[rows.start..=rows.end].iter().map(|c| c - first_call).collect(),
            call_service: self.call_service[calls.clone()].to_vec(),
            call_ms: self.call_ms[calls].to_vec(),
        }
    }

    /// The same activity with escrow minted elsewhere (on the ledger, at
    /// its NAV) instead of at the initial price. `None` if the total does
    /// not fit in 64 bits or the count is not one per subscriber.
    pub fn with_escrow(mut self, escrow: Vec<Micros>) -> Option<Activity> {
        if escrow.len() != self.users.len() {
            return None;
        }
        self.minted = escrow.iter().try_fold(Micros::ZERO, |sum, e| sum.checked_add(*e))?;
        self.escrow = escrow;
        Some(self)
    }
}

impl SubscriberIx {
    pub fn from_index(index: usize) -> SubscriberIx {
        SubscriberIx(u32::try_from(index).expect("a subscriber's index is below ROWS_MAX"))
    }
}
