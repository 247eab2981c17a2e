//! Tidy, in the manner of rust-analyzer's: the rules of this repository
//! that a compiler does not check, checked on every `cargo test`.
//!
//! - every crate root states its invariants (`# Invariants`);
//! - every `unsafe` has a `SAFETY:` comment just above it, and a crate
//!   without unsafe code forbids it;
//! - no `.unwrap()` in library code (tests aside);
//! - no module cycles inside a crate (`use crate::…` edges);
//! - ARCHITECTURE.md names every crate;
//! - README's configuration table lists exactly the config file's keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crates() -> Vec<(String, PathBuf)> {
    let mut crates: Vec<(String, PathBuf)> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    crates.sort();
    crates
}

fn root_of(dir: &Path) -> PathBuf {
    let lib = dir.join("src/lib.rs");
    if lib.exists() { lib } else { dir.join("src/main.rs") }
}

/// Every `.rs` file under `dir` that is not a test module, with its text up
/// to its unit tests and without its comments.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    sources_with(dir, false)
}

fn sources_with(dir: &Path, comments: bool) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.file_stem().is_some_and(|s| s.to_string_lossy().ends_with("_test"))
            {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = match text.find("#[cfg(test)]") {
                    Some(at) => &text[..at],
                    None => &text,
                };
                // Comments aside: a doc link is not a dependency.
                let code: String = code
                    .lines()
                    .map(|l| if !comments && l.trim_start().starts_with("//") { "" } else { l })
                    .collect::<Vec<_>>()
                    .join("\n");
                out.push((path, code));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_crate_root_states_its_invariants() {
    let missing: Vec<String> = crates()
        .into_iter()
        .filter(|(_, dir)| !std::fs::read_to_string(root_of(dir)).unwrap().contains("# Invariants"))
        .map(|(name, _)| name)
        .collect();
    assert!(missing.is_empty(), "crate roots without `# Invariants`: {missing:?}");
}

#[test]
fn every_unsafe_says_why_and_crates_without_unsafe_forbid_it() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        let mut any = false;
        for (path, code) in sources_with(&dir.join("src"), true) {
            let lines: Vec<&str> = code.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let code_part = line.split("//").next().unwrap_or("");
                if !(code_part.contains("unsafe {")
                    || code_part.contains("unsafe fn")
                    || code_part.contains("unsafe impl"))
                {
                    continue;
                }
                any = true;
                let above = &lines[i.saturating_sub(4)..i];
                if !above.iter().chain(std::iter::once(line)).any(|l| l.contains("SAFETY:")) {
                    problems.push(format!("{}:{}: unsafe without a SAFETY: comment", path.display(), i + 1));
                }
            }
        }
        let root = std::fs::read_to_string(root_of(&dir)).unwrap();
        if !any && !root.contains("#![forbid(unsafe_code)]") {
            problems.push(format!("{name} has no unsafe code but does not forbid it"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn library_code_does_not_unwrap() {
    let mut found = Vec::new();
    for (_, dir) in crates() {
        for (path, code) in sources(&dir.join("src")) {
            for (i, line) in code.lines().enumerate() {
                if line.contains(".unwrap()") && !line.trim_start().starts_with("//") {
                    found.push(format!("{}:{}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "unwrap() in library code (use `?` or `expect` with the reason): {found:#?}");
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut cycles = Vec::new();
    for (name, dir) in crates() {
        let src = dir.join("src");
        let module_of = |path: &Path| -> String {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            first.trim_end_matches(".rs").to_owned()
        };
        let files = sources(&src);
        let modules: BTreeSet<String> = files.iter().map(|(p, _)| module_of(p)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, code) in &files {
            let from = module_of(path);
            if from == "lib" || from == "main" {
                continue;
            }
            for used in crate_paths(code) {
                if used != from && used != "lib" && used != "main" && modules.contains(&used) {
                    edges.entry(from.clone()).or_default().insert(used);
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            cycles.push(format!("{name}: {}", cycle.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "module cycles: {cycles:#?}");
}

/// The first segment of every `crate::…` path in `code`, braces expanded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let segment: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.push(segment);
            }
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|start| visit(start, edges, &mut Vec::new(), &mut done))
}

#[test]
fn architecture_names_every_crate() {
    let architecture = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    let missing: Vec<String> = crates()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !architecture.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md does not name: {missing:?}");
}

#[test]
fn readme_lists_exactly_the_config_files_keys() {
    let settings = std::fs::read_to_string(workspace().join("crates/platform/src/settings.rs")).unwrap();
    let start = settings.find("pub struct ConfigFile {").expect("ConfigFile");
    let body = &settings[start..settings[start..].find('}').unwrap() + start];
    let keys: BTreeSet<String> = body
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.starts_with("//") && !k.is_empty())
        .collect();
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let table: BTreeSet<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| key |"))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect();
    assert_eq!(keys, table, "README's settings table and ConfigFile's keys differ");
}
