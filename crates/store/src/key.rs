//! The data directory's secret keys, one per purpose, so that stealing one
//! gives nothing of the other:
//! - `node.key`: the node's ed25519 signing key (ledger blocks);
//! - `gateway.key`: the gateway's secret behind users' per-site pseudonyms
//!   and provenance tokens;
//! - `config.key`: the key sites' configuration values and secrets are
//!   sealed with in the database.
//!
//! Each is 64 hex digits in a file of mode 0600, created with fresh
//! randomness on first use; a key file others can read is refused.
//!
//! A data directory from before `gateway.key` derived the gateway's secrets
//! from `node.key`. Its pseudonyms must not change (sites keep their users'
//! data by them), so it is migrated once: the pseudonym secret it derived is
//! written into `gateway.key`. From then on the two files are independent,
//! but that one secret stays computable from the node key of that time; an
//! operator who wants it not to be writes 64 fresh random hex digits into
//! `gateway.key`, and every user is then new to every site.

use std::io::Write;
use std::path::Path;

use ledger::Signer;

use crate::StoreError;

const KEY_FILE: &str = "node.key";
const GATEWAY_KEY_FILE: &str = "gateway.key";
const CONFIG_KEY_FILE: &str = "config.key";

/// Loads `DIR/config.key`, creating it with fresh randomness and mode 0600
/// on first use.
pub fn load_or_create_config_key(dir: &Path) -> Result<[u8; 32], StoreError> {
    let path = dir.join(CONFIG_KEY_FILE);
    match read_secret(&path)? {
        Some(key) => Ok(key),
        None => write_new_secret(&path, None),
    }
}

/// The gateway's secrets, from `gateway.key`.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewaySecrets {
    /// The key of users' per-site pseudonyms: `gateway.key` itself.
    pub pseudonyms: [u8; 32],
    /// The key of provenance tokens, derived from `gateway.key`.
    pub provenance: [u8; 32],
}

/// Loads `DIR/node.key`, creating it with fresh randomness and mode 0600 on
/// first use, and then `DIR/gateway.key` beside it, also fresh: a new data
/// directory's keys are independent. A key file others can read is
/// refused: whoever reads it can sign blocks.
pub fn load_or_create_key(dir: &Path) -> Result<Signer, StoreError> {
    let path = dir.join(KEY_FILE);
    if let Some(seed) = read_secret(&path)? {
        return Ok(Signer::from_seed(seed));
    }
    let seed = write_new_secret(&path, None)?;
    if read_secret(&dir.join(GATEWAY_KEY_FILE))?.is_none() {
        write_new_secret(&dir.join(GATEWAY_KEY_FILE), None)?;
    }
    Ok(Signer::from_seed(seed))
}

/// Loads the gateway's secrets from `DIR/gateway.key`. A data directory
/// without one predates it (a new one gets it with its node key): it is
/// migrated by writing the pseudonym secret `node` derived there, so that
/// pseudonyms stay what they were (see the module's documentation).
pub fn load_gateway_secrets(dir: &Path, node: &Signer) -> Result<GatewaySecrets, StoreError> {
    let path = dir.join(GATEWAY_KEY_FILE);
    let key = match read_secret(&path)? {
        Some(key) => key,
        None => write_new_secret(&path, Some(node.derive_secret(b"pseudonyms")))?,
    };
    let mut provenance = blake3::Hasher::new_derive_key("onecommons gateway provenance v1");
    provenance.update(&key);
    Ok(GatewaySecrets { pseudonyms: key, provenance: *provenance.finalize().as_bytes() })
}

/// The 32 bytes in a key file, or `None` if there is no such file.
fn read_secret(path: &Path) -> Result<Option<[u8; 32]>, StoreError> {
    let fail = |reason: String| StoreError::Key { path: path.to_owned(), reason };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!("mode {:o} lets others read it; run chmod 600 on it", mode & 0o777)));
        }
    }
    let secret = hex::decode(text.trim()).ok().and_then(|bytes| bytes.try_into().ok());
    secret.map(Some).ok_or_else(|| fail("not 64 hex digits".into()))
}

/// Creates the key file `path` (mode 0600, never over an existing one)
/// holding `secret`, or fresh randomness; returns what it holds.
fn write_new_secret(path: &Path, secret: Option<[u8; 32]>) -> Result<[u8; 32], StoreError> {
    let fail = |reason: String| StoreError::Key { path: path.to_owned(), reason };
    let secret = match secret {
        Some(secret) => secret,
        None => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| fail(format!("no randomness: {e}")))?;
            seed
        }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| fail(e.to_string()))?;
    file.write_all(hex::encode(secret).as_bytes()).and_then(|()| file.sync_all()).map_err(|e| fail(e.to_string()))?;
    Ok(secret)
}
