//! `commons`: the one binary of OneCommons. Thin glue: each subcommand
//! parses its arguments, calls into the domain crates and prints.
//!
//! # Invariants
//! - No state machine lives here: every loop is `platform`'s or `agent`'s;
//!   a subcommand parses, calls a library and prints.
//! - Exit codes: 0 success, 1 failure of the machine or the platform, 2 bad
//!   input, with the error on stderr.
//!
//! Exit codes: 0 success, 1 failure of the machine or the platform, 2 bad
//! input (arguments, scenario files, ledger exports), with the error on
//! stderr.

#![forbid(unsafe_code)]

mod config_cmd;
mod demo;
mod ledger_cmd;
mod platform_cmd;
mod settle;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the gateway allocates a few small buffers per request, on
/// every worker thread; glibc's allocator cost it ~5 % of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "commons", version, about = "OneCommons: a free and open cloud")]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the platform keeps its state; every subcommand takes these.
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// The data directory: the node key, and the embedded database
    #[arg(long, global = true, value_name = "DIR", env = "COMMONS_DATA", default_value = "commons-data")]
    data: PathBuf,
    /// A PostgreSQL URL (postgres://…) to use instead of the embedded database
    #[arg(long, global = true, value_name = "URL", env = "COMMONS_DATABASE")]
    database: Option<String>,
}

impl StoreArgs {
    pub fn location(&self) -> store::Location {
        store::Location::new(Some(self.data.clone()), self.database.clone())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Settle a period: divide each subscriber's fee by their own usage
    Settle(settle::Args),
    /// Read, export and verify the CommonCents ledger
    #[command(subcommand)]
    Ledger(ledger_cmd::Command),
    /// Run the platform on this machine: the gateway, with its sites,
    /// tokens and metering from the store
    Up(up::Args),
    /// Add, remove and list the sites the gateway routes
    #[command(subcommand)]
    Site(platform_cmd::SiteCommand),
    /// Add and list developer projects and their dependencies
    #[command(subcommand)]
    Project(platform_cmd::ProjectCommand),
    /// Create platform accounts (users log in with them on every site)
    #[command(subcommand)]
    Account(platform_cmd::AccountCommand),
    /// Create, list and revoke API tokens
    #[command(subcommand)]
    Token(platform_cmd::TokenCommand),
    /// List and end users' login sessions
    #[command(subcommand)]
    Session(platform_cmd::SessionCommand),
    /// Sell a user a subscription for a period: the payment goes to the
    /// custodian's reserve, which mints the user's CommonCents
    Subscribe(platform_cmd::SubscribeArgs),
    /// Show the usage metered in a period
    Usage(platform_cmd::UsageArgs),
    /// Run the whole platform end to end in a fresh directory: providers,
    /// apps, users, subscriptions, traffic, settlement, verification
    Demo(demo::Args),
    /// Register providers' nodes, or run this machine's agent for one
    /// (`commons node --join URL --token T`)
    Node(platform_cmd::NodeArgs),
    /// The public history of deploys, updates and removals
    History,
    /// Deploy an app as a site onto providers' nodes (run by `commons up`)
    Deploy(platform_cmd::DeployArgs),
    /// Stop a site and stop routing it
    Undeploy { site: String },
    /// Return a site to the version it ran before (rolled out as an update)
    Rollback {
        site: String,
        /// Do not wait for it to run
        #[arg(long)]
        no_wait: bool,
    },
    /// Show the end of a site's instances' logs
    Logs(platform_cmd::LogsArgs),
    /// A site's settings, in its apps' environment (set, unset, list)
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

pub use platform::{BadInput, now_ms};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its own story; its logs are for when something is wrong.
    init_logging(if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" });
    let result = match cli.command {
        Command::Settle(args) => settle::run(args, &cli.store),
        Command::Ledger(command) => ledger_cmd::run(command, &cli.store),
        Command::Up(args) => up::run(args, &cli.store),
        Command::Site(command) => platform_cmd::site(command, &cli.store),
        Command::Project(command) => platform_cmd::project(command, &cli.store),
        Command::Account(command) => platform_cmd::account(command, &cli.store),
        Command::Token(command) => platform_cmd::token(command, &cli.store),
        Command::Session(command) => platform_cmd::session(command, &cli.store),
        Command::Subscribe(args) => platform_cmd::subscribe(args, &cli.store),
        Command::Usage(args) => platform_cmd::usage(args, &cli.store),
        Command::Demo(args) => demo::run(args),
        Command::Node(args) => platform_cmd::node(args, &cli.store),
        Command::History => platform_cmd::history(&cli.store),
        Command::Deploy(args) => platform_cmd::deploy(args, &cli.store),
        Command::Undeploy { site } => platform_cmd::undeploy(&site, &cli.store),
        Command::Rollback { site, no_wait } => platform_cmd::rollback(&site, no_wait, &cli.store),
        Command::Logs(args) => platform_cmd::logs(args, &cli.store),
        Command::Config(command) => config_cmd::run(command, &cli.store),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<BadInput>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// Structured logs on stderr: `COMMONS_LOG` (default `default`) filters them,
/// `COMMONS_LOG_FORMAT=json` makes them JSON lines.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COMMONS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("COMMONS_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Waits for Ctrl-C, SIGTERM (a service manager stopping us) or SIGHUP
/// (the terminal closed): any of them stops the platform cleanly.
pub async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut hup) = (signal(SignalKind::terminate())?, signal(SignalKind::hangup())?);
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
        _ = hup.recv() => Ok(()),
    }
}
