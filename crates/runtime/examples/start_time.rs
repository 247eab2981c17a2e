//! How long an instance takes to start, confined and unconfined, side by
//! side: `Instance::start` of bench/apps/static (nginx; install, start,
//! first answer to its health path), alternating the two, then stopped.
//!
//!     cargo run --release -p runtime --example start_time [-- ROUNDS]
//!
//! Needs root and bubblewrap (as confinement does) and nginx.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::{Confinement, Instance, InstanceSpec, Manifest, Sandbox};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(measure());
}

async fn measure() {
    let rounds: usize = std::env::args().nth(1).map_or(15, |n| n.parse().expect("ROUNDS is a number"));
    let app = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/apps/static"));
    let manifest = Manifest::load(&app.join("commons.toml")).expect("the bench app's manifest");
    let realm = tempfile::tempdir().unwrap();
    let sandbox = Arc::new(Sandbox::detect(realm.path()).unwrap_or_else(|e| panic!("{e}")));
    let mut took: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, confinement) in
            [Confinement::Confined(sandbox.clone()), Confinement::Unconfined].into_iter().enumerate()
        {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let spec = InstanceSpec {
                site: "files".into(),
                manifest: manifest.clone(),
                source: app.clone(),
                dir: realm.path().join(format!("files-{round}-{i}")),
                port,
                env: vec![],
                confinement,
                state_dir: None,
            };
            let start = Instant::now();
            let instance = Instance::start(spec).await.unwrap_or_else(|e| panic!("{e}"));
            took[i].push(start.elapsed());
            instance.stop().await;
        }
    }
    let median = |d: &mut Vec<Duration>| {
        d.sort();
        d[d.len() / 2]
    };
    let (confined, unconfined) = (median(&mut took[0]), median(&mut took[1]));
    println!(
        "instance start (install, start, healthy), median of {rounds}: confined {:.1} ms, unconfined {:.1} ms: confinement adds {:.1} ms",
        confined.as_secs_f64() * 1e3,
        unconfined.as_secs_f64() * 1e3,
        (confined.as_secs_f64() - unconfined.as_secs_f64()) * 1e3
    );
}
