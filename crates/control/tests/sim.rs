//! A deterministic simulation of the control plane, in the manner of
//! TigerBeetle's VOPR: a fake clock, node agents that start instances
//! slowly or not at all, nodes that die and come back, instances that turn
//! unhealthy, operators who deploy, update and remove sites while all of
//! that happens. Every step checks the invariants; a schedule that breaks
//! one fails with the seed that replays it:
//!
//! ```sh
//! SIM_SEED=1234 cargo test -p control --test sim
//! SIM_SCHEDULES=20000 cargo test -p control --test sim --release   # more
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;

use commons_core::SplitMix64;
use control::capacity::{booked_mb, free_memory_mb};
use control::{
    Action, Control, DeploymentSpec, DeploymentState, Failure, InstanceReport, NODE_TIMEOUT_MS, NodeSpec,
    PENDING_MAX_MS, Report,
};

const SITES: [&str; 5] = ["chat", "notes", "search", "wiki", "maps"];
const STEPS: usize = 300;

#[test]
fn thousands_of_schedules_keep_every_invariant() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        if let Err(e) = simulate(seed) {
            panic!("seed {seed}: {e}");
        }
        return;
    }
    let schedules: u64 = std::env::var("SIM_SCHEDULES").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000);
    for seed in 0..schedules {
        if let Err(e) = simulate(seed) {
            panic!("seed {seed}: {e}\nreplay it with SIM_SEED={seed} cargo test -p control --test sim");
        }
    }
}

/// An instance on a simulated node.
struct Instance {
    site: String,
    generation: u64,
    addr: SocketAddr,
    healthy: bool,
    started: bool,
    /// When its start ends (healthy, or failed).
    ready_at_ms: u64,
    will_fail: bool,
}

struct Node {
    spec: NodeSpec,
    alive: bool,
    instances: Vec<Instance>,
    failures: Vec<Failure>,
    /// The instances this node last reported, and when.
    reported: Option<(u64, Vec<InstanceReport>)>,
}

struct World {
    rng: SplitMix64,
    now_ms: u64,
    nodes: Vec<Node>,
    desired: Vec<DeploymentSpec>,
    routes: BTreeMap<String, Vec<SocketAddr>>,
    /// Per site, its published generation and that generation's nodes.
    published: BTreeMap<String, (u64, Vec<String>)>,
    outcomes: BTreeMap<(String, u64), &'static str>,
    /// Per site, the last generation asked for: never reused, even after
    /// the site is removed (the store keeps the counter).
    generations: BTreeMap<String, u64>,
    next_port: u16,
    control: Control,
    /// Percent chances of trouble (zero in the quiet end of a schedule).
    fail_percent: u64,
    silence_percent: u64,
}

fn simulate(seed: u64) -> Result<(), String> {
    let mut rng = SplitMix64::new(seed);
    let n_nodes = 3 + rng.below(4) as usize;
    let nodes = (0..n_nodes)
        .map(|i| Node {
            spec: NodeSpec {
                id: format!("n{i}"),
                provider: format!("p{}", i % 2),
                capacity_mb: [512, 1024, 2048][rng.below(3) as usize],
                // Mostly joined nodes, which can go silent; sometimes one of
                // this machine's.
                remote: i != 0 || rng.chance(50),
            },
            alive: true,
            instances: Vec::new(),
            failures: Vec::new(),
            reported: None,
        })
        .collect();
    let mut world = World {
        rng,
        now_ms: 1_000_000,
        nodes,
        desired: Vec::new(),
        routes: BTreeMap::new(),
        published: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        generations: BTreeMap::new(),
        next_port: 1,
        control: Control::new(),
        fail_percent: 10,
        silence_percent: 5,
    };
    for step in 0..STEPS {
        world.now_ms += 100 + world.rng.below(1_400);
        world.disturb();
        world.step().map_err(|e| format!("step {step}: {e}"))?;
    }
    // The quiet end: every node back, nothing fails any more. Every
    // generation must reach an outcome and every running site its routes.
    world.fail_percent = 0;
    world.silence_percent = 0;
    for node in &mut world.nodes {
        node.alive = true;
    }
    let end = world.now_ms + PENDING_MAX_MS + 10_000;
    let mut step = STEPS;
    while world.now_ms < end {
        world.now_ms += 3_000;
        world.step().map_err(|e| format!("quiet step {step}: {e}"))?;
        step += 1;
    }
    for d in &world.desired {
        match d.state {
            DeploymentState::Pending => {
                return Err(format!("{} generation {} never got an outcome", d.site, d.generation));
            }
            DeploymentState::Running => {
                let routed = world.routes.get(&d.site).map_or(0, Vec::len);
                if routed != d.nodes.len() {
                    return Err(format!("{} runs on {:?} but is routed to {routed} instances", d.site, d.nodes));
                }
            }
            DeploymentState::Failed => {}
        }
    }
    Ok(())
}

