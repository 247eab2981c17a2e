//! Properties of settlement on random periods, each reproducible from the
//! seed proptest prints: conservation, determinism, independence from input
//! order, monotonicity in active minutes, and termination on cyclic
//! dependency graphs, and a journal that replays to the same accounts.

use std::collections::BTreeMap;

use commons_core::{Cents, Micros, Period, SplitMix64};
use proptest::prelude::*;
use settlement::{
    Activity, ActivityBuilder, CallRow, DEPENDENCY_ROUNDS_MAX, DepSpec, Node, Params, ParamsSpec, Posting,
    ProjectAccount, ProjectSpec, ProviderSpec, Registry, Settlement, SiteSpec, UsageRow, allocate_subscriber, settle,
    settle_journaled,
};

#[derive(Clone, Debug)]
struct Usage {
    user: String,
    site: String,
    active_minutes: u64,
    service_ms: u64,
    calls: Vec<(String, u64)>,
}

#[derive(Clone, Debug)]
struct World {
    params: ParamsSpec,
    projects: Vec<ProjectSpec>,
    sites: Vec<SiteSpec>,
    subscriptions: Vec<(String, u64)>,
    usage: Vec<Usage>,
}

fn world(seed: u64) -> World {
    let mut rng = SplitMix64::new(seed);
    let floor = rng.below(5_001);
    let params = ParamsSpec {
        general_fund_bps: Some(rng.below(10_001)),
        provider_share_bps: Some(rng.below(10_001)),
        developer_share_bps: Some(floor),
        pass_bps: Some(rng.below(9_001)),
        cents_per_cc: Some(1 + rng.below(1_000)),
        reserve_contribution_bps: Some(rng.below(10_001)),
    };
    let n_projects = 1 + rng.below(8);
    let projects = (0..n_projects)
        .map(|p| {
            let mut deps = Vec::new();
            for d in 0..n_projects {
                if d != p && rng.chance(30) {
                    deps.push(DepSpec { project: format!("p{d}"), weight: 1 + rng.below(5) });
                }
            }
            let pass_bps = rng.chance(30).then(|| rng.below(9_001));
            ProjectSpec { id: format!("p{p}"), pass_bps, deps }
        })
        .collect();
    let n_sites = 1 + rng.below(6);
    let sites = (0..n_sites)
        .map(|s| {
            let mut providers = Vec::new();
            for v in 0..4 {
                if rng.chance(50) {
                    providers.push(ProviderSpec { provider: format!("v{v}"), resource_weight: 1 + rng.below(10) });
                }
            }
            let providers = if providers.is_empty() {
                vec![ProviderSpec { provider: "v0".into(), resource_weight: 1 }]
            } else {
                providers
            };
            SiteSpec {
                id: format!("s{s}"),
                operator: format!("o{}", rng.below(3)),
                project: format!("p{}", rng.below(n_projects)),
                provider_share_bps: rng.chance(50).then(|| rng.below(10_001)),
                developer_share_bps: rng.chance(50).then(|| floor + rng.below(10_001 - floor)),
                providers,
            }
        })
        .collect();
    let n_users = rng.below(7);
    let mut subscriptions = Vec::new();
    for u in 0..n_users {
        if rng.chance(80) {
            let paid = if rng.chance(10) { rng.next_u64() >> 20 } else { rng.below(100_000) };
            subscriptions.push((format!("u{u}"), paid));
        }
    }
    let mut usage = Vec::new();
    for u in 0..n_users + 1 {
        for s in 0..n_sites {
            if rng.chance(40) {
                let mut calls = Vec::new();
                for c in 0..n_sites {
                    if c != s && rng.chance(25) {
                        calls.push((format!("s{c}"), rng.below(1_000)));
                    }
                }
                usage.push(Usage {
                    user: format!("u{u}"),
                    site: format!("s{s}"),
                    active_minutes: rng.below(120),
                    service_ms: if rng.chance(70) { rng.below(1_000) } else { 0 },
                    calls,
                });
            }
        }
    }
    World { params, projects, sites, subscriptions, usage }
}

/// The same world with every list, at every level, in another order.
fn shuffled(world: &World, seed: u64) -> World {
    let mut rng = SplitMix64::new(seed);
    let mut w = world.clone();
    rng.shuffle(&mut w.projects);
    w.projects.iter_mut().for_each(|p| rng.shuffle(&mut p.deps));
    rng.shuffle(&mut w.sites);
    w.sites.iter_mut().for_each(|s| rng.shuffle(&mut s.providers));
    rng.shuffle(&mut w.subscriptions);
    rng.shuffle(&mut w.usage);
    w.usage.iter_mut().for_each(|u| rng.shuffle(&mut u.calls));
    w
}

fn build(world: &World) -> (Params, Registry, Activity) {
    let params = Params::new(Period::parse("2026-11").unwrap(), &world.params).unwrap();
    let registry = Registry::new(&params, &world.projects, &world.sites).unwrap();
    let activity = activity(&params, &registry, world);
    (params, registry, activity)
}

