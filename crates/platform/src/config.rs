//! A site's environment: its manifest's `[env]`, with what its operator set
//! (`commons config set`) over it, and the secrets made for it once and
//! kept, sealed, in the store (`store::ConfigEntry`).

use runtime::{EnvValue, Manifest};
use store::{ConfigEntry, Store};

/// The settings `site`'s instances of `manifest` get, by name: the
/// manifest's plain values, then every value its operator set (which win),
/// and for each secret the manifest asks for, the one made for the site,
/// made now if it has none yet (or had it unset, to rotate it).
pub(crate) fn resolve(store: &mut Store, site: &str, manifest: &Manifest) -> anyhow::Result<Vec<(String, String)>> {
    let mut set = store.site_config(site)?;
    for (name, value) in &manifest.env {
        if *value == EnvValue::Secret && !set.iter().any(|e| e.name == *name) {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for {site}'s {name}: {e}"))?;
            let made = ConfigEntry { name: name.clone(), value: hex::encode(bytes), secret: true, generated: true };
            store.set_site_config(site, &made)?;
            set.push(made);
        }
    }
    let mut env: std::collections::BTreeMap<String, String> = manifest
        .env
        .iter()
        .filter_map(|(name, value)| match value {
            EnvValue::Plain(value) => Some((name.clone(), value.clone())),
            EnvValue::Secret => None,
        })
        .collect();
    env.extend(set.into_iter().map(|e| (e.name, e.value)));
    Ok(env.into_iter().collect())
}
