//! The two databases behind one interface, with the same SQL and the same
//! migrations. The only dialect difference, the binary column type, is the
//! `{bytes}` placeholder in the migrations. (`$1` parameters work in both.)

use std::path::Path;

use ledger::LedgerConfig;

use crate::StoreError;
use crate::sql::{Param, Tx, int_param, postgres_error, postgres_execute, sqlite_error, sqlite_execute};

/// Schema changes, in order; each runs once, in a transaction, recorded in
/// `schema_migrations`. Never edit one that has shipped: add another.
const MIGRATIONS: &[&str] = &[
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
    "
    ALTER TABLE sites ADD COLUMN free_requests_per_minute BIGINT;
    ALTER TABLE sites ADD COLUMN free_concurrent_requests BIGINT;
    ALTER TABLE sites ADD COLUMN premium_prefixes TEXT NOT NULL DEFAULT '';
",
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
    "
    ALTER TABLE sites ADD COLUMN health_path TEXT NOT NULL DEFAULT '';
",
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
    "
    ALTER TABLE nodes ADD COLUMN join_token_hash TEXT NOT NULL DEFAULT '';
",
    "
    ALTER TABLE deployments ADD COLUMN hosts TEXT NOT NULL DEFAULT '';
",
];

/// A stored block: height, hash, encoded body.
pub(crate) type StoredBlock = (u64, Vec<u8>, Vec<u8>);

pub(crate) enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Backend {
    pub(crate) fn sqlite(path: &Path) -> Result<Backend, String> {
        let connection = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
            .map_err(|e| e.to_string())?;
        Ok(Backend::Sqlite(connection))
    }

    pub(crate) fn postgres(url: &str) -> Result<Backend, String> {
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

    /// Runs every migration not yet applied, each in its own transaction.
    pub(crate) fn migrate(&mut self) -> Result<(), StoreError> {
        self.migrate_to(MIGRATIONS.len())
    }

    /// Runs the migrations up to number `head` (counting from 1).
    pub(crate) fn migrate_to(&mut self, head: usize) -> Result<(), StoreError> {
        self.transaction(|tx| {
            tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
        })?;
        let applied = self.transaction(|tx| {
            tx.query("SELECT version FROM schema_migrations", &[])?
                .iter()
                .map(|row| row.int(0))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let bytes = self.bytes_type();
        for (version, migration) in (1..).zip(&MIGRATIONS[..head]) {
            if applied.contains(&version) {
                continue;
            }
            self.transaction(|tx| {
                tx.execute_batch(&migration.replace("{bytes}", bytes))?;
                tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[Param::Int(version)])?;
                Ok(())
            })?;
        }
        Ok(())
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
            currency: get("currency").ok_or_else(|| corrupt("currency"))?,
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
