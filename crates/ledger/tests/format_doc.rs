//! docs/ledger-format.md and the code cannot drift: its test vectors are
//! recomputed here twice, by the crate (the export it writes, byte for
//! byte) and by a verifier written from the document alone (every
//! intermediate encoding and hash, with blake3 and ed25519 directly).
//! Every vector in the document is checked, and every one computed here
//! must be in it.

use ledger::{
    AccountName, AppendOutcome, Ledger, LedgerConfig, Signer, Transfer, TransferId, TransferKind, read_export,
    write_block_line, write_header_line,
};

const DOC: &str = include_str!("../../../docs/ledger-format.md");

/// The document's vectors: each fenced block opened by ```` ```vector NAME ````.
fn documented() -> Vec<(String, String)> {
    let mut vectors = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("```vector ") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            vectors.push((name.trim().to_owned(), body.join("\n")));
        }
    }
    vectors
}

const SEED: [u8; 32] = [7; 32];

/// A transfer of the example: id, kind, debit, credit, amount.
type Leg = (u128, TransferKind, &'static str, &'static str, u64);

/// The example's blocks: timestamp and transfers.
fn example() -> Vec<(u64, Vec<Leg>)> {
    use TransferKind::*;
    vec![
        (
            1_767_225_600_000,
            vec![(1, Payment, "world", "reserve", 1000), (2, Mint, "issuance", "escrow:2026-11:alice", 10_000_000)],
        ),
        (
            1_767_225_600_001,
            vec![
                (3, Allocate, "escrow:2026-11:alice", "general-fund", 1_000_000),
                (4, Allocate, "escrow:2026-11:alice", "pool:2026-11:site:wiki", 6_000_000),
                (5, Allocate, "escrow:2026-11:alice", "pool:2026-11:site:notes", 3_000_000),
            ],
        ),
        (
            1_767_225_600_002,
            vec![
                (6, Distribute, "pool:2026-11:site:wiki", "provider:pat", 1_200_000),
                (7, Distribute, "pool:2026-11:site:wiki", "operator:olga", 3_000_000),
                (8, Distribute, "pool:2026-11:site:wiki", "pool:2026-11:project:wiki", 1_800_000),
                (9, Distribute, "pool:2026-11:project:wiki", "project:wiki", 1_800_000),
                (10, Distribute, "pool:2026-11:site:notes", "operator:olga", 3_000_000),
            ],
        ),
    ]
}

/// The example's export, as the crate writes it.
fn crate_export() -> String {
    let signer = Signer::from_seed(SEED);
    let mut ledger =
        Ledger::new(LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer.public_key() });
    let mut out = Vec::new();
    write_header_line(&ledger, &mut out).unwrap();
    for (timestamp_ms, transfers) in example() {
        let batch = transfers
            .into_iter()
            .map(|(id, kind, debit, credit, amount)| Transfer {
                id: TransferId(id),
                kind,
                debit: AccountName::parse(debit).unwrap(),
                credit: AccountName::parse(credit).unwrap(),
                amount,
            })
            .collect();
        let AppendOutcome::Sealed(block) = ledger.prepare(batch, timestamp_ms, &signer).unwrap() else {
            panic!("a new batch is sealed")
        };
        ledger.apply(&block).unwrap();
        write_block_line(block.block(), &mut out).unwrap();
    }
    String::from_utf8(out).unwrap()
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

fn le_u64(value: &serde_json::Value) -> [u8; 8] {
    value.as_u64().unwrap().to_le_bytes()
}

fn hex32(value: &serde_json::Value) -> [u8; 32] {
    hex::decode(value.as_str().unwrap()).unwrap().try_into().unwrap()
}

