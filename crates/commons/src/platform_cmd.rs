//! `commons site …`, `commons project …`, `commons account …`, `commons
//! token …`, `commons session …`, `commons usage`: the records the gateway and settlement work
//! from, and what the gateway metered.

use commons_core::DeploymentState;
use platform::deploy::Outcome;
use std::net::SocketAddr;

use anyhow::Context;
use commons_core::Period;
use store::{ProjectRecord, SiteRecord, Store};

use crate::{BadInput, StoreArgs, now_ms};

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
        /// Who runs the site (and is paid what remains after providers and
        /// developers)
        #[arg(long, value_name = "NAME")]
        operator: String,
        /// The project of the app the site runs (see `commons project add`)
        #[arg(long, value_name = "ID")]
        project: String,
        /// A provider whose machines run the site, with a weight (repeatable)
        #[arg(long = "provider", required = true, value_name = "NAME[:WEIGHT]", value_parser = weighted)]
        providers: Vec<(String, u64)>,
        /// The providers' cut, agreed with them
        #[arg(long, value_name = "BPS", default_value_t = 3000)]
        provider_share_bps: u32,
        /// The developers' cut of the rest: at least the platform's floor
        #[arg(long, value_name = "BPS", default_value_t = 2000)]
        developer_share_bps: u32,
        /// A path that answers 2xx when an instance is healthy (default:
        /// healthy when it accepts connections)
        #[arg(long, value_name = "PATH")]
        health_path: Option<String>,
        /// Pass `Authorization` headers that are not platform tokens to the
        /// site (apps that authenticate on their own: CalDAV, registries)
        #[arg(long)]
        pass_authorization: bool,
        /// A header the site reads the user from, given the user's
        /// per-site pseudonym (e.g. X-Remote-User)
        #[arg(long, value_name = "NAME")]
        user_header: Option<String>,
    },
    /// Remove a site
    Remove { id: String },
    /// List the sites
    List,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user (printed once)
    Add { user: String },
    /// List a user's API tokens: their ids (not the tokens) and when made
    List { user: String },
    /// Revoke a user's API token by its id (from `token list`)
    Revoke { user: String, id: String },
}

