//! Sites' configuration, sealed at rest, on SQLite and PostgreSQL.

mod common;

use store::{ConfigEntry, Store};

fn entry(name: &str, value: &str, secret: bool) -> ConfigEntry {
    ConfigEntry { name: name.into(), value: value.into(), secret, generated: false }
}

#[test]
fn a_sites_configuration_is_kept_sealed_and_opens_only_in_its_own_row() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        store.set_site_config("wiki", &entry("SECRET_KEY", "hunter2-very-secret", true)).unwrap();
        store.set_site_config("wiki", &entry("TITLE", "Our wiki", false)).unwrap();
        store.set_site_config("blog", &entry("TITLE", "A blog", false)).unwrap();
        store.set_site_config("wiki", &entry("TITLE", "Our new wiki", false)).unwrap();
        let wiki = store.site_config("wiki").unwrap();
        assert_eq!(
            wiki,
            [entry("SECRET_KEY", "hunter2-very-secret", true), entry("TITLE", "Our new wiki", false)],
            "{}",
            s.name
        );
        assert!(store.unset_site_config("wiki", "TITLE").unwrap());
        assert!(!store.unset_site_config("wiki", "TITLE").unwrap(), "gone already");
        assert_eq!(store.site_config("blog").unwrap(), [entry("TITLE", "A blog", false)]);
        drop(store);
        // Reopened: the same values, from config.key.
        let mut store = Store::open(&s.location).unwrap();
        assert_eq!(store.site_config("wiki").unwrap(), [entry("SECRET_KEY", "hunter2-very-secret", true)]);
    }
    // At rest (the SQLite file): no value in the clear.
    let s = common::stores().remove(0);
    let mut store = Store::open(&s.location).unwrap();
    store.set_site_config("wiki", &entry("SECRET_KEY", "hunter2-very-secret", true)).unwrap();
    drop(store);
    let mut at_rest = Vec::new();
    for file in ["commons.db", "commons.db-wal"] {
        at_rest.extend(std::fs::read(s.location.data_dir.join(file)).unwrap_or_default());
    }
    assert!(!at_rest.windows(b"hunter2".len()).any(|w| w == b"hunter2"), "a secret in the clear");
}

#[test]
fn a_sealed_value_under_another_key_is_refused_not_skipped() {
    let s = common::stores().remove(0);
    let mut store = Store::open(&s.location).unwrap();
    store.set_site_config("wiki", &entry("SECRET_KEY", "x", true)).unwrap();
    drop(store);
    let key = s.location.data_dir.join("config.key");
    std::fs::write(&key, "00".repeat(32)).unwrap();
    let mut store = Store::open(&s.location).unwrap();
    let error = store.site_config("wiki").unwrap_err().to_string();
    assert!(error.contains("site_config") && error.contains("config.key"), "{error}");
}
