//! The runtime's records: providers' nodes, the public history of deploys,
//! and the resources each site used on each provider's machines.

use commons_core::Period;

use crate::platform::corrupt;
use crate::sql::Param;
use crate::{Store, StoreError};

/// A machine a cloud provider contributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub provider: String,
    pub location: String,
    pub capacity_mb: u64,
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

/// What a site used on one provider's machines in a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceTotals {
    pub cpu_ms: u64,
    pub memory_mib_s: u64,
}

impl Store {
    /// Registers a node, or changes one.
    pub fn put_node(&mut self, node: &NodeRecord) -> Result<(), StoreError> {
        self.backend.transaction(|tx| {
            tx.execute("DELETE FROM nodes WHERE id = $1", &[Param::Text(&node.id)])?;
            tx.execute(
                "INSERT INTO nodes (id, provider, location, capacity_mb) VALUES ($1, $2, $3, $4)",
                &[
                    Param::Text(&node.id),
                    Param::Text(&node.provider),
                    Param::Text(&node.location),
                    Param::Int(node.capacity_mb.min(i64::MAX as u64) as i64),
                ],
            )?;
            Ok(())
        })
    }

    pub fn nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self
            .backend
            .transaction(|tx| tx.query("SELECT id, provider, location, capacity_mb FROM nodes ORDER BY id", &[]))?;
        Ok(rows
            .iter()
            .map(|r| NodeRecord {
                id: r[0].text(),
                provider: r[1].text(),
                location: r[2].text(),
                capacity_mb: r[3].int() as u64,
            })
            .collect())
    }

    /// Appends to the public history; returns the entry's number.
    pub fn record_history(&mut self, at_ms: u64, action: &str, site: &str, detail: &str) -> Result<u64, StoreError> {
        self.backend.transaction(|tx| {
            let rows = tx.query("SELECT COALESCE(MAX(seq), 0) FROM history", &[])?;
            let seq = rows.first().map_or(0, |r| r[0].int()) + 1;
            tx.execute(
                "INSERT INTO history (seq, at_ms, action, site, detail) VALUES ($1, $2, $3, $4, $5)",
                &[
                    Param::Int(seq),
                    Param::Int(at_ms as i64),
                    Param::Text(action),
                    Param::Text(site),
                    Param::Text(detail),
                ],
            )?;
            Ok(seq as u64)
        })
    }

    pub fn history(&mut self) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = self
            .backend
            .transaction(|tx| tx.query("SELECT seq, at_ms, action, site, detail FROM history ORDER BY seq", &[]))?;
        Ok(rows
            .iter()
            .map(|r| HistoryEntry {
                seq: r[0].int() as u64,
                at_ms: r[1].int() as u64,
                action: r[2].text(),
                site: r[3].text(),
                detail: r[4].text(),
            })
            .collect())
    }

    /// Adds resources a site used on a provider's machines in `period`.
    pub fn add_resource_usage(
        &mut self,
        period: Period,
        site: &str,
        provider: &str,
        used: ResourceTotals,
    ) -> Result<(), StoreError> {
        let label = period.to_string();
        self.backend.transaction(|tx| {
            let params = [Param::Text(&label), Param::Text(site), Param::Text(provider)];
            let rows = tx.query(
                "SELECT cpu_ms, memory_mib_s FROM resource_usage WHERE period = $1 AND site = $2 AND provider = $3",
                &params,
            )?;
            let (cpu, memory) = rows.first().map_or((0, 0), |r| (r[0].int() as u64, r[1].int() as u64));
            tx.execute("DELETE FROM resource_usage WHERE period = $1 AND site = $2 AND provider = $3", &params)?;
            let total = |a: u64, b: u64| Param::Int(a.saturating_add(b).min(i64::MAX as u64) as i64);
            tx.execute(
                "INSERT INTO resource_usage (period, site, provider, cpu_ms, memory_mib_s) VALUES ($1, $2, $3, $4, $5)",
                &[params[0], params[1], params[2], total(cpu, used.cpu_ms), total(memory, used.memory_mib_s)],
            )?;
            Ok(())
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
            .map(|r| {
                let (cpu, memory) = (r[2].int(), r[3].int());
                if cpu < 0 || memory < 0 {
                    return Err(corrupt("resource usage row"));
                }
                Ok((r[0].text(), r[1].text(), ResourceTotals { cpu_ms: cpu as u64, memory_mib_s: memory as u64 }))
            })
            .collect()
    }
}
