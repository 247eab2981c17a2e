//! The runtime's records: providers' nodes, deployments (what operators
//! asked for, and the agents' answers; their nodes and hosts are child
//! rows), the public history of deploys, and the resources each site used
//! on each provider's machines.

use commons_core::{DeploymentState, Period};

use crate::lists;
use crate::sql::{Param, Tx, int_param};
use crate::{Store, StoreError};

/// A machine a cloud provider contributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub provider: String,
    pub location: String,
    pub capacity_mb: u64,
    /// Served by an agent on another machine (`commons node --join`), which
    /// holds a join token; else by the agent of `commons up`.
    pub remote: bool,
}

/// What the control plane keeps about a node's reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeReports {
    /// The node's cores: its CPU time is at most cores × wall time.
    pub cores: u64,
    /// Items of its reports refused: claims for what it was not given,
    /// resource use it could not have had.
    pub refused: u64,
    /// Where the window of its next resource report starts (wall clock,
    /// ms; 0: no report accepted yet): the end of the time its last
    /// accepted one was credited for, at most 5 s after it came.
    pub usage_at_ms: u64,
}

/// Cores assumed for a node registered without `--cores`.
pub const NODE_CORES_DEFAULT: u64 = 2;

impl Default for NodeReports {
    fn default() -> NodeReports {
        NodeReports { cores: NODE_CORES_DEFAULT, refused: 0, usage_at_ms: 0 }
    }
}

/// One entry of the public history: who did what to which site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub seq: u64,
    pub at_ms: u64,
    /// `deploy`, `update`, `remove`, `fail`, `reschedule`.
    pub action: String,
    pub site: String,
    /// App, version, node, settings: what it takes to do it again.
    pub detail: String,
}

/// A site as its operator wants it deployed; the node agents make it so
/// and report back in `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub site: String,
    /// The app's directory (holding `commons.toml`) on the agents' machines.
    pub app_dir: String,
    pub nodes: Vec<String>,
    pub operator: String,
    pub provider_share_bps: u32,
    pub developer_share_bps: u32,
    pub anonymous: bool,
    /// Custom host names that also reach the site.
    pub hosts: Vec<String>,
    /// Bumped by every new request, so that agents redo a deploy asked
    /// again (e.g. after the app's files changed) and callers can wait for
    /// their own request's outcome.
    pub generation: u64,
    /// `pending`, `running` or `failed`.
    pub state: DeploymentState,
    /// What the agent said: the version running, or why it failed.
    pub detail: String,
}

/// What a site used on one provider's machines in a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceTotals {
    pub cpu_ms: u64,
    pub memory_mib_s: u64,
}

impl Store {
    /// Asks for a deployment (state `pending`), with its nodes and hosts,
    /// in one transaction; returns its generation.
    pub fn request_deployment(&mut self, d: &DeploymentRecord) -> Result<u64, StoreError> {
        self.backend.transaction(|tx| {
            let rows = tx.query("SELECT last FROM site_generations WHERE site = $1", &[Param::Text(&d.site)])?;
            let generation = match rows.first() {
                None => 1,
                Some(row) => row.u64(0)?.checked_add(1).ok_or_else(|| row.corrupt(0, "the last generation"))?,
            };
            // The app it ran until now is the one a rollback returns to.
            let before = tx.query("SELECT app_dir FROM deployments WHERE site = $1", &[Param::Text(&d.site)])?;
            if let Some(row) = before.first() {
                let previous = row.text(0)?;
                if previous != d.app_dir {
                    tx.execute("DELETE FROM deployment_previous WHERE site = $1", &[Param::Text(&d.site)])?;
                    tx.execute("INSERT INTO deployment_previous (site, app_dir) VALUES ($1, $2)", &[
                        Param::Text(&d.site),
                        Param::Text(&previous),
                    ])?;
                }
            }
            tx.execute("DELETE FROM deployments WHERE site = $1", &[Param::Text(&d.site)])?;
            tx.execute("DELETE FROM site_generations WHERE site = $1", &[Param::Text(&d.site)])?;
            tx.execute(
                "INSERT INTO site_generations (site, last) VALUES ($1, $2)",
                &[Param::Text(&d.site), int_param(generation, "generation")?],
            )?;
            tx.execute(
                "INSERT INTO deployments (site, app_dir, operator, provider_share_bps, developer_share_bps, anonymous, generation, state, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', '')",
                &[
                    Param::Text(&d.site),
                    Param::Text(&d.app_dir),
                    Param::Text(&d.operator),
                    Param::Int(i64::from(d.provider_share_bps)),
                    Param::Int(i64::from(d.developer_share_bps)),
                    Param::Int(i64::from(d.anonymous)),
                    int_param(generation, "generation")?,
                ],
            )?;
            lists::DEPLOYMENT_NODES.put(tx, &d.site, d.nodes.iter().map(String::as_str))?;
            lists::DEPLOYMENT_HOSTS.put(tx, &d.site, d.hosts.iter().map(String::as_str))?;
            crate::platform::bump_registry(tx)?;
            Ok(generation)
        })
    }

