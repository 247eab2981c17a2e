//! More than one machine: node agents on other machines
//! (`commons node --join URL --token T`) and the control plane's side of
//! them in `commons up`.
//!
//! A joined agent calls `POST /agent/v1/sync` on the control listener
//! every half second with what it runs (instances by site and generation,
//! healthy or not), what failed, and the resources its instances used; the
//! answer says what it should run (each assignment with the app's manifest
//! and files) and which generation of each site is published. The control
//! plane publishes a site once every node of its deployment runs a healthy
//! instance of its current generation; an agent stops an older generation
//! only once the newer one is published (so an update drops no request).
//! A node silent for [`NODE_TIMEOUT`] is taken out: its instances leave
//! the site records at once (marked down), and each deployment on it is
//! rescheduled onto a live joined node that does not run it yet.
//!
//! For now a deployment's nodes are all on this machine or all joined.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commons_core::{Period, token_sha256};
use runtime::{Instance, InstanceSpec, Manifest};
use serde::{Deserialize, Serialize};
use store::{DeploymentRecord, NodeRecord, ResourceTotals, Store};

use crate::agent::{Deployment, deploy_detail, providers_of, site_record};
use crate::{BadInput, now_ms};

/// How long a joined node may be silent before its sites move.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(4);
/// Largest app directory shipped to a joined node.
const APP_BYTES_MAX: u64 = 16 << 20;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReportedInstance {
    pub site: String,
    pub generation: u64,
    pub port: u16,
    pub healthy: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Failure {
    pub site: String,
    pub generation: u64,
    pub detail: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct UsageReport {
    pub site: String,
    pub cpu_ms: u64,
    pub memory_mib_s: u64,
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct SyncRequest {
    pub instances: Vec<ReportedInstance>,
    pub failures: Vec<Failure>,
    pub usage: Vec<UsageReport>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Assignment {
    pub site: String,
    pub generation: u64,
    /// The manifest's text.
    pub manifest: String,
    /// The app's files: relative path and contents in hex.
    pub files: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct SyncResponse {
    pub node: String,
    pub env: Vec<(String, String)>,
    pub assignments: Vec<Assignment>,
    /// Per site, the generation the gateway routes.
    pub published: BTreeMap<String, u64>,
}

struct NodeState {
    last_seen: Instant,
    host: IpAddr,
    instances: Vec<ReportedInstance>,
}

/// The control plane's view of the joined nodes.
pub struct Joined {
    store: Arc<Mutex<Store>>,
    env: Vec<(String, String)>,
    nodes: Mutex<HashMap<String, NodeState>>,
    /// Per site on joined nodes, the generation its site record routes.
    published: Mutex<HashMap<String, u64>>,
}

impl Joined {
    pub fn new(store: Arc<Mutex<Store>>, env: Vec<(String, String)>) -> Joined {
        Joined { store, env, nodes: Default::default(), published: Default::default() }
    }

    /// A joined agent's sync: who it is by its token, what it reports, and
    /// what it should run. Err: (HTTP status, message).
    pub fn sync(&self, token: Option<&str>, peer: IpAddr, request: SyncRequest) -> Result<SyncResponse, (u16, String)> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let internal = |e: store::StoreError| (500, e.to_string());
        let node = match token {
            Some(token) => store.node_by_token(&token_sha256(token)).map_err(internal)?,
            None => None,
        }
        .ok_or((401, "unknown join token: create one with `commons node token NODE`".to_owned()))?;
        let period = Period::from_days_since_epoch((now_ms() / 86_400_000) as i64);
        for used in &request.usage {
            let totals = ResourceTotals { cpu_ms: used.cpu_ms, memory_mib_s: used.memory_mib_s };
            store.add_resource_usage(period, &used.site, &node.provider, totals).map_err(internal)?;
        }
        let deployments = store.deployments().map_err(internal)?;
        for failure in &request.failures {
            let pending = deployments
                .iter()
                .any(|d| d.site == failure.site && d.generation == failure.generation && d.state == "pending");
            if pending {
                let detail = format!("on {}: {}", node.id, failure.detail);
                store.report_deployment(&failure.site, failure.generation, "failed", &detail).map_err(internal)?;
                store.record_history(now_ms(), "fail", &failure.site, &detail).map_err(internal)?;
            }
        }
        drop(store);
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.id.clone(), NodeState { last_seen: Instant::now(), host: peer, instances: request.instances });
        let mut assignments = Vec::new();
        for d in deployments.iter().filter(|d| d.nodes.contains(&node.id) && d.state != "failed") {
            match ship(Path::new(&d.app_dir)) {
                Ok((manifest, files)) => {
                    assignments.push(Assignment { site: d.site.clone(), generation: d.generation, manifest, files })
                }
                Err(e) => tracing::warn!(site = %d.site, error = %e, "cannot ship the app"),
            }
        }
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner()).clone().into_iter().collect();
        Ok(SyncResponse { node: node.id, env: self.env.clone(), assignments, published })
    }

    /// Publishes sites on joined nodes whose instances are all healthy,
    /// takes silent nodes' instances out, moves their sites, and removes
    /// sites no longer deployed. Returns whether any site record changed.
    pub fn publish(&self) -> anyhow::Result<bool> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let all_nodes = store.nodes()?;
        let remote: Vec<&NodeRecord> = all_nodes.iter().filter(|n| n.remote).collect();
        let all_deployments = store.deployments()?;
        let deployments: Vec<&DeploymentRecord> = all_deployments
            .iter()
            .filter(|d| !d.nodes.is_empty() && d.nodes.iter().all(|n| remote.iter().any(|r| r.id == *n)))
            .collect();
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let alive = |id: &str| nodes.get(id).is_some_and(|n| n.last_seen.elapsed() < NODE_TIMEOUT);
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        for &d in &deployments {
            // A silent node's sites move to a live node that lacks them.
            if let Some(dead) = d.nodes.iter().find(|n| !alive(n) && nodes.contains_key(*n)) {
                // The live node with the most memory left that fits the app.
                let needs = app_memory_mb(&d.app_dir);
                let spare = remote
                    .iter()
                    .filter(|r| alive(&r.id) && !d.nodes.contains(&r.id))
                    .map(|r| (r, free_memory_mb(r, &all_deployments)))
                    .filter(|(_, free)| *free >= needs)
                    .max_by_key(|(_, free)| *free)
                    .map(|(r, _)| r);
                if let Some(spare) = spare {
                    let moved: Vec<String> =
                        d.nodes.iter().map(|n| if n == dead { spare.id.clone() } else { n.clone() }).collect();
                    let detail = format!("from {dead} to {}: {dead} stopped answering", spare.id);
                    store.request_deployment(&DeploymentRecord { nodes: moved, ..d.clone() })?;
                    store.record_history(now_ms(), "reschedule", &d.site, &detail)?;
                    continue;
                }
            }
            let ready = |generation: u64| -> Vec<SocketAddr> {
                d.nodes
                    .iter()
                    .filter(|n| alive(n))
                    .filter_map(|n| {
                        let state = nodes.get(n.as_str())?;
                        let instance = state
                            .instances
                            .iter()
                            .find(|i| i.site == d.site && i.generation == generation && i.healthy)?;
                        Some(SocketAddr::new(state.host, instance.port))
                    })
                    .collect()
            };
            let current = ready(d.generation);
            let route = if current.len() == d.nodes.len() && published.get(&d.site) != Some(&d.generation) {
                // Every node runs the new generation: publish it.
                let Ok(manifest) = Manifest::load(&Path::new(&d.app_dir).join("commons.toml")) else { continue };
                let deployment = Deployment::from_record(d);
                let action = if published.contains_key(&d.site) { "update" } else { "deploy" };
                store.record_history(now_ms(), action, &d.site, &deploy_detail(&deployment, &manifest))?;
                store.report_deployment(
                    &d.site,
                    d.generation,
                    "running",
                    &format!("{} {} on {}", manifest.name, manifest.version, d.nodes.join(", ")),
                )?;
                published.insert(d.site.clone(), d.generation);
                let on: Vec<NodeRecord> =
                    d.nodes.iter().filter_map(|n| all_nodes.iter().find(|r| r.id == *n).cloned()).collect();
                Some(site_record(&deployment, &manifest, current, providers_of(&on)))
            } else if let Some(&generation) = published.get(&d.site) {
                // Keep the published generation's live instances routed.
                let live = ready(generation);
                let record = store.sites()?.into_iter().find(|s| s.id == d.site);
                record.filter(|r| r.instances != live).map(|r| store::SiteRecord { instances: live, ..r })
            } else {
                None
            };
            if let Some(record) = route {
                store.put_site(&record)?;
                changed = true;
            }
        }
        let withdrawn: Vec<String> =
            published.keys().filter(|site| !deployments.iter().any(|d| d.site == **site)).cloned().collect();
        for site in withdrawn {
            published.remove(&site);
            store.remove_site(&site)?;
            store.record_history(now_ms(), "remove", &site, "stopped and unpublished")?;
            changed = true;
        }
        Ok(changed)
    }
}

/// The memory an app's manifest asks for, in MiB (0 if it cannot be read).
pub fn app_memory_mb(app_dir: &str) -> u64 {
    Manifest::load(&Path::new(app_dir).join("commons.toml")).map_or(0, |m| m.resources.memory_mb)
}

/// What a node's capacity leaves after the deployments on it.
pub fn free_memory_mb(node: &NodeRecord, deployments: &[DeploymentRecord]) -> u64 {
    let committed: u64 =
        deployments.iter().filter(|d| d.nodes.contains(&node.id)).map(|d| app_memory_mb(&d.app_dir)).sum();
    node.capacity_mb.saturating_sub(committed)
}

/// The manifest's text and the app's files, to send to a joined node.
fn ship(app: &Path) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let manifest = std::fs::read_to_string(app.join("commons.toml"))?;
    let mut files = Vec::new();
    let mut total = 0;
    collect(app, app, &mut files, &mut total)?;
    Ok((manifest, files))
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>, total: &mut u64) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, files, total)?;
        } else {
            *total += entry.metadata()?.len();
            if *total > APP_BYTES_MAX {
                anyhow::bail!("{} is over {APP_BYTES_MAX} bytes", root.display());
            }
            let relative = path.strip_prefix(root)?.to_string_lossy().into_owned();
            files.push((relative, hex::encode(std::fs::read(&path)?)));
        }
    }
    Ok(())
}

