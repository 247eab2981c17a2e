//! The control loop: reads what operators asked for, gathers this
//! machine's agents' reports, asks [`control::Control`] what to do, does it
//! (the store, the history, the gateway), and hands every local agent its
//! assignments. Joined nodes' agents take part through the agent protocol
//! (the control listener), sharing the same [`Shared`] state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::{NodeAgent, Reach, Source};
use control::{Action, Control, DeploymentSpec, DeploymentState, NodeSpec, Publication};
use runtime::{Confinement, Manifest};
use store::{DeploymentRecord, NodeRecord, ResourceTotals, SiteRecord, Store};

use crate::registry::Reloader;
use crate::{StoreHandle, current_period, now_ms};

/// How often the control loop decides.
const DECIDE_EVERY: Duration = Duration::from_millis(500);
/// How often this machine's instances' resource use is recorded.
const METER_EVERY: Duration = Duration::from_secs(10);

/// An app as one generation of a deployment asked for it.
#[derive(Clone)]
pub(crate) struct App {
    pub dir: PathBuf,
    pub manifest: Result<Manifest, String>,
    /// The site's settings for this generation (`config::resolve`), fixed
    /// when it was first seen: a change of them is a new generation.
    pub env: Vec<(String, String)>,
    /// The app's bundle id, once packed for a joined node.
    pub bundle: Option<String>,
}

/// A site as given to a joined node.
#[derive(Clone, Debug)]
pub(crate) struct Given {
    /// When this stay of the site on the node began (wall clock, ms): the
    /// node ran nothing of it before, so it reports no use of it before.
    pub since_wall_ms: u64,
    /// When it was last given ([`Shared::now`]).
    pub last: u64,
    /// The memory booked for it on the node (MiB, its generations' sum), as
    /// last given.
    pub booked_mb: u64,
    /// Its generations given, with when each was last ([`Shared::now`]).
    pub generations: HashMap<u64, u64>,
}

/// What the control loop and the agent protocol share. Never held across
/// an await.
pub(crate) struct Shared {
    pub control: Control,
    pub nodes: Vec<NodeRecord>,
    /// Per (site, generation), its app: an older generation keeps its files
    /// while a newer one is on its way.
    pub apps: HashMap<(String, u64), App>,
    /// Bundles by id, for joined nodes.
    pub bundles: HashMap<String, bytes::Bytes>,
    /// When the control plane started: its clock for `control` (monotonic).
    pub started: Instant,
    /// Each site as given to each joined node, by (node, site): the node
    /// speaks of it only while it is given, and for a grace period after.
    pub given: HashMap<(String, String), Given>,
    /// Decided, not yet carried out (a store write failed): done first in
    /// the next round, in order. `control` remembers what it decided, so a
    /// decision is never dropped.
    pub pending: Vec<Action>,
    /// The gateway must be reloaded before anyone is assigned anew.
    pub reload_needed: bool,
    /// What every node runs, as of the last round whose actions were all
    /// carried out and whose routes the gateway took: joined nodes' syncs
    /// read this, never `control` directly, so no node stops an old
    /// generation before the gateway moved off it. `None` until the first
    /// such round: syncs before it are answered 503.
    pub assignments: Option<HashMap<String, Vec<control::Assignment>>>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            control: Control::new(),
            nodes: Vec::new(),
            apps: HashMap::new(),
            bundles: HashMap::new(),
            started: Instant::now(),
            given: HashMap::new(),
            pending: Vec::new(),
            reload_needed: false,
            assignments: None,
        }
    }

    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The memory an app's manifest asks for, in MiB (0 if it cannot be read:
/// such a deployment fails on its node, with the reason).
pub fn app_memory_mb(app_dir: &str) -> u64 {
    Manifest::load(&Path::new(app_dir).join("commons.toml")).map_or(0, |m| m.resources.memory_mb)
}

/// A deployment request as `control` sees it.
pub fn deployment_spec(d: &DeploymentRecord, memory_mb: u64) -> DeploymentSpec {
    DeploymentSpec { site: d.site.clone(), generation: d.generation, nodes: d.nodes.clone(), memory_mb, state: d.state }
}