#[derive(clap::Subcommand)]
pub enum SessionCommand {
    /// List a user's live login sessions: ids (not the sessions), where
    /// each is good, when it began and ends
    List { user: String },
    /// End a user's session by its id (from `session list`), or all of them
    Revoke {
        user: String,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every session of the user (logging them out everywhere)
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum ProjectCommand {
    /// Add a developer project, or replace the one with this id
    Add {
        id: String,
        /// A project it depends on, with a weight (repeatable)
        #[arg(long = "dep", value_name = "ID[:WEIGHT]", value_parser = weighted)]
        deps: Vec<(String, u64)>,
        /// Where its source is
        #[arg(long, value_name = "URL", default_value = "")]
        repository: String,
    },
    /// List the projects
    List,
}

#[derive(clap::Subcommand)]
pub enum AccountCommand {
    /// Create a platform account; the password is read from the first line
    /// of standard input
    Add { user: String },
}

/// `name` or `name:weight` (weight 1 if left out).
fn weighted(text: &str) -> Result<(String, u64), String> {
    let (name, weight) = match text.rsplit_once(':') {
        Some((name, weight)) => (name, weight.parse::<u64>().map_err(|_| format!("{weight:?} is not a weight"))?),
        None => (text, 1),
    };
    check_name(name)?;
    if weight == 0 {
        return Err("the weight must be at least 1".into());
    }
    Ok((name.to_owned(), weight))
}

/// A password for an account made by a program (the demo): 16 random
/// bytes in hex.
pub fn random_password() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

/// Custom host names: letters, digits, `.` and `-`.
/// Names of people and projects: letters, digits, `.`, `_` and `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    if !runtime::is_name(name) {
        return Err(format!(
            "{name:?} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The site's id (it answers at <site>.<domain>)
    site: String,
    /// The app's directory, holding its commons.toml
    #[arg(long, value_name = "DIR")]
    app: std::path::PathBuf,
    /// A node to run an instance on (repeatable; see `commons node add`)
    #[arg(long = "node", required = true, value_name = "ID")]
    nodes: Vec<String>,
    /// Who runs the site
    #[arg(long, value_name = "NAME")]
    operator: String,
    /// The providers' cut, agreed with them
    #[arg(long, value_name = "BPS", default_value_t = 3000)]
    provider_share_bps: u32,
    /// The developers' cut of the rest: at least the platform's floor (2000)
    #[arg(long, value_name = "BPS", default_value_t = platform::metered::developer_share_floor_bps())]
    developer_share_bps: u32,
    /// Let people use it without logging in
    #[arg(long)]
    anonymous: bool,
    /// A custom host name that also reaches the site (repeatable)
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Return at once instead of waiting for the agent's outcome
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the agent, in seconds
    #[arg(long, value_name = "S", default_value_t = 120)]
    timeout: u64,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    site: String,
    /// How many of the last lines, per instance
    #[arg(long, default_value_t = 50)]
    lines: usize,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: Option<NodeCommand>,
    /// Run this machine's agent for a node of the control plane at URL
    /// (its control listener, e.g. https://10.0.0.1:8081)
    #[arg(long, value_name = "URL", requires = "token")]
    join: Option<String>,
    /// The node's join token (from `commons node token NODE`)
    #[arg(long, value_name = "T", requires = "join")]
    token: Option<String>,
    /// Run the node's apps without confinement (see `commons up --unconfined`)
    #[arg(long, requires = "join")]
    unconfined: bool,
}

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Register a provider's node (or change one)
    Add {
        id: String,
        /// The cloud provider whose machine it is
        #[arg(long)]
        provider: String,
        /// Where it is (a region, a city)
        #[arg(long, default_value = "")]
        location: String,
        /// Memory it offers, in MiB
        #[arg(long, default_value_t = 4096)]
        capacity_mb: u64,
        /// Its CPU cores: a joined node's reported CPU time is refused
        /// beyond cores × the wall time since its last accepted report
        #[arg(long, default_value_t = store::NODE_CORES_DEFAULT)]
        cores: u64,
    },
    /// List the nodes
    List,
    /// Create the token with which an agent on another machine joins as
    /// this node (printed once; the node is served by that agent from then)
    Token { id: String },
}

#[derive(clap::Args)]
pub struct SubscribeArgs {
    user: String,
    /// What the user paid, in cents
    #[arg(long, value_name = "N")]
    cents: u64,
    /// The period it pays for [default: the current month]
    #[arg(long, value_name = "YYYY-MM")]
    period: Option<String>,
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
        SiteCommand::Add {
            id,
            upstreams,
            hosts,
            anonymous,
            free_rpm,
            free_concurrency,
            premium_prefixes,
            operator,
            project,
            providers,
            provider_share_bps,
            developer_share_bps,
            health_path,
            pass_authorization,
            user_header,
        } => {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(BadInput(format!(
                    "site id {id:?} must be letters, digits and dashes (it becomes a host name)"
                ))
                .into());
            }
            if let Some(path) = health_path.as_ref().filter(|p| !p.starts_with('/') || p.contains(char::is_whitespace))
            {
                return Err(BadInput(format!("health path {path:?} must start with / and hold no spaces")).into());
            }
            platform::hosts::check_site_id(&id)?;
            if let Some(why) = store.kept_removed_site(&id)? {
                return Err(BadInput(why).into());
            }
            let (hosts, claimed) = platform::hosts::claim(&mut store, &id, &hosts)?;
            if let Some(prefix) = premium_prefixes.iter().find(|p| !p.starts_with('/')) {
                return Err(BadInput(format!("premium prefix {prefix:?} must start with /")).into());
            }
            let record = SiteRecord {
                id: id.clone(),
                instances: upstreams,
                custom_hosts: hosts,
                anonymous,
                free_requests_per_minute: free_rpm,
                free_concurrent_requests: free_concurrency,
                premium_prefixes,
                operator,
                project,
                provider_share_bps,
                developer_share_bps,
                providers,
                health_path,
                pass_authorization,
                user_header: match user_header {
                    Some(name) => {
                        Some(gateway::check_user_header(&name).map_err(|e| BadInput(format!("--user-header {e}")))?)
                    }
                    None => None,
                },
            };
            // Refused now what could not be settled at the month's end.
            let spec = platform::metered::site_spec(&record);
            platform::metered::check_registry(&mut store, |_, sites| {
                sites.retain(|s| s.id != spec.id);
                sites.push(spec);
            })?;
            store.put_site(&record)?;
            platform::hosts::record_claims(&mut store, &id, &claimed, now_ms())?;
            println!("site {id} saved; running gateways pick it up within a second");
        }
        SiteCommand::Remove { id } => {
            if !store.remove_site(&id, now_ms())? {
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
                let providers: Vec<String> = site.providers.iter().map(|(p, w)| format!("{p}:{w}")).collect();
                println!(
                    "    operator {}  project {}  providers {} ({} bps)  developers {} bps",
                    site.operator,
                    site.project,
                    providers.join(","),
                    site.provider_share_bps,
                    site.developer_share_bps
                );
            }
        }
    }
    Ok(())
}

