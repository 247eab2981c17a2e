//! `commons ledger …`: read the ledger, export it, verify an export.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use ledger::{AccountKind, AccountName, Asset, Block, read_export, redemption, write_block_line, write_header_line};
use store::Store;

use crate::settle::{cc, grouped};
use crate::{BadInput, StoreArgs};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Every CC account's balance, with the reserve, supply and NAV
    Balances {
        /// Print `{"accounts": {...}, "total": N, "custody": {...}}`, CC in µCC
        #[arg(long)]
        json: bool,
    },
    /// One block: its header and transfers
    Show {
        height: u64,
        /// Print the block as its export line
        #[arg(long)]
        json: bool,
    },
    /// NAV, reserve and supply at a height (default: the head)
    Nav {
        #[arg(long)]
        height: Option<u64>,
    },
    /// Hand CC back to the custodian and be paid its value at NAV
    Redeem {
        /// The holder account, e.g. provider:pat
        account: String,
        /// How much, in µCC
        micros: u64,
        /// A name for this redemption, so that a retry is not paid twice
        #[arg(long)]
        id: String,
    },
    /// Write the whole chain to a file (JSON Lines, see README)
    Export {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check an export offline: hashes, Merkle roots, signatures, double
    /// entry, balances, backing and settlement conservation
    Verify {
        file: PathBuf,
        /// The signer's public key (64 hex digits); default: the export's own
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
    },
}

pub fn run(command: Command, store_args: &StoreArgs) -> anyhow::Result<()> {
    match command {
        Command::Verify { file, key } => verify(&file, key.as_deref()),
        Command::Balances { json } => balances(&Store::open(&store_args.location())?, json),
        Command::Show { height, json } => {
            let mut store = Store::open(&store_args.location())?;
            let block = store.block(height)?.ok_or_else(|| {
                BadInput(format!("there is no block {height}; the ledger's height is {}", store.ledger().height()))
            })?;
            show(&block, json)
        }
        Command::Nav { height } => {
            let store = Store::open(&store_args.location())?;
            let ledger = store.ledger();
            let height = height.unwrap_or(ledger.height());
            let nav = ledger.nav_at(height).ok_or_else(|| {
                BadInput(format!("there is no block {height}; the ledger's height is {}", ledger.height()))
            })?;
            println!(
                "height {height}: reserve {} cents, supply {} µCC, NAV {} cents per CC",
                grouped(nav.reserve_cents),
                grouped(nav.supply_micros),
                nav.cents_per_cc()
            );
            Ok(())
        }
        Command::Redeem { account, micros, id } => {
            let mut store = Store::open(&store_args.location())?;
            let holder = AccountName::parse(&account).map_err(|e| BadInput(e.to_string()))?;
            if holder.kind() != AccountKind::Holder {
                return Err(BadInput(format!("{holder} is not a holder account: only holders redeem")).into());
            }
            let balance = store.ledger().balance(&holder);
            if i128::from(micros) > balance || micros == 0 {
                return Err(BadInput(format!("{holder} holds {balance} µCC; cannot redeem {micros}")).into());
            }
            let (batch, cents) = redemption(&store.ledger().nav(), &holder, micros, format!("redeem/{id}").as_bytes())
                .map_err(|e| BadInput(e.to_string()))?;
            match store.append(batch, crate::now_ms())? {
                Some(block) => println!(
                    "redeemed {} µCC from {holder} for {} cents in block {}; NAV {} cents per CC",
                    grouped(micros),
                    grouped(cents),
                    block.header.height,
                    store.ledger().nav().cents_per_cc()
                ),
                None => println!("redemption {id:?} was recorded before; nothing paid twice"),
            }
            Ok(())
        }
        Command::Export { out } => {
            let mut store = Store::open(&store_args.location())?;
            let n = export(&mut store, &out)?;
            eprintln!("exported {n} blocks to {}", out.display());
            Ok(())
        }
    }
}

/// Writes the whole chain to `out` (atomically: a partial file is renamed
/// once complete); returns the number of blocks.
pub fn export(store: &mut Store, out: &std::path::Path) -> anyhow::Result<usize> {
    let partial = out.with_extension("partial");
    let mut writer = BufWriter::new(File::create(&partial).with_context(|| format!("creating {}", partial.display()))?);
    write_header_line(store.ledger().config(), &mut writer)?;
    let blocks = store.blocks()?;
    for block in &blocks {
        write_block_line(block, &mut writer)?;
    }
    writer.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, out)?;
    Ok(blocks.len())
}

