//! `commons demo`: the whole platform, end to end, in one command.
//!
//! In a fresh data directory it starts the platform (store, gateway, node
//! agent), registers providers' nodes, deploys the example apps as sites,
//! creates users — free ones and subscribers who pay through the custodian,
//! which mints their CommonCents — drives their traffic through the
//! gateway (including a site calling another service for its user and a
//! browser-style login), closes the period, settles it from what was
//! metered onto the ledger, verifies the ledger offline, and prints where
//! each subscriber's fee went and what each participant earned.
//!
//! In a terminal it then keeps the platform running; otherwise (CI) it
//! shuts down and exits 0 once the ledger is verified.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use commons_core::{Micros, Period};
use platform::{Platform, Settings};
use settlement::{Params, ParamsSpec, SubscriberIx, allocate_subscriber};
use store::{DeploymentRecord, Location, NodeRecord, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::settle::grouped;
use platform::record;

use crate::{BadInput, ledger_cmd, now_ms};

#[derive(clap::Args)]
pub struct Args {
    /// Where to put the demo's data (a new directory) [default: a fresh one
    /// under the system's temporary directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Requests each user makes
    #[arg(long, default_value_t = 30)]
    requests: u32,
    /// After the demo: keep the platform running (default: only in a terminal)
    #[arg(long, conflicts_with = "exit")]
    keep_running: bool,
    /// After the demo: stop, even in a terminal
    #[arg(long)]
    exit: bool,
    /// Run the demo's apps without confinement (see `commons up --unconfined`)
    #[arg(long)]
    unconfined: bool,
}

/// How long the demo waits for a deploy.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// The demo's cast.
const SUBSCRIBERS: [(&str, u64); 2] = [("alice", 1_000), ("bob", 500)];
const FREE_USERS: [&str; 2] = ["carol", "dave"];

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                return Err(BadInput(format!("{} is not empty: the demo starts from nothing", dir.display())).into());
            }
            dir.clone()
        }
        None => std::env::temp_dir().join(format!("commons-demo-{}", now_ms())),
    };
    let keep_running =
        args.keep_running || (!args.exit && std::io::stdout().is_terminal() && std::io::stdin().is_terminal());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(demo(dir, args.requests, keep_running, args.unconfined))
}

/// Progress, one line per step.
struct Steps {
    n: usize,
}

impl Steps {
    const TOTAL: usize = 12;

    fn next(&mut self, what: &str) {
        self.n += 1;
        eprintln!("[{}/{}] {what}", self.n, Steps::TOTAL);
    }
}

async fn demo(dir: PathBuf, requests: u32, keep_running: bool, unconfined: bool) -> anyhow::Result<()> {
    let mut steps = Steps { n: 0 };
    steps.next(&format!("starting the platform in {}", dir.display()));
    let location = Location::new(Some(dir.clone()), None);
    let store = Store::open(&location)?;
    let custodian = hex::encode(store.ledger().config().signer);
    let mut settings = Settings { unconfined, ..Settings::default() };
    // The usual ports if they are free, else any.
    for addr in [&mut settings.listen, &mut settings.control, &mut settings.internal] {
        if std::net::TcpListener::bind(*addr).is_err() {
            addr.set_port(0);
        }
    }
    settings.flush = Duration::from_millis(500);
    settings.health_checks = Duration::from_millis(500);
    let platform = Platform::start(settings, store, &dir).await?;
    let (gateway, domain) = (platform.listen, platform.domain.clone());
    let result = run_demo(&platform, &dir, &custodian, requests, &mut steps).await;
    if let Err(e) = &result {
        eprintln!("the demo failed: {e:#}");
    }
    if result.is_ok() && keep_running {
        eprintln!();
        eprintln!("The platform keeps running:");
        eprintln!(
            "  gateway   http://{gateway}  (sites: http://notes.{domain}:{p}, http://search.{domain}:{p})",
            p = gateway.port()
        );
        eprintln!(
            "  login     http://{domain}:{}/login  (alice's password is in {}/passwords.txt)",
            gateway.port(),
            dir.display()
        );
        eprintln!("  internal  http://{}", platform.internal);
        eprintln!("  metrics   https://{}/metrics", platform.control);
        eprintln!(
            "  data      {}  (commons --data {} ledger balances | history | usage …)",
            dir.display(),
            dir.display()
        );
        eprintln!("Stop with Ctrl-C.");
        crate::stop_signal().await?;
    }
    eprintln!("stopping the apps and the platform");
    platform.shutdown().await?;
    result
}

