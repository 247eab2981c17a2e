//! The control plane's decisions, one rule per test: a few nodes, a few
//! deployments, reports at given times, and the actions that follow.

use control::{
    Action, Control, DeploymentSpec, DeploymentState, Failure, InstanceReport, NodeSpec, Publication, Report,
};

fn node(id: &str, capacity_mb: u64) -> NodeSpec {
    NodeSpec { id: id.into(), provider: format!("{id}-provider"), capacity_mb, remote: true }
}

fn deployment(site: &str, generation: u64, nodes: &[&str], memory_mb: u64) -> DeploymentSpec {
    DeploymentSpec {
        site: site.into(),
        generation,
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        memory_mb,
        state: DeploymentState::Pending,
    }
}

fn running(site: &str, generation: u64, port: u16, healthy: bool) -> InstanceReport {
    InstanceReport { site: site.into(), generation, addr: ([127, 0, 0, 1], port).into(), healthy }
}

fn report(instances: Vec<InstanceReport>) -> Report {
    Report { instances, failures: vec![] }
}

#[test]
fn a_generation_is_published_once_every_node_runs_it_healthy() {
    let nodes = [node("a", 1024), node("b", 1024)];
    let desired = [deployment("wiki", 1, &["a", "b"], 256)];
    let mut control = Control::new();
    control.observe("a", 0, report(vec![running("wiki", 1, 1, true)]));
    control.observe("b", 0, report(vec![running("wiki", 1, 2, false)]));
    assert_eq!(control.decide(0, &nodes, &desired), vec![]);
    control.observe("b", 500, report(vec![running("wiki", 1, 2, true)]));
    assert_eq!(
        control.decide(500, &nodes, &desired),
        vec![Action::Publish {
            site: "wiki".into(),
            generation: 1,
            instances: vec![([127, 0, 0, 1], 1).into(), ([127, 0, 0, 1], 2).into()],
            publication: Publication::Deploy,
        }]
    );
}

#[test]
fn a_failed_update_keeps_the_published_generation_running() {
    let nodes = [node("a", 1024)];
    let mut control = Control::new();
    control.observe("a", 0, report(vec![running("wiki", 1, 1, true)]));
    assert_eq!(control.decide(0, &nodes, &[deployment("wiki", 1, &["a"], 256)]).len(), 1);
    let update = [deployment("wiki", 2, &["a"], 256)];
    let failure = Failure { site: "wiki".into(), generation: 2, detail: "exit 1".into() };
    control.observe("a", 500, Report { instances: vec![running("wiki", 1, 1, true)], failures: vec![failure] });
    assert_eq!(
        control.decide(500, &nodes, &update),
        vec![Action::Fail { site: "wiki".into(), generation: 2, detail: "on a: exit 1".into() }]
    );
    let assigned: Vec<u64> = control.assignments("a", &update).iter().map(|a| a.generation).collect();
    assert_eq!(assigned, [1], "generation 1 keeps running, generation 2 is not tried again");
}

#[test]
fn a_silent_nodes_site_leaves_the_routes_and_moves_to_the_node_with_most_room() {
    let nodes = [node("a", 1024), node("b", 512), node("c", 2048)];
    let desired = [deployment("wiki", 1, &["a"], 256)];
    let mut control = Control::new();
    for (n, port) in [("a", 1), ("b", 2), ("c", 3)] {
        let instances = if n == "a" { vec![running("wiki", 1, port, true)] } else { vec![] };
        control.observe(n, 0, report(instances));
    }
    assert_eq!(control.decide(0, &nodes, &desired).len(), 1, "published");
    control.observe("b", 4_000, report(vec![]));
    control.observe("c", 4_000, report(vec![]));
    assert_eq!(
        control.decide(4_000, &nodes, &desired),
        vec![
            Action::Reschedule {
                site: "wiki".into(),
                generation: 1,
                from: "a".into(),
                to: "c".into(),
                nodes: vec!["c".into()]
            },
            Action::Route { site: "wiki".into(), instances: vec![] },
        ]
    );
}

