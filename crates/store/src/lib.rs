//! Durable storage: the embedded SQLite default (in a data directory, no
//! setup) and PostgreSQL (for operators who outgrow one machine), behind
//! one code path with one set of migrations.
//!
//! The ledger is stored as its blocks, one row each, in their canonical
//! encoding; balances are derived by applying them. Opening a store reads
//! every block back through [`ledger::Ledger::apply`], so what is on disk
//! is checked again each time it is loaded.
//!
//! # Invariants
//! - A block is written in one statement (one transaction): after a crash
//!   the store holds a prefix of whole blocks.
//! - [`Store::append`] returns only once the block is committed durably
//!   (SQLite `synchronous=FULL` in WAL mode; PostgreSQL's synchronous
//!   commit): an acknowledged batch survives any crash.
//! - The node's signing key lives in `DATA/node.key`, the gateway's secret
//!   (pseudonyms, provenance) in `DATA/gateway.key`, each created on first
//!   use with mode 0600 and refused if others can read it; neither is
//!   derived from the other (see `key` for directories from before).
//! - What is read back is what was written, or an error: a NULL, a wrong
//!   type or a value out of range is [`StoreError::Corrupt`] naming the
//!   table and column, never a default (see `sql`).
//! - The lists inside records (a site's instances, hosts, premium prefixes
//!   and providers; a project's dependencies; a deployment's nodes and
//!   hosts) are child rows in order, replaced in the record's transaction
//!   (see `lists`); no item is ever joined with or split on a separator.

#![forbid(unsafe_code)]

mod backend;
mod config;
mod key;
mod lists;
mod people;
mod platform;
mod runtime;
mod sql;
#[cfg(test)]
mod upgrade_test;

use std::path::{Path, PathBuf};

use ledger::{AppendOutcome, Block, Ledger, LedgerConfig, Rejection, Signer, Transfer};

use backend::Backend;
pub use config::{CONFIG_VALUE_BYTES_MAX, ConfigEntry};
pub use key::{GatewaySecrets, load_gateway_secrets, load_or_create_key};
pub use people::{AccountRecord, SessionRecord};
pub use platform::{ProjectRecord, SetAsideRecord, SiteRecord, TOKENS_PER_USER_MAX, TokenRecord};
pub use runtime::{DeploymentRecord, HistoryEntry, NODE_CORES_DEFAULT, NodeRecord, NodeReports, ResourceTotals};

/// Where a store lives.
#[derive(Clone, Debug)]
pub struct Location {
    /// The data directory: the node key, and the SQLite database unless
    /// `database` is given.
    pub data_dir: PathBuf,
    /// A `postgres://` URL to use instead of the embedded SQLite.
    pub database: Option<String>,
}

impl Location {
    /// `--data DIR` (default `./commons-data`) and `--database URL`.
    pub fn new(data_dir: Option<PathBuf>, database: Option<String>) -> Location {
        Location { data_dir: data_dir.unwrap_or_else(|| PathBuf::from("commons-data")), database }
    }

    /// What to call this store in messages.
    pub fn describe(&self) -> String {
        match &self.database {
            Some(url) => redact(url),
            None => self.data_dir.join(SQLITE_FILE).display().to_string(),
        }
    }
}

const SQLITE_FILE: &str = "commons.db";

