//! Distinct active minutes, in constant space.

/// How far behind the latest minute an event may arrive and still be
/// counted exactly. Events are stamped by the gateway's clock when the
/// request arrives, so they come in order but for the races between
/// threads; an hour of slack is far more than those need.
pub const MINUTE_WINDOW: u32 = 64;

/// The distinct minutes seen for one (period, user, site): how many, the
/// latest, and which of the [`MINUTE_WINDOW`] minutes up to the latest were
/// seen. Minutes are counted from the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteSet {
    count: u32,
    latest: u32,
    /// Bit `i` set: minute `latest - i` was seen.
    recent: u64,
}

/// What inserting a minute did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// A minute not seen before: counted.
    Counted,
    /// Seen already: nothing changes.
    Seen,
    /// Older than the window: cannot tell, not counted (and reported).
    TooLate,
}

impl MinuteSet {
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn insert(&mut self, minute: u32) -> Insert {
        if self.count == 0 {
            *self = MinuteSet { count: 1, latest: minute, recent: 1 };
            return Insert::Counted;
        }
        if minute > self.latest {
            let shift = minute - self.latest;
            self.recent = if shift >= 64 { 0 } else { self.recent << shift };
            self.recent |= 1;
            self.latest = minute;
            self.count += 1;
            return Insert::Counted;
        }
        let age = self.latest - minute;
        if age >= MINUTE_WINDOW {
            return Insert::TooLate;
        }
        if self.recent & (1 << age) != 0 {
            return Insert::Seen;
        }
        self.recent |= 1 << age;
        self.count += 1;
        Insert::Counted
    }

    /// The minutes this set still remembers, oldest first.
    pub fn recent_minutes(&self) -> impl Iterator<Item = u32> + '_ {
        (0..MINUTE_WINDOW)
            .rev()
            .filter(|&age| self.recent & (1 << age) != 0 && age <= self.latest)
            .map(|age| self.latest - age)
    }

    /// Adds the minutes of `newer`, a set that began where this one left
    /// off (a later flush): its remembered minutes are merged one by one;
    /// minutes it no longer remembers are taken to be new here. That is
    /// exact when `newer` spans less than [`MINUTE_WINDOW`] minutes, which a
    /// flush every few seconds guarantees. Returns how many of `newer`'s
    /// minutes were too late to tell.
    pub fn merge(&mut self, newer: &MinuteSet) -> u32 {
        let remembered = newer.recent.count_ones();
        let forgotten = newer.count - remembered;
        let mut too_late = 0;
        // Minutes `newer` no longer remembers are older than its window and
        // were counted there; they are new here unless they fall in ours.
        self.count += forgotten;
        for minute in newer.recent_minutes() {
            if self.insert(minute) == Insert::TooLate {
                too_late += 1;
            }
        }
        too_late
    }

    /// The raw parts, for storing: (count, latest, recent bits).
    pub fn to_parts(&self) -> (u32, u32, u64) {
        (self.count, self.latest, self.recent)
    }

    /// Rebuilds a set from [`MinuteSet::to_parts`]; `None` if inconsistent.
    pub fn from_parts(count: u32, latest: u32, recent: u64) -> Option<MinuteSet> {
        let consistent =
            if count == 0 { latest == 0 && recent == 0 } else { recent & 1 == 1 && recent.count_ones() <= count };
        consistent.then_some(MinuteSet { count, latest, recent })
    }
}
