//! `commons up`'s settings, from lowest to highest priority: defaults, a
//! TOML file (`--config FILE`, or `DATA/commons.toml` if present), the
//! environment and flags (given as [`Overrides`]). README's table lists
//! every key of [`ConfigFile`]; a tidy test keeps the two in step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gateway::GatewayConfig;
use serde::Deserialize;

use crate::BadInput;

/// What flags and the environment say; each overrides the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub internal_listen: Option<SocketAddr>,
    pub control_listen: Option<SocketAddr>,
    pub domain: Option<String>,
    pub no_metering: bool,
    /// Run apps without confinement (`--unconfined`): a flag only, never
    /// a setting in a file, so that nobody runs so by accident.
    pub unconfined: bool,
}

/// The config file's keys; each is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    listen: Option<SocketAddr>,
    control_listen: Option<SocketAddr>,
    internal_listen: Option<SocketAddr>,
    domain: Option<String>,
    metering: Option<bool>,
    flush_ms: Option<u64>,
    upstream_timeout_ms: Option<u64>,
    body_limit_bytes: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    session_lifetime_s: Option<u64>,
    health_check_ms: Option<u64>,
    workers: Option<usize>,
    priority: Option<i32>,
    public_scheme: Option<String>,
    control_names: Option<Vec<String>>,
    control_connections_max: Option<usize>,
    internal_url: Option<String>,
    internal_connections_max: Option<usize>,
    public_connections_max: Option<usize>,
}

/// The gateway workers' nice value unless configured.
const DEFAULT_PRIORITY: i32 = -5;

/// Everything `commons up` runs with, resolved from flags, environment,
/// the config file and defaults.
pub struct Settings {
    pub listen: SocketAddr,
    pub control: SocketAddr,
    pub internal: SocketAddr,
    pub domain: String,
    pub metering: bool,
    pub flush: Duration,
    pub health_checks: Duration,
    pub workers: usize,
    pub gateway: GatewayConfig,
    /// Host names and addresses joined nodes reach the control listener
    /// at, beside its own address: its certificate is made for them.
    pub control_names: Vec<String>,
    /// Connections the control listener serves at once; more are closed.
    pub control_connections_max: usize,
    /// The internal listener's URL as joined nodes reach it, when it is
    /// not the address it listens on.
    pub internal_url: Option<String>,
    /// Apps run as plain processes, not confined (`--unconfined`).
    pub unconfined: bool,
}

impl Settings {
    pub fn resolve(args: Overrides, data_dir: &std::path::Path) -> anyhow::Result<Settings> {
        let config_path = args.config.clone().or_else(|| Some(data_dir.join("commons.toml")).filter(|p| p.exists()));
        let file: ConfigFile = match &config_path {
            None => ConfigFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?
            }
        };
        let mut settings = Settings::default();
        let defaults = GatewayConfig::default();
        settings.gateway = GatewayConfig {
            upstream_timeout: file.upstream_timeout_ms.map_or(defaults.upstream_timeout, Duration::from_millis),
            body_limit_bytes: file.body_limit_bytes.unwrap_or(defaults.body_limit_bytes),
            header_read_timeout: file
                .header_read_timeout_ms
                .map_or(defaults.header_read_timeout, Duration::from_millis),
            session_lifetime: file.session_lifetime_s.map_or(defaults.session_lifetime, Duration::from_secs),
            // The gateway goes ahead of the apps it fronts (measured: with
            // nice -5 its event loops batch work instead of waking for each
            // request; see bench/RESULTS.md). 0 keeps the default.
            worker_priority: match file.priority.unwrap_or(DEFAULT_PRIORITY) {
                0 => None,
                nice if (-20..=19).contains(&nice) => Some(nice),
                other => return Err(BadInput(format!("priority {other} must be a nice value, -20 to 19")).into()),
            },
            public_scheme: match file.public_scheme {
                None => defaults.public_scheme.clone(),
                Some(scheme) if scheme == "http" || scheme == "https" => scheme,
                Some(other) => {
                    return Err(BadInput(format!("public_scheme {other:?} must be \"http\" or \"https\"")).into());
                }
            },
            internal_connections_max: match file.internal_connections_max {
                None => defaults.internal_connections_max,
                Some(0) => return Err(BadInput("internal_connections_max must be at least 1".into()).into()),
                Some(n) => n,
            },
            public_connections_max: match file.public_connections_max {
                None => defaults.public_connections_max,
                Some(0) => return Err(BadInput("public_connections_max must be at least 1".into()).into()),
                Some(n) => n,
            },
            ..defaults
        };
        settings.listen = args.listen.or(file.listen).unwrap_or(settings.listen);
        settings.control = args.control_listen.or(file.control_listen).unwrap_or(settings.control);
        settings.internal = args.internal_listen.or(file.internal_listen).unwrap_or(settings.internal);
        settings.domain = args.domain.or(file.domain).unwrap_or(settings.domain);
        settings.metering = !args.no_metering && file.metering.unwrap_or(true);
        settings.unconfined = args.unconfined;
        settings.flush = Duration::from_millis(file.flush_ms.unwrap_or(2_000).max(10));
        settings.health_checks = Duration::from_millis(file.health_check_ms.unwrap_or(2_000).max(10));
        settings.workers = file.workers.unwrap_or(settings.workers).clamp(1, gateway::WORKERS_MAX);
        settings.control_names = file.control_names.unwrap_or_default();
        settings.control_connections_max = match file.control_connections_max {
            None => settings.control_connections_max,
            Some(0) => return Err(BadInput("control_connections_max must be at least 1".into()).into()),
            Some(n) => n,
        };
        settings.internal_url = match file.internal_url {
            None => None,
            Some(url) => {
                let authority = url.strip_prefix("http://").map(|a| a.trim_end_matches('/'));
                match authority {
                    Some(a) if a.parse::<hyper::http::uri::Authority>().is_ok_and(|a| a.port_u16().is_some()) => {
                        Some(format!("http://{a}"))
                    }
                    _ => {
                        return Err(BadInput(format!(
                            "internal_url {url:?} must be http://HOST:PORT, the internal listener as joined nodes reach it"
                        ))
                        .into());
                    }
                }
            }
        };
        Ok(settings)
    }
}

impl Default for Settings {
    fn default() -> Settings {
        // By default one event loop per core, as nginx's `auto`: one loop
        // alone cannot use a second core when it is the bottleneck, and
        // since a request costs a loop less (bench/RESULTS.md) two loops on
        // two cores are ahead of one.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Settings {
            listen: "127.0.0.1:8080".parse().expect("an address"),
            control: "127.0.0.1:8081".parse().expect("an address"),
            internal: "127.0.0.1:8082".parse().expect("an address"),
            domain: "commons.localhost".to_owned(),
            metering: true,
            flush: Duration::from_secs(2),
            health_checks: Duration::from_secs(2),
            workers: cores,
            gateway: GatewayConfig::default(),
            control_names: Vec::new(),
            control_connections_max: 256,
            internal_url: None,
            unconfined: false,
        }
    }
}
