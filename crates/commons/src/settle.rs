//! `commons settle`: settle a period — from a scenario file, or from what the
//! platform recorded — and print the allocations.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use commons_core::{Micros, Period};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use settlement::{ProjectAccount, Settlement, settle};

use store::Store;

use platform::record;

use crate::{BadInput, StoreArgs};

/// Inputs smaller than this load too fast for a progress bar to help.
const PROGRESS_BAR_MIN_BYTES: u64 = 16 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// A scenario: a TOML file, or a directory of CSV files (see README)
    #[arg(long, value_name = "PATH", required_unless_present = "period", conflicts_with = "period")]
    scenario: Option<PathBuf>,
    /// Settle this period (YYYY-MM) from what the platform recorded: the
    /// sites and projects in the store, the subscriptions sold and the
    /// usage the gateway metered
    #[arg(long, value_name = "YYYY-MM")]
    period: Option<String>,
    /// Print `{"accounts": {...}, "total": N}` with amounts in µCC
    #[arg(long)]
    json: bool,
    /// Record the period on the ledger (payments and mints at NAV, then
    /// every allocation), in the store given by --data or --database
    #[arg(long)]
    ledger: bool,
    /// Test only: most transfers per block while recording on the ledger
    #[arg(long, hide = true, value_name = "N", default_value_t = record::BATCH_TRANSFERS, requires = "ledger")]
    test_batch_transfers: usize,
    /// Test only: right after the K-th block this run appends, say so on
    /// stderr and wait to be killed (the crash tests kill it there)
    #[arg(long, hide = true, value_name = "K", requires = "ledger")]
    test_pause_after_blocks: Option<u64>,
}

pub fn run(args: Args, store_args: &StoreArgs) -> anyhow::Result<()> {
    // From the store, the rows it could not use are reported (None: a
    // scenario file, whose every row must be valid).
    let (scenario, set_aside, mut store) = match (&args.scenario, &args.period) {
        (Some(path), _) => (load(path)?, None, None),
        (None, Some(period)) => {
            let period = Period::parse(period).map_err(|e| BadInput(format!("--period: {e}")))?;
            let mut store = Store::open(&store_args.location())?;
            let (scenario, set_aside) = platform::metered::scenario(&mut store, period)?;
            (scenario, Some(set_aside), Some(store))
        }
        (None, None) => unreachable!("clap requires --scenario or --period"),
    };
    for row in set_aside.iter().flatten() {
        eprintln!("warning: set aside: {} — {} — {}", row.row, row.reason, row.outcome);
    }
    let summary = Summary {
        period: scenario.params.period(),
        n_subscribers: scenario.activity.n_subscribers(),
        n_usage_rows: scenario.activity.n_usage_rows(),
        n_sites: scenario.registry.sites().len(),
        n_projects: scenario.registry.projects().len(),
    };
    let settlement = if args.ledger {
        let mut store = match store.take() {
            Some(store) => store,
            None => Store::open(&store_args.location())?,
        };
        if !(1..=ledger::MAX_TRANSFERS_PER_BLOCK).contains(&args.test_batch_transfers) {
            return Err(BadInput(format!(
                "--test-batch-transfers must be between 1 and {}",
                ledger::MAX_TRANSFERS_PER_BLOCK
            ))
            .into());
        }
        let mut appended = 0;
        let mut after_block = |height: u64| {
            appended += 1;
            if args.test_pause_after_blocks == Some(appended) {
                pause_for_the_crash_test(height);
            }
        };
        // Kept with the period, the settlement on the ledger being the one
        // that pays (a rerun records the same).
        if let Some(set_aside) = &set_aside {
            store.put_set_aside(summary.period, set_aside)?;
        }
        let recording = record::Recording {
            batch_transfers: args.test_batch_transfers,
            contract: &ProjectAccount,
            after_block: &mut after_block,
        };
        let (settlement, _) = record::record_period_with(&mut store, scenario, recording)?;
        for site in platform::metered::forget_settled_removed_sites(&mut store)? {
            eprintln!("removed site {site} forgotten: every period it was used in is settled");
        }
        let ledger = store.ledger();
        eprintln!(
            "recorded period {} on the ledger at {}: height {}, {} transfers, NAV {} cents per CC",
            summary.period,
            store.location().describe(),
            ledger.height(),
            ledger.n_transfers(),
            ledger.nav().cents_per_cc()
        );
        settlement
    } else {
        settle(&scenario.params, &scenario.registry, &scenario.activity, &ProjectAccount)
    };
    for failure in &settlement.contract_failures {
        eprintln!("warning: project {}: {}; {} stays in its account", failure.project, failure.error, failure.amount);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json(&settlement, set_aside.as_deref())).context("writing to stdout")?;
    } else {
        write_table(&mut out, &summary, &settlement, set_aside.as_deref().unwrap_or_default())
            .context("writing to stdout")?;
    }
    Ok(())
}