pub(crate) fn node_spec(n: &NodeRecord) -> NodeSpec {
    NodeSpec { id: n.id.clone(), provider: n.provider.clone(), capacity_mb: n.capacity_mb, remote: n.remote }
}

/// This machine's agents, one per local node.
pub(crate) struct LocalAgents {
    dir: PathBuf,
    /// The sites' state directories: the machine's, whichever local node
    /// runs a site (a site moving between them keeps its state).
    state: PathBuf,
    pub env: Vec<(String, String)>,
    pub agents: HashMap<String, Arc<NodeAgent>>,
    confinement: Confinement,
    /// The gateway's: where the confined instances of this machine are.
    instances: Arc<netns::Directory>,
}

impl LocalAgents {
    pub fn new(
        data_dir: &Path,
        env: Vec<(String, String)>,
        confinement: Confinement,
        instances: Arc<netns::Directory>,
    ) -> LocalAgents {
        LocalAgents {
            dir: data_dir.join("nodes"),
            state: data_dir.join("state"),
            env,
            agents: HashMap::new(),
            confinement,
            instances,
        }
    }

    fn agent(&mut self, node: &str) -> Arc<NodeAgent> {
        let (dir, confinement) = (self.dir.join(node), self.confinement.clone());
        let reach = Reach::Directory(self.instances.clone());
        let state = &self.state;
        self.agents
            .entry(node.to_owned())
            .or_insert_with(|| NodeAgent::new(node, &dir, state, confinement, reach))
            .clone()
    }
}

/// Runs the control loop until the task is aborted.
pub(crate) async fn run(
    store: StoreHandle,
    shared: Arc<Mutex<Shared>>,
    locals: Arc<tokio::sync::Mutex<LocalAgents>>,
    reload: Reloader,
) {
    let mut metered = Instant::now();
    loop {
        tokio::time::sleep(DECIDE_EVERY).await;
        if let Err(e) = once(&store, &shared, &locals, &reload).await {
            tracing::warn!(error = %format!("{e:#}"), "the control loop failed this round; retrying");
        }
        if metered.elapsed() >= METER_EVERY {
            metered = Instant::now();
            if let Err(e) = meter(&store, &shared, &locals).await {
                tracing::warn!(error = %e, "cannot record resource usage");
            }
        }
    }
}

