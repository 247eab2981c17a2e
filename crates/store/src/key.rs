//! The node's ed25519 signing key, kept in the data directory.

use std::io::Write;
use std::path::Path;

use ledger::Signer;

use crate::StoreError;

const KEY_FILE: &str = "node.key";

/// Loads `DIR/node.key` (64 hex digits of seed), creating it with fresh
/// randomness and mode 0600 on first use. A key file others can read is
/// refused: whoever reads it can sign blocks.
pub fn load_or_create_key(dir: &Path) -> Result<Signer, StoreError> {
    let path = dir.join(KEY_FILE);
    let fail = |reason: String| StoreError::Key { path: path.clone(), reason };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).map_err(|e| fail(e.to_string()))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(fail(format!("mode {:o} lets others read it; run chmod 600 on it", mode & 0o777)));
                }
            }
            let seed: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| fail("not 64 hex digits".into()))?;
            Ok(Signer::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| fail(format!("no randomness: {e}")))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&path).map_err(|e| fail(e.to_string()))?;
            file.write_all(hex::encode(seed).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail(e.to_string()))?;
            Ok(Signer::from_seed(seed))
        }
        Err(e) => Err(fail(e.to_string())),
    }
}
