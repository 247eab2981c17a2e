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

/// Failed password attempts an account may take at once before attempts
/// on it wait (from addresses it has not logged in from lately).
pub(crate) const ACCOUNT_FAILURES_BURST: u64 = 20;
/// One more failed attempt on an account is allowed every this often.
pub(crate) const ACCOUNT_FAILURE_REFILL_MS: u64 = 30_000;
/// How many addresses an account's recent logins are remembered from.
const KNOWN_ADDRESSES_MAX: usize = 8;
/// How long such an address is remembered.
const KNOWN_ADDRESS_MS: u64 = 30 * 86_400_000;
/// Most accounts whose attempts are followed at once.
const GUARDED_ACCOUNTS_MAX: usize = 1 << 16;

/// Password attempts per account, beside the per-address limit: a budget
/// of [`ACCOUNT_FAILURES_BURST`] failures that refills one per
/// [`ACCOUNT_FAILURE_REFILL_MS`] (a token bucket, kept as the time it is
/// whole again), so guessing one account from many addresses is slowed to
/// that rate. It slows, never locks: a wait is always bounded by the
/// refill, and an address the account logged in from within 30 days is
/// not held to the budget at all, so an attacker cannot keep a user out of
/// where they usually log in.
pub(crate) struct LoginGuard {
    accounts: Mutex<Accounts>,
}

/// The two tables apart: anyone can add budgets by naming new users, so
/// budgets are evicted freely; only a right password adds known
/// addresses, which are evicted only for other known addresses (the
/// account whose last login is oldest goes first).
#[derive(Default)]
struct Accounts {
    /// When each account's budget is whole again.
    budgets: HashMap<String, u64>,
    /// Addresses each account logged in from, with when they are forgotten.
    known: HashMap<String, Vec<(String, u64)>>,
}

/// An attempt let through; tell the guard how it went.
pub(crate) struct Attempt {
    charged: bool,
}

impl LoginGuard {
    pub(crate) fn new() -> LoginGuard {
        LoginGuard { accounts: Mutex::new(Accounts::default()) }
    }

    /// Lets an attempt on `user` from `address` through, charging the
    /// account's budget unless the address is known; else how many
    /// seconds to wait.
    pub(crate) fn attempt(&self, user: &str, address: &str, now_ms: u64) -> Result<Attempt, u64> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = accounts.known.get_mut(user) {
            known.retain(|(_, until)| *until > now_ms);
            if known.iter().any(|(known, _)| known == address) {
                return Ok(Attempt { charged: false });
            }
        }
        let budgets = &mut accounts.budgets;
        if !budgets.contains_key(user) && budgets.len() >= GUARDED_ACCOUNTS_MAX {
            budgets.retain(|_, full_at| *full_at > now_ms);
            if budgets.len() >= GUARDED_ACCOUNTS_MAX
                && let Some(least) = budgets.iter().min_by_key(|(_, full_at)| **full_at).map(|(u, _)| u.clone())
            {
                budgets.remove(&least);
            }
        }
        let full_at_ms = budgets.entry(user.to_owned()).or_default();
        let full_at = (*full_at_ms).max(now_ms) + ACCOUNT_FAILURE_REFILL_MS;
        let allowed = ACCOUNT_FAILURES_BURST * ACCOUNT_FAILURE_REFILL_MS;
        if full_at - now_ms > allowed {
            return Err((full_at - now_ms - allowed).div_ceil(1000));
        }
        *full_at_ms = full_at;
        Ok(Attempt { charged: true })
    }

    /// `attempt` found the right password: it costs the budget nothing,
    /// and `address` is known from now on.
    pub(crate) fn succeeded(&self, user: &str, address: &str, attempt: Attempt, now_ms: u64) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if attempt.charged
            && let Some(full_at_ms) = accounts.budgets.get_mut(user)
        {
            *full_at_ms = full_at_ms.saturating_sub(ACCOUNT_FAILURE_REFILL_MS);
        }
        let known = &mut accounts.known;
        if !known.contains_key(user) && known.len() >= GUARDED_ACCOUNTS_MAX {
            known.retain(|_, addresses| {
                addresses.retain(|(_, until)| *until > now_ms);
                !addresses.is_empty()
            });
            if known.len() >= GUARDED_ACCOUNTS_MAX
                && let Some(least) = known
                    .iter()
                    .min_by_key(|(_, addresses)| addresses.iter().map(|(_, until)| *until).max())
                    .map(|(u, _)| u.clone())
            {
                known.remove(&least);
            }
        }
        let addresses = known.entry(user.to_owned()).or_default();
        addresses.retain(|(known, _)| known != address);
        if addresses.len() >= KNOWN_ADDRESSES_MAX {
            addresses.remove(0);
        }
        addresses.push((address.to_owned(), now_ms + KNOWN_ADDRESS_MS));
    }
}

/// What password attempts from `peer` (an IP address) are counted by: the
/// address itself, or for IPv6 its /64, which one client is usually given
/// whole (counting each address of it would give it 2⁶⁴ budgets).
pub(crate) fn attempts_key(peer: &str) -> String {
    match peer.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or_else(|| peer.to_owned(), |v4| v4.to_string()),
        _ => peer.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_attempts_are_counted_per_ipv4_address_and_per_ipv6_network() {
        assert_eq!(attempts_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(attempts_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(attempts_key("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64");
        assert_ne!(attempts_key("2001:db8:1:3::1"), "2001:db8:1:2::/64");
        assert_eq!(attempts_key("::ffff:192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn an_accounts_budget_refills_and_known_addresses_skip_it() {
        let guard = LoginGuard::new();
        let ok = guard.attempt("alice", "home", 0).unwrap();
        guard.succeeded("alice", "home", ok, 0);
        for n in 0..ACCOUNT_FAILURES_BURST {
            assert!(guard.attempt("alice", &format!("bot{n}"), 0).is_ok(), "{n}");
        }
        assert_eq!(guard.attempt("alice", "bot", 0).err(), Some(ACCOUNT_FAILURE_REFILL_MS / 1000));
        assert!(guard.attempt("bob", "bot", 0).is_ok(), "another account's budget");
        assert!(guard.attempt("alice", "home", 0).is_ok(), "a known address");
        assert!(guard.attempt("alice", "cafe", ACCOUNT_FAILURE_REFILL_MS).is_ok(), "one more after the refill");
        assert!(guard.attempt("alice", "cafe", ACCOUNT_FAILURE_REFILL_MS).is_err());
    }

    #[test]
    fn new_user_names_past_the_table_do_not_wipe_a_users_known_addresses() {
        let guard = LoginGuard::new();
        let ok = guard.attempt("alice", "home", 0).unwrap();
        guard.succeeded("alice", "home", ok, 0);
        for n in 0..GUARDED_ACCOUNTS_MAX + 16 {
            assert!(guard.attempt(&format!("sprayed{n}"), "bot", 0).is_ok());
        }
        for n in 0..ACCOUNT_FAILURES_BURST {
            assert!(guard.attempt("alice", &format!("bot{n}"), 0).is_ok(), "{n}");
        }
        assert!(guard.attempt("alice", "bot", 0).is_err(), "alice's budget is spent");
        assert!(guard.attempt("alice", "home", 0).is_ok(), "home is still known");
        let accounts = guard.accounts.lock().unwrap();
        assert!(accounts.budgets.len() <= GUARDED_ACCOUNTS_MAX && accounts.known.len() == 1);
    }
}
