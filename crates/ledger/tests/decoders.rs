//! The ledger's decoders never panic: any bytes are either a block or an
//! error (exports, stored blocks, account names), and random bytes never
//! verify to a block: they would need a signature by the key.

use ledger::{AccountName, Block, read_export};
use proptest::prelude::*;

const HEADER: &str = "{\"format\":\"onecommons-ledger/1\",\"currency\":\"USD\",\"initial_cents_per_cc\":100,\"signer\":\"0707070707070707070707070707070707070707070707070707070707070707\"}\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_export_is_verified_or_refused(body in any::<Vec<u8>>(), with_header in any::<bool>()) {
        let mut input = if with_header { HEADER.as_bytes().to_vec() } else { Vec::new() };
        input.extend(body);
        if let Ok(ledger) = read_export(input.as_slice(), None) {
            prop_assert_eq!(ledger.height(), 0);
        }
    }

    #[test]
    fn block_shaped_lines_are_verified_or_refused(
        height in "[0-9]{0,3}",
        hex in "[0-9a-fA-F\"]{0,130}",
        transfers in "(\\{\"id\":\"[0-9a-f]{0,32}\",\"kind\":\"(payment|mint|x)\",\"debit\":\"[a-z:0-9-]{0,20}\",\"credit\":\"[a-z:0-9-]{0,20}\",\"amount\":-?[0-9]{0,21}\\},?){0,3}",
    ) {
        let line = format!(
            "{{\"height\":{height},\"prev_hash\":\"{hex}\",\"merkle_root\":\"{hex}\",\"timestamp_ms\":1,\"signer\":\"{hex}\",\"signature\":\"{hex}\",\"transfers\":[{transfers}]}}\n"
        );
        let input = format!("{HEADER}{line}");
        prop_assert!(read_export(input.as_bytes(), None).is_err());
    }

    #[test]
    fn any_stored_bytes_decode_or_are_refused(bytes in any::<Vec<u8>>()) {
        let mut framed = b"OCLB\x01".to_vec();
        framed.extend(&bytes);
        let _ = Block::decode(&bytes);
        if let Ok(block) = Block::decode(&framed) {
            prop_assert!(block.check().is_err());
        }
    }

    #[test]
    fn any_text_is_an_account_name_or_refused(name in any::<String>()) {
        if let Ok(account) = AccountName::parse(&name) {
            prop_assert_eq!(account.as_str(), name.as_str());
            prop_assert_eq!(account.asset(), account.kind().asset());
        }
    }
}
