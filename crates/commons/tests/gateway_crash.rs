//! Nothing lost: `commons up` is SIGKILLed under load at random moments
//! and restarted; every answered request is counted, none twice.
//!
//! Each client sends requests one at a time on a keep-alive connection, so
//! at the moment of a kill at most one request per client is in flight:
//! metered but perhaps never answered. So per user, answered ≤ counted ≤
//! answered + kills. A flush replayed twice would blow the upper bound.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{commons, up, upstream};
use commons_core::SplitMix64;

/// One keep-alive request; true if it was answered 200.
fn request(reader: &mut BufReader<TcpStream>, token: &str) -> bool {
    let request = format!("GET / HTTP/1.1\r\nHost: wiki.commons.localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    if reader.get_mut().write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status = String::new();
    if reader.read_line(&mut status).unwrap_or(0) == 0 {
        return false;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).is_ok() && status.starts_with("HTTP/1.1 200")
}

#[test]
fn a_gateway_killed_under_load_loses_no_answered_request_and_counts_none_twice() {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = SplitMix64::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(data.join("commons.toml"), "flush_ms = 50\n").unwrap();
    let upstream = upstream();
    let project = commons().arg("--data").arg(data).args(["project", "add", "wiki"]).output().unwrap();
    assert!(project.status.success(), "{}", String::from_utf8_lossy(&project.stderr));
    let ok = commons()
        .arg("--data")
        .arg(data)
        .args(["site", "add", "wiki", "--upstream", &upstream.to_string(), "--operator", "olga", "--project", "wiki"])
        .args(["--provider", "pat"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let users = ["ana", "ben", "cy", "dee"];
    let tokens: Vec<String> = users
        .iter()
        .map(|user| {
            let out = commons().arg("--data").arg(data).args(["token", "add", user]).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        })
        .collect();

    let kills = 4;
    let mut answered = vec![0u64; users.len()];
    for _ in 0..kills {
        let (mut child, listen) = up(data);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = tokens
            .iter()
            .cloned()
            .map(|token| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut count = 0u64;
                    let Ok(stream) = TcpStream::connect(listen) else { return 0 };
                    let mut reader = BufReader::new(stream);
                    while !stop.load(Ordering::Relaxed) && request(&mut reader, &token) {
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200 + rng.below(600)));
        child.kill().unwrap(); // SIGKILL, mid-load
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for (i, client) in clients.into_iter().enumerate() {
            answered[i] += client.join().unwrap();
        }
    }
    // A last start replays whatever the log holds that the store does not.
    let (mut child, _) = up(data);
    let usage =
        commons().arg("--data").arg(data).args(["usage", "--json", "--period"]).arg(current_period()).output().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let usage: serde_json::Value = serde_json::from_slice(&usage.stdout).unwrap();
    for (i, user) in users.iter().enumerate() {
        let counted = usage["usage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["user"] == *user)
            .map_or(0, |row| row["requests"].as_u64().unwrap());
        eprintln!("{user}: answered {}, counted {counted}", answered[i]);
        assert!(answered[i] > 0, "{user} got no answers: the test did not load the gateway");
        assert!(counted >= answered[i], "{user}: {} answered but {counted} counted", answered[i]);
        assert!(
            counted <= answered[i] + kills,
            "{user}: {counted} counted for {} answered: counted twice",
            answered[i]
        );
    }
}

fn current_period() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    commons_core::Period::from_days_since_epoch(days as i64).to_string()
}
