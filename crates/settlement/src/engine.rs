//! [`settle`]: the four levels, in order, over validated inputs.

use std::collections::BTreeMap;

use commons_core::{Account, Micros, Splitter, cut};

use crate::{Activity, ContractError, Params, PayoutContract, Registry, SubscriberIx};

/// The outcome of settling a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Σ escrow minted: what the allocations add up to.
    pub minted: Micros,
    /// Level 1 results per site (in registry order): what each site earned
    /// from subscribers directly and as a called service.
    pub site_totals: Vec<Micros>,
    /// Level 3 results per project (in registry order): what flowed in, from
    /// sites and from dependents.
    pub project_received: Vec<Micros>,
    /// Level 3 results per project: what the project kept.
    pub project_kept: Vec<Micros>,
    /// Non-zero balances by account.
    pub accounts: BTreeMap<Account, Micros>,
    /// Projects whose contract failed; their kept amount stayed in their
    /// own account.
    pub contract_failures: Vec<ContractFailure>,
}

/// A payout contract that did not pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractFailure {
    pub project: String,
    pub amount: Micros,
    pub error: ContractError,
}

/// Settles one period. A pure function of its inputs.
///
/// # Panics
/// If the allocations do not add up to the escrow minted: that would be a
/// bug in this crate, and no result is better than a wrong one.
pub fn settle(
    params: &Params,
    registry: &Registry,
    activity: &Activity,
    contract: &dyn PayoutContract,
) -> Settlement {
    let mut accounts: BTreeMap<Account, Micros> = BTreeMap::new();
    let mut credit = |account: Account, amount: Micros| {
        if amount > Micros::ZERO {
            *accounts.entry(account).or_default() += amount;
        }
    };

    let (general_fund, site_totals) = allocate_to_sites(params, registry, activity);
    credit(Account::GeneralFund, general_fund);

    // Level 2: per site, on its period total.
    let mut splitter = Splitter::default();
    let mut developer_inflow = vec![Micros::ZERO; registry.projects().len()];
    let mut provider_shares = Vec::new();
    let mut provider_weights = Vec::new();
    for (site, &total) in registry.sites().iter().zip(&site_totals) {
        let (provider_cut, rest) = cut(total, site.provider_share_bps);
        provider_weights.clear();
        provider_weights.extend(site.providers.iter().map(|(_, weight)| *weight));
        provider_shares.clear();
        provider_shares.resize(provider_weights.len(), Micros::ZERO);
        let split = splitter.split(provider_cut, &provider_weights, &mut provider_shares);
        assert!(
            split,
            "registry guarantees a provider with a positive weight"
        );
        for ((provider, _), &share) in site.providers.iter().zip(&provider_shares) {
            credit(Account::Provider(provider.clone()), share);
        }
        let (developer_cut, operator_keeps) = cut(rest, site.developer_share_bps);
        developer_inflow[site.project.index()] += developer_cut;
        credit(Account::Operator(site.operator.clone()), operator_keeps);
    }

    let (project_received, project_kept) = flow_through_dependencies(registry, developer_inflow);

    // Level 4: each project's contract pays what it keeps.
    let mut contract_failures = Vec::new();
    for (project, &kept) in registry.projects().iter().zip(&project_kept) {
        if kept == Micros::ZERO {
            continue;
        }
        let payout = contract.payout(&project.id, kept).and_then(|outputs| {
            let total = outputs
                .iter()
                .try_fold(Micros::ZERO, |sum, (_, amount)| sum.checked_add(*amount));
            if total == Some(kept) {
                Ok(outputs)
            } else {
                let paid =
                    total.map_or_else(|| "more than 2^64 µCC".to_owned(), |t| t.get().to_string());
                Err(ContractError::Failed(format!(
                    "paid {paid} µCC out of {} µCC",
                    kept.get()
                )))
            }
        });
        match payout {
            Ok(outputs) => outputs
                .into_iter()
                .for_each(|(account, amount)| credit(account, amount)),
            Err(error) => {
                credit(Account::Project(project.id.clone()), kept);
                contract_failures.push(ContractFailure {
                    project: project.id.clone(),
                    amount: kept,
                    error,
                });
            }
        }
    }

    let allocated: Micros = accounts.values().copied().sum();
    assert_eq!(
        allocated, activity.minted,
        "settlement must conserve: allocated != minted"
    );
    Settlement {
        minted: activity.minted,
        site_totals,
        project_received,
        project_kept,
        accounts,
        contract_failures,
    }
}