    /// Records what an agent made of generation `generation` of a site's
    /// deployment (a report about an older generation is ignored).
    pub fn report_deployment(
        &mut self,
        site: &str,
        generation: u64,
        state: DeploymentState,
        detail: &str,
    ) -> Result<(), StoreError> {
        let generation = int_param(generation, "generation")?;
        self.backend.transaction(|tx| {
            tx.execute(
                "UPDATE deployments SET state = $1, detail = $2 WHERE site = $3 AND generation = $4",
                &[Param::Text(state.as_str()), Param::Text(detail), Param::Text(site), generation],
            )?;
            Ok(())
        })
    }

    /// Withdraws a site's deployment; whether there was one.
    pub fn remove_deployment(&mut self, site: &str) -> Result<bool, StoreError> {
        self.backend.transaction(|tx| {
            let removed = tx.execute("DELETE FROM deployments WHERE site = $1", &[Param::Text(site)])? > 0;
            crate::platform::bump_registry(tx)?;
            Ok(removed)
        })
    }

    /// The app `site` ran before its current deployment's, if it ran another.
    pub fn previous_app_dir(&mut self, site: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .backend
            .read(|tx| tx.query("SELECT app_dir FROM deployment_previous WHERE site = $1", &[Param::Text(site)]))?;
        rows.first().map(|row| row.text(0)).transpose()
    }

