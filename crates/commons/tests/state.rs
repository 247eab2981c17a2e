//! A site's state (`$COMMONS_STATE_DIR`) through a real `commons up`: what
//! an app keeps there outlives an update and a restart of the platform,
//! and a site that keeps state runs on one node.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{commons, http, up};

fn run(data: &Path, args: &[&str]) -> std::process::Output {
    commons().arg("--data").arg(data).args(args).output().unwrap()
}

/// A fresh data directory (in the temporary directory returned with it)
/// with these nodes, `(node, provider)`.
fn platform(nodes: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (node, provider) in nodes {
        assert!(run(&data, &["node", "add", node, "--provider", provider]).status.success());
    }
    (dir, data)
}

/// `commons deploy keeper` of `app` onto `nodes`.
fn deploy(data: &Path, app: &Path, nodes: &[&str]) -> std::process::Output {
    let mut args = vec!["deploy", "keeper", "--operator", "kim", "--anonymous", "--app", app.to_str().unwrap()];
    for node in nodes {
        args.extend(["--node", node]);
    }
    run(data, &args)
}

/// The keeper site's host on the gateway at `listen`.
fn host(listen: SocketAddr) -> String {
    format!("keeper.commons.localhost:{}", listen.port())
}

/// Kills `commons up` and starts it again on `data`, once keeper serves.
fn restart(data: &Path, mut child: Child) -> (Child, SocketAddr) {
    child.kill().unwrap();
    child.wait().unwrap();
    let (child, listen) = up(data);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(listen, "GET", &host(listen), "/healthz", &[], "").status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, listen)
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
    let (dir, data) = platform(&[("pat-1", "pat"), ("pia-1", "pia")]);
    let deploy = |app: &Path, nodes: &[&str]| deploy(&data, app, nodes);
    let (child, listen) = up(&data);
    let host = host(listen);

    let two = deploy(&keeper(dir.path(), "1.0.0"), &["pat-1", "pia-1"]);
    assert_eq!(two.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&two.stderr).contains("keeps state"), "{}", String::from_utf8_lossy(&two.stderr));

    let deployed = deploy(&keeper(dir.path(), "1.0.0"), &["pat-1"]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    assert_eq!(http(listen, "POST", &host, "/", &[], "first").body, "kept");
    // It keeps its own authentication: its clients' Basic credentials
    // reach it, the platform's token never does, and it reads the user's
    // pseudonym, never a name a client wrote, from its header.
    let token = String::from_utf8(run(&data, &["token", "add", "zoe"]).stdout).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let basic = [("Authorization", "Basic em9lOmNhbGRhdg=="), ("X-Remote-User", "admin")];
    assert_eq!(http(listen, "GET", &host, "/auth", &basic, "").body, "Basic em9lOmNhbGRhdg==|");
    let as_zoe = || {
        let headers = [("Authorization", bearer.as_str()), ("X-Remote-User", "admin")];
        http(listen, "GET", &host, "/auth", &headers, "").body
    };
    // The new token reaches the gateway with the registry's next reload.
    let deadline = Instant::now() + Duration::from_secs(10);
    while as_zoe().ends_with('|') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let as_zoe = as_zoe();
    let (authorization, user) = as_zoe.split_once('|').unwrap();
    assert!(authorization.is_empty() && user.len() == 32 && user != "zoe", "{as_zoe}");
    let updated = deploy(&keeper(dir.path(), "1.1.0"), &["pat-1"]);
    assert!(updated.status.success(), "{}", String::from_utf8_lossy(&updated.stderr));
    assert_eq!(http(listen, "GET", &host, "/", &[], "").body, "first\n", "kept across the update");
    assert_eq!(http(listen, "POST", &host, "/", &[], "second").body, "kept");

    let (mut child, listen) = restart(&data, child);
    assert_eq!(http(listen, "GET", &self::host(listen), "/", &[], "").body, "first\nsecond\n", "kept across a restart");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A site's settings: its manifest's `[env]` (a plain default, a secret
/// the platform makes once and keeps, sealed), what its operator sets over
/// them (`commons config`), each change rolled out with no failed request,
/// a secret rotated by unsetting it, all kept across a platform restart.
#[test]
fn a_sites_settings_and_secrets_are_made_once_kept_changed_and_rotated_without_downtime() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let (dir, data) = platform(&[("pat-1", "pat")]);
    let (child, listen) = up(&data);
    let host = host(listen);
    let app = keeper(dir.path(), "1.0.0");
    let deploy = |app: &Path| deploy(&data, app, &["pat-1"]);
    assert!(deploy(&app).status.success());
    let env = |listen: SocketAddr| -> (String, String) {
        let body = http(listen, "GET", &self::host(listen), "/env", &[], "").body;
        let (title, secret) = body.rsplit_once(' ').unwrap_or_else(|| panic!("{body:?}"));
        (title.to_owned(), secret.to_owned())
    };
    let (title, secret) = env(listen);
    assert_eq!(title, "Kept things");
    assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    assert!(deploy(&keeper(dir.path(), "1.1.0")).status.success());
    assert_eq!(env(listen).1, secret, "a secret is made once per site");

    // Changed by its operator, under traffic: rolled, nothing failed.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU32::new(0));
    let traffic = {
        let (stop, failed, host) = (stop.clone(), failed.clone(), host.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if http(listen, "GET", &host, "/env", &[], "").status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let set = run(&data, &["config", "set", "keeper", "TITLE=Our things"]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed while the settings rolled out");
    assert_eq!(env(listen), ("Our things".to_owned(), secret.clone()));
    let listed = String::from_utf8(run(&data, &["config", "list", "keeper"]).stdout).unwrap();
    assert_eq!(listed, "SECRET_KEY=(secret, generated)\nTITLE=Our things\n");
    assert!(!listed.contains(&secret));

    // Rotated: unset, made anew.
    assert!(run(&data, &["config", "unset", "keeper", "SECRET_KEY"]).status.success());
    let rotated = env(listen).1;
    assert!(rotated != secret && rotated.len() == 64, "{rotated}");

    // Refused, changing nothing.
    for args in [
        &["config", "set", "keeper", "PORT=1"][..],
        &["config", "set", "keeper", "TITLE"],
        &["config", "set", "nosuch", "TITLE=x"],
        &["config", "unset", "keeper", "NEVER_SET"],
    ] {
        let refused = run(&data, args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&refused.stderr));
    }

    let (mut child, listen) = restart(&data, child);
    assert_eq!(env(listen), ("Our things".to_owned(), rotated), "kept across a restart");

    // Removed: nothing of it passes to a later site of the same id.
    assert!(run(&data, &["undeploy", "keeper"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let history = || String::from_utf8(run(&data, &["history"]).stdout).unwrap();
    while !history().contains("remove keeper") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let history = history();
    assert!(history.contains("remove keeper: stopped and unpublished; its 2 settings removed; its state set aside in DATA/removed/keeper."), "{history}");
    assert!(!data.join("state/keeper").exists());
    let aside = std::fs::read_dir(data.join("removed")).unwrap().flatten().next().unwrap().path();
    assert!(aside.is_dir() && aside.file_name().unwrap().to_str().unwrap().starts_with("keeper."), "{aside:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A site returns to the version it ran before, as its platform kept it
/// (whatever became of the directory it was deployed from), and forward
/// again; a site with one version has none to return to.
#[test]
fn a_site_rolls_back_to_the_version_it_ran_before_as_it_was_kept() {
    let (dir, data) = platform(&[("pat-1", "pat")]);
    let (mut child, listen) = up(&data);
    let host = host(listen);
    let deploy = |app: &Path| deploy(&data, app, &["pat-1"]);
    let first = keeper(dir.path(), "1.0.0");
    assert!(deploy(&first).status.success());
    let none = run(&data, &["rollback", "keeper"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("none to return to"));
    assert_eq!(http(listen, "POST", &host, "/", &[], "kept").body, "kept");
    assert!(deploy(&keeper(dir.path(), "1.1.0")).status.success());
    // The directory 1.0.0 came from is gone: the platform kept its own copy.
    std::fs::remove_dir_all(&first).unwrap();
    let back = run(&data, &["rollback", "keeper"]);
    let said = String::from_utf8_lossy(&back.stdout).into_owned();
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert!(
        said.contains("rolling site keeper back to keeper 1.0.0") && said.contains("running: keeper 1.0.0"),
        "{said}"
    );
    assert_eq!(http(listen, "GET", &host, "/", &[], "").body, "kept\n", "its state is kept across the rollback");
    let forward = String::from_utf8(run(&data, &["rollback", "keeper"]).stdout).unwrap();
    assert!(forward.contains("running: keeper 1.1.0"), "{forward}");
    let history = String::from_utf8(run(&data, &["history"]).stdout).unwrap();
    assert!(history.contains("rollback keeper: to keeper 1.0.0, asked by its operator"), "{history}");
    child.kill().unwrap();
    child.wait().unwrap();
}
