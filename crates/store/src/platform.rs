//! The platform's records beside the ledger: sites the gateway routes and
//! the projects they pay, API tokens, and metered usage with the
//! write-ahead-log checkpoint it was flushed up to (a row per log writer).
//!
//! A site's instances, hosts, premium prefixes and providers, and a
//! project's dependencies, are child rows (see [`crate::lists`]), written
//! and read in the record's transaction.

use std::net::SocketAddr;

use commons_core::Period;
use commons_core::token_sha256;
use metering::wal::Checkpoint;
use metering::{CallKey, DirectKey, DirectUsage, MinuteSet, Usage};

use crate::lists;
use crate::sql::{Param, Row, Tx, int_param};
use crate::{Store, StoreError};

/// A site as the gateway routes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteRecord {
    pub id: String,
    pub instances: Vec<SocketAddr>,
    pub custom_hosts: Vec<String>,
    pub anonymous: bool,
    /// Free-tier requests per minute per user; none: unlimited.
    pub free_requests_per_minute: Option<u32>,
    /// Free-tier requests in flight per user; none: unlimited.
    pub free_concurrent_requests: Option<u32>,
    /// Path prefixes for subscribers only.
    pub premium_prefixes: Vec<String>,
    /// Who runs the site (paid the rest after providers and developers).
    pub operator: String,
    /// The project of the app the site runs.
    pub project: String,
    /// The providers' cut, agreed at deploy.
    pub provider_share_bps: u32,
    /// The developers' cut of the rest (at or above the platform's floor).
    pub developer_share_bps: u32,
    /// The providers whose nodes run the site, with their weights.
    pub providers: Vec<(String, u64)>,
    /// The path that answers 2xx when an instance is healthy, if any.
    pub health_path: Option<String>,
    /// `Authorization` headers that are not the platform's own tokens go
    /// to the site (its apps authenticate by them: CalDAV, registries).
    pub pass_authorization: bool,
    /// A header the site's apps read the user from (a trusted
    /// reverse-proxy header), given the user's per-site pseudonym.
    pub user_header: Option<String>,
}

/// A developer project and what it depends on, with weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    pub id: String,
    pub deps: Vec<(String, u64)>,
    /// Where its source is (a URL), or empty.
    pub repository: String,
}

/// A metered row a settlement could not use: which, why, and where its
/// money went instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAsideRecord {
    pub row: String,
    pub reason: String,
    pub outcome: String,
}

/// An API token's owner, by the token's SHA-256 (tokens themselves are
/// never stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_sha256: String,
    pub user: String,
    pub created_ms: u64,
}

impl TokenRecord {
    /// What names the token to its user: the start of its hash, not the
    /// token.
    pub fn id(&self) -> &str {
        short_id(&self.token_sha256)
    }
}

/// The first 12 hex digits of a token's hash: the id a session or token is
/// listed and revoked by.
pub(crate) fn short_id(token_sha256: &str) -> &str {
    token_sha256.get(..12).unwrap_or(token_sha256)
}

/// Most API tokens one user may have.
pub const TOKENS_PER_USER_MAX: usize = 64;

pub(crate) fn corrupt(what: &str, detail: &str) -> StoreError {
    StoreError::Corrupt { what: what.to_owned(), detail: detail.to_owned() }
}

pub(crate) fn bump_registry(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    let version = registry_version_in(tx)?
        .checked_add(1)
        .ok_or_else(|| corrupt("platform_meta registry_version", "at its largest value"))?;
    tx.execute(
        "UPDATE platform_meta SET value = $1 WHERE key = 'registry_version'",
        &[Param::Text(&version.to_string())],
    )?;
    Ok(())
}

fn registry_version_in(tx: &mut Tx<'_>) -> Result<u64, StoreError> {
    let rows = tx.query("SELECT value FROM platform_meta WHERE key = 'registry_version'", &[])?;
    let row = rows.first().ok_or_else(|| corrupt("platform_meta registry_version", "missing"))?;
    let text = row.text(0)?;
    text.parse().map_err(|_| row.corrupt(0, format!("registry_version {text:?} is not a number")))
}