    pub fn deployments(&mut self) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.backend.read(|tx| {
            let rows = tx.query(
                "SELECT site, app_dir, operator, provider_share_bps, developer_share_bps, anonymous, generation, state, detail FROM deployments ORDER BY site",
                &[],
            )?;
            let mut nodes = lists::DEPLOYMENT_NODES.read_all(tx)?;
            let mut hosts = lists::DEPLOYMENT_HOSTS.read_all(tx)?;
            rows.iter()
                .map(|r| {
                    let site = r.text(0)?;
                    Ok(DeploymentRecord {
                        app_dir: r.text(1)?,
                        nodes: nodes.take(&site)?,
                        operator: r.text(2)?,
                        provider_share_bps: r.u32(3)?,
                        developer_share_bps: r.u32(4)?,
                        anonymous: r.bool(5)?,
                        hosts: hosts.take(&site)?,
                        generation: r.u64(6)?,
                        state: {
                            let name = r.text(7)?;
                            DeploymentState::parse(&name)
                                .ok_or_else(|| r.corrupt(7, format!("no deployment state {name:?}")))?
                        },
                        detail: r.text(8)?,
                        site,
                    })
                })
                .collect()
        })
    }

    /// Registers a node, or changes one.
    pub fn put_node(&mut self, node: &NodeRecord) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            // A node registered again keeps its join token.
            let token = tx.query("SELECT join_token_hash FROM nodes WHERE id = $1", &[Param::Text(&node.id)])?;
            let token = token.first().map(|r| r.text(0)).transpose()?.unwrap_or_default();
            tx.execute("DELETE FROM nodes WHERE id = $1", &[Param::Text(&node.id)])?;
            tx.execute(
                "INSERT INTO nodes (id, provider, location, capacity_mb, join_token_hash) VALUES ($1, $2, $3, $4, $5)",
                &[
                    Param::Text(&node.id),
                    Param::Text(&node.provider),
                    Param::Text(&node.location),
                    int_param(node.capacity_mb, "capacity in MB")?,
                    Param::Text(&token),
                ],
            )?;
            Ok(())
        })
    }

    pub fn nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self.backend.transaction(|tx| {
            tx.query("SELECT id, provider, location, capacity_mb, join_token_hash FROM nodes ORDER BY id", &[])
        })?;
        rows.iter()
            .map(|r| {
                Ok(NodeRecord {
                    id: r.text(0)?,
                    provider: r.text(1)?,
                    location: r.text(2)?,
                    capacity_mb: r.u64(3)?,
                    remote: !r.text(4)?.is_empty(),
                })
            })
            .collect()
    }

    /// Gives a node a join token (by its SHA-256), making it a node served
    /// by an agent on another machine; false if there is no such node.
    pub fn set_join_token(&mut self, node: &str, token_sha256: &str) -> Result<bool, StoreError> {
        self.backend.transaction(|tx| {
            let changed = tx.execute(
                "UPDATE nodes SET join_token_hash = $1 WHERE id = $2",
                &[Param::Text(token_sha256), Param::Text(node)],
            )? > 0;
            crate::platform::bump_registry(tx)?;
            Ok(changed)
        })
    }

    /// The node a join token (by its SHA-256) is for.
    pub fn node_by_token(&mut self, token_sha256: &str) -> Result<Option<NodeRecord>, StoreError> {
        if token_sha256.is_empty() {
            return Ok(None);
        }
        let rows = self.backend.transaction(|tx| {
            tx.query("SELECT id FROM nodes WHERE join_token_hash = $1", &[Param::Text(token_sha256)])
        })?;
        let Some(id) = rows.first().map(|r| r.text(0)).transpose()? else { return Ok(None) };
        Ok(self.nodes()?.into_iter().find(|n| n.id == id))
    }

    /// What the control plane keeps about `node`'s reports (defaults for a
    /// node never reported about).
    pub fn node_reports(&mut self, node: &str) -> Result<NodeReports, StoreError> {
        self.backend.transaction(|tx| node_reports_in(tx, node))
    }

    /// Sets the cores of `node`, which bound the CPU time it may report.
    pub fn set_node_cores(&mut self, node: &str, cores: u64) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            let mut reports = node_reports_in(tx, node)?;
            reports.cores = cores;
            put_node_reports_in(tx, node, reports)
        })
    }

    /// Counts `refused` more items of `node`'s reports refused, and, when
    /// given, the time its resource report was last accepted.
    pub fn note_reports(&mut self, node: &str, refused: u64, usage_at_ms: Option<u64>) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            let mut reports = node_reports_in(tx, node)?;
            reports.refused = reports.refused.saturating_add(refused);
            if let Some(at) = usage_at_ms {
                reports.usage_at_ms = at;
            }
            put_node_reports_in(tx, node, reports)
        })
    }

    /// Appends to the public history; returns the entry's number.
    pub fn record_history(&mut self, at_ms: u64, action: &str, site: &str, detail: &str) -> Result<u64, StoreError> {
        self.backend.transaction(|tx| {
            let rows = tx.query("SELECT seq FROM history ORDER BY seq DESC LIMIT 1", &[])?;
            let seq = match rows.first() {
                None => 1,
                Some(row) => row.u64(0)?.checked_add(1).ok_or_else(|| row.corrupt(0, "the last entry's number"))?,
            };
            tx.execute(
                "INSERT INTO history (seq, at_ms, action, site, detail) VALUES ($1, $2, $3, $4, $5)",
                &[
                    int_param(seq, "history entry number")?,
                    int_param(at_ms, "time")?,
                    Param::Text(action),
                    Param::Text(site),
                    Param::Text(detail),
                ],
            )?;
            Ok(seq)
        })
    }

    pub fn history(&mut self) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = self
            .backend
            .transaction(|tx| tx.query("SELECT seq, at_ms, action, site, detail FROM history ORDER BY seq", &[]))?;
        rows.iter()
            .map(|r| {
                Ok(HistoryEntry {
                    seq: r.u64(0)?,
                    at_ms: r.u64(1)?,
                    action: r.text(2)?,
                    site: r.text(3)?,
                    detail: r.text(4)?,
                })
            })
            .collect()
    }

    /// Adds resources a site used on a provider's machines in `period`.
    pub fn add_resource_usage(
        &mut self,
        period: Period,
        site: &str,
        provider: &str,
        used: ResourceTotals,
    ) -> Result<(), StoreError> {
        self.backend.transaction(|tx| add_resource_usage_in(tx, period, site, provider, used))
    }

    /// Records a node's accepted resource report, in one transaction, only
    /// if the node's last accepted report is still the one it was checked
    /// against (`usage_at_ms` is `checked_at_ms`): adds what each site used
    /// on `provider`'s machines in `period` and moves `usage_at_ms` to
    /// `until_ms`. False, and nothing written, when another report was
    /// accepted meanwhile: check again against that one.
    pub fn accept_resource_usage(
        &mut self,
        node: &str,
        checked_at_ms: u64,
        until_ms: u64,
        period: Period,
        provider: &str,
        used: &[(String, ResourceTotals)],
    ) -> Result<bool, StoreError> {
        self.backend.transaction(|tx| {
            let mut reports = node_reports_in(tx, node)?;
            if reports.usage_at_ms != checked_at_ms {
                return Ok(false);
            }
            for (site, totals) in used {
                add_resource_usage_in(tx, period, site, provider, *totals)?;
            }
            reports.usage_at_ms = until_ms;
            put_node_reports_in(tx, node, reports)?;
            Ok(true)
        })
    }

    /// What each (site, provider) used in `period`, by site then provider.
    pub fn resource_usage(&mut self, period: Period) -> Result<Vec<(String, String, ResourceTotals)>, StoreError> {
        let label = period.to_string();
        let rows = self.backend.transaction(|tx| {
            tx.query(
                "SELECT site, provider, cpu_ms, memory_mib_s FROM resource_usage WHERE period = $1 ORDER BY site, provider",
                &[Param::Text(&label)],
            )
        })?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?, ResourceTotals { cpu_ms: r.u64(2)?, memory_mib_s: r.u64(3)? })))
            .collect()
    }
}