pub fn token(command: TokenCommand, store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    match command {
        TokenCommand::Add { user } => {
            check_name(&user).map_err(|e| BadInput(format!("user {e}")))?;
            match store.add_token(&user, now_ms()) {
                Ok(token) => println!("{token}"),
                Err(store::StoreError::Constraint(why)) => return Err(BadInput(why).into()),
                Err(e) => return Err(e.into()),
            }
        }
        TokenCommand::List { user } => {
            for token in store.tokens()?.iter().filter(|t| t.user == user) {
                println!("{}  created {}", token.id(), when(token.created_ms));
            }
        }
        TokenCommand::Revoke { user, id } => {
            let tokens = store.tokens()?;
            let hashes = tokens.iter().filter(|t| t.user == user).map(|t| t.token_sha256.as_str());
            let hash = by_id(hashes, &id, &user, "API token")?;
            store.revoke_token(&user, hash)?;
            println!("token {id} of {user} revoked");
        }
    }
    Ok(())
}

pub fn session(command: SessionCommand, store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    match command {
        SessionCommand::List { user } => {
            for session in store.sessions_of(&user, now_ms())? {
                let site = if session.site.is_empty() { "the platform" } else { session.site.as_str() };
                println!(
                    "{}  {site}  began {}  ends {}",
                    session.id(),
                    when(session.created_ms),
                    when(session.expires_ms)
                );
            }
        }
        SessionCommand::Revoke { user, id, all } => {
            let ended = if all {
                store.revoke_sessions(&user, None)?
            } else {
                let id = id.unwrap_or_default();
                let sessions = store.sessions_of(&user, now_ms())?;
                let hash = by_id(sessions.iter().map(|s| s.token_sha256.as_str()), &id, &user, "session")?.to_owned();
                store.revoke_sessions(&user, Some(&hash))?
            };
            println!("{ended} session(s) of {user} ended");
        }
    }
    Ok(())
}

/// The one token hash among `hashes` that id `id` (a prefix, as listed)
/// names, else why not.
fn by_id<'h>(hashes: impl Iterator<Item = &'h str>, id: &str, user: &str, what: &str) -> Result<&'h str, BadInput> {
    if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BadInput(format!("{what} id {id:?} must be at least 8 hex digits, as listed")));
    }
    let id = id.to_ascii_lowercase();
    let matching: Vec<&str> = hashes.filter(|h| h.starts_with(&id)).collect();
    match matching[..] {
        [hash] => Ok(hash),
        [] => Err(BadInput(format!("{user} has no {what} with id {id}"))),
        _ => Err(BadInput(format!("{what} id {id} names several of {user}'s; give more of it"))),
    }
}

/// A wall-clock time, in milliseconds since the epoch (as `history` shows them).
fn when(ms: u64) -> String {
    format!("{ms} ms")
}

pub fn project(command: ProjectCommand, store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    match command {
        ProjectCommand::Add { id, deps, repository } => {
            check_name(&id).map_err(|e| BadInput(format!("project {e}")))?;
            if deps.iter().any(|(dep, _)| *dep == id) {
                return Err(BadInput(format!("project {id:?} cannot depend on itself")).into());
            }
            // A dependency not registered yet is registered with none of its
            // own, as a deploy registers them: its own `project add` says more.
            let project = ProjectRecord { id: id.clone(), deps, repository };
            let records = platform::metered::registration(&store.projects()?, project);
            platform::metered::check_registry(&mut store, |projects, _| {
                platform::metered::write_projects(projects, &records)
            })?;
            for record in &records {
                store.put_project(record)?;
            }
            println!("project {id} saved");
        }
        ProjectCommand::List => {
            for project in store.projects()? {
                let deps: Vec<String> = project.deps.iter().map(|(d, w)| format!("{d}:{w}")).collect();
                println!(
                    "{}  depends on {}  {}",
                    project.id,
                    if deps.is_empty() { "nothing".to_owned() } else { deps.join(",") },
                    project.repository
                );
            }
        }
    }
    Ok(())
}

