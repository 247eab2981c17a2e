//! [`Control`]: the decisions of the control plane, from what it is told.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::capacity::free_memory_mb;
use crate::model::{Assignment, DeploymentSpec, DeploymentState, Failure, InstanceReport, NodeSpec, Report};

/// How long a node may be silent before its instances leave the routes and
/// its sites move.
pub const NODE_TIMEOUT_MS: u64 = 4_000;
/// How long a generation may wait for an outcome before it fails: a node
/// that never comes back, or an install that never ends, still gets the
/// operator an answer.
pub const PENDING_MAX_MS: u64 = 10 * 60 * 1000;
/// Reports and failures kept per node between decisions: an agent that
/// reports more than this is cut short, never trusted with memory.
const FAILURES_MAX: usize = 1024;

/// What to do; the platform carries these out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Route the site to these instances of `generation`, and record its
    /// outcome as running.
    Publish { site: String, generation: u64, instances: Vec<SocketAddr>, publication: Publication },
    /// Route the published generation to these instances (a node went
    /// silent, an instance turned unhealthy, or either came back).
    Route { site: String, instances: Vec<SocketAddr> },
    /// Record that `generation` failed; it is not tried again.
    Fail { site: String, generation: u64, detail: String },
    /// Ask for the site again on `nodes` (`from` replaced by `to`): a new
    /// generation.
    Reschedule { site: String, generation: u64, from: String, to: String, nodes: Vec<String> },
    /// Stop routing the site: it is no longer asked for.
    Withdraw { site: String },
}

/// What a publication is, for the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publication {
    /// The site's first generation published.
    Deploy,
    /// A newer generation replaces the published one.
    Update,
    /// A site that was running before the control plane restarted.
    Restart,
}

impl Publication {
    /// The history's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Publication::Deploy => "deploy",
            Publication::Update => "update",
            Publication::Restart => "restart",
        }
    }
}

/// A node's last report, and when it came.
#[derive(Debug)]
struct Seen {
    at_ms: u64,
    instances: Vec<InstanceReport>,
}

/// A site's published generation: where it runs and where it is routed.
#[derive(Debug)]
struct Published {
    generation: u64,
    nodes: Vec<String>,
    routed: Vec<SocketAddr>,
}

/// The control plane's memory: what it was told and what it decided.
#[derive(Debug, Default)]
pub struct Control {
    seen: BTreeMap<String, Seen>,
    published: BTreeMap<String, Published>,
    /// Reported by agents, not yet decided on: (node, failure).
    failures: Vec<(String, Failure)>,
    /// Generations that failed, so that no node is assigned them again
    /// before the store says so too.
    failed: BTreeSet<(String, u64)>,
    /// When each pending generation was first seen.
    pending_since: BTreeMap<(String, u64), u64>,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Takes in `node`'s report, made at `now_ms`.
    pub fn observe(&mut self, node: &str, now_ms: u64, report: Report) {
        let room = FAILURES_MAX.saturating_sub(self.failures.len());
        self.failures.extend(report.failures.into_iter().take(room).map(|f| (node.to_owned(), f)));
        self.seen.insert(node.to_owned(), Seen { at_ms: now_ms, instances: report.instances });
    }

    /// Whether `node` reported within [`NODE_TIMEOUT_MS`] of `now_ms`.
    pub fn is_alive(&self, node: &str, now_ms: u64) -> bool {
        self.seen.get(node).is_some_and(|s| now_ms.saturating_sub(s.at_ms) < NODE_TIMEOUT_MS)
    }

    /// Per site, the generation the gateway routes.
    pub fn published(&self) -> BTreeMap<String, u64> {
        self.published.iter().map(|(site, p)| (site.clone(), p.generation)).collect()
    }

    /// The decisions for `now_ms`, given the registered `nodes` and the
    /// `desired` deployments (the latest request of each site). Decisions
    /// taken are remembered: the caller must carry out every action.
    pub fn decide(&mut self, now_ms: u64, nodes: &[NodeSpec], desired: &[DeploymentSpec]) -> Vec<Action> {
        let mut actions = Vec::new();
        // Bookings as they stand after this call's moves: two sites leaving
        // one silent node must not both count on the same free memory.
        let mut booked: Vec<DeploymentSpec> = desired.to_vec();
        self.take_failures(desired, &mut actions);
        for (i, d) in desired.iter().enumerate() {
            let failed = self.has_failed(d);
            let published = self.published.get(&d.site).map(|p| p.generation);
            if !failed && published != Some(d.generation) {
                let since = *self.pending_since.entry((d.site.clone(), d.generation)).or_insert(now_ms);
                if now_ms.saturating_sub(since) >= PENDING_MAX_MS {
                    self.fail(d, format!("no outcome within {} s", PENDING_MAX_MS / 1000), &mut actions);
                    self.keep_routed(now_ms, &d.site, &mut actions);
                    continue;
                }
            }
            // A failed generation is not tried again until asked again, not
            // even elsewhere.
            if let Some(moved) = self.reschedule(now_ms, nodes, &booked, d).filter(|_| !failed) {
                if let Action::Reschedule { nodes, .. } = &moved {
                    booked[i].nodes.clone_from(nodes);
                }
                actions.push(moved);
                // The move takes a while; the silent node's instances leave
                // the routes now.
                self.keep_routed(now_ms, &d.site, &mut actions);
                continue;
            }
            if !failed && published != Some(d.generation) {
                let ready: Vec<SocketAddr> =
                    d.nodes.iter().filter_map(|n| self.healthy(n, &d.site, d.generation, now_ms)).collect();
                if !d.nodes.is_empty() && ready.len() == d.nodes.len() {
                    let publication = match (published, d.state) {
                        (Some(_), _) => Publication::Update,
                        (None, DeploymentState::Running) => Publication::Restart,
                        (None, _) => Publication::Deploy,
                    };
                    self.pending_since.remove(&(d.site.clone(), d.generation));
                    self.published.insert(
                        d.site.clone(),
                        Published { generation: d.generation, nodes: d.nodes.clone(), routed: ready.clone() },
                    );
                    actions.push(Action::Publish {
                        site: d.site.clone(),
                        generation: d.generation,
                        instances: ready,
                        publication,
                    });
                    continue;
                }
            }
            self.keep_routed(now_ms, &d.site, &mut actions);
        }
        let withdrawn: Vec<String> =
            self.published.keys().filter(|site| !desired.iter().any(|d| d.site == **site)).cloned().collect();
        for site in withdrawn {
            self.published.remove(&site);
            actions.push(Action::Withdraw { site });
        }
        let asked =
            |(site, generation): &(String, u64)| desired.iter().any(|d| d.site == *site && d.generation == *generation);
        self.pending_since.retain(|key, _| asked(key));
        self.failed.retain(|key| asked(key));
        actions
    }

