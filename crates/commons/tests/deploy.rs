//! Deploying real example apps through `commons deploy` onto the node agent
//! of a running `commons up`: deploy, refuse, update under traffic with no
//! failed request, restart after a crash, remove.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{commons, http, processes_under, up};

fn apps() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps"))
}

fn run(data: &Path, args: &[&str]) -> std::process::Output {
    commons().arg("--data").arg(data).args(args).output().unwrap()
}

fn copy_app(from: &Path, to: &Path, version: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let manifest = std::fs::read_to_string(to.join("commons.toml")).unwrap();
    std::fs::write(
        to.join("commons.toml"),
        manifest.replace("version = \"1.0.0\"", &format!("version = \"{version}\"")),
    )
    .unwrap();
}

#[test]
fn apps_deploy_update_under_traffic_restart_after_a_crash_and_go_away() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (node, provider) in [("pat-1", "pat"), ("pia-1", "pia")] {
        assert!(run(&data, &["node", "add", node, "--provider", provider]).status.success());
    }
    let (mut child, listen) = up(&data);
    let host = format!("search.commons.localhost:{}", listen.port());
    let deploy = |app: &Path, nodes: &[&str]| {
        let mut args = vec!["deploy", "search", "--operator", "sam", "--anonymous", "--host", "search.example.org"];
        args.extend(["--app", app.to_str().unwrap()]);
        for node in nodes {
            args.extend(["--node", node]);
        }
        run(&data, &args)
    };

    // A license that is not open source: refused before anything happens.
    let closed = dir.path().join("closed");
    copy_app(&apps().join("search"), &closed, "1.0.0");
    let manifest = std::fs::read_to_string(closed.join("commons.toml")).unwrap();
    std::fs::write(closed.join("commons.toml"), manifest.replace("\"MIT\"", "\"BUSL-1.1\"")).unwrap();
    let refused = deploy(&closed, &["pat-1"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("license: \"BUSL-1.1\" is refused"));
    let unknown_node = deploy(&apps().join("search"), &["nowhere"]);
    assert_eq!(unknown_node.status.code(), Some(2));
    // Terms a settlement would refuse at the month's end: refused now.
    let search = apps().join("search");
    let below = run(
        &data,
        &["deploy", "search", "--operator", "sam", "--node", "pat-1", "--developer-share-bps", "1500", "--app"]
            .iter()
            .copied()
            .chain([search.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(below.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&below.stderr).contains("developer share 1500 bps is below the floor of 2000 bps"),
        "{}",
        String::from_utf8_lossy(&below.stderr)
    );
    assert!(run(&data, &["node", "add", "tiny-1", "--provider", "pat", "--capacity-mb", "100"]).status.success());
    let too_big = deploy(&apps().join("search"), &["tiny-1"]);
    assert_eq!(too_big.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&too_big.stderr)
            .contains("node tiny-1 has 100 MiB left of its 100 MiB; search asks for 256 MiB"),
        "{}",
        String::from_utf8_lossy(&too_big.stderr)
    );

    // Deployed: it answers through the gateway.
    let deployed = deploy(&apps().join("search"), &["pat-1"]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    assert!(String::from_utf8_lossy(&deployed.stdout).contains("site search is running: search 1.0.0 on pat-1"));
    let answer = http(listen, "GET", &host, "/?q=web", &[], "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("protocol of the web"));
    assert_eq!(http(listen, "GET", "search.example.org", "/healthz", &[], "").status, 200, "by its custom host");

    // An app that never becomes healthy: the deploy fails with its log, and
    // nothing is published.
    let broken = run(
        &data,
        &["deploy", "broken", "--operator", "bo", "--node", "pat-1", "--app"]
            .iter()
            .copied()
            .chain([apps().join("broken").to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(broken.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&broken.stderr).contains("error: cannot open database"));
    let sites = String::from_utf8_lossy(&run(&data, &["site", "list"]).stdout).into_owned();
    assert!(!sites.contains("broken"), "{sites}");

    // Updated to 1.1.0 on two nodes while traffic runs: nothing fails.
    let next = dir.path().join("search-1.1.0");
    copy_app(&apps().join("search"), &next, "1.1.0");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, host) = (stop.clone(), host.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                if http(listen, "GET", &host, "/?q=commons", &[], "").status == 200 { ok += 1 } else { failed += 1 }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let updated = deploy(&next, &["pat-1", "pia-1"]);
    assert!(updated.status.success(), "{}", String::from_utf8_lossy(&updated.stderr));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.join().unwrap();
    assert!(ok > 10, "the traffic ran: {ok}");
    assert_eq!(failed, 0, "{failed} requests failed during the update ({ok} answered)");
    let running = processes_under(&data.join("nodes"));
    assert_eq!(running.len(), 2, "one instance per node, the old one stopped: {running:?}");

    // Killed: the agent starts it again.
    let victim = processes_under(&data.join("nodes/pia-1/search"));
    assert_eq!(victim.len(), 1);
    // SAFETY: kill(2) on the app's process.
    unsafe { libc::kill(victim[0], libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut back = false;
    while Instant::now() < deadline {
        let now = processes_under(&data.join("nodes/pia-1/search"));
        if now.len() == 1 && now[0] != victim[0] {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(back, "the killed instance was not started again");
    // Work for both instances, to meter.
    for _ in 0..200 {
        http(listen, "GET", &host, "/?q=web", &[], "");
    }
    let logs = String::from_utf8_lossy(&run(&data, &["logs", "search"]).stdout).into_owned();
    assert!(logs.contains("== search on pat-1") && logs.contains("== search on pia-1"), "{logs}");

    // Removed: stopped and no longer routed.
    assert!(run(&data, &["undeploy", "search"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !processes_under(&data.join("nodes")).is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(processes_under(&data.join("nodes")).is_empty(), "instances left running");
    assert_eq!(http(listen, "GET", &host, "/", &[], "").status, 404);

    // What the instances used was metered and belongs to each node's
    // provider: search did real work on both.
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    let period = commons_core::Period::from_days_since_epoch(days as i64).to_string();
    let usage = run(&data, &["usage", "--json", "--period", &period]);
    let usage: serde_json::Value = serde_json::from_slice(&usage.stdout).unwrap();
    let cpu = |provider: &str| {
        usage["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["site"] == "search" && r["provider"] == provider)
            .map_or(0, |r| r["cpu_ms"].as_u64().unwrap())
    };
    assert!(cpu("pat") > 0 && cpu("pia") > 0, "CPU metered per provider: {usage}");

    let history = String::from_utf8_lossy(&run(&data, &["history"]).stdout).into_owned();
    let actions: Vec<&str> = history.lines().map(|l| l.split_whitespace().nth(2).unwrap_or("")).collect();
    assert_eq!(actions, ["claim-host", "deploy", "fail", "update", "restart", "remove"], "{history}");
    assert!(history.contains("restart search: on pia-1: restarted: it exited (exit status: 137)"), "{history}");
    child.kill().unwrap();
    child.wait().unwrap();
}
