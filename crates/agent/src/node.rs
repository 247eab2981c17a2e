//! [`NodeAgent`]: one node's instances, by (site, generation).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use control::{Assignment, Failure, InstanceReport, Report};
use runtime::{Confinement, Instance, InstanceSpec, Manifest};

/// How long an instance no longer assigned keeps serving the requests in
/// flight before it is stopped (the gateway was moved off it first).
const DRAIN: Duration = Duration::from_secs(1);

/// Directories of a site's instances that no longer run, kept on each node
/// (the newest generations: their logs, and a quick way back): older ones
/// are removed once an instance stops or a start ends.
pub const KEEP_STOPPED: usize = 3;

/// What an assignment runs: where its app's files are on this machine (a
/// directory holding the app and its `commons.toml`), and the site's own
/// settings for it (its `[env]` and what its operator set), which go into
/// its environment after the platform's.
#[derive(Clone, Debug)]
pub struct Source {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// What a site's instances used (CPU milliseconds, MiB-seconds of memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ms: u64,
    pub memory_mib_s: u64,
}

impl Usage {
    fn add(&mut self, cpu_ms: u64, memory_mib_s: u64) {
        // saturating: a weight for the provider split, not money.
        self.cpu_ms = self.cpu_ms.saturating_add(cpu_ms);
        self.memory_mib_s = self.memory_mib_s.saturating_add(memory_mib_s);
    }
}

/// Something that happened to a running instance (a restart, and why),
/// for the public history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub site: String,
    pub generation: u64,
    pub detail: String,
}

/// How the gateway reaches this node's confined instances, each inside a
/// network namespace of its own.
#[derive(Clone, Debug)]
pub enum Reach {
    /// The gateway runs in this process: it connects from inside each
    /// instance's namespace, as this directory says.
    Directory(Arc<netns::Directory>),
    /// The gateway is on another machine (a joined node): each instance
    /// gets a forwarder on the host's loopback, at the port it reports.
    Forward,
}

/// A running instance and what keeps its port its own.
struct Running {
    instance: Instance,
    hold: Hold,
}

enum Hold {
    /// Unconfined: the instance holds its port itself.
    Nothing,
    /// The host's port of that number, held for the instance's life.
    Port(#[allow(dead_code)] netns::PortHold),
    /// The forwarder serving the instance on the host's port.
    Forwarder(tokio::task::JoinHandle<()>),
}

/// What a starting instance's port is held by, until it runs.
enum Pending {
    Nothing,
    Port(netns::PortHold),
    Listener(std::net::TcpListener),
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Hold::Forwarder(task) = self {
            task.abort();
        }
    }
}

/// An instance slot: starting, running, or failed (kept, so that a failed
/// generation is not started again while it is still assigned).
struct Slot {
    /// Which start fills this slot: a start that finds another token (its
    /// assignment was dropped and given again meanwhile) stops its instance.
    token: u64,
    instance: Option<Running>,
    /// The start under way, stopped (its processes killed) if the
    /// assignment goes away before it ends.
    starting: Option<tokio::task::AbortHandle>,
    failed: Option<String>,
    reported: bool,
}

/// The agent of one node: its directory holds an instance directory per
/// (site, version, generation).
pub struct NodeAgent {
    node: String,
    dir: PathBuf,
    /// Where the sites' state directories are (`<state>/<site>`): the
    /// machine's, outliving every instance of any node on it.
    state: PathBuf,
    confinement: Confinement,
    reach: Reach,
    slots: tokio::sync::Mutex<BTreeMap<(String, u64), Slot>>,
    /// What stopped instances used, to go with the next report.
    leftover: std::sync::Mutex<BTreeMap<String, Usage>>,
    /// Events taken from instances and not yet delivered.
    events: std::sync::Mutex<Vec<Event>>,
    starts: std::sync::atomic::AtomicU64,
}