    /// What `node` should run: the current generation of each site that
    /// names it (unless failed), and the published one while a newer one is
    /// on its way (or failed).
    pub fn assignments(&self, node: &str, desired: &[DeploymentSpec]) -> Vec<Assignment> {
        let mut assigned = Vec::new();
        for d in desired {
            let failed = self.has_failed(d);
            if !failed && d.nodes.iter().any(|n| n == node) {
                assigned.push(Assignment { site: d.site.clone(), generation: d.generation });
            }
            if let Some(p) = self.published.get(&d.site)
                && p.generation != d.generation
                && p.nodes.iter().any(|n| n == node)
            {
                assigned.push(Assignment { site: d.site.clone(), generation: p.generation });
            }
        }
        assigned.sort();
        assigned
    }

    /// Whether `d`'s generation failed: so the store says, or so this
    /// control plane decided and the store does not say yet.
    fn has_failed(&self, d: &DeploymentSpec) -> bool {
        d.state == DeploymentState::Failed || self.failed.contains(&(d.site.clone(), d.generation))
    }

    fn take_failures(&mut self, desired: &[DeploymentSpec], actions: &mut Vec<Action>) {
        for (node, failure) in std::mem::take(&mut self.failures) {
            let Some(d) = desired.iter().find(|d| d.site == failure.site && d.generation == failure.generation) else {
                continue;
            };
            // Only a node the generation was given may fail it.
            let given = d.nodes.contains(&node);
            let decided = !given
                || self.has_failed(d)
                || self.published.get(&d.site).is_some_and(|p| p.generation == d.generation);
            if !decided {
                self.fail(d, format!("on {node}: {}", failure.detail), actions);
            }
        }
    }

    fn fail(&mut self, d: &DeploymentSpec, detail: String, actions: &mut Vec<Action>) {
        self.failed.insert((d.site.clone(), d.generation));
        self.pending_since.remove(&(d.site.clone(), d.generation));
        actions.push(Action::Fail { site: d.site.clone(), generation: d.generation, detail });
    }

    /// A move of `d` off a node that went silent, onto the live node of the
    /// same kind with the most memory left that fits it and does not run it.
    fn reschedule(
        &self,
        now_ms: u64,
        nodes: &[NodeSpec],
        booked: &[DeploymentSpec],
        d: &DeploymentSpec,
    ) -> Option<Action> {
        let dead = d.nodes.iter().find(|n| self.seen.contains_key(*n) && !self.is_alive(n, now_ms))?;
        let remote = nodes.iter().find(|n| n.id == *dead)?.remote;
        let spare = nodes
            .iter()
            .filter(|n| n.remote == remote && self.is_alive(&n.id, now_ms) && !d.nodes.contains(&n.id))
            .map(|n| (n, free_memory_mb(n, booked, None)))
            .filter(|(_, free)| *free >= d.memory_mb)
            // The most room; among equals the first by id, so the choice is a
            // function of the inputs.
            .max_by(|(a, fa), (b, fb)| fa.cmp(fb).then_with(|| b.id.cmp(&a.id)))
            .map(|(n, _)| n)?;
        let moved = d.nodes.iter().map(|n| if n == dead { spare.id.clone() } else { n.clone() }).collect();
        Some(Action::Reschedule {
            site: d.site.clone(),
            generation: d.generation,
            from: dead.clone(),
            to: spare.id.clone(),
            nodes: moved,
        })
    }

    /// Keeps a published site routed to the live, healthy instances of its
    /// published generation.
    fn keep_routed(&mut self, now_ms: u64, site: &str, actions: &mut Vec<Action>) {
        let Some(p) = self.published.get(site) else { return };
        let live: Vec<SocketAddr> =
            p.nodes.iter().filter_map(|n| self.healthy(n, site, p.generation, now_ms)).collect();
        if live != p.routed {
            actions.push(Action::Route { site: site.to_owned(), instances: live.clone() });
            if let Some(p) = self.published.get_mut(site) {
                p.routed = live;
            }
        }
    }

    /// The address of `node`'s healthy instance of (`site`, `generation`),
    /// if the node is alive and reported one.
    fn healthy(&self, node: &str, site: &str, generation: u64, now_ms: u64) -> Option<SocketAddr> {
        if !self.is_alive(node, now_ms) {
            return None;
        }
        let seen = self.seen.get(node)?;
        seen.instances.iter().find(|i| i.site == site && i.generation == generation && i.healthy).map(|i| i.addr)
    }
}
