//! Two node agents joined to one control plane over TLS, on one machine in
//! separate directories: a site deployed onto one moves to the other when
//! its node disappears. Neither can speak for the other, claim more than
//! it has, or be talked to by another control plane.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{commons, control_pin, control_request, free_port, http, processes_under, up_with};

fn run(data: &Path, args: &[&str]) -> std::process::Output {
    commons().arg("--data").arg(data).args(args).output().unwrap()
}

fn join(dir: &Path, control: std::net::SocketAddr, token: &str) -> Child {
    commons()
        .arg("--data")
        .arg(dir)
        .args(["node", "--join", &format!("https://{control}"), "--token", token])
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
        assert!(run(&data, &["node", "add", node, "--provider", provider, "--cores", "2"]).status.success());
        let out = run(&data, &["node", "token", node]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        tokens.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    let bad = run(&data, &["node", "--join", "https://127.0.0.1:1", "--token"]);
    assert_eq!(bad.status.code(), Some(2), "--token needs a value");
    let pin = control_pin(&data);
    let (_, fingerprint) = tokens[0].split_once('.').expect("a token is SECRET.FINGERPRINT");
    assert_eq!(fingerprint, pin.to_string(), "the token pins the control plane's CA");
    let secrets: Vec<&str> = tokens.iter().map(|t| t.split_once('.').unwrap().0).collect();

    // The internal listener takes every address, and joined nodes are told
    // the one the operator says they reach it at.
    let internal_url = "http://192.0.2.10:8082";
    std::fs::write(data.join("commons.toml"), format!("internal_url = \"{internal_url}\"\n")).unwrap();
    let (mut control_plane, listen, control) = up_with(&data, &format!("0.0.0.0:{}", free_port().port()), &[]);
    let mut plain = std::net::TcpStream::connect(control).unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: control\r\n\r\n").unwrap();
    let mut said = Vec::new();
    let _ = plain.read_to_end(&mut said);
    assert!(!said.starts_with(b"HTTP/"), "plain HTTP gets no answer: {:?}", String::from_utf8_lossy(&said));

    let (dir_a, dir_b) = (dir.path().join("machine-a"), dir.path().join("machine-b"));
    let mut agent_a = join(&dir_a, control, &tokens[0]);
    let mut agent_b = join(&dir_b, control, &tokens[1]);
    let forged = commons()
        .arg("--data")
        .arg(dir.path().join("machine-c"))
        .args(["node", "--join", &format!("https://{control}"), "--token", &format!("ocn_forged.{pin}")])
        .output()
        .unwrap();
    assert_eq!(forged.status.code(), Some(2), "a forged token is refused");
    assert!(String::from_utf8_lossy(&forged.stderr).contains("refused the token"));
    // An agent whose token names another CA (the control plane it was
    // given is not the one answering: someone in between) will not talk.
    let elsewhere = agent::tls::Pin::of(b"another control plane's CA");
    let mitm = commons()
        .arg("--data")
        .arg(dir.path().join("machine-d"))
        .args(["node", "--join", &format!("https://{control}"), "--token", &format!("{}.{elsewhere}", secrets[1])])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&mitm.stderr);
    assert_eq!(mitm.status.code(), Some(2), "{said}");
    assert!(said.contains("refusing to talk to it"), "{said}");

    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps/search");
    // A link in the app to the control plane's key is never shipped.
    let linked = dir.path().join("linked-app");
    runtime::copy_dir(Path::new(app), &linked).unwrap();
    std::os::unix::fs::symlink(data.join("node.key"), linked.join("key.txt")).unwrap();
    let args = ["deploy", "linked", "--operator", "sam", "--node", "pat-far", "--app", linked.to_str().unwrap()];
    let refused = run(&data, &args);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("key.txt is a symbolic link"), "{said}");

    assert!(run(&data, &["node", "add", "here-1", "--provider", "pat"]).status.success());
    let mixed =
        run(&data, &["deploy", "search", "--operator", "sam", "--node", "here-1", "--node", "pia-far", "--app", app]);
    assert_eq!(mixed.status.code(), Some(2), "this machine and joined ones are not mixed in one site");
    let deployed = run(&data, &["deploy", "search", "--operator", "sam", "--node", "pat-far", "--app", app]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    assert!(String::from_utf8_lossy(&deployed.stdout).contains("running: search 1.0.0 on pat-far"));
    assert_eq!(processes_under(&dir_a).len(), 1, "the instance runs on machine a");
    assert!(processes_under(&dir_b).is_empty());
    let environ = std::fs::read(format!("/proc/{}/environ", processes_under(&dir_a)[0])).unwrap();
    // Confined, it reaches it at the same port on its own loopback, which
    // its namespace forwards to the URL the operator gave.
    let wanted = "COMMONS_INTERNAL_URL=http://127.0.0.1:8082";
    assert!(
        environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes()),
        "the joined node's instance is told the internal listener on its loopback: {}",
        String::from_utf8_lossy(&environ)
    );
    let host = format!("search.commons.localhost:{}", listen.port());
    let token = String::from_utf8(run(&data, &["token", "add", "zoe"]).stdout).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let answer = || http(listen, "GET", &host, "/?q=web", &[("Authorization", auth.as_str())], "");
    let deadline = Instant::now() + Duration::from_secs(5);
    while answer().status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answer().status, 200);

    // A node lies about what others run, to be paid for them or to fail
    // them: pia-far was never given search. Every part is refused, counted,
    // and the node is told.
    let generation = 1;
    let forged = format!(
        r#"{{"protocol":2,"instances":[{{"site":"search","generation":{generation},"port":1,"healthy":true}}],"failures":[{{"site":"search","generation":{generation},"detail":"forged"}}],"usage":[{{"site":"search","cpu_ms":1000000,"memory_mib_s":0}}]}}"#
    );
    let sync = |secret: &str, body: &str| control_request(control, pin, "POST", "/agent/v2/sync", secret, Some(body));
    let (status, body) = sync(secrets[1], &forged).unwrap();
    assert_eq!(status, 200, "{body}");
    let answer_of: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer_of["refused"].as_array().map(Vec::len), Some(3), "{body}");
    assert!(answer_of["env"].to_string().contains(internal_url), "{body}");
    let period = {
        let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
        commons_core::Period::from_days_since_epoch(days as i64).to_string()
    };
    let usage = || -> serde_json::Value {
        serde_json::from_slice(&run(&data, &["usage", "--json", "--period", &period]).stdout).unwrap()
    };
    let paid = |provider: &str| -> Option<u64> {
        let usage = usage();
        let rows = usage["resources"].as_array().unwrap().clone();
        rows.iter().find(|r| r["provider"] == provider).map(|r| r["cpu_ms"].as_u64().unwrap())
    };
    assert_eq!(paid("pia"), None, "a node was paid for a site it never ran: {}", usage());
    let nodes = String::from_utf8_lossy(&run(&data, &["node", "list"]).stdout).into_owned();
    assert!(nodes.lines().any(|l| l.starts_with("pia-far") && l.ends_with("refused 3")), "{nodes}");
    assert!(nodes.lines().any(|l| l.starts_with("pat-far") && l.ends_with("refused 0")), "{nodes}");
    let sites = String::from_utf8_lossy(&run(&data, &["site", "list"]).stdout).into_owned();
    assert!(sites.contains("search"), "search is still published: {sites}");
    let history = String::from_utf8_lossy(&run(&data, &["history"]).stdout).into_owned();
    assert!(!history.contains("forged"), "another node's deployment was failed: {history}");
    assert_eq!(answer().status, 200);

    // pat-far runs search, but no node of 2 cores used 9×10¹² ms of CPU
    // in the seconds since its last report: refused and counted. What it
    // could have used is recorded.
    let claim = |cpu_ms: u64| {
        format!(
            r#"{{"protocol":2,"instances":[],"failures":[],"usage":[{{"site":"search","cpu_ms":{cpu_ms},"memory_mib_s":0}}]}}"#
        )
    };
    let before = paid("pat").unwrap_or(0);
    let (status, body) = sync(secrets[0], &claim(9_000_000_000_000)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("could use since the last accepted report"), "{body}");
    assert!(paid("pat").unwrap_or(0) < 9_000_000_000_000, "{}", usage());
    let nodes = String::from_utf8_lossy(&run(&data, &["node", "list"]).stdout).into_owned();
    assert!(nodes.lines().any(|l| l.starts_with("pat-far") && l.ends_with("refused 1")), "{nodes}");
    let (status, body) = sync(secrets[0], &claim(700)).unwrap();
    assert_eq!(status, 200, "{body}");
    let answer_of: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer_of["refused"], serde_json::json!([]), "a plausible report is taken: {body}");
    assert!(paid("pat").unwrap() >= before + 700, "{}", usage());
    // The forged syncs stood for the nodes' reports a moment: the agents'
    // next ones put the routes back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while answer().status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answer().status, 200);

    // What a node says happened to its instances reaches the public
    // history a few lines per instance and sync, printable: never a flood.
    let events: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"site":"search","generation":{generation},"detail":"restarted: flood {i}\u0007bell"}}"#))
        .collect();
    let flood = format!(r#"{{"protocol":2,"instances":[],"failures":[],"usage":[],"events":[{}]}}"#, events.join(","));
    let (status, body) = sync(secrets[0], &flood).unwrap();
    assert_eq!(status, 200, "{body}");
    let answer_of: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer_of["refused"].as_array().map(Vec::len), Some(12), "{body}");
    let history = String::from_utf8_lossy(&run(&data, &["history"]).stdout).into_owned();
    assert_eq!(history.matches("restart search: on pat-far: restarted: flood").count(), 8, "{history}");
    assert!(history.contains("flood 0 bell") && !history.contains('\u{7}'), "{history}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while answer().status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }

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

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A node speaking the agent protocol by hand (a fake agent, over real
/// TLS sockets): what it was given bounds what it may say, fetch and claim.
#[test]
fn a_joined_node_claims_only_what_it_could_have_used_once_and_fetches_only_its_own_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("control");
    std::fs::create_dir_all(&data).unwrap();
    let mut secrets = Vec::new();
    for node in ["far", "other"] {
        assert!(run(&data, &["node", "add", node, "--provider", node, "--cores", "2"]).status.success());
        let out = run(&data, &["node", "token", node]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap();
        secrets.push(token.trim().split_once('.').unwrap().0.to_owned());
    }
    let (mut control_plane, _listen, control) = up_with(&data, &free_port().to_string(), &[]);
    let pin = control_pin(&data);
    let sync = move |secret: &str, body: &str| -> serde_json::Value {
        let (status, body) = control_request(control, pin, "POST", "/agent/v2/sync", secret, Some(body)).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let report = |instances: &str, usage: &str| {
        format!(r#"{{"protocol":2,"instances":[{instances}],"failures":[],"usage":[{usage}]}}"#)
    };

    // The fake agent of "far": it syncs every 200 ms, and once given
    // search, reports it running on an upstream of its own (no usage).
    let app_port = common::upstream().port();
    let started = Arc::new(Mutex::new(None::<(u64, String)>));
    let stop = Arc::new(AtomicBool::new(false));
    let before_first = wall_ms();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = control_request(control, pin, "POST", "/agent/v2/sync", &secrets[0], Some(&report("", "")));
        if matches!(answer, Ok((200, _))) {
            break;
        }
        assert!(Instant::now() < deadline, "{answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after_first = wall_ms();
    let agent = {
        let (secret, started, stop) = (secrets[0].clone(), started.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let running = started.lock().unwrap().is_some();
                let instance = format!(r#"{{"site":"search","generation":1,"port":{app_port},"healthy":true}}"#);
                let answer = sync(&secret, &report(if running { instance.as_str() } else { "" }, ""));
                let given = answer["assignments"].as_array().unwrap().iter().find(|a| a["site"] == "search").cloned();
                if let Some(given) = given
                    && !running
                {
                    *started.lock().unwrap() = Some((wall_ms(), given["bundle"].as_str().unwrap().to_owned()));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps/search");
    let deployed = run(&data, &["deploy", "search", "--operator", "sam", "--node", "far", "--app", app]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    let (given_by, bundle) = started.lock().unwrap().clone().expect("search was given to far");

    // Its bundle is served to far, and to no other node, as if it did not exist.
    let fetch = |secret: &str, id: &str| {
        control_request(control, pin, "GET", &format!("/agent/v2/bundles/{id}"), secret, None).unwrap().0
    };
    assert_eq!(fetch(&secrets[0], &bundle), 200);
    assert_eq!(fetch(&secrets[1], &bundle), 404, "another node's bundle");
    assert_eq!(fetch(&secrets[1], &"0".repeat(64)), 404, "no bundle: the same answer");

    // An instance and a failure of a generation of search far was never
    // given are refused, and counted, though far holds search.
    let bogus = r#"{"protocol":2,"instances":[{"site":"search","generation":7,"port":1,"healthy":true}],"failures":[{"site":"search","generation":7,"detail":"forged"}],"usage":[]}"#;
    let answer = sync(&secrets[0], bogus);
    let refused = answer["refused"].to_string();
    assert_eq!(answer["refused"].as_array().map(Vec::len), Some(2), "{refused}");
    assert!(refused.contains("generation 7"), "{refused}");
    let nodes = String::from_utf8_lossy(&run(&data, &["node", "list"]).stdout).into_owned();
    assert!(nodes.lines().any(|l| l.starts_with("far") && l.ends_with("refused 2")), "{nodes}");

    let period = {
        let days = wall_ms() / 86_400_000;
        commons_core::Period::from_days_since_epoch(days as i64).to_string()
    };
    let recorded = || -> (u64, u64) {
        let usage: serde_json::Value =
            serde_json::from_slice(&run(&data, &["usage", "--json", "--period", &period]).stdout).unwrap();
        let rows = usage["resources"].as_array().unwrap().clone();
        rows.iter()
            .find(|r| r["provider"] == "far")
            .map_or((0, 0), |r| (r["cpu_ms"].as_u64().unwrap(), r["memory_mib_s"].as_u64().unwrap()))
    };
    // search books 256 MiB of far's 4096: holding all 4096 since far first
    // synced is more than it was given.
    let slack = 5_000; // control::capacity::USAGE_SLACK_MS
    let capacity = 4096 * (wall_ms() - after_first + slack) / 1000;
    let answer =
        sync(&secrets[0], &report("", &format!(r#"{{"site":"search","cpu_ms":0,"memory_mib_s":{capacity}}}"#)));
    assert!(answer["refused"].to_string().contains("booked 256 MiB"), "{answer}");
    assert_eq!(recorded(), (0, 0), "a site's booking bounds its memory");

    // Sixteen syncs at once, each claiming all far's 2 cores could have
    // given search since it was given: one is taken, the others refused.
    let claim = 2 * (wall_ms() - given_by + slack);
    assert!(given_by >= before_first);
    let body = report("", &format!(r#"{{"site":"search","cpu_ms":{claim},"memory_mib_s":0}}"#));
    let barrier = Arc::new(std::sync::Barrier::new(16));
    let at_once: Vec<_> = (0..16)
        .map(|_| {
            let (secret, body, barrier) = (secrets[0].clone(), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                sync(&secret, &body)
            })
        })
        .collect();
    let answers: Vec<serde_json::Value> = at_once.into_iter().map(|t| t.join().unwrap()).collect();
    let taken = answers.iter().filter(|a| a["refused"] == serde_json::json!([])).count();
    assert_eq!(taken, 1, "{answers:?}");
    assert_eq!(recorded(), (claim, 0), "what was credited is one claim's worth");

    // The metrics are this machine's (and a joined node's) to read.
    let (status, _) = control_request(control, pin, "GET", "/metrics", "", None).unwrap();
    assert_eq!(status, 200, "from loopback, as bench/gateway.sh reads them");
    let (status, _) = control_request(control, pin, "GET", "/metrics", &secrets[0], None).unwrap();
    assert_eq!(status, 200, "with a join token");

    stop.store(true, Ordering::SeqCst);
    agent.join().unwrap();
    control_plane.kill().unwrap();
    control_plane.wait().unwrap();
}
