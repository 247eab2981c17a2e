//! Sites, tokens and metered usage in the store, on SQLite and PostgreSQL.

mod common;

use commons_core::Period;
use commons_core::token_sha256;
use metering::wal::Checkpoint;
use metering::{DirectKey, Event, Usage};
use store::{
    AccountRecord, DeploymentRecord, NodeRecord, ProjectRecord, ResourceTotals, SessionRecord, SetAsideRecord,
    SiteRecord, Store,
};

#[test]
fn sites_are_stored_replaced_and_removed_and_each_change_bumps_the_version() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let v0 = store.registry_version().unwrap();
        let wiki = SiteRecord {
            id: "wiki".into(),
            instances: vec!["127.0.0.1:8001".parse().unwrap(), "127.0.0.1:8002".parse().unwrap()],
            custom_hosts: vec!["wiki.example.org".into()],
            anonymous: true,
            free_requests_per_minute: Some(60),
            free_concurrent_requests: None,
            premium_prefixes: vec!["/pro".into(), "/export".into()],
            operator: "olga".into(),
            project: "wiki".into(),
            provider_share_bps: 3000,
            developer_share_bps: 2500,
            providers: vec![("pat".into(), 3), ("pia".into(), 1)],
            health_path: Some("/healthz".into()),
            pass_authorization: false,
            user_header: None,
        };
        store.put_site(&wiki).unwrap();
        let chat = SiteRecord {
            id: "chat".into(),
            instances: vec![],
            custom_hosts: vec![],
            anonymous: false,
            free_requests_per_minute: None,
            free_concurrent_requests: Some(2),
            premium_prefixes: vec![],
            operator: "otto".into(),
            project: "chat".into(),
            provider_share_bps: 4000,
            developer_share_bps: 2000,
            providers: vec![("pia".into(), 1)],
            health_path: None,
            pass_authorization: false,
            user_header: None,
        };
        store.put_site(&chat).unwrap();
        assert_eq!(store.sites().unwrap()[0], chat, "{}", s.name);
        assert_eq!(store.sites().unwrap()[1], wiki, "{}", s.name);
        assert!(store.remove_site("chat", 1_000).unwrap());
        assert!(!store.remove_site("chat", 2_000).unwrap());
        assert_eq!(store.sites().unwrap(), vec![wiki.clone()], "{}", s.name);
        assert_eq!(store.registry_version().unwrap(), v0 + 4, "{}", s.name);
        // The removed site's record stays for settlement, its routes gone.
        let kept = SiteRecord { instances: vec![], custom_hosts: vec![], ..chat.clone() };
        assert_eq!(store.sites_ever().unwrap(), vec![kept, wiki.clone()], "{}", s.name);
        assert_eq!(store.removed_sites().unwrap(), vec![("chat".to_owned(), 1_000)], "{}", s.name);
        let mut usage = Usage::default();
        for (period, site) in [("2026-10", "wiki"), ("2026-11", "chat")] {
            let period = Period::parse(period).unwrap();
            usage.record(&Event::Direct { period, user: "u".into(), site: site.into(), minute: 5, service_ms: 1 });
        }
        let called = Event::Call {
            period: Period::parse("2026-09").unwrap(),
            user: "u".into(),
            site: "wiki".into(),
            service: "chat".into(),
            minute: 5,
            service_ms: 1,
        };
        usage.record(&called);
        store.record_usage(&usage, &Checkpoint::default()).unwrap();
        // Resource use names it too: its providers are paid by it.
        let december = Period::parse("2026-12").unwrap();
        store.add_resource_usage(december, "chat", "pat", ResourceTotals { cpu_ms: 1, memory_mib_s: 1 }).unwrap();
        let periods: Vec<String> = store.periods_naming("chat").unwrap().iter().map(|p| p.to_string()).collect();
        assert_eq!(periods, ["2026-09", "2026-11", "2026-12"], "{}", s.name);
        assert!(!store.forget_removed_site("wiki").unwrap(), "{}: a live site is not forgotten", s.name);
        // Its id is not taken again while an unsettled period needs the record.
        let refused = store.put_site(&chat).unwrap_err();
        let why = "site chat was removed on 1970-01-01; its record is kept until periods 1970-01, 2026-09, 2026-11, 2026-12 are settled; choose another id or settle first";
        assert!(matches!(&refused, store::StoreError::SiteKept(said) if said == why), "{}: {refused}", s.name);
        assert_eq!(store.sites_ever().unwrap()[0].operator, chat.operator);
        // Forgotten, it may be added again, and is live again.
        assert!(store.forget_removed_site("chat").unwrap());
        store.put_site(&chat).unwrap();
        assert_eq!(store.sites().unwrap(), vec![chat.clone(), wiki.clone()], "{}", s.name);
        assert!(store.remove_site("chat", 3_000).unwrap());
        assert!(store.forget_removed_site("chat").unwrap());
        assert_eq!(store.sites_ever().unwrap(), vec![wiki], "{}", s.name);
    }
}

