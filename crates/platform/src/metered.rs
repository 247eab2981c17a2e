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
    ActivityBuilder, CallRow, DepSpec, Params, ParamsSpec, ProjectSpec, ProviderSpec, Registry, SiteIx, SiteSpec,
    SubscriberIx, UsageRow,
};
use store::Store;

use crate::BadInput;

/// A metered row a settlement could not use, and where its money went
/// instead (docs/economics.md §2.5). Such a row is treated as absent: a
/// subscriber's fee is split over their other usage, or goes to the general
/// fund if none is left; a site keeps the share it would have split with a
/// service it could not be paid for calling.
pub type SetAside = store::SetAsideRecord;

/// The scenario of `period` from `store`, and the rows set aside. Usage of
/// users who did not subscribe is metered but pays nobody (their tier is
/// free), so it is left out. A row that names a site with no record (not
/// even a removed one: a usage, call or resource row), a site calling
/// itself, or a call with no direct use of the calling site is set aside
/// rather than stopping the period.
pub fn scenario(store: &mut Store, period: Period) -> anyhow::Result<(Scenario, Vec<SetAside>)> {
    let params = params(period)?;
    let (projects, mut sites) = registry_specs(store)?;
    // Providers are paid by what their machines gave each site in the
    // period, as the node agents metered it: CPU milliseconds plus MiB-seconds
    // of resident memory (a CPU-second weighs as much as holding 1 GiB for a
    // second). A site with no metered resources keeps its declared weights.
    let resources = store.resource_usage(period)?;
    let mut metered: std::collections::BTreeMap<String, Vec<ProviderSpec>> = Default::default();
    for (site, provider, used) in &resources {
        // saturating: a weight, not money.
        let resource_weight = used.cpu_ms.saturating_add(used.memory_mib_s).max(1);
        metered.entry(site.clone()).or_default().push(ProviderSpec { provider: provider.clone(), resource_weight });
    }
    for site in &mut sites {
        if let Some(providers) = metered.remove(&site.id) {
            site.providers = providers;
        }
    }
    let unknown = |id: &str| format!("site {id:?} has no record, not even as a removed site");
    // What is left names a site with no record: no site to pay its
    // providers from, so it is set aside, reported after the usage rows.
    let resources_set_aside: Vec<SetAside> = resources
        .iter()
        .filter(|(site, _, _)| metered.contains_key(site))
        .map(|(site, provider, used)| SetAside {
            row: format!(
                "resource row ({period}, site {site}, provider {provider}: {} CPU ms, {} MiB·s)",
                used.cpu_ms, used.memory_mib_s
            ),
            reason: unknown(site),
            outcome: format!("not paid: {provider}'s share of a site with no record is not paid; nobody is charged"),
        })
        .collect();
    let registry = registry(&params, &projects, &sites)?;
    let subscriptions = store.subscriptions(period)?;
    let usage = store.usage(period)?;
    let mut activity = ActivityBuilder::new(&params, &registry);
    for (tag, (user, paid)) in subscriptions.iter().enumerate() {
        activity
            .add_subscription(user, Cents::new(*paid), tag as u64)
            .map_err(|e| BadInput(format!("subscription of {user}: {e}")))?;
    }
    let mut set_aside = Vec::new();
    // Direct use: a row naming a site with no record is set aside.
    let mut rows = Vec::new();
    let mut set_aside_users = Vec::new();
    for (tag, (key, direct)) in usage.direct.iter().enumerate() {
        let Some(user) = activity.subscriber(&key.user) else { continue };
        match registry.site_ix(&key.site) {
            Some(site) => rows.push(UsageRow {
                user,
                site,
                active_minutes: u64::from(direct.minutes.count()),
                service_ms: direct.service_ms,
                tag: tag as u64,
            }),
            None => {
                set_aside_users.push((set_aside.len(), key.user.clone()));
                set_aside.push(SetAside {
                    row: format!("usage row ({period}, site {}, user {})", key.site, key.user),
                    reason: unknown(&key.site),
                    outcome: String::new(),
                });
            }
        }
    }
    // A subscriber whose set-aside use was all they had pays the general
    // fund, as one with no usage does; otherwise their other usage shares it.
    for (at, user) in set_aside_users {
        let ix = activity.subscriber(&user).expect("a subscriber");
        let other = rows.iter().any(|r| r.user == ix && r.active_minutes > 0);
        set_aside[at].outcome = if other {
            format!("not charged: {user}'s fee is split over their other usage")
        } else {
            format!("{user}'s fee went to the general fund: no other usage of theirs is valid")
        };
    }
    let used: std::collections::BTreeSet<(SubscriberIx, SiteIx)> = rows.iter().map(|r| (r.user, r.site)).collect();
    let mut calls = Vec::new();
    for (tag, (key, ms)) in usage.calls.iter().enumerate() {
        let Some(user) = activity.subscriber(&key.user) else { continue };
        let row = format!("call row ({period}, site {} calling {}, user {})", key.site, key.service, key.user);
        let (site, service) = (registry.site_ix(&key.site), registry.site_ix(&key.service));
        let problem = match (site, service) {
            (None, _) => Some((unknown(&key.site), "not charged: the calling site is not paid".to_owned())),
            (Some(_), None) => {
                Some((unknown(&key.service), format!("not charged: {} keeps the share it would have split", key.site)))
            }
            (Some(site), Some(service)) if site == service => Some((
                format!("site {:?} called itself", key.site),
                format!("not charged: {} keeps its share", key.site),
            )),
            (Some(site), Some(_)) if !used.contains(&(user, site)) => Some((
                format!("{} has no direct use of {} to split with the service", key.user, key.site),
                "not charged: nothing was split".to_owned(),
            )),
            (Some(_), Some(_)) => None,
        };
        match (problem, site, service) {
            (Some((reason, outcome)), _, _) => set_aside.push(SetAside { row, reason, outcome }),
            (None, Some(site), Some(service)) => calls.push(CallRow { user, site, service, ms: *ms, tag: tag as u64 }),
            (None, _, _) => unreachable!("a call with both sites known has no problem or is kept"),
        }
    }
    set_aside.extend(resources_set_aside);
    activity.add_usage(rows);
    activity.add_calls(calls);
    let activity = activity.finish().map_err(|e| BadInput(format!("usage of {period}: {e}")))?;
    Ok((Scenario { params, registry, activity }, set_aside))
}

/// Deletes the records of removed sites no unsettled period can need: the
/// period each was removed in is settled on the ledger, and so is every
/// period whose usage names it. Returns the sites forgotten.
pub fn forget_settled_removed_sites(store: &mut Store) -> anyhow::Result<Vec<String>> {
    let mut forgotten = Vec::new();
    for (site, removed_ms) in store.removed_sites()? {
        let removed_in = Period::from_days_since_epoch((removed_ms / 86_400_000) as i64);
        let periods = store.periods_naming(&site)?;
        let ledger = store.ledger();
        if ledger.is_settled(removed_in) && periods.iter().all(|p| ledger.is_settled(*p)) {
            store.forget_removed_site(&site)?;
            forgotten.push(site);
        }
    }
    Ok(forgotten)
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
    let sites = store.sites_ever()?.into_iter().map(|s| site_spec(&s)).collect();
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
