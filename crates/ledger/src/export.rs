//! The export format: JSON Lines, one header line, then one line per block
//! (specified completely, with test vectors, in docs/ledger-format.md).
//!
//! ```text
//! {"format":"onecommons-ledger/2","currency":"USD","initial_cents_per_cc":100,"signer":"<hex>"}
//! {"height":1,"prev_hash":"<hex>","merkle_root":"<hex>","timestamp_ms":…,"signer":"<hex>","signature":"<hex>",
//!  "transfers":[{"id":"<32 hex>","kind":"payment","debit":"world","credit":"reserve","amount":1000},…]}
//! ```
//!
//! Every line must be exactly the canonical serialization of what it says
//! (field order as above, no spaces, lowercase hex), so changing any byte of
//! an export is detected: either the line is no longer canonical, or its
//! content no longer hashes, links or verifies. Block 1 links to the
//! header's hash, so its signature covers the header too; an export of a
//! chain begun before that (block 1 linking to zeros) says
//! `onecommons-ledger/1`, and its header is unproven.

use std::fmt::Write as _;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::block::{Block, BlockHeader, CheckedBlock, Hash};
use crate::ledger::{Ledger, LedgerConfig, LedgerError, is_currency_code};
use crate::model::{AccountName, Transfer, TransferId, TransferKind};
use crate::rejection::Rejection;

/// The format's name and version, the header's first field.
pub const FORMAT: &str = "onecommons-ledger/2";

/// The format of a chain begun before header binding: block 1 links to
/// zeros, so nothing signed covers the header.
pub const FORMAT_UNBOUND: &str = "onecommons-ledger/1";

/// The header line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    pub format: String,
    pub currency: String,
    pub initial_cents_per_cc: u64,
    pub signer: String,
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

/// A published head that an export does not end at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadMismatch {
    pub height: u64,
    pub head: Hash,
    pub published: Hash,
    /// The height of the published head, if the export passes it.
    pub published_height: Option<u64>,
}

impl std::fmt::Display for HeadMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the export ends at height {}, hash {}; the published head {} ",
            self.height,
            hex::encode(self.head),
            hex::encode(self.published)
        )?;
        match self.published_height {
            Some(height) => write!(f, "is at height {height}"),
            None => write!(f, "is not in it"),
        }
    }
}

impl std::error::Error for HeadMismatch {}

impl Ledger {
    /// Checks that this chain ends at `published`, a head its publisher
    /// announced, and returns that head's height: an export cut short, or
    /// one that goes on past it, does not.
    pub fn check_head(&self, published: &Hash) -> Result<u64, HeadMismatch> {
        if self.height() > 0 && self.head() == *published {
            return Ok(self.height());
        }
        Err(HeadMismatch {
            height: self.height(),
            head: self.head(),
            published: *published,
            published_height: (1..=self.height()).find(|&h| self.block_hash(h) == Some(*published)),
        })
    }
}

/// Writes the header line of `ledger`'s export.
pub fn write_header_line(ledger: &Ledger, out: &mut impl Write) -> std::io::Result<()> {
    let config = ledger.config();
    let unbound = ledger.height() > 0 && !ledger.header_bound();
    let header = ExportHeader {
        format: if unbound { FORMAT_UNBOUND } else { FORMAT }.to_owned(),
        currency: config.currency.clone(),
        initial_cents_per_cc: config.initial_cents_per_cc,
        signer: hex::encode(config.signer),
    };
    serde_json::to_writer(&mut *out, &header)?;
    out.write_all(b"\n")
}

pub fn write_block_line(block: &Block, out: &mut impl Write) -> std::io::Result<()> {
    let mut line = String::with_capacity(400 + block.transfers.len() * 140);
    let h = &block.header;
    let _ = write!(
        line,
        "{{\"height\":{},\"prev_hash\":\"{}\",\"merkle_root\":\"{}\",\"timestamp_ms\":{},\"signer\":\"{}\",\"signature\":\"{}\",\"transfers\":[",
        h.height,
        hex::encode(h.prev_hash),
        hex::encode(h.merkle_root),
        h.timestamp_ms,
        hex::encode(h.signer),
        hex::encode(block.signature),
    );
    for (i, t) in block.transfers.iter().enumerate() {
        let _ = write!(
            line,
            "{}{{\"id\":\"{}\",\"kind\":\"{}\",\"debit\":\"{}\",\"credit\":\"{}\",\"amount\":{}}}",
            if i == 0 { "" } else { "," },
            t.id,
            t.kind.as_str(),
            t.debit,
            t.credit,
            t.amount
        );
    }
    line.push_str("]}\n");
    out.write_all(line.as_bytes())
}

