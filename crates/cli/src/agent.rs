//! The node agent of this machine: deploys apps as sites onto the nodes it
//! runs, keeps their instances, meters them for the provider split, and
//! records every deploy, update and removal in the public history.
//!
//! Each node has its own directory, `DATA/nodes/<node>/`, and each
//! instance its own below it, `<site>/<version>-<n>/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use commons_core::Period;
use runtime::{Instance, InstanceSpec, Manifest};
use store::{DeploymentRecord, NodeRecord, ProjectRecord, ResourceTotals, SiteRecord, Store};

use crate::{BadInput, now_ms};

/// The lowest developer share an operator may agree to (DESIGN.md §4).
pub const DEVELOPER_SHARE_FLOOR_BPS: u32 = 2000;

/// A site to deploy: which app, where, and on what terms.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub site: String,
    /// The app's directory, holding `commons.toml`.
    pub app: PathBuf,
    pub nodes: Vec<String>,
    pub operator: String,
    pub provider_share_bps: u32,
    pub developer_share_bps: u32,
    pub anonymous: bool,
    /// Custom host names that also reach the site.
    pub hosts: Vec<String>,
}

struct Running {
    node: NodeRecord,
    instance: Instance,
}

/// Moves the gateway to what was just published (a registry reload).
pub type Switch<'a> =
    &'a (dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> + Send + Sync);

/// The agent: instances by site.
pub struct Agent {
    store: Arc<Mutex<Store>>,
    dir: PathBuf,
    /// Environment every app gets: where the platform is.
    env: Vec<(String, String)>,
    sites: tokio::sync::Mutex<HashMap<String, Vec<Running>>>,
    /// Per site, the generation of its deployment request last acted on.
    applied: Mutex<HashMap<String, u64>>,
    next: std::sync::atomic::AtomicU64,
}

impl Deployment {
    pub fn from_record(d: &DeploymentRecord) -> Deployment {
        Deployment {
            site: d.site.clone(),
            app: PathBuf::from(&d.app_dir),
            nodes: d.nodes.clone(),
            operator: d.operator.clone(),
            provider_share_bps: d.provider_share_bps,
            developer_share_bps: d.developer_share_bps,
            anonymous: d.anonymous,
            hosts: d.hosts.clone(),
        }
    }
}

