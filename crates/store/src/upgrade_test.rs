//! A schema upgrade, tested: a database made at migration 9 (lists as
//! comma-joined text), with rows in every table, opened by the current
//! code. It migrates to head and everything is still there, in the new
//! shape. On SQLite and PostgreSQL.
//!
//! A unit test because it needs what the store does not publish: the
//! migrations up to a given one, and the backend under the store.

use commons_core::{Bps, Period};
use ledger::{AccountName, AppendOutcome, Ledger, LedgerConfig};
use metering::DirectKey;

use crate::backend::Backend;
use crate::sql::{Param, Row};
use crate::{
    AccountRecord, DeploymentRecord, HistoryEntry, Location, NodeRecord, ProjectRecord, ResourceTotals, SessionRecord,
    SiteRecord, Store, load_or_create_key,
};

/// The last migration before lists became child rows.
const BEFORE_LISTS_AS_ROWS: usize = 9;

/// A row in every platform table, as the code of migration 9 wrote them:
/// lists joined with commas, weights after a colon, the metering
/// checkpoint as text, a site from before its free-tier columns (NULL).
const ROWS_AT_MIGRATION_9: &str = "
    UPDATE platform_meta SET value = '5' WHERE key = 'registry_version';
    UPDATE platform_meta SET value = '0:3,1:2' WHERE key = 'metering_checkpoint';
    INSERT INTO sites (id, instances, custom_hosts, anonymous, free_requests_per_minute, free_concurrent_requests,
                       premium_prefixes, operator, project, provider_share_bps, developer_share_bps, providers, health_path)
        VALUES ('wiki', '127.0.0.1:8001,127.0.0.1:8002', 'wiki.example.org', 1, NULL, 2,
                '/pro,/export', 'olga', 'wiki', 3000, 2500, 'pat:3,pia:1', '/healthz'),
               ('chat', '', '', 0, 60, -1, '', 'otto', 'chat', 4000, 2000, 'pia:1', '');
    INSERT INTO api_tokens (token_hash, user_id) VALUES ('ab12', 'alice');
    INSERT INTO usage_direct (period, user_id, site, minutes, latest_minute, recent_minutes, requests, service_ms)
        VALUES ('2026-11', 'alice', 'wiki', 2, 101, 3, 4, 40);
    INSERT INTO usage_calls (period, user_id, site, service, service_ms) VALUES ('2026-11', 'alice', 'wiki', 'search', 12);
    INSERT INTO projects (id, deps, repository)
        VALUES ('wiki', 'markdown:1,http:2', 'https://example.org/wiki.git'), ('http', '', '');
    INSERT INTO accounts (user_id, password_hash, created_ms) VALUES ('alice', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA', 1);
    INSERT INTO sessions (token_hash, user_id, site, expires_ms) VALUES ('cd34', 'alice', 'wiki', 5000);
    INSERT INTO subscriptions (period, user_id, paid_cents) VALUES ('2026-11', 'alice', 1000);
    INSERT INTO nodes (id, provider, location, capacity_mb, join_token_hash)
        VALUES ('pat-1', 'pat', 'eu', 4096, ''), ('pia-1', 'pia', 'us', 8192, 'ef56');
    INSERT INTO history (seq, at_ms, action, site, detail) VALUES (1, 10, 'deploy', 'wiki', 'app wiki 1.0 on pat-1,pia-1');
    INSERT INTO resource_usage (period, site, provider, cpu_ms, memory_mib_s) VALUES ('2026-11', 'wiki', 'pat', 12, 101);
    INSERT INTO deployments (site, app_dir, nodes, operator, provider_share_bps, developer_share_bps, anonymous,
                             generation, state, detail, hosts)
        VALUES ('wiki', '/apps/wiki', 'pat-1,pia-1', 'olga', 3000, 2500, 1, 3, 'running', 'wiki 1.0', 'wiki.example.org,w.example.org');
";

#[test]
fn a_database_at_migration_9_opens_at_head_with_every_row_in_the_new_shape() {
    let period = Period::parse("2026-11").unwrap();
    for (name, location, _dir) in locations() {
        let balances = make_at_migration_9(&location);

        let mut store = Store::open(&location).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(store.ledger().height(), 1, "{name}");
        assert_eq!(store.ledger().balances(), balances, "{name}");
        assert_eq!(store.registry_version().unwrap(), 5, "{name}");
        assert_eq!(store.metering_checkpoint().unwrap().to_text(), "0:3,1:2", "{name}");
        let site = |id: &str| SiteRecord {
            id: id.into(),
            instances: vec![],
            custom_hosts: vec![],
            anonymous: false,
            free_requests_per_minute: None,
            free_concurrent_requests: None,
            premium_prefixes: vec![],
            operator: String::new(),
            project: id.into(),
            provider_share_bps: 0,
            developer_share_bps: 0,
            providers: vec![],
            health_path: None,
            pass_authorization: false,
            user_header: None,
        };
        assert_eq!(
            store.sites().unwrap(),
            vec![
                SiteRecord {
                    free_requests_per_minute: Some(60),
                    operator: "otto".into(),
                    provider_share_bps: 4000,
                    developer_share_bps: 2000,
                    providers: vec![("pia".into(), 1)],
                    ..site("chat")
                },
                SiteRecord {
                    instances: vec!["127.0.0.1:8001".parse().unwrap(), "127.0.0.1:8002".parse().unwrap()],
                    custom_hosts: vec!["wiki.example.org".into()],
                    anonymous: true,
                    free_concurrent_requests: Some(2),
                    premium_prefixes: vec!["/pro".into(), "/export".into()],
                    operator: "olga".into(),
                    provider_share_bps: 3000,
                    developer_share_bps: 2500,
                    providers: vec![("pat".into(), 3), ("pia".into(), 1)],
                    health_path: Some("/healthz".into()),
                    pass_authorization: false,
                    user_header: None,
                    ..site("wiki")
                },
            ],
            "{name}"
        );
        assert_eq!(
            store.projects().unwrap(),
            vec![
                ProjectRecord { id: "http".into(), deps: vec![], repository: String::new() },
                ProjectRecord {
                    id: "wiki".into(),
                    deps: vec![("markdown".into(), 1), ("http".into(), 2)],
                    repository: "https://example.org/wiki.git".into()
                },
            ],
            "{name}"
        );
        assert_eq!(
            store.deployments().unwrap(),
            vec![DeploymentRecord {
                site: "wiki".into(),
                app_dir: "/apps/wiki".into(),
                nodes: vec!["pat-1".into(), "pia-1".into()],
                operator: "olga".into(),
                provider_share_bps: 3000,
                developer_share_bps: 2500,
                anonymous: true,
                hosts: vec!["wiki.example.org".into(), "w.example.org".into()],
                generation: 3,
                state: commons_core::DeploymentState::Running,
                detail: "wiki 1.0".into(),
            }],
            "{name}"
        );
        assert_eq!(store.tokens().unwrap().iter().map(|t| t.token_sha256.as_str()).collect::<Vec<_>>(), ["ab12"]);
        let usage = store.usage(period).unwrap();
        let direct = &usage.direct[&DirectKey { period, user: "alice".into(), site: "wiki".into() }];
        assert_eq!((direct.minutes.count(), direct.requests, direct.service_ms), (2, 4, 40), "{name}");
        assert_eq!(usage.calls.values().copied().collect::<Vec<_>>(), [12], "{name}");
        assert_eq!(
            store.accounts().unwrap(),
            [AccountRecord {
                user: "alice".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()
            }]
        );
        assert_eq!(
            store.sessions(0).unwrap(),
            [SessionRecord {
                token_sha256: "cd34".into(),
                user: "alice".into(),
                site: "wiki".into(),
                created_ms: 0,
                expires_ms: 5000
            }]
        );
        assert_eq!(store.subscriptions(period).unwrap(), [("alice".to_owned(), 1000)], "{name}");
        assert_eq!(
            store.nodes().unwrap(),
            [
                NodeRecord {
                    id: "pat-1".into(),
                    provider: "pat".into(),
                    location: "eu".into(),
                    capacity_mb: 4096,
                    remote: false
                },
                NodeRecord {
                    id: "pia-1".into(),
                    provider: "pia".into(),
                    location: "us".into(),
                    capacity_mb: 8192,
                    remote: true
                },
            ]
        );
        assert_eq!(
            store.history().unwrap(),
            [HistoryEntry {
                seq: 1,
                at_ms: 10,
                action: "deploy".into(),
                site: "wiki".into(),
                detail: "app wiki 1.0 on pat-1,pia-1".into()
            }]
        );
        assert_eq!(
            store.resource_usage(period).unwrap(),
            [("wiki".to_owned(), "pat".to_owned(), ResourceTotals { cpu_ms: 12, memory_mib_s: 101 })]
        );

        // The new shape: the lists are rows in order, the old columns and
        // the checkpoint's text are gone, and the upgrade is recorded.
        let mut backend = Backend::open(&location).unwrap();
        let rows = backend
            .read(|tx| {
                tx.query("SELECT site, position, prefix FROM site_premium_prefixes ORDER BY site, position", &[])
            })
            .unwrap();
        assert_eq!(texts(&rows, &[0, 2]), [["wiki", "/pro"], ["wiki", "/export"]], "{name}");
        assert_eq!(rows.iter().map(|r| r.int(1).unwrap()).collect::<Vec<_>>(), [0, 1], "{name}");
        for (table, column) in [
            ("sites", "instances"),
            ("sites", "custom_hosts"),
            ("sites", "premium_prefixes"),
            ("sites", "providers"),
            ("projects", "deps"),
            ("deployments", "nodes"),
            ("deployments", "hosts"),
        ] {
            let old = backend.read(|tx| tx.query(&format!("SELECT {column} FROM {table}"), &[]));
            assert!(old.is_err(), "{name}: {table}.{column} is still there");
        }
        let keys = backend.read(|tx| tx.query("SELECT key FROM platform_meta", &[])).unwrap();
        assert_eq!(texts(&keys, &[0]), [["registry_version"]], "{name}");
        let versions = backend.read(|tx| tx.query("SELECT version FROM schema_migrations", &[])).unwrap();
        assert_eq!(versions.len(), crate::backend::HEAD, "{name}");
        drop(backend);
        drop(store);

        // Opening it again changes nothing.
        let mut store = Store::open(&location).unwrap();
        assert_eq!(store.sites().unwrap().len(), 2, "{name}");
        assert_eq!(store.metering_checkpoint().unwrap().to_text(), "0:3,1:2", "{name}");
    }
}

#[test]
fn a_list_the_old_code_could_not_read_stops_the_upgrade_and_changes_nothing() {
    for (name, location, _dir) in locations() {
        make_at_migration_9(&location);
        let mut backend = Backend::open(&location).unwrap();
        backend
            .transaction(|tx| {
                tx.execute("UPDATE sites SET providers = $1 WHERE id = 'wiki'", &[Param::Text("pat:3,pia")])?;
                Ok(())
            })
            .unwrap();
        drop(backend);

        let error = Store::open(&location).err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("the stored sites.providers is corrupt: not name:weight,…"), "{name}");
        let mut backend = Backend::open(&location).unwrap();
        let versions = backend.read(|tx| tx.query("SELECT version FROM schema_migrations", &[])).unwrap();
        assert_eq!(versions.len(), BEFORE_LISTS_AS_ROWS, "{name}: the failed migration left no trace");
        let old = backend.read(|tx| tx.query("SELECT providers FROM sites WHERE id = 'wiki'", &[])).unwrap();
        assert_eq!(texts(&old, &[0]), [["pat:3,pia"]], "{name}");
    }
}