#[test]
fn two_sites_leaving_one_node_do_not_both_take_the_last_room_of_another() {
    let nodes = [node("a", 1024), node("b", 512)];
    let desired = [deployment("maps", 1, &["a"], 512), deployment("wiki", 1, &["a"], 512)];
    let mut control = Control::new();
    control.observe("a", 0, report(vec![]));
    control.observe("b", 4_000, report(vec![]));
    let moves: Vec<Action> = control
        .decide(4_000, &nodes, &desired)
        .into_iter()
        .filter(|a| matches!(a, Action::Reschedule { .. }))
        .collect();
    assert_eq!(moves.len(), 1, "b has room for one of them: {moves:?}");
}

#[test]
fn a_site_no_longer_asked_for_is_withdrawn_and_assigned_nowhere() {
    let nodes = [node("a", 1024)];
    let mut control = Control::new();
    control.observe("a", 0, report(vec![running("wiki", 1, 1, true)]));
    assert_eq!(control.decide(0, &nodes, &[deployment("wiki", 1, &["a"], 256)]).len(), 1);
    assert_eq!(control.decide(100, &nodes, &[]), vec![Action::Withdraw { site: "wiki".into() }]);
    assert_eq!(control.assignments("a", &[]), vec![]);
}

#[test]
fn a_site_running_before_a_restart_is_published_as_a_restart() {
    let nodes = [node("a", 1024)];
    let desired = [DeploymentSpec { state: DeploymentState::Running, ..deployment("wiki", 3, &["a"], 256) }];
    let mut control = Control::new();
    control.observe("a", 0, report(vec![running("wiki", 3, 1, true)]));
    let actions = control.decide(0, &nodes, &desired);
    assert!(matches!(&actions[..], [Action::Publish { publication: Publication::Restart, .. }]), "{actions:?}");
}

#[test]
fn a_failed_generation_is_not_moved_off_a_silent_node() {
    let nodes = [node("a", 1024), node("b", 1024)];
    let desired = [DeploymentSpec { state: DeploymentState::Failed, ..deployment("wiki", 2, &["a"], 256) }];
    let mut control = Control::new();
    control.observe("a", 0, report(vec![]));
    control.observe("b", 4_000, report(vec![]));
    assert_eq!(control.decide(4_000, &nodes, &desired), vec![], "not tried again until asked again");
}

#[test]
fn only_a_node_given_a_generation_may_fail_it() {
    let nodes = [node("a", 1024), node("b", 1024)];
    let desired = [deployment("wiki", 1, &["a"], 256)];
    let mut control = Control::new();
    let lie = Failure { site: "wiki".into(), generation: 1, detail: "forged".into() };
    control.observe("b", 0, Report { instances: vec![], failures: vec![lie] });
    control.observe("a", 0, report(vec![]));
    assert_eq!(control.decide(0, &nodes, &desired), vec![], "b runs no wiki: its word changes nothing");
}

#[test]
fn a_node_could_have_used_at_most_its_cores_and_memory_over_the_window_with_slack() {
    use control::capacity::{USAGE_SLACK_MS, usage_bound};
    assert_eq!(usage_bound(4, 2048, 10_000), (4 * (10_000 + USAGE_SLACK_MS), 2048 * (10_000 + USAGE_SLACK_MS) / 1000));
    assert_eq!(usage_bound(2, 1024, u64::MAX), (u64::MAX, u64::MAX / 1000), "saturates, never wraps");
    assert!(usage_bound(64, 1 << 20, 3_600_000).0 < 9_000_000_000_000, "9×10¹² ms is out of any node's reach");
}

mod usage_reports {
    use control::capacity::{NodeBound, SiteClaim, USAGE_SLACK_MS, check_usage};

    const DAY_MS: u64 = 86_400_000;
    /// 2026-12-01T00:00Z.
    const DECEMBER: u64 = 20_788 * DAY_MS;

    fn node(since_ms: u64) -> NodeBound {
        NodeBound { cores: 2, capacity_mb: 4096, since_ms, period_start_ms: DECEMBER }
    }

    fn claim(site: &str, given_since_ms: u64, booked_mb: u64, cpu_ms: u64, memory_mib_s: u64) -> SiteClaim {
        SiteClaim { site: site.into(), given_since_ms, booked_mb, cpu_ms, memory_mib_s }
    }

