//! `scimsync plan`, `apply` and `audit` end to end: the built binary against a fresh
//! SQLite database, the way an operator or a cron job runs them.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

const SNAPSHOT: &str = r#"{"idp": "entra", "complete": true,
 "users":  [{"external_id": "u-1", "user_name": "alice@example.com", "email": "alice@example.com",
             "display_name": "Alice", "given_name": "Alice", "family_name": "Ng", "active": true},
            {"external_id": "u-2", "user_name": "bob@example.com"},
            {"external_id": "u-3", "user_name": "carol@example.com"},
            {"external_id": "u-4", "user_name": "dave@example.com"},
            {"external_id": "u-5", "user_name": "erin@example.com"}],
 "groups": [{"external_id": "g-1", "display_name": "Production LLM Evals Group",
             "members": ["u-1", "u-2"]}]}"#;

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("file written");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        let db = format!("sqlite://{}", self.dir.path().join("scimsync.db").display());
        Command::new(env!("CARGO_BIN_EXE_scimsync"))
            .arg("--database-url")
            .arg(db)
            .args(args)
            .env_remove("SCIMSYNC_CONFIG")
            .env_remove("SCIMSYNC_DATABASE_URL")
            .env("SCIMSYNC_LOG_LEVEL", "warn")
            .output()
            .expect("scimsync runs")
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn detailed_exitcode_is_2_with_changes_and_0_once_applied() {
    let env = Env::new();
    let snap = env.file("snap.json", SNAPSHOT);
    let plan = env.run(&["plan", "--snapshot", arg(&snap), "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    let text = stdout(&plan);
    assert!(text.contains("+ user alice@example.com"), "{text}");
    assert!(
        text.contains("+ team \"Production LLM Evals Group\""),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("Plan: 8 to add, 0 to change, 0 to destroy."),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );

    let apply = env.run(&["apply", "--snapshot", arg(&snap)]);
    assert_eq!(apply.status.code(), Some(0), "{}", stderr(&apply));
    assert!(
        stdout(&apply).contains("Apply complete! 8 operations applied"),
        "{}",
        stdout(&apply)
    );

    let again = env.run(&["plan", "--snapshot", arg(&snap), "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
    assert!(stdout(&again).contains("No changes."));
    // Without the flag, changes or not, success is 0.
    let plain = env.run(&["plan", "--snapshot", arg(&snap)]);
    assert_eq!(plain.status.code(), Some(0));
}

#[test]
fn the_json_plan_lists_each_operation_with_kind_target_before_and_after() {
    let env = Env::new();
    let snap = env.file("snap.json", SNAPSHOT);
    let out = env.run(&["plan", "--snapshot", arg(&snap), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(doc["format_version"], "1");
    assert!(doc["fingerprint"]
        .as_str()
        .is_some_and(|f| f.starts_with("sha256:")));
    let ops = doc["operations"].as_array().expect("operations");
    assert_eq!(ops.len(), 8);
    for op in ops {
        for key in ["kind", "target", "before", "after"] {
            assert!(op.get(key).is_some(), "{op} lacks {key}");
        }
    }
    assert_eq!(ops[0]["kind"], "create_user");
    assert_eq!(ops[7]["kind"], "add_member");
    assert_eq!(doc["summary"]["add"], 8);
}

#[test]
fn a_saved_plan_applies_exactly_and_is_refused_once_the_store_has_changed() {
    let env = Env::new();
    let snap = env.file("snap.json", SNAPSHOT);
    let saved = env.path("saved.plan");
    let plan = env.run(&["plan", "--snapshot", arg(&snap), "--out", arg(&saved)]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    assert!(stderr(&plan).contains("apply --plan"));

    // Something changes the store between plan and apply: the plan is stale.
    let only_alice = SNAPSHOT.replace(r#""members": ["u-1", "u-2"]"#, r#""members": ["u-1"]"#);
    let other = env.file("other.json", &only_alice);
    assert_eq!(
        env.run(&["apply", "--snapshot", arg(&other)]).status.code(),
        Some(0)
    );
    let stale = env.run(&["apply", "--plan", arg(&saved)]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("stale"), "{}", stderr(&stale));

    // A fresh plan of the same store applies, and only once.
    let fresh = env.run(&["plan", "--snapshot", arg(&snap), "--out", arg(&saved)]);
    assert_eq!(fresh.status.code(), Some(0));
    let applied = env.run(&["apply", "--plan", arg(&saved)]);
    assert_eq!(applied.status.code(), Some(0), "{}", stderr(&applied));
    assert!(
        stdout(&applied).contains("Apply complete! 1 operations applied"),
        "{}",
        stdout(&applied)
    );
    let twice = env.run(&["apply", "--plan", arg(&saved)]);
    assert_eq!(
        twice.status.code(),
        Some(1),
        "the applied plan is stale now"
    );
}

#[test]
fn the_deletion_guard_refuses_until_deletions_are_allowed() {
    let env = Env::new();
    let snap = env.file("snap.json", SNAPSHOT);
    assert_eq!(
        env.run(&["apply", "--snapshot", arg(&snap)]).status.code(),
        Some(0)
    );
    let empty = env.file(
        "empty.json",
        r#"{"idp": "entra", "complete": true, "users": [], "groups": []}"#,
    );
    // `plan` shows what the guard refuses; only `apply` refuses it.
    let refused = env.run(&["apply", "--snapshot", arg(&empty)]);
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message.contains("--allow-deletions") && message.contains("refusing"),
        "{message}"
    );
    assert!(
        !stdout(&refused).contains("Apply complete"),
        "{}",
        stdout(&refused)
    );

    let allowed = env.run(&["apply", "--snapshot", arg(&empty), "--allow-deletions"]);
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr(&allowed));
    assert!(
        stdout(&allowed).contains("(deactivate)"),
        "{}",
        stdout(&allowed)
    );
}

#[test]
fn plan_shows_the_whole_plan_a_guard_refuses_and_says_why_under_the_summary() {
    let env = Env::new();
    let snap = env.file("snap.json", SNAPSHOT);
    assert_eq!(
        env.run(&["apply", "--snapshot", arg(&snap)]).status.code(),
        Some(0)
    );
    // Everyone gone from the IdP but a newcomer: five deactivations and a team
    // deleted, of five users and a team managed; one creation.
    let emptied = env.file(
        "emptied.json",
        r#"{"idp": "entra", "complete": true,
            "users": [{"external_id": "u-9", "user_name": "zoe@example.com"}],
            "groups": []}"#,
    );
    let shown = env.run(&["plan", "--snapshot", arg(&emptied)]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let text = stdout(&shown);
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        assert!(
            text.contains(&format!("~ user {user}@example.com (deactivate) [refused]")),
            "{text}"
        );
    }
    assert!(
        text.contains("- team \"Production LLM Evals Group\" [refused]"),
        "{text}"
    );
    assert!(text.contains("+ user zoe@example.com\n"), "{text}");
    let (summary, verdict) = text.split_once("Plan: ").expect("a summary line");
    assert!(!summary.contains("Refused by the guard"), "{text}");
    assert!(
        verdict.contains("Refused by the guard: refusing to delete or deactivate")
            && verdict.contains("re-run with --allow-deletions"),
        "{text}"
    );

    let detailed = env.run(&["plan", "--snapshot", arg(&emptied), "--detailed-exitcode"]);
    assert_eq!(detailed.status.code(), Some(2), "{}", stderr(&detailed));
    assert_eq!(stdout(&detailed), text);

    let json = env.run(&["plan", "--snapshot", arg(&emptied), "--format", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let doc: Value = serde_json::from_str(&stdout(&json)).expect("JSON plan");
    let guard = &doc["guard"];
    assert_eq!(guard["refused"], true, "{guard}");
    assert_eq!(guard["guard"], "deletions");
    assert_eq!(guard["deletions"], 6);
    assert_eq!(guard["limit"], 1, "20 % of six managed users and teams");
    assert_eq!(guard["allowed_by"], "--allow-deletions");
    assert!(guard["reason"]
        .as_str()
        .is_some_and(|r| r.contains("refusing to delete or deactivate 6 of 6")));
    let refused_ops: Vec<&str> = doc["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .filter(|op| op["refused"] == true)
        .map(|op| op["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        refused_ops,
        [
            "deactivate_user",
            "deactivate_user",
            "deactivate_user",
            "deactivate_user",
            "deactivate_user",
            "purge_keys",
            "delete_team"
        ]
    );

    // Lifted by the flag: the same plan, not refused, and the verdict says so.
    let lifted = env.run(&[
        "plan",
        "--snapshot",
        arg(&emptied),
        "--format",
        "json",
        "--allow-deletions",
    ]);
    let doc: Value = serde_json::from_str(&stdout(&lifted)).expect("JSON plan");
    assert_eq!(doc["guard"]["refused"], false);
    assert_eq!(doc["guard"]["deletions"], 6);

    // A plan within the limits says the guard does not refuse it.
    let json = env.run(&["plan", "--snapshot", arg(&snap), "--format", "json"]);
    let doc: Value = serde_json::from_str(&stdout(&json)).expect("JSON plan");
    assert_eq!(doc["guard"], serde_json::json!({"refused": false}));

    // A saved refused plan is refused by `apply --plan` too, until allowed.
    let saved = env.path("refused.plan");
    let out = env.run(&["plan", "--snapshot", arg(&emptied), "--out", arg(&saved)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let apply = env.run(&["apply", "--plan", arg(&saved)]);
    assert_eq!(apply.status.code(), Some(1));
    assert!(stderr(&apply).contains("refusing"), "{}", stderr(&apply));
    let apply = env.run(&["apply", "--plan", arg(&saved), "--allow-deletions"]);
    assert_eq!(apply.status.code(), Some(0), "{}", stderr(&apply));
}

#[test]
fn a_partial_snapshot_never_deletes_or_deactivates() {
    let env = Env::new();
    let snap = env.file("snap.json", SNAPSHOT);
    assert_eq!(
        env.run(&["apply", "--snapshot", arg(&snap)]).status.code(),
        Some(0)
    );
    let partial = env.file(
        "partial.json",
        r#"{"idp": "entra", "complete": false, "users": [], "groups": []}"#,
    );
    let out = env.run(&["plan", "--snapshot", arg(&partial), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn an_account_another_idp_owns_is_neither_duplicated_nor_taken_over() {
    let env = Env::new();
    let first = env.file(
        "first.json",
        r#"{"idp": "okta", "complete": true, "users": [{"external_id": "x", "user_name": "ALICE@example.com"}]}"#,
    );
    assert_eq!(
        env.run(&["apply", "--snapshot", arg(&first)]).status.code(),
        Some(0)
    );
    let snap = env.file("snap.json", SNAPSHOT);
    let out = env.run(&["plan", "--snapshot", arg(&snap), "--format", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let alice: Vec<&Value> = doc["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| {
            let name = op["target"]["user_name"].as_str().unwrap_or_default();
            name.eq_ignore_ascii_case("alice@example.com") && op["target"]["type"] == "user"
        })
        .collect();
    assert!(alice.is_empty(), "{alice:?}");
    let warnings = doc["warnings"].to_string();
    assert!(
        warnings.contains("ALICE@example.com") && warnings.contains("okta"),
        "{warnings}"
    );
    let text = stdout(&env.run(&["plan", "--snapshot", arg(&snap)]));
    assert!(
        text.contains("Warning: user \"ALICE@example.com\""),
        "{text}"
    );
}

#[test]
fn plan_for_one_user_shows_only_that_user() {
    let env = Env::new();
    let snap = env.file("snap.json", SNAPSHOT);
    let out = env.run(&[
        "plan",
        "--snapshot",
        arg(&snap),
        "--user",
        "bob@example.com",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("+ user bob@example.com") && !text.contains("alice"),
        "{text}"
    );
    assert!(text.contains("Plan: 3 to add"), "{text}");
}

#[test]
fn a_malformed_snapshot_is_reported_with_line_column_and_field() {
    let env = Env::new();
    let bad = env.file(
        "bad.json",
        "{\"idp\": \"entra\", \"complete\": true,\n \"users\": [{\"external_id\": \"u-1\", \"user_name\": 7}]}",
    );
    let out = env.run(&["plan", "--snapshot", arg(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("bad.json: line 2, column"), "{message}");
    assert!(message.contains("field users[0].user_name"), "{message}");
}

#[test]
fn the_audit_log_shows_what_apply_did_as_text_and_json() {
    let env = Env::new();
    let snap = env.file("snap.json", SNAPSHOT);
    assert_eq!(
        env.run(&["apply", "--snapshot", arg(&snap)]).status.code(),
        Some(0)
    );
    let text = env.run(&["audit"]);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    let lines = stdout(&text);
    assert!(lines.lines().next().is_some_and(|h| h.starts_with("AT")));
    assert_eq!(
        lines.lines().filter(|l| l.contains(" cli ")).count(),
        8,
        "{lines}"
    );

    let json = env.run(&["audit", "--format", "json", "--since", "1h"]);
    let entries: Vec<Value> = serde_json::from_slice(&json.stdout).expect("JSON array");
    assert_eq!(entries.len(), 8);
    assert!(entries
        .iter()
        .all(|e| e["trigger"] == "cli" && e["actor"] == "cli"));
    let future = env.run(&["audit", "--format", "json", "--since", "2999-01-01"]);
    let none: Vec<Value> = serde_json::from_slice(&future.stdout).expect("JSON array");
    assert!(none.is_empty());
}