/// `commons node --join URL --token T`: runs this machine's agent for the
/// node the token is for, until Ctrl-C.
pub fn run_agent(url: &str, token: &str, dir: &Path) -> anyhow::Result<()> {
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| BadInput(format!("--join {url:?}: give the control listener's http:// URL")))?
        .trim_end_matches('/')
        .to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let agent =
            Arc::new(RemoteAgent { dir: dir.to_owned(), running: Default::default(), syncs: Default::default() });
        let looping = agent.clone();
        let token = token.to_owned();
        let work = tokio::spawn(async move { looping.run(&authority, &token).await });
        tokio::select! {
            result = work => result?,
            _ = crate::stop_signal() => {
                eprintln!("stopping this node's apps");
                Ok(())
            }
        }?;
        agent.stop_all().await;
        anyhow::Ok(())
    })
}

/// An instance of a site on this node, by generation.
struct Running {
    generation: u64,
    instance: Option<Instance>,
    failed: Option<String>,
    reported: bool,
}

struct RemoteAgent {
    dir: PathBuf,
    running: tokio::sync::Mutex<HashMap<String, Vec<Running>>>,
    /// Syncs so far: resource use goes with every twentieth (ten seconds).
    syncs: std::sync::atomic::AtomicU64,
}

impl RemoteAgent {
    async fn run(self: &Arc<Self>, authority: &str, token: &str) -> anyhow::Result<()> {
        let mut announced = false;
        loop {
            let request = self.report().await;
            let body = serde_json::to_string(&request)?;
            let auth = format!("Bearer {token}");
            let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
            match crate::demo::http_to(authority, "POST", authority, "/agent/v1/sync", &headers, &body).await {
                Ok(answer) if answer.status == 200 => {
                    let response: SyncResponse = serde_json::from_str(&answer.body)?;
                    if !announced {
                        eprintln!(
                            "joined {authority} as node {}; running its sites in {}",
                            response.node,
                            self.dir.display()
                        );
                        announced = true;
                    }
                    self.apply(response).await;
                }
                Ok(answer) if answer.status == 401 => {
                    return Err(BadInput(format!("{authority} refused the token: {}", answer.body.trim())).into());
                }
                Ok(answer) => tracing::warn!(status = answer.status, "the control plane answered with an error"),
                Err(e) => tracing::warn!(error = %e, "cannot reach the control plane; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn report(&self) -> SyncRequest {
        let meter = self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(20);
        let mut running = self.running.lock().await;
        let mut request = SyncRequest::default();
        for (site, instances) in running.iter_mut() {
            let mut used = UsageReport { site: site.clone(), cpu_ms: 0, memory_mib_s: 0 };
            for r in instances.iter_mut() {
                if let Some(instance) = &r.instance {
                    request.instances.push(ReportedInstance {
                        site: site.clone(),
                        generation: r.generation,
                        port: instance.addr.port(),
                        healthy: instance.is_healthy(),
                    });
                    if meter {
                        let delta = instance.take_usage();
                        used.cpu_ms += delta.cpu_ms;
                        used.memory_mib_s += delta.memory_mib_s;
                    }
                }
                if let (Some(detail), false) = (&r.failed, r.reported) {
                    request.failures.push(Failure {
                        site: site.clone(),
                        generation: r.generation,
                        detail: detail.clone(),
                    });
                    r.reported = true;
                }
            }
            if used.cpu_ms > 0 || used.memory_mib_s > 0 {
                request.usage.push(used);
            }
        }
        request
    }

    /// Starts what is assigned and not running (in the background: the
    /// node keeps syncing meanwhile), and stops what is no longer needed:
    /// withdrawn sites, and older generations once a newer one is
    /// published.
    async fn apply(self: &Arc<Self>, response: SyncResponse) {
        let mut running = self.running.lock().await;
        for assignment in &response.assignments {
            let generations = running.entry(assignment.site.clone()).or_default();
            if generations.iter().any(|r| r.generation == assignment.generation) {
                continue;
            }
            generations.push(Running {
                generation: assignment.generation,
                instance: None,
                failed: None,
                reported: false,
            });
            let (agent, assignment, env, node) =
                (self.clone(), assignment.clone(), response.env.clone(), response.node.clone());
            tokio::spawn(async move {
                let outcome = agent.start(&node, &assignment, env).await;
                let mut running = agent.running.lock().await;
                let slot = running
                    .get_mut(&assignment.site)
                    .and_then(|g| g.iter_mut().find(|r| r.generation == assignment.generation));
                match (slot, outcome) {
                    (Some(slot), Ok(instance)) => slot.instance = Some(instance),
                    (Some(slot), Err(e)) => slot.failed = Some(format!("{e:#}")),
                    (None, Ok(instance)) => {
                        drop(running);
                        instance.stop().await;
                    }
                    (None, Err(_)) => {}
                }
            });
        }
        let mut stopping = Vec::new();
        for (site, generations) in running.iter_mut() {
            let assigned: Vec<u64> =
                response.assignments.iter().filter(|a| a.site == *site).map(|a| a.generation).collect();
            let published = response.published.get(site).copied();
            generations.retain_mut(|r| {
                let keep = assigned.contains(&r.generation)
                    || (published == Some(r.generation) && assigned.iter().any(|&g| g > r.generation));
                if !keep && let Some(instance) = r.instance.take() {
                    stopping.push(instance);
                }
                keep
            });
        }
        running.retain(|_, generations| !generations.is_empty());
        drop(running);
        for instance in stopping {
            // Requests in flight finish first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            instance.stop().await;
        }
    }

    async fn start(&self, node: &str, a: &Assignment, env: Vec<(String, String)>) -> anyhow::Result<Instance> {
        let app = self.dir.join("apps").join(format!("{}-{}", a.site, a.generation));
        std::fs::create_dir_all(&app)?;
        for (relative, contents) in &a.files {
            let path = app.join(relative);
            if !path.starts_with(&app) || relative.contains("..") {
                anyhow::bail!("the app file {relative:?} would land outside its directory");
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, hex::decode(contents)?)?;
        }
        let manifest = Manifest::parse(&format!("{}/commons.toml", a.site), &a.manifest)?;
        let spec = InstanceSpec {
            site: a.site.clone(),
            dir: self.dir.join("nodes").join(node).join(&a.site).join(format!("{}-{}", manifest.version, a.generation)),
            manifest,
            source: app,
            port: std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
            env,
        };
        Ok(Instance::start(spec).await?)
    }

    async fn stop_all(&self) {
        let all: Vec<Running> = self.running.lock().await.drain().flat_map(|(_, g)| g).collect();
        for r in all {
            if let Some(instance) = r.instance {
                instance.stop().await;
            }
        }
    }
}