impl NodeAgent {
    /// The agent of `node`, keeping its instances under `dir` and the
    /// state of the sites that keep some under `state`, running them
    /// confined or not, reached as `reach` says.
    pub fn new(node: &str, dir: &Path, state: &Path, confinement: Confinement, reach: Reach) -> Arc<NodeAgent> {
        Arc::new(NodeAgent {
            node: node.to_owned(),
            dir: dir.to_owned(),
            state: state.to_owned(),
            confinement,
            reach,
            slots: Default::default(),
            leftover: Default::default(),
            events: Default::default(),
            starts: Default::default(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Makes this node run what is `assigned`: starts what is new (in the
    /// background), stops what is no longer assigned (after a drain).
    /// Returns whether it stopped any instance.
    pub async fn apply(self: &Arc<Self>, assigned: Vec<(Assignment, Source)>, env: &[(String, String)]) -> bool {
        let mut slots = self.slots.lock().await;
        let mut stopping = Vec::new();
        slots.retain(|(site, generation), slot| {
            let keep = assigned.iter().any(|(a, _)| a.site == *site && a.generation == *generation);
            if !keep && let Some(instance) = slot.instance.take() {
                stopping.push((site.clone(), *generation, instance));
            }
            if !keep && let Some(start) = slot.starting.take() {
                start.abort();
            }
            keep
        });
        for (a, source) in assigned {
            let key = (a.site.clone(), a.generation);
            if slots.contains_key(&key) {
                continue;
            }
            let token = self.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (agent, env) = (self.clone(), env.to_vec());
            let start = tokio::spawn(async move { agent.start(a, source, env, token).await }).abort_handle();
            slots.insert(key, Slot { token, instance: None, starting: Some(start), failed: None, reported: false });
        }
        drop(slots);
        let stopped = !stopping.is_empty();
        for (site, generation, running) in stopping {
            self.keep_usage(&site, generation, &running.instance);
            let agent = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DRAIN).await;
                agent.stop(running).await;
                agent.prune(&site).await;
            });
        }
        stopped
    }

    /// What this node runs, and what failed since the last report.
    pub async fn report(&self) -> Report {
        let mut report = Report::default();
        let mut slots = self.slots.lock().await;
        for ((site, generation), slot) in slots.iter_mut() {
            if let Some(Running { instance, .. }) = &slot.instance {
                report.instances.push(InstanceReport {
                    site: site.clone(),
                    generation: *generation,
                    addr: instance.addr,
                    healthy: instance.is_healthy(),
                });
            }
            if let (Some(detail), false) = (&slot.failed, slot.reported) {
                report.failures.push(Failure { site: site.clone(), generation: *generation, detail: detail.clone() });
                slot.reported = true;
            }
        }
        report
    }

    /// Per site, what this node's instances used since the last call
    /// (those stopped meanwhile included).
    pub async fn take_usage(&self) -> BTreeMap<String, Usage> {
        let mut usage = std::mem::take(&mut *self.leftover.lock().unwrap_or_else(|e| e.into_inner()));
        let slots = self.slots.lock().await;
        for ((site, _), slot) in slots.iter() {
            if let Some(Running { instance, .. }) = &slot.instance {
                let used = instance.take_usage();
                usage.entry(site.clone()).or_default().add(used.cpu_ms, used.memory_mib_s);
            }
        }
        usage.retain(|_, u| u.cpu_ms > 0 || u.memory_mib_s > 0);
        usage
    }

    /// What happened to this node's instances since the last call (their
    /// restarts, and why), those put back included.
    pub async fn take_events(&self) -> Vec<Event> {
        let mut events = std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()));
        for ((site, generation), slot) in self.slots.lock().await.iter() {
            if let Some(Running { instance, .. }) = &slot.instance {
                let taken = instance.take_events().into_iter();
                events.extend(taken.map(|detail| Event { site: site.clone(), generation: *generation, detail }));
            }
        }
        events
    }

    /// Puts back events that never reached the control plane.
    pub fn give_back_events(&self, events: Vec<Event>) {
        let mut kept = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let later = std::mem::replace(&mut *kept, events);
        kept.extend(later);
    }

    /// Puts back failures a report carried that never reached the control
    /// plane: they go with the next report.
    pub async fn unreport(&self, failures: &[Failure]) {
        let mut slots = self.slots.lock().await;
        for f in failures {
            if let Some(slot) = slots.get_mut(&(f.site.clone(), f.generation)) {
                slot.reported = false;
            }
        }
    }

