//! Golden files for the plan renderings: what operators read (text) and what scripts
//! parse (JSON) must not change by accident. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test it reconcile_golden::` and review the diff.

use chrono::TimeZone;
use scimsync::domain::{Membership, Role, Source, Team, TeamName, User, UserName};
use scimsync::reconcile::render::{render_json, render_text};
use scimsync::reconcile::snapshot::Snapshot;
use scimsync::reconcile::{plan, Actual, Plan, Policy};
use serde_json::json;
use std::path::PathBuf;
use uuid::Uuid;

fn at(days_ago: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
        .single()
        .expect("valid time")
        - chrono::Duration::days(days_ago)
}

fn user(n: u128, name: &str, ext: &str) -> User {
    User {
        id: Uuid::from_u128(0xa000 + n),
        user_name: UserName::parse(name).unwrap(),
        external_id: Some(ext.into()),
        email: Some(name.into()),
        display_name: None,
        given_name: None,
        family_name: None,
        role: Role::viewer(),
        active: true,
        attributes: Default::default(),
        source: Source::Sync("entra".into()),
        created: at(90),
        modified: at(90),
        version: 3,
    }
}

fn team(n: u128, name: &str, ext: &str) -> Team {
    Team {
        id: Uuid::from_u128(0xb000 + n),
        display_name: TeamName::parse(name).unwrap(),
        external_id: Some(ext.into()),
        metadata: Default::default(),
        source: Source::Sync("entra".into()),
        created: at(90),
        modified: at(90),
        version: 2,
    }
}

/// One plan with every kind of operation in it.
fn sample_plan() -> Plan {
    let mut bob = user(2, "bob@example.com", "u-2");
    bob.email = Some("bob@old.example.com".into());
    bob.attributes = json!({"department": "Research", "manager": "alice"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let carol = user(3, "carol@example.com", "u-3");
    let mut dave = user(4, "dave@example.com", "u-4");
    dave.active = false;
    dave.modified = at(45);
    let mut evals = team(1, "Evals", "g-1");
    evals.metadata = json!({"max_budget": 100, "models": ["gpt-4o"]})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let legacy = team(2, "Legacy", "g-2");
    let mut users = vec![bob, carol, dave];
    for i in 10..20 {
        users.push(user(i, &format!("staff{i}@example.com"), &format!("s-{i}")));
    }
    let actual = Actual {
        memberships: vec![
            Membership {
                team_id: evals.id,
                user_id: Uuid::from_u128(0xa003),
                source: Source::Sync("entra".into()),
            },
            Membership {
                team_id: evals.id,
                user_id: Uuid::from_u128(0xa002),
                source: Source::Sync("entra".into()),
            },
            // Legacy's group is gone from the IdP: deleting the team takes these along.
            Membership {
                team_id: legacy.id,
                user_id: Uuid::from_u128(0xa002),
                source: Source::Sync("entra".into()),
            },
            Membership {
                team_id: legacy.id,
                user_id: Uuid::from_u128(0xa003),
                source: Source::Sync("entra".into()),
            },
        ],
        team_keys: [(legacy.id, 3)].into_iter().collect(),
        users,
        teams: vec![evals, legacy],
        everything: true,
        ..Actual::default()
    };
    let mut staff = String::new();
    for i in 10..20 {
        staff.push_str(&format!(
            r#", {{"external_id": "s-{i}", "user_name": "staff{i}@example.com", "email": "staff{i}@example.com"}}"#
        ));
    }
    let snapshot = format!(
        r#"{{"idp": "entra", "complete": true,
        "users": [
          {{"external_id": "u-1", "user_name": "alice@example.com", "email": "alice@example.com", "display_name": "Alice"}},
          {{"external_id": "u-2", "user_name": "bob@example.com", "email": "bob@example.com",
            "attributes": {{"department": "Evaluation", "manager": "alice"}}}}{staff}],
        "groups": [
          {{"external_id": "g-1", "display_name": "LLM Evals", "members": ["u-1", "u-2"],
            "metadata": {{"max_budget": 250, "models": ["gpt-4o"]}}}},
          {{"external_id": "g-3", "display_name": "LLM Admins", "members": ["u-1"]}}]}}"#
    );
    let desired = Snapshot::parse(&snapshot).expect("valid").into_desired();
    let mut policy = Policy {
        now: at(0),
        allow_deletions: true,
        delete_after: Some(std::time::Duration::from_secs(30 * 86_400)),
        ..Policy::default()
    };
    policy.team_defaults.insert("max_budget".into(), json!(50));
    plan(&desired, &actual, &policy).expect("planned")
}

fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
            .unified_diff()
            .header("expected", "actual")
            .to_string();
        panic!("{name} differs from the golden file (UPDATE_GOLDEN=1 accepts it):\n{diff}");
    }
}

#[test]
fn the_text_rendering_matches_the_golden_file() {
    check_golden("plan.txt", &render_text(&sample_plan(), false));
}

#[test]
fn the_json_rendering_matches_the_golden_file() {
    check_golden("plan.json", &render_json(&sample_plan()));
}

#[test]
fn an_empty_plan_says_there_is_nothing_to_do() {
    let mut p = sample_plan();
    p.ops.clear();
    p.warnings.clear();
    assert_eq!(
        render_text(&p, false),
        "No changes. The store matches the desired state.\n"
    );
}

#[test]
fn colour_is_only_used_when_asked_for() {
    let p = sample_plan();
    assert!(!render_text(&p, false).contains('\x1b'));
    assert!(render_text(&p, true).contains("\x1b[32m+"));
}

#[test]
fn the_streamed_json_says_what_op_record_says_for_every_operation() {
    let plan = sample_plan();
    let doc: serde_json::Value = serde_json::from_str(&render_json(&plan)).expect("valid JSON");
    let streamed = doc["operations"].as_array().expect("operations");
    assert_eq!(streamed.len(), plan.ops.len());
    for (line, op) in streamed.iter().zip(&plan.ops) {
        let record =
            serde_json::to_value(scimsync::reconcile::render::op_record(&plan, op)).unwrap();
        assert_eq!(line, &record);
    }
}

/// A plan the membership guard refuses: a group the IdP suddenly answers empty, beside
/// a newcomer added elsewhere. The whole plan is shown, its removals marked.
fn refused_plan() -> Plan {
    let evals = team(1, "Evals", "g-1");
    let mut users = Vec::new();
    let mut memberships = Vec::new();
    let mut listed = String::new();
    for i in 10..22 {
        let u = user(i, &format!("staff{i}@example.com"), &format!("s-{i}"));
        memberships.push(Membership {
            team_id: evals.id,
            user_id: u.id,
            source: Source::Sync("entra".into()),
        });
        users.push(u);
        listed.push_str(&format!(
            r#"{{"external_id": "s-{i}", "user_name": "staff{i}@example.com", "email": "staff{i}@example.com"}}, "#
        ));
    }
    let actual = Actual {
        users,
        teams: vec![evals],
        memberships,
        everything: true,
        ..Actual::default()
    };
    let snapshot = format!(
        r#"{{"idp": "entra", "complete": true,
        "users": [{listed}{{"external_id": "u-9", "user_name": "zoe@example.com", "email": "zoe@example.com"}}],
        "groups": [
          {{"external_id": "g-1", "display_name": "Evals", "members": []}},
          {{"external_id": "g-2", "display_name": "Newcomers", "members": ["u-9"]}}]}}"#
    );
    let desired = Snapshot::parse(&snapshot).expect("valid").into_desired();
    let policy = Policy {
        now: at(0),
        ..Policy::default()
    };
    plan(&desired, &actual, &policy).expect("a refused plan is still a plan")
}

#[test]
fn a_refused_plan_renders_whole_with_its_removals_marked_as_in_the_golden_file() {
    let refused = refused_plan();
    assert!(refused.refusal().is_some());
    check_golden("plan_refused.txt", &render_text(&refused, false));
}

#[test]
fn a_refused_json_plan_carries_the_verdict_as_in_the_golden_file() {
    let refused = refused_plan();
    let json = render_json(&refused);
    check_golden("plan_refused.json", &json);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(doc["guard"]["refused"], true);
    assert_eq!(doc["guard"]["guard"], "membership_removals");
    assert_eq!(doc["guard"]["deletions"], 12);
    assert_eq!(doc["guard"]["limit"], 10);
    assert_eq!(doc["guard"]["allowed_by"], "--allow-deletions");
    let ops = doc["operations"].as_array().expect("operations");
    for op in ops {
        let removal = op["kind"] == "remove_member" || op["kind"] == "purge_keys";
        assert_eq!(op.get("refused").is_some(), removal, "{op}");
    }
}
