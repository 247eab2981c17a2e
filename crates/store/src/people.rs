//! People: platform accounts (password hashes only), login sessions (token
//! hashes only) and subscriptions per period.

use commons_core::Period;

use crate::platform::bump_registry;
use crate::sql::{Param, int_param};
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
                &[Param::Text(user), Param::Text(password_hash), int_param(now_ms, "account creation time")?],
            )?;
            bump_registry(tx)?;
            Ok(true)
        })
    }

    pub fn accounts(&mut self) -> Result<Vec<AccountRecord>, StoreError> {
        let rows = self
            .backend
            .transaction(|tx| tx.query("SELECT user_id, password_hash FROM accounts ORDER BY user_id", &[]))?;
        rows.iter().map(|r| Ok(AccountRecord { user: r.text(0)?, password_hash: r.text(1)? })).collect()
    }

    /// Keeps a session (and forgets those expired by `now_ms`).
    pub fn put_session(&mut self, session: &SessionRecord, now_ms: u64) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            tx.execute("DELETE FROM sessions WHERE expires_ms <= $1", &[int_param(now_ms, "time")?])?;
            tx.execute(
                "INSERT INTO sessions (token_hash, user_id, site, expires_ms) VALUES ($1, $2, $3, $4)",
                &[
                    Param::Text(&session.token_sha256),
                    Param::Text(&session.user),
                    Param::Text(&session.site),
                    // A session good for longer than i64 milliseconds is good for ever.
                    Param::Int(session.expires_ms.min(i64::MAX as u64) as i64),
                ],
            )?;
            Ok(())
        })
    }

    /// The sessions still good at `now_ms`.
    pub fn sessions(&mut self, now_ms: u64) -> Result<Vec<SessionRecord>, StoreError> {
        let now = int_param(now_ms, "time")?;
        let rows = self.backend.transaction(|tx| {
            tx.query("SELECT token_hash, user_id, site, expires_ms FROM sessions WHERE expires_ms > $1", &[now])
        })?;
        rows.iter()
            .map(|r| {
                Ok(SessionRecord {
                    token_sha256: r.text(0)?,
                    user: r.text(1)?,
                    site: r.text(2)?,
                    expires_ms: r.u64(3)?,
                })
            })
            .collect()
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
                &[params[0], params[1], int_param(paid_cents, "a payment in cents")?],
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
        rows.iter().map(|r| Ok((r.text(0)?, r.u64(1)?))).collect()
    }
}
