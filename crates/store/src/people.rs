//! People: platform accounts (password hashes only), login sessions (token
//! hashes only) and subscriptions per period.

use commons_core::Period;

use crate::platform::{bump_registry, corrupt};
use crate::sql::Param;
use crate::{Store, StoreError};

/// A platform account: the user's id and their password's hash, in the
/// PHC string format (the KDF and its parameters travel with the hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    pub user: String,
    pub password_hash: String,
}

/// A login session, by its token's SHA-256 in hex. `site` is empty for the
/// platform session, else the one site a handed-off session is good for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_sha256: String,
    pub user: String,
    pub site: String,
    pub expires_ms: u64,
}

impl Store {
    /// Creates an account; false if the user has one already (nothing
    /// changes then).
    pub fn add_account(&mut self, user: &str, password_hash: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.backend.transaction(|tx| {
            if !tx.query("SELECT 1 FROM accounts WHERE user_id = $1", &[Param::Text(user)])?.is_empty() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO accounts (user_id, password_hash, created_ms) VALUES ($1, $2, $3)",
                &[Param::Text(user), Param::Text(password_hash), Param::Int(now_ms as i64)],
            )?;
            bump_registry(tx)?;
            Ok(true)
        })
    }

    pub fn accounts(&mut self) -> Result<Vec<AccountRecord>, StoreError> {
        let rows = self
            .backend
            .transaction(|tx| tx.query("SELECT user_id, password_hash FROM accounts ORDER BY user_id", &[]))?;
        Ok(rows.iter().map(|r| AccountRecord { user: r[0].text(), password_hash: r[1].text() }).collect())
    }

    /// Keeps a session (and forgets those expired by `now_ms`).
    pub fn put_session(&mut self, session: &SessionRecord, now_ms: u64) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            tx.execute("DELETE FROM sessions WHERE expires_ms <= $1", &[Param::Int(now_ms as i64)])?;
            tx.execute(
                "INSERT INTO sessions (token_hash, user_id, site, expires_ms) VALUES ($1, $2, $3, $4)",
                &[
                    Param::Text(&session.token_sha256),
                    Param::Text(&session.user),
                    Param::Text(&session.site),
                    Param::Int(session.expires_ms.min(i64::MAX as u64) as i64),
                ],
            )?;
            Ok(())
        })
    }

    /// The sessions still good at `now_ms`.
    pub fn sessions(&mut self, now_ms: u64) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = self.backend.transaction(|tx| {
            tx.query(
                "SELECT token_hash, user_id, site, expires_ms FROM sessions WHERE expires_ms > $1",
                &[Param::Int(now_ms as i64)],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| SessionRecord {
                token_sha256: r[0].text(),
                user: r[1].text(),
                site: r[2].text(),
                expires_ms: r[3].int() as u64,
            })
            .collect())
    }

    /// Ends every session of `user` (logging out everywhere).
    pub fn remove_sessions(&mut self, user: &str) -> Result<u64, StoreError> {
        self.backend.transaction(|tx| tx.execute("DELETE FROM sessions WHERE user_id = $1", &[Param::Text(user)]))
    }

    /// Records that `user` subscribed for `period`, paying `paid_cents`;
    /// false if they had already (nothing changes then).
    pub fn subscribe(&mut self, period: Period, user: &str, paid_cents: u64) -> Result<bool, StoreError> {
        let label = period.to_string();
        self.backend.transaction(|tx| {
            let params = [Param::Text(&label), Param::Text(user)];
            if !tx.query("SELECT 1 FROM subscriptions WHERE period = $1 AND user_id = $2", &params)?.is_empty() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO subscriptions (period, user_id, paid_cents) VALUES ($1, $2, $3)",
                &[params[0], params[1], Param::Int(i64::try_from(paid_cents).map_err(|_| corrupt("payment"))?)],
            )?;
            bump_registry(tx)?;
            Ok(true)
        })
    }

    /// Who subscribed for `period` and what they paid, by user.
    pub fn subscriptions(&mut self, period: Period) -> Result<Vec<(String, u64)>, StoreError> {
        let label = period.to_string();
        let rows = self.backend.transaction(|tx| {
            tx.query(
                "SELECT user_id, paid_cents FROM subscriptions WHERE period = $1 ORDER BY user_id",
                &[Param::Text(&label)],
            )
        })?;
        Ok(rows.iter().map(|r| (r[0].text(), r[1].int() as u64)).collect())
    }
}
