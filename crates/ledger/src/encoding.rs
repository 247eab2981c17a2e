//! The canonical byte encoding of transfers and block headers, and the
//! Merkle tree over a block's transfers. Fixed-width little-endian integers
//! and length-prefixed strings: a hash computed today verifies tomorrow.

use crate::model::{ACCOUNT_NAME_MAX_BYTES, AccountName, Transfer, TransferId, TransferKind};

// An account name's length is encoded in a u16.
const _: () = assert!(ACCOUNT_NAME_MAX_BYTES <= u16::MAX as usize);

/// Appends `transfer`'s canonical encoding to `out`:
/// `id: u128 | kind: u8 | amount: u64 | debit: u16 len + utf8 | credit: u16 len + utf8`.
pub(crate) fn encode_transfer(transfer: &Transfer, out: &mut Vec<u8>) {
    out.extend_from_slice(&transfer.id.0.to_le_bytes());
    out.push(transfer.kind.code());
    out.extend_from_slice(&transfer.amount.to_le_bytes());
    for name in [&transfer.debit, &transfer.credit] {
        let bytes = name.as_str().as_bytes();
        let len = u16::try_from(bytes.len()).expect("account names are at most ACCOUNT_NAME_MAX_BYTES long");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
}

/// Reads one transfer from the front of `bytes`, returning it and the rest.
pub(crate) fn decode_transfer(bytes: &[u8]) -> Result<(Transfer, &[u8]), String> {
    let mut reader = Reader(bytes);
    let id = TransferId(u128::from_le_bytes(reader.take()?));
    let [kind] = reader.take::<1>()?;
    let kind = TransferKind::from_code(kind).ok_or_else(|| format!("unknown transfer kind {kind}"))?;
    let amount = u64::from_le_bytes(reader.take()?);
    let mut name = || -> Result<AccountName, String> {
        let len = u16::from_le_bytes(reader.take()?) as usize;
        let raw = reader.slice(len)?;
        let text = std::str::from_utf8(raw).map_err(|_| "an account name is not UTF-8".to_owned())?;
        AccountName::parse(text).map_err(|e| e.to_string())
    };
    let debit = name()?;
    let credit = name()?;
    Ok((Transfer { id, kind, debit, credit, amount }, reader.0))
}

/// The hash block 1 links to in place of a previous block: BLAKE3 of the
/// ledger's header, `"OCLG" | version 1: u8 | currency: u8 len + ASCII |
/// initial_cents_per_cc: u64 | signer: 32 bytes`. Block 1's signature thus
/// covers every field of the header.
pub(crate) fn header_hash(currency: &str, initial_cents_per_cc: u64, signer: &[u8; 32]) -> [u8; 32] {
    let len = u8::try_from(currency.len()).expect("a currency code is checked to be 3 letters");
    let mut out = Vec::with_capacity(4 + 1 + 1 + currency.len() + 8 + 32);
    out.extend_from_slice(b"OCLG");
    out.push(1);
    out.push(len);
    out.extend_from_slice(currency.as_bytes());
    out.extend_from_slice(&initial_cents_per_cc.to_le_bytes());
    out.extend_from_slice(signer);
    *blake3::hash(&out).as_bytes()
}

/// The leaf hash of an encoded transfer (domain-separated from nodes).
pub(crate) fn leaf_hash(encoded: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0]);
    hasher.update(encoded);
    *hasher.finalize().as_bytes()
}

/// The Merkle root over leaf hashes: pairs hashed as `blake3(1 | left | right)`,
/// an odd node carried up unchanged. The root of no leaves is all zeros.
pub(crate) fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.is_empty() {
        return [0; 32];
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let next = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => {
                    let mut hasher = blake3::Hasher::new();
                    hasher.update(&[1]);
                    hasher.update(left);
                    hasher.update(right);
                    *hasher.finalize().as_bytes()
                }
                [single] => *single,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        level = next;
    }
    level[0]
}

/// A cursor over bytes that fails, rather than panics, at the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.slice(N)?.try_into().expect("N bytes"))
    }

    pub(crate) fn slice(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the encoding ends early".to_owned());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
}