impl Agent {
    pub fn new(store: Arc<Mutex<Store>>, data_dir: &Path, env: Vec<(String, String)>) -> Agent {
        Agent {
            store,
            dir: data_dir.join("nodes"),
            env,
            sites: Default::default(),
            applied: Default::default(),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> Result<T, store::StoreError>) -> anyhow::Result<T> {
        Ok(f(&mut self.store.lock().unwrap_or_else(|e| e.into_inner()))?)
    }

    /// Deploys `d`: checks the manifest and the terms, starts an instance on
    /// each node and waits for their health, then publishes the site (the
    /// gateway routes it within a second) and records it in the history.
    /// On any failure nothing is published and what started is stopped.
    pub async fn deploy(&self, d: &Deployment) -> anyhow::Result<String> {
        self.deploy_as(d, "deploy").await
    }

    async fn deploy_as(&self, d: &Deployment, action: &str) -> anyhow::Result<String> {
        let manifest = Manifest::load(&d.app.join("commons.toml")).map_err(|e| BadInput(e.to_string()))?;
        crate::platform_cmd::check_name(&d.site).map_err(|e| BadInput(format!("site {e}")))?;
        if d.developer_share_bps < DEVELOPER_SHARE_FLOOR_BPS || d.developer_share_bps > 10_000 {
            return Err(BadInput(format!(
                "developer share {} bps: it must be between the floor of {DEVELOPER_SHARE_FLOOR_BPS} and 10000",
                d.developer_share_bps
            ))
            .into());
        }
        if d.provider_share_bps > 10_000 {
            return Err(BadInput(format!("provider share {} bps is over 10000", d.provider_share_bps)).into());
        }
        let nodes = self.nodes(&d.nodes)?;
        let instances = self.start_all(&d.site, &manifest, &d.app, &nodes).await?;
        self.register_project(&manifest)?;
        let addrs = instances.iter().map(|r| r.instance.addr).collect();
        let providers = providers_of(&nodes);
        let record = site_record(d, &manifest, addrs, providers);
        let detail = deploy_detail(d, &manifest);
        self.with_store(|store| {
            store.put_site(&record)?;
            store.record_history(now_ms(), action, &d.site, &detail).map(drop)
        })?;
        self.sites.lock().await.insert(d.site.clone(), instances);
        Ok(format!("{} {} on {}", manifest.name, manifest.version, d.nodes.join(", ")))
    }

    /// Makes the running sites what `desired` asks: deploys new requests,
    /// updates sites asked again, removes sites no longer asked for, and
    /// reports each outcome in the store. `switch` is called once a change
    /// is published, to move the gateway to it at once.
    pub async fn reconcile(&self, desired: &[DeploymentRecord], switch: Switch<'_>) {
        let remote: Vec<String> = match self.with_store(|store| store.nodes()) {
            Ok(nodes) => nodes.into_iter().filter(|n| n.remote).map(|n| n.id).collect(),
            Err(e) => return tracing::warn!(error = %e, "cannot read the nodes"),
        };
        // Sites on joined machines are theirs (see `join`).
        let desired: Vec<&DeploymentRecord> =
            desired.iter().filter(|d| !d.nodes.iter().any(|n| remote.contains(n))).collect();
        for d in desired.iter().copied() {
            let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner()).get(&d.site).copied();
            if applied == Some(d.generation) {
                continue;
            }
            self.applied.lock().unwrap_or_else(|e| e.into_inner()).insert(d.site.clone(), d.generation);
            let deployment = Deployment::from_record(d);
            let running = self.sites.lock().await.contains_key(&d.site);
            let outcome = if running {
                self.update(&deployment, switch, Duration::from_secs(1)).await
            } else {
                // Running before this agent started: a restart.
                let action = if d.state == "running" { "restart" } else { "deploy" };
                let outcome = self.deploy_as(&deployment, action).await;
                switch().await;
                outcome
            };
            let (state, detail) = match outcome {
                Ok(detail) => ("running", detail),
                Err(e) => ("failed", format!("{e:#}")),
            };
            let _ = self.with_store(|store| store.report_deployment(&d.site, d.generation, state, &detail));
        }
        let gone: Vec<String> = {
            let sites = self.sites.lock().await;
            sites.keys().filter(|site| !desired.iter().any(|d| d.site == **site)).cloned().collect()
        };
        for site in gone {
            self.applied.lock().unwrap_or_else(|e| e.into_inner()).remove(&site);
            if let Err(e) = self.remove(&site, switch).await {
                tracing::warn!(site, error = %e, "cannot remove the site");
            }
        }
    }