/// Reads an export and applies every block to a fresh ledger, which it
/// returns. The signer is `trusted_signer` when given (and the header must
/// name it), else the header's own: then only self-consistency is proven.
/// Stops at the first failure with its line, height and reason.
pub fn read_export(input: impl BufRead + Send, trusted_signer: Option<[u8; 32]>) -> Result<Ledger, ExportError> {
    let mut lines = input.split(b'\n');
    let malformed = |line: u64, reason: String| ExportError::Malformed { line, reason };
    let first = lines.next().ok_or_else(|| malformed(1, "the export is empty".into()))??;
    let header: ExportHeader =
        serde_json::from_slice(&first).map_err(|e| malformed(1, format!("not a header: {e}")))?;
    let bound = match header.format.as_str() {
        FORMAT => true,
        FORMAT_UNBOUND => false,
        other => return Err(malformed(1, format!("format {other:?} is not {FORMAT:?} (or {FORMAT_UNBOUND:?})"))),
    };
    if !is_currency_code(&header.currency) {
        return Err(malformed(1, format!("currency {:?} is not three capital letters", header.currency)));
    }
    let header_signer = hex32(&header.signer).ok_or_else(|| malformed(1, "signer is not 32 bytes of hex".into()))?;
    if let Some(trusted) = trusted_signer
        && trusted != header_signer
    {
        let reason =
            format!("the export names signer {}, not the trusted signer {}", header.signer, hex::encode(trusted));
        return Err(malformed(1, reason));
    }
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
        signer: header_signer,
    });
    // Two stages on two threads: one reads each line and checks the block
    // on its own (parsing, canonical form, Merkle root, signature), the
    // other applies blocks in order. The first failure in file order is the
    // one reported.
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<(u64, Result<CheckedBlock, Stage>)>(PIPELINE_BLOCKS);
        scope.spawn(move || {
            for (number, line) in (2u64..).zip(lines) {
                let checked = match line {
                    Err(e) => Err(Stage::Io(e)),
                    Ok(line) if line.is_empty() => continue,
                    Ok(line) => read_block_line(&line)
                        .map_err(Stage::Malformed)
                        .and_then(|b| b.check().map_err(Stage::Rejected)),
                };
                let stop = checked.is_err();
                if sender.send((number, checked)).is_err() || stop {
                    return;
                }
            }
        });
        for (number, checked) in receiver {
            match checked {
                Ok(block) => {
                    ledger
                        .apply(&block)
                        .map_err(|error| ExportError::Rejected { line: number, error: Box::new(error) })?;
                    if ledger.height() == 1 && ledger.header_bound() != bound {
                        let reason = match bound {
                            true => format!("format {FORMAT} has block 1 link to the header's hash, not to zeros"),
                            false => format!(
                                "format {FORMAT_UNBOUND} has block 1 link to zeros; this one links to the header's hash"
                            ),
                        };
                        return Err(malformed(number, reason));
                    }
                }
                Err(Stage::Io(e)) => return Err(ExportError::Io(e)),
                Err(Stage::Malformed(reason)) => return Err(malformed(number, reason)),
                Err(Stage::Rejected(rejection)) => {
                    let error = LedgerError { height: ledger.height() + 1, rejection };
                    return Err(ExportError::Rejected { line: number, error: Box::new(error) });
                }
            }
        }
        Ok(ledger)
    })
}

/// Blocks checked ahead of the one being applied.
const PIPELINE_BLOCKS: usize = 16;

/// Why the checking stage stopped at a line.
enum Stage {
    Io(std::io::Error),
    Malformed(String),
    Rejected(Rejection),
}

