//! [`settle`]: the four levels, in order, over validated inputs.

use std::collections::BTreeMap;

use commons_core::{Account, Micros, Splitter, cut};

use crate::params::PASS_BPS_MAX;
use crate::{Activity, ContractError, Params, PayoutContract, Registry, SiteIx, SubscriberIx};

/// Most rounds the dependency flow of level 3 can take, on any graph.
///
/// What is in flight in round r + 1 is what the projects passed in round
/// r. Each project passes at most `PASS_BPS_MAX` (90 %) of its inflow,
/// floored, so the total in flight shrinks to at most ⌊9a / 10⌋ (a sum of
/// floors is at most the floor of the sum); what the first round carries
/// is a share of what was minted, at most 2^64 − 1 µCC. A round runs only
/// while at least 1 µCC is in flight. Without the floors, 0.9^r · 2^64 < 1
/// once r > 64 · ln 2 / ln(10/9) = 44.36 / 0.1054 = 421.04: at most 422
/// rounds. With them (⌊9a / 10⌋ is a − 1 for every a below 10), iterating
/// a ↦ ⌊9a / 10⌋ from 2^64 − 1 reaches 0 after 405 steps, computed below
/// at compile time; a two-project cycle passing 90 % each way on
/// 2^64 − 1 µCC takes exactly that many rounds (tested).
pub const DEPENDENCY_ROUNDS_MAX: u32 = rounds_to_drain(u64::MAX as u128);

/// How many rounds of "pass at most PASS_BPS_MAX, floored" it takes for
/// `amount` to reach zero.
const fn rounds_to_drain(mut amount: u128) -> u32 {
    let mut rounds = 0;
    while amount > 0 {
        rounds += 1;
        amount = amount * PASS_BPS_MAX as u128 / 10_000;
    }
    rounds
}

// The floored count is within the real-number bound above.
const _: () = assert!(DEPENDENCY_ROUNDS_MAX == 405 && DEPENDENCY_ROUNDS_MAX <= 422);

/// The outcome of settling a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Σ escrow minted: what the allocations add up to.
    pub minted: Micros,
    /// Level 1 results per site (in registry order): what each site earned
    /// from subscribers directly and as a called service.
    pub site_totals: Vec<Micros>,
    /// Level 3 results per project (in registry order): what the project
    /// kept. (What flowed in is not summed: on a cycle the same µCC pass a
    /// project several times, and that sum may exceed what was minted.)
    pub project_kept: Vec<Micros>,
    /// Non-zero balances by account.
    pub accounts: BTreeMap<Account, Micros>,
    /// How many rounds the dependency flow took.
    pub dependency_rounds: u32,
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

