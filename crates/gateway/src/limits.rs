//! Free-tier limits: requests per minute and requests at once, per (site,
//! user), refused immediately with 429 and `Retry-After`.
//!
//! Counters live in a fixed number of shards behind mutexes, shared by all
//! worker threads (a user's connections may land on any of them). A
//! shard's entries from earlier minutes are dropped as it is used, so
//! memory follows the users active in the current minute.

use std::collections::HashMap;
use std::sync::Mutex;

/// A site's tier policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierPolicy {
    /// Most requests a free (or anonymous) user may make per minute.
    pub free_requests_per_minute: Option<u32>,
    /// Most requests a free (or anonymous) user may have in flight.
    pub free_concurrent_requests: Option<u32>,
    /// Path prefixes only subscribers may use (402 for others).
    pub premium_prefixes: Vec<String>,
}

impl TierPolicy {
    pub fn is_premium_only(&self, path: &str) -> bool {
        self.premium_prefixes.iter().any(|prefix| path.starts_with(prefix.as_str()))
    }
}

const SHARDS: usize = 64;

/// Most (site, user) entries one shard keeps before it forgets old minutes.
const SHARD_ENTRIES_MAX: usize = 1 << 16;

#[derive(Default)]
struct Counter {
    minute: u32,
    requests: u32,
    in_flight: u32,
}

/// The live counters.
pub(crate) struct Limiter {
    shards: Vec<Mutex<HashMap<(String, String), Counter>>>,
}

/// Why a request was refused, and when to retry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many requests this minute; retry after this many seconds.
    Rate { retry_after_s: u64 },
    /// Too many at once; retry after a second.
    Concurrency,
}

/// Holds a request's place in its user's concurrency count until dropped.
pub(crate) struct InFlight<'l> {
    limiter: &'l Limiter,
    key: Option<(usize, (String, String))>,
}

impl Limiter {
    pub(crate) fn new() -> Limiter {
        Limiter { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    /// Counts a request of `user` (or a client address, for anonymous
    /// users) on `site` at `now_ms`, or refuses it.
    pub(crate) fn admit(
        &self,
        policy: &TierPolicy,
        site: &str,
        user: &str,
        now_ms: u64,
    ) -> Result<InFlight<'_>, Refusal> {
        if policy.free_requests_per_minute.is_none() && policy.free_concurrent_requests.is_none() {
            return Ok(InFlight { limiter: self, key: None });
        }
        let minute = (now_ms / 60_000) as u32;
        let key = (site.to_owned(), user.to_owned());
        let shard = shard_of(&key);
        let mut counters = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        if counters.len() >= SHARD_ENTRIES_MAX {
            counters.retain(|_, c| c.minute == minute || c.in_flight > 0);
        }
        let counter = counters.entry(key.clone()).or_default();
        if counter.minute != minute {
            counter.minute = minute;
            counter.requests = 0;
        }
        if let Some(limit) = policy.free_requests_per_minute
            && counter.requests >= limit
        {
            let retry_after_s = (60_000 - now_ms % 60_000).div_ceil(1000);
            return Err(Refusal::Rate { retry_after_s });
        }
        if let Some(limit) = policy.free_concurrent_requests
            && counter.in_flight >= limit
        {
            return Err(Refusal::Concurrency);
        }
        counter.requests += 1;
        counter.in_flight += 1;
        Ok(InFlight { limiter: self, key: Some((shard, key)) })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some((shard, key)) = self.key.take() {
            let mut counters = self.limiter.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
            if let Some(counter) = counters.get_mut(&key) {
                counter.in_flight = counter.in_flight.saturating_sub(1);
            }
        }
    }
}

/// Which shard holds a key: FNV-1a over site and user (stable and cheap;
/// the maps inside use std's randomly seeded hasher).
fn shard_of(key: &(String, String)) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.0.bytes().chain([0]).chain(key.1.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % SHARDS as u64) as usize
}