impl World {
    /// What operators and the machines do between two steps.
    fn disturb(&mut self) {
        let roll = self.rng.below(100);
        match roll {
            0..=11 => self.deploy(),
            12..=14 if !self.desired.is_empty() => {
                let i = self.rng.below(self.desired.len() as u64) as usize;
                self.desired.remove(i);
            }
            15..=17 if self.silence_percent > 0 => {
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                let node = &mut self.nodes[i];
                node.alive = false;
                node.instances.clear();
                node.failures.clear();
            }
            18..=22 => {
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                self.nodes[i].alive = true;
            }
            23..=27 => {
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                let node = &mut self.nodes[i];
                if !node.instances.is_empty() {
                    let j = self.rng.below(node.instances.len() as u64) as usize;
                    let instance = &mut node.instances[j];
                    if instance.started {
                        instance.healthy = !instance.healthy;
                    }
                }
            }
            _ => {}
        }
    }

    /// An operator deploys or updates a site, as `commons deploy` allows:
    /// nodes of one kind, each with the memory left.
    fn deploy(&mut self) {
        let site = SITES[self.rng.below(SITES.len() as u64) as usize].to_owned();
        let remote = self.rng.chance(80);
        let mut candidates: Vec<&Node> = self.nodes.iter().filter(|n| n.spec.remote == remote).collect();
        if candidates.is_empty() {
            return;
        }
        self.rng.shuffle(&mut candidates);
        let n = 1 + self.rng.below(candidates.len().min(2) as u64) as usize;
        let nodes: Vec<String> = candidates[..n].iter().map(|n| n.spec.id.clone()).collect();
        let memory_mb = [128, 256, 512][self.rng.below(3) as usize];
        let specs: Vec<NodeSpec> = self.nodes.iter().map(|n| n.spec.clone()).collect();
        let fits = nodes.iter().all(|id| {
            let node = specs.iter().find(|s| s.id == *id).expect("a node");
            free_memory_mb(node, &self.desired, Some(&site)) >= memory_mb
        });
        if !fits {
            return;
        }
        let last = self.generations.entry(site.clone()).or_default();
        *last += 1;
        let generation = *last;
        self.desired.retain(|d| d.site != site);
        self.desired.push(DeploymentSpec { site, generation, nodes, memory_mb, state: DeploymentState::Pending });
        self.desired.sort_by(|a, b| a.site.cmp(&b.site));
    }

