//! `commons settle` as a user runs it.

use std::process::{Command, Output};

use expect_test::expect;

fn commons(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_commons"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "exit {:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn golden_json_is_the_table_of_the_design() {
    let json = stdout(&commons(&["settle", "--scenario", "examples/golden.toml", "--json"]));
    expect![[r#"
        {
          "accounts": {
            "general-fund": 500000,
            "operator:olga": 3990000,
            "operator:otto": 855000,
            "operator:sam": 332500,
            "project:chat": 106875,
            "project:http": 356250,
            "project:markdown": 249375,
            "project:search": 83125,
            "project:wiki": 498750,
            "provider:pat": 2315625,
            "provider:pia": 712500
          },
          "total": 10000000
        }
    "#]]
    .assert_eq(&json);
    let csv = stdout(&commons(&["settle", "--scenario", "examples/golden-csv", "--json"]));
    assert_eq!(json, csv);
}

#[test]
fn the_table_shows_amounts_in_cc_and_the_conservation_check() {
    let table = stdout(&commons(&["settle", "--scenario", "examples/golden.toml"]));
    expect![[r#"
        period 2026-11: 1 subscribers, 2 usage rows, 3 sites, 5 projects

        account                                 µCC                    CC
        general-fund                        500,000              0.500000
        provider:pat                      2,315,625              2.315625
        provider:pia                        712,500              0.712500
        operator:olga                     3,990,000              3.990000
        operator:otto                       855,000              0.855000
        operator:sam                        332,500              0.332500
        project:chat                        106,875              0.106875
        project:http                        356,250              0.356250
        project:markdown                    249,375              0.249375
        project:search                       83,125              0.083125
        project:wiki                        498,750              0.498750
        total                            10,000,000             10.000000

        minted 10,000,000 µCC, allocated 10,000,000 µCC: conserved
    "#]]
    .assert_eq(&table);
}

#[test]
fn bad_scenarios_exit_2_with_the_error_and_print_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[project]]\nid = \"a\"\ndeps = [{ project = \"a\" }]\n").unwrap();
    for args in [
        vec!["settle", "--scenario", bad.to_str().unwrap(), "--json"],
        vec!["settle", "--scenario", "does/not/exist.toml"],
        vec!["settle"],
    ] {
        let output = commons(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
    let stderr = String::from_utf8(commons(&["settle", "--scenario", bad.to_str().unwrap()]).stderr).unwrap();
    assert!(
        stderr.contains("bad.toml:3: [[project]] #1, field `deps[0].project`: project \"a\" cannot depend on itself"),
        "{stderr}"
    );
}

// What the platform recorded always settles: a running `commons up`, sites
// that misbehave, and `commons settle --period` over what was metered.

mod common;

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

/// A running `commons up` over `data`, flushing usage often.
struct Platform {
    child: std::process::Child,
    listen: SocketAddr,
}

impl Platform {
    fn up(data: &Path, internal: SocketAddr) -> Platform {
        std::fs::write(data.join("commons.toml"), "flush_ms = 20\n").unwrap();
        let (listen, control) = (common::free_port(), common::free_port());
        let mut child = common::commons()
            .arg("--data")
            .arg(data)
            .args(["up", "--listen", &listen.to_string(), "--control-listen", &control.to_string()])
            .args(["--internal-listen", &internal.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        common::wait_healthy(data, control, &mut child);
        Platform { child, listen }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on(data: &Path, args: &[&str]) -> Output {
    common::commons().arg("--data").arg(data).args(args).output().unwrap()
}

fn ok_on(data: &Path, args: &[&str]) -> String {
    let output = on(data, args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// What a site does with a request.
#[derive(Clone)]
enum Behaviour {
    /// Answers `ok`.
    Answer,
    /// Calls the service at this host through the internal listener with
    /// the request's provenance, then answers with the call's status.
    Call(String),
    /// Calls the service at this host, then drops the connection unanswered.
    CallThenFail(String),
}

/// A site's upstream on its own port.
fn site(internal: SocketAddr, behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let behaviour = behaviour.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut provenance = String::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("x-commons-provenance:") {
                        provenance = v.trim().to_owned();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let call = |host: &str| {
                    let answer = common::http(internal, "GET", host, "/", &[("X-Commons-Provenance", &provenance)], "");
                    answer.status
                };
                let mut stream = stream;
                match behaviour {
                    Behaviour::Answer => {
                        let _ =
                            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                    }
                    Behaviour::Call(host) => {
                        let status = call(&host).to_string();
                        let _ = stream.write_all(
                            format!("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\n{status}")
                                .as_bytes(),
                        );
                    }
                    Behaviour::CallThenFail(host) => {
                        call(&host);
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    }
                }
            });
        }
    });
    addr
}

/// A data directory with alice subscribed for `period` and holding a token,
/// and the project every site runs.
fn platform_with_alice(dir: &Path, period: &str) -> String {
    ok_on(dir, &["project", "add", "app"]);
    ok_on(dir, &["subscribe", "alice", "--cents", "1000", "--period", period]);
    ok_on(dir, &["token", "add", "alice"]).trim().to_owned()
}

fn add_site(data: &Path, id: &str, upstream: SocketAddr) {
    let added = site_add(data, id, &upstream.to_string(), &format!("op-{id}"));
    assert!(added.status.success(), "site add {id}: {}", String::from_utf8_lossy(&added.stderr));
}

/// `commons site add ID` of app's project on pat's machines, for `operator`.
fn site_add(data: &Path, id: &str, upstream: &str, operator: &str) -> Output {
    on(
        data,
        &["site", "add", id, "--upstream", upstream, "--operator", operator, "--project", "app", "--provider", "pat"],
    )
}

/// The metered usage of `period` once `ready` says it holds what is waited for.
fn usage_once(data: &Path, period: &str, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let usage: serde_json::Value =
            serde_json::from_str(&ok_on(data, &["usage", "--json", "--period", period])).unwrap();
        if ready(&usage) {
            return usage;
        }
        assert!(Instant::now() < deadline, "the usage did not arrive: {usage}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn this_period() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    commons_core::Period::from_days_since_epoch(days as i64).to_string()
}

/// `commons settle --period` succeeds, and what it printed as JSON.
fn settled(data: &Path, period: &str) -> serde_json::Value {
    let json = ok_on(data, &["settle", "--period", period, "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sum: u64 = value["accounts"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(value["total"].as_u64(), Some(sum), "{value}");
    value
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn a_site_calling_itself_through_the_internal_listener_is_refused_and_the_month_settles() {
    let dir = tempfile::tempdir().unwrap();
    let (data, period) = (dir.path(), this_period());
    let token = platform_with_alice(data, &period);
    let internal = common::free_port();
    add_site(data, "chat", site(internal, Behaviour::Call("chat.commons.localhost".into())));
    let platform = Platform::up(data, internal);

    let answer =
        common::http(platform.listen, "GET", "chat.commons.localhost", "/", &[("Authorization", &bearer(&token))], "");
    let usage = usage_once(data, &period, |u| u["usage"].as_array().is_some_and(|rows| !rows.is_empty()));
    let settlement = settled(data, &period);
    assert_eq!(settlement["accounts"]["operator:op-chat"].as_u64(), Some(5_266_800), "{settlement}");
    assert_eq!((answer.status, answer.body.as_str()), (200, "400"), "the call to itself is refused");
    assert_eq!(usage["calls"], serde_json::json!([]), "no call was metered: {usage}");
    drop(platform);
}

#[test]
fn a_site_that_calls_a_service_and_then_fails_settles_with_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (data, period) = (dir.path(), this_period());
    let token = platform_with_alice(data, &period);
    let internal = common::free_port();
    add_site(data, "chat", site(internal, Behaviour::CallThenFail("search.commons.localhost".into())));
    add_site(data, "search", site(internal, Behaviour::Answer));
    let platform = Platform::up(data, internal);

    let answer =
        common::http(platform.listen, "GET", "chat.commons.localhost", "/", &[("Authorization", &bearer(&token))], "");
    assert_eq!(answer.status, 502, "{}", answer.body);
    let usage = usage_once(data, &period, |u| u["calls"].as_array().is_some_and(|rows| !rows.is_empty()));
    assert_eq!(usage["calls"][0]["site"], "chat", "{usage}");
    let settlement = settled(data, &period);
    let paid = |account: &str| settlement["accounts"][account].as_u64().unwrap_or(0);
    assert!(paid("general-fund") < 9_900_000, "alice's fee reached the sites she used: {settlement}");
    assert!(paid("operator:op-chat") + paid("operator:op-search") > 0, "{settlement}");
    drop(platform);
}

#[test]
fn a_site_removed_after_it_was_used_is_still_paid_for_the_month() {
    let dir = tempfile::tempdir().unwrap();
    let (data, period) = (dir.path(), this_period());
    let token = platform_with_alice(data, &period);
    let internal = common::free_port();
    add_site(data, "chat", site(internal, Behaviour::Answer));
    let platform = Platform::up(data, internal);

    let answer =
        common::http(platform.listen, "GET", "chat.commons.localhost", "/", &[("Authorization", &bearer(&token))], "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    usage_once(data, &period, |u| u["usage"].as_array().is_some_and(|rows| !rows.is_empty()));
    ok_on(data, &["site", "remove", "chat"]);
    assert!(!ok_on(data, &["site", "list"]).contains("chat"), "a removed site is not listed");
    let gone = Instant::now() + Duration::from_secs(10);
    while common::http(platform.listen, "GET", "chat.commons.localhost", "/", &[("Authorization", &bearer(&token))], "")
        .status
        != 404
    {
        assert!(Instant::now() < gone, "a removed site is still routed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its id is not taken again while the period needs its record: the
    // month's pay would go to the new site's operator.
    let upstream = common::free_port().to_string();
    let taken = site_add(data, "chat", &upstream, "op-thief");
    let said = String::from_utf8_lossy(&taken.stderr);
    assert_eq!(taken.status.code(), Some(2), "{said}");
    let kept = format!("its record is kept until period {period} is settled; choose another id or settle first");
    assert!(said.contains("site chat was removed on ") && said.contains(&kept), "{said}");
    let settlement = settled(data, &period);
    assert_eq!(settlement["accounts"]["operator:op-chat"].as_u64(), Some(5_266_800), "{settlement}");
    assert_eq!(settlement["accounts"]["operator:op-thief"].as_u64(), None, "{settlement}");
    let again = on(data, &["site", "remove", "chat"]);
    assert_eq!(again.status.code(), Some(2), "removed once");
    drop(platform);

    // Once every period that names it is settled on the ledger, the record
    // goes; a removed site an unsettled period still names stays.
    add_site(data, "old", common::free_port());
    let mut usage = metering::Usage::default();
    let (user, site) = ("alice".to_owned(), "old".to_owned());
    let earlier = commons_core::Period::parse("2026-01").unwrap();
    usage.record(&metering::Event::Direct { period: earlier, user, site, minute: 29_000_000, service_ms: 1 });
    let location = store::Location::new(Some(data.to_owned()), None);
    store::Store::open(&location).unwrap().record_usage(&usage, &metering::wal::Checkpoint::default()).unwrap();
    ok_on(data, &["site", "remove", "old"]);
    let recorded = on(data, &["settle", "--period", &period, "--ledger"]);
    assert!(recorded.status.success(), "{}", String::from_utf8_lossy(&recorded.stderr));
    let stderr = String::from_utf8_lossy(&recorded.stderr);
    assert!(stderr.contains("removed site chat forgotten: every period it was used in is settled"), "{stderr}");
    let kept: Vec<String> =
        store::Store::open(&location).unwrap().sites_ever().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(kept, ["old"]);
    // Settled, chat's id is free again; old's is not, by site add or deploy.
    add_site(data, "chat", common::free_port());
    let taken = site_add(data, "old", &upstream, "op-thief");
    let said = String::from_utf8_lossy(&taken.stderr);
    assert_eq!(taken.status.code(), Some(2), "{said}");
    assert!(said.contains("its record is kept until period 2026-01 is settled"), "{said}");
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps/search");
    let deployed = on(data, &["deploy", "old", "--operator", "op-thief", "--node", "anywhere", "--app", app]);
    let said = String::from_utf8_lossy(&deployed.stderr);
    assert_eq!(deployed.status.code(), Some(2), "{said}");
    assert!(said.contains("site old was removed on "), "{said}");
}

#[test]
fn rows_that_cannot_be_paid_are_set_aside_reported_and_kept_and_the_rest_settles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let period = "2026-11";
    platform_with_alice(data, period);
    ok_on(data, &["subscribe", "bob", "--cents", "1000", "--period", period]);
    add_site(data, "chat", common::free_port());
    add_site(data, "search", common::free_port());
    // What older code (or a damaged log) may have left in the store.
    let p = commons_core::Period::parse(period).unwrap();
    let mut usage = metering::Usage::default();
    for (user, site) in [("alice", "chat"), ("alice", "ghost"), ("bob", "ghost")] {
        usage.record(&metering::Event::Direct {
            period: p,
            user: user.into(),
            site: site.into(),
            minute: 29_000_000,
            service_ms: 10,
        });
    }
    for (site, service) in [("chat", "chat"), ("chat", "ghost"), ("search", "chat")] {
        let key = metering::CallKey { period: p, user: "alice".into(), site: site.into(), service: service.into() };
        usage.calls.insert(key, 40);
    }
    let location = store::Location::new(Some(data.to_owned()), None);
    let mut store = store::Store::open(&location).unwrap();
    store.record_usage(&usage, &metering::wal::Checkpoint::default()).unwrap();
    // A node's resource use of a site with no record: no site pays its provider.
    let ghostly = store::ResourceTotals { cpu_ms: 300, memory_mib_s: 20 };
    store.add_resource_usage(p, "ghost", "pat", ghostly).unwrap();
    drop(store);

    let settlement = settled(data, period);
    let paid = |account: &str| settlement["accounts"][account].as_u64().unwrap_or(0);
    // Alice's fee goes by her one valid row; Bob's, with none, to the general fund.
    assert_eq!(paid("general-fund"), 495_000 + 9_900_000, "{settlement}");
    assert_eq!(paid("operator:op-chat"), 5_266_800, "{settlement}");
    assert_eq!(paid("operator:op-search"), 0, "{settlement}");
    let rows: Vec<String> = settlement["set_aside"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} — {} — {}",
                r["row"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    expect![[r#"
        [
            "usage row (2026-11, site ghost, user alice) — site \"ghost\" has no record, not even as a removed site — not charged: alice's fee is split over their other usage",
            "usage row (2026-11, site ghost, user bob) — site \"ghost\" has no record, not even as a removed site — bob's fee went to the general fund: no other usage of theirs is valid",
            "call row (2026-11, site chat calling chat, user alice) — site \"chat\" called itself — not charged: chat keeps its share",
            "call row (2026-11, site chat calling ghost, user alice) — site \"ghost\" has no record, not even as a removed site — not charged: chat keeps the share it would have split",
            "call row (2026-11, site search calling chat, user alice) — alice has no direct use of search to split with the service — not charged: nothing was split",
            "resource row (2026-11, site ghost, provider pat: 300 CPU ms, 20 MiB·s) — site \"ghost\" has no record, not even as a removed site — not paid: pat's share of a site with no record is not paid; nobody is charged",
        ]
    "#]].assert_debug_eq(&rows);
    let table = ok_on(data, &["settle", "--period", period]);
    assert!(table.contains("6 metered rows set aside:"), "{table}");

    // On the ledger, the report is kept with the period, and the ledger verifies.
    ok_on(data, &["settle", "--period", period, "--ledger"]);
    let kept = store::Store::open(&location).unwrap().set_aside(p).unwrap();
    assert_eq!(kept.iter().map(|r| format!("{} — {} — {}", r.row, r.reason, r.outcome)).collect::<Vec<_>>(), rows);
    let export = dir.path().join("ledger.jsonl");
    ok_on(data, &["ledger", "export", "--out", export.to_str().unwrap()]);
    assert!(ok_on(data, &["ledger", "verify", export.to_str().unwrap()]).contains("verifies: "));
}