    /// Puts back usage taken for a report or a store write that failed.
    pub fn give_back(&self, usage: BTreeMap<String, Usage>) {
        let mut leftover = self.leftover.lock().unwrap_or_else(|e| e.into_inner());
        for (site, u) in usage {
            leftover.entry(site).or_default().add(u.cpu_ms, u.memory_mib_s);
        }
    }

    /// Instances for display: site, generation, address, healthy, restarts.
    pub async fn instances(&self) -> Vec<(String, u64, SocketAddr, bool, u32)> {
        let slots = self.slots.lock().await;
        slots
            .iter()
            .filter_map(|((site, generation), slot)| {
                let i = &slot.instance.as_ref()?.instance;
                Some((site.clone(), *generation, i.addr, i.is_healthy(), i.restarts()))
            })
            .collect()
    }

    /// Stops every instance at once, keeping what they used for a last report.
    pub async fn stop_all(&self) {
        let all: Vec<(String, u64, Running)> = {
            let mut slots = self.slots.lock().await;
            std::mem::take(&mut *slots)
                .into_iter()
                .filter_map(|((site, generation), slot)| Some((site, generation, slot.instance?)))
                .collect()
        };
        for (site, generation, running) in all {
            self.keep_usage(&site, generation, &running.instance);
            self.stop(running).await;
        }
    }

    /// Stops an instance; then its address reaches nothing.
    async fn stop(&self, running: Running) {
        let Running { instance, hold } = running;
        let (addr, namespace) = (instance.addr, instance.namespace().cloned());
        instance.stop().await;
        if let (Reach::Directory(directory), Some(namespace)) = (&self.reach, namespace) {
            directory.remove(addr, &namespace);
        }
        drop(hold);
    }

    fn keep_usage(&self, site: &str, generation: u64, instance: &Instance) {
        let events = instance.take_events().into_iter();
        let events = events.map(|detail| Event { site: site.to_owned(), generation, detail });
        self.events.lock().unwrap_or_else(|e| e.into_inner()).extend(events);
        let used = instance.take_usage();
        self.leftover
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(site.to_owned())
            .or_default()
            .add(used.cpu_ms, used.memory_mib_s);
    }

    async fn start(self: Arc<Self>, a: Assignment, source: Source, env: Vec<(String, String)>, token: u64) {
        let outcome = self.start_instance(&a, &source, env).await;
        let unassigned = {
            let mut slots = self.slots.lock().await;
            let slot = slots.get_mut(&(a.site.clone(), a.generation)).filter(|slot| slot.token == token);
            match (slot, outcome) {
                (Some(slot), Ok(instance)) => {
                    slot.instance = Some(instance);
                    slot.starting = None;
                    None
                }
                (Some(slot), Err(detail)) => {
                    slot.failed = Some(detail);
                    slot.starting = None;
                    None
                }
                // Unassigned while it started.
                (None, Ok(instance)) => Some(instance),
                (None, Err(_)) => None,
            }
        };
        if let Some(running) = unassigned {
            self.stop(running).await;
        }
        self.prune(&a.site).await;
    }