#[test]
fn tokens_are_kept_only_as_hashes() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let token = store.add_token("alice", 7).unwrap();
        let tokens = store.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].token_sha256, token_sha256(&token), "{}", s.name);
        assert_eq!((tokens[0].user.as_str(), tokens[0].created_ms), ("alice", 7));
        assert_ne!(tokens[0].token_sha256, token);
    }
}

fn session(hash: &str, user: &str, created_ms: u64, expires_ms: u64) -> SessionRecord {
    SessionRecord { token_sha256: hash.into(), user: user.into(), site: String::new(), created_ms, expires_ms }
}

#[test]
fn a_session_past_a_users_cap_ends_their_oldest() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        store.put_session(&session("b1", "alice", 20, 9_000), 0, 2).unwrap();
        store.put_session(&session("a0", "alice", 10, 9_000), 0, 2).unwrap();
        store.put_session(&session("z9", "bob", 5, 9_000), 0, 2).unwrap();
        store.put_session(&session("c2", "alice", 30, 9_000), 0, 2).unwrap();
        let alice: Vec<String> = store.sessions_of("alice", 0).unwrap().into_iter().map(|s| s.token_sha256).collect();
        assert_eq!(alice, ["b1", "c2"], "{}", s.name);
        assert_eq!(store.sessions_of("bob", 0).unwrap().len(), 1, "{}: nobody else's", s.name);
    }
}

#[test]
fn an_expired_session_is_gone_from_the_store_after_a_purge() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        store.put_session(&session("aa", "alice", 0, 1_000), 0, 8).unwrap();
        store.put_session(&session("bb", "alice", 0, 2_000), 0, 8).unwrap();
        assert_eq!(store.purge_sessions(1_000).unwrap(), 1, "{}", s.name);
        // Even asked for as of long ago, it is no longer there.
        let left: Vec<String> = store.sessions(0).unwrap().into_iter().map(|s| s.token_sha256).collect();
        assert_eq!(left, ["bb"], "{}", s.name);
    }
}

#[test]
fn revoked_sessions_and_tokens_are_gone_and_the_gateways_told() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        store.put_session(&session("aa11", "alice", 0, 9_000), 0, 8).unwrap();
        store.put_session(&session("bb22", "alice", 1, 9_000), 0, 8).unwrap();
        store.put_session(&session("cc33", "bob", 1, 9_000), 0, 8).unwrap();
        let v0 = store.registry_version().unwrap();
        assert_eq!(store.revoke_sessions("bob", Some("aa11")).unwrap(), 0, "{}: only one's own", s.name);
        assert_eq!(store.registry_version().unwrap(), v0, "{}: nothing changed", s.name);
        assert_eq!(store.revoke_sessions("alice", Some("aa11")).unwrap(), 1);
        assert_eq!(store.sessions_of("alice", 0).unwrap()[0].id(), "bb22");
        assert_eq!(store.revoke_sessions("alice", None).unwrap(), 1);
        assert!(store.sessions_of("alice", 0).unwrap().is_empty());
        assert_eq!(store.registry_version().unwrap(), v0 + 2, "{}", s.name);

        let token = store.add_token("alice", 1).unwrap();
        let hash = token_sha256(&token);
        assert_eq!(store.tokens().unwrap()[0].id(), &hash[..12], "{}: an id that is not the token", s.name);
        assert!(!store.revoke_token("bob", &hash).unwrap());
        assert!(store.revoke_token("alice", &hash).unwrap());
        assert!(store.tokens().unwrap().is_empty(), "{}", s.name);
    }
}

