//! The two databases behind one interface, with the same SQL and the same
//! migrations. The only dialect difference, the binary column type, is the
//! `{bytes}` placeholder in the migrations. (`$1` parameters work in both.)
//!
//! # Invariants
//! - Migrations run in order, each once, each in one transaction with the
//!   row in `schema_migrations` that records it: a crash leaves the schema
//!   at one migration or the next, never between.
//! - SQLite enforces foreign keys on every connection (`PRAGMA
//!   foreign_keys`), as PostgreSQL always does, so a list's rows go with
//!   their record on both.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ledger::LedgerConfig;

use crate::sql::{Param, Tx, int_param, postgres_error, postgres_execute, sqlite_error, sqlite_execute};
use crate::{Location, StoreError};

/// Schema changes, in order; each runs once, in a transaction, recorded in
/// `schema_migrations`. Never edit one that has shipped: add another.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(
        "
    CREATE TABLE ledger_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE ledger_blocks (
        height BIGINT PRIMARY KEY,
        hash {bytes} NOT NULL,
        body {bytes} NOT NULL
    );
",
    ),
    Migration::Sql(
        "
    CREATE TABLE platform_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO platform_meta (key, value) VALUES ('registry_version', '0'), ('metering_checkpoint', '');
    CREATE TABLE sites (
        id TEXT PRIMARY KEY,
        instances TEXT NOT NULL,
        custom_hosts TEXT NOT NULL,
        anonymous BIGINT NOT NULL
    );
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        premium BIGINT NOT NULL
    );
    CREATE TABLE usage_direct (
        period TEXT NOT NULL,
        user_id TEXT NOT NULL,
        site TEXT NOT NULL,
        minutes BIGINT NOT NULL,
        latest_minute BIGINT NOT NULL,
        recent_minutes BIGINT NOT NULL,
        requests BIGINT NOT NULL,
        service_ms BIGINT NOT NULL,
        PRIMARY KEY (period, user_id, site)
    );
    CREATE TABLE usage_calls (
        period TEXT NOT NULL,
        user_id TEXT NOT NULL,
        site TEXT NOT NULL,
        service TEXT NOT NULL,
        service_ms BIGINT NOT NULL,
        PRIMARY KEY (period, user_id, site, service)
    );
