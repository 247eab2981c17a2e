//! One key per purpose in the data directory: the ledger's signing key
//! (`node.key`) gives nothing of the gateway's secrets (`gateway.key`).

use std::os::unix::fs::PermissionsExt;

use store::{load_gateway_secrets, load_or_create_key};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_data_directory_gets_a_gateway_key_of_its_own_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let node = load_or_create_key(dir.path()).unwrap();
    let gateway_key = dir.path().join("gateway.key");
    assert_eq!(mode(&gateway_key), 0o600);
    let secrets = load_gateway_secrets(dir.path(), &node).unwrap();
    assert_eq!(std::fs::read_to_string(&gateway_key).unwrap(), hex::encode(secrets.pseudonyms));
    // Not what the node key derives: it was drawn at random.
    assert_ne!(secrets.pseudonyms, node.derive_secret(b"pseudonyms"));
    assert_ne!(secrets.provenance, node.derive_secret(b"provenance"));
    assert_ne!(secrets.provenance, secrets.pseudonyms);
    // Stable: the same secrets next time, from the file.
    let again = load_or_create_key(dir.path()).unwrap();
    assert!(load_gateway_secrets(dir.path(), &again).unwrap() == secrets);
}

#[test]
fn a_data_directory_from_before_the_gateway_key_keeps_its_pseudonyms_and_then_needs_no_node_key() {
    let dir = tempfile::tempdir().unwrap();
    // As earlier versions left it: a node key and nothing else.
    let node_key = dir.path().join("node.key");
    std::fs::write(&node_key, "42".repeat(32)).unwrap();
    std::fs::set_permissions(&node_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = load_or_create_key(dir.path()).unwrap();
    assert!(!dir.path().join("gateway.key").exists());

    let secrets = load_gateway_secrets(dir.path(), &node).unwrap();
    assert_eq!(secrets.pseudonyms, node.derive_secret(b"pseudonyms"), "pseudonyms as before");
    assert_eq!(mode(&dir.path().join("gateway.key")), 0o600);
    // Migrated once: another node key no longer changes them.
    let other = ledger::Signer::from_seed([9; 32]);
    assert!(load_gateway_secrets(dir.path(), &other).unwrap() == secrets);
}

#[test]
fn a_gateway_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = load_or_create_key(dir.path()).unwrap();
    let gateway_key = dir.path().join("gateway.key");
    std::fs::set_permissions(&gateway_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = load_gateway_secrets(dir.path(), &node).err().unwrap().to_string();
    let expected = format!("the key file {}: mode 644 lets others read it; run chmod 600 on it", gateway_key.display());
    assert_eq!(error, expected);
}