#[test]
fn a_user_has_a_bounded_number_of_tokens() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        for n in 0..store::TOKENS_PER_USER_MAX as u64 {
            store.add_token("alice", n).unwrap();
        }
        let refused = store.add_token("alice", 99).unwrap_err().to_string();
        assert!(refused.contains("alice has 64 API tokens") && refused.contains("revoke one"), "{}: {refused}", s.name);
        store.add_token("bob", 99).unwrap();
        assert_eq!(store.tokens().unwrap().len(), store::TOKENS_PER_USER_MAX + 1, "{}", s.name);
    }
}

#[test]
fn projects_accounts_sessions_and_subscriptions_round_trip() {
    let period = Period::parse("2026-11").unwrap();
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let v0 = store.registry_version().unwrap();
        let wiki = ProjectRecord {
            id: "wiki".into(),
            deps: vec![("markdown".into(), 1), ("http".into(), 2)],
            repository: "https://example.org/wiki.git".into(),
        };
        store.put_project(&wiki).unwrap();
        store.put_project(&ProjectRecord { id: "http".into(), deps: vec![], repository: String::new() }).unwrap();
        assert_eq!(store.projects().unwrap()[1], wiki, "{}", s.name);

        assert!(store.add_account("alice", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", 1).unwrap());
        assert!(!store.add_account("alice", "other", 2).unwrap(), "{}: an account is created once", s.name);
        assert_eq!(
            store.accounts().unwrap(),
            vec![AccountRecord {
                user: "alice".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()
            }]
        );

        let live = SessionRecord {
            token_sha256: "aa".into(),
            user: "alice".into(),
            site: String::new(),
            created_ms: 900,
            expires_ms: 5_000,
        };
        let old = SessionRecord {
            token_sha256: "bb".into(),
            user: "alice".into(),
            site: "wiki".into(),
            created_ms: 800,
            expires_ms: 1_500,
        };
        store.put_session(&old, 1_000, 8).unwrap();
        store.put_session(&live, 1_000, 8).unwrap();
        assert_eq!(store.sessions(2_000).unwrap(), vec![live.clone()], "{}", s.name);
        assert_eq!(store.remove_sessions("alice").unwrap(), 2);
        assert!(store.sessions(0).unwrap().is_empty());

        assert!(store.subscribe(period, "alice", 1000).unwrap());
        assert!(!store.subscribe(period, "alice", 500).unwrap(), "{}: once per period", s.name);
        store.subscribe(period, "bob", 700).unwrap();
        assert_eq!(store.subscriptions(period).unwrap(), vec![("alice".into(), 1000), ("bob".into(), 700)]);
        assert!(store.subscriptions(Period::parse("2026-12").unwrap()).unwrap().is_empty());
        // projects ×2, one account, two subscriptions
        assert_eq!(store.registry_version().unwrap(), v0 + 5, "{}", s.name);
    }
}

#[test]
fn flushed_usage_adds_up_exactly_across_flushes_and_keeps_the_checkpoint() {
    let period = Period::parse("2026-11").unwrap();
    let direct =
        |minute, ms| Event::Direct { period, user: "alice".into(), site: "wiki".into(), minute, service_ms: ms };
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let mut first = Usage::default();
        for minute in [100, 101, 101, 102] {
            first.record(&direct(minute, 10));
        }
        first.record(&Event::Call {
            period,
            user: "alice".into(),
            site: "wiki".into(),
            service: "search".into(),
            minute: 101,
            service_ms: 7,
        });
        let mut checkpoint = Checkpoint::default();
        checkpoint.flushed.insert(0, 3);
        store.record_usage(&first, &checkpoint).unwrap();
        // A later flush repeats minute 102 (same minute, another request).
        let mut second = Usage::default();
        for minute in [102, 103] {
            second.record(&direct(minute, 1));
        }
        second.record(&Event::Call {
            period,
            user: "alice".into(),
            site: "wiki".into(),
            service: "search".into(),
            minute: 103,
            service_ms: 5,
        });
        let mut later = Checkpoint::default();
        later.flushed.insert(1, 2);
        store.record_usage(&second, &later).unwrap();

        let stored = store.usage(period).unwrap();
        let key = DirectKey { period, user: "alice".into(), site: "wiki".into() };
        assert_eq!(stored.direct[&key].minutes.count(), 4, "{}", s.name);
        assert_eq!(stored.direct[&key].service_ms, 42, "{}", s.name);
        assert_eq!(stored.calls.values().copied().collect::<Vec<_>>(), vec![12], "{}", s.name);
        let recorded = store.metering_checkpoint().unwrap();
        assert_eq!(recorded.to_text(), "0:3,1:2", "{}", s.name);
        assert!(store.usage(Period::parse("2026-12").unwrap()).unwrap().is_empty());
    }
}