/// One round: read, observe, decide, act, assign.
pub(crate) async fn once(
    store: &StoreHandle,
    shared: &Arc<Mutex<Shared>>,
    locals: &Arc<tokio::sync::Mutex<LocalAgents>>,
    reload: &Reloader,
) -> anyhow::Result<()> {
    let (nodes, deployments) = store.call(|s| anyhow::Ok((s.nodes()?, s.deployments()?))).await?;
    // Apps of generations not seen yet: their manifests, read off the store's thread.
    let unknown: Vec<(String, u64, String)> = {
        let shared = lock(shared);
        deployments
            .iter()
            .filter(|d| !shared.apps.contains_key(&(d.site.clone(), d.generation)))
            .map(|d| (d.site.clone(), d.generation, d.app_dir.clone()))
            .collect()
    };
    let loaded = tokio::task::spawn_blocking(move || {
        unknown
            .into_iter()
            .map(|(site, generation, dir)| {
                let dir = PathBuf::from(dir);
                let manifest = Manifest::load(&dir.join("commons.toml")).map_err(|e| e.to_string());
                ((site, generation), App { dir, manifest, env: Vec::new(), bundle: None })
            })
            .collect::<Vec<_>>()
    })
    .await?;
    // Their settings, on the store's thread (secrets are made there once).
    // A site whose settings cannot be read fails to deploy, saying why.
    let loaded = if loaded.is_empty() {
        loaded
    } else {
        store
            .call(move |s| {
                let mut loaded = loaded;
                for ((site, _), app) in &mut loaded {
                    if let Ok(manifest) = &app.manifest {
                        match crate::config::resolve(s, site, manifest) {
                            Ok(env) => app.env = env,
                            Err(e) => app.manifest = Err(format!("the site's settings: {e:#}")),
                        }
                    }
                }
                anyhow::Ok(loaded)
            })
            .await?
    };
    let locals_handle = locals.clone();
    let mut locals = locals.lock().await;
    let local_nodes: Vec<NodeRecord> = nodes.iter().filter(|n| !n.remote).cloned().collect();
    let mut reports = Vec::new();
    let mut events = Vec::new();
    for node in &local_nodes {
        let agent = locals.agent(&node.id);
        reports.push((node.id.clone(), agent.report().await));
        let taken = agent.take_events().await;
        events.extend(taken.into_iter().map(|e| (e.site, format!("on {}: {}", node.id, e.detail))));
    }
    if !events.is_empty() {
        store.call(move |s| record_events(s, &events)).await?;
    }
    let (actions, assignments) = {
        let mut shared = lock(shared);
        shared.apps.extend(loaded);
        let desired: Vec<DeploymentSpec> = deployments
            .iter()
            .map(|d| {
                let app = shared.apps.get(&(d.site.clone(), d.generation));
                let memory = app.and_then(|a| a.manifest.as_ref().ok()).map_or(0, |m| m.resources.memory_mb);
                deployment_spec(d, memory)
            })
            .collect();
        let now = shared.now();
        for (node, report) in reports {
            shared.control.observe(&node, now, report);
        }
        let specs: Vec<NodeSpec> = nodes.iter().map(node_spec).collect();
        let mut actions = std::mem::take(&mut shared.pending);
        actions.extend(shared.control.decide(now, &specs, &desired));
        let assignments: HashMap<String, Vec<control::Assignment>> =
            nodes.iter().map(|n| (n.id.clone(), shared.control.assignments(&n.id, &desired))).collect();
        let asked = |key: &(String, u64)| deployments.iter().any(|d| d.site == key.0 && d.generation == key.1);
        let published = shared.control.published();
        shared.apps.retain(|key, _| asked(key) || published.get(&key.0) == Some(&key.1));
        let kept: std::collections::HashSet<String> = shared.apps.values().filter_map(|a| a.bundle.clone()).collect();
        shared.bundles.retain(|id, _| kept.contains(id));
        shared.nodes = nodes.clone();
        (actions, assignments)
    };
    // Every action, in order; the first that fails and those after it wait
    // for the next round, and nobody is assigned anew meanwhile.
    let apps = Arc::new(if actions.is_empty() { HashMap::new() } else { lock(shared).apps.clone() });
    let (deployments, nodes) = (Arc::new(deployments), Arc::new(nodes));
    for (i, action) in actions.iter().enumerate() {
        let (one, d, n, a) = (action.clone(), deployments.clone(), nodes.clone(), apps.clone());
        match store.call(move |s| carry_out(s, &one, &d, &n, &a)).await {
            Ok(changed) => lock(shared).reload_needed |= changed,
            Err(e) => {
                lock(shared).pending = actions[i..].to_vec();
                return Err(e);
            }
        }
    }
    if lock(shared).reload_needed {
        reload.try_reload().await?;
        lock(shared).reload_needed = false;
    }
    let local: Vec<(String, Vec<(control::Assignment, Source)>)> = {
        let mut shared = lock(shared);
        let local = local_nodes
            .iter()
            .map(|n| {
                let assigned = assignments
                    .get(&n.id)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| {
                        let app = shared.apps.get(&(a.site.clone(), a.generation))?;
                        Some((a.clone(), Source { dir: app.dir.clone(), env: app.env.clone() }))
                    })
                    .collect();
                (n.id.clone(), assigned)
            })
            .collect();
        shared.assignments = Some(assignments);
        local
    };
    let mut stopped = false;
    // A node no longer of this machine (removed, or joined from another
    // one now) runs nothing here any more.
    let gone: Vec<Arc<NodeAgent>> =
        locals.agents.iter().filter(|(id, _)| !local.iter().any(|(n, _)| n == *id)).map(|(_, a)| a.clone()).collect();
    for agent in gone {
        stopped |= agent.apply(Vec::new(), &[]).await;
    }
    for (node, assigned) in local {
        let env = locals.env.clone();
        stopped |= locals.agent(&node).apply(assigned, &env).await;
    }
    drop(locals);
    if stopped {
        // What stopped instances used is recorded now, not at the next tick.
        meter(store, shared, &locals_handle).await?;
    }
    Ok(())
}