/// Checks an export offline and prints what holds.
pub fn verify(file: &std::path::Path, key: Option<&str>) -> anyhow::Result<()> {
    let key = match key {
        None => None,
        Some(hex) => Some(
            hex::decode(hex)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| BadInput(format!("--key {hex:?} is not 64 hex digits")))?,
        ),
    };
    let input = File::open(file).map_err(|e| BadInput(format!("{}: {e}", file.display())))?;
    let ledger = read_export(BufReader::new(input), key).map_err(|e| {
        let at = e.height().map(|h| format!(" at block {h}")).unwrap_or_default();
        BadInput(format!("{} does not verify{at}: {e}", file.display()))
    })?;
    let sums = ledger.asset_sums();
    if sums.iter().any(|(_, sum)| *sum != 0) {
        return Err(BadInput(format!(
            "{} does not verify: balances do not sum to zero per asset: {sums:?}",
            file.display()
        ))
        .into());
    }
    let nav = ledger.nav();
    println!(
        "{} verifies: {} blocks, {} transfers, signed by {}; head {}",
        file.display(),
        ledger.height(),
        ledger.n_transfers(),
        hex::encode(ledger.config().signer),
        hex::encode(ledger.head())
    );
    println!(
        "double entry holds for CC and {}; no forbidden negative balance; fully backed after every block: reserve {} cents for {} µCC (NAV {} cents per CC); periods settled: {}",
        ledger.config().currency,
        grouped(nav.reserve_cents),
        grouped(nav.supply_micros),
        nav.cents_per_cc(),
        ledger.settled_periods().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

fn balances(store: &Store, json: bool) -> anyhow::Result<()> {
    let ledger = store.ledger();
    // The ledger keeps every CC account but issuance within 0..=u64::MAX,
    // and together they hold the supply, a u64 too.
    let micros = |balance: i128| u64::try_from(balance).expect("CC balances and the supply fit in u64");
    let accounts: Vec<(AccountName, u64)> = ledger
        .balances()
        .into_iter()
        .filter(|(account, _)| account.kind().asset() == Asset::Cc && account.kind() != AccountKind::Issuance)
        .map(|(account, balance)| (account, micros(balance)))
        .collect();
    let total = micros(accounts.iter().map(|(_, b)| i128::from(*b)).sum());
    let nav = ledger.nav();
    let mut out = std::io::stdout().lock();
    if json {
        let map: serde_json::Map<String, serde_json::Value> =
            accounts.iter().map(|(a, b)| (a.to_string(), serde_json::Value::from(*b))).collect();
        let value = serde_json::json!({
            "accounts": map,
            "total": total,
            "custody": {
                "height": ledger.height(),
                "currency": ledger.config().currency,
                "reserve_cents": nav.reserve_cents,
                "supply_micros": nav.supply_micros,
                "nav_cents_per_cc": nav.cents_per_cc(),
            }
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let width = accounts.iter().map(|(a, _)| a.as_str().len()).max().unwrap_or(0).max("account".len());
    writeln!(out, "{:<width$}  {:>25}  {:>20}", "account", "µCC", "CC")?;
    for (account, balance) in &accounts {
        let amount = commons_core::Micros::new(*balance);
        writeln!(out, "{:<width$}  {:>25}  {:>20}", account.as_str(), grouped(*balance), cc(amount))?;
    }
    writeln!(out, "{:<width$}  {:>25}  {:>20}", "total", grouped(total), cc(commons_core::Micros::new(total)))?;
    writeln!(out)?;
    writeln!(
        out,
        "height {}: reserve {} cents ({}), supply {} µCC, NAV {} cents per CC",
        ledger.height(),
        grouped(nav.reserve_cents),
        ledger.config().currency,
        grouped(nav.supply_micros),
        nav.cents_per_cc()
    )?;
    Ok(())
}

fn show(block: &Block, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        write_block_line(block, &mut out)?;
        return Ok(());
    }
    let h = &block.header;
    writeln!(out, "block {}", h.height)?;
    writeln!(out, "  hash         {}", hex::encode(block.hash()))?;
    writeln!(out, "  previous     {}", hex::encode(h.prev_hash))?;
    writeln!(out, "  merkle root  {}", hex::encode(h.merkle_root))?;
    writeln!(out, "  timestamp    {} ms", h.timestamp_ms)?;
    writeln!(out, "  signer       {}", hex::encode(h.signer))?;
    writeln!(out, "  signature    {}", hex::encode(block.signature))?;
    writeln!(out, "  transfers    {}", block.transfers.len())?;
    for t in &block.transfers {
        let unit = match t.asset() {
            Asset::Cc => "µCC",
            Asset::Fiat => "cents",
        };
        writeln!(out, "    {} {:<10} {} -> {} {} {unit}", t.id, t.kind.as_str(), t.debit, t.credit, grouped(t.amount))?;
    }
    Ok(())
}
