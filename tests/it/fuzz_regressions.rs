//! Replays the committed fuzz corpus (fuzz/regressions/<target>/: curated inputs and
//! every crash libFuzzer ever found) through the same entry points the fuzz targets
//! use, so a parser regression fails plain `cargo test` without libFuzzer.
//! scripts/fuzz.sh runs the real fuzzing; RELIABILITY.md has the figures.

use crate::fuzz_entries as entries;

use scimsync::scim::filter::{parse_filter, parse_patch_path, MAX_FILTER_LEN};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Far above what any input takes (a few milliseconds); only a hang or a
/// quadratic blow-up gets near it, even in a debug build on a loaded CI box.
const PER_INPUT_BUDGET: Duration = Duration::from_secs(5);

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/regressions/{target}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("corpus file read");
            (path, bytes)
        })
        .collect()
}

fn replay(target: &str) {
    let (_, entry) = entries::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("known target");
    let inputs = corpus(target);
    assert!(
        !inputs.is_empty(),
        "fuzz/regressions/{target} holds no inputs"
    );
    let mut failures = Vec::new();
    for (path, bytes) in &inputs {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| entry(bytes)));
        let took = started.elapsed();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if outcome.is_err() {
            failures.push(format!("{name}: panicked"));
        } else if took > PER_INPUT_BUDGET {
            failures.push(format!("{name}: took {took:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs in fuzz/regressions/{target} failed:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn every_saved_filter_input_parses_or_is_refused_without_panicking() {
    replay("scim_filter");
}

#[test]
fn every_saved_patch_path_parses_or_is_refused_without_panicking() {
    replay("patch_path");
}

#[test]
fn every_saved_patch_body_applies_atomically_or_is_refused_without_panicking() {
    replay("patch_apply");
}

#[test]
fn every_saved_user_or_group_body_parses_or_is_refused_without_panicking() {
    replay("scim_user_body");
}

#[test]
fn every_saved_snapshot_parses_and_plans_or_is_refused_without_panicking() {
    replay("snapshot");
}

#[test]
fn every_fuzz_target_has_a_committed_corpus() {
    for (target, _) in entries::TARGETS {
        assert!(
            corpus_dir(target).is_dir(),
            "fuzz/regressions/{target} is missing"
        );
    }
}

#[test]
fn a_one_megabyte_filter_of_open_parentheses_is_refused() {
    let hostile = "(".repeat(1 << 20);
    let err = parse_filter(&hostile).expect_err("a 1 MB filter is refused");
    assert!(err.message.contains(&MAX_FILTER_LEN.to_string()), "{err}");
}

#[test]
fn a_one_megabyte_patch_path_of_open_brackets_is_refused() {
    let hostile = format!("members{}", "[".repeat(1 << 20));
    assert!(parse_patch_path(&hostile).is_err());
}

#[test]
fn nesting_just_within_the_size_limit_is_refused_by_depth_not_by_stack_overflow() {
    // Under the byte limit, but thousands of levels deep: the depth limit must stop
    // the descent long before the stack runs out.
    let depth = (MAX_FILTER_LEN - 8) / 6;
    let filter = format!("{}a pr{}", "not (".repeat(depth), ")".repeat(depth));
    assert!(filter.len() > MAX_FILTER_LEN / 2);
    let err = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || parse_filter(&filter).map(|_| ()))
        .expect("thread")
        .join()
        .expect("the parser does not overflow a small stack");
    assert!(err.is_err());
}
