//! People: platform accounts (password hashes only), login sessions (token
//! hashes only) and subscriptions per period.

use commons_core::Period;

use crate::platform::{bump_registry, short_id};
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
    pub created_ms: u64,
    pub expires_ms: u64,
}

impl SessionRecord {
    /// What names the session to its user (the start of its token's hash:
    /// not the token, and not enough of the hash to look it up by).
    pub fn id(&self) -> &str {
        short_id(&self.token_sha256)
    }
}

const SESSION_COLUMNS: &str = "token_hash, user_id, site, created_ms, expires_ms";

fn session_of(r: &crate::sql::Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        token_sha256: r.text(0)?,
        user: r.text(1)?,
        site: r.text(2)?,
        created_ms: r.u64(3)?,
        expires_ms: r.u64(4)?,
    })
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

    /// Keeps a session, forgets those expired by `now_ms`, and ends the
    /// user's oldest (by `created_ms`) beyond `per_user_max`.
    pub fn put_session(&mut self, session: &SessionRecord, now_ms: u64, per_user_max: usize) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            tx.execute("DELETE FROM sessions WHERE expires_ms <= $1", &[int_param(now_ms, "time")?])?;
            tx.execute(
                "INSERT INTO sessions (token_hash, user_id, site, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)",
                &[
                    Param::Text(&session.token_sha256),
                    Param::Text(&session.user),
                    Param::Text(&session.site),
                    int_param(session.created_ms, "session creation time")?,
                    // A session good for longer than i64 milliseconds is good for ever.
                    Param::Int(session.expires_ms.min(i64::MAX as u64) as i64),
                ],
            )?;
            let user = [Param::Text(&session.user)];
            let rows =
                tx.query("SELECT token_hash FROM sessions WHERE user_id = $1 ORDER BY created_ms, token_hash", &user)?;
            for row in rows.iter().take(rows.len().saturating_sub(per_user_max)) {
                tx.execute("DELETE FROM sessions WHERE token_hash = $1", &[Param::Text(&row.text(0)?)])?;
            }
            Ok(())
        })
    }

    /// The sessions still good at `now_ms`.
    pub fn sessions(&mut self, now_ms: u64) -> Result<Vec<SessionRecord>, StoreError> {
        let now = int_param(now_ms, "time")?;
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE expires_ms > $1");
        let rows = self.backend.transaction(|tx| tx.query(&sql, &[now]))?;
        rows.iter().map(session_of).collect()
    }

    /// `user`'s sessions still good at `now_ms`, oldest first.
    pub fn sessions_of(&mut self, user: &str, now_ms: u64) -> Result<Vec<SessionRecord>, StoreError> {
        let now = int_param(now_ms, "time")?;
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND expires_ms > $2 ORDER BY created_ms, token_hash"
        );
        let rows = self.backend.transaction(|tx| tx.query(&sql, &[Param::Text(user), now]))?;
        rows.iter().map(session_of).collect()
    }

    /// Forgets the sessions expired by `now_ms`; how many there were.
    pub fn purge_sessions(&mut self, now_ms: u64) -> Result<u64, StoreError> {
        let now = int_param(now_ms, "time")?;
        self.backend.transaction(|tx| tx.execute("DELETE FROM sessions WHERE expires_ms <= $1", &[now]))
    }

    /// Ends every session of `user` (logging out everywhere: the gateway
    /// that asks has ended them already).
    pub fn remove_sessions(&mut self, user: &str) -> Result<u64, StoreError> {
        self.backend.transaction(|tx| tx.execute("DELETE FROM sessions WHERE user_id = $1", &[Param::Text(user)]))
    }

    /// Revokes `user`'s session with this token hash (all of their
    /// sessions with None), and tells the gateways (the registry version
    /// moves); how many ended.
    pub fn revoke_sessions(&mut self, user: &str, token_sha256: Option<&str>) -> Result<u64, StoreError> {
        self.backend.transaction(|tx| {
            let ended = match token_sha256 {
                None => tx.execute("DELETE FROM sessions WHERE user_id = $1", &[Param::Text(user)])?,
                Some(hash) => tx.execute(
                    "DELETE FROM sessions WHERE user_id = $1 AND token_hash = $2",
                    &[Param::Text(user), Param::Text(hash)],
                )?,
            };
            if ended > 0 {
                bump_registry(tx)?;
            }
            Ok(ended)
        })
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