/// Records what happened to running instances (their restarts, and why:
/// an exit, failed health probes, an OOM kill) in the public history.
pub(crate) fn record_events(store: &mut Store, events: &[(String, String)]) -> anyhow::Result<()> {
    for (site, detail) in events {
        store.record_history(now_ms(), "restart", site, detail)?;
    }
    Ok(())
}

/// Records what this machine's instances used since the last time.
pub(crate) async fn meter(
    store: &StoreHandle,
    shared: &Arc<Mutex<Shared>>,
    locals: &Arc<tokio::sync::Mutex<LocalAgents>>,
) -> anyhow::Result<()> {
    let providers: HashMap<String, String> =
        lock(shared).nodes.iter().map(|n| (n.id.clone(), n.provider.clone())).collect();
    let mut used = Vec::new();
    for (node, agent) in &locals.lock().await.agents {
        let Some(provider) = providers.get(node) else { continue };
        for (site, u) in agent.take_usage().await {
            used.push((agent.clone(), site, provider.clone(), u));
        }
    }
    if used.is_empty() {
        return Ok(());
    }
    let period = current_period();
    let rows: Vec<(String, String, ResourceTotals)> = used
        .iter()
        .map(|(_, site, provider, u)| {
            (site.clone(), provider.clone(), ResourceTotals { cpu_ms: u.cpu_ms, memory_mib_s: u.memory_mib_s })
        })
        .collect();
    let written = store
        .call(move |s| {
            for (i, (site, provider, totals)) in rows.into_iter().enumerate() {
                if let Err(e) = s.add_resource_usage(period, &site, &provider, totals) {
                    return Err((i, anyhow::Error::from(e)));
                }
            }
            Ok(())
        })
        .await;
    match written {
        Ok(()) => Ok(()),
        Err((recorded, e)) => {
            // What was not recorded goes with the next meter.
            for (agent, site, _, u) in used.into_iter().skip(recorded) {
                agent.give_back(std::collections::BTreeMap::from([(site, u)]));
            }
            Err(e)
        }
    }
}

/// Carries out `action` on the store; returns whether a site record changed.
fn carry_out(
    store: &mut Store,
    action: &Action,
    deployments: &[DeploymentRecord],
    nodes: &[NodeRecord],
    apps: &HashMap<(String, u64), App>,
) -> anyhow::Result<bool> {
    let deployment = |site: &str, generation: u64| {
        deployments
            .iter()
            .find(|d| d.site == site && d.generation == generation)
            .ok_or_else(|| anyhow::anyhow!("{site} generation {generation} is no longer asked for"))
    };
    match action {
        Action::Publish { site, generation, instances, publication } => {
            let d = deployment(site, *generation)?;
            let app = apps.get(&(site.clone(), *generation));
            let Some(Ok(manifest)) = app.map(|a| &a.manifest) else {
                anyhow::bail!("{site} generation {generation} was published without its manifest");
            };
            register_project(store, manifest)?;
            store.put_site(&site_record(d, manifest, instances.clone(), nodes))?;
            let running = format!("{} {} on {}", manifest.name, manifest.version, d.nodes.join(", "));
            store.report_deployment(site, *generation, DeploymentState::Running, &running)?;
            let detail = match publication {
                Publication::Update => format!("app {running}"),
                Publication::Deploy | Publication::Restart => deploy_detail(d, manifest),
            };
            store.record_history(now_ms(), publication.as_str(), site, &detail)?;
            Ok(true)
        }
        Action::Route { site, instances } => match store.sites()?.into_iter().find(|s| s.id == *site) {
            Some(record) => {
                store.put_site(&SiteRecord { instances: instances.clone(), ..record })?;
                Ok(true)
            }
            None => Ok(false),
        },
        Action::Fail { site, generation, detail } => {
            // The end of an app's log may hold its secrets: never in the
            // public history, nor in what its operator is told.
            let mut detail = detail.clone();
            for secret in store.site_config(site)?.into_iter().filter(|e| e.secret && e.value.len() >= 8) {
                detail = detail.replace(&secret.value, &format!("(secret {})", secret.name));
            }
            let detail = &detail;
            store.report_deployment(site, *generation, DeploymentState::Failed, detail)?;
            store.record_history(now_ms(), "fail", site, detail)?;
            Ok(false)
        }
        Action::Reschedule { site, generation, from, to, nodes: moved } => {
            let d = deployment(site, *generation)?;
            store.request_deployment(&DeploymentRecord { nodes: moved.clone(), ..d.clone() })?;
            let detail = format!("from {from} to {to}: {from} stopped answering");
            store.record_history(now_ms(), "reschedule", site, &detail)?;
            Ok(false)
        }
        Action::Withdraw { site } => {
            let at = now_ms();
            store.remove_site(site, at)?;
            // Nothing of it passes to a later site of the same id: its
            // settings and secrets go, its state is set aside (kept for its
            // operator, never a new site's).
            let settings = store.remove_site_config(site)?;
            let data = store.location().data_dir.clone();
            let state = data.join("state").join(site);
            let mut detail = "stopped and unpublished".to_owned();
            if settings > 0 {
                detail.push_str(&format!("; its {settings} settings removed"));
            }
            if state.exists() {
                let aside = format!("removed/{site}.{at}");
                std::fs::create_dir_all(data.join("removed"))?;
                std::fs::rename(&state, data.join(&aside))?;
                detail.push_str(&format!("; its state set aside in DATA/{aside}"));
            }
            store.record_history(at, "remove", site, &detail)?;
            Ok(true)
        }
    }
}