",
    ),
    Migration::Sql(
        "
    ALTER TABLE sites ADD COLUMN free_requests_per_minute BIGINT;
    ALTER TABLE sites ADD COLUMN free_concurrent_requests BIGINT;
    ALTER TABLE sites ADD COLUMN premium_prefixes TEXT NOT NULL DEFAULT '';
",
    ),
    Migration::Sql(
        "
    ALTER TABLE sites ADD COLUMN operator TEXT NOT NULL DEFAULT '';
    ALTER TABLE sites ADD COLUMN project TEXT NOT NULL DEFAULT '';
    ALTER TABLE sites ADD COLUMN provider_share_bps BIGINT NOT NULL DEFAULT 3000;
    ALTER TABLE sites ADD COLUMN developer_share_bps BIGINT NOT NULL DEFAULT 2000;
    ALTER TABLE sites ADD COLUMN providers TEXT NOT NULL DEFAULT '';
    ALTER TABLE api_tokens DROP COLUMN premium;
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        deps TEXT NOT NULL,
        repository TEXT NOT NULL
    );
    CREATE TABLE accounts (
        user_id TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        site TEXT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    CREATE TABLE subscriptions (
        period TEXT NOT NULL,
        user_id TEXT NOT NULL,
        paid_cents BIGINT NOT NULL,
        PRIMARY KEY (period, user_id)
    );
",
    ),
    Migration::Sql(
        "
    ALTER TABLE sites ADD COLUMN health_path TEXT NOT NULL DEFAULT '';
",
    ),
    Migration::Sql(
        "
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        location TEXT NOT NULL,
        capacity_mb BIGINT NOT NULL
    );
    CREATE TABLE history (
        seq BIGINT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        action TEXT NOT NULL,
        site TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE TABLE resource_usage (
        period TEXT NOT NULL,
        site TEXT NOT NULL,
        provider TEXT NOT NULL,
        cpu_ms BIGINT NOT NULL,
        memory_mib_s BIGINT NOT NULL,
        PRIMARY KEY (period, site, provider)
    );
",
    ),
    Migration::Sql(
        "
    CREATE TABLE deployments (
        site TEXT PRIMARY KEY,
        app_dir TEXT NOT NULL,
        nodes TEXT NOT NULL,
        operator TEXT NOT NULL,
        provider_share_bps BIGINT NOT NULL,
        developer_share_bps BIGINT NOT NULL,
        anonymous BIGINT NOT NULL,
        generation BIGINT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL
    );
",
    ),
    Migration::Sql(
        "
    ALTER TABLE nodes ADD COLUMN join_token_hash TEXT NOT NULL DEFAULT '';
",
    ),
    Migration::Sql(
        "
    ALTER TABLE deployments ADD COLUMN hosts TEXT NOT NULL DEFAULT '';
",
    ),
    // 10: lists as child rows, and the metering checkpoint as a row per
    // writer.
    Migration::Code(lists_as_rows),
    // 11: each site's last generation, kept when its deployment is removed:
    // a generation is never reused, so no agent mistakes an old instance
    // for a new request's (found by the control simulation).
    Migration::Sql(
        "
    CREATE TABLE site_generations (
        site TEXT PRIMARY KEY,
        last BIGINT NOT NULL
    );
    INSERT INTO site_generations (site, last) SELECT site, generation FROM deployments;
",
    ),
    // When each session and API token began: a user's oldest session goes
    // first past their cap, and a user's tokens are listed in order.
    Migration::Sql(
        "
    ALTER TABLE sessions ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE api_tokens ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;
",
    ),
    // A removed site is kept as a record, marked with when (0: live), so
    // that the periods it was used in still settle; and what a settlement
    // recorded on the ledger set aside, per period.
    Migration::Sql(
        "
    ALTER TABLE sites ADD COLUMN removed_ms BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE settlement_set_aside (
        period TEXT NOT NULL,
        seq BIGINT NOT NULL,
        row_text TEXT NOT NULL,
        reason TEXT NOT NULL,
        outcome TEXT NOT NULL,
        PRIMARY KEY (period, seq)
    );
",
    ),
    // What the control plane keeps about a joined node's reports: the
    // cores that bound its CPU claims, what it had refused, and when its
    // last resource report was accepted.
    Migration::Sql(
        "
    CREATE TABLE node_reports (
        node TEXT PRIMARY KEY,
        cores BIGINT NOT NULL,
        refused BIGINT NOT NULL,
        usage_at_ms BIGINT NOT NULL
    );
",
    ),
    // Sites' configuration: a value per (site, name), encrypted with
    // config.key (nonce and ciphertext), whether it is a secret and
    // whether the platform generated it.
    Migration::Sql(
        "
    CREATE TABLE site_config (
        site TEXT NOT NULL,
        name TEXT NOT NULL,
        sealed {bytes} NOT NULL,
        secret BIGINT NOT NULL,
        generated BIGINT NOT NULL,
        PRIMARY KEY (site, name)
    );
",
    ),
    // A site's apps may keep their own authentication (`Authorization`
    // headers that are not the platform's) and read the user's per-site
    // pseudonym from a header of their choosing.
    Migration::Sql(
        "
    ALTER TABLE sites ADD COLUMN pass_authorization BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE sites ADD COLUMN user_header TEXT NOT NULL DEFAULT '';
",
    ),
    // The app a site ran before its current one (a kept artifact), for
    // `commons rollback`.
    Migration::Sql(
        "
    CREATE TABLE deployment_previous (
        site TEXT PRIMARY KEY,
        app_dir TEXT NOT NULL
    );
",
    ),
];

/// The number of the last migration: the schema version a store opened by
/// this code is at.
pub(crate) const HEAD: usize = MIGRATIONS.len();

/// The PostgreSQL advisory lock key that serializes migrations ("OCMG").
const MIGRATION_LOCK: i64 = 0x4f43_4d47;

