//! A period as the platform recorded it — the sites and projects in the
//! store, the subscriptions sold, the usage the gateway metered — in the
//! same form as a scenario file, so that it settles through the same code.

use commons_core::{Cents, Period};
use scenario::Scenario;
use settlement::{
    ActivityBuilder, CallRow, DepSpec, Params, ParamsSpec, ProjectSpec, ProviderSpec, Registry, SiteSpec, UsageRow,
};
use store::Store;

use crate::BadInput;

/// The scenario of `period` from `store`. Usage of users who did not
/// subscribe is metered but pays nobody (their tier is free), so it is
/// left out.
pub fn scenario(store: &mut Store, period: Period) -> anyhow::Result<Scenario> {
    let params = Params::new(period, &ParamsSpec::default())
        .map_err(|(field, e)| BadInput(format!("the platform's {field}: {e}")))?;
    let projects: Vec<ProjectSpec> = store
        .projects()?
        .into_iter()
        .map(|p| ProjectSpec {
            id: p.id,
            pass_bps: None,
            deps: p.deps.into_iter().map(|(project, weight)| DepSpec { project, weight }).collect(),
        })
        .collect();
    // Providers are paid by what their machines gave each site in the
    // period, as the node agents metered it: CPU milliseconds plus MiB-seconds
    // of resident memory (a CPU-second weighs as much as holding 1 GiB for a
    // second). A site with no metered resources keeps its declared weights.
    let mut metered: std::collections::BTreeMap<String, Vec<ProviderSpec>> = Default::default();
    for (site, provider, used) in store.resource_usage(period)? {
        let resource_weight = used.cpu_ms.saturating_add(used.memory_mib_s).max(1);
        metered.entry(site).or_default().push(ProviderSpec { provider, resource_weight });
    }
    let sites: Vec<SiteSpec> = store
        .sites()?
        .into_iter()
        .map(|s| SiteSpec {
            providers: metered.remove(&s.id).unwrap_or_else(|| {
                s.providers
                    .into_iter()
                    .map(|(provider, resource_weight)| ProviderSpec { provider, resource_weight })
                    .collect()
            }),
            id: s.id,
            operator: s.operator,
            project: s.project,
            provider_share_bps: Some(u64::from(s.provider_share_bps)),
            developer_share_bps: Some(u64::from(s.developer_share_bps)),
        })
        .collect();
    let registry = Registry::new(&params, &projects, &sites).map_err(|e| {
        let entry = match e.entry {
            settlement::Entry::Project(i) | settlement::Entry::Dep { project: i, .. } => {
                format!("project {:?}", projects[i].id)
            }
            settlement::Entry::Site(i) | settlement::Entry::Provider { site: i, .. } => {
                format!("site {:?}", sites[i].id)
            }
        };
        BadInput(format!("the registry cannot be settled: {entry}, {}: {e}", e.field))
    })?;

    let subscriptions = store.subscriptions(period)?;
    let usage = store.usage(period)?;
    let mut activity = ActivityBuilder::new(&params, &registry);
    for (tag, (user, paid)) in subscriptions.iter().enumerate() {
        activity
            .add_subscription(user, Cents::new(*paid), tag as u64)
            .map_err(|e| BadInput(format!("subscription of {user}: {e}")))?;
    }
    let site = |id: &str| {
        registry.site_ix(id).ok_or_else(|| {
            BadInput(format!("usage in {period} names site {id:?}, which is not registered: add it back to settle"))
        })
    };
    let mut rows = Vec::new();
    for (tag, (key, direct)) in usage.direct.iter().enumerate() {
        if let Some(user) = activity.subscriber(&key.user) {
            rows.push(UsageRow {
                user,
                site: site(&key.site)?,
                active_minutes: u64::from(direct.minutes.count()),
                service_ms: direct.service_ms,
                tag: tag as u64,
            });
        }
    }
    activity.add_usage(rows);
    let mut calls = Vec::new();
    for (tag, (key, ms)) in usage.calls.iter().enumerate() {
        if let Some(user) = activity.subscriber(&key.user) {
            calls.push(CallRow {
                user,
                site: site(&key.site)?,
                service: site(&key.service)?,
                ms: *ms,
                tag: tag as u64,
            });
        }
    }
    activity.add_calls(calls);
    let activity = activity.finish().map_err(|e| BadInput(format!("usage of {period}: {e}")))?;
    Ok(Scenario { params, registry, activity })
}
