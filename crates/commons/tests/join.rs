//! Two node agents joined to one control plane, on one machine in separate
//! directories: a site deployed onto one moves to the other when its node
//! disappears.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{commons, http, processes_under, up_with_control};

fn run(data: &Path, args: &[&str]) -> std::process::Output {
    commons().arg("--data").arg(data).args(args).output().unwrap()
}

fn join(dir: &Path, control: std::net::SocketAddr, token: &str) -> Child {
    commons()
        .arg("--data")
        .arg(dir)
        .args(["node", "--join", &format!("http://{control}"), "--token", token])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_site_on_a_node_that_disappears_is_rescheduled_onto_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("control");
    std::fs::create_dir_all(&data).unwrap();
    let mut tokens = Vec::new();
    for (node, provider) in [("pat-far", "pat"), ("pia-far", "pia")] {
        assert!(run(&data, &["node", "add", node, "--provider", provider]).status.success());
        let out = run(&data, &["node", "token", node]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        tokens.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    let bad = run(&data, &["node", "--join", "http://127.0.0.1:1", "--token"]);
    assert_eq!(bad.status.code(), Some(2), "--token needs a value");

    let (mut control_plane, listen, control) = up_with_control(&data);
    let (dir_a, dir_b) = (dir.path().join("machine-a"), dir.path().join("machine-b"));
    let mut agent_a = join(&dir_a, control, &tokens[0]);
    let mut agent_b = join(&dir_b, control, &tokens[1]);
    let forged = commons()
        .arg("--data")
        .arg(dir.path().join("machine-c"))
        .args(["node", "--join", &format!("http://{control}"), "--token", "ocn_forged"])
        .output()
        .unwrap();
    assert_eq!(forged.status.code(), Some(2), "a forged token is refused");
    assert!(String::from_utf8_lossy(&forged.stderr).contains("refused the token"));

    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps/search");
    assert!(run(&data, &["node", "add", "here-1", "--provider", "pat"]).status.success());
    let mixed =
        run(&data, &["deploy", "search", "--operator", "sam", "--node", "here-1", "--node", "pia-far", "--app", app]);
    assert_eq!(mixed.status.code(), Some(2), "this machine and joined ones are not mixed in one site");
    let deployed = run(&data, &["deploy", "search", "--operator", "sam", "--node", "pat-far", "--app", app]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    assert!(String::from_utf8_lossy(&deployed.stdout).contains("running: search 1.0.0 on pat-far"));
    assert_eq!(processes_under(&dir_a).len(), 1, "the instance runs on machine a");
    assert!(processes_under(&dir_b).is_empty());
    let host = format!("search.commons.localhost:{}", listen.port());
    let token = String::from_utf8(run(&data, &["token", "add", "zoe"]).stdout).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let answer = || http(listen, "GET", &host, "/?q=web", &[("Authorization", auth.as_str())], "");
    let deadline = Instant::now() + Duration::from_secs(5);
    while answer().status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answer().status, 200);

    // A node lies about the sites it ran, to be paid for them: pia-far was
    // never given search, so its claim is dropped.
    let forged =
        r#"{"protocol":2,"instances":[],"failures":[],"usage":[{"site":"search","cpu_ms":1000000,"memory_mib_s":0}]}"#;
    let bearer = format!("Bearer {}", tokens[1]);
    let claim = http(control, "POST", "control", "/agent/v2/sync", &[("Authorization", &bearer)], forged);
    assert_eq!(claim.status, 200, "{}", claim.body);
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    let period = commons_core::Period::from_days_since_epoch(days as i64).to_string();
    let usage = String::from_utf8(run(&data, &["usage", "--json", "--period", &period]).stdout).unwrap();
    let usage: serde_json::Value = serde_json::from_str(&usage).unwrap();
    let paid_pia = usage["resources"].as_array().unwrap().iter().any(|r| r["provider"] == "pia");
    assert!(!paid_pia, "a node was paid for a site it never ran: {usage}");

    // Machine a disappears, with its apps.
    agent_a.kill().unwrap();
    agent_a.wait().unwrap();
    for pid in processes_under(&dir_a) {
        // SAFETY: kill(2) on the vanished machine's app.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (processes_under(&dir_b).is_empty() || answer().status != 200) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(processes_under(&dir_b).len(), 1, "rescheduled onto machine b");
    assert_eq!(answer().status, 200, "served again, from machine b");
    let history = String::from_utf8_lossy(&run(&data, &["history"]).stdout).into_owned();
    assert!(history.contains("reschedule search: from pat-far to pia-far: pat-far stopped answering"), "{history}");
    let sites = String::from_utf8_lossy(&run(&data, &["site", "list"]).stdout).into_owned();
    assert!(sites.contains("providers pia:1"), "the provider is now pia: {sites}");

    for child in [&mut agent_b, &mut control_plane] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    for pid in processes_under(dir.path()) {
        // SAFETY: kill(2) on the test's own apps.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