/// One schema change.
enum Migration {
    /// Statements; `{bytes}` stands for the binary column type.
    Sql(&'static str),
    /// Code, for a change whose data cannot be moved by the same SQL on
    /// both databases. It must only use SQL of its own, never the store's
    /// current code, so that it means the same thing for ever.
    Code(fn(&mut Tx<'_>) -> Result<(), StoreError>),
}

/// The tables of migration 10. Each list becomes a table of
/// `(owner, position, item[, weight])`; its rows go with their record.
const LISTS_AS_ROWS_TABLES: &str = "
    CREATE TABLE site_instances (
        site TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        address TEXT NOT NULL,
        PRIMARY KEY (site, position)
    );
    CREATE TABLE site_hosts (
        site TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        host TEXT NOT NULL,
        PRIMARY KEY (site, position)
    );
    CREATE TABLE site_premium_prefixes (
        site TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        prefix TEXT NOT NULL,
        PRIMARY KEY (site, position)
    );
    CREATE TABLE site_providers (
        site TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        provider TEXT NOT NULL,
        weight BIGINT NOT NULL,
        PRIMARY KEY (site, position)
    );
    CREATE TABLE project_dependencies (
        project TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        dependency TEXT NOT NULL,
        weight BIGINT NOT NULL,
        PRIMARY KEY (project, position)
    );
    CREATE TABLE deployment_nodes (
        site TEXT NOT NULL REFERENCES deployments (site) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        node TEXT NOT NULL,
        PRIMARY KEY (site, position)
    );
    CREATE TABLE deployment_hosts (
        site TEXT NOT NULL REFERENCES deployments (site) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        host TEXT NOT NULL,
        PRIMARY KEY (site, position)
    );
    CREATE TABLE metering_checkpoint (
        writer BIGINT PRIMARY KEY,
        segment BIGINT NOT NULL
    );
";

/// The comma-joined columns migration 10 replaces.
const LISTS_AS_ROWS_DROPS: &str = "
    ALTER TABLE sites DROP COLUMN instances;
    ALTER TABLE sites DROP COLUMN custom_hosts;
    ALTER TABLE sites DROP COLUMN premium_prefixes;
    ALTER TABLE sites DROP COLUMN providers;
    ALTER TABLE projects DROP COLUMN deps;
    ALTER TABLE deployments DROP COLUMN nodes;
    ALTER TABLE deployments DROP COLUMN hosts;
";

/// Migration 10: the lists stored as comma-joined TEXT (`a,b`, weighted
/// `a:1,b:2`) become child rows in their order, the metering checkpoint
/// (`writer:segment,…` in `platform_meta`) a row per writer, and the old
/// columns go. Code, because the two databases split text with different
/// functions; each old value is read exactly as the code before it read
/// it (empty items skipped, a weight after the last colon).
fn lists_as_rows(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    tx.execute_batch(LISTS_AS_ROWS_TABLES)?;
    for row in tx.query("SELECT id, instances, custom_hosts, premium_prefixes, providers FROM sites", &[])? {
        let site = row.text(0)?;
        let insert =
            |table: &str, column: &str| format!("INSERT INTO {table} (site, position, {column}) VALUES ($1, $2, $3)");
        insert_items(tx, &insert("site_instances", "address"), &site, &joined_items(&row.text(1)?))?;
        insert_items(tx, &insert("site_hosts", "host"), &site, &joined_items(&row.text(2)?))?;
        insert_items(tx, &insert("site_premium_prefixes", "prefix"), &site, &joined_items(&row.text(3)?))?;
        let providers = row.text(4)?;
        let providers = joined_weighted(&providers).ok_or_else(|| row.corrupt(4, "not name:weight,…"))?;
        insert_weighted(
            tx,
            "INSERT INTO site_providers (site, position, provider, weight) VALUES ($1, $2, $3, $4)",
            &site,
            &providers,
        )?;
    }
    for row in tx.query("SELECT id, deps FROM projects", &[])? {
        let deps = row.text(1)?;
        let deps = joined_weighted(&deps).ok_or_else(|| row.corrupt(1, "not name:weight,…"))?;
        insert_weighted(
            tx,
            "INSERT INTO project_dependencies (project, position, dependency, weight) VALUES ($1, $2, $3, $4)",
            &row.text(0)?,
            &deps,
        )?;
    }
    for row in tx.query("SELECT site, nodes, hosts FROM deployments", &[])? {
        let site = row.text(0)?;
        let insert =
            |table: &str, column: &str| format!("INSERT INTO {table} (site, position, {column}) VALUES ($1, $2, $3)");
        insert_items(tx, &insert("deployment_nodes", "node"), &site, &joined_items(&row.text(1)?))?;
        insert_items(tx, &insert("deployment_hosts", "host"), &site, &joined_items(&row.text(2)?))?;
    }
    for row in tx.query("SELECT value FROM platform_meta WHERE key = 'metering_checkpoint'", &[])? {
        let pairs = row.text(0)?;
        let pairs = joined_weighted(&pairs).ok_or_else(|| row.corrupt(0, "not writer:segment,…"))?;
        for (writer, segment) in pairs {
            let writer = writer.parse::<u32>().map_err(|_| row.corrupt(0, format!("{writer:?} is not a writer")))?;
            tx.execute(
                "INSERT INTO metering_checkpoint (writer, segment) VALUES ($1, $2)",
                &[Param::Int(i64::from(writer)), int_param(segment, "log segment")?],
            )?;
        }
    }
    tx.execute("DELETE FROM platform_meta WHERE key = 'metering_checkpoint'", &[])?;
    tx.execute_batch(LISTS_AS_ROWS_DROPS)
}

/// `a,b` as `[a, b]`, skipping empty items.
fn joined_items(text: &str) -> Vec<&str> {
    text.split(',').filter(|item| !item.is_empty()).collect()
}

/// `a:1,b:2` as `[(a, 1), (b, 2)]`; `None` if an item is not `name:number`.
fn joined_weighted(text: &str) -> Option<Vec<(&str, u64)>> {
    joined_items(text)
        .into_iter()
        .map(|item| item.rsplit_once(':').and_then(|(name, weight)| Some((name, weight.parse().ok()?))))
        .collect()
}

fn insert_items(tx: &mut Tx<'_>, sql: &str, owner: &str, items: &[&str]) -> Result<(), StoreError> {
    for (position, item) in (0..).zip(items) {
        tx.execute(sql, &[Param::Text(owner), Param::Int(position), Param::Text(item)])?;
    }
    Ok(())
}

fn insert_weighted(tx: &mut Tx<'_>, sql: &str, owner: &str, items: &[(&str, u64)]) -> Result<(), StoreError> {
    for (position, (item, weight)) in (0..).zip(items) {
        tx.execute(sql, &[Param::Text(owner), Param::Int(position), Param::Text(item), int_param(*weight, "weight")?])?;
    }
    Ok(())
}

/// A stored block: height, hash, encoded body.
pub(crate) type StoredBlock = (u64, Vec<u8>, Vec<u8>);

pub(crate) enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Backend {
    /// Connects to the database `location` names (SQLite's file is created
    /// on first use; its directory must exist).
    pub(crate) fn open(location: &Location) -> Result<Backend, StoreError> {
        match &location.database {
            Some(url) => Backend::postgres(url),
            None => Backend::sqlite(&crate::sqlite_path(&location.data_dir)),
        }
        .map_err(|reason| StoreError::Open { location: location.describe(), reason })
    }

    fn sqlite(path: &Path) -> Result<Backend, String> {
        // Created 0600 (SQLite gives its -wal and -shm files the same mode).
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .and_then(|_| crate::keep_private(path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // Its journal too, when an older version left it readable.
        for suffix in ["-wal", "-shm"] {
            let mut journal = path.as_os_str().to_owned();
            journal.push(suffix);
            let journal = std::path::PathBuf::from(journal);
            if journal.exists() {
                crate::keep_private(&journal).map_err(|e| format!("{}: {e}", journal.display()))?;
            }
        }
        let connection = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
            )
            .map_err(|e| e.to_string())?;
        Ok(Backend::Sqlite(connection))
    }

    fn postgres(url: &str) -> Result<Backend, String> {
        let client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
            let detail = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
            format!("{e}{detail}")
        })?;
        Ok(Backend::Postgres(client))
    }

    fn bytes_type(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "BLOB",
            Backend::Postgres(_) => "BYTEA",
        }
    }

    /// Runs every migration not yet applied, all in one transaction: a
    /// store opened by two processes at once (or by one whose killed
    /// predecessor's commit is still landing) migrates once. On PostgreSQL
    /// an advisory lock serializes them; on SQLite a second writer waits or
    /// fails busy, changing nothing.
    pub(crate) fn migrate(&mut self) -> Result<(), StoreError> {
        self.migrate_to(HEAD)
    }

    /// Runs the migrations up to number `head` (counting from 1).
    pub(crate) fn migrate_to(&mut self, head: usize) -> Result<(), StoreError> {
        let bytes = self.bytes_type();
        let postgres = matches!(self, Backend::Postgres(_));
        self.transaction(|tx| {
            if postgres {
                tx.execute_batch(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
            }
            tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")?;
            let applied = tx
                .query("SELECT version FROM schema_migrations", &[])?
                .iter()
                .map(|row| row.int(0))
                .collect::<Result<Vec<_>, _>>()?;
            for (version, migration) in (1..).zip(&MIGRATIONS[..head]) {
                if applied.contains(&version) {
                    continue;
                }
                match migration {
                    Migration::Sql(sql) => tx.execute_batch(&sql.replace("{bytes}", bytes))?,
                    Migration::Code(change) => change(tx)?,
                }
                tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[Param::Int(version)])?;
            }
            Ok(())
        })
    }

    pub(crate) fn meta(&mut self) -> Result<Option<LedgerConfig>, StoreError> {
        let rows = self.transaction(|tx| tx.query("SELECT key, value FROM ledger_meta", &[]))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut pairs = Vec::with_capacity(rows.len());
        for row in &rows {
            pairs.push((row.text(0)?, row.text(1)?));
        }
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let corrupt = |key: &str| StoreError::Corrupt {
            what: format!("ledger_meta {key}"),
            detail: "missing or malformed".into(),
        };
        let signer = get("signer")
            .and_then(|hex| hex::decode(hex).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| corrupt("signer"))?;
        Ok(Some(LedgerConfig {
            currency: get("currency").filter(|c| ledger::is_currency_code(c)).ok_or_else(|| corrupt("currency"))?,
            initial_cents_per_cc: get("initial_cents_per_cc")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| corrupt("initial_cents_per_cc"))?,
            signer,
        }))
    }

