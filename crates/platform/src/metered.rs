//! A period as the platform recorded it — the sites and projects in the
//! store, the subscriptions sold, the usage the gateway metered — in the
//! same form as a scenario file, so that it settles through the same code.
//!
//! The same conversion checks records when they are written
//! ([`check_registry`]): a site or project that `settlement::Registry::new`
//! would refuse at the end of the month is refused when it is added, by
//! the very same rules.

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
    let params = params(period)?;
    let (projects, mut sites) = registry_specs(store)?;
    // Providers are paid by what their machines gave each site in the
    // period, as the node agents metered it: CPU milliseconds plus MiB-seconds
    // of resident memory (a CPU-second weighs as much as holding 1 GiB for a
    // second). A site with no metered resources keeps its declared weights.
    let mut metered: std::collections::BTreeMap<String, Vec<ProviderSpec>> = Default::default();
    for (site, provider, used) in store.resource_usage(period)? {
        // saturating: a weight, not money.
        let resource_weight = used.cpu_ms.saturating_add(used.memory_mib_s).max(1);
        metered.entry(site).or_default().push(ProviderSpec { provider, resource_weight });
    }
    for site in &mut sites {
        if let Some(providers) = metered.remove(&site.id) {
            site.providers = providers;
        }
    }
    let registry = registry(&params, &projects, &sites)?;
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

/// The platform's settlement parameters for `period` (the defaults of
/// docs/economics.md §2): among them the developer-share floor.
pub fn params(period: Period) -> anyhow::Result<Params> {
    Params::new(period, &ParamsSpec::default()).map_err(|(field, e)| anyhow::anyhow!("the platform's {field}: {e}"))
}

/// The lowest developer share an operator may agree to.
pub fn developer_share_floor_bps() -> u32 {
    let period = Period::from_days_since_epoch(0);
    params(period).map_or(10_000, |p| u32::from(p.developer_share_bps().get()))
}

/// Checks that the registry in `store`, changed by `change`, can be
/// settled: every site's project known, its shares within the rules, every
/// dependency known. Err names the record and the field, as a settlement
/// would at the end of the month; nothing is written either way.
pub fn check_registry(
    store: &mut Store,
    change: impl FnOnce(&mut Vec<ProjectSpec>, &mut Vec<SiteSpec>),
) -> anyhow::Result<()> {
    let params = params(Period::from_days_since_epoch(0))?;
    let (mut projects, mut sites) = registry_specs(store)?;
    change(&mut projects, &mut sites);
    registry(&params, &projects, &sites).map(drop)
}

/// The projects and sites in `store` as settlement specs, sites with their
/// declared provider weights.
pub fn registry_specs(store: &mut Store) -> anyhow::Result<(Vec<ProjectSpec>, Vec<SiteSpec>)> {
    let projects = store.projects()?.into_iter().map(project_spec).collect();
    let sites = store.sites()?.into_iter().map(|s| site_spec(&s)).collect();
    Ok((projects, sites))
}

/// A project record as settlement reads it.
pub fn project_spec(p: store::ProjectRecord) -> ProjectSpec {
    ProjectSpec {
        id: p.id,
        pass_bps: None,
        deps: p.deps.into_iter().map(|(project, weight)| DepSpec { project, weight }).collect(),
    }
}

/// A site record as settlement reads it.
pub fn site_spec(s: &store::SiteRecord) -> SiteSpec {
    SiteSpec {
        id: s.id.clone(),
        operator: s.operator.clone(),
        project: s.project.clone(),
        provider_share_bps: Some(u64::from(s.provider_share_bps)),
        developer_share_bps: Some(u64::from(s.developer_share_bps)),
        providers: s
            .providers
            .iter()
            .map(|(provider, resource_weight)| ProviderSpec {
                provider: provider.clone(),
                resource_weight: *resource_weight,
            })
            .collect(),
    }
}

fn registry(params: &Params, projects: &[ProjectSpec], sites: &[SiteSpec]) -> anyhow::Result<Registry> {
    Registry::new(params, projects, sites).map_err(|e| {
        let entry = match e.entry {
            settlement::Entry::Project(i) | settlement::Entry::Dep { project: i, .. } => {
                format!("project {:?}", projects[i].id)
            }
            settlement::Entry::Site(i) | settlement::Entry::Provider { site: i, .. } => {
                format!("site {:?}", sites[i].id)
            }
        };
        BadInput(format!("the registry cannot be settled: {entry}, {}: {e}", e.field)).into()
    })
}

/// The records that registering `project` writes, given the projects
/// `known`: each dependency not registered yet, with none of its own (its
/// own registration says more), then the project itself.
pub fn registration(known: &[store::ProjectRecord], project: store::ProjectRecord) -> Vec<store::ProjectRecord> {
    let mut records: Vec<store::ProjectRecord> = project
        .deps
        .iter()
        .filter(|(dep, _)| *dep != project.id && !known.iter().any(|p| p.id == *dep))
        .map(|(dep, _)| store::ProjectRecord { id: dep.clone(), deps: vec![], repository: String::new() })
        .collect();
    records.push(project);
    records
}

/// `projects` with `records` written over them, as settlement would read
/// the store after they are.
pub fn write_projects(projects: &mut Vec<ProjectSpec>, records: &[store::ProjectRecord]) {
    for record in records {
        projects.retain(|p| p.id != record.id);
        projects.push(project_spec(record.clone()));
    }
}