    fn step(&mut self) -> Result<(), String> {
        // The agents' instances finish starting; the agents report.
        for i in 0..self.nodes.len() {
            let now = self.now_ms;
            let node = &mut self.nodes[i];
            if !node.alive {
                continue;
            }
            let mut failed = Vec::new();
            node.instances.retain(|instance| {
                if instance.ready_at_ms <= now && instance.will_fail {
                    failed.push(Failure {
                        site: instance.site.clone(),
                        generation: instance.generation,
                        detail: "the app exited".to_owned(),
                    });
                    return false;
                }
                true
            });
            for instance in &mut node.instances {
                // Ready: healthy. Unhealthy: the supervisor restarts it, and
                // it comes back, sooner or later.
                if instance.ready_at_ms <= now && !instance.started {
                    instance.started = true;
                    instance.healthy = true;
                } else if instance.started && !instance.healthy && self.rng.chance(30) {
                    instance.healthy = true;
                }
            }
            node.failures.extend(failed);
            if self.rng.chance(self.silence_percent) {
                continue;
            }
            let instances: Vec<InstanceReport> = node
                .instances
                .iter()
                .map(|i| InstanceReport {
                    site: i.site.clone(),
                    generation: i.generation,
                    addr: i.addr,
                    healthy: i.healthy,
                })
                .collect();
            node.reported = Some((now, instances.clone()));
            let report = Report { instances, failures: std::mem::take(&mut node.failures) };
            self.control.observe(&node.spec.id, now, report);
        }
        let specs: Vec<NodeSpec> = self.nodes.iter().map(|n| n.spec.clone()).collect();
        for action in self.control.decide(self.now_ms, &specs, &self.desired) {
            self.carry_out(action)?;
        }
        // The agents start and stop what they are assigned.
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            let assigned = self.control.assignments(&self.nodes[i].spec.id, &self.desired);
            self.nodes[i].instances.retain(|instance| {
                assigned.iter().any(|a| a.site == instance.site && a.generation == instance.generation)
            });
            for a in assigned {
                let node = &self.nodes[i];
                if node.instances.iter().any(|i| i.site == a.site && i.generation == a.generation) {
                    continue;
                }
                let slow = self.rng.chance(10);
                let delay = if slow { 5_000 + self.rng.below(30_000) } else { self.rng.below(3_000) };
                let will_fail = self.rng.chance(self.fail_percent);
                self.next_port = self.next_port.wrapping_add(1).max(1);
                let addr = SocketAddr::from(([10, 0, i as u8, 1], self.next_port));
                self.nodes[i].instances.push(Instance {
                    site: a.site,
                    generation: a.generation,
                    addr,
                    healthy: false,
                    started: false,
                    ready_at_ms: self.now_ms + delay,
                    will_fail,
                });
            }
        }
        self.check()
    }

    fn carry_out(&mut self, action: Action) -> Result<(), String> {
        match action {
            Action::Publish { site, generation, instances, .. } => {
                self.outcome(&site, generation, "running")?;
                let d = self.spec_mut(&site, generation)?;
                d.state = DeploymentState::Running;
                let nodes = d.nodes.clone();
                self.published.insert(site.clone(), (generation, nodes));
                self.routes.insert(site, instances);
            }
            Action::Route { site, instances } => {
                if !self.routes.contains_key(&site) {
                    return Err(format!("{site} is routed without being published"));
                }
                self.routes.insert(site, instances);
            }
            Action::Fail { site, generation, .. } => {
                self.outcome(&site, generation, "failed")?;
                self.spec_mut(&site, generation)?.state = DeploymentState::Failed;
            }
            Action::Reschedule { site, generation, nodes, .. } => {
                let last = self.generations.entry(site.clone()).or_default();
                *last += 1;
                let next = *last;
                let d = self.spec_mut(&site, generation)?;
                d.generation = next;
                d.nodes = nodes;
                d.state = DeploymentState::Pending;
            }
            Action::Withdraw { site } => {
                if self.desired.iter().any(|d| d.site == site) {
                    return Err(format!("{site} is withdrawn while it is asked for"));
                }
                self.routes.remove(&site);
                self.published.remove(&site);
            }
        }
        Ok(())
    }

    fn outcome(&mut self, site: &str, generation: u64, outcome: &'static str) -> Result<(), String> {
        match self.outcomes.insert((site.to_owned(), generation), outcome) {
            Some(earlier) => Err(format!("{site} generation {generation} was {earlier}, now {outcome}")),
            None => Ok(()),
        }
    }

    fn spec_mut(&mut self, site: &str, generation: u64) -> Result<&mut DeploymentSpec, String> {
        self.desired
            .iter_mut()
            .find(|d| d.site == site && d.generation == generation)
            .ok_or_else(|| format!("an action on {site} generation {generation}, which is not asked for"))
    }

    /// The invariants, after every step.
    fn check(&self) -> Result<(), String> {
        // A site is routed only to instances its node reported healthy, in
        // a report that is still fresh.
        for (site, addrs) in &self.routes {
            for addr in addrs {
                let reported = self.nodes.iter().any(|n| {
                    n.reported.as_ref().is_some_and(|(at, instances)| {
                        self.now_ms - at < NODE_TIMEOUT_MS
                            && instances.iter().any(|i| i.addr == *addr && i.site == *site && i.healthy)
                    })
                });
                if !reported {
                    return Err(format!("{site} is routed to {addr}, which no live node reported healthy"));
                }
            }
        }
        // A published site keeps its instances on every live node of its
        // published generation: no update, failed or not, takes it down.
        for (site, (generation, nodes)) in &self.published {
            for id in nodes {
                let node = self.nodes.iter().find(|n| n.spec.id == *id).expect("a node");
                if node.alive && !node.instances.iter().any(|i| i.site == *site && i.generation == *generation) {
                    return Err(format!("{site} generation {generation} is published but {id} stopped it"));
                }
            }
        }
        // No node is booked beyond its capacity.
        for node in &self.nodes {
            let booked = booked_mb(&node.spec, &self.desired);
            if booked > node.spec.capacity_mb {
                return Err(format!(
                    "{} is booked {booked} MiB of its {} MiB: {:?}",
                    node.spec.id,
                    node.spec.capacity_mb,
                    self.desired.iter().filter(|d| d.nodes.contains(&node.spec.id)).collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }
}