/// The app's project and its dependencies, as its manifest declares them;
/// a dependency not registered yet is registered with no dependencies of
/// its own (its own manifest, when deployed, says more).
fn register_project(store: &mut Store, manifest: &Manifest) -> Result<(), store::StoreError> {
    let known = store.projects()?;
    let repository = known
        .iter()
        .find(|p| p.id == manifest.project)
        .map_or_else(|| manifest.repository.clone(), |p| p.repository.clone());
    let project = store::ProjectRecord { id: manifest.project.clone(), deps: manifest.depends_on.clone(), repository };
    for record in crate::metered::registration(&known, project) {
        store.put_project(&record)?;
    }
    Ok(())
}

/// The site record of deployment `d` running `manifest` at `addrs`: what
/// publishing it writes, and what `deploy::check` has settlement check.
pub(crate) fn site_record(
    d: &DeploymentRecord,
    manifest: &Manifest,
    addrs: Vec<SocketAddr>,
    nodes: &[NodeRecord],
) -> SiteRecord {
    SiteRecord {
        id: d.site.clone(),
        instances: addrs,
        custom_hosts: d.hosts.clone(),
        anonymous: d.anonymous,
        free_requests_per_minute: manifest.tier.free_requests_per_minute,
        free_concurrent_requests: manifest.tier.free_concurrent_requests,
        premium_prefixes: manifest.tier.premium_prefixes.clone(),
        operator: d.operator.clone(),
        project: manifest.project.clone(),
        provider_share_bps: d.provider_share_bps,
        developer_share_bps: d.developer_share_bps,
        providers: providers_of(d, nodes),
        health_path: Some(manifest.health.path.clone()),
        pass_authorization: manifest.auth.pass_authorization,
        // Checked by `deploy::check`; a name the gateway would refuse is
        // never routed to.
        user_header: manifest.auth.user_header.as_deref().and_then(|h| gateway::check_user_header(h).ok()),
    }
}

/// What the history says about a deploy: enough to do it again.
fn deploy_detail(d: &DeploymentRecord, manifest: &Manifest) -> String {
    format!(
        "app {} {} (project {}, {}, {}) on {}; operator {}; provider share {} bps; developer share {} bps",
        manifest.name,
        manifest.version,
        manifest.project,
        manifest.license,
        manifest.repository,
        d.nodes.join(", "),
        d.operator,
        d.provider_share_bps,
        d.developer_share_bps
    )
}

/// The providers of `d`'s nodes, each once, with equal declared weights
/// (metered resources replace them at settlement).
fn providers_of(d: &DeploymentRecord, nodes: &[NodeRecord]) -> Vec<(String, u64)> {
    let mut providers: Vec<(String, u64)> = Vec::new();
    for node in d.nodes.iter().filter_map(|n| nodes.iter().find(|r| r.id == *n)) {
        if !providers.iter().any(|(p, _)| *p == node.provider) {
            providers.push((node.provider.clone(), 1));
        }
    }
    providers
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
