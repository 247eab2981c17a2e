//! Sites' configuration: the values operators set (`commons config set`)
//! and the secrets the platform generates for a manifest's `[env]`, each
//! sealed at rest with XChaCha20-Poly1305 under `config.key`, a key of its
//! own (not the ledger's, not the gateway's): a copy of the database gives
//! none of them, and a value moved to another row (site, name) does not
//! open there, as the row is the cipher's associated data.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::sql::{Param, int_param};
use crate::{Store, StoreError};

/// Bytes of a nonce (random per value: 192 bits never repeat by chance).
const NONCE_BYTES: usize = 24;
/// Longest value a site's configuration keeps, bytes.
pub const CONFIG_VALUE_BYTES_MAX: usize = 16 << 10;

/// One value of a site's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    /// Shown masked by `commons config list`.
    pub secret: bool,
    /// Made by the platform (a manifest's `{ generate = "secret" }`).
    pub generated: bool,
}

impl Store {
    /// `site`'s configuration, by name, opened. A value that does not
    /// open (a damaged row, another key, a row moved) is
    /// [`StoreError::Corrupt`], never skipped.
    pub fn site_config(&mut self, site: &str) -> Result<Vec<ConfigEntry>, StoreError> {
        let rows = self.backend.read(|tx| {
            tx.query(
                "SELECT name, sealed, secret, generated FROM site_config WHERE site = $1 ORDER BY name",
                &[Param::Text(site)],
            )
        })?;
        let cipher = XChaCha20Poly1305::new((&self.config_key).into());
        rows.iter()
            .map(|row| {
                let name = row.text(0)?;
                let sealed = row.bytes(1)?;
                if sealed.len() < NONCE_BYTES {
                    return Err(row.corrupt(1, "shorter than its nonce"));
                }
                let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
                let (secret, generated) = (row.bool(2)?, row.bool(3)?);
                let aad = associated(site, &name, secret, generated);
                let plain = cipher
                    .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
                    .map_err(|_| row.corrupt(1, "does not open with config.key (damaged, moved, or another key)"))?;
                let value = String::from_utf8(plain).map_err(|_| row.corrupt(1, "not text"))?;
                Ok(ConfigEntry { name, value, secret, generated })
            })
            .collect()
    }

    /// Sets `name` of `site`'s configuration to `value`, sealed.
    pub fn set_site_config(&mut self, site: &str, entry: &ConfigEntry) -> Result<(), StoreError> {
        if entry.value.len() > CONFIG_VALUE_BYTES_MAX {
            return Err(StoreError::OutOfRange {
                what: "a configuration value's bytes",
                value: entry.value.len() as u64,
            });
        }
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::Open { location: "randomness".into(), reason: e.to_string() })?;
        let cipher = XChaCha20Poly1305::new((&self.config_key).into());
        let aad = associated(site, &entry.name, entry.secret, entry.generated);
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: entry.value.as_bytes(), aad: &aad })
            .expect("encrypting a bounded value cannot fail");
        let sealed = [nonce.as_slice(), &ciphertext].concat();
        self.backend.transaction(|tx| {
            tx.execute(
                "DELETE FROM site_config WHERE site = $1 AND name = $2",
                &[Param::Text(site), Param::Text(&entry.name)],
            )?;
            tx.execute(
                "INSERT INTO site_config (site, name, sealed, secret, generated) VALUES ($1, $2, $3, $4, $5)",
                &[
                    Param::Text(site),
                    Param::Text(&entry.name),
                    Param::Bytes(&sealed),
                    int_param(u64::from(entry.secret), "a flag")?,
                    int_param(u64::from(entry.generated), "a flag")?,
                ],
            )?;
            Ok(())
        })
    }

    /// Removes `name` from `site`'s configuration; whether it was there.
    pub fn unset_site_config(&mut self, site: &str, name: &str) -> Result<bool, StoreError> {
        self.backend.transaction(|tx| {
            let n = tx.execute(
                "DELETE FROM site_config WHERE site = $1 AND name = $2",
                &[Param::Text(site), Param::Text(name)],
            )?;
            Ok(n > 0)
        })
    }
}

impl Store {
    /// Removes all of `site`'s configuration (the site is gone: its
    /// secrets must not pass to a later site of the same id); how many.
    pub fn remove_site_config(&mut self, site: &str) -> Result<u64, StoreError> {
        self.backend.transaction(|tx| tx.execute("DELETE FROM site_config WHERE site = $1", &[Param::Text(site)]))
    }
}

/// The row a value belongs to, and what it is (a secret, generated), as
/// the cipher's associated data: a flag changed in the database (a secret
/// made to show) makes the value not open.
fn associated(site: &str, name: &str, secret: bool, generated: bool) -> Vec<u8> {
    let flags = [u8::from(secret), u8::from(generated)];
    [b"onecommons site config v1\0".as_slice(), site.as_bytes(), b"\0", name.as_bytes(), b"\0", &flags].concat()
}
