//! `commons ledger …`: read the ledger, export it, publish its head, verify
//! an export. Verifying says what it proved and what it could not: without
//! a trusted signer, only that the export is consistent with itself.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use ledger::{
    AccountKind, AccountName, Asset, Block, Hash, read_export, redemption, write_block_line, write_header_line,
};
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
    /// Write the whole chain to a file (JSON Lines, see docs/ledger-format.md)
    Export {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// What a publisher publishes for verifiers: the head's height and
    /// hash, and the signer's public key
    Head {
        /// Print `{"height": N, "head": "<hex>", "signer": "<hex>"}`
        #[arg(long)]
        json: bool,
    },
    /// Check an export offline: hashes, Merkle roots, signatures, double
    /// entry, balances, backing and settlement conservation; with
    /// `--signer` against a trusted key, with `--head` against a published head
    Verify {
        file: PathBuf,
        /// The trusted signer's public key (64 hex digits, as `ledger head`
        /// prints it). Without it, the export's own signer is used and only
        /// self-consistency is proven
        #[arg(long, value_name = "HEX", alias = "key", conflicts_with = "signer_file")]
        signer: Option<String>,
        /// A file holding the trusted signer's public key (64 hex digits)
        #[arg(long, value_name = "FILE")]
        signer_file: Option<PathBuf>,
        /// The published head (64 hex digits): the export must end there
        #[arg(long, value_name = "HASH")]
        head: Option<String>,
    },
}

/// What a verifier trusts beyond the export: its signer and its head.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trusted {
    pub signer: Option<[u8; 32]>,
    pub head: Option<Hash>,
}

pub fn run(command: Command, store_args: &StoreArgs) -> anyhow::Result<()> {
    match command {
        Command::Verify { file, signer, signer_file, head } => {
            let signer = match (signer, signer_file) {
                (Some(hex), _) => Some(hex32(&hex).ok_or_else(|| {
                    BadInput(format!("--signer {hex:?} is not a public key: expected 64 hex digits"))
                })?),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| BadInput(format!("--signer-file {}: {e}", path.display())))?;
                    Some(hex32(text.trim()).ok_or_else(|| {
                        BadInput(format!("--signer-file {}: not a public key: expected 64 hex digits", path.display()))
                    })?)
                }
                (None, None) => None,
            };
            let head =
                match head {
                    Some(hex) => Some(hex32(&hex).ok_or_else(|| {
                        BadInput(format!("--head {hex:?} is not a block hash: expected 64 hex digits"))
                    })?),
                    None => None,
                };
            verify(&file, Trusted { signer, head })
        }
        Command::Head { json } => {
            let store = Store::open(&store_args.location())?;
            let ledger = store.ledger();
            let (height, head, signer) =
                (ledger.height(), hex::encode(ledger.head()), hex::encode(ledger.config().signer));
            if json {
                println!("{}", serde_json::json!({ "height": height, "head": head, "signer": signer }));
            } else {
                println!("height {height}\nhead {head}\nsigner {signer}");
            }
            Ok(())
        }
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
    write_header_line(store.ledger(), &mut writer)?;
    let blocks = store.blocks()?;
    for block in &blocks {
        write_block_line(block, &mut writer)?;
    }
    writer.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, out)?;
    Ok(blocks.len())
}

/// 32 bytes as 64 lowercase or uppercase hex digits.
fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Checks an export offline and prints what was proven and what was not.
/// A self-consistent export verifies (exit 0) even without a trusted signer
/// or head, but says so on stderr and in its output.
pub fn verify(file: &std::path::Path, trusted: Trusted) -> anyhow::Result<()> {
    let input = File::open(file).map_err(|e| BadInput(format!("{}: {e}", file.display())))?;
    let does_not_verify = |reason: String| BadInput(format!("{} does not verify{reason}", file.display()));
    let ledger = read_export(BufReader::new(input), trusted.signer).map_err(|e| {
        let at = e.height().map(|h| format!(" at block {h}")).unwrap_or_default();
        does_not_verify(format!("{at}: {e}"))
    })?;
    let sums = ledger.asset_sums();
    if sums.iter().any(|(_, sum)| *sum != 0) {
        return Err(does_not_verify(format!(": balances do not sum to zero per asset: {sums:?}")).into());
    }
    let head_line = match trusted.head {
        Some(published) => {
            let height = ledger.check_head(&published).map_err(|e| does_not_verify(format!(": {e}")))?;
            format!("head: {}, the published head, at height {height}", hex::encode(published))
        }
        None => {
            eprintln!("warning: no published head given (--head): an export cut short after any block verifies too");
            format!(
                "head: NOT CHECKED against a published one: the export ends at height {}, hash {}",
                ledger.height(),
                hex::encode(ledger.head())
            )
        }
    };
    let config = ledger.config();
    let signer = hex::encode(config.signer);
    let signer_line = match trusted.signer {
        Some(_) => format!("signer: {signer}, trusted (given)"),
        None => {
            eprintln!(
                "warning: no trusted signer given (--signer): only self-consistency was proven; \
                 the export names its own signer {signer}, and anyone can sign an export"
            );
            format!("signer: {signer}, NOT TRUSTED: named by the export itself, so only self-consistency was proven")
        }
    };
    let header = format!("currency {}, initial price {} cents per CC", config.currency, config.initial_cents_per_cc);
    let header_line = if ledger.header_bound() {
        format!("header: {header}: bound by block 1's signature")
    } else if ledger.height() == 0 {
        format!("header: {header}: NOT BOUND: the export has no block")
    } else {
        format!("header: {header}: NOT BOUND: a chain begun before header binding (block 1 links to zeros)")
    };
    let nav = ledger.nav();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} verifies: {} blocks, {} transfers; head {} at height {}",
        file.display(),
        ledger.height(),
        ledger.n_transfers(),
        hex::encode(ledger.head()),
        ledger.height()
    )?;
    writeln!(out, "  {signer_line}")?;
    writeln!(out, "  {head_line}")?;
    writeln!(out, "  {header_line}")?;
    writeln!(out, "  chain: every block's height, hash link, Merkle root and signature by the signer above")?;
    writeln!(
        out,
        "  balances: double entry holds for CC and {}; no forbidden negative balance; fully backed after every block: reserve {} cents for {} µCC (NAV {} cents per CC)",
        config.currency,
        grouped(nav.reserve_cents),
        grouped(nav.supply_micros),
        nav.cents_per_cc(),
    )?;
    writeln!(
        out,
        "  settlement: every escrow and pool a block paid out of ended it empty; periods settled once: {}",
        ledger.settled_periods().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(out, "  not proven: that the transfers are the right ones (no settlement is recomputed from usage here)")?;
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
