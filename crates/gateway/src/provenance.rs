//! Provenance tokens: how a site proves, when it calls another platform
//! service through the internal listener, that it does so for a user who
//! is being served right now.
//!
//! The gateway gives every identified request a token (`X-Commons-
//! Provenance`): an identifier and its tag, each 16 bytes in hex. The
//! identifier is a keyed BLAKE3 hash of a counter (unpredictable, and
//! unique for as long as the gateway runs); the tag, a keyed BLAKE3 hash of
//! the identifier (a MAC, several times cheaper than HMAC-SHA256 on the
//! request path). Whom the token speaks for — user, site, tier — and its
//! expiry are kept by the gateway under the identifier while the request
//! is being served, never written in the token: a site learns nothing
//! from it about the user (their name would undo the per-site
//! pseudonyms), and two tokens share nothing. A token is refused once its
//! request has been answered (replay), after its expiry, if its tag does
//! not verify (forgery) or if it is missing. Only calls with a live token
//! are attributed to the user.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use foldhash::{HashMap, HashMapExt};

use crate::identity::Identity;
use crate::routes::SiteRoute;

/// How long a token is valid at most, even while its request runs.
pub const TOKEN_LIFETIME_MS: u64 = 60_000;

const SHARDS: usize = 64;

/// Hex digits of a token: identifier, `.`, tag.
const TOKEN_LEN: usize = 32 + 1 + 32;

/// Who a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub user: String,
    /// The site that was called by the user and now calls a service.
    pub site: String,
    pub premium: bool,
}

/// Why a call's provenance is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvenanceError {
    #[error("the call carries no provenance token")]
    Missing,
    #[error("the provenance token is forged or malformed")]
    Forged,
    #[error("the provenance token has expired")]
    Expired,
    #[error("the provenance token's request is over: tokens cannot be replayed")]
    Replayed,
}

impl ProvenanceError {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            ProvenanceError::Missing => "missing",
            ProvenanceError::Forged => "forged",
            ProvenanceError::Expired => "expired",
            ProvenanceError::Replayed => "replayed",
        }
    }
}

/// What a live token speaks for.
struct Entry {
    identity: Arc<Identity>,
    route: Arc<SiteRoute>,
    expiry_ms: u64,
}

/// Issues and checks tokens; knows which requests are in flight.
pub(crate) struct Provenance {
    key: [u8; 32],
    next: AtomicU64,
    live: Vec<Mutex<HashMap<u128, Entry>>>,
}

/// Keeps a token live until dropped (the request is answered).
pub(crate) struct Live<'p> {
    provenance: &'p Provenance,
    id: u128,
}

