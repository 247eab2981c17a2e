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

/// Registers site `wiki` (at `site`) and alice's account, as each test here
/// begins.
fn wiki_with_alice(data: &std::path::Path, site: std::net::SocketAddr) {
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
}

/// Logs alice in through the platform's form as a browser does, and
/// follows the handoff to `next`'s site: its session cookie.
fn log_in(listen: std::net::SocketAddr, password: &str, next: &str) -> String {
    let platform = format!("commons.localhost:{}", listen.port());
    let site_host = next.strip_prefix("http://").unwrap().split('/').next().unwrap();
    // The site's host gives the browser its state first: a handoff code
    // is redeemed only in the browser holding it.
    let path = &next[next.find(site_host).unwrap() + site_host.len()..];
    let start_path =
        format!("/.commons/login?next={}", form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>());
    let start = http(listen, "GET", site_host, &start_path, &[("Accept", "text/html")], "");
    assert_eq!(start.status, 303, "{}", start.body);
    let state_cookie = format!("commons_state={}", start.cookie("commons_state").expect("a state cookie"));
    let to_login = start.header("location").unwrap();
    let state = to_login.split("&state=").nth(1).expect("the state's hash").to_owned();
    let page = http(listen, "GET", &platform, "/login", &[("Accept", "text/html")], "");
    let bound = format!("commons_login={}", page.cookie("commons_login").expect("the form's cookie"));
    let token = page.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("user", "alice"), ("password", password), ("next", next), ("state", &state), ("csrf", &token)])
        .finish();
    let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &bound)];
    let logged_in = http(listen, "POST", &platform, "/login", &headers, &form);
    assert_eq!(logged_in.status, 303, "{}", logged_in.body);
    assert!(logged_in.cookie("commons_session").is_some());
    let handoff = logged_in.header("location").unwrap();
    let path = handoff.strip_prefix(&format!("http://{site_host}")).expect("to the site");
    let handed = http(listen, "GET", site_host, path, &[("Accept", "text/html"), ("Cookie", &state_cookie)], "");
    assert_eq!(handed.status, 303, "{}", handed.body);
    format!("commons_site={}", handed.cookie("commons_site").unwrap())
}

/// Runs `commons` on `data`; its standard output, or its failure.
fn run(data: &std::path::Path, args: &[&str]) -> Result<String, (Option<i32>, String)> {
    let out = commons().arg("--data").arg(data).args(args).output().unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err((out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())),
    }
}

/// Asks until `status` answers `want`: the gateway follows the store
/// within a second or two.
fn eventually(want: u16, mut status: impl FnMut() -> u16) -> u16 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = status();
        if now == want || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn revoked_tokens_and_sessions_stop_working_at_a_running_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let site = upstream();
    wiki_with_alice(data, site);
    let token = run(data, &["token", "add", "alice"]).unwrap().trim().to_owned();
    let other = run(data, &["token", "add", "alice"]).unwrap().trim().to_owned();
    let (mut child, listen) = up(data);
    let host = format!("wiki.commons.localhost:{}", listen.port());
    let bearer =
        |token: &str| http(listen, "GET", &host, "/", &[("Authorization", &format!("Bearer {token}"))], "").status;
    assert_eq!((bearer(&token), bearer(&other)), (200, 200));
    let cookie = log_in(listen, "alice-password-1", &format!("http://{host}/"));
    let by_cookie = || http(listen, "GET", &host, "/", &[("Cookie", &cookie)], "").status;
    assert_eq!(by_cookie(), 200);

    // Tokens are listed by ids that are not the tokens; one is revoked.
    let listed = run(data, &["token", "list", "alice"]).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(!listed.contains(&token[3..15]) && !listed.contains(&other[3..15]), "{listed}");
    let id = commons_core::token_sha256(&token)[..12].to_owned();
    assert!(listed.contains(&id), "{listed}");
    let refused = run(data, &["token", "revoke", "alice", "00000000"]).unwrap_err();
    assert_eq!(refused.0, Some(2), "{}", refused.1);
    assert!(refused.1.contains("alice has no API token with id 00000000"), "{}", refused.1);
    let refused = run(data, &["token", "revoke", "bob", &id]).unwrap_err();
    assert_eq!(refused.0, Some(2), "only one's own: {}", refused.1);
    run(data, &["token", "revoke", "alice", &id]).unwrap();
    assert_eq!(eventually(401, || bearer(&token)), 401, "a revoked token");
    assert_eq!(bearer(&other), 200, "the other token still works");

    // Sessions likewise: the platform's and the site's.
    let listed = run(data, &["session", "list", "alice"]).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("the platform") && listed.contains("wiki"), "{listed}");
    assert!(!listed.contains(cookie.split('=').nth(1).unwrap()), "{listed}");
    let site_session = listed.lines().find(|l| l.contains("  wiki  ")).unwrap().split(' ').next().unwrap().to_owned();
    run(data, &["session", "revoke", "alice", &site_session]).unwrap();
    assert_eq!(eventually(401, by_cookie), 401, "a revoked session");
    let again = log_in(listen, "alice-password-1", &format!("http://{host}/"));
    assert_eq!(http(listen, "GET", &host, "/", &[("Cookie", &again)], "").status, 200);
    run(data, &["session", "revoke", "alice", "--all"]).unwrap();
    assert_eq!(eventually(401, || http(listen, "GET", &host, "/", &[("Cookie", &again)], "").status), 401);
    assert_eq!(run(data, &["session", "list", "alice"]).unwrap(), "");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A user revokes their own token and sessions on the platform's