/// Where a [`Posting`] moves money from or to: a subscriber's escrow, a
/// site's or a project's pool in the middle of settlement, or an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node<'a> {
    Escrow { user: &'a str },
    SitePool { site: &'a str },
    ProjectPool { project: &'a str },
    Account(&'a Account),
}

/// One movement of a settlement, for recording it (on the ledger) step by
/// step. Replaying every posting leaves escrows and pools empty and the
/// accounts as in [`Settlement::accounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posting<'a> {
    pub from: Node<'a>,
    pub to: Node<'a>,
    pub amount: Micros,
    /// The level (1 to 4) that made it.
    pub level: u8,
    /// The round of dependency flow (level 3), else 0: the same pools may
    /// exchange money in several rounds.
    pub round: u32,
}

/// Settles one period. A pure function of its inputs.
///
/// # Panics
/// If the allocations do not add up to the escrow minted: that would be a
/// bug in this crate, and no result is better than a wrong one.
pub fn settle(params: &Params, registry: &Registry, activity: &Activity, contract: &dyn PayoutContract) -> Settlement {
    settle_journaled(params, registry, activity, contract, None)
}

/// [`settle`], also telling `journal` every movement, in order: level 1
/// subscriber by subscriber (a subscriber's postings are consecutive, one
/// per destination), then levels 2, 3 (round by round) and 4. Zero amounts
/// are not posted.
pub fn settle_journaled(
    params: &Params,
    registry: &Registry,
    activity: &Activity,
    contract: &dyn PayoutContract,
    mut journal: Option<&mut dyn FnMut(Posting<'_>)>,
) -> Settlement {
    let mut accounts: BTreeMap<Account, Micros> = BTreeMap::new();
    let mut credit = |account: Account, amount: Micros| {
        if amount > Micros::ZERO {
            *accounts.entry(account).or_default() += amount;
        }
    };
    let journaling = journal.is_some();
    let mut post = |from: Node<'_>, to: Node<'_>, amount: Micros, level: u8, round: u32| {
        if let Some(journal) = journal.as_mut()
            && amount > Micros::ZERO
        {
            journal(Posting { from, to, amount, level, round });
        }
    };

    let (general_fund, site_totals) = allocate_to_sites(params, registry, activity, journaling, &mut post);
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
        assert!(split, "registry guarantees a provider with a positive weight");
        let pool = Node::SitePool { site: &site.id };
        for ((provider, _), &share) in site.providers.iter().zip(&provider_shares) {
            let account = Account::Provider(provider.clone());
            post(pool, Node::Account(&account), share, 2, 0);
            credit(account, share);
        }
        let (developer_cut, operator_keeps) = cut(rest, site.developer_share_bps);
        developer_inflow[site.project.index()] += developer_cut;
        post(pool, Node::ProjectPool { project: &registry.project(site.project).id }, developer_cut, 2, 0);
        let operator = Account::Operator(site.operator.clone());
        post(pool, Node::Account(&operator), operator_keeps, 2, 0);
        credit(operator, operator_keeps);
    }

    let (project_kept, dependency_rounds) = flow_through_dependencies(registry, developer_inflow, &mut post);

    // Level 4: each project's contract pays what it keeps.
    let mut contract_failures = Vec::new();
    for (project, &kept) in registry.projects().iter().zip(&project_kept) {
        if kept == Micros::ZERO {
            continue;
        }
        let payout = contract.payout(&project.id, kept).and_then(|outputs| merged_payout(outputs, kept));
        let pool = Node::ProjectPool { project: &project.id };
        match payout {
            Ok(outputs) => {
                for (account, amount) in outputs {
                    post(pool, Node::Account(&account), amount, 4, 0);
                    credit(account, amount);
                }
            }
            Err(error) => {
                let account = Account::Project(project.id.clone());
                post(pool, Node::Account(&account), kept, 4, 0);
                credit(account, kept);
                contract_failures.push(ContractFailure { project: project.id.clone(), amount: kept, error });
            }
        }
    }

    let allocated: Micros = accounts.values().copied().sum();
    assert_eq!(allocated, activity.minted, "settlement must conserve: allocated != minted");
    Settlement { minted: activity.minted, site_totals, project_kept, accounts, dependency_rounds, contract_failures }
}

/// A contract's outputs with one entry per account, in account order (an
/// account listed twice is paid the sum: two postings between the same
/// nodes in the same round would be one transfer id twice), if they add up
/// to `kept`.
fn merged_payout(outputs: Vec<(Account, Micros)>, kept: Micros) -> Result<BTreeMap<Account, Micros>, ContractError> {
    let mut merged: BTreeMap<Account, Micros> = BTreeMap::new();
    let mut total = Some(Micros::ZERO);
    for (account, amount) in outputs {
        total = total.and_then(|t| t.checked_add(amount));
        if total.is_some() {
            // Bounded by the total, which fits.
            *merged.entry(account).or_default() += amount;
        }
    }
    if total == Some(kept) {
        return Ok(merged);
    }
    let paid = total.map_or_else(|| "more than 2^64 µCC".to_owned(), |t| t.get().to_string());
    Err(ContractError::Failed(format!("paid {paid} µCC out of {} µCC", kept.get())))
}

/// Level 1 for one subscriber: where their escrow went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriberAllocation {
    /// The general fund cut, plus the whole rest if they used nothing.
    pub general_fund: Micros,
    /// By active minutes: each site they used and its part, in site order.
    pub direct: Vec<(SiteIx, Micros)>,
    /// After each site shared with the services it called: what every
    /// site, used directly or called, received. A site may appear more than
    /// once (used directly and called by another site).
    pub received: Vec<(SiteIx, Micros)>,
}

/// Scratch space for [`allocate_subscriber`], reused across subscribers.
#[derive(Default)]
struct Scratch {
    splitter: Splitter,
    shares: Vec<Micros>,
    parts: Vec<Micros>,
    callees: Vec<SiteIx>,
    weights: Vec<u64>,
}

/// Level 1 for subscriber `u`: the general fund cut, then the rest by their
/// own active minutes among the sites they used, then each site's part
/// between it and the services it called for them, by service time.
pub fn allocate_subscriber(params: &Params, activity: &Activity, u: SubscriberIx) -> SubscriberAllocation {
    let mut allocation = SubscriberAllocation::default();
    allocate_into(params, activity, u, &mut Scratch::default(), &mut allocation);
    allocation
}

fn allocate_into(
    params: &Params,
    activity: &Activity,
    u: SubscriberIx,
    scratch: &mut Scratch,
    out: &mut SubscriberAllocation,
) {
    out.direct.clear();
    out.received.clear();
    let (fund_cut, rest) = cut(activity.escrow(u), params.general_fund_bps());
    out.general_fund = fund_cut;
    let rows = activity.user_start[u.index()] as usize..activity.user_start[u.index() + 1] as usize;
    scratch.shares.clear();
    scratch.shares.resize(rows.len(), Micros::ZERO);
    if !scratch.splitter.split(rest, &activity.active_minutes[rows.clone()], &mut scratch.shares) {
        // No usage at all: the escrow is unused.
        out.general_fund += rest;
        return;
    }
    for (r, &share) in rows.zip(&scratch.shares) {
        let site = activity.site[r];
        out.direct.push((site, share));
        let calls = activity.call_start[r] as usize..activity.call_start[r + 1] as usize;
        if share == Micros::ZERO {
            continue;
        }
        if calls.is_empty() {
            out.received.push((site, share));
            continue;
        }
        // The site and the services it called, in site id order.
        scratch.callees.clear();
        scratch.weights.clear();
        let mut site_placed = false;
        for c in calls {
            let service = activity.call_service[c];
            if !site_placed && site < service {
                scratch.callees.push(site);
                scratch.weights.push(activity.service_ms[r]);
                site_placed = true;
            }
            scratch.callees.push(service);
            scratch.weights.push(activity.call_ms[c]);
        }
        if !site_placed {
            scratch.callees.push(site);
            scratch.weights.push(activity.service_ms[r]);
        }
        scratch.parts.clear();
        scratch.parts.resize(scratch.weights.len(), Micros::ZERO);
        if scratch.splitter.split(share, &scratch.weights, &mut scratch.parts) {
            out.received.extend(scratch.callees.iter().copied().zip(scratch.parts.iter().copied()));
        } else {
            // No service times were measured: the site keeps it.
            out.received.push((site, share));
        }
    }
}

/// Level 1 for every subscriber. Returns the general fund's part and each
/// site's period total.
fn allocate_to_sites(
    params: &Params,
    registry: &Registry,
    activity: &Activity,
    journaling: bool,
    post: &mut impl FnMut(Node<'_>, Node<'_>, Micros, u8, u32),
) -> (Micros, Vec<Micros>) {
    let mut general_fund = Micros::ZERO;
    let mut site_totals = vec![Micros::ZERO; registry.sites().len()];
    let mut scratch = Scratch::default();
    let mut allocation = SubscriberAllocation::default();
    for u in 0..activity.n_subscribers() {
        let u = SubscriberIx::from_index(u);
        allocate_into(params, activity, u, &mut scratch, &mut allocation);
        general_fund += allocation.general_fund;
        for &(site, amount) in &allocation.received {
            site_totals[site.index()] += amount;
        }
        if !journaling {
            continue;
        }
        let escrow = Node::Escrow { user: activity.user(u) };
        post(escrow, Node::Account(&Account::GeneralFund), allocation.general_fund, 1, 0);
        // One posting per site: a site may have been used and also called.
        allocation.received.sort_unstable_by_key(|&(site, _)| site);
        let mut received = allocation.received.iter().peekable();
        while let Some(&(site, mut amount)) = received.next() {
            while let Some(&(_, more)) = received.next_if(|(next, _)| *next == site) {
                amount += more;
            }
            post(escrow, Node::SitePool { site: &registry.site(site).id }, amount, 1, 0);
        }
    }
    (general_fund, site_totals)
}

/// Level 3: developer shares flow along dependencies in rounds. In each
/// round every project with inflow keeps part and passes `pass_bps` of it to
/// its dependencies by weight; the next round's inflow is what was passed.
/// Each hop passes strictly less than it received (pass ≤ 90 %, floored), so
/// the flow ends even on cycles. Returns what each project kept, and
/// the number of rounds.
fn flow_through_dependencies(
    registry: &Registry,
    inflow: Vec<Micros>,
    post: &mut impl FnMut(Node<'_>, Node<'_>, Micros, u8, u32),
) -> (Vec<Micros>, u32) {
    let projects = registry.projects();
    let mut kept = vec![Micros::ZERO; projects.len()];
    let mut current = inflow;
    let mut next = vec![Micros::ZERO; projects.len()];
    let mut active: Vec<usize> = (0..projects.len()).filter(|&p| current[p] > Micros::ZERO).collect();
    let mut next_active = Vec::new();
    let mut splitter = Splitter::default();
    let mut weights = Vec::new();
    let mut shares = Vec::new();
    let mut rounds = 0;
    while !active.is_empty() {
        rounds += 1;
        assert!(rounds <= DEPENDENCY_ROUNDS_MAX, "dependency flow past {DEPENDENCY_ROUNDS_MAX} rounds");
        // What is in flight this round, and what it passes on (u128: one
        // round's inflow is at most what was minted, but say so in types).
        let mut in_flight: u128 = 0;
        let mut passed: u128 = 0;
        for &p in &active {
            let amount = std::mem::take(&mut current[p]);
            in_flight += u128::from(amount.get());
            let project = &projects[p];
            let (pass, keep) =
                if project.deps.is_empty() { (Micros::ZERO, amount) } else { cut(amount, project.pass_bps) };
            kept[p] += keep;
            if pass == Micros::ZERO {
                continue;
            }
            passed += u128::from(pass.get());
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
                let to = Node::ProjectPool { project: &projects[dep.index()].id };
                post(Node::ProjectPool { project: &project.id }, to, share, 3, rounds);
                if next[dep.index()] == Micros::ZERO {
                    next_active.push(dep.index());
                }
                next[dep.index()] += share;
            }
        }
        // The termination argument of DEPENDENCY_ROUNDS_MAX, round by round.
        assert!(passed <= in_flight * u128::from(PASS_BPS_MAX) / 10_000, "a round passed more than 90 % on");
        // Project order within a round does not matter (each project's
        // inflow is fixed before the round starts); sorting keeps the walk
        // cache-friendly and the code obviously deterministic.
        next_active.sort_unstable();
        std::mem::swap(&mut current, &mut next);
        std::mem::swap(&mut active, &mut next_active);
        next_active.clear();
    }
    (kept, rounds)
}
