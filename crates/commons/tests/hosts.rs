//! Host names: a host answers for one site, in any spelling; the names
//! under the platform domain are the platform's and its sites'; every
//! claim is in the public history.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;

fn run(data: &Path, args: &[&str]) -> Output {
    common::commons().arg("--data").arg(data).args(args).output().unwrap()
}

fn ok(data: &Path, args: &[&str]) -> String {
    let output = run(data, args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Exit code 2 and an error saying `says`; nothing written.
fn refused(data: &Path, args: &[&str], says: &str) {
    let before = ok(data, &["history"]);
    let output = run(data, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert_eq!(ok(data, &["history"]), before, "{args:?} changed the history");
}

fn add_site(data: &Path, id: &str, hosts: &[&str]) -> Output {
    let mut args = vec!["site", "add", id, "--upstream", "127.0.0.1:9", "--operator", "o", "--project", "app"];
    args.extend(["--provider", "pat"]);
    for host in hosts {
        args.extend(["--host", host]);
    }
    run(data, &args)
}

fn claims(data: &Path) -> Vec<String> {
    ok(data, &["history"])
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("claim-host"))
        .map(|l| l.split_once("claim-host ").unwrap().1.to_owned())
        .collect()
}

#[test]
fn a_host_belongs_to_one_site_in_any_spelling_and_each_claim_is_in_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(data, &["project", "add", "app"]);
    assert!(add_site(data, "notes", &["Notes.Example.org."]).status.success());
    assert_eq!(claims(data), ["notes: host notes.example.org"]);
    assert!(ok(data, &["site", "list"]).contains("hosts notes.example.org "), "stored in its one spelling");

    for spelling in ["notes.example.org", "NOTES.EXAMPLE.ORG", "notes.example.org."] {
        let args = ["site", "add", "evil", "--upstream", "127.0.0.1:9", "--operator", "o", "--project", "app"];
        refused(
            data,
            &[&args[..], &["--provider", "pat", "--host", spelling]].concat(),
            "host notes.example.org belongs to site \"notes\"",
        );
    }
    // The platform's own names: its domain, its sites', its reserved labels.
    for host in [
        "notes.commons.localhost",
        "commons.localhost",
        "Commons.Localhost.",
        "www.commons.localhost",
        "a.b.commons.localhost",
    ] {
        let args = ["site", "add", "evil", "--upstream", "127.0.0.1:9", "--operator", "o", "--project", "app"];
        refused(
            data,
            &[&args[..], &["--provider", "pat", "--host", host]].concat(),
            "is under the platform domain commons.localhost",
        );
    }
    let args =
        ["site", "add", "www", "--upstream", "127.0.0.1:9", "--operator", "o", "--project", "app", "--provider", "pat"];
    refused(data, &args, "site id \"www\" is reserved for the platform");
    let args = ["site", "add", "evil", "--upstream", "127.0.0.1:9", "--operator", "o", "--project", "app"];
    refused(data, &[&args[..], &["--provider", "pat", "--host", "bad..name"]].concat(), "is not a host name");
    assert!(!ok(data, &["site", "list"]).contains("evil"));

    // A site keeps its own host without claiming it again.
    assert!(add_site(data, "notes", &["notes.example.org"]).status.success());
    assert_eq!(claims(data).len(), 1);

    // A deployment asks for hosts the same way, before anything else.
    ok(data, &["node", "add", "pat-1", "--provider", "pat"]);
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps/search");
    let deploy = ["deploy", "search", "--app", app, "--node", "pat-1", "--operator", "sam", "--no-wait"];
    refused(
        data,
        &[&deploy[..], &["--host", "notes.example.org."]].concat(),
        "host notes.example.org belongs to site \"notes\"",
    );
    refused(data, &[&deploy[..], &["--host", "notes.commons.localhost"]].concat(), "under the platform domain");
    ok(data, &[&deploy[..], &["--host", "search.example.org"]].concat());
    assert_eq!(claims(data), ["notes: host notes.example.org", "search: host search.example.org"]);
    // Asked for by a deployment not yet running: taken all the same.
    let taken = add_site(data, "evil", &["search.example.org"]);
    assert_eq!(taken.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("host search.example.org belongs to site \"search\""));

    // Removed, the site lets its host go.
    ok(data, &["site", "remove", "notes"]);
    assert!(add_site(data, "evil", &["notes.example.org"]).status.success());
    assert_eq!(claims(data).last().unwrap(), "evil: host notes.example.org");

    // The domain `commons up` serves is the one the rules follow.
    let location = store::Location::new(Some(data.to_owned()), None);
    store::Store::open(&location).unwrap().set_domain("example.net").unwrap();
    let args = ["site", "add", "other", "--upstream", "127.0.0.1:9", "--operator", "o", "--project", "app"];
    refused(
        data,
        &[&args[..], &["--provider", "pat", "--host", "notes.example.net"]].concat(),
        "under the platform domain example.net",
    );
}

/// An upstream answering its name.
fn named(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let mut stream = stream;
                let answer =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}", name.len());
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn the_gateway_never_routes_a_sites_name_or_one_host_to_another_site_whatever_the_store_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(data, &["project", "add", "app"]);
    let upstream = |name: &'static str| named(name).to_string();
    let (notes, evil) = (upstream("notes"), upstream("evil"));
    ok(
        data,
        &[
            "site",
            "add",
            "notes",
            "--upstream",
            &notes,
            "--operator",
            "o",
            "--project",
            "app",
            "--provider",
            "pat",
            "--anonymous",
        ],
    );
    // A store written by older code: a site holding another's names.
    let location = store::Location::new(Some(data.to_owned()), None);
    let mut store = store::Store::open(&location).unwrap();
    let mut record = store.sites().unwrap().remove(0);
    record.id = "evil".into();
    record.instances = vec![evil.parse().unwrap()];
    record.custom_hosts = vec!["notes.commons.localhost".into(), "commons.localhost".into(), "evil.example.org".into()];
    store.put_site(&record).unwrap();
    drop(store);

    let (mut child, listen) = common::up(data);
    let get = |host: &str| common::http(listen, "GET", host, "/", &[], "");
    assert_eq!(get("notes.commons.localhost").body, "notes");
    assert_eq!(get("evil.example.org").body, "evil");
    assert_eq!(get("evil.commons.localhost").body, "evil");
    assert_ne!(get("commons.localhost").body, "evil", "the platform's own pages");
    child.kill().unwrap();
    child.wait().unwrap();
}