/// Level 1: each subscriber's escrow to the general fund and, by their own
/// usage, to the sites they used and the services those sites called.
/// Returns the general fund's part and each site's period total.
fn allocate_to_sites(
    params: &Params,
    registry: &Registry,
    activity: &Activity,
) -> (Micros, Vec<Micros>) {
    let mut general_fund = Micros::ZERO;
    let mut site_totals = vec![Micros::ZERO; registry.sites().len()];
    let mut splitter = Splitter::default();
    let mut site_shares = Vec::new();
    let mut call_sites = Vec::new();
    let mut call_weights = Vec::new();
    let mut call_shares = Vec::new();
    for u in 0..activity.n_subscribers() {
        let escrow = activity.escrow(SubscriberIx::from_index(u));
        let (fund_cut, rest) = cut(escrow, params.general_fund_bps());
        general_fund += fund_cut;
        let rows = activity.user_start[u] as usize..activity.user_start[u + 1] as usize;
        site_shares.clear();
        site_shares.resize(rows.len(), Micros::ZERO);
        if !splitter.split(
            rest,
            &activity.active_minutes[rows.clone()],
            &mut site_shares,
        ) {
            // No usage at all: the escrow is unused.
            general_fund += rest;
            continue;
        }
        for (r, &share) in rows.zip(&site_shares) {
            let site = activity.site[r];
            let calls = activity.call_start[r] as usize..activity.call_start[r + 1] as usize;
            if share == Micros::ZERO {
                continue;
            }
            if calls.is_empty() {
                site_totals[site.index()] += share;
                continue;
            }
            // The site and the services it called, in site id order.
            call_sites.clear();
            call_weights.clear();
            let mut site_placed = false;
            for c in calls {
                let service = activity.call_service[c];
                if !site_placed && site < service {
                    call_sites.push(site);
                    call_weights.push(activity.service_ms[r]);
                    site_placed = true;
                }
                call_sites.push(service);
                call_weights.push(activity.call_ms[c]);
            }
            if !site_placed {
                call_sites.push(site);
                call_weights.push(activity.service_ms[r]);
            }
            call_shares.clear();
            call_shares.resize(call_weights.len(), Micros::ZERO);
            if splitter.split(share, &call_weights, &mut call_shares) {
                for (callee, &part) in call_sites.iter().zip(&call_shares) {
                    site_totals[callee.index()] += part;
                }
            } else {
                // No service times were measured: the site keeps it.
                site_totals[site.index()] += share;
            }
        }
    }
    (general_fund, site_totals)
}

/// Level 3: developer shares flow along dependencies in rounds. In each
/// round every project with inflow keeps part and passes `pass_bps` of it to
/// its dependencies by weight; the next round's inflow is what was passed.
/// Each hop passes strictly less than it received (pass ≤ 90 %, floored), so
/// the flow ends even on cycles. Returns (received, kept) per project.
fn flow_through_dependencies(
    registry: &Registry,
    inflow: Vec<Micros>,
) -> (Vec<Micros>, Vec<Micros>) {
    let projects = registry.projects();
    let mut received = inflow.clone();
    let mut kept = vec![Micros::ZERO; projects.len()];
    let mut current = inflow;
    let mut next = vec![Micros::ZERO; projects.len()];
    let mut active: Vec<usize> = (0..projects.len())
        .filter(|&p| current[p] > Micros::ZERO)
        .collect();
    let mut next_active = Vec::new();
    let mut splitter = Splitter::default();
    let mut weights = Vec::new();
    let mut shares = Vec::new();
    while !active.is_empty() {
        for &p in &active {
            let amount = std::mem::take(&mut current[p]);
            let project = &projects[p];
            let (pass, keep) = if project.deps.is_empty() {
                (Micros::ZERO, amount)
            } else {
                cut(amount, project.pass_bps)
            };
            kept[p] += keep;
            if pass == Micros::ZERO {
                continue;
            }
            weights.clear();
            weights.extend(project.deps.iter().map(|(_, weight)| *weight));
            shares.clear();
            shares.resize(weights.len(), Micros::ZERO);
            let split = splitter.split(pass, &weights, &mut shares);
            assert!(split, "registry guarantees positive dependency weights");
            for (&(dep, _), &share) in project.deps.iter().zip(&shares) {
                if share == Micros::ZERO {
                    continue;
                }
                if next[dep.index()] == Micros::ZERO {
                    next_active.push(dep.index());
                }
                next[dep.index()] += share;
                received[dep.index()] += share;
            }
        }
        // Project order within a round does not matter (each project's
        // inflow is fixed before the round starts); sorting keeps the walk
        // cache-friendly and the code obviously deterministic.
        next_active.sort_unstable();
        std::mem::swap(&mut current, &mut next);
        std::mem::swap(&mut active, &mut next_active);
        next_active.clear();
    }
    (received, kept)
}
