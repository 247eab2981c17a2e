//! `commons up` with accounts and sessions from the store.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{commons, http, up, upstream};

fn ok(command: &mut std::process::Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn add_account(data: &std::path::Path, user: &str, password: &str) -> std::process::Output {
    let mut child = commons()
        .arg("--data")
        .arg(data)
        .args(["account", "add", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_login_on_the_platform_reaches_the_site_and_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let site = upstream();
    ok(commons().arg("--data").arg(data).args(["project", "add", "wiki"]));
    ok(commons().arg("--data").arg(data).args(["site", "add", "wiki", "--upstream", &site.to_string()]).args([
        "--operator",
        "olga",
        "--project",
        "wiki",
        "--provider",
        "pat",
    ]));
    assert!(add_account(data, "alice", "alice-password-1").status.success());
    let short = add_account(data, "bob", "short");
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 characters"));
    let again = add_account(data, "alice", "another-password");
    assert_eq!(again.status.code(), Some(2), "an account is created once");

    let (mut child, listen) = up(data);
    let (site_host, platform) =
        (format!("wiki.commons.localhost:{}", listen.port()), format!("commons.localhost:{}", listen.port()));
    let browser = [("Accept", "text/html")];
    let first = http(listen, "GET", &site_host, "/notes", &browser, "");
    assert_eq!(first.status, 303);
    let login = first.header("location").unwrap();
    assert!(login.starts_with(&format!("http://{platform}/login?next=")), "{login}");

    let form = format!(
        "user=alice&password=alice-password-1&next=http%3A%2F%2Fwiki.commons.localhost%3A{}%2Fnotes",
        listen.port()
    );
    let form_type = [("Content-Type", "application/x-www-form-urlencoded")];
    let logged_in = http(listen, "POST", &platform, "/login", &form_type, &form);
    assert_eq!(logged_in.status, 303, "{}", logged_in.body);
    assert!(logged_in.cookie("commons_session").is_some());
    let handoff = logged_in.header("location").unwrap();
    let path = handoff.strip_prefix(&format!("http://{site_host}")).expect("to the site");
    let handed = http(listen, "GET", &site_host, path, &browser, "");
    assert_eq!((handed.status, handed.header("location")), (303, Some("/notes")));
    let cookie = format!("commons_site={}", handed.cookie("commons_site").unwrap());
    let page = http(listen, "GET", &site_host, "/notes", &[("Cookie", &cookie)], "");
    assert_eq!((page.status, page.body.as_str()), (200, "ok"));

    // Killed and started again, the gateway still knows the session.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, listen) = up(data);
    let site_host = format!("wiki.commons.localhost:{}", listen.port());
    let page = http(listen, "GET", &site_host, "/notes", &[("Cookie", &cookie)], "");
    assert_eq!((page.status, page.body.as_str()), (200, "ok"));
    let forged = http(listen, "GET", &site_host, "/notes", &[("Cookie", "commons_site=0000")], "");
    assert_eq!(forged.status, 401);
    child.kill().unwrap();
    child.wait().unwrap();
}
