//! Generates a large, realistic period as a CSV scenario directory, from a
//! seed: the benchmark's input (see bench/settle.sh).
//!
//! ```text
//! cargo run --release -p scenario --example generate -- OUT_DIR [--seed N] [--subscribers N]
//!     [--usage-rows N] [--sites N] [--projects N]
//! ```
//!
//! The shape: popularity of sites and of dependencies follows a power law;
//! projects depend on older, more popular projects (with a few cycles, as in
//! real ecosystems); a site runs on one to three of 500 providers; one user
//! in eleven has no subscription; one usage row in ten has calls to other
//! services.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use commons_core::SplitMix64;

/// The seeded generator, with a power law on top.
struct Rng(SplitMix64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    /// An index below `n`, small ones far more likely (a power law).
    fn popular(&mut self, n: u64, skew: f64) -> u64 {
        ((self.0.unit().powf(skew) * n as f64) as u64).min(n - 1)
    }
}

struct Shape {
    seed: u64,
    subscribers: u64,
    usage_rows: u64,
    sites: u64,
    projects: u64,
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let mut shape = Shape { seed: 1, subscribers: 1_000_000, usage_rows: 10_000_000, sites: 20_000, projects: 10_000 };
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse::<u64>().ok()).expect("a number after the flag");
        match arg.as_str() {
            "--seed" => shape.seed = value(),
            "--subscribers" => shape.subscribers = value(),
            "--usage-rows" => shape.usage_rows = value(),
            "--sites" => shape.sites = value(),
            "--projects" => shape.projects = value(),
            _ if out.is_none() && !arg.starts_with("--") => out = Some(PathBuf::from(arg)),
            _ => panic!("unknown argument {arg}"),
        }
    }
    let out =
        out.expect("usage: generate OUT_DIR [--seed N] [--subscribers N] [--usage-rows N] [--sites N] [--projects N]");
    std::fs::create_dir_all(&out)?;
    generate(&out, &shape)
}

fn writer(dir: &Path, name: &str, header: &str) -> std::io::Result<BufWriter<File>> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join(name))?);
    writeln!(w, "{header}")?;
    Ok(w)
}

fn generate(dir: &Path, shape: &Shape) -> std::io::Result<()> {
    let mut rng = Rng(SplitMix64::new(shape.seed));
    std::fs::write(dir.join("params.toml"), format!("period = \"2026-11\"\n# generated with seed {}\n", shape.seed))?;

    let mut projects = writer(dir, "projects.csv", "id,pass_bps")?;
    let mut deps = writer(dir, "deps.csv", "project,dep,weight")?;
    for p in 0..shape.projects {
        let pass = if rng.below(10) == 0 { (rng.below(10) * 900).to_string() } else { String::new() };
        writeln!(projects, "proj{p:05},{pass}")?;
        // Older projects are the libraries: depend on a few of them, the
        // popular ones most; one edge in fifty points forward (a cycle).
        let n_deps = if p == 0 { 0 } else { rng.below(9) };
        let mut chosen = Vec::new();
        for _ in 0..n_deps {
            let d = if rng.below(50) == 0 { rng.below(shape.projects) } else { rng.popular(p, 2.5) };
            if d != p && !chosen.contains(&d) {
                chosen.push(d);
                writeln!(deps, "proj{p:05},proj{d:05},{}", 1 + rng.below(3))?;
            }
        }
    }
    projects.flush()?;
    deps.flush()?;

    let mut sites = writer(dir, "sites.csv", "id,operator,project,provider_share_bps,developer_share_bps")?;
    let mut site_providers = writer(dir, "site_providers.csv", "site,provider,resource_weight")?;
    for s in 0..shape.sites {
        let project = shape.projects - 1 - rng.popular(shape.projects, 1.5);
        let provider_share = 2000 + rng.below(21) * 100;
        let developer_share = if rng.below(5) == 0 { (2000 + rng.below(31) * 100).to_string() } else { String::new() };
        writeln!(sites, "site{s:05},op{:04},proj{project:05},{provider_share},{developer_share}", rng.below(5_000))?;
        let n_providers = 1 + rng.below(3);
        let mut chosen = Vec::new();
        for _ in 0..n_providers {
            let v = rng.popular(500, 1.5);
            if !chosen.contains(&v) {
                chosen.push(v);
                writeln!(site_providers, "site{s:05},prov{v:03},{}", 1 + rng.below(1000))?;
            }
        }
    }
    sites.flush()?;
    site_providers.flush()?;

    // One user in eleven uses sites without a subscription.
    let users = shape.subscribers + shape.subscribers / 10;
    let mut subscriptions = writer(dir, "subscriptions.csv", "user,paid_cents")?;
    for u in 0..shape.subscribers {
        let paid = [500, 1000, 1000, 1000, 1500, 2000][rng.below(6) as usize];
        writeln!(subscriptions, "user{:07},{paid}", u * 11 / 10)?;
    }
    subscriptions.flush()?;

    let mut usage = writer(dir, "usage.csv", "user,site,active_minutes,service_ms")?;
    let mut calls = writer(dir, "calls.csv", "user,site,service,ms")?;
    let rows_per_user = shape.usage_rows as f64 / users as f64;
    let mut written = 0;
    let mut chosen = Vec::new();
    for u in 0..users {
        if written >= shape.usage_rows {
            break;
        }
        let target = ((u + 1) as f64 * rows_per_user) as u64;
        let n = target.saturating_sub(written).min(shape.usage_rows - written);
        chosen.clear();
        while (chosen.len() as u64) < n.min(shape.sites) {
            let s = rng.popular(shape.sites, 2.0);
            if !chosen.contains(&s) {
                chosen.push(s);
            }
        }
        for &s in &chosen {
            let minutes = 1 + rng.popular(600, 3.0);
            let service_ms =
                if rng.below(4) == 0 { String::new() } else { (minutes * (50 + rng.below(2_000))).to_string() };
            writeln!(usage, "user{u:07},site{s:05},{minutes},{service_ms}")?;
            if rng.below(10) == 0 {
                let callee = rng.popular(shape.sites, 2.0);
                if callee != s {
                    writeln!(calls, "user{u:07},site{s:05},site{callee:05},{}", 1 + rng.below(5_000))?;
                }
            }
        }
        written += chosen.len() as u64;
    }
    usage.flush()?;
    calls.flush()?;
    Ok(())
}
