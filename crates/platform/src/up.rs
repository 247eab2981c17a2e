//! [`Platform`]: the platform running on this machine, and its loops.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use gateway::{Gateway, RunningGateway, SessionStore, SystemClock};
use metering::Meter;
use store::{DeploymentRecord, Store};
use tokio::net::TcpListener;

use crate::control_loop::{self, LocalAgents, Shared};
use crate::deploy::Outcome;
use crate::registry::{Reloader, follow_registry, load_registry};
use crate::sessions::{StoredSessions, stored_sessions};
use crate::{BadInput, Settings, StoreHandle, control_api};

/// How often expired sessions are forgotten, in the store and the gateway.
const SESSION_PURGE_EVERY: Duration = Duration::from_secs(60);

/// Write-ahead log shards of the meter: one per gateway worker is enough,
/// and this bounds them whatever the worker count.
const METER_SHARDS: usize = 64;

/// The platform on this machine: the gateway with its listeners, the
/// control loop with this machine's node agents, and the loops that keep
/// them in step with the store.
pub struct Platform {
    pub gateway: Gateway,
    pub store: StoreHandle,
    pub meter: Option<Arc<Meter>>,
    /// Where each listener is (the ports picked, when asked for port 0).
    pub listen: SocketAddr,
    pub internal: SocketAddr,
    pub control: SocketAddr,
    pub domain: String,
    /// Whether apps run confined (else `--unconfined` said not to).
    pub confined: bool,
    running: RunningGateway,
    running_internal: RunningGateway,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
    locals: Arc<tokio::sync::Mutex<LocalAgents>>,
    reloader: Reloader,
    /// Held for the whole of a usage flush.
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl Platform {
    /// Starts the platform on `store` (at `data_dir`): the gateway and its
    /// listeners, the control loop and this machine's node agents. Call
    /// from within a Tokio runtime.
    pub async fn start(settings: Settings, mut store: Store, data_dir: &Path) -> anyhow::Result<Platform> {
        // Apps never run unconfined unless the operator said so: found
        // first, before anything listens.
        let confinement = runtime::Confinement::for_machine(data_dir, settings.unconfined).map_err(BadInput)?;
        // The platform's data (keys, database, write-ahead log, apps'
        // directories) is the platform's alone: what it makes is 0600 and
        // 0700 (the agent lets site users search the way to their own
        // instance directories, nothing more).
        runtime::keep_files_private();
        store::keep_private(data_dir).with_context(|| format!("making {} the platform's alone", data_dir.display()))?;
        let mut gateway_config = settings.gateway.clone();
        // The gateway's secrets have a key file of their own, so that the
        // ledger's signing key gives nothing of them (store::key).
        let secrets = store::load_gateway_secrets(data_dir, &store::load_or_create_key(data_dir)?)?;
        gateway_config.pseudonym_secret = secrets.pseudonyms;
        gateway_config.provenance_secret = secrets.provenance;
        let meter = if settings.metering {
            let checkpoint = store.metering_checkpoint()?;
            let (meter, replay) =
                Meter::open(&data_dir.join("wal"), METER_SHARDS, &checkpoint).context("opening the write-ahead log")?;
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
        // What the host claims of `site add` and `deploy` are checked against.
        store.set_domain(&settings.domain)?;
        let (routes, identities, version) = load_registry(&mut store, &settings.domain)?;
        let sessions = stored_sessions(&mut store)?;
        let store = StoreHandle::spawn(store)?;
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
        // Joined nodes need an internal URL they can reach: configured, or
        // the address they reached the control plane at when the internal
        // listener takes every address; else (loopback) only this machine
        // can use it.
        let internal = match &settings.internal_url {
            Some(url) => control_api::InternalUrl::Configured(url.clone()),
            None if running_internal.addr.ip().is_unspecified() => {
                control_api::InternalUrl::AsReached(running_internal.addr.port())
            }
            None => {
                if running_internal.addr.ip().is_loopback() {
                    tracing::info!(
                        "the internal listener is on loopback: apps on joined nodes cannot call services; set internal_url"
                    );
                }
                control_api::InternalUrl::Bound(format!("http://{}", running_internal.addr))
            }
        };
        let ca = crate::tls::ControlCa::load_or_create(data_dir)?;
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        if !control.ip().is_unspecified() {
            names.push(control.ip().to_string());
        }
        for name in &settings.control_names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let limits = control_api::Limits {
            tls: ca.server_config(&names).map_err(|e| BadInput(format!("control_names: {e:#}")))?,
            header_timeout: settings.gateway.header_read_timeout,
            connections_max: settings.control_connections_max,
        };
        let shared = Arc::new(Mutex::new(Shared::new()));
        let locals = Arc::new(tokio::sync::Mutex::new(LocalAgents::new(
            data_dir,
            env.clone(),
            confinement.clone(),
            gateway.instances(),
        )));
        let reloader = Reloader::new(store.clone(), gateway.clone(), &settings.domain);
        let api = control_api::ControlApi {
            gateway: gateway.clone(),
            store: store.clone(),
            shared: shared.clone(),
            env,
            internal,
            first_sync: Arc::default(),
        };
        let mut tasks = vec![tokio::spawn(control_api::serve(control_listener, api, limits))];
        let flushing = Arc::new(tokio::sync::Mutex::new(()));
        let checker = gateway.clone();
        let every = settings.health_checks;
        tasks.push(tokio::spawn(async move { checker.check_health(every).await }));
        tasks.push(tokio::spawn(follow_registry(reloader.clone(), store.clone(), version)));
        tasks.push(tokio::spawn(purge_sessions(store.clone(), gateway.clone())));
        if let Some(meter) = &meter {
            tasks.push(tokio::spawn(flush_usage(store.clone(), meter.clone(), flushing.clone(), settings.flush)));
        }
        tasks.push(tokio::spawn(control_loop::run(store.clone(), shared.clone(), locals.clone(), reloader.clone())));
        Ok(Platform {
            listen: running.addr,
            internal: running_internal.addr,
            control,
            domain: settings.domain,
            confined: confinement.is_confined(),
            gateway,
            store,
            meter,
            running,
            running_internal,
            tasks,
            shared,
            locals,
            reloader,
            flushing,
        })
    }

    /// Reloads sites and users from the store now (the loop does it within a
    /// second anyway).
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.reloader.try_reload().await.map(drop)
    }

    /// Forgets expired sessions now, in the store and the gateway (a loop
    /// does it every minute anyway); how many the store held.
    pub async fn purge_sessions(&self) -> anyhow::Result<u64> {
        purge_once(&self.store, &self.gateway).await
    }

    /// Asks for deployment `d` (a new generation) and waits up to `timeout`
    /// for its outcome: `Ok` with what runs, or the failure as [`BadInput`].
    pub async fn deploy(&self, d: DeploymentRecord, timeout: Duration) -> anyhow::Result<String> {
        let site = d.site.clone();
        let generation = self
            .store
            .call(move |s| -> anyhow::Result<u64> {
                crate::hosts::check_site_id(&d.site)?;
                let (hosts, claimed) = crate::hosts::claim(s, &d.site, &d.hosts)?;
                let generation = s.request_deployment(&DeploymentRecord { hosts, ..d.clone() })?;
                crate::hosts::record_claims(s, &d.site, &claimed, crate::now_ms())?;
                Ok(generation)
            })
            .await?;
        wait_for_outcome(&self.store, &site, generation, timeout).await
    }

    /// This machine's instances: site, node, address, healthy, restarts.
    pub async fn instances(&self) -> Vec<(String, String, SocketAddr, bool, u32)> {
        let locals = self.locals.lock().await;
        let mut rows = Vec::new();
        for (node, agent) in &locals.agents {
            for (site, _, addr, healthy, restarts) in agent.instances().await {
                rows.push((site, node.clone(), addr, healthy, restarts));
            }
        }
        rows.sort();
        rows
    }

    /// Records what this machine's instances used so far.
    pub async fn meter_resources(&self) -> anyhow::Result<()> {
        control_loop::meter(&self.store, &self.shared, &self.locals).await
    }

    /// Hands what was metered so far to the store.
    pub async fn flush(&self) -> anyhow::Result<()> {
        match &self.meter {
            Some(meter) => flush_once(&self.store, meter, &self.flushing).await,
            None => Ok(()),
        }
    }

    /// Stops accepting, finishes requests in flight, stops this machine's
    /// instances (their sites stay published for the next start), records
    /// what they used and flushes usage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.running.shutdown().await;
        self.running_internal.shutdown().await;
        for task in &self.tasks {
            task.abort();
        }
        let agents: Vec<_> = self.locals.lock().await.agents.values().cloned().collect();
        for agent in agents {
            agent.stop_all().await;
        }
        let metered = control_loop::meter(&self.store, &self.shared, &self.locals).await;
        if let Some(meter) = &self.meter {
            flush_once(&self.store, meter, &self.flushing).await?;
        }
        metered
    }
}