    /// Removes the directories of `site`'s instances that are neither
    /// assigned (running, starting, or failed and still reported) nor among
    /// the newest [`KEEP_STOPPED`] of the others.
    async fn prune(&self, site: &str) {
        let assigned: Vec<u64> = self.slots.lock().await.keys().filter(|(s, _)| s == site).map(|(_, g)| *g).collect();
        let site_dir = self.dir.join(site);
        let removed = tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&site_dir) else { return Ok(()) };
            // `<version>-<generation>`: a version may hold '-', a generation not.
            let mut stopped: Vec<(u64, PathBuf)> = entries
                .flatten()
                .filter_map(|e| {
                    let generation: u64 = e.file_name().to_str()?.rsplit_once('-')?.1.parse().ok()?;
                    let dir = e.file_type().ok()?.is_dir();
                    (dir && !assigned.contains(&generation)).then(|| (generation, e.path()))
                })
                .collect();
            stopped.sort_by(|a, b| b.0.cmp(&a.0));
            for (_, dir) in stopped.into_iter().skip(KEEP_STOPPED) {
                std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                match std::fs::remove_file(runtime::log_path(&dir)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(format!("{}: {e}", dir.display()));
                    }
                    _ => {}
                }
            }
            Ok::<(), String>(())
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(node = %self.node, site, error = %e, "cannot remove an old instance's directory");
        }
    }

    async fn start_instance(
        &self,
        a: &Assignment,
        source: &Source,
        env: Vec<(String, String)>,
    ) -> Result<Running, String> {
        let app = &source.dir;
        let manifest = Manifest::load(&app.join("commons.toml")).map_err(|e| e.to_string())?;
        // The site and the version name directories of root's: never paths.
        if !runtime::is_name(&a.site) || !runtime::is_version(&manifest.version) {
            return Err(format!("site {:?} version {:?}: not names this agent runs", a.site, manifest.version));
        }
        let what = format!("app {} {}", manifest.name, manifest.version);
        let no_port = |e: std::io::Error| format!("{what}: no free port: {e}");
        // The port names the instance on this machine: no other instance
        // may get it while this one runs.
        let (port, pending) = match (&self.confinement, &self.reach) {
            (Confinement::Unconfined, _) => {
                let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
                (free.map_err(no_port)?.port(), Pending::Nothing)
            }
            (Confinement::Confined(_), Reach::Directory(_)) => {
                let hold = netns::PortHold::new().map_err(no_port)?;
                (hold.port, Pending::Port(hold))
            }
            (Confinement::Confined(_), Reach::Forward) => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(no_port)?;
                (listener.local_addr().map_err(no_port)?.port(), Pending::Listener(listener))
            }
        };
        let spec = InstanceSpec {
            site: a.site.clone(),
            state_dir: manifest.state.then(|| self.state.join(&a.site)),
            dir: self.dir.join(&a.site).join(format!("{}-{}", manifest.version, a.generation)),
            manifest,
            source: app.clone(),
            port,
            env: env.into_iter().chain(source.env.iter().cloned()).collect(),
            confinement: self.confinement.clone(),
        };
        let instance = Instance::start(spec).await.map_err(|e| format!("{what}: {e}"))?;
        let hold = match (pending, instance.namespace()) {
            (Pending::Port(hold), Some(namespace)) => {
                if let Reach::Directory(directory) = &self.reach {
                    directory.insert(instance.addr, namespace.clone());
                }
                Hold::Port(hold)
            }
            (Pending::Listener(listener), Some(namespace)) => {
                let listener = listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(listener))
                    .map_err(no_port)?;
                Hold::Forwarder(tokio::spawn(netns::forward(listener, instance.addr, Some(namespace.clone()), 4096)))
            }
            _ => Hold::Nothing,
        };
        Ok(Running { instance, hold })
    }
}

/// How much of a log's end `commons logs` reads.
const LOG_READ_BYTES: u64 = 1 << 20;

/// The end of an instance's log, as [`newest_logs`] finds it.
#[derive(Debug)]
pub struct InstanceLog {
    pub node: String,
    /// The instance's directory.
    pub dir: PathBuf,
    pub lines: Vec<String>,
}

/// The last `n` lines of the newest instance of `site` on each node under
/// `nodes_dir` (the layout a [`NodeAgent`] keeps: `<node>/<site>/<version>-<generation>/`).
pub fn newest_logs(nodes_dir: &Path, site: &str, n: usize) -> Vec<InstanceLog> {
    let mut logs = Vec::new();
    let mut nodes: Vec<_> = std::fs::read_dir(nodes_dir).into_iter().flatten().flatten().collect();
    nodes.sort_by_key(|e| e.file_name());
    for node in nodes {
        // Instance directories only (their logs are beside them).
        let newest = std::fs::read_dir(node.path().join(site))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .max();
        let Some((_, dir)) = newest else { continue };
        // The end of the log only: it can be as large as the app made it.
        let text = runtime::read_end(&runtime::log_path(&dir), LOG_READ_BYTES);
        let all: Vec<&str> = text.lines().collect();
        let lines = all[all.len().saturating_sub(n)..].iter().map(|l| (*l).to_owned()).collect();
        logs.push(InstanceLog { node: node.file_name().to_string_lossy().into_owned(), dir, lines });
    }
    logs
}