pub fn account(command: AccountCommand, store_args: &StoreArgs) -> anyhow::Result<()> {
    match command {
        AccountCommand::Add { user } => {
            check_name(&user).map_err(|e| BadInput(format!("user {e}")))?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.chars().count() < 8 {
                return Err(BadInput("the password must be at least 8 characters".into()).into());
            }
            let hash = gateway::hash_password(password).map_err(anyhow::Error::msg)?;
            let mut store = Store::open(&store_args.location())?;
            if !store.add_account(&user, &hash, now_ms())? {
                return Err(BadInput(format!("user {user:?} has an account already")).into());
            }
            println!("account {user} created; log in at the platform domain's /login");
        }
    }
    Ok(())
}

pub fn subscribe(args: SubscribeArgs, store_args: &StoreArgs) -> anyhow::Result<()> {
    check_name(&args.user).map_err(|e| BadInput(format!("user {e}")))?;
    let period = match &args.period {
        Some(period) => Period::parse(period).map_err(|e| BadInput(format!("--period: {e}")))?,
        None => Period::from_days_since_epoch((now_ms() / 86_400_000) as i64),
    };
    let mut store = Store::open(&store_args.location())?;
    let minted = platform::record::subscribe(&mut store, period, &args.user, args.cents)?;
    println!(
        "{} subscribed for {period}: paid {} cents, {} minted into their escrow",
        args.user,
        args.cents,
        commons_core::Micros::new(minted)
    );
    Ok(())
}

pub fn usage(args: UsageArgs, store_args: &StoreArgs) -> anyhow::Result<()> {
    let period = Period::parse(&args.period).map_err(|e| BadInput(e.to_string()))?;
    let mut store = Store::open(&store_args.location())?;
    let usage = store.usage(period)?;
    let resources = store.resource_usage(period)?;
    if args.json {
        let resources: Vec<serde_json::Value> = resources
            .iter()
            .map(|(site, provider, used)| serde_json::json!({"site": site, "provider": provider, "cpu_ms": used.cpu_ms, "memory_mib_s": used.memory_mib_s}))
            .collect();
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
                &serde_json::json!({"period": period.to_string(), "usage": direct, "calls": calls, "resources": resources})
            )?
        );
        return Ok(());
    }
    println!("usage in {period}: {} (user, site) rows, {} call rows", usage.direct.len(), usage.calls.len());
    for line in usage_lines(&usage, &resources) {
        println!("  {line}");
    }
    Ok(())
}

/// A period's metered usage and resources, a line each.
pub fn usage_lines(usage: &metering::Usage, resources: &[(String, String, store::ResourceTotals)]) -> Vec<String> {
    let direct = usage.direct.iter().map(|(k, v)| {
        format!(
            "{} on {}: {} active minutes ({} requests), {} ms",
            k.user,
            k.site,
            v.minutes.count(),
            v.requests,
            v.service_ms
        )
    });
    let calls = usage.calls.iter().map(|(k, ms)| format!("{} on {} calling {}: {ms} ms", k.user, k.site, k.service));
    let used = resources.iter().map(|(site, provider, used)| {
        format!("{site} on {provider}'s machines: {} ms CPU, {} MiB·s memory", used.cpu_ms, used.memory_mib_s)
    });
    direct.chain(calls).chain(used).collect()
}

