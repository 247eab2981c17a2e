//! `commons config set|unset|list SITE`: a site's settings, in its apps'
//! environment. Its manifest's `[env]` gives plain defaults and secrets the
//! platform makes once; what an operator sets wins. A change rolls the
//! site's instances (a new generation: started, healthy, switched to, the
//! old ones drained), so nothing is served without them meanwhile.

use store::{ConfigEntry, Store};

use crate::{BadInput, StoreArgs};

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Set settings of a site (NAME=VALUE …); its instances roll to take them
    Set {
        site: String,
        #[arg(required = true, value_name = "NAME=VALUE")]
        values: Vec<String>,
        /// The values are secrets: never shown by `config list`
        #[arg(long)]
        secret: bool,
        /// Do not wait for the instances to roll
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove settings (a secret the manifest asks for is then made anew: rotated)
    Unset {
        site: String,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// List a site's settings, secrets masked
    List {
        site: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: ConfigCommand, store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    match command {
        ConfigCommand::Set { site, values, secret, no_wait } => {
            known(&mut store, &site)?;
            let existing = store.site_config(&site)?;
            let mut entries = Vec::new();
            for value in &values {
                // (The value itself is never echoed: it may be a secret.)
                let (name, value) =
                    value.split_once('=').ok_or_else(|| BadInput("a setting is NAME=VALUE".to_owned()))?;
                runtime::check_env_name(name).map_err(BadInput)?;
                if value.len() > runtime::ENV_VALUE_BYTES_MAX {
                    return Err(BadInput(format!("{name}: longer than {} bytes", runtime::ENV_VALUE_BYTES_MAX)).into());
                }
                // A secret stays one (a generated secret set anew, say).
                let was_secret = existing.iter().any(|e: &ConfigEntry| e.name == name && e.secret);
                entries.push(ConfigEntry {
                    name: name.into(),
                    value: value.into(),
                    secret: secret || was_secret,
                    generated: false,
                });
            }
            let names: std::collections::BTreeSet<&str> =
                existing.iter().map(|e| e.name.as_str()).chain(entries.iter().map(|e| e.name.as_str())).collect();
            if names.len() > runtime::ENV_ENTRIES_MAX {
                return Err(BadInput(format!("a site has at most {} settings", runtime::ENV_ENTRIES_MAX)).into());
            }
            for entry in &entries {
                store.set_site_config(&site, entry)?;
            }
            let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
            println!("set {} of site {site}", names.join(", "));
            roll(&mut store, &site, no_wait)
        }
        ConfigCommand::Unset { site, names, no_wait } => {
            known(&mut store, &site)?;
            for name in &names {
                if !store.unset_site_config(&site, name)? {
                    return Err(BadInput(format!(
                        "site {site} has no setting {name:?} set (`commons config list {site}`)"
                    ))
                    .into());
                }
            }
            println!("unset {} of site {site}", names.join(", "));
            roll(&mut store, &site, no_wait)
        }
        ConfigCommand::List { site, json } => {
            known(&mut store, &site)?;
            let entries = store.site_config(&site)?;
            let shown = |e: &ConfigEntry| if e.secret { None } else { Some(e.value.clone()) };
            if json {
                let rows: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| serde_json::json!({"name": e.name, "value": shown(e), "secret": e.secret, "generated": e.generated}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for e in &entries {
                    let value =
                        shown(e).unwrap_or_else(|| format!("(secret{})", if e.generated { ", generated" } else { "" }));
                    println!("{}={value}", e.name);
                }
            }
            Ok(())
        }
    }
}

/// `site` is a site of this platform, deployed or added.
fn known(store: &mut Store, site: &str) -> anyhow::Result<()> {
    let deployed = store.deployments()?.iter().any(|d| d.site == site);
    if deployed || store.sites()?.iter().any(|s| s.id == site) {
        return Ok(());
    }
    Err(BadInput(format!("there is no site {site:?}")).into())
}

/// Rolls a deployed site's instances to take its settings: the same
/// deployment asked for again (a new generation).
fn roll(store: &mut Store, site: &str, no_wait: bool) -> anyhow::Result<()> {
    let Some(current) = store.deployments()?.into_iter().find(|d| d.site == site) else {
        return Ok(());
    };
    let generation = store.request_deployment(&current)?;
    println!("rolling site {site}'s instances to take them (generation {generation})");
    if no_wait {
        return Ok(());
    }
    crate::platform_cmd::wait_for_deployment(store, site, generation, 120)
}
