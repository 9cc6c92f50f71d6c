//! Boundaries between the parts of the crate, checked on the sources: each row names
//! a directory (or file) under src/ and a text none of its files may contain, and the
//! import graphs of the top-level modules and of src/scim must have no circle. A new
//! boundary is one more row.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

struct Boundary {
    directory: &'static str,
    forbidden: &'static str,
    why: &'static str,
}

const BOUNDARIES: &[Boundary] = &[
    Boundary {
        directory: "src/store",
        forbidden: "crate::scim",
        why: "the store has its own query language; the SCIM listener lowers into it",
    },
    Boundary {
        directory: "src/store",
        forbidden: "super::super::scim",
        why: "the store has its own query language; the SCIM listener lowers into it",
    },
    Boundary {
        directory: "src/store",
        forbidden: "urn:ietf",
        why: "SCIM schema URNs belong to src/scim",
    },
    Boundary {
        directory: "src/reconcile/plan.rs",
        forbidden: "crate::store",
        why: "the planner is pure: the engine reads the store and hands it the actual state",
    },
    Boundary {
        directory: "src/reconcile/plan.rs",
        forbidden: ".await",
        why: "the planner is pure: no I/O",
    },
    Boundary {
        directory: "src/reconcile/policy.rs",
        forbidden: "crate::store",
        why: "the policy takes the clock as an input, so plans are reproducible",
    },
    Boundary {
        directory: "src/keys.rs",
        forbidden: "crate::store",
        why: "minting and hashing are pure; their storage is the store's",
    },
];

/// Only the engine's front door (src/reconcile) and the store itself begin a write
/// transaction: every other writer goes through `reconcile::Engine`.
const WRITE_TRANSACTION_OWNERS: &[&str] = &["src/reconcile", "src/store"];
const BEGINS_A_WRITE: &[&str] = &["begin_write(", "begin_bulk("];

/// Top-level modules among which no import may go round in a circle.
const ACYCLIC_MODULES: &[&str] = &[
    "app",
    "ui",
    "auth",
    "scim",
    "sso",
    "sync",
    "state",
    "keys",
    "store",
    "reconcile",
    "error",
];

fn rust_files(directory: &Path) -> Vec<PathBuf> {
    if directory.is_file() {
        return vec![directory.to_path_buf()];
    }
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn no_part_reaches_past_its_boundary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut crossings = Vec::new();
    for boundary in BOUNDARIES {
        let files = rust_files(&root.join(boundary.directory));
        assert!(
            !files.is_empty(),
            "{} holds no Rust files",
            boundary.directory
        );
        for file in files {
            let source = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            for (index, line) in source.lines().enumerate() {
                if line.contains(boundary.forbidden) {
                    crossings.push(format!(
                        "{}:{}: {:?} ({})",
                        file.strip_prefix(root).unwrap_or(&file).display(),
                        index + 1,
                        boundary.forbidden,
                        boundary.why
                    ));
                }
            }
        }
    }
    assert!(crossings.is_empty(), "{}", crossings.join("\n"));
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}

/// The code of a source file without its unit tests and comments, which may name
/// anything.
fn code_of(source: &str) -> String {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names that follow `prefix::` in `code`, including each of a `prefix::{a, b}` group.
fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let needle = format!("{prefix}::");
    for (at, _) in code.match_indices(&needle) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + needle.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// A circle in `graph`, if there is one, as the path that closes it.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn only_the_engine_and_the_store_begin_a_write_transaction() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut crossings = Vec::new();
    for file in rust_files(&root.join("src")) {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        if WRITE_TRANSACTION_OWNERS
            .iter()
            .any(|owner| relative.starts_with(owner))
        {
            continue;
        }
        let code = code_of(&read(&file));
        for call in BEGINS_A_WRITE {
            if code.contains(call) {
                crossings.push(format!(
                    "{relative} calls {call}...): go through reconcile::Engine"
                ));
            }
        }
    }
    assert!(crossings.is_empty(), "{}", crossings.join("\n"));
}

#[test]
fn the_top_level_modules_import_each_other_without_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in ACYCLIC_MODULES {
        let single = root.join(format!("{module}.rs"));
        let files = if single.is_file() {
            vec![single]
        } else {
            rust_files(&root.join(module))
        };
        assert!(!files.is_empty(), "no source for module {module}");
        let used: BTreeSet<String> = files
            .iter()
            .flat_map(|f| paths_after(&code_of(&read(f)), "crate"))
            .filter(|m| m != module && ACYCLIC_MODULES.contains(&m.as_str()))
            .collect();
        graph.insert((*module).to_owned(), used);
    }
    assert_eq!(find_circle(&graph), None, "import graph: {graph:?}");
}

#[test]
fn the_scim_modules_import_each_other_without_a_circle() {
    let scim = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scim");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = rust_files(&scim)
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|m| m != "mod")
        .collect();
    for module in &modules {
        let code = code_of(&read(&scim.join(format!("{module}.rs"))));
        let mut used = paths_after(&code, "super");
        used.extend(paths_after(&code, "crate::scim"));
        used.retain(|m| m != module && modules.contains(m));
        graph.insert(module.clone(), used);
    }
    assert_eq!(find_circle(&graph), None, "import graph: {graph:?}");
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        find_circle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        paths_after(
            "use super::{list, routes::X};\nlet x = crate::store::now();",
            "super"
        ),
        ["list", "routes"].into_iter().map(str::to_owned).collect()
    );
}