pub fn node(args: NodeArgs, store_args: &StoreArgs) -> anyhow::Result<()> {
    let command = match (args.command, args.join, args.token) {
        (Some(command), _, _) => command,
        (None, Some(url), Some(token)) => {
            return run_joined_agent(&url, &token, &store_args.location().data_dir, args.unconfined);
        }
        _ => return Err(BadInput("give a subcommand (add, list, token) or --join URL --token T".into()).into()),
    };
    let mut store = Store::open(&store_args.location())?;
    match command {
        NodeCommand::Token { id } => {
            let mut secret = [0u8; 24];
            getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let secret = format!("ocn_{}", hex::encode(secret));
            // The token pins the control plane's CA, made now if need be.
            let ca = platform::tls::ControlCa::load_or_create(&store_args.location().data_dir)?;
            if !store.set_join_token(&id, &commons_core::token_sha256(&secret))? {
                return Err(BadInput(format!("there is no node {id:?}; add it first")).into());
            }
            let token = agent::tls::JoinToken { secret, pin: ca.pin() };
            println!("{token}");
            eprintln!(
                "on the node's machine: commons node --join https://<this machine's control listener> --token {token}"
            );
        }
        NodeCommand::Add { id, provider, location, capacity_mb, cores } => {
            check_name(&id).map_err(|e| BadInput(format!("node {e}")))?;
            check_name(&provider).map_err(|e| BadInput(format!("provider {e}")))?;
            if cores == 0 {
                return Err(BadInput("--cores must be at least 1".into()).into());
            }
            store.put_node(&store::NodeRecord { id: id.clone(), provider, location, capacity_mb, remote: false })?;
            store.set_node_cores(&id, cores)?;
            println!("node {id} registered");
        }
        NodeCommand::List => {
            for node in store.nodes()? {
                let reports = store.node_reports(&node.id)?;
                println!(
                    "{}  provider {}  {}  {} MiB  {} cores  {}  refused {}",
                    node.id,
                    node.provider,
                    node.location,
                    node.capacity_mb,
                    reports.cores,
                    if node.remote { "joined" } else { "this machine" },
                    reports.refused
                );
            }
        }
    }
    Ok(())
}

pub fn history(store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    for entry in store.history()? {
        // One line per entry: a failure's log tail is joined with " | ".
        let detail = entry.detail.lines().collect::<Vec<_>>().join(" | ");
        println!("#{} {} {} {}: {detail}", entry.seq, entry.at_ms, entry.action, entry.site);
    }
    Ok(())
}

/// `commons deploy`: checks the app and the terms, asks the node agents (in
/// `commons up`) to deploy it, and waits for their answer.
pub fn deploy(args: DeployArgs, store_args: &StoreArgs) -> anyhow::Result<()> {
    check_name(&args.site).map_err(|e| BadInput(format!("site {e}")))?;
    check_name(&args.operator).map_err(|e| BadInput(format!("operator {e}")))?;
    let app = std::fs::canonicalize(&args.app).map_err(|e| BadInput(format!("{}: {e}", args.app.display())))?;
    let manifest =
        runtime::Manifest::load(&app.join("commons.toml")).map_err(|e| BadInput(format!("the app is refused: {e}")))?;
    platform::hosts::check_site_id(&args.site)?;
    let mut store = Store::open(&store_args.location())?;
    let (hosts, claimed) = platform::hosts::claim(&mut store, &args.site, &args.hosts)?;
    let request = store::DeploymentRecord {
        site: args.site.clone(),
        app_dir: app.display().to_string(),
        nodes: args.nodes.clone(),
        operator: args.operator.clone(),
        provider_share_bps: args.provider_share_bps,
        developer_share_bps: args.developer_share_bps,
        anonymous: args.anonymous,
        hosts,
        generation: 0,
        state: DeploymentState::Pending,
        detail: String::new(),
    };
    platform::deploy::check(&mut store, &request, &manifest)?;
    // What runs is the platform's copy, kept for a rollback.
    let kept = platform::deploy::keep_artifact(&store_args.location().data_dir, &app)?;
    let request = store::DeploymentRecord { app_dir: kept.display().to_string(), ..request };
    let generation = store.request_deployment(&request)?;
    platform::hosts::record_claims(&mut store, &args.site, &claimed, now_ms())?;
    println!("deploying {} {} as site {} on {}", manifest.name, manifest.version, args.site, args.nodes.join(", "));
    if args.no_wait {
        return Ok(());
    }
    wait_for_deployment(&mut store, &args.site, generation, args.timeout)
}

