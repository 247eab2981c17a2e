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

/// An upstream answering `ok` and closing, sending each request's
/// `x-commons-user` to the receiver.
fn recording_upstream() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("x-commons-user")
                {
                    let _ = seen.send(value.trim().to_owned());
                }
                line.clear();
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (addr, receiver)
}

#[test]
fn pseudonyms_come_from_a_gateway_key_of_their_own_and_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (site, seen) = recording_upstream();
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
    let token = commons().arg("--data").arg(data).args(["token", "add", "alice"]).output().unwrap();
    let bearer = format!("Bearer {}", String::from_utf8(token.stdout).unwrap().trim());

    let gateway_key = data.join("gateway.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&gateway_key).unwrap().permissions().mode() & 0o777, 0o600);
    let secret: [u8; 32] = hex::decode(std::fs::read_to_string(&gateway_key).unwrap()).unwrap().try_into().unwrap();
    let node = store::load_or_create_key(data).unwrap();
    assert_ne!(secret, node.derive_secret(b"pseudonyms"), "drawn at random, not derived from node.key");

    let mut pseudonyms = Vec::new();
    for _ in 0..2 {
        let (mut child, listen) = up(data);
        let host = format!("wiki.commons.localhost:{}", listen.port());
        let page = http(listen, "GET", &host, "/notes", &[("Authorization", &bearer)], "");
        assert_eq!((page.status, page.body.as_str()), (200, "ok"));
        pseudonyms.push(seen.recv_timeout(std::time::Duration::from_secs(10)).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(pseudonyms[0], gateway::pseudonym(&secret, "alice", "wiki"), "keyed by gateway.key");
    assert_eq!(pseudonyms[1], pseudonyms[0], "the same after a restart");
}
