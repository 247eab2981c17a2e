//! `commons site …`, `commons token …`, `commons usage`: the records the
//! gateway works from, and what it metered.

use std::net::SocketAddr;

use commons_core::Period;
use store::{SiteRecord, Store};

use crate::{BadInput, StoreArgs};

#[derive(clap::Subcommand)]
pub enum SiteCommand {
    /// Add a site, or replace the one with this id
    Add {
        id: String,
        /// An instance's address (repeat for several)
        #[arg(long = "upstream", required = true, value_name = "HOST:PORT")]
        upstreams: Vec<SocketAddr>,
        /// A custom host name that also reaches the site (repeatable)
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Let people use it without logging in
        #[arg(long)]
        anonymous: bool,
        /// Free tier: most requests per minute per user (default unlimited)
        #[arg(long, value_name = "N")]
        free_rpm: Option<u32>,
        /// Free tier: most requests at once per user (default unlimited)
        #[arg(long, value_name = "N")]
        free_concurrency: Option<u32>,
        /// A path prefix only subscribers may use (repeatable)
        #[arg(long = "premium-prefix", value_name = "PATH")]
        premium_prefixes: Vec<String>,
    },
    /// Remove a site
    Remove { id: String },
    /// List the sites
    List,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user (printed once)
    Add {
        user: String,
        /// The user has a subscription: the premium tier everywhere
        #[arg(long)]
        premium: bool,
    },
}

#[derive(clap::Args)]
pub struct UsageArgs {
    /// The period, YYYY-MM
    #[arg(long)]
    period: String,
    #[arg(long)]
    json: bool,
}

pub fn site(command: SiteCommand, store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    match command {
        SiteCommand::Add { id, upstreams, hosts, anonymous, free_rpm, free_concurrency, premium_prefixes } => {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(BadInput(format!(
                    "site id {id:?} must be letters, digits and dashes (it becomes a host name)"
                ))
                .into());
            }
            if let Some(prefix) = premium_prefixes.iter().find(|p| !p.starts_with('/') || p.contains(',')) {
                return Err(BadInput(format!("premium prefix {prefix:?} must start with / and hold no comma")).into());
            }
            store.put_site(&SiteRecord {
                id: id.clone(),
                instances: upstreams,
                custom_hosts: hosts,
                anonymous,
                free_requests_per_minute: free_rpm,
                free_concurrent_requests: free_concurrency,
                premium_prefixes,
            })?;
            println!("site {id} saved; running gateways pick it up within a second");
        }
        SiteCommand::Remove { id } => {
            if !store.remove_site(&id)? {
                return Err(BadInput(format!("there is no site {id:?}")).into());
            }
            println!("site {id} removed");
        }
        SiteCommand::List => {
            for site in store.sites()? {
                let instances: Vec<String> = site.instances.iter().map(|a| a.to_string()).collect();
                let limit = |l: Option<u32>| l.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
                println!(
                    "{}  instances {}  hosts {}  {}  free tier: {}/min, {} at once  premium only: {}",
                    site.id,
                    instances.join(","),
                    if site.custom_hosts.is_empty() { "-".to_owned() } else { site.custom_hosts.join(",") },
                    if site.anonymous { "anonymous allowed" } else { "login required" },
                    limit(site.free_requests_per_minute),
                    limit(site.free_concurrent_requests),
                    if site.premium_prefixes.is_empty() { "-".to_owned() } else { site.premium_prefixes.join(",") },
                );
            }
        }
    }
    Ok(())
}

pub fn token(command: TokenCommand, store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    match command {
        TokenCommand::Add { user, premium } => {
            if user.is_empty() {
                return Err(BadInput("the user id is empty".into()).into());
            }
            println!("{}", store.add_token(&user, premium)?);
        }
    }
    Ok(())
}

pub fn usage(args: UsageArgs, store_args: &StoreArgs) -> anyhow::Result<()> {
    let period = Period::parse(&args.period).map_err(|e| BadInput(e.to_string()))?;
    let mut store = Store::open(&store_args.location())?;
    let usage = store.usage(period)?;
    if args.json {
        let direct: Vec<serde_json::Value> = usage
            .direct
            .iter()
            .map(|(k, v)| serde_json::json!({"user": k.user, "site": k.site, "active_minutes": v.minutes.count(), "requests": v.requests, "service_ms": v.service_ms}))
            .collect();
        let calls: Vec<serde_json::Value> = usage
            .calls
            .iter()
            .map(|(k, ms)| serde_json::json!({"user": k.user, "site": k.site, "service": k.service, "ms": ms}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"period": period.to_string(), "usage": direct, "calls": calls})
            )?
        );
        return Ok(());
    }
    println!("usage in {period}: {} (user, site) rows, {} call rows", usage.direct.len(), usage.calls.len());
    for (k, v) in &usage.direct {
        println!(
            "  {} on {}: {} active minutes ({} requests), {} ms",
            k.user,
            k.site,
            v.minutes.count(),
            v.requests,
            v.service_ms
        );
    }
    for (k, ms) in &usage.calls {
        println!("  {} on {} calling {}: {} ms", k.user, k.site, k.service, ms);
    }
    Ok(())
}
