//! `commons up`: the platform on one machine — the gateway, with its sites,
//! tokens and metering from the store — until Ctrl-C.
//!
//! Settings come from defaults, then a config file (`--config`, or
//! `DATA/commons.toml` if present), then environment variables and flags.
//! The gateway follows changes to sites and tokens in the store within a
//! second, without restarting. Usage is flushed from the write-ahead log
//! (`DATA/wal/`) to the store every `flush_ms`; after a crash, what the
//! store had not recorded is replayed from the log at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use commons_core::Period;
use gateway::{
    Gateway, GatewayConfig, Identities, Routes, RunningGateway, SessionStore, SiteRoute, StoredSession, SystemClock,
    TierPolicy,
};
use http_body_util::Full;
use metering::Meter;
use serde::Deserialize;
use store::{SessionRecord, Store};
use tokio::net::TcpListener;

use crate::agent::Agent;
use crate::join::{Joined, SyncRequest};
use crate::{BadInput, StoreArgs, now_ms};

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
    /// Where /metrics and /healthz are served [default 127.0.0.1:8081]
    #[arg(long, env = "COMMONS_CONTROL_LISTEN")]
    control_listen: Option<SocketAddr>,
    /// The platform domain: site S answers at S.<domain> [default commons.localhost]
    #[arg(long, env = "COMMONS_DOMAIN")]
    domain: Option<String>,
    /// Do not record usage (for measuring what metering costs)
    #[arg(long)]
    no_metering: bool,
}

/// The config file's keys; each is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
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
}

impl Settings {
    fn resolve(args: Args, data_dir: &std::path::Path) -> anyhow::Result<Settings> {
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
            ..defaults
        };
        settings.listen = args.listen.or(file.listen).unwrap_or(settings.listen);
        settings.control = args.control_listen.or(file.control_listen).unwrap_or(settings.control);
        settings.internal = args.internal_listen.or(file.internal_listen).unwrap_or(settings.internal);
        settings.domain = args.domain.or(file.domain).unwrap_or(settings.domain);
        settings.metering = !args.no_metering && file.metering.unwrap_or(true);
        settings.flush = Duration::from_millis(file.flush_ms.unwrap_or(2_000).max(10));
        settings.health_checks = Duration::from_millis(file.health_check_ms.unwrap_or(2_000).max(10));
        settings.workers = file.workers.unwrap_or(settings.workers).clamp(1, gateway::WORKERS_MAX);
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
        }
    }
}

/// The platform running on this machine: the gateway with its listeners,
/// and the loops that keep it in step with the store.
pub struct Platform {
    pub gateway: Gateway,
    pub store: Arc<Mutex<Store>>,
    pub meter: Option<Arc<Meter>>,
    /// Where each listener is (the ports picked, when asked for port 0).
    pub listen: SocketAddr,
    pub internal: SocketAddr,
    pub control: SocketAddr,
    pub domain: String,
    running: RunningGateway,
    running_internal: RunningGateway,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The node agents on other machines.
    joined: Arc<Joined>,
}