    /// Updates a running site to `d` (a new version, other nodes): starts
    /// the new instances, waits for their health, switches the site to
    /// them, lets `drain` pass for requests in flight on the old ones, then
    /// stops those.
    pub async fn update(&self, d: &Deployment, switch: Switch<'_>, drain: Duration) -> anyhow::Result<String> {
        let (site, app) = (d.site.as_str(), d.app.as_path());
        let manifest = Manifest::load(&app.join("commons.toml")).map_err(|e| BadInput(e.to_string()))?;
        if !self.sites.lock().await.contains_key(site) {
            return Err(BadInput(format!("this agent runs no site {site:?}")).into());
        }
        let nodes = self.nodes(&d.nodes)?;
        let fresh = self.start_all(site, &manifest, app, &nodes).await?;
        self.register_project(&manifest)?;
        let addrs: Vec<_> = fresh.iter().map(|r| r.instance.addr).collect();
        let detail = format!("app {} {} on {}", manifest.name, manifest.version, node_ids(&nodes));
        self.with_store(|store| {
            let mut record = store
                .sites()?
                .into_iter()
                .find(|s| s.id == site)
                .ok_or_else(|| store::StoreError::Database(format!("site {site} vanished during its update")))?;
            record.instances = addrs;
            record.providers = providers_of(&nodes);
            record.operator = d.operator.clone();
            record.provider_share_bps = d.provider_share_bps;
            record.developer_share_bps = d.developer_share_bps;
            record.anonymous = d.anonymous;
            record.custom_hosts = d.hosts.clone();
            record.free_requests_per_minute = manifest.tier.free_requests_per_minute;
            record.free_concurrent_requests = manifest.tier.free_concurrent_requests;
            record.premium_prefixes = manifest.tier.premium_prefixes.clone();
            record.project = manifest.project.clone();
            record.health_path = Some(manifest.health.path.clone());
            store.put_site(&record)?;
            store.record_history(now_ms(), "update", site, &detail).map(drop)
        })?;
        switch().await;
        let old = self.sites.lock().await.insert(site.to_owned(), fresh).unwrap_or_default();
        tokio::time::sleep(drain).await;
        self.stop_all(site, old).await;
        Ok(detail)
    }

    /// Unpublishes `site`, moves the gateway off it, and stops its
    /// instances.
    pub async fn remove(&self, site: &str, switch: Switch<'_>) -> anyhow::Result<()> {
        let old = self.sites.lock().await.remove(site).unwrap_or_default();
        let unpublished = self.with_store(|store| {
            store.remove_site(site)?;
            store.record_history(now_ms(), "remove", site, "stopped and unpublished").map(drop)
        });
        // Routed elsewhere (nowhere) first, then stopped: nothing is sent
        // to an instance that is going away.
        switch().await;
        self.stop_all(site, old).await;
        unpublished
    }

    /// Records in the store what each site's instances used since the last
    /// call, per provider, for `period`.
    pub async fn meter(&self, period: Period) -> anyhow::Result<()> {
        let mut used: HashMap<(String, String), ResourceTotals> = HashMap::new();
        for (site, running) in self.sites.lock().await.iter() {
            for r in running {
                meter_into(&mut used, site, r);
            }
        }
        self.record_used(period, &used)
    }

    fn record_used(&self, period: Period, used: &HashMap<(String, String), ResourceTotals>) -> anyhow::Result<()> {
        self.with_store(|store| {
            for ((site, provider), totals) in used {
                store.add_resource_usage(period, site, provider, *totals)?;
            }
            Ok(())
        })
    }

    /// Instances per site, with their health and restarts, for display.
    pub async fn status(&self) -> Vec<(String, String, std::net::SocketAddr, bool, u32)> {
        let sites = self.sites.lock().await;
        let mut rows: Vec<_> = sites
            .iter()
            .flat_map(|(site, running)| {
                running.iter().map(move |r| {
                    (site.clone(), r.node.id.clone(), r.instance.addr, r.instance.is_healthy(), r.instance.restarts())
                })
            })
            .collect();
        rows.sort();
        rows
    }

    /// Stops every instance (the sites stay published for a restart).
    pub async fn shutdown(&self) {
        let all: Vec<(String, Vec<Running>)> = self.sites.lock().await.drain().collect();
        for (site, running) in all {
            self.stop_all(&site, running).await;
        }
    }

    fn nodes(&self, ids: &[String]) -> anyhow::Result<Vec<NodeRecord>> {
        if ids.is_empty() {
            return Err(BadInput("a site needs at least one node".into()).into());
        }
        let known = self.with_store(|store| store.nodes())?;
        ids.iter()
            .map(|id| {
                known.iter().find(|n| n.id == *id).cloned().ok_or_else(|| {
                    BadInput(format!("there is no node {id:?}; providers register nodes with `commons node add`"))
                        .into()
                })
            })
            .collect()
    }