/// Every vector, computed from `export` by the document's rules alone.
fn from_the_document(export: &str) -> Vec<(String, String)> {
    let mut vectors = vec![("export".to_owned(), export.trim_end().to_owned())];
    let mut push = |name: String, value: String| vectors.push((name, value));
    let key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    push("seed".into(), hex::encode(SEED));
    push("signer".into(), hex::encode(key.verifying_key().to_bytes()));

    let mut lines = export.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let currency = header["currency"].as_str().unwrap();
    let mut bytes = b"OCLG\x01".to_vec();
    bytes.push(currency.len() as u8);
    bytes.extend(currency.as_bytes());
    bytes.extend(le_u64(&header["initial_cents_per_cc"]));
    bytes.extend(hex32(&header["signer"]));
    push("header-bytes".into(), hex::encode(&bytes));
    let mut prev = hash(&bytes);
    push("header-hash".into(), hex::encode(prev));

    for line in lines {
        let block: serde_json::Value = serde_json::from_str(line).unwrap();
        let height = block["height"].as_u64().unwrap();
        let name = |what: &str| format!("block-{height}-{what}");
        let transfers = block["transfers"].as_array().unwrap();
        let mut level = Vec::new();
        for (i, t) in transfers.iter().enumerate() {
            let id = u128::from_str_radix(t["id"].as_str().unwrap(), 16).unwrap();
            let kind = ["payment", "mint", "allocate", "distribute", "burn", "redeem"]
                .iter()
                .position(|k| *k == t["kind"].as_str().unwrap())
                .unwrap();
            let mut bytes = id.to_le_bytes().to_vec();
            bytes.push(kind as u8);
            bytes.extend(le_u64(&t["amount"]));
            for account in [&t["debit"], &t["credit"]] {
                let account = account.as_str().unwrap();
                bytes.extend((account.len() as u16).to_le_bytes());
                bytes.extend(account.as_bytes());
            }
            push(name(&format!("transfer-{i}-bytes")), hex::encode(&bytes));
            let leaf = hash(&[&[0u8][..], &bytes].concat());
            push(name(&format!("transfer-{i}-leaf")), hex::encode(leaf));
            level.push(leaf);
        }
        let mut depth = 0;
        while level.len() > 1 {
            depth += 1;
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => hash(&[&[1u8][..], left, right].concat()),
                    [odd] => *odd,
                    _ => unreachable!(),
                })
                .collect();
            let nodes: Vec<String> = level.iter().map(hex::encode).collect();
            push(name(&format!("merkle-level-{depth}")), nodes.join("\n"));
        }
        let root = level[0];
        assert_eq!(root, hex32(&block["merkle_root"]), "block {height}: the Merkle root");
        assert_eq!(prev, hex32(&block["prev_hash"]), "block {height}: the link");
        let mut header = b"OCLB\x01".to_vec();
        header.extend(height.to_le_bytes());
        header.extend(prev);
        header.extend(root);
        header.extend(le_u64(&block["timestamp_ms"]));
        header.extend((transfers.len() as u32).to_le_bytes());
        header.extend(hex32(&block["signer"]));
        assert_eq!(header.len(), 121);
        push(name("header-bytes"), hex::encode(&header));
        let block_hash = hash(&header);
        push(name("hash"), hex::encode(block_hash));
        let signature = ed25519_dalek::Signer::sign(&key, &block_hash);
        assert_eq!(hex::encode(signature.to_bytes()), block["signature"].as_str().unwrap(), "block {height}");
        key.verifying_key().verify_strict(&block_hash, &signature).unwrap();
        prev = block_hash;
    }
    push("head".into(), hex::encode(prev));
    vectors
}

#[test]
fn the_format_document_s_vectors_are_what_the_code_and_the_document_s_rules_compute() {
    let export = crate_export();
    let computed = from_the_document(&export);
    let documented = documented();
    let listing: String = computed.iter().map(|(name, value)| format!("```vector {name}\n{value}\n```\n\n")).collect();
    let names = |all: &[(String, String)]| all.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&documented), names(&computed), "the document's vectors, in order; computed:\n{listing}");
    for ((name, doc), (_, value)) in documented.iter().zip(&computed) {
        assert_eq!(doc, value, "vector {name}; computed:\n{listing}");
    }
}

#[test]
fn the_documented_export_verifies_against_its_documented_signer_and_head() {
    let find = |name: &str| documented().into_iter().find(|(n, _)| n == name).unwrap().1;
    let signer: [u8; 32] = hex::decode(find("signer")).unwrap().try_into().unwrap();
    let head: [u8; 32] = hex::decode(find("head")).unwrap().try_into().unwrap();
    let ledger = read_export(find("export").as_bytes(), Some(signer)).unwrap();
    assert_eq!(ledger.check_head(&head), Ok(3));
    assert!(ledger.header_bound());
    assert!(ledger.is_settled(commons_core::Period::parse("2026-11").unwrap()));
}
