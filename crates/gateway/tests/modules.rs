//! The boundaries inside the gateway, read from its sources: the modules'
//! `crate::` references form no cycle; the policy (`pipeline`) knows no
//! engine, the login pages know no engine, and the two engines do not know
//! each other or the server.

use std::collections::{BTreeMap, BTreeSet};

/// Module → the modules its code names through `crate::`.
fn references() -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut named = BTreeSet::new();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let group = match rest.strip_prefix('{') {
                    Some(inner) => inner.split('}').next().unwrap_or(""),
                    None => rest,
                };
                for item in group.split(',') {
                    let first: String =
                        item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !first.is_empty() && first != module {
                        named.insert(first);
                    }
                }
            }
        }
        graph.insert(module, named);
    }
    graph
}

#[test]
fn the_gateways_modules_form_no_cycle() {
    let graph = references();
    // Depth-first, with the path so far: a module met again on it closes a
    // cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("a module cycle: {} -> {module}", path[at..].join(" -> "));
        }
        if !done.insert(module.to_owned()) {
            return;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
    // Not a vacuous pass: the modules this test is about are there.
    for module in ["pipeline", "server", "h1", "general", "pool", "login"] {
        assert!(graph.contains_key(module), "{module} is gone: update this test");
    }
}

#[test]
fn the_policy_and_the_login_pages_know_no_engine_and_the_engines_not_each_other() {
    let graph = references();
    let engine = ["server", "h1", "general", "pool"];
    for (module, forbidden) in [
        ("pipeline", &engine[..]),
        ("login", &engine[..]),
        ("h1", &["server", "general"][..]),
        ("general", &["server", "h1", "pool"][..]),
        ("pool", &["server", "h1", "general", "pipeline"][..]),
    ] {
        let named = &graph[module];
        for other in forbidden {
            assert!(!named.contains(*other), "{module} names {other}: {named:?}");
        }
    }
}