fn node_reports_in(tx: &mut Tx<'_>, node: &str) -> Result<NodeReports, StoreError> {
    let rows =
        tx.query("SELECT cores, refused, usage_at_ms FROM node_reports WHERE node = $1", &[Param::Text(node)])?;
    match rows.first() {
        None => Ok(NodeReports::default()),
        Some(r) => Ok(NodeReports { cores: r.u64(0)?, refused: r.u64(1)?, usage_at_ms: r.u64(2)? }),
    }
}

fn put_node_reports_in(tx: &mut Tx<'_>, node: &str, r: NodeReports) -> Result<(), StoreError> {
    tx.execute("DELETE FROM node_reports WHERE node = $1", &[Param::Text(node)])?;
    tx.execute(
        "INSERT INTO node_reports (node, cores, refused, usage_at_ms) VALUES ($1, $2, $3, $4)",
        &[
            Param::Text(node),
            int_param(r.cores, "cores")?,
            int_param(r.refused, "refused reports")?,
            int_param(r.usage_at_ms, "time")?,
        ],
    )?;
    Ok(())
}

fn add_resource_usage_in(
    tx: &mut Tx<'_>,
    period: Period,
    site: &str,
    provider: &str,
    used: ResourceTotals,
) -> Result<(), StoreError> {
    let label = period.to_string();
    let params = [Param::Text(&label), Param::Text(site), Param::Text(provider)];
    let rows = tx.query(
        "SELECT cpu_ms, memory_mib_s FROM resource_usage WHERE period = $1 AND site = $2 AND provider = $3",
        &params,
    )?;
    let (cpu, memory) = match rows.first() {
        None => (0, 0),
        Some(row) => (row.u64(0)?, row.u64(1)?),
    };
    tx.execute("DELETE FROM resource_usage WHERE period = $1 AND site = $2 AND provider = $3", &params)?;
    // Saturating: resource use weighs the providers' split, it is not money.
    let total = |a: u64, b: u64| Param::Int(a.saturating_add(b).min(i64::MAX as u64) as i64);
    tx.execute(
        "INSERT INTO resource_usage (period, site, provider, cpu_ms, memory_mib_s) VALUES ($1, $2, $3, $4, $5)",
        &[params[0], params[1], params[2], total(cpu, used.cpu_ms), total(memory, used.memory_mib_s)],
    )?;
    Ok(())
}
