//! Login sessions kept in the store, so that they outlive restarts.

use gateway::{SessionStore, StoredSession, StoredToken};
use store::{SessionRecord, Store};

use crate::{StoreHandle, now_ms};

/// The gateway's [`SessionStore`], on the store's thread.
pub struct StoredSessions(pub StoreHandle);

impl SessionStore for StoredSessions {
    fn save(&self, session: &StoredSession) -> Result<(), String> {
        let record = SessionRecord {
            token_sha256: hex::encode(session.token_sha256),
            user: session.user.clone(),
            site: session.site.clone().unwrap_or_default(),
            created_ms: session.created_ms,
            expires_ms: session.expires_ms,
        };
        self.0.call_blocking(move |store| {
            store.put_session(&record, now_ms(), gateway::SESSIONS_PER_USER_MAX).map_err(|e| e.to_string())
        })
    }

    fn end(&self, user: &str) -> Result<(), String> {
        let user = user.to_owned();
        self.0.call_blocking(move |store| store.remove_sessions(&user).map(drop).map_err(|e| e.to_string()))
    }

    fn revoke_session(&self, user: &str, token_sha256: &str) -> Result<(), String> {
        let (user, hash) = (user.to_owned(), token_sha256.to_owned());
        self.0
            .call_blocking(move |store| store.revoke_sessions(&user, Some(&hash)).map(drop).map_err(|e| e.to_string()))
    }

    fn tokens_of(&self, user: &str) -> Result<Vec<StoredToken>, String> {
        let user = user.to_owned();
        self.0.call_blocking(move |store| {
            let tokens = store.tokens().map_err(|e| e.to_string())?;
            Ok(tokens
                .into_iter()
                .filter(|t| t.user == user)
                .map(|t| StoredToken { token_sha256: t.token_sha256, created_ms: t.created_ms })
                .collect())
        })
    }

    fn revoke_token(&self, user: &str, token_sha256: &str) -> Result<bool, String> {
        let (user, hash) = (user.to_owned(), token_sha256.to_owned());
        self.0.call_blocking(move |store| store.revoke_token(&user, &hash).map_err(|e| e.to_string()))
    }
}

/// The sessions still live, as the gateway keeps them.
pub fn stored_sessions(store: &mut Store) -> anyhow::Result<Vec<StoredSession>> {
    Ok(store
        .sessions(now_ms())?
        .into_iter()
        .filter_map(|s| {
            let token_sha256 = hex::decode(&s.token_sha256).ok()?.try_into().ok()?;
            Some(StoredSession {
                token_sha256,
                user: s.user,
                site: Some(s.site).filter(|site| !site.is_empty()),
                created_ms: s.created_ms,
                expires_ms: s.expires_ms,
            })
        })
        .collect())
}
