//! Provenance tokens: how a site proves, when it calls another platform
//! service through the internal listener, that it does so for a user who
//! is being served right now.
//!
//! The gateway gives every identified request a token (`X-Commons-
//! Provenance`): the user, the site, an expiry and a nonce, with a keyed
//! BLAKE3 tag (a MAC, and several times cheaper than HMAC-SHA256 on the
//! request path). The nonce is *live* only while that request is being
//! served, so a token is refused once its request has been answered
//! (replay), after its expiry, if its tag does not verify (forgery) or if
//! it is missing. Only calls with a live token are attributed to the user.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::{HashMap, HashMapExt};

/// How long a token is valid at most, even while its request runs.
pub const TOKEN_LIFETIME_MS: u64 = 60_000;

const SHARDS: usize = 64;

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

/// Bytes of a payload before the user: nonce, expiry, premium, user length.
const FIXED: usize = 19;

/// Issues and checks tokens; knows which requests are in flight.
pub(crate) struct Provenance {
    key: [u8; 32],
    next_nonce: AtomicU64,
    live: Vec<Mutex<HashMap<u64, ()>>>,
}

/// Keeps a token's nonce live until dropped (the request is answered).
pub(crate) struct Live<'p> {
    provenance: &'p Provenance,
    nonce: u64,
}

impl Provenance {
    pub(crate) fn new(secret: &[u8; 32], seed: u64) -> Provenance {
        Provenance {
            key: *secret,
            next_nonce: AtomicU64::new(seed),
            live: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// A token for `user`'s request to `site`, live until the returned
    /// guard is dropped.
    pub(crate) fn issue(&self, user: &str, site: &str, premium: bool, now_ms: u64) -> (String, Live<'_>) {
        // Nonces need to be unique, not secret: the tag is what cannot be forged.
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        self.live[nonce as usize % SHARDS].lock().unwrap_or_else(|e| e.into_inner()).insert(nonce, ());
        // The payload: nonce, expiry, premium, the user's length, the user,
        // the site.
        let mut fixed = [0u8; FIXED];
        fixed[..8].copy_from_slice(&nonce.to_le_bytes());
        fixed[8..16].copy_from_slice(&(now_ms + TOKEN_LIFETIME_MS).to_le_bytes());
        fixed[16] = u8::from(premium);
        fixed[17..].copy_from_slice(&(user.len() as u16).to_le_bytes());
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&fixed).update(user.as_bytes()).update(site.as_bytes());
        let hash = hasher.finalize();
        let tag = &hash.as_bytes()[..16];
        // Hex, then `.`, then the tag in hex.
        let hex_len = 2 * (FIXED + user.len() + site.len());
        let mut token = vec![b'.'; hex_len + 1 + 32];
        let (fixed_hex, rest) = token.split_at_mut(2 * FIXED);
        let (user_hex, rest) = rest.split_at_mut(2 * user.len());
        let (site_hex, rest) = rest.split_at_mut(2 * site.len());
        hex::encode_to_slice(fixed, fixed_hex).expect("sized for it");
        hex::encode_to_slice(user, user_hex).expect("sized for it");
        hex::encode_to_slice(site, site_hex).expect("sized for it");
        hex::encode_to_slice(tag, &mut rest[1..]).expect("sized for it");
        let token = String::from_utf8(token).expect("hex is ASCII");
        (token, Live { provenance: self, nonce })
    }

    /// The first 16 bytes of the payload's keyed BLAKE3 hash.
    fn tag(&self, payload: &[u8]) -> [u8; 16] {
        let hash = blake3::keyed_hash(&self.key, payload);
        hash.as_bytes()[..16].try_into().expect("16 of 32 bytes")
    }

    /// Checks a token and returns whom it speaks for.
    pub(crate) fn verify(&self, token: Option<&str>, now_ms: u64) -> Result<Origin, ProvenanceError> {
        let token = token.ok_or(ProvenanceError::Missing)?;
        let (payload, tag) = token.split_once('.').ok_or(ProvenanceError::Forged)?;
        let payload = hex::decode(payload).map_err(|_| ProvenanceError::Forged)?;
        let tag = hex::decode(tag).map_err(|_| ProvenanceError::Forged)?;
        // Compared in constant time: no byte of a forgery's tag tells how
        // close it came.
        let expected = self.tag(&payload);
        if tag.len() != 16 || expected.iter().zip(&tag).fold(0u8, |diff, (a, b)| diff | (a ^ b)) != 0 {
            return Err(ProvenanceError::Forged);
        }
        if payload.len() < FIXED {
            return Err(ProvenanceError::Forged);
        }
        let nonce = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
        let expiry = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
        let premium = payload[16] != 0;
        let user_len = u16::from_le_bytes(payload[17..19].try_into().expect("2 bytes")) as usize;
        let rest = &payload[FIXED..];
        if rest.len() < user_len {
            return Err(ProvenanceError::Forged);
        }
        let user = String::from_utf8(rest[..user_len].to_vec()).map_err(|_| ProvenanceError::Forged)?;
        let site = String::from_utf8(rest[user_len..].to_vec()).map_err(|_| ProvenanceError::Forged)?;
        if now_ms > expiry {
            return Err(ProvenanceError::Expired);
        }
        if !self.live[nonce as usize % SHARDS].lock().unwrap_or_else(|e| e.into_inner()).contains_key(&nonce) {
            return Err(ProvenanceError::Replayed);
        }
        Ok(Origin { user, site, premium })
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.provenance.live[self.nonce as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { user: "alice".into(), site: "chat".into(), premium: false }
    }

    #[test]
    fn a_live_token_speaks_for_its_user_and_site() {
        let provenance = Provenance::new(&[1; 32], 7);
        let (token, _live) = provenance.issue("alice", "chat", false, 1_000);
        assert_eq!(provenance.verify(Some(&token), 1_000 + TOKEN_LIFETIME_MS), Ok(origin()));
    }

    #[test]
    fn tokens_are_refused_when_missing_forged_expired_or_replayed() {
        let provenance = Provenance::new(&[1; 32], 7);
        assert_eq!(provenance.verify(None, 0), Err(ProvenanceError::Missing));
        let (token, live) = provenance.issue("alice", "chat", false, 1_000);
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(provenance.verify(Some(std::str::from_utf8(&forged).unwrap()), 1_000), Err(ProvenanceError::Forged));
        // Another user's name in the payload, with the old tag: forged.
        let other = token.replacen(&hex::encode("alice"), &hex::encode("mallo"), 1);
        assert_eq!(provenance.verify(Some(&other), 1_000), Err(ProvenanceError::Forged));
        assert_eq!(provenance.verify(Some("nonsense"), 1_000), Err(ProvenanceError::Forged));
        assert_eq!(provenance.verify(Some(&token), 1_001 + TOKEN_LIFETIME_MS), Err(ProvenanceError::Expired));
        drop(live);
        assert_eq!(provenance.verify(Some(&token), 1_000), Err(ProvenanceError::Replayed));
        // A token from another key (another gateway, or a guess) is forged.
        let stranger = Provenance::new(&[2; 32], 7);
        let (foreign, _live) = stranger.issue("alice", "chat", false, 1_000);
        assert_eq!(provenance.verify(Some(&foreign), 1_000), Err(ProvenanceError::Forged));
    }
}