fn activity(params: &Params, registry: &Registry, world: &World) -> Activity {
    let mut builder = ActivityBuilder::new(params, registry);
    for (tag, (user, paid)) in world.subscriptions.iter().enumerate() {
        builder.add_subscription(user, Cents::new(*paid), tag as u64).unwrap();
    }
    let mut rows = Vec::new();
    let mut calls = Vec::new();
    for (tag, usage) in world.usage.iter().enumerate() {
        let Some(user) = builder.subscriber(&usage.user) else { continue };
        let site = registry.site_ix(&usage.site).unwrap();
        rows.push(UsageRow {
            user,
            site,
            active_minutes: usage.active_minutes,
            service_ms: usage.service_ms,
            tag: tag as u64,
        });
        for (service, ms) in &usage.calls {
            calls.push(CallRow { user, site, service: registry.site_ix(service).unwrap(), ms: *ms, tag: tag as u64 });
        }
    }
    builder.add_usage(rows);
    builder.add_calls(calls);
    builder.finish().unwrap()
}

fn settled(world: &World) -> Settlement {
    let (params, registry, activity) = build(world);
    settle(&params, &registry, &activity, &ProjectAccount)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn allocations_add_up_to_what_was_minted(seed in any::<u64>()) {
        let world = world(seed);
        let (params, _, _) = build(&world);
        let minted: u128 = world.subscriptions.iter().map(|(_, paid)| u128::from(params.escrow_for(Cents::new(*paid)).unwrap().get())).sum();
        let settlement = settled(&world);
        let allocated: u128 = settlement.accounts.values().map(|m| u128::from(m.get())).sum();
        prop_assert_eq!(u128::from(settlement.minted.get()), minted);
        prop_assert_eq!(allocated, minted);
        prop_assert!(settlement.accounts.values().all(|&m| m > Micros::ZERO));
    }

    #[test]
    fn a_subscriber_settled_alone_conserves_their_fee_and_gets_the_same_level_one(seed in any::<u64>()) {
        let world = world(seed);
        let (params, registry, activity) = build(&world);
        let mut alone_total: u128 = 0;
        for u in 0..activity.n_subscribers() {
            let only = activity.only(ix(u));
            prop_assert_eq!(only.n_subscribers(), 1);
            prop_assert_eq!(only.minted(), activity.escrow(ix(u)));
            let settlement = settle(&params, &registry, &only, &ProjectAccount);
            let allocated: u128 = settlement.accounts.values().map(|m| u128::from(m.get())).sum();
            prop_assert_eq!(allocated, u128::from(activity.escrow(ix(u)).get()), "subscriber {}", u);
            prop_assert_eq!(
                allocate_subscriber(&params, &only, ix(0)),
                allocate_subscriber(&params, &activity, ix(u)),
                "level 1 of subscriber {} alone", u
            );
            alone_total += allocated;
        }
        prop_assert_eq!(alone_total, u128::from(activity.minted().get()));
    }

    #[test]
    fn replaying_the_journal_empties_escrows_and_pools_and_gives_the_accounts(seed in any::<u64>()) {
        let world = world(seed);
        let (params, registry, activity) = build(&world);
        let mut balances: BTreeMap<String, i128> = BTreeMap::new();
        for u in 0..activity.n_subscribers() {
            balances.insert(format!("escrow:{}", activity.user(ix(u))), i128::from(activity.escrow(ix(u)).get()));
        }
        let name = |node: Node<'_>| match node {
            Node::Escrow { user } => format!("escrow:{user}"),
            Node::SitePool { site } => format!("site-pool:{site}"),
            Node::ProjectPool { project } => format!("project-pool:{project}"),
            Node::Account(account) => account.to_string(),
        };
        let mut journal = |posting: Posting<'_>| {
            assert!(posting.amount.get() > 0);
            *balances.entry(name(posting.from)).or_default() -= i128::from(posting.amount.get());
            *balances.entry(name(posting.to)).or_default() += i128::from(posting.amount.get());
        };
        let settlement = settle_journaled(&params, &registry, &activity, &ProjectAccount, Some(&mut journal));
        prop_assert!(balances.values().all(|&b| b >= 0), "a balance went negative");
        let left: BTreeMap<String, i128> = balances.into_iter().filter(|(_, b)| *b != 0).collect();
        let expected: BTreeMap<String, i128> = settlement.accounts.iter().map(|(a, m)| (a.to_string(), i128::from(m.get()))).collect();
        prop_assert_eq!(left, expected);
    }

    #[test]
    fn the_same_input_settles_the_same_in_any_order(seed in any::<u64>(), order in any::<u64>()) {
        let world = world(seed);
        let first = settled(&world);
        prop_assert_eq!(&first, &settled(&world));
        prop_assert_eq!(&first, &settled(&shuffled(&world, order)));
    }

    #[test]
    fn more_active_minutes_never_lower_a_sites_part_of_that_subscriber(
        seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
        more in 1u64..500,
    ) {
        let world = world(seed);
        let (params, registry, activity) = build(&world);
        let subscribed: Vec<usize> = (0..world.usage.len())
            .filter(|&i| world.subscriptions.iter().any(|(u, _)| *u == world.usage[i].user))
            .collect();
        prop_assume!(!subscribed.is_empty());
        let i = subscribed[pick.index(subscribed.len())];
        let mut busier = world.clone();
        busier.usage[i].active_minutes += more;
        let busier_activity = self::activity(&params, &registry, &busier);

        let user = &world.usage[i].user;
        let u = (0..activity.n_subscribers()).map(ix).find(|&u| activity.user(u) == user).unwrap();
        let site = registry.site_ix(&world.usage[i].site).unwrap();
        let part = |activity: &Activity| {
            allocate_subscriber(&params, activity, u).direct.iter().filter(|(s, _)| *s == site).map(|(_, m)| m.get()).sum::<u64>()
        };
        let (before, after) = (part(&activity), part(&busier_activity));
        prop_assert!(after >= before, "site {} from {user}: {before} -> {after}", world.usage[i].site);
    }

    #[test]
    fn dependency_flow_terminates_on_dense_cycles(seed in any::<u64>(), n_projects in 2u64..12, pass_bps in 1u64..=9_000) {
        // Every project depends on every other, passing up to 90 %, on the
        // largest amounts that can be minted.
        let mut rng = SplitMix64::new(seed);
        let projects = (0..n_projects)
            .map(|p| ProjectSpec {
                id: format!("p{p}"),
                pass_bps: Some(pass_bps),
                deps: (0..n_projects).filter(|&d| d != p).map(|d| DepSpec { project: format!("p{d}"), weight: 1 + rng.below(3) }).collect(),
            })
            .collect();
        let site = SiteSpec {
            id: "s".into(),
            operator: "o".into(),
            project: "p0".into(),
            provider_share_bps: Some(0),
            developer_share_bps: Some(10_000),
            providers: vec![ProviderSpec { provider: "v".into(), resource_weight: 1 }],
        };
        let world = World {
            params: ParamsSpec { cents_per_cc: Some(1_000_000), reserve_contribution_bps: Some(0), general_fund_bps: Some(0), ..ParamsSpec::default() },
            projects,
            sites: vec![site],
            subscriptions: vec![("u".into(), u64::MAX - rng.below(1_000))],
            usage: vec![Usage { user: "u".into(), site: "s".into(), active_minutes: 1, service_ms: 0, calls: vec![] }],
        };
        let settlement = settled(&world);
        // Each round leaves at most 90 % of the amount in flight, floored
        // (the derivation is at DEPENDENCY_ROUNDS_MAX). The engine asserts
        // the bound inside its loop, so a regression fails, never hangs.
        prop_assert!(settlement.dependency_rounds <= DEPENDENCY_ROUNDS_MAX, "{} rounds", settlement.dependency_rounds);
        let kept: u128 = settlement.project_kept.iter().map(|m| u128::from(m.get())).sum();
        prop_assert_eq!(kept, u128::from(settlement.minted.get()));
    }
}