impl Platform {
    /// Starts the platform on `store` (at `data_dir`); call from within a
    /// Tokio runtime.
    pub async fn start(settings: Settings, mut store: Store, data_dir: &std::path::Path) -> anyhow::Result<Platform> {
        let mut gateway_config = settings.gateway.clone();
        // The pseudonym key: derived from the node key, so it is stable
        // across restarts and secret like it.
        let node_key = store::load_or_create_key(data_dir)?;
        gateway_config.pseudonym_secret = node_key.derive_secret(b"pseudonyms");
        gateway_config.provenance_secret = node_key.derive_secret(b"provenance");
        let meter = if settings.metering {
            let checkpoint = store.metering_checkpoint()?;
            let (meter, replay) =
                Meter::open(&data_dir.join("wal"), 64, &checkpoint).context("opening the write-ahead log")?;
            if replay.events > 0 {
                store.record_usage(&replay.usage, &replay.checkpoint)?;
                tracing::info!(
                    events = replay.events,
                    torn = replay.torn.len(),
                    "usage replayed from the write-ahead log"
                );
            }
            meter.forget(&replay.checkpoint)?;
            Some(Arc::new(meter))
        } else {
            None
        };
        let (routes, identities, version) = load_registry(&mut store, &settings.domain)?;
        let sessions = stored_sessions(&mut store)?;
        let store = Arc::new(Mutex::new(store));
        let session_store: Arc<dyn SessionStore> = Arc::new(StoredSessions(store.clone()));
        let gateway = Gateway::with_sessions(
            gateway_config,
            routes,
            meter.clone(),
            Arc::new(SystemClock),
            Some(session_store),
            sessions,
        );
        gateway.set_identities(identities);
        let control_listener = TcpListener::bind(settings.control)
            .await
            .map_err(|e| BadInput(format!("cannot listen on {}: {e}", settings.control)))?;
        let control = control_listener.local_addr()?;
        let running = gateway
            .serve(settings.listen, settings.workers)
            .map_err(|e| BadInput(format!("cannot listen on {}: {e}", settings.listen)))?;
        let running_internal = gateway
            .serve_internal(settings.internal, 1)
            .map_err(|e| BadInput(format!("cannot listen on {}: {e}", settings.internal)))?;
        let env = vec![
            ("COMMONS_INTERNAL_URL".to_owned(), format!("http://{}", running_internal.addr)),
            ("COMMONS_DOMAIN".to_owned(), settings.domain.clone()),
        ];
        let joined = Arc::new(Joined::new(store.clone(), env));
        let mut tasks = vec![tokio::spawn(serve_control(control_listener, gateway.clone(), joined.clone()))];
        let checker = gateway.clone();
        let every = settings.health_checks;
        tasks.push(tokio::spawn(async move { checker.check_health(every).await }));
        tasks.push(tokio::spawn(follow_registry(store.clone(), gateway.clone(), settings.domain.clone(), version)));
        if let Some(meter) = &meter {
            tasks.push(tokio::spawn(flush_usage(store.clone(), meter.clone(), settings.flush)));
        }
        Ok(Platform {
            joined,
            listen: running.addr,
            internal: running_internal.addr,
            control,
            domain: settings.domain,
            gateway,
            store,
            meter,
            running,
            running_internal,
            tasks,
        })
    }

    /// Reloads sites and users from the store now (the loop does it within a
    /// second anyway).
    pub async fn reload(&self) -> anyhow::Result<()> {
        reload(&self.store, &self.gateway, &self.domain).await
    }

    /// Runs this machine's node agent: it deploys, updates and removes
    /// sites as the store's deployment requests say (checked every half
    /// second), and meters their instances every ten seconds.
    pub fn run_agent(&mut self, data_dir: &std::path::Path) -> Arc<Agent> {
        let env = vec![
            ("COMMONS_INTERNAL_URL".to_owned(), format!("http://{}", self.internal)),
            ("COMMONS_DOMAIN".to_owned(), self.domain.clone()),
        ];
        let agent = Arc::new(Agent::new(self.store.clone(), data_dir, env));
        let (store, gateway, domain, looping, joined) =
            (self.store.clone(), self.gateway.clone(), self.domain.clone(), agent.clone(), self.joined.clone());
        self.tasks.push(tokio::spawn(async move {
            let mut metered = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let reading = store.clone();
                let desired = tokio::task::spawn_blocking(move || {
                    reading.lock().unwrap_or_else(|e| e.into_inner()).deployments()
                })
                .await;
                match desired {
                    Ok(Ok(desired)) => {
                        let switch = || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
                            Box::pin(async {
                                if let Err(e) = reload(&store, &gateway, &domain).await {
                                    tracing::warn!(error = %e, "cannot reload the registry");
                                }
                            })
                        };
                        looping.reconcile(&desired, &switch).await;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the deployments"),
                    Err(e) => tracing::warn!(error = %e, "cannot read the deployments"),
                }
                let publishing = joined.clone();
                match tokio::task::spawn_blocking(move || publishing.publish()).await {
                    Ok(Ok(true)) => {
                        if let Err(e) = reload(&store, &gateway, &domain).await {
                            tracing::warn!(error = %e, "cannot reload the registry");
                        }
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot publish the joined nodes' sites"),
                    Err(e) => tracing::warn!(error = %e, "cannot publish the joined nodes' sites"),
                }
                if metered.elapsed() >= Duration::from_secs(10) {
                    metered = tokio::time::Instant::now();
                    if let Err(e) = looping.meter(current_period()).await {
                        tracing::warn!(error = %e, "cannot record resource usage");
                    }
                }
            }
        }));
        agent
    }

