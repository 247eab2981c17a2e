//! Blocks: a batch of transfers sealed under a signed, chained header.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::encoding::{Reader, decode_transfer, encode_transfer, leaf_hash, merkle_root};
use crate::model::Transfer;
use crate::rejection::Rejection;

/// A BLAKE3 hash.
pub type Hash = [u8; 32];
pub use crate::rejection::MAX_TRANSFERS_PER_BLOCK;

// The header counts a block's transfers in a u32.
const _: () = assert!(MAX_TRANSFERS_PER_BLOCK <= u32::MAX as usize);

const MAGIC: &[u8; 4] = b"OCLB";
const VERSION: u8 = 1;

/// What a block's hash and signature cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// 1 for the first block.
    pub height: u64,
    /// The previous block's hash; zeros before the first.
    pub prev_hash: Hash,
    pub merkle_root: Hash,
    /// Milliseconds since the Unix epoch, as given by the sealer.
    pub timestamp_ms: u64,
    pub n_transfers: u32,
    /// The ed25519 public key that signed the block.
    pub signer: [u8; 32],
}

/// A sealed block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub header: BlockHeader,
    /// The signer's ed25519 signature of the block hash.
    pub signature: [u8; 64],
    pub transfers: Vec<Transfer>,
}

/// A block whose own content holds together: its transfer count, its
/// Merkle root and its signature by the key its header names. Checking is
/// independent of any ledger state, so it can run on many blocks in
/// parallel; [`crate::Ledger::apply`] takes only checked blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedBlock {
    block: Block,
    leaves: Vec<Hash>,
}

impl CheckedBlock {
    pub fn block(&self) -> &Block {
        &self.block
    }

    pub fn into_block(self) -> Block {
        self.block
    }

    /// Each transfer's leaf hash, in order.
    pub(crate) fn leaves(&self) -> &[Hash] {
        &self.leaves
    }
}

/// A node's signing key.
pub struct Signer(SigningKey);

impl Signer {
    /// The key from its 32-byte secret seed (which the caller generates).
    pub fn from_seed(seed: [u8; 32]) -> Signer {
        Signer(SigningKey::from_bytes(&seed))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// A secret for another purpose, derived from this key (BLAKE3 key
    /// derivation). Whoever holds this key can compute it, so it serves
    /// only to migrate the gateway's secrets of a data directory that
    /// derived them from the node key (`store::load_gateway_secrets`).
    pub fn derive_secret(&self, purpose: &[u8]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("onecommons node secret v1");
        hasher.update(self.0.as_bytes());
        hasher.update(purpose);
        *hasher.finalize().as_bytes()
    }
}

impl BlockHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 1 + 8 + 32 + 32 + 8 + 4 + 32);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.merkle_root);
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.n_transfers.to_le_bytes());
        out.extend_from_slice(&self.signer);
        out
    }

    /// The block hash: BLAKE3 of the encoded header.
    pub fn hash(&self) -> Hash {
        *blake3::hash(&self.encode()).as_bytes()
    }
}

impl Block {
    /// Seals `transfers`, whose leaf hashes are `leaves`, as the block
    /// after `prev_hash` at `height`.
    pub(crate) fn seal(
        height: u64,
        prev_hash: Hash,
        timestamp_ms: u64,
        transfers: Vec<Transfer>,
        leaves: Vec<Hash>,
        signer: &Signer,
    ) -> CheckedBlock {
        let header = BlockHeader {
            height,
            prev_hash,
            merkle_root: merkle_root(&leaves),
            timestamp_ms,
            n_transfers: u32::try_from(transfers.len()).expect("prepare refuses more than MAX_TRANSFERS_PER_BLOCK"),
            signer: signer.public_key(),
        };
        let signature = signer.0.sign(&header.hash()).to_bytes();
        CheckedBlock { block: Block { header, signature, transfers }, leaves }
    }

    /// Checks what a block says about itself (see [`CheckedBlock`]).
    pub fn check(self) -> Result<CheckedBlock, Rejection> {
        if self.header.n_transfers as usize != self.transfers.len() {
            return Err(Rejection::TransferCount { header: self.header.n_transfers, actual: self.transfers.len() });
        }
        if self.transfers.is_empty() || self.transfers.len() > MAX_TRANSFERS_PER_BLOCK {
            return Err(Rejection::BatchSize(self.transfers.len()));
        }
        if !self.signature_is_valid() {
            return Err(Rejection::BadSignature);
        }
        let (_, leaves) = Block::leaves(&self.transfers);
        if merkle_root(&leaves) != self.header.merkle_root {
            return Err(Rejection::MerkleRoot);
        }
        Ok(CheckedBlock { block: self, leaves })
    }

    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// The encoded transfers and each one's leaf hash.
    pub(crate) fn leaves(transfers: &[Transfer]) -> (Vec<u8>, Vec<Hash>) {
        let mut encoded = Vec::with_capacity(transfers.len() * 64);
        let mut leaves = Vec::with_capacity(transfers.len());
        for transfer in transfers {
            let start = encoded.len();
            encode_transfer(transfer, &mut encoded);
            leaves.push(leaf_hash(&encoded[start..]));
        }
        (encoded, leaves)
    }

    /// Checks the signature over the header hash with the header's signer.
    fn signature_is_valid(&self) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.header.signer) else { return false };
        key.verify_strict(&self.hash(), &Signature::from_bytes(&self.signature)).is_ok()
    }

    /// The storage encoding: header, signature, transfers.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.encode();
        out.extend_from_slice(&self.signature);
        for transfer in &self.transfers {
            encode_transfer(transfer, &mut out);
        }
        out
    }

    /// Reads a block from its storage encoding. Decoding checks only the
    /// shape; [`crate::Ledger::apply`] checks the meaning.
    pub fn decode(bytes: &[u8]) -> Result<Block, String> {
        let mut reader = Reader(bytes);
        if &reader.take::<4>()? != MAGIC {
            return Err("not a OneCommons block".to_owned());
        }
        let [version] = reader.take::<1>()?;
        if version != VERSION {
            return Err(format!("block format version {version} is not supported"));
        }
        let header = BlockHeader {
            height: u64::from_le_bytes(reader.take()?),
            prev_hash: reader.take()?,
            merkle_root: reader.take()?,
            timestamp_ms: u64::from_le_bytes(reader.take()?),
            n_transfers: u32::from_le_bytes(reader.take()?),
            signer: reader.take()?,
        };
        let signature = reader.take()?;
        if header.n_transfers as usize > MAX_TRANSFERS_PER_BLOCK {
            return Err(format!("{} transfers is more than a block may hold", header.n_transfers));
        }
        let mut transfers = Vec::with_capacity(header.n_transfers as usize);
        let mut rest = reader.0;
        for _ in 0..header.n_transfers {
            let (transfer, tail) = decode_transfer(rest)?;
            transfers.push(transfer);
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after the last transfer", rest.len()));
        }
        Ok(Block { header, signature, transfers })
    }
}