/// What can go wrong with a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or connected to at all.
    #[error("cannot open {location}: {reason}")]
    Open { location: String, reason: String },
    /// The database was unreachable or busy: the connection was lost,
    /// SQLite's file could not be read or written, the server is shutting
    /// down. A retry later may succeed (a write in flight when a connection
    /// was lost may or may not have been committed).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A write broke a constraint of the schema (a key already taken, a
    /// reference to a missing row): retrying the same write cannot help.
    #[error("the database refused a write: {0}")]
    Constraint(String),
    /// Any other error the database reported.
    #[error("the database: {0}")]
    Database(String),
    /// A key file (`node.key`, `gateway.key`) is unreadable, malformed or
    /// readable by others.
    #[error("the key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// A stored block does not decode or does not match its stored hash.
    #[error("stored block {height} is corrupt: {reason}")]
    CorruptBlock { height: u64, reason: String },
    /// A stored value the store would never have written: NULL, the wrong
    /// type, out of range, or unparseable. `what` names it, usually as
    /// `table.column`.
    #[error("the stored {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    /// A value to write is larger than the databases' 64-bit signed
    /// integers hold.
    #[error("{what} {value} is too large to store")]
    OutOfRange { what: &'static str, value: u64 },
    /// The stored blocks decode but do not form a valid ledger.
    #[error("the stored ledger does not verify: {0}")]
    Invalid(#[from] ledger::LedgerError),
    /// This node may read the ledger but its key is not the one that signs it.
    #[error("this node's key {node} is not the ledger's signer {ledger}: it can read this ledger but not append to it")]
    NotSigner { node: String, ledger: String },
    /// The ledger refused the batch.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// A site id whose removed record is kept for an unsettled period:
    /// taking it again would hand that period's pay to the new site.
    #[error("{0}")]
    SiteKept(String),
}

/// An open store: the database, the ledger read back from it, and this
/// node's signing key.
pub struct Store {
    backend: Backend,
    ledger: Ledger,
    signer: Signer,
    /// Seals sites' configuration (`config.key`).
    config_key: [u8; 32],
    location: Location,
}

/// Makes `path` (the data directory, the database) readable and
/// writable by its owner alone: others lose read and write, never search
/// (a confined app's sandbox is made by its own user, who must find its
/// instance's directory inside; it can open nothing else there).
pub fn keep_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o066 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7711))?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating on first use) the store at `location`, runs its
    /// migrations, and reads the whole ledger back, checking every block.
    pub fn open(location: &Location) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&location.data_dir).and_then(|()| keep_private(&location.data_dir)).map_err(|e| {
            StoreError::Open { location: location.data_dir.display().to_string(), reason: e.to_string() }
        })?;
        let signer = load_or_create_key(&location.data_dir)?;
        let config_key = key::load_or_create_config_key(&location.data_dir)?;
        let mut backend = Backend::open(location)?;
        backend.migrate()?;

        let config = match backend.meta()? {
            Some(config) => config,
            None => {
                let config =
                    LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer.public_key() };
                backend.init_meta(&config)?;
                config
            }
        };
        let mut ledger = Ledger::new(config);
        for (height, hash, body) in backend.blocks()? {
            let block = Block::decode(&body).map_err(|reason| StoreError::CorruptBlock { height, reason })?;
            if block.hash().as_slice() != hash.as_slice() {
                return Err(StoreError::CorruptBlock {
                    height,
                    reason: "the stored hash does not match the block".into(),
                });
            }
            ledger.apply_block(block)?;
        }
        Ok(Store { backend, ledger, signer, config_key, location: location.clone() })
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Records `batch` atomically as the next block, durably, and applies
    /// it; a retry of a recorded batch is a no-op. Nothing changes on error.
    pub fn append(&mut self, batch: Vec<Transfer>, timestamp_ms: u64) -> Result<Option<Block>, StoreError> {
        if self.signer.public_key() != self.ledger.config().signer {
            return Err(StoreError::NotSigner {
                node: hex::encode(self.signer.public_key()),
                ledger: hex::encode(self.ledger.config().signer),
            });
        }
        match self.ledger.prepare(batch, timestamp_ms, &self.signer)? {
            AppendOutcome::AlreadyRecorded => Ok(None),
            AppendOutcome::Sealed(checked) => {
                let block = checked.block();
                self.backend.insert_block(block.header.height, &block.hash(), &block.encode())?;
                self.ledger.apply(&checked).expect("prepare checked the block");
                Ok(Some(checked.into_block()))
            }
        }
    }

    /// Every stored block, in order (read back from the database).
    pub fn blocks(&mut self) -> Result<Vec<Block>, StoreError> {
        self.backend
            .blocks()?
            .into_iter()
            .map(|(height, _, body)| Block::decode(&body).map_err(|reason| StoreError::CorruptBlock { height, reason }))
            .collect()
    }

    /// One stored block.
    pub fn block(&mut self, height: u64) -> Result<Option<Block>, StoreError> {
        match self.backend.block(height)? {
            None => Ok(None),
            Some(body) => Block::decode(&body).map(Some).map_err(|reason| StoreError::CorruptBlock { height, reason }),
        }
    }
}

/// A database URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whether `path` looks like a data directory's database (for tests).
pub fn sqlite_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SQLITE_FILE)
}