/// A ledger begun before header binding: its block 1 links to zeros. The
/// blocks are those of `crates/ledger/tests/data/legacy-v1.jsonl`, signed
/// by the key of seed 07…07, which is this node's key here.
#[test]
fn a_ledger_begun_before_header_binding_still_loads_appends_and_exports_as_such() {
    let legacy = include_str!("../../ledger/tests/data/legacy-v1.jsonl");
    for (name, location, _dir) in locations() {
        let key = location.data_dir.join("node.key");
        std::fs::write(&key, "07".repeat(32)).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let signer = load_or_create_key(&location.data_dir).unwrap();
        let mut backend = Backend::open(&location).unwrap();
        backend.migrate().unwrap();
        let config = LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer.public_key() };
        backend.init_meta(&config).unwrap();
        for line in legacy.lines().skip(1) {
            let block = ledger::read_block_line(line.as_bytes()).unwrap();
            backend.insert_block(block.header.height, &block.hash(), &block.encode()).unwrap();
        }
        drop(backend);

        let mut store = Store::open(&location).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((store.ledger().height(), store.ledger().header_bound()), (2, false), "{name}");
        let period = Period::parse("2026-11").unwrap();
        let (batch, _) =
            ledger::payment(&store.ledger().nav(), period, "carol", 1000, Bps::new(100).unwrap(), b"carol").unwrap();
        store.append(batch, 3).unwrap().expect("a new payment");
        let mut store = Store::open(&location).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(store.ledger().height(), 3, "{name}");

        let mut export = Vec::new();
        ledger::write_header_line(store.ledger(), &mut export).unwrap();
        for block in store.blocks().unwrap() {
            ledger::write_block_line(&block, &mut export).unwrap();
        }
        assert!(export.starts_with(b"{\"format\":\"onecommons-ledger/1\""), "{name}: says its header is unbound");
        let verified = ledger::read_export(export.as_slice(), Some(signer.public_key())).unwrap();
        assert_eq!((verified.height(), verified.header_bound()), (3, false), "{name}");
    }
}

