//! Boundaries between the parts of the crate, checked on the sources: each row names
//! a directory under src/ and a text none of its files may contain. A new boundary is
//! one more row.

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
];

fn rust_files(directory: &Path) -> Vec<PathBuf> {
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
