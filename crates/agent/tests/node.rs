//! A node agent's bookkeeping: what a report takes is put back when it does
//! not reach the control plane, and a failed start is reported once.

use std::collections::BTreeMap;
use std::time::Duration;

use std::path::Path;
use std::sync::Arc;

use agent::{NodeAgent, Reach, Source, Usage};
use control::Assignment;
use runtime::{Confinement, Sandbox};

/// An agent as `commons up` has one: instances confined, reached by the
/// gateway through a directory of their namespaces.
fn agent(dir: &Path) -> Arc<NodeAgent> {
    let sandbox = Sandbox::detect(dir).expect("this machine confines apps");
    let state = dir.join("state");
    NodeAgent::new("n1", dir, &state, Confinement::Confined(Arc::new(sandbox)), Reach::Directory(Arc::default()))
}

#[tokio::test]
async fn a_failure_is_reported_once_unless_its_report_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    // An app with no manifest: its start fails at once.
    let app = dir.path().join("empty-app");
    std::fs::create_dir_all(&app).unwrap();
    let assigned = vec![(Assignment { site: "wiki".into(), generation: 3 }, Source { dir: app, env: vec![] })];
    agent.apply(assigned, &[]).await;
    let mut report = agent.report().await;
    for _ in 0..100 {
        if !report.failures.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        report = agent.report().await;
    }
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!((report.failures[0].site.as_str(), report.failures[0].generation), ("wiki", 3));
    assert!(agent.report().await.failures.is_empty(), "reported once");
    agent.unreport(&report.failures).await;
    assert_eq!(agent.report().await.failures, report.failures, "a lost report is made again");
}

#[tokio::test]
async fn usage_given_back_goes_with_the_next_report() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    agent.give_back(BTreeMap::from([("wiki".to_owned(), Usage { cpu_ms: 7, memory_mib_s: 9 })]));
    agent.give_back(BTreeMap::from([("wiki".to_owned(), Usage { cpu_ms: 1, memory_mib_s: 0 })]));
    let usage = agent.take_usage().await;
    assert_eq!(usage, BTreeMap::from([("wiki".to_owned(), Usage { cpu_ms: 8, memory_mib_s: 9 })]));
    assert!(agent.take_usage().await.is_empty(), "taken once");
}

#[tokio::test]
async fn old_instance_directories_are_removed_but_the_assigned_and_the_newest_stopped_ones() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    let site = dir.path().join("wiki");
    for generation in [1, 2, 3, 4, 5, 6] {
        std::fs::create_dir_all(site.join(format!("1.0.0-rc-{generation}")).join("app")).unwrap();
    }
    std::fs::write(site.join("not-an-instance"), "kept").unwrap();
    // Generation 2 is assigned again and 7 is new; both fail to start (no
    // manifest), and each start's end prunes.
    let app = dir.path().join("empty-app");
    std::fs::create_dir_all(&app).unwrap();
    let assigned = [2, 7]
        .map(|generation| (Assignment { site: "wiki".into(), generation }, Source { dir: app.clone(), env: vec![] }));
    agent.apply(assigned.to_vec(), &[]).await;
    let left = || {
        let mut names: Vec<String> =
            std::fs::read_dir(&site).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    };
    let want = ["1.0.0-rc-2", "1.0.0-rc-4", "1.0.0-rc-5", "1.0.0-rc-6", "not-an-instance"];
    for _ in 0..100 {
        if left() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        left(),
        want,
        "the assigned generation, the {} newest stopped, and what is no instance",
        agent::KEEP_STOPPED
    );
}