async fn run_demo(
    platform: &Platform,
    dir: &std::path::Path,
    custodian: &str,
    requests: u32,
    steps: &mut Steps,
) -> anyhow::Result<()> {
    let store = platform.store.clone();
    let period = Period::from_days_since_epoch((now_ms() / 86_400_000) as i64);

    steps.next("two cloud providers register a node each: pat-1 (pat, eu-west), pia-1 (pia, us-east)");
    store
        .call(|store| -> anyhow::Result<()> {
            store.put_node(&NodeRecord {
                id: "pat-1".into(),
                provider: "pat".into(),
                location: "eu-west".into(),
                capacity_mb: 4096,
                remote: false,
            })?;
            store.put_node(&NodeRecord {
                id: "pia-1".into(),
                provider: "pia".into(),
                location: "us-east".into(),
                capacity_mb: 4096,
                remote: false,
            })?;
            Ok(())
        })
        .await?;

    steps.next("operators deploy the example apps: search (sam, on pat-1) and notes (olga, on pat-1 and pia-1)");
    let apps = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/apps");
    let apps = if apps.exists() { apps } else { PathBuf::from("examples/apps") };
    let notes_site = DeploymentRecord {
        site: "notes".into(),
        app_dir: apps.join("notes").display().to_string(),
        nodes: vec!["pat-1".into(), "pia-1".into()],
        operator: "olga".into(),
        provider_share_bps: 3000,
        developer_share_bps: 2500,
        anonymous: false,
        hosts: vec![],
        generation: 0,
        state: commons_core::DeploymentState::Pending,
        detail: String::new(),
    };
    for d in [
        DeploymentRecord {
            site: "search".into(),
            app_dir: apps.join("search").display().to_string(),
            nodes: vec!["pat-1".into()],
            operator: "sam".into(),
            provider_share_bps: 3000,
            developer_share_bps: 2000,
            anonymous: true,
            hosts: vec![],
            generation: 0,
            state: commons_core::DeploymentState::Pending,
            detail: String::new(),
        },
        notes_site.clone(),
    ] {
        let site = d.site.clone();
        platform.deploy(d, DEPLOY_TIMEOUT).await.with_context(|| format!("deploying {site}"))?;
    }
    for (site, node, addr, healthy, _) in platform.instances().await {
        eprintln!("      {site} on {node}: {addr} {}", if healthy { "healthy" } else { "starting" });
    }

    steps.next(&format!(
        "users sign up; alice and bob subscribe through the custodian ({}…), which mints their CommonCents",
        &custodian[..12]
    ));
    let mut passwords = String::new();
    let mut tokens = BTreeMap::new();
    for user in SUBSCRIBERS.iter().map(|(u, _)| *u).chain(FREE_USERS) {
        let password = crate::platform_cmd::random_password();
        let hash = gateway::hash_password(&password).map_err(anyhow::Error::msg)?;
        let token = store
            .call(move |store| -> anyhow::Result<String> {
                store.add_account(user, &hash, now_ms())?;
                Ok(store.add_token(user, crate::now_ms())?)
            })
            .await?;
        tokens.insert(user, token);
        passwords.push_str(&format!("{user} {password}\n"));
    }
    std::fs::write(dir.join("passwords.txt"), &passwords)?;
    for (user, cents) in SUBSCRIBERS {
        let minted = store.call(move |store| record::subscribe(store, period, user, cents)).await?;
        eprintln!("      {user} paid {cents} cents → {} minted into escrow", Micros::new(minted));
    }
    platform.reload().await?;

    steps.next(&format!("{} users make {requests} requests each through the gateway", tokens.len()));
    let gateway = platform.listen;
    let notes = format!("notes.{}", platform.domain);
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    for i in 0..requests {
        for token in tokens.values() {
            let auth = format!("Bearer {token}");
            let headers = [("Authorization", auth.as_str())];
            let (path, method, body) = match i % 5 {
                0 => ("/", "GET", ""),
                1 => ("/", "POST", "a note"),
                2 => ("/search?q=commons", "GET", ""),
                3 => ("/export", "GET", ""),
                _ => ("/?page=2", "GET", ""),
            };
            let answer = http(gateway, method, &notes, path, &headers, body).await?;
            *statuses.entry(answer.status).or_default() += 1;
        }
    }
    let summary: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} × {s}")).collect();
    eprintln!("      answers: {} (402: free users asking for the subscribers' export)", summary.join(", "));
    let login = browser_login(platform, &passwords).await?;
    eprintln!("      {login}");

    steps.next("olga updates notes to 1.1.0 while alice keeps using it: new instances, health, switch, drain, stop");
    let updated = dir.join("apps").join("notes-1.1.0");
    runtime::copy_dir(&apps.join("notes"), &updated)?;
    let manifest = std::fs::read_to_string(updated.join("commons.toml"))?;
    let manifest = manifest
        .replace("version = \"1.0.0\"", "version = \"1.1.0\"")
        .replace("run = \"exec python3 app.py\"", "run = \"APP_VERSION=1.1.0 exec python3 app.py\"");
    std::fs::write(updated.join("commons.toml"), manifest)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, notes, auth) = (stop.clone(), notes.clone(), format!("Bearer {}", tokens["alice"]));
        tokio::spawn(async move {
            let (mut ok, mut failed, mut versions) = (0u32, 0u32, std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http(gateway, "GET", &notes, "/", &[("Authorization", auth.as_str())], "").await {
                    Ok(answer) if answer.status == 200 => {
                        ok += 1;
                        versions.extend(answer.body_version());
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, versions)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let update = DeploymentRecord { app_dir: updated.display().to_string(), ..notes_site };
    platform.deploy(update, DEPLOY_TIMEOUT).await.context("updating notes")?;
    // The old instances drain for a second after the switch, then stop.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, versions) = traffic.await?;
    eprintln!(
        "      {ok} requests during the update, {failed} failed; versions seen: {}",
        versions.into_iter().collect::<Vec<_>>().join(", ")
    );
    if failed > 0 {
        return Err(anyhow::anyhow!("{failed} requests failed during the update of notes"));
    }

    steps.next("the period closes: the agents' resource meters and the gateway's usage are flushed to the store");
    platform.meter_resources().await?;
    platform.flush().await?;
    let (usage, resources) =
        store.call(move |store| anyhow::Ok((store.usage(period)?, store.resource_usage(period)?))).await?;
    for line in crate::platform_cmd::usage_lines(&usage, &resources) {
        eprintln!("      {line}");
    }

    steps.next(&format!("settling {period} from the metered usage onto the ledger"));
    let (settlement, scenario_summary, paid_total) = store
        .call(move |store| -> anyhow::Result<_> {
            let (scenario, set_aside) = platform::metered::scenario(store, period)?;
            for row in &set_aside {
                eprintln!("      set aside: {} — {} — {}", row.row, row.reason, row.outcome);
            }
            store.put_set_aside(period, &set_aside)?;
            let paid: u64 = (0..scenario.activity.n_subscribers())
                .map(|u| scenario.activity.paid(SubscriberIx::from_index(u)).get())
                .sum();
            let (settlement, settled) = record::record_period(store, scenario)?;
            Ok((settlement, statements(&settled), paid))
        })
        .await?;

    steps.next("verifying the ledger offline, from its export");
    let export = dir.join("ledger.jsonl");
    let exporting = export.clone();
    store.call(move |store| ledger_cmd::export(store, &exporting)).await?;
    let (signer, head) = store.call(|store| (store.ledger().config().signer, store.ledger().head())).await;
    ledger_cmd::verify(&export, ledger_cmd::Trusted { signer: Some(signer), head: Some(head) })?;
    let reserve_bps =
        Params::new(period, &ParamsSpec::default()).expect("defaults are valid").reserve_contribution_bps();
    let allocated: Micros = settlement.accounts.values().copied().sum();
    let accounts: Vec<String> = settlement.accounts.keys().map(|a| a.to_string()).collect();
    let balances: u64 = store
        .call(move |store| {
            accounts
                .iter()
                .map(|account| {
                    ledger::AccountName::parse(account).map_or(0, |name| store.ledger().balance(&name).max(0) as u64)
                })
                .sum()
        })
        .await;
    if allocated != settlement.minted || balances != allocated.get() {
        return Err(anyhow::anyhow!(
            "the settled balances ({balances} µCC) do not add up to what was minted ({})",
            settlement.minted.get()
        ));
    }
    eprintln!(
        "      settled balances add up to the µCC minted: {} µCC from {} cents paid, less the {} bps reserve contribution",
        grouped(allocated.get()),
        grouped(paid_total),
        reserve_bps.get()
    );

    steps.next("statements: where each subscriber's fee went");
    for line in scenario_summary {
        println!("{line}");
    }

    steps.next("earnings of every participant this period");
    let width = settlement.accounts.keys().map(|a| a.to_string().len()).max().unwrap_or(10);
    for (account, amount) in &settlement.accounts {
        println!("  {:<width$}  {:>15} µCC", account.to_string(), grouped(amount.get()));
    }
    println!("  {:<width$}  {:>15} µCC", "total", grouped(allocated.get()));

    steps.next("done: the history of deploys is public (commons history)");
    let history = store.call(|store| store.history()).await?;
    for entry in history {
        eprintln!("      #{} {} {}: {}", entry.seq, entry.action, entry.site, entry.detail);
    }
    Ok(())
}

/// Each subscriber's fee, to the µCC: level 1 (the general fund, then each
/// site they used and the services it called for them), then where it
/// ends after every level, settled alone. (The period's accounts settle
/// all fees together, so their totals may differ from the sum of these by
/// the rounding of shared splits: a few µCC.)
fn statements(scenario: &scenario::Scenario) -> Vec<String> {
    let (params, registry, activity) = (&scenario.params, &scenario.registry, &scenario.activity);
    let mut lines = Vec::new();
    for u in 0..activity.n_subscribers() {
        let u = SubscriberIx::from_index(u);
        let allocation = allocate_subscriber(params, activity, u);
        lines.push(format!(
            "  {} paid {} cents → {} µCC in escrow:",
            activity.user(u),
            activity.paid(u).get(),
            grouped(activity.escrow(u).get())
        ));
        lines.push(format!(
            "    {:>12} µCC  general fund ({} bps)",
            grouped(allocation.general_fund.get()),
            params.general_fund_bps().get()
        ));
        for (site, amount) in &allocation.received {
            let site = registry.site(*site);
            lines.push(format!(
                "    {:>12} µCC  site {} (then {} bps to its providers, {} bps of the rest to project {} and its dependencies, the rest to operator {})",
                grouped(amount.get()),
                site.id,
                site.provider_share_bps.get(),
                site.developer_share_bps.get(),
                registry.project(site.project).id,
                site.operator
            ));
        }
        // Every level, for this fee alone: where each µCC of it ends.
        let alone = settlement::settle(params, registry, &activity.only(u), &settlement::ProjectAccount);
        let ends: Vec<String> =
            alone.accounts.iter().map(|(account, amount)| format!("{account} {}", grouped(amount.get()))).collect();
        lines.push(format!("    where it ends, to the µCC (this fee settled alone): {}", ends.join(", ")));
    }
    lines
}

/// A browser's login: the site redirects to the platform's login page,
/// the password is checked there, and the session is handed to the site.
async fn browser_login(platform: &Platform, passwords: &str) -> anyhow::Result<String> {
    let (gateway, port) = (platform.listen, platform.listen.port());
    let site = format!("notes.{}:{port}", platform.domain);
    let platform_host = format!("{}:{port}", platform.domain);
    let password = passwords.lines().find_map(|l| l.strip_prefix("carol ")).context("carol's password")?;
    let first = http(gateway, "GET", &site, "/", &[("Accept", "text/html")], "").await?;
    let next = format!("http://{site}/");
    // The site's host gives the browser a state first: a handoff code is
    // redeemed only in the browser holding it.
    let start = http(gateway, "GET", &site, "/.commons/login?next=%2F", &[("Accept", "text/html")], "").await?;
    let state_cookie = format!("commons_state={}", start.set_cookie("commons_state").context("a state cookie")?);
    let to_login = start.header("location").unwrap_or_default();
    let state = to_login.split("&state=").nth(1).context("the login page's state")?.to_owned();
    // The form's token, bound to its cookie: a login is only ever posted
    // from the platform's own form.
    let page = http(gateway, "GET", &platform_host, "/login", &[("Accept", "text/html")], "").await?;
    let bound = format!("commons_login={}", page.set_cookie("commons_login").context("the login form's cookie")?);
    let token = page.body.split("name=\"csrf\" value=\"").nth(1).and_then(|t| t.split('"').next());
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("user", "carol"),
            ("password", password),
            ("next", next.as_str()),
            ("state", state.as_str()),
            ("csrf", token.context("the login form's token")?),
        ])
        .finish();
    let login = http(
        gateway,
        "POST",
        &platform_host,
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &bound)],
        &form,
    )
    .await?;
    let handoff = login.header("location").unwrap_or_default();
    let path = handoff.strip_prefix(&format!("http://{site}")).context("the login hands off to the site")?;
    let handed = http(gateway, "GET", &site, path, &[("Cookie", &state_cookie)], "").await?;
    let cookie = handed.set_cookie("commons_site").context("a site session")?;
    let page = http(gateway, "GET", &site, "/", &[("Cookie", &format!("commons_site={cookie}"))], "").await?;
    Ok(format!(
        "carol in a browser: {} to the login page, {} after her password, {} with the handed-off session",
        first.status, login.status, page.status
    ))
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    /// The `"version"` a notes page reports.
    fn body_version(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        Some(value.get("version")?.as_str()?.to_owned())
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next()?.split_once('='))
            .find_map(|(k, v)| (k == name).then(|| v.to_owned()))
    }
}

/// One request on its own connection, as a client would send it.
async fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<Answer> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    Ok(Answer { status, headers, body: body.to_owned() })
}