    pub(crate) fn init_meta(&mut self, config: &LedgerConfig) -> Result<(), StoreError> {
        let rows = [
            ("currency", config.currency.clone()),
            ("initial_cents_per_cc", config.initial_cents_per_cc.to_string()),
            ("signer", hex::encode(config.signer)),
        ];
        self.transaction(|tx| {
            for (key, value) in &rows {
                tx.execute(
                    "INSERT INTO ledger_meta (key, value) VALUES ($1, $2)",
                    &[Param::Text(key), Param::Text(value)],
                )?;
            }
            Ok(())
        })
    }

    /// Inserts a block in one statement (its own transaction): a block is
    /// stored whole or not at all.
    pub(crate) fn insert_block(&mut self, height: u64, hash: &[u8; 32], body: &[u8]) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO ledger_blocks (height, hash, body) VALUES ($1, $2, $3)";
        let params = [int_param(height, "block height")?, Param::Bytes(hash), Param::Bytes(body)];
        match self {
            Backend::Sqlite(c) => sqlite_execute(c, SQL, &params),
            Backend::Postgres(c) => postgres_execute(c, SQL, &params),
        }
        .map(drop)
    }

    pub(crate) fn blocks(&mut self) -> Result<Vec<StoredBlock>, StoreError> {
        let rows =
            self.transaction(|tx| tx.query("SELECT height, hash, body FROM ledger_blocks ORDER BY height", &[]))?;
        rows.iter().map(|row| Ok((row.u64(0)?, row.bytes(1)?, row.bytes(2)?))).collect()
    }

    pub(crate) fn block(&mut self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let height = int_param(height, "block height")?;
        let rows = self.transaction(|tx| tx.query("SELECT body FROM ledger_blocks WHERE height = $1", &[height]))?;
        rows.first().map(|row| row.bytes(0)).transpose()
    }

    /// Runs `f`, which only reads, in a transaction that sees one snapshot
    /// of the database throughout: a record and its lists, read by several
    /// statements, always agree. (SQLite's transactions do; PostgreSQL's
    /// default, read committed, takes a snapshot per statement.)
    pub(crate) fn read<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut tx = match self {
            Backend::Sqlite(c) => Tx::Sqlite(c.transaction().map_err(sqlite_error)?),
            Backend::Postgres(c) => Tx::Postgres(
                c.build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .map_err(postgres_error)?,
            ),
        };
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` in a transaction, committed if it returns `Ok`.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = match self {
            Backend::Sqlite(c) => Tx::Sqlite(c.transaction().map_err(sqlite_error)?),
            Backend::Postgres(c) => Tx::Postgres(c.transaction().map_err(postgres_error)?),
        };
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }
}