/// Waits until the deployment of `site`'s `generation` runs (Ok) or fails
/// (its reason), for `timeout` seconds at most.
pub(crate) fn wait_for_deployment(store: &mut Store, site: &str, generation: u64, timeout: u64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    while std::time::Instant::now() < deadline {
        match platform::deploy::outcome(store.deployments()?, site, generation) {
            Outcome::Running(detail) => {
                println!("site {site} is running: {detail}");
                return Ok(());
            }
            Outcome::Failed(detail) => return Err(BadInput(detail).into()),
            Outcome::Pending => std::thread::sleep(std::time::Duration::from_millis(200)),
            Outcome::Gone => {
                return Err(anyhow::anyhow!("the deployment of {site} was replaced or withdrawn meanwhile"));
            }
        }
    }
    Err(anyhow::anyhow!(
        "no agent answered within {timeout} s: is `commons up` running on this data? The request stays; it will be deployed when one runs"
    ))
}

/// `commons rollback SITE`: returns a site to the app it ran before its
/// current one (kept as an artifact when it was deployed), as an update is
/// rolled out; again, it returns to the one rolled back from.
pub fn rollback(site: &str, no_wait: bool, store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    let Some(current) = store.deployments()?.into_iter().find(|d| d.site == site) else {
        return Err(BadInput(format!("there is no deployment of {site:?}")).into());
    };
    let Some(previous) = store.previous_app_dir(site)? else {
        return Err(BadInput(format!("site {site} has run one version only: there is none to return to")).into());
    };
    let manifest = runtime::Manifest::load(&std::path::Path::new(&previous).join("commons.toml"))
        .map_err(|e| BadInput(format!("the earlier version cannot run: {e}")))?;
    let request = store::DeploymentRecord { app_dir: previous, ..current };
    platform::deploy::check(&mut store, &request, &manifest)?;
    let generation = store.request_deployment(&request)?;
    let what = format!("to {} {}", manifest.name, manifest.version);
    store.record_history(now_ms(), "rollback", site, &format!("{what}, asked by its operator"))?;
    println!("rolling site {site} back {what}");
    if no_wait {
        return Ok(());
    }
    wait_for_deployment(&mut store, site, generation, 120)
}

/// `commons undeploy`: asks the agents to stop a site and unpublish it.
pub fn undeploy(site: &str, store_args: &StoreArgs) -> anyhow::Result<()> {
    let mut store = Store::open(&store_args.location())?;
    if !store.remove_deployment(site)? {
        return Err(BadInput(format!("there is no deployment of {site:?}")).into());
    }
    println!("undeploying {site}: its instances stop and the gateway stops routing it within a second");
    Ok(())
}

/// `commons logs`: the end of each of a site's instances' logs on this
/// machine's nodes, newest instance per node.
pub fn logs(args: LogsArgs, store_args: &StoreArgs) -> anyhow::Result<()> {
    let nodes = store_args.location().data_dir.join("nodes");
    let logs = agent::newest_logs(&nodes, &args.site, args.lines);
    if logs.is_empty() {
        return Err(BadInput(format!("no instance of {:?} has run on this machine", args.site)).into());
    }
    for log in logs {
        println!("== {} on {} ({}) ==", args.site, log.node, log.dir.display());
        for line in &log.lines {
            println!("{line}");
        }
    }
    Ok(())
}

/// `commons node --join URL --token T`: runs this machine's agent for the
/// node the token is for, until Ctrl-C.
fn run_joined_agent(url: &str, token: &str, dir: &std::path::Path, unconfined: bool) -> anyhow::Result<()> {
    let token: agent::tls::JoinToken = token.parse().map_err(|e| BadInput(format!("--token: {e}")))?;
    agent::client::Client::new(url, token.pin).map_err(|e| BadInput(format!("--join {url:?}: {e}")))?;
    std::fs::create_dir_all(dir)?;
    store::keep_private(dir)?;
    runtime::keep_files_private();
    let confinement = runtime::Confinement::for_machine(dir, unconfined).map_err(BadInput)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let stop = async {
            let _ = crate::stop_signal().await;
            eprintln!("stopping this node's apps");
        };
        agent::remote::run(url, &token, dir, confinement, stop).await.map_err(|e| match e {
            e @ (agent::remote::JoinError::Refused(..)
            | agent::remote::JoinError::Protocol(..)
            | agent::remote::JoinError::Client(agent::client::ClientError::NotPinned(_))) => {
                BadInput(e.to_string()).into()
            }
            e => anyhow::Error::from(e),
        })
    })
}