/// `/sessions` page, in the store the CLI uses.
#[test]
fn users_revoke_their_own_tokens_and_sessions_on_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let site = upstream();
    wiki_with_alice(data, site);
    let token = run(data, &["token", "add", "alice"]).unwrap().trim().to_owned();
    let (mut child, listen) = up(data);
    let host = format!("wiki.commons.localhost:{}", listen.port());
    let platform = format!("commons.localhost:{}", listen.port());
    let bearer =
        |token: &str| http(listen, "GET", &host, "/", &[("Authorization", &format!("Bearer {token}"))], "").status;
    assert_eq!(bearer(&token), 200);
    let site_cookie = log_in(listen, "alice-password-1", &format!("http://{host}/"));

    // Logged in on the platform itself.
    let page = http(listen, "GET", &platform, "/login", &[("Accept", "text/html")], "");
    let bound = format!("commons_login={}", page.cookie("commons_login").unwrap());
    let csrf = page.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let form = format!("user=alice&password=alice-password-1&next=%2F&csrf={csrf}");
    let form_headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &bound)];
    let logged_in = http(listen, "POST", &platform, "/login", &form_headers, &form);
    let session = format!("commons_session={}", logged_in.cookie("commons_session").unwrap());

    let listing = http(listen, "GET", &platform, "/sessions", &[("Cookie", &session)], "");
    assert_eq!(listing.status, 200, "{}", listing.body);
    let id = commons_core::token_sha256(&token);
    assert!(listing.body.contains(&format!("<code>{}</code>", &id[..8])), "{}", listing.body);
    assert!(listing.body.contains("(this one)") && listing.body.contains("</code> wiki"), "{}", listing.body);
    let csrf = listing.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let post = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &session)];
    let revoked = http(listen, "POST", &platform, "/sessions", &post, &format!("revoke=token&id={id}&csrf={csrf}"));
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert_eq!(bearer(&token), 401, "at once");
    assert_eq!(run(data, &["token", "list", "alice"]).unwrap(), "", "and in the store");
    let others = http(listen, "POST", &platform, "/sessions", &post, &format!("revoke=others&id=&csrf={csrf}"));
    assert_eq!(others.status, 303, "{}", others.body);
    assert_eq!(http(listen, "GET", &host, "/", &[("Cookie", &site_cookie)], "").status, 401);
    let listed = run(data, &["session", "list", "alice"]).unwrap();
    assert_eq!(listed.lines().count(), 1, "the platform session alone: {listed}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_login_on_the_platform_reaches_the_site_and_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let site = upstream();
    wiki_with_alice(data, site);
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
    assert!(login.starts_with(&format!("http://{site_host}/.commons/login?next=")), "{login}");
    let start = http(listen, "GET", &site_host, "/.commons/login?next=%2Fnotes", &browser, "");
    let login = start.header("location").unwrap();
    assert!(login.starts_with(&format!("http://{platform}/login?next=")), "{login}");

    let next = format!("http://wiki.commons.localhost:{}/notes", listen.port());
    let cookie = log_in(listen, "alice-password-1", &next);
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
    wiki_with_alice(data, site);
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