#[test]
fn nodes_history_and_resource_usage_are_kept() {
    let period = Period::parse("2026-11").unwrap();
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let node = NodeRecord {
            id: "pat-1".into(),
            provider: "pat".into(),
            location: "eu".into(),
            capacity_mb: 4096,
            remote: false,
        };
        store.put_node(&node).unwrap();
        store.put_node(&NodeRecord { capacity_mb: 8192, ..node.clone() }).unwrap();
        assert_eq!(store.nodes().unwrap(), vec![NodeRecord { capacity_mb: 8192, ..node.clone() }], "{}", s.name);
        assert!(store.set_join_token(&node.id, "abcd").unwrap());
        assert!(!store.set_join_token("nope", "ef").unwrap());
        assert_eq!(store.node_by_token("abcd").unwrap().map(|n| (n.id, n.remote)), Some(("pat-1".into(), true)));
        assert_eq!(store.node_by_token("").unwrap(), None);
        store.put_node(&NodeRecord { capacity_mb: 8192, ..node.clone() }).unwrap();
        assert!(store.nodes().unwrap()[0].remote, "{}: registering again keeps the token", s.name);

        assert_eq!(store.record_history(10, "deploy", "wiki", "app wiki 1.0 on pat-1").unwrap(), 1);
        assert_eq!(store.record_history(20, "update", "wiki", "app wiki 1.1 on pat-1").unwrap(), 2);
        let history = store.history().unwrap();
        assert_eq!(history.iter().map(|h| h.action.as_str()).collect::<Vec<_>>(), ["deploy", "update"]);

        store.add_resource_usage(period, "wiki", "pat", ResourceTotals { cpu_ms: 5, memory_mib_s: 100 }).unwrap();
        store.add_resource_usage(period, "wiki", "pat", ResourceTotals { cpu_ms: 7, memory_mib_s: 1 }).unwrap();
        store.add_resource_usage(period, "wiki", "pia", ResourceTotals { cpu_ms: 1, memory_mib_s: 0 }).unwrap();
        assert_eq!(
            store.resource_usage(period).unwrap(),
            vec![
                ("wiki".into(), "pat".into(), ResourceTotals { cpu_ms: 12, memory_mib_s: 101 }),
                ("wiki".into(), "pia".into(), ResourceTotals { cpu_ms: 1, memory_mib_s: 0 }),
            ]
        );
    }
}

