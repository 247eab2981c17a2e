//! A site's state (`$COMMONS_STATE_DIR`) through a real `commons up`: what
//! an app keeps there outlives an update and a restart of the platform,
//! and a site that keeps state runs on one node.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{commons, http, up};

fn run(data: &Path, args: &[&str]) -> std::process::Output {
    commons().arg("--data").arg(data).args(args).output().unwrap()
}

fn keeper(dir: &Path, version: &str) -> PathBuf {
    let app = dir.join(format!("keeper-{version}"));
    runtime::copy_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/keeper")), &app).unwrap();
    let manifest = std::fs::read_to_string(app.join("commons.toml")).unwrap();
    std::fs::write(
        app.join("commons.toml"),
        manifest.replace("version = \"1.0.0\"", &format!("version = \"{version}\"")),
    )
    .unwrap();
    app
}

#[test]
fn what_a_site_keeps_outlives_an_update_and_a_restart_and_it_runs_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (node, provider) in [("pat-1", "pat"), ("pia-1", "pia")] {
        assert!(run(&data, &["node", "add", node, "--provider", provider]).status.success());
    }
    let deploy = |app: &Path, nodes: &[&str]| {
        let mut args = vec!["deploy", "keeper", "--operator", "kim", "--anonymous", "--app", app.to_str().unwrap()];
        for node in nodes {
            args.extend(["--node", node]);
        }
        run(&data, &args)
    };
    let (mut child, listen) = up(&data);
    let host = format!("keeper.commons.localhost:{}", listen.port());

    let two = deploy(&keeper(dir.path(), "1.0.0"), &["pat-1", "pia-1"]);
    assert_eq!(two.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&two.stderr).contains("keeps state"), "{}", String::from_utf8_lossy(&two.stderr));

    let deployed = deploy(&keeper(dir.path(), "1.0.0"), &["pat-1"]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    assert_eq!(http(listen, "POST", &host, "/", &[], "first").body, "kept");
    let updated = deploy(&keeper(dir.path(), "1.1.0"), &["pat-1"]);
    assert!(updated.status.success(), "{}", String::from_utf8_lossy(&updated.stderr));
    assert_eq!(http(listen, "GET", &host, "/", &[], "").body, "first\n", "kept across the update");
    assert_eq!(http(listen, "POST", &host, "/", &[], "second").body, "kept");

    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, listen) = up(&data);
    let host = format!("keeper.commons.localhost:{}", listen.port());
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(listen, "GET", &host, "/healthz", &[], "").status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http(listen, "GET", &host, "/", &[], "").body, "first\nsecond\n", "kept across a restart");
    child.kill().unwrap();
    child.wait().unwrap();
}