    /// Starts one instance per node; all or none.
    async fn start_all(
        &self,
        site: &str,
        manifest: &Manifest,
        app: &Path,
        nodes: &[NodeRecord],
    ) -> anyhow::Result<Vec<Running>> {
        let mut started: Vec<Running> = Vec::new();
        for node in nodes {
            let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let spec = InstanceSpec {
                site: site.to_owned(),
                manifest: manifest.clone(),
                source: app.to_owned(),
                dir: self.dir.join(&node.id).join(site).join(format!("{}-{n}", manifest.version)),
                port: free_port()?,
                env: self.env.clone(),
            };
            match Instance::start(spec).await {
                Ok(instance) => started.push(Running { node: node.clone(), instance }),
                Err(e) => {
                    let detail = format!("app {} {} on {}: {e}", manifest.name, manifest.version, node.id);
                    self.stop_all(site, started).await;
                    let _ = self.with_store(|store| store.record_history(now_ms(), "fail", site, &detail));
                    return Err(BadInput(format!("deploying {site} failed: {e}")).into());
                }
            }
        }
        Ok(started)
    }

    async fn stop_all(&self, site: &str, running: Vec<Running>) {
        // What they used to the end still counts: recorded before they
        // stop, so that a stopped instance's use is in the store.
        let mut used = HashMap::new();
        for r in &running {
            meter_into(&mut used, site, r);
        }
        let period = Period::from_days_since_epoch((now_ms() / 86_400_000) as i64);
        if let Err(e) = self.record_used(period, &used) {
            tracing::warn!(site, error = %e, "cannot record the resources of stopped instances");
        }
        for r in running {
            r.instance.stop().await;
        }
    }

    /// The app's project and its dependencies, as its manifest declares
    /// them; a dependency not registered yet is registered with no
    /// dependencies of its own (its own manifest, when deployed, says more).
    fn register_project(&self, manifest: &Manifest) -> anyhow::Result<()> {
        self.with_store(|store| {
            let projects = store.projects()?;
            let known: Vec<&str> = projects.iter().map(|p| p.id.as_str()).collect();
            let existing = projects.iter().find(|p| p.id == manifest.project);
            store.put_project(&ProjectRecord {
                id: manifest.project.clone(),
                deps: manifest.depends_on.clone(),
                repository: existing.map_or_else(|| manifest.repository.clone(), |p| p.repository.clone()),
            })?;
            for (dep, _) in &manifest.depends_on {
                if !known.contains(&dep.as_str()) {
                    store.put_project(&ProjectRecord { id: dep.clone(), deps: vec![], repository: String::new() })?;
                }
            }
            Ok(())
        })
    }
}

fn meter_into(used: &mut HashMap<(String, String), ResourceTotals>, site: &str, r: &Running) {
    let delta = r.instance.take_usage();
    let entry = used.entry((site.to_owned(), r.node.provider.clone())).or_default();
    entry.cpu_ms += delta.cpu_ms;
    entry.memory_mib_s += delta.memory_mib_s;
}

/// The site record of a deployment running at `addrs`.
pub fn site_record(
    d: &Deployment,
    manifest: &Manifest,
    addrs: Vec<std::net::SocketAddr>,
    providers: Vec<(String, u64)>,
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
        providers,
        health_path: Some(manifest.health.path.clone()),
    }
}

/// What the history says about a deploy: enough to do it again.
pub fn deploy_detail(d: &Deployment, manifest: &Manifest) -> String {
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

/// The providers of these nodes, each once, with equal declared weights
/// (metered resources replace them at settlement).
pub fn providers_of(nodes: &[NodeRecord]) -> Vec<(String, u64)> {
    let mut providers: Vec<(String, u64)> = Vec::new();
    for node in nodes {
        if !providers.iter().any(|(p, _)| *p == node.provider) {
            providers.push((node.provider.clone(), 1));
        }
    }
    providers
}

fn node_ids(nodes: &[NodeRecord]) -> String {
    nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>().join(", ")
}

/// A port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