    /// Hands what was metered so far to the store.
    pub async fn flush(&self) -> anyhow::Result<()> {
        match &self.meter {
            Some(meter) => flush_once(&self.store, meter).await,
            None => Ok(()),
        }
    }

    /// Stops accepting, finishes requests in flight, flushes usage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.running.shutdown().await;
        self.running_internal.shutdown().await;
        for task in &self.tasks {
            task.abort();
        }
        if let Some(meter) = &self.meter {
            flush_once(&self.store, meter).await?;
        }
        Ok(())
    }
}

pub fn run(args: Args, store_args: &StoreArgs) -> anyhow::Result<()> {
    let location = store_args.location();
    let settings = Settings::resolve(args, &location.data_dir)?;
    let store = Store::open(&location)?;
    // The gateway runs its own worker threads; this runtime only runs the
    // control listener and the store loops.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async move {
        let mut platform = Platform::start(settings, store, &location.data_dir).await?;
        let agent = platform.run_agent(&location.data_dir);
        let (listen, domain) = (platform.listen, &platform.domain);
        eprintln!("OneCommons is up.");
        eprintln!("  gateway  http://{listen}  (site S answers at http://S.{domain}:{})", listen.port());
        eprintln!("  login    http://{domain}:{}/login", listen.port());
        eprintln!("  internal http://{}  (sites call services here with X-Commons-Provenance)", platform.internal);
        eprintln!("  metrics  http://{}/metrics", platform.control);
        eprintln!("  store    {}", location.describe());
        eprintln!("  metering {}", if platform.meter.is_some() { "on" } else { "off" });
        eprintln!("Stop with Ctrl-C.");
        crate::stop_signal().await?;
        eprintln!("stopping: finishing requests in flight, stopping the apps, flushing usage");
        let result = platform.shutdown().await;
        agent.meter(current_period()).await?;
        agent.shutdown().await;
        result
    })
}

fn load_registry(store: &mut Store, domain: &str) -> anyhow::Result<(Routes, Identities, u64)> {
    let version = store.registry_version()?;
    let mut routes = Routes::new(domain);
    for site in store.sites()? {
        let hosts: Vec<&str> = site.custom_hosts.iter().map(String::as_str).collect();
        let policy = TierPolicy {
            free_requests_per_minute: site.free_requests_per_minute,
            free_concurrent_requests: site.free_concurrent_requests,
            premium_prefixes: site.premium_prefixes.clone(),
        };
        let route = SiteRoute::new(&site.id, &site.instances, site.anonymous)
            .with_policy(policy)
            .with_health_path(site.health_path.clone());
        routes.add_site(route, &hosts);
    }
    let mut identities = Identities::default();
    for (user, _) in store.subscriptions(current_period())? {
        identities.add_user(&user, true);
    }
    for account in store.accounts()? {
        identities.add_password(&account.user, &account.password_hash);
    }
    for token in store.tokens()? {
        identities.add_token_sha256(&token.token_sha256, &token.user);
    }
    Ok((routes, identities, version))
}

async fn reload(store: &Arc<Mutex<Store>>, gateway: &Gateway, domain: &str) -> anyhow::Result<()> {
    let (store, domain) = (store.clone(), domain.to_owned());
    let (routes, identities, _) = tokio::task::spawn_blocking(move || {
        load_registry(&mut store.lock().unwrap_or_else(|e| e.into_inner()), &domain)
    })
    .await??;
    gateway.set_routes(routes);
    gateway.set_identities(identities);
    Ok(())
}

/// `POST /agent/v1/sync` from a joined node agent.
async fn agent_sync(
    request: hyper::Request<hyper::body::Incoming>,
    joined: &Arc<Joined>,
    peer: std::net::IpAddr,
) -> (u16, String) {
    use http_body_util::BodyExt;
    let token = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body = match http_body_util::Limited::new(request.into_body(), 1 << 20).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return (413, format!("the sync is too large: {e}\n")),
    };
    let sync: SyncRequest = match serde_json::from_slice(&body) {
        Ok(sync) => sync,
        Err(e) => return (400, format!("malformed sync: {e}\n")),
    };
    let joined = joined.clone();
    match tokio::task::spawn_blocking(move || joined.sync(token.as_deref(), peer, sync)).await {
        Ok(Ok(response)) => (200, serde_json::to_string(&response).unwrap_or_default()),
        Ok(Err((status, message))) => (status, message + "\n"),
        Err(e) => (500, format!("{e}\n")),
    }
}