/// Parses a block line (without its newline) in exactly its canonical
/// form: field order, punctuation, lowercase hex and numbers without leading
/// zeros are fixed, and account names need no escapes, so any other byte
/// sequence is refused here or changes what the block says. Checks only the
/// shape, like [`Block::decode`].
pub fn read_block_line(line: &[u8]) -> Result<Block, String> {
    let mut p = Strict { bytes: line, at: 0 };
    p.literal(b"{\"height\":")?;
    let height = p.number()?;
    p.literal(b",\"prev_hash\":")?;
    let prev_hash = p.hex::<32>()?;
    p.literal(b",\"merkle_root\":")?;
    let merkle_root = p.hex::<32>()?;
    p.literal(b",\"timestamp_ms\":")?;
    let timestamp_ms = p.number()?;
    p.literal(b",\"signer\":")?;
    let signer = p.hex::<32>()?;
    p.literal(b",\"signature\":")?;
    let signature = p.hex::<64>()?;
    p.literal(b",\"transfers\":[")?;
    let mut transfers = Vec::new();
    while p.peek() != Some(b']') {
        if !transfers.is_empty() {
            p.literal(b",")?;
        }
        let i = transfers.len();
        let fail = |what: String| format!("transfer {i}: {what}");
        p.literal(b"{\"id\":")?;
        let id = u128::from_be_bytes(p.hex::<16>()?);
        p.literal(b",\"kind\":")?;
        let kind = p.string()?;
        let kind = TransferKind::parse(kind).ok_or_else(|| fail(format!("unknown kind {kind:?}")))?;
        p.literal(b",\"debit\":")?;
        let debit = AccountName::parse(p.string()?).map_err(|e| fail(e.to_string()))?;
        p.literal(b",\"credit\":")?;
        let credit = AccountName::parse(p.string()?).map_err(|e| fail(e.to_string()))?;
        p.literal(b",\"amount\":")?;
        let amount = p.number()?;
        p.literal(b"}")?;
        transfers.push(Transfer { id: TransferId(id), kind, debit, credit, amount });
    }
    p.literal(b"]}")?;
    if p.at != line.len() {
        return Err(format!("unexpected bytes after the block at byte {}", p.at));
    }
    Ok(Block {
        header: BlockHeader {
            height,
            prev_hash,
            merkle_root,
            timestamp_ms,
            n_transfers: u32::try_from(transfers.len()).map_err(|_| "too many transfers".to_owned())?,
            signer,
        },
        signature,
        transfers,
    })
}

/// A cursor that accepts only the canonical spelling of each value.
struct Strict<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Strict<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn literal(&mut self, expected: &[u8]) -> Result<(), String> {
        if self.bytes[self.at..].starts_with(expected) {
            self.at += expected.len();
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", String::from_utf8_lossy(expected), self.at))
        }
    }

    /// A `u64` in decimal, without sign, exponent or leading zeros.
    fn number(&mut self) -> Result<u64, String> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        let canonical = !digits.is_empty() && (digits[0] != b'0' || digits.len() == 1);
        let value = std::str::from_utf8(digits).ok().filter(|_| canonical).and_then(|d| d.parse().ok());
        value.ok_or_else(|| format!("expected a whole number at byte {start}"))
    }

    /// `"…"` with no escapes and no control characters.
    fn string(&mut self) -> Result<&'a str, String> {
        let start = self.at;
        self.literal(b"\"")?;
        let rest = &self.bytes[self.at..];
        let end = rest.iter().position(|&b| b == b'"').ok_or_else(|| format!("unterminated string at byte {start}"))?;
        let raw = &rest[..end];
        if raw.iter().any(|&b| b == b'\\' || b < 0x20) {
            return Err(format!("a string with escapes or control characters at byte {start}"));
        }
        self.at += end + 1;
        std::str::from_utf8(raw).map_err(|_| format!("a string that is not UTF-8 at byte {start}"))
    }

    /// `"…"` holding exactly `2 * N` lowercase hex digits.
    fn hex<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let start = self.at;
        let text = self.string()?.as_bytes();
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        if text.len() != 2 * N {
            return Err(format!("expected {} hex digits at byte {start}", 2 * N));
        }
        let mut out = [0u8; N];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *byte = nibble(pair[0])
                .zip(nibble(pair[1]))
                .map(|(high, low)| (high << 4) | low)
                .ok_or_else(|| format!("expected lowercase hex digits at byte {start}"))?;
        }
        Ok(out)
    }
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}