impl Provenance {
    pub(crate) fn new(secret: &[u8; 32], seed: u64) -> Provenance {
        Provenance {
            key: *secret,
            next: AtomicU64::new(seed),
            live: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// A token for `identity`'s request to `route`'s site, live until the
    /// returned guard is dropped.
    pub(crate) fn issue(&self, identity: &Arc<Identity>, route: &Arc<SiteRoute>, now_ms: u64) -> (String, Live<'_>) {
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        let id = self.hash(0, &count.to_le_bytes());
        let tag = self.hash(1, &id);
        let key = u128::from_le_bytes(id);
        let entry = Entry { identity: identity.clone(), route: route.clone(), expiry_ms: now_ms + TOKEN_LIFETIME_MS };
        self.shard(key).insert(key, entry);
        let mut token = [b'.'; TOKEN_LEN];
        hex::encode_to_slice(id, &mut token[..32]).expect("sized for it");
        hex::encode_to_slice(tag, &mut token[33..]).expect("sized for it");
        let token = String::from_utf8(token.to_vec()).expect("hex is ASCII");
        (token, Live { provenance: self, id: key })
    }

    /// The first 16 bytes of the keyed BLAKE3 hash of `purpose` and `bytes`
    /// (0: an identifier from a count; 1: an identifier's tag).
    fn hash(&self, purpose: u8, bytes: &[u8]) -> [u8; 16] {
        let hash = blake3::Hasher::new_keyed(&self.key).update(&[purpose]).update(bytes).finalize();
        hash.as_bytes()[..16].try_into().expect("16 of 32 bytes")
    }

    fn shard(&self, id: u128) -> std::sync::MutexGuard<'_, HashMap<u128, Entry>> {
        self.live[id as usize % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a token and returns whom it speaks for.
    pub(crate) fn verify(&self, token: Option<&str>, now_ms: u64) -> Result<Origin, ProvenanceError> {
        let token = token.ok_or(ProvenanceError::Missing)?.as_bytes();
        if token.len() != TOKEN_LEN || token[32] != b'.' {
            return Err(ProvenanceError::Forged);
        }
        let (mut id, mut tag) = ([0u8; 16], [0u8; 16]);
        hex::decode_to_slice(&token[..32], &mut id).map_err(|_| ProvenanceError::Forged)?;
        hex::decode_to_slice(&token[33..], &mut tag).map_err(|_| ProvenanceError::Forged)?;
        // Compared in constant time: no byte of a forgery's tag tells how
        // close it came.
        let expected = self.hash(1, &id);
        if expected.iter().zip(&tag).fold(0u8, |diff, (a, b)| diff | (a ^ b)) != 0 {
            return Err(ProvenanceError::Forged);
        }
        let shard = self.shard(u128::from_le_bytes(id));
        let entry = shard.get(&u128::from_le_bytes(id)).ok_or(ProvenanceError::Replayed)?;
        if now_ms > entry.expiry_ms {
            return Err(ProvenanceError::Expired);
        }
        Ok(Origin {
            user: entry.identity.user.clone(),
            site: entry.route.site.clone(),
            premium: entry.identity.premium,
        })
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.provenance.shard(self.id).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { user: "alice".into(), site: "chat".into(), premium: false }
    }

    fn alice() -> (Arc<Identity>, Arc<SiteRoute>) {
        (Arc::new(Identity { user: "alice".into(), premium: false }), Arc::new(SiteRoute::new("chat", &[], false)))
    }

    #[test]
    fn a_live_token_speaks_for_its_user_and_site() {
        let provenance = Provenance::new(&[1; 32], 7);
        let (identity, route) = alice();
        let (token, _live) = provenance.issue(&identity, &route, 1_000);
        assert_eq!(provenance.verify(Some(&token), 1_000 + TOKEN_LIFETIME_MS), Ok(origin()));
    }

    #[test]
    fn tokens_are_refused_when_missing_forged_expired_or_replayed() {
        let provenance = Provenance::new(&[1; 32], 7);
        let (identity, route) = alice();
        assert_eq!(provenance.verify(None, 0), Err(ProvenanceError::Missing));
        let (token, live) = provenance.issue(&identity, &route, 1_000);
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(provenance.verify(Some(std::str::from_utf8(&forged).unwrap()), 1_000), Err(ProvenanceError::Forged));
        // Another identifier with the old tag: forged.
        let other = format!("{}{}", if token.starts_with('0') { "1" } else { "0" }, &token[1..]);
        assert_eq!(provenance.verify(Some(&other), 1_000), Err(ProvenanceError::Forged));
        assert_eq!(provenance.verify(Some("nonsense"), 1_000), Err(ProvenanceError::Forged));
        assert_eq!(provenance.verify(Some(&token), 1_001 + TOKEN_LIFETIME_MS), Err(ProvenanceError::Expired));
        drop(live);
        assert_eq!(provenance.verify(Some(&token), 1_000), Err(ProvenanceError::Replayed));
        // A token from another key (another gateway, or a guess) is forged.
        let stranger = Provenance::new(&[2; 32], 7);
        let (foreign, _live) = stranger.issue(&identity, &route, 1_000);
        assert_eq!(provenance.verify(Some(&foreign), 1_000), Err(ProvenanceError::Forged));
    }
}