/// The month it is (UTC): who subscribed for it has the premium tier.
fn current_period() -> Period {
    Period::from_days_since_epoch((now_ms() / 86_400_000) as i64)
}

/// Login sessions kept in the store, so that they outlive restarts.
struct StoredSessions(Arc<Mutex<Store>>);

impl SessionStore for StoredSessions {
    fn save(&self, session: &StoredSession) -> Result<(), String> {
        let record = SessionRecord {
            token_sha256: hex::encode(session.token_sha256),
            user: session.user.clone(),
            site: session.site.clone().unwrap_or_default(),
            expires_ms: session.expires_ms,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).put_session(&record, now_ms()).map_err(|e| e.to_string())
    }

    fn end(&self, user: &str) -> Result<(), String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove_sessions(user).map(drop).map_err(|e| e.to_string())
    }
}

fn stored_sessions(store: &mut Store) -> anyhow::Result<Vec<StoredSession>> {
    Ok(store
        .sessions(now_ms())?
        .into_iter()
        .filter_map(|s| {
            let token_sha256 = hex::decode(&s.token_sha256).ok()?.try_into().ok()?;
            Some(StoredSession {
                token_sha256,
                user: s.user,
                site: Some(s.site).filter(|site| !site.is_empty()),
                expires_ms: s.expires_ms,
            })
        })
        .collect())
}

/// Reloads routes and users whenever the store's registry version moves,
/// and when a new month starts (subscriptions are per month).
async fn follow_registry(store: Arc<Mutex<Store>>, gateway: Gateway, domain: String, mut version: u64) {
    let mut period = current_period();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let store = store.clone();
        let domain = domain.clone();
        let new_period = current_period() != period;
        period = current_period();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            let current = store.registry_version()?;
            if current == version && !new_period { Ok(None) } else { load_registry(&mut store, &domain).map(Some) }
        })
        .await;
        match loaded {
            Ok(Ok(Some((routes, identities, current)))) => {
                gateway.set_routes(routes);
                gateway.set_identities(identities);
                tracing::info!(registry.version = current, "sites and tokens reloaded");
                version = current;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the registry"),
            Err(e) => tracing::warn!(error = %e, "registry reload failed"),
        }
    }
}

async fn flush_usage(store: Arc<Mutex<Store>>, meter: Arc<Meter>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = flush_once(&store, &meter).await {
            tracing::warn!(error = %e, "usage flush failed; the next flush retries it");
        }
    }
}

/// Hands what the meter gathered to the store with its checkpoint, then
/// drops the log segments the store now covers. If the store refuses, the
/// meter keeps the flush and the next one retries it with what came since
/// (and the segments stay for a replay, should the process die first).
async fn flush_once(store: &Arc<Mutex<Store>>, meter: &Arc<Meter>) -> anyhow::Result<()> {
    let (store, meter) = (store.clone(), meter.clone());
    tokio::task::spawn_blocking(move || {
        let flush = meter.take()?;
        if !flush.usage.is_empty() {
            store.lock().unwrap_or_else(|e| e.into_inner()).record_usage(&flush.usage, &flush.checkpoint)?;
            meter.forget(&flush.checkpoint)?;
        }
        anyhow::Ok(())
    })
    .await?
}

async fn serve_control(listener: TcpListener, gateway: Gateway, joined: Arc<Joined>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let (gateway, joined) = (gateway.clone(), joined.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (gateway, joined) = (gateway.clone(), joined.clone());
                async move {
                    let (status, body) = match request.uri().path() {
                        "/metrics" => (200, gateway.metrics()),
                        "/healthz" => (200, "ok\n".to_owned()),
                        "/agent/v1/sync" if request.method() == hyper::Method::POST => {
                            agent_sync(request, &joined, peer.ip()).await
                        }
                        _ => (404, "not found\n".to_owned()),
                    };
                    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a status");
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