#[test]
fn list_items_holding_commas_and_colons_read_back_whole_and_in_order() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let site = SiteRecord {
            id: "wiki".into(),
            instances: vec!["127.0.0.1:8002".parse().unwrap(), "[::1]:8001".parse().unwrap()],
            custom_hosts: vec!["wiki.example.org".into(), "a,b".into()],
            anonymous: false,
            free_requests_per_minute: None,
            free_concurrent_requests: None,
            premium_prefixes: vec!["/pro".into(), "/export,csv".into(), "/a:b".into(), "/export".into()],
            operator: "olga".into(),
            project: "wiki".into(),
            provider_share_bps: 3000,
            developer_share_bps: 2000,
            providers: vec![("pia".into(), 1), ("pat:x,y".into(), 7)],
            health_path: None,
            pass_authorization: false,
            user_header: None,
        };
        store.put_site(&site).unwrap();
        assert_eq!(store.sites().unwrap(), vec![site], "{}", s.name);

        let project = ProjectRecord {
            id: "wiki".into(),
            deps: vec![("z".into(), 1), ("a,b:c".into(), 2)],
            repository: "".into(),
        };
        store.put_project(&project).unwrap();
        assert_eq!(store.projects().unwrap(), vec![project], "{}", s.name);

        let deployment = deployment("wiki", &["pia-2", "pat-1"], &["wiki.example.org", "x,y"]);
        let generation = store.request_deployment(&deployment).unwrap();
        let stored = store.deployments().unwrap();
        assert_eq!(
            stored,
            vec![DeploymentRecord { generation, state: commons_core::DeploymentState::Pending, ..deployment }],
            "{}",
            s.name
        );
    }
}

#[test]
fn writing_a_record_again_replaces_its_lists_and_removing_it_leaves_none_behind() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let long = SiteRecord {
            id: "wiki".into(),
            instances: vec!["127.0.0.1:8001".parse().unwrap(), "127.0.0.1:8002".parse().unwrap()],
            custom_hosts: vec!["a.example".into(), "b.example".into()],
            anonymous: true,
            free_requests_per_minute: Some(1),
            free_concurrent_requests: Some(1),
            premium_prefixes: vec!["/a".into(), "/b".into()],
            operator: "olga".into(),
            project: "wiki".into(),
            provider_share_bps: 3000,
            developer_share_bps: 2000,
            providers: vec![("pat".into(), 1), ("pia".into(), 1)],
            health_path: None,
            pass_authorization: false,
            user_header: None,
        };
        store.put_site(&long).unwrap();
        let short = SiteRecord {
            instances: vec!["127.0.0.1:8003".parse().unwrap()],
            custom_hosts: vec![],
            premium_prefixes: vec!["/b".into()],
            providers: vec![("pia".into(), 2)],
            ..long.clone()
        };
        store.put_site(&short).unwrap();
        assert_eq!(store.sites().unwrap(), vec![short.clone()], "{}", s.name);
        store.remove_site("wiki", 1_000).unwrap();
        // Its id is taken again once its record is forgotten (the period
        // it was removed in is not settled, so not before).
        assert!(matches!(store.put_site(&short), Err(store::StoreError::SiteKept(_))), "{}", s.name);
        assert!(store.forget_removed_site("wiki").unwrap());
        let bare = SiteRecord { instances: vec![], premium_prefixes: vec![], providers: vec![], ..short };
        store.put_site(&bare).unwrap();
        assert_eq!(store.sites().unwrap(), vec![bare], "{}: the removed site's lists are gone", s.name);

        let project = ProjectRecord { id: "wiki".into(), deps: vec![("a".into(), 1)], repository: "".into() };
        store.put_project(&project).unwrap();
        store.put_project(&ProjectRecord { deps: vec![], ..project.clone() }).unwrap();
        assert_eq!(store.projects().unwrap(), vec![ProjectRecord { deps: vec![], ..project }], "{}", s.name);

        store.request_deployment(&deployment("wiki", &["a", "b"], &["a.example"])).unwrap();
        store.request_deployment(&deployment("wiki", &["c"], &[])).unwrap();
        let stored = store.deployments().unwrap();
        assert_eq!((stored[0].nodes.clone(), stored[0].hosts.clone()), (vec!["c".into()], vec![]), "{}", s.name);
        assert!(store.remove_deployment("wiki").unwrap());
        store.request_deployment(&deployment("wiki", &[], &[])).unwrap();
        let stored = store.deployments().unwrap();
        assert_eq!((stored[0].nodes.len(), stored[0].hosts.len()), (0, 0), "{}: no lists left behind", s.name);
    }
}