/// Waits for the outcome of `site`'s `generation`.
pub async fn wait_for_outcome(
    store: &StoreHandle,
    site: &str,
    generation: u64,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        match store.call(|s| s.deployments()).await.map(|all| crate::deploy::outcome(all, site, generation))? {
            Outcome::Running(detail) => return Ok(detail),
            Outcome::Failed(detail) => return Err(BadInput(detail).into()),
            Outcome::Pending => tokio::time::sleep(Duration::from_millis(100)).await,
            Outcome::Gone => anyhow::bail!("the deployment of {site} was replaced or withdrawn meanwhile"),
        }
    }
    anyhow::bail!("{site} generation {generation} had no outcome within {timeout:?}")
}

async fn purge_sessions(store: StoreHandle, gateway: Gateway) {
    loop {
        tokio::time::sleep(SESSION_PURGE_EVERY).await;
        if let Err(e) = purge_once(&store, &gateway).await {
            tracing::warn!(error = %e, "cannot purge expired sessions; the next purge retries");
        }
    }
}

async fn purge_once(store: &StoreHandle, gateway: &Gateway) -> anyhow::Result<u64> {
    gateway.purge_sessions();
    Ok(store.call(|s| s.purge_sessions(crate::now_ms())).await?)
}

async fn flush_usage(store: StoreHandle, meter: Arc<Meter>, flushing: Arc<tokio::sync::Mutex<()>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = flush_once(&store, &meter, &flushing).await {
            tracing::warn!(error = %e, "usage flush failed; the next flush retries it");
        }
    }
}

/// Hands what the meter gathered to the store with its checkpoint, then
/// drops the log segments the store now covers. If the store refuses, the
/// meter keeps the flush and the next one retries it with what came since
/// (and the segments stay for a replay, should the process die first).
///
/// One flush at a time (`flushing`): two at once could record their
/// checkpoints out of order, or both delete the same segments.
async fn flush_once(store: &StoreHandle, meter: &Arc<Meter>, flushing: &tokio::sync::Mutex<()>) -> anyhow::Result<()> {
    let _one = flushing.lock().await;
    let meter = meter.clone();
    // Taking rotates log segments (files): off the async workers too.
    let flush = {
        let meter = meter.clone();
        tokio::task::spawn_blocking(move || meter.take()).await??
    };
    if flush.usage.is_empty() {
        return Ok(());
    }
    let checkpoint = flush.checkpoint.clone();
    store.call(move |s| s.record_usage(&flush.usage, &flush.checkpoint)).await?;
    tokio::task::spawn_blocking(move || meter.forget(&checkpoint)).await??;
    Ok(())
}