/// One SQLite and one PostgreSQL location, empty, with the directory that
/// holds the node key (kept alive by the caller).
fn locations() -> Vec<(&'static str, Location, Place)> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![("sqlite", Location::new(Some(dir.path().to_owned()), None), Place { url: None, _dir: dir })];
    if let Some(url) = test_support::postgres_url() {
        let dir = tempfile::tempdir().unwrap();
        let schema = test_support::fresh_schema(&url);
        let location = Location::new(Some(dir.path().to_owned()), Some(schema.clone()));
        all.push(("postgres", location, Place { url: Some(schema), _dir: dir }));
    }
    all
}

/// What a test location holds: its directory, and its PostgreSQL schema,
/// dropped with it.
struct Place {
    url: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(url) = &self.url {
            test_support::drop_schema(url);
        }
    }
}

/// Makes the database at `location` as migration 9's code left it: the
/// ledger with one payment, and [`ROWS_AT_MIGRATION_9`]. Returns the
/// ledger's balances.
fn make_at_migration_9(location: &Location) -> Vec<(AccountName, i128)> {
    let mut backend = Backend::open(location).unwrap();
    backend.migrate_to(BEFORE_LISTS_AS_ROWS).unwrap();
    let signer = load_or_create_key(&location.data_dir).unwrap();
    let config = LedgerConfig { currency: "USD".into(), initial_cents_per_cc: 100, signer: signer.public_key() };
    backend.init_meta(&config).unwrap();
    let mut ledger = Ledger::new(config);
    let period = Period::parse("2026-11").unwrap();
    let (batch, _) = ledger::payment(&ledger.nav(), period, "alice", 1000, Bps::new(100).unwrap(), b"alice").unwrap();
    let AppendOutcome::Sealed(checked) = ledger.prepare(batch, 1, &signer).unwrap() else {
        panic!("a new payment is sealed")
    };
    let block = checked.block();
    backend.insert_block(block.header.height, &block.hash(), &block.encode()).unwrap();
    ledger.apply(&checked).unwrap();
    backend.transaction(|tx| tx.execute_batch(ROWS_AT_MIGRATION_9)).unwrap();
    ledger.balances()
}

/// Columns `columns` of each row, as text.
fn texts(rows: &[Row], columns: &[usize]) -> Vec<Vec<String>> {
    rows.iter().map(|row| columns.iter().map(|&i| row.text(i).unwrap()).collect()).collect()
}
