//! Offline verification speed, without a database: builds a chain of
//! payment batches in memory, exports it, and times `read_export`.
//!
//! ```text
//! cargo run --release -p ledger --example verify_bench -- [TRANSFERS] [BATCH]
//! ```

use std::time::Instant;

use commons_core::{Bps, Period};
use ledger::{AppendOutcome, Ledger, LedgerConfig, Signer, payment, read_export, write_block_line, write_header_line};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let transfers = args.next().unwrap_or(1_000_000);
    let batch_size = args.next().unwrap_or(10_000);
    let signer = Signer::from_seed([1; 32]);
    let mut ledger =
        Ledger::new(LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer.public_key() });
    let period = Period::parse("2026-11").unwrap();
    let mut export = Vec::new();
    write_header_line(&ledger, &mut export).unwrap();
    for b in 0..transfers.div_ceil(batch_size) {
        let mut nav = ledger.nav();
        let mut batch = Vec::with_capacity(batch_size);
        for i in 0..batch_size / 2 {
            let user = format!("user{b}-{i}");
            let (legs, minted) = payment(&nav, period, &user, 1000, Bps::new(100).unwrap(), user.as_bytes()).unwrap();
            nav = nav.after_payment(1000, minted).unwrap();
            batch.extend(legs);
        }
        let AppendOutcome::Sealed(block) = ledger.prepare(batch, b as u64, &signer).unwrap() else { unreachable!() };
        ledger.apply(&block).unwrap();
        write_block_line(block.block(), &mut export).unwrap();
    }
    let start = Instant::now();
    let verified = read_export(export.as_slice(), None).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(verified.head(), ledger.head());
    println!(
        "verified {} transfers in {} blocks ({} MB) in {seconds:.2} s: {:.0} transfers/s",
        verified.n_transfers(),
        verified.height(),
        export.len() >> 20,
        verified.n_transfers() as f64 / seconds
    );
}