/// Waits to be killed, having said on stderr that block `height` is
/// durable: the crash tests SIGKILL the process here, the exact state a
/// crash between two appends leaves. Nothing else is done or flushed.
fn pause_for_the_crash_test(height: u64) -> ! {
    eprintln!("paused after block {height}");
    loop {
        std::thread::park();
    }
}

/// Reads a scenario, with a progress bar for big ones.
fn load(path: &std::path::Path) -> anyhow::Result<scenario::Scenario> {
    let total_bytes = scenario::input_bytes(path);
    let progress = if total_bytes >= PROGRESS_BAR_MIN_BYTES {
        ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{msg} {wide_bar} {binary_bytes}/{binary_total_bytes} ({eta})")
            .expect("the template is valid"),
    );
    progress.set_message(format!("reading {}", path.display()));
    let loaded = scenario::load(path, current_period(), &|bytes| progress.inc(bytes));
    progress.finish_and_clear();
    Ok(loaded.map_err(|e| BadInput(e.to_string()))?)
}

/// The current calendar month in UTC, the default period label.
fn current_period() -> Period {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Period::from_days_since_epoch((seconds / 86_400) as i64)
}

fn json(settlement: &Settlement, set_aside: Option<&[platform::metered::SetAside]>) -> String {
    let accounts: serde_json::Map<String, serde_json::Value> =
        settlement.accounts.iter().map(|(account, amount)| (account.to_string(), amount.get().into())).collect();
    let total: Micros = settlement.accounts.values().copied().sum();
    let mut value = serde_json::json!({ "accounts": accounts, "total": total.get() });
    if let Some(set_aside) = set_aside {
        let rows: Vec<serde_json::Value> = set_aside
            .iter()
            .map(|r| serde_json::json!({ "row": r.row, "reason": r.reason, "outcome": r.outcome }))
            .collect();
        value["set_aside"] = rows.into();
    }
    serde_json::to_string_pretty(&value).expect("a JSON value serializes")
}

/// What the table's first line says about the period.
struct Summary {
    period: Period,
    n_subscribers: usize,
    n_usage_rows: usize,
    n_sites: usize,
    n_projects: usize,
}

fn write_table(
    out: &mut impl Write,
    summary: &Summary,
    settlement: &Settlement,
    set_aside: &[platform::metered::SetAside],
) -> std::io::Result<()> {
    writeln!(
        out,
        "period {}: {} subscribers, {} usage rows, {} sites, {} projects",
        summary.period, summary.n_subscribers, summary.n_usage_rows, summary.n_sites, summary.n_projects,
    )?;
    writeln!(out)?;
    let width = settlement.accounts.keys().map(|a| a.to_string().len()).max().unwrap_or(0).max("account".len());
    writeln!(out, "{:<width$}  {:>25}  {:>20}", "account", "µCC", "CC")?;
    for (account, amount) in &settlement.accounts {
        writeln!(out, "{:<width$}  {:>25}  {:>20}", account.to_string(), grouped(amount.get()), cc(*amount))?;
    }
    let allocated: Micros = settlement.accounts.values().copied().sum();
    writeln!(out, "{:<width$}  {:>25}  {:>20}", "total", grouped(allocated.get()), cc(allocated))?;
    writeln!(out)?;
    let verdict = if allocated == settlement.minted { "conserved" } else { "NOT CONSERVED" };
    writeln!(
        out,
        "minted {} µCC, allocated {} µCC: {verdict}",
        grouped(settlement.minted.get()),
        grouped(allocated.get())
    )?;
    if !set_aside.is_empty() {
        writeln!(out)?;
        writeln!(out, "{} metered rows set aside:", set_aside.len())?;
        for row in set_aside {
            writeln!(out, "  {} — {} — {}", row.row, row.reason, row.outcome)?;
        }
    }
    Ok(())
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `Micros` as CC with six decimals, without the unit.
pub fn cc(amount: Micros) -> String {
    let shown = amount.to_string();
    shown.trim_end_matches(" CC").to_owned()
}