fn deployment(site: &str, nodes: &[&str], hosts: &[&str]) -> DeploymentRecord {
    DeploymentRecord {
        site: site.into(),
        app_dir: "/apps/wiki".into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        operator: "olga".into(),
        provider_share_bps: 3000,
        developer_share_bps: 2000,
        anonymous: false,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        generation: 0,
        state: commons_core::DeploymentState::Pending,
        detail: String::new(),
    }
}

#[test]
fn a_site_deployed_again_after_its_removal_gets_a_new_generation() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let first = store.request_deployment(&deployment("wiki", &["a"], &[])).unwrap();
        assert!(store.remove_deployment("wiki").unwrap());
        let again = store.request_deployment(&deployment("wiki", &["a"], &[])).unwrap();
        assert!(
            again > first,
            "generation {again} after {first}: an agent could take an old instance for it ({})",
            s.name
        );
    }
}

#[test]
fn a_periods_set_aside_rows_are_kept_in_order_and_replaced_by_a_rerun() {
    let period = Period::parse("2026-11").unwrap();
    let row = |n: u32| SetAsideRecord {
        row: format!("usage row (2026-11, site s{n}, user u)"),
        reason: "site has no record".into(),
        outcome: "u's fee went to the general fund".into(),
    };
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        store.put_set_aside(period, &[row(2), row(1)]).unwrap();
        assert_eq!(store.set_aside(period).unwrap(), vec![row(2), row(1)], "{}", s.name);
        store.put_set_aside(period, &[row(3)]).unwrap();
        assert_eq!(store.set_aside(period).unwrap(), vec![row(3)], "{}", s.name);
        assert!(store.set_aside(Period::parse("2026-12").unwrap()).unwrap().is_empty(), "{}", s.name);
    }
}

#[test]
fn a_nodes_cores_refusals_and_last_accepted_report_are_kept_and_survive_its_re_registration() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        assert_eq!(store.node_reports("far").unwrap(), store::NodeReports::default(), "defaults for a node never seen");
        let far = NodeRecord {
            id: "far".into(),
            provider: "pat".into(),
            location: String::new(),
            capacity_mb: 1024,
            remote: false,
        };
        store.put_node(&far).unwrap();
        store.set_node_cores("far", 8).unwrap();
        store.note_reports("far", 3, None).unwrap();
        store.note_reports("far", 1, Some(1_700_000_000_000)).unwrap();
        store.put_node(&far).unwrap();
        let kept = store::NodeReports { cores: 8, refused: 4, usage_at_ms: 1_700_000_000_000 };
        assert_eq!(store.node_reports("far").unwrap(), kept);
        drop(store);
        assert_eq!(Store::open(&s.location).unwrap().node_reports("far").unwrap(), kept, "{}", s.name);
    }
}

#[test]
fn a_resource_report_is_recorded_only_against_the_report_it_was_checked_after() {
    for s in common::stores() {
        let mut store = Store::open(&s.location).unwrap();
        let period = Period::parse("2026-12").unwrap();
        let used = vec![("search".to_owned(), ResourceTotals { cpu_ms: 700, memory_mib_s: 5 })];
        // Two syncs checked against the same last report (none): the first
        // is recorded and moves it, the second finds it moved.
        assert!(store.accept_resource_usage("far", 0, 1_000, period, "pat", &used).unwrap(), "{}", s.name);
        assert!(!store.accept_resource_usage("far", 0, 2_000, period, "pat", &used).unwrap(), "{}", s.name);
        assert_eq!(store.node_reports("far").unwrap().usage_at_ms, 1_000);
        let recorded = store.resource_usage(period).unwrap();
        assert_eq!(recorded, vec![("search".into(), "pat".into(), ResourceTotals { cpu_ms: 700, memory_mib_s: 5 })]);
        assert!(store.accept_resource_usage("far", 1_000, 2_000, period, "pat", &used).unwrap());
        assert_eq!(store.resource_usage(period).unwrap()[0].2, ResourceTotals { cpu_ms: 1_400, memory_mib_s: 10 });
    }
}