impl Store {
    /// Adds or replaces a site, with its lists, in one transaction. A
    /// removed site's record an unsettled period still needs is never
    /// replaced ([`Store::kept_removed_site`]): [`StoreError::SiteKept`].
    pub fn put_site(&mut self, site: &SiteRecord) -> Result<(), StoreError> {
        if let Some(why) = self.kept_removed_site(&site.id)? {
            return Err(StoreError::SiteKept(why));
        }
        let instances: Vec<String> = site.instances.iter().map(|a| a.to_string()).collect();
        // No limit is stored as -1.
        let limit = |l: Option<u32>| l.map_or(-1, i64::from);
        self.backend.transaction(|tx| {
            tx.execute("DELETE FROM sites WHERE id = $1", &[Param::Text(&site.id)])?;
            tx.execute(
                "INSERT INTO sites (id, anonymous, free_requests_per_minute, free_concurrent_requests, operator, project, provider_share_bps, developer_share_bps, health_path, pass_authorization, user_header) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    Param::Text(&site.id),
                    Param::Int(i64::from(site.anonymous)),
                    Param::Int(limit(site.free_requests_per_minute)),
                    Param::Int(limit(site.free_concurrent_requests)),
                    Param::Text(&site.operator),
                    Param::Text(&site.project),
                    Param::Int(i64::from(site.provider_share_bps)),
                    Param::Int(i64::from(site.developer_share_bps)),
                    Param::Text(site.health_path.as_deref().unwrap_or("")),
                    Param::Int(i64::from(site.pass_authorization)),
                    Param::Text(site.user_header.as_deref().unwrap_or("")),
                ],
            )?;
            lists::SITE_INSTANCES.put(tx, &site.id, instances.iter().map(String::as_str))?;
            lists::SITE_HOSTS.put(tx, &site.id, site.custom_hosts.iter().map(String::as_str))?;
            lists::SITE_PREMIUM_PREFIXES.put(tx, &site.id, site.premium_prefixes.iter().map(String::as_str))?;
            lists::SITE_PROVIDERS.put_weighted(tx, &site.id, &site.providers)?;
            bump_registry(tx)
        })
    }

    /// Removes a site at `at_ms`; whether there was one. It is no longer
    /// routed or listed ([`Store::sites`]) and its instances and hosts are
    /// let go, but its record stays, with its operator, project, shares and
    /// providers, for the settlement of the periods it was used in
    /// ([`Store::sites_ever`]). The id is not taken again until no
    /// unsettled period needs the record ([`Store::kept_removed_site`]).
    pub fn remove_site(&mut self, id: &str, at_ms: u64) -> Result<bool, StoreError> {
        self.backend.transaction(|tx| {
            let removed = tx.execute(
                // SQLite numbers parameters in order of appearance.
                "UPDATE sites SET removed_ms = $1 WHERE id = $2 AND removed_ms = 0",
                &[int_param(at_ms.max(1), "time")?, Param::Text(id)],
            )? > 0;
            if removed {
                lists::SITE_INSTANCES.put(tx, id, std::iter::empty::<&str>())?;
                lists::SITE_HOSTS.put(tx, id, std::iter::empty::<&str>())?;
            }
            bump_registry(tx)?;
            Ok(removed)
        })
    }

    /// Why `id` cannot be taken by a new site, if it cannot: its removed
    /// record is kept for the settlement of a period not yet settled on the
    /// ledger (the one it was removed in, or one whose usage names it).
    /// A removed record no unsettled period needs may be replaced.
    pub fn kept_removed_site(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        let rows = self.backend.read(|tx| {
            tx.query("SELECT removed_ms FROM sites WHERE id = $1 AND removed_ms <> 0", &[Param::Text(id)])
        })?;
        let Some(removed_ms) = rows.first().map(|r| r.u64(0)).transpose()? else { return Ok(None) };
        let days = (removed_ms / 86_400_000) as i64;
        let mut periods = self.periods_naming(id)?;
        periods.push(Period::from_days_since_epoch(days));
        periods.sort();
        periods.dedup();
        periods.retain(|p| !self.ledger.is_settled(*p));
        if periods.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = periods.iter().map(|p| p.to_string()).collect();
        let (noun, verb) = if names.len() == 1 { ("period", "is") } else { ("periods", "are") };
        Ok(Some(format!(
            "site {id} was removed on {}; its record is kept until {noun} {} {verb} settled; choose another id or settle first",
            civil_date(days),
            names.join(", ")
        )))
    }

    /// The removed sites still on record, with when each was removed.
    pub fn removed_sites(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self
            .backend
            .read(|tx| tx.query("SELECT id, removed_ms FROM sites WHERE removed_ms <> 0 ORDER BY id", &[]))?;
        rows.iter().map(|r| Ok((r.text(0)?, r.u64(1)?))).collect()
    }

    /// The periods whose metered usage names `site`, as the used site, the
    /// caller or the called service, or whose resource use does.
    pub fn periods_naming(&mut self, site: &str) -> Result<Vec<Period>, StoreError> {
        let rows = self.backend.read(|tx| {
            tx.query(
                "SELECT period FROM usage_direct WHERE site = $1 UNION SELECT period FROM usage_calls WHERE site = $1 OR service = $1 UNION SELECT period FROM resource_usage WHERE site = $1",
                &[Param::Text(site)],
            )
        })?;
        let mut periods = rows
            .iter()
            .map(|row| {
                let text = row.text(0)?;
                Period::parse(&text).map_err(|e| row.corrupt(0, format!("period {text:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        periods.sort();
        Ok(periods)
    }

    /// Deletes the record of a removed site (a live one is kept); whether
    /// there was one.
    pub fn forget_removed_site(&mut self, id: &str) -> Result<bool, StoreError> {
        self.backend.transaction(|tx| {
            let forgotten = tx.execute("DELETE FROM sites WHERE id = $1 AND removed_ms <> 0", &[Param::Text(id)])? > 0;
            bump_registry(tx)?;
            Ok(forgotten)
        })
    }

    /// The sites that are live: what the gateway routes.
    pub fn sites(&mut self) -> Result<Vec<SiteRecord>, StoreError> {
        self.read_sites(false)
    }

    /// Every site with a record, removed ones too: what a settlement pays.
    pub fn sites_ever(&mut self) -> Result<Vec<SiteRecord>, StoreError> {
        self.read_sites(true)
    }

    fn read_sites(&mut self, removed_too: bool) -> Result<Vec<SiteRecord>, StoreError> {
        self.backend.read(|tx| {
            let rows = tx.query(
                if removed_too {
                    "SELECT id, anonymous, free_requests_per_minute, free_concurrent_requests, operator, project, provider_share_bps, developer_share_bps, health_path, pass_authorization, user_header FROM sites ORDER BY id"
                } else {
                    "SELECT id, anonymous, free_requests_per_minute, free_concurrent_requests, operator, project, provider_share_bps, developer_share_bps, health_path, pass_authorization, user_header FROM sites WHERE removed_ms = 0 ORDER BY id"
                },
                &[],
            )?;
            let mut instances = lists::SITE_INSTANCES.read_all(tx)?;
            let mut hosts = lists::SITE_HOSTS.read_all(tx)?;
            let mut prefixes = lists::SITE_PREMIUM_PREFIXES.read_all(tx)?;
            let mut providers = lists::SITE_PROVIDERS.read_all(tx)?;
            rows.iter()
                .map(|row| {
                    let id = row.text(0)?;
                    let instances = instances
                        .take(&id)?
                        .iter()
                        .map(|a| {
                            a.parse().map_err(|_| corrupt("site_instances.address", &format!("{a:?} is not an address")))
                        })
                        .collect::<Result<_, _>>()?;
                    // No limit is stored as -1 (or NULL, in a row older than the column).
                    let limit = |i: usize| match row.optional_int(i)? {
                        None | Some(-1) => Ok(None),
                        Some(_) => row.u32(i).map(Some),
                    };
                    Ok(SiteRecord {
                        instances,
                        custom_hosts: hosts.take(&id)?,
                        anonymous: row.bool(1)?,
                        free_requests_per_minute: limit(2)?,
                        free_concurrent_requests: limit(3)?,
                        premium_prefixes: prefixes.take(&id)?,
                        operator: row.text(4)?,
                        project: row.text(5)?,
                        provider_share_bps: row.u32(6)?,
                        developer_share_bps: row.u32(7)?,
                        providers: providers.take_weighted(&id)?,
                        health_path: Some(row.text(8)?).filter(|p| !p.is_empty()),
                        pass_authorization: row.bool(9)?,
                        user_header: Some(row.text(10)?).filter(|h| !h.is_empty()),
                        id,
                    })
                })
                .collect()
        })
    }

    /// Adds or replaces a project, with its dependencies, in one transaction.
    pub fn put_project(&mut self, project: &ProjectRecord) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            tx.execute("DELETE FROM projects WHERE id = $1", &[Param::Text(&project.id)])?;
            tx.execute(
                "INSERT INTO projects (id, repository) VALUES ($1, $2)",
                &[Param::Text(&project.id), Param::Text(&project.repository)],
            )?;
            lists::PROJECT_DEPENDENCIES.put_weighted(tx, &project.id, &project.deps)?;
            bump_registry(tx)
        })
    }

    pub fn projects(&mut self) -> Result<Vec<ProjectRecord>, StoreError> {
        self.backend.read(|tx| {
            let rows = tx.query("SELECT id, repository FROM projects ORDER BY id", &[])?;
            let mut deps = lists::PROJECT_DEPENDENCIES.read_all(tx)?;
            rows.iter()
                .map(|row| {
                    let id = row.text(0)?;
                    Ok(ProjectRecord { deps: deps.take_weighted(&id)?, repository: row.text(1)?, id })
                })
                .collect()
        })
    }

    /// Records the platform domain `commons up` serves: the names under it
    /// are its sites', which no custom host may claim.
    pub fn set_domain(&mut self, domain: &str) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            tx.execute("DELETE FROM platform_meta WHERE key = 'domain'", &[])?;
            tx.execute("INSERT INTO platform_meta (key, value) VALUES ('domain', $1)", &[Param::Text(domain)])?;
            Ok(())
        })
    }

    /// The platform domain last recorded by [`Store::set_domain`], if any.
    pub fn domain(&mut self) -> Result<Option<String>, StoreError> {
        let rows = self.backend.read(|tx| tx.query("SELECT value FROM platform_meta WHERE key = 'domain'", &[]))?;
        rows.first().map(|row| row.text(0)).transpose()
    }

    /// Changes whenever sites, projects, accounts, tokens or subscriptions
    /// change: what the gateway polls.
    pub fn registry_version(&mut self) -> Result<u64, StoreError> {
        self.backend.transaction(registry_version_in)
    }

    /// Creates an API token for `user` and returns it (shown once; only
    /// its hash is kept). A user has at most [`TOKENS_PER_USER_MAX`]: past
    /// it, `Constraint` (a program's token is never ended to make room).
    pub fn add_token(&mut self, user: &str, now_ms: u64) -> Result<String, StoreError> {
        let mut secret = [0u8; 24];
        getrandom::fill(&mut secret).map_err(|e| StoreError::Database(format!("no randomness: {e}")))?;
        let token = format!("oc_{}", hex::encode(secret));
        let hash = token_sha256(&token);
        self.backend.transaction(|tx| {
            let held = tx.query("SELECT token_hash FROM api_tokens WHERE user_id = $1", &[Param::Text(user)])?.len();
            if held >= TOKENS_PER_USER_MAX {
                return Err(StoreError::Constraint(format!(
                    "{user} has {held} API tokens, the most a user may have: revoke one first"
                )));
            }
            tx.execute(
                "INSERT INTO api_tokens (token_hash, user_id, created_ms) VALUES ($1, $2, $3)",
                &[Param::Text(&hash), Param::Text(user), int_param(now_ms, "token creation time")?],
            )?;
            bump_registry(tx)
        })?;
        Ok(token)
    }

    pub fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self.backend.transaction(|tx| {
            tx.query("SELECT token_hash, user_id, created_ms FROM api_tokens ORDER BY created_ms, token_hash", &[])
        })?;
        rows.iter()
            .map(|r| Ok(TokenRecord { token_sha256: r.text(0)?, user: r.text(1)?, created_ms: r.u64(2)? }))
            .collect()
    }

    /// Revokes `user`'s token with this hash, and tells the gateways (the
    /// registry version moves); false if they have none such.
    pub fn revoke_token(&mut self, user: &str, token_sha256: &str) -> Result<bool, StoreError> {
        self.backend.transaction(|tx| {
            let revoked = tx.execute(
                "DELETE FROM api_tokens WHERE user_id = $1 AND token_hash = $2",
                &[Param::Text(user), Param::Text(token_sha256)],
            )? > 0;
            if revoked {
                bump_registry(tx)?;
            }
            Ok(revoked)
        })
    }

    /// Records what the settlement of `period` set aside, replacing what
    /// was recorded for it before (a rerun of the same settlement).
    pub fn put_set_aside(&mut self, period: Period, rows: &[SetAsideRecord]) -> Result<(), StoreError> {
        let label = period.to_string();
        self.backend.transaction(|tx| {
            tx.execute("DELETE FROM settlement_set_aside WHERE period = $1", &[Param::Text(&label)])?;
            for (seq, row) in (1u64..).zip(rows) {
                tx.execute(
                    "INSERT INTO settlement_set_aside (period, seq, row_text, reason, outcome) VALUES ($1, $2, $3, $4, $5)",
                    &[
                        Param::Text(&label),
                        int_param(seq, "set-aside row number")?,
                        Param::Text(&row.row),
                        Param::Text(&row.reason),
                        Param::Text(&row.outcome),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// What the settlement of `period` recorded as set aside, in order.
    pub fn set_aside(&mut self, period: Period) -> Result<Vec<SetAsideRecord>, StoreError> {
        let label = period.to_string();
        let rows = self.backend.read(|tx| {
            tx.query(
                "SELECT row_text, reason, outcome FROM settlement_set_aside WHERE period = $1 ORDER BY seq",
                &[Param::Text(&label)],
            )
        })?;
        rows.iter().map(|r| Ok(SetAsideRecord { row: r.text(0)?, reason: r.text(1)?, outcome: r.text(2)? })).collect()
    }

    /// The write-ahead-log checkpoint the stored usage covers.
    pub fn metering_checkpoint(&mut self) -> Result<Checkpoint, StoreError> {
        self.backend.transaction(stored_checkpoint)
    }

    /// Adds a flush of usage and records the checkpoint it covers, in one
    /// transaction: replaying the log from the stored checkpoint then never
    /// counts a flushed event again.
    pub fn record_usage(&mut self, usage: &Usage, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            for (key, flushed) in &usage.direct {
                let period = key.period.to_string();
                let params = [Param::Text(&period), Param::Text(&key.user), Param::Text(&key.site)];
                let existing = tx.query(
                    "SELECT minutes, latest_minute, recent_minutes, service_ms, requests FROM usage_direct WHERE period = $1 AND user_id = $2 AND site = $3",
                    &params,
                )?;
                let mut merged = match existing.first() {
                    None => DirectUsage::default(),
                    Some(row) => direct_usage(row, 0)?,
                };
                merged.minutes.merge(&flushed.minutes);
                // Saturating: times and counts that weigh a split, not money.
                merged.service_ms = merged.service_ms.saturating_add(flushed.service_ms);
                merged.requests = merged.requests.saturating_add(flushed.requests);
                let (count, latest, recent) = merged.minutes.to_parts();
                tx.execute("DELETE FROM usage_direct WHERE period = $1 AND user_id = $2 AND site = $3", &params)?;
                tx.execute(
                    "INSERT INTO usage_direct (period, user_id, site, minutes, latest_minute, recent_minutes, service_ms, requests) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        params[0],
                        params[1],
                        params[2],
                        Param::Int(i64::from(count)),
                        Param::Int(i64::from(latest)),
                        // A bitmask: its 64 bits stored as they are.
                        Param::Int(recent as i64),
                        Param::Int(merged.service_ms.min(i64::MAX as u64) as i64),
                        Param::Int(merged.requests.min(i64::MAX as u64) as i64),
                    ],
                )?;
            }
            for (key, ms) in &usage.calls {
                let period = key.period.to_string();
                let params = [Param::Text(&period), Param::Text(&key.user), Param::Text(&key.site), Param::Text(&key.service)];
                let existing = tx.query(
                    "SELECT service_ms FROM usage_calls WHERE period = $1 AND user_id = $2 AND site = $3 AND service = $4",
                    &params,
                )?;
                let stored = match existing.first() {
                    None => 0,
                    Some(row) => row.u64(0)?,
                };
                // Saturating: a time that weighs a split, not money.
                let total = stored.saturating_add(*ms);
                tx.execute("DELETE FROM usage_calls WHERE period = $1 AND user_id = $2 AND site = $3 AND service = $4", &params)?;
                tx.execute(
                    "INSERT INTO usage_calls (period, user_id, site, service, service_ms) VALUES ($1, $2, $3, $4, $5)",
                    &[params[0], params[1], params[2], params[3], Param::Int(total.min(i64::MAX as u64) as i64)],
                )?;
            }
            // Each writer's segment only moves forward: a row per writer.
            let mut stored = stored_checkpoint(tx)?;
            stored.extend(checkpoint);
            for (&writer, &segment) in &stored.flushed {
                tx.execute("DELETE FROM metering_checkpoint WHERE writer = $1", &[Param::Int(i64::from(writer))])?;
                tx.execute(
                    "INSERT INTO metering_checkpoint (writer, segment) VALUES ($1, $2)",
                    &[Param::Int(i64::from(writer)), int_param(segment, "log segment")?],
                )?;
            }
            Ok(())
        })
    }

    /// The stored usage of `period`.
    pub fn usage(&mut self, period: Period) -> Result<Usage, StoreError> {
        let label = period.to_string();
        let (direct, calls) = self.backend.transaction(|tx| {
            let direct = tx.query(
                "SELECT minutes, latest_minute, recent_minutes, service_ms, requests, user_id, site FROM usage_direct WHERE period = $1",
                &[Param::Text(&label)],
            )?;
            let calls =
                tx.query("SELECT user_id, site, service, service_ms FROM usage_calls WHERE period = $1", &[Param::Text(&label)])?;
            Ok((direct, calls))
        })?;
        let mut usage = Usage::default();
        for row in direct {
            usage.direct.insert(DirectKey { period, user: row.text(5)?, site: row.text(6)? }, direct_usage(&row, 0)?);
        }
        for row in calls {
            usage
                .calls
                .insert(CallKey { period, user: row.text(0)?, site: row.text(1)?, service: row.text(2)? }, row.u64(3)?);
        }
        Ok(usage)
    }
}

/// A `usage_direct` row's minutes, latest minute, recent minutes, service
/// time and requests, from column `first` on.
fn direct_usage(row: &Row, first: usize) -> Result<DirectUsage, StoreError> {
    let (count, latest, recent) = (row.u32(first)?, row.u32(first + 1)?, row.bits64(first + 2)?);
    let minutes = MinuteSet::from_parts(count, latest, recent).ok_or_else(|| {
        row.corrupt(first, format!("{count} minutes, latest {latest}, recent {recent:#x} do not agree"))
    })?;
    Ok(DirectUsage { minutes, service_ms: row.u64(first + 3)?, requests: row.u64(first + 4)? })
}

fn stored_checkpoint(tx: &mut Tx<'_>) -> Result<Checkpoint, StoreError> {
    let rows = tx.query("SELECT writer, segment FROM metering_checkpoint", &[])?;
    let mut checkpoint = Checkpoint::default();
    for row in rows {
        checkpoint.flushed.insert(row.u32(0)?, row.u64(1)?);
    }
    Ok(checkpoint)
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (UTC).
fn civil_date(days: i64) -> String {
    let (year, month, day) = commons_core::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}
