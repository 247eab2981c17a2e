//! The export format: JSON Lines, one header line, then one line per block.
//!
//! ```text
//! {"format":"onecommons-ledger/1","currency":"USD","initial_cents_per_cc":100,"signer":"<hex>"}
//! {"height":1,"prev_hash":"<hex>","merkle_root":"<hex>","timestamp_ms":…,"signer":"<hex>","signature":"<hex>",
//!  "transfers":[{"id":"<32 hex>","kind":"payment","debit":"world","credit":"reserve","amount":1000},…]}
//! ```
//!
//! Every line must be exactly the canonical serialization of what it says
//! (field order as above, no spaces, lowercase hex), so changing any byte of
//! an export is detected: either the line is no longer canonical, or its
//! content no longer hashes, links or verifies.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::block::{Block, BlockHeader};
use crate::ledger::{Ledger, LedgerConfig, LedgerError};
use crate::model::{AccountName, Transfer, TransferId, TransferKind};

/// The format's name and version, the header's first field.
pub const FORMAT: &str = "onecommons-ledger/1";

/// The header line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    pub format: String,
    pub currency: String,
    pub initial_cents_per_cc: u64,
    pub signer: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockLine {
    height: u64,
    prev_hash: String,
    merkle_root: String,
    timestamp_ms: u64,
    signer: String,
    signature: String,
    transfers: Vec<TransferLine>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferLine {
    id: String,
    kind: String,
    debit: String,
    credit: String,
    amount: u64,
}

/// Why an export does not verify: where, and what.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("line {line}: {error}")]
    Rejected { line: u64, error: Box<LedgerError> },
    #[error("reading the export: {0}")]
    Io(#[from] std::io::Error),
}

impl ExportError {
    /// The height of the failing block, when the failure is in one.
    pub fn height(&self) -> Option<u64> {
        match self {
            ExportError::Rejected { error, .. } => Some(error.height),
            ExportError::Malformed { line, .. } if *line > 1 => Some(line - 1),
            _ => None,
        }
    }
}

pub fn write_header_line(config: &LedgerConfig, out: &mut impl Write) -> std::io::Result<()> {
    let header = ExportHeader {
        format: FORMAT.to_owned(),
        currency: config.currency.clone(),
        initial_cents_per_cc: config.initial_cents_per_cc,
        signer: hex::encode(config.signer),
    };
    serde_json::to_writer(&mut *out, &header)?;
    out.write_all(b"\n")
}

pub fn write_block_line(block: &Block, out: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &block_line(block))?;
    out.write_all(b"\n")
}

fn block_line(block: &Block) -> BlockLine {
    let h = &block.header;
    BlockLine {
        height: h.height,
        prev_hash: hex::encode(h.prev_hash),
        merkle_root: hex::encode(h.merkle_root),
        timestamp_ms: h.timestamp_ms,
        signer: hex::encode(h.signer),
        signature: hex::encode(block.signature),
        transfers: block
            .transfers
            .iter()
            .map(|t| TransferLine {
                id: t.id.to_string(),
                kind: t.kind.as_str().to_owned(),
                debit: t.debit.to_string(),
                credit: t.credit.to_string(),
                amount: t.amount,
            })
            .collect(),
    }
}

/// Reads an export and applies every block to a fresh ledger, which it
/// returns. The signer is `trusted_signer` when given, else the header's.
/// Stops at the first failure with its line, height and reason.
pub fn read_export(input: impl BufRead, trusted_signer: Option<[u8; 32]>) -> Result<Ledger, ExportError> {
    let mut lines = input.split(b'\n');
    let malformed = |line: u64, reason: String| ExportError::Malformed { line, reason };
    let first = lines.next().ok_or_else(|| malformed(1, "the export is empty".into()))??;
    let header: ExportHeader =
        serde_json::from_slice(&first).map_err(|e| malformed(1, format!("not a header: {e}")))?;
    if header.format != FORMAT {
        return Err(malformed(1, format!("format {:?} is not {FORMAT:?}", header.format)));
    }
    let header_signer = hex32(&header.signer).ok_or_else(|| malformed(1, "signer is not 32 bytes of hex".into()))?;
    let canonical_header = {
        let mut out = Vec::new();
        serde_json::to_writer(&mut out, &header).expect("serializes");
        out
    };
    if canonical_header != first {
        return Err(malformed(1, "the header line is not in canonical form".into()));
    }
    let mut ledger = Ledger::new(LedgerConfig {
        currency: header.currency,
        initial_cents_per_cc: header.initial_cents_per_cc,
        signer: trusted_signer.unwrap_or(header_signer),
    });
    for (number, line) in (2..).zip(lines) {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let block = parse_block_line(&line).map_err(|reason| malformed(number, reason))?;
        ledger.apply(&block).map_err(|error| ExportError::Rejected { line: number, error: Box::new(error) })?;
    }
    Ok(ledger)
}

fn parse_block_line(line: &[u8]) -> Result<Block, String> {
    let wire: BlockLine = serde_json::from_slice(line).map_err(|e| format!("not a block: {e}"))?;
    let field = |name: &str, value: &str| hex32(value).ok_or_else(|| format!("{name} is not 32 bytes of hex"));
    let signature: [u8; 64] = hex::decode(&wire.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "signature is not 64 bytes of hex".to_owned())?;
    let mut transfers = Vec::with_capacity(wire.transfers.len());
    for (i, t) in wire.transfers.iter().enumerate() {
        let fail = |what: String| format!("transfer {i}: {what}");
        let id = u128::from_str_radix(&t.id, 16)
            .ok()
            .filter(|_| t.id.len() == 32)
            .ok_or_else(|| fail("id is not 32 hex digits".into()))?;
        let kind = TransferKind::parse(&t.kind).ok_or_else(|| fail(format!("unknown kind {:?}", t.kind)))?;
        let debit = AccountName::parse(&t.debit).map_err(|e| fail(e.to_string()))?;
        let credit = AccountName::parse(&t.credit).map_err(|e| fail(e.to_string()))?;
        transfers.push(Transfer { id: TransferId(id), kind, debit, credit, amount: t.amount });
    }
    let block = Block {
        header: BlockHeader {
            height: wire.height,
            prev_hash: field("prev_hash", &wire.prev_hash)?,
            merkle_root: field("merkle_root", &wire.merkle_root)?,
            timestamp_ms: wire.timestamp_ms,
            n_transfers: u32::try_from(transfers.len()).map_err(|_| "too many transfers".to_owned())?,
            signer: field("signer", &wire.signer)?,
        },
        signature,
        transfers,
    };
    let mut canonical = Vec::with_capacity(line.len());
    serde_json::to_writer(&mut canonical, &block_line(&block)).expect("serializes");
    if canonical != line {
        return Err(format!("block {} is not in canonical form (a byte was changed?)", wire.height));
    }
    Ok(block)
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}