    #[test]
    fn a_node_silent_all_last_period_reports_nothing_of_it_in_this_one() {
        // Last accepted report on 1 November; the next comes a second into December.
        let (since, wall) = (DECEMBER - 30 * DAY_MS, DECEMBER + 1_000);
        let november = claim("notes", since, 4096, 2 * 30 * DAY_MS, 0);
        assert!(check_usage(&node(since), &[november], wall).is_err(), "30 days × 2 cores recorded in December");
        let memory = claim("notes", since, 4096, 0, 4096 * 30 * 86_400);
        assert!(check_usage(&node(since), &[memory], wall).is_err());
        let december = claim("notes", since, 4096, 2 * (1_000 + USAGE_SLACK_MS), 0);
        assert!(check_usage(&node(since), &[december], wall).is_ok(), "what fits in December is taken");
    }

    #[test]
    fn a_site_holds_at_most_its_booked_memory() {
        let (since, wall) = (DECEMBER + DAY_MS, DECEMBER + DAY_MS + 10_000);
        let window_s = (10_000 + USAGE_SLACK_MS) / 1000;
        let capacity = claim("notes", since, 64, 0, 4096 * window_s);
        assert!(check_usage(&node(since), &[capacity], wall).is_err(), "a 64 MiB booking claimed the node's capacity");
        let booked = claim("notes", since, 64, 0, 64 * window_s);
        assert!(check_usage(&node(since), &[booked], wall).is_ok());
    }

    #[test]
    fn a_site_used_nothing_before_it_was_given_to_the_node() {
        let (since, wall) = (DECEMBER + DAY_MS, DECEMBER + DAY_MS + 3_600_000);
        let given = wall - 1_000;
        let hour = claim("notes", given, 4096, 2 * 3_600_000, 0);
        assert!(check_usage(&node(since), &[hour], wall).is_err(), "an hour of a site given a second ago");
        let second = claim("notes", given, 4096, 2 * (1_000 + USAGE_SLACK_MS), 0);
        assert!(check_usage(&node(since), &[second], wall).is_ok());
    }

    #[test]
    fn the_node_sums_stay_within_its_cores_and_capacity() {
        let (since, wall) = (DECEMBER + DAY_MS, DECEMBER + DAY_MS + 10_000);
        let full = 2 * (10_000 + USAGE_SLACK_MS);
        let each = [claim("notes", since, 4096, full, 0), claim("wiki", since, 4096, full, 0)];
        assert!(check_usage(&node(since), &each[..1], wall).is_ok(), "each alone could be");
        assert!(check_usage(&node(since), &each, wall).is_err(), "both together could not");
        let memory = (10_000 + USAGE_SLACK_MS) / 1000 * 3000;
        let each = [claim("notes", since, 3000, 0, memory), claim("wiki", since, 3000, 0, memory)];
        assert!(check_usage(&node(since), &each, wall).is_err(), "6000 MiB held on a node of 4096");
    }

    #[test]
    fn a_window_and_its_slack_are_credited_once() {
        let (since, wall) = (DECEMBER + DAY_MS, DECEMBER + DAY_MS + 10_000);
        let full = claim("notes", since, 4096, 2 * (10_000 + USAGE_SLACK_MS), 0);
        let until = check_usage(&node(since), std::slice::from_ref(&full), wall).unwrap();
        assert_eq!(until, wall + USAGE_SLACK_MS, "credited to the end of the slack");
        // The same claim again, and even the slack alone, at once: refused.
        assert!(check_usage(&node(until), std::slice::from_ref(&full), wall).is_err());
        let slack = claim("notes", since, 4096, 2 * USAGE_SLACK_MS, 0);
        assert!(check_usage(&node(until), std::slice::from_ref(&slack), wall).is_err(), "the slack is not given again");
        // A light report is credited only for what it accounts for: the
        // next window starts at the wall time, not later.
        let light = claim("notes", since, 4096, 2, 0);
        assert_eq!(check_usage(&node(since), &[light], wall), Ok(wall));
        // Ten seconds on, ten seconds more may be reported.
        assert!(check_usage(&node(until), &[claim("notes", since, 4096, 2 * 10_000, 0)], wall + 10_000).is_ok());
    }
}
