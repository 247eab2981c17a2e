//! `commons up`: the platform on this machine until Ctrl-C (see
//! `platform::Platform`).

use std::net::SocketAddr;
use std::path::PathBuf;

use platform::{Overrides, Platform, Settings};
use store::Store;

use crate::StoreArgs;

#[derive(clap::Args)]
pub struct Args {
    /// A config file (TOML; see README); default DATA/commons.toml if present
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the gateway listens [default 127.0.0.1:8080]
    #[arg(long, env = "COMMONS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where sites call other services with provenance [default 127.0.0.1:8082]
    #[arg(long, env = "COMMONS_INTERNAL_LISTEN")]
    internal_listen: Option<SocketAddr>,
    /// Where /metrics, /healthz and joined nodes are served, over HTTPS [default 127.0.0.1:8081]
    #[arg(long, env = "COMMONS_CONTROL_LISTEN")]
    control_listen: Option<SocketAddr>,
    /// The platform domain: site S answers at S.<domain> [default commons.localhost]
    #[arg(long, env = "COMMONS_DOMAIN")]
    domain: Option<String>,
    /// Do not record usage (for measuring what metering costs)
    #[arg(long)]
    no_metering: bool,
    /// Run apps without confinement, as processes of the platform's user
    /// (for a machine that cannot confine them, with apps you trust)
    #[arg(long)]
    unconfined: bool,
}

pub fn run(args: Args, store_args: &StoreArgs) -> anyhow::Result<()> {
    let location = store_args.location();
    let overrides = Overrides {
        config: args.config,
        listen: args.listen,
        internal_listen: args.internal_listen,
        control_listen: args.control_listen,
        domain: args.domain,
        no_metering: args.no_metering,
        unconfined: args.unconfined,
    };
    let settings = Settings::resolve(overrides, &location.data_dir)?;
    let store = Store::open(&location)?;
    // The gateway runs its own worker threads; this runtime runs the
    // control listener, the loops and this machine's agents.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async move {
        let platform = Platform::start(settings, store, &location.data_dir).await?;
        let (listen, domain) = (platform.listen, &platform.domain);
        eprintln!("OneCommons is up.");
        eprintln!("  gateway  http://{listen}  (site S answers at http://S.{domain}:{})", listen.port());
        eprintln!("  login    http://{domain}:{}/login", listen.port());
        eprintln!("  internal http://{}  (sites call services here with X-Commons-Provenance)", platform.internal);
        eprintln!("  metrics  https://{}/metrics", platform.control);
        eprintln!("  store    {}", location.describe());
        eprintln!("  metering {}", if platform.meter.is_some() { "on" } else { "off" });
        eprintln!(
            "  apps     {}",
            if platform.confined {
                "confined (own user, namespaces, cgroup, seccomp)"
            } else {
                "UNCONFINED (--unconfined)"
            }
        );
        eprintln!("Stop with Ctrl-C.");
        crate::stop_signal().await?;
        eprintln!("stopping: finishing requests in flight, stopping the apps, flushing usage");
        platform.shutdown().await
    })
}
