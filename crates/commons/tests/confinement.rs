//! A hostile app beside a victim, both deployed through a real `commons
//! up`: every escape the hostile app tries (tests/apps/hostile) fails,
//! while the victim and the gateway keep serving; what it burns, even in
//! a child that left its process group, is metered; its fork bomb and its
//! memory stay within its limits, and its OOM kill is in the history and
//! in `commons logs`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{commons, free_port, http, processes_under, up_with};

fn run(data: &Path, args: &[&str]) -> std::process::Output {
    commons().arg("--data").arg(data).args(args).output().unwrap()
}

fn ok(output: std::process::Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This machine's address on its network (not loopback).
fn host_ip() -> String {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("203.0.113.80:80").unwrap();
    probe.local_addr().unwrap().ip().to_string()
}

#[test]
fn a_hostile_app_escapes_nothing_and_its_neighbour_and_the_gateway_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    ok(run(&data, &["node", "add", "pat-1", "--provider", "pat"]));
    let internal = free_port();
    let (mut child, listen, control) = up_with(&data, &internal.to_string(), &[]);
    let apps = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps"));
    let deploy = |site: &str, app: &Path| {
        let app = app.to_str().unwrap();
        ok(run(&data, &["deploy", site, "--operator", "olga", "--anonymous", "--node", "pat-1", "--app", app]))
    };
    deploy("search", &apps.join("search"));
    let victim = processes_under(&data.join("nodes/pat-1/search"));
    assert_eq!(victim.len(), 1, "{victim:?}");
    let site_list = ok(run(&data, &["site", "list"]));
    let victim_port: u16 = site_list
        .lines()
        .find(|l| l.starts_with("search"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "instances").nth(1))
        .and_then(|a| a.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the victim's port in {site_list}"));
    let victim_dir = std::fs::read_dir(data.join("nodes/pat-1/search")).unwrap().next().unwrap().unwrap().path();

    // The victim serves through the gateway throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let victim_host = format!("search.commons.localhost:{}", listen.port());
    let traffic = {
        let (stop, served, failed, host) = (stop.clone(), served.clone(), failed.clone(), victim_host.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = http(listen, "GET", &host, "/?q=commons", &[], "");
                if answer.status == 200 && answer.body.contains("digital commons") { &served } else { &failed }
                    .fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let hostile = dir.path().join("hostile");
    runtime::copy_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/hostile")), &hostile).unwrap();
    let targets = serde_json::json!({
        "data": data.canonicalize().unwrap(),
        "node_dir": data.join("nodes/pat-1").canonicalize().unwrap(),
        "own_site": "hostile",
        "victim_dir": victim_dir,
        "victim_pid": victim[0],
        "victim_port": victim_port,
        "gateway_port": listen.port(),
        "internal_port": internal.port(),
        "control_port": control.port(),
        "host_ip": host_ip(),
    });
    std::fs::write(hostile.join("targets.json"), targets.to_string()).unwrap();
    deploy("hostile", &hostile);
    let hostile_host = format!("hostile.commons.localhost:{}", listen.port());
    let get = |path: &str| http(listen, "GET", &hostile_host, path, &[], "");

    // Every escape, at install and at run time, was stopped.
    let report: serde_json::Value = serde_json::from_str(&get("/report").body).unwrap();
    let mut escaped = Vec::new();
    for stage in ["install", "serve"] {
        let tried = report[stage].as_object().unwrap();
        assert!(tried.len() >= 25, "{stage}: {tried:?}");
        for (attack, outcome) in tried {
            if !outcome.as_str().unwrap().starts_with("stopped: ") {
                escaped.push(format!("{stage}: {attack}: {outcome}"));
            }
        }
    }
    assert!(escaped.is_empty(), "{escaped:#?}");
    // Its `kill -9 -1` at install killed nothing of anyone else's.
    assert_eq!(processes_under(&data.join("nodes/pat-1/search")), victim, "the victim is the same process");

    // It bound the gateway's port in its own namespace: the gateway's
    // connections are still all the gateway's.
    for _ in 0..50 {
        assert_eq!(http(listen, "GET", &victim_host, "/healthz", &[], "").status, 200);
    }
    let stolen: serde_json::Value = serde_json::from_str(&get("/stolen").body).unwrap();
    assert_eq!(stolen["stolen"].as_array().unwrap().len(), 0, "{stolen}");

    // CPU it burns in a child of a session of its own is metered.
    assert_eq!(get("/burn").status, 200);
    let burned = || serde_json::from_str::<serde_json::Value>(&get("/burned").body).ok()?["ms"].as_u64();
    let deadline = Instant::now() + Duration::from_secs(30);
    let burned = loop {
        if let Some(ms) = burned() {
            break ms;
        }
        assert!(Instant::now() < deadline, "the child did not burn its CPU: {:?}", get("/burned").body);
        std::thread::sleep(Duration::from_millis(200));
    };
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    let period = commons_core::Period::from_days_since_epoch(days as i64).to_string();
    let metered = || {
        let usage: serde_json::Value =
            serde_json::from_str(&ok(run(&data, &["usage", "--json", "--period", &period]))).unwrap();
        usage["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["site"] == "hostile")
            .map(|r| r["cpu_ms"].as_u64().unwrap())
            .sum::<u64>()
    };
    wait_until("the burned CPU is metered", Duration::from_secs(30), || metered() >= burned * 97 / 100);
    let metered = metered();
    assert!(metered <= burned + 2_000, "metered {metered} ms for {burned} ms burned (and a start)");

    // A fork bomb stays within its processes limit.
    assert_eq!(get("/forkbomb").status, 200);
    std::thread::sleep(Duration::from_secs(2));
    let bombed = processes_under(&data.join("nodes/pat-1/hostile")).len();
    assert!(bombed <= 64, "{bombed} processes: beyond its limit of 64");
    assert!(std::process::Command::new("true").status().unwrap().success(), "this machine can still start processes");
    assert_eq!(http(listen, "GET", &victim_host, "/healthz", &[], "").status, 200, "the victim serves");

    // Beyond its memory: killed, started again, and said so.
    let _ = get("/hog");
    wait_until("the OOM kill is in the history", Duration::from_secs(30), || {
        ok(run(&data, &["history"])).contains(
            "restart hostile: on pat-1: restarted: the kernel killed it for using more than its memory limit of 96 MiB (out of memory)",
        )
    });
    let logs = ok(run(&data, &["logs", "hostile"]));
    assert!(logs.contains("commons: the instance is started again: the kernel killed it"), "{logs}");
    wait_until("the hostile app is back", Duration::from_secs(30), || get("/healthz").status == 200);

    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(served > 50, "the victim served {served}");
    assert_eq!(failed, 0, "{failed} of the victim's requests failed ({served} served)");
    child.kill().unwrap();
    child.wait().unwrap();
}