#[test]
fn a_cycle_passing_90_percent_each_way_on_the_largest_amount_takes_the_most_rounds() {
    // p0 and p1 pass 90 % to each other: u64::MAX µCC shrink by exactly
    // ⌊9a / 10⌋ per round, the slowest any graph can drain.
    let projects = (0..2)
        .map(|p| ProjectSpec {
            id: format!("p{p}"),
            pass_bps: Some(9_000),
            deps: vec![DepSpec { project: format!("p{}", 1 - p), weight: 1 }],
        })
        .collect();
    let site = SiteSpec {
        id: "s".into(),
        operator: "o".into(),
        project: "p0".into(),
        provider_share_bps: Some(0),
        developer_share_bps: Some(10_000),
        providers: vec![ProviderSpec { provider: "v".into(), resource_weight: 1 }],
    };
    let world = World {
        params: ParamsSpec {
            cents_per_cc: Some(1_000_000),
            reserve_contribution_bps: Some(0),
            general_fund_bps: Some(0),
            ..ParamsSpec::default()
        },
        projects,
        sites: vec![site],
        subscriptions: vec![("u".into(), u64::MAX)],
        usage: vec![Usage { user: "u".into(), site: "s".into(), active_minutes: 1, service_ms: 0, calls: vec![] }],
    };
    let settlement = settled(&world);
    assert_eq!(settlement.minted.get(), u64::MAX);
    assert_eq!(settlement.dependency_rounds, DEPENDENCY_ROUNDS_MAX);
}

fn ix(u: usize) -> settlement::SubscriberIx {
    settlement::SubscriberIx::from_index(u)
}
