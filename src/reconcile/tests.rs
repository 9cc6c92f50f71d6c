//! Specifications of the planner, and property tests that check them for random states.
//! An in-memory `apply` stands in for the store, so these run without a database.

use super::apply::{set_team_attr, set_user_attr, team_from_new, user_from_new};
use super::snapshot::{Snapshot, SnapshotError};
use super::*;
use crate::domain::{Membership, PurgeReason, Role, Source, Team, TeamName, User, UserName};
use crate::store::WriteTx;
use chrono::TimeZone;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::Map;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

fn policy() -> Policy {
    Policy {
        now: now(),
        ..Policy::default()
    }
}

fn entra() -> Source {
    Source::Sync("entra".into())
}

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(0x1000 + n)
}

fn tid(n: u128) -> Uuid {
    Uuid::from_u128(0x2000 + n)
}

fn user(n: u128, name: &str, ext: Option<&str>, source: Source) -> User {
    User {
        id: uid(n),
        user_name: UserName::parse(name).unwrap(),
        external_id: ext.map(str::to_owned),
        email: None,
        display_name: None,
        given_name: None,
        family_name: None,
        role: Role::viewer(),
        active: true,
        attributes: Map::new(),
        source,
        created: now() - chrono::Duration::days(30),
        modified: now() - chrono::Duration::days(30),
        version: 1,
    }
}

fn team(n: u128, name: &str, ext: Option<&str>, source: Source) -> Team {
    Team {
        id: tid(n),
        display_name: TeamName::parse(name).unwrap(),
        external_id: ext.map(str::to_owned),
        metadata: Map::new(),
        source,
        created: now() - chrono::Duration::days(30),
        modified: now() - chrono::Duration::days(30),
        version: 1,
    }
}

fn member(team: u128, user: u128, source: Source) -> Membership {
    Membership {
        team_id: tid(team),
        user_id: uid(user),
        source,
    }
}

fn actual(users: Vec<User>, teams: Vec<Team>, memberships: Vec<Membership>) -> Actual {
    Actual {
        users,
        teams,
        memberships,
        everything: true,
        ..Actual::default()
    }
}

fn snapshot(json: &str) -> Desired {
    Snapshot::parse(json).unwrap().into_desired()
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.ops.iter().map(|op| op.kind().as_str()).collect()
}

/// Applies a plan to an in-memory state the way `apply` does to the store.
fn apply_in_memory(a: &Actual, plan: &Plan, at: DateTime<Utc>) -> Actual {
    let mut users: BTreeMap<Uuid, User> = a.users.iter().map(|u| (u.id, u.clone())).collect();
    let mut teams: BTreeMap<Uuid, Team> = a.teams.iter().map(|t| (t.id, t.clone())).collect();
    let mut members: BTreeMap<(Uuid, Uuid), Source> = a
        .memberships
        .iter()
        .map(|m| ((m.team_id, m.user_id), m.source.clone()))
        .collect();
    for op in &plan.ops {
        match op {
            Op::CreateUser(n) => {
                users.entry(n.id).or_insert_with(|| user_from_new(n, at));
            }
            Op::UpdateUser { id, changes } => {
                if let Some(u) = users.get_mut(id) {
                    for c in changes {
                        set_user_attr(u, c).unwrap();
                    }
                    u.version += 1;
                    u.modified = at;
                }
            }
            Op::DeactivateUser { id } => {
                if let Some(u) = users.get_mut(id) {
                    u.active = false;
                    u.version += 1;
                    u.modified = at;
                }
            }
            Op::DeleteUser { id } => {
                users.remove(id);
                members.retain(|(_, u), _| u != id);
            }
            Op::CreateTeam(n) => {
                teams.entry(n.id).or_insert_with(|| team_from_new(n, at));
            }
            Op::UpdateTeam { id, changes } => {
                if let Some(t) = teams.get_mut(id) {
                    for c in changes {
                        set_team_attr(t, c).unwrap();
                    }
                    t.version += 1;
                }
            }
            Op::DeleteTeam { id } => {
                teams.remove(id);
                members.retain(|(t, _), _| t != id);
            }
            Op::AddMember { team_id, user_id } => {
                members
                    .entry((*team_id, *user_id))
                    .or_insert_with(|| plan.source.clone());
            }
            Op::RemoveMember { team_id, user_id } => {
                members.remove(&(*team_id, *user_id));
            }
            Op::BlockKeys { .. } | Op::UnblockKeys { .. } | Op::PurgeKeys { .. } => {}
        }
    }
    // The store's constraints: unique folded userNames, memberships of existing rows.
    let names: BTreeSet<&str> = users.values().map(|u| u.user_name.folded()).collect();
    assert_eq!(
        names.len(),
        users.len(),
        "a plan left two users with one userName"
    );
    for (t, u) in members.keys() {
        assert!(
            teams.contains_key(t) && users.contains_key(u),
            "a membership of a missing row"
        );
    }
    Actual {
        users: users.into_values().collect(),
        teams: teams.into_values().collect(),
        memberships: members
            .into_iter()
            .map(|((team_id, user_id), source)| Membership {
                team_id,
                user_id,
                source,
            })
            .collect(),
        everything: true,
        ..Actual::default()
    }
}

const SNAPSHOT: &str = r#"{"idp": "entra", "complete": true,
 "users":  [{"external_id": "u-1", "user_name": "alice@example.com", "email": "alice@example.com",
             "display_name": "Alice", "given_name": "Alice", "family_name": "Ng", "active": true},
            {"external_id": "u-2", "user_name": "bob@example.com"}],
 "groups": [{"external_id": "g-1", "display_name": "Production LLM Evals Group",
             "members": ["u-1", "u-2"]}]}"#;

#[test]
fn a_snapshot_against_an_empty_store_creates_users_then_teams_then_memberships() {
    let plan = plan(&snapshot(SNAPSHOT), &Actual::default(), &policy()).unwrap();
    assert_eq!(
        kinds(&plan),
        [
            "create_user",
            "create_user",
            "create_team",
            "add_member",
            "add_member"
        ]
    );
    let c = plan.counts();
    assert_eq!((c.add, c.change, c.destroy), (5, 0, 0));
    for op in &plan.ops {
        if let Op::CreateUser(u) = op {
            assert_eq!(u.source, entra());
            assert_eq!(u.role, Role::viewer());
        }
    }
}

#[test]
fn planning_the_same_inputs_twice_gives_byte_identical_plans_whatever_the_row_order() {
    let users = vec![
        user(1, "carol@example.com", Some("u-3"), entra()),
        user(2, "dave@example.com", Some("u-4"), entra()),
    ];
    let teams = vec![team(1, "Old Group", Some("g-9"), entra())];
    let ms = vec![member(1, 1, entra()), member(1, 2, entra())];
    let a = actual(users.clone(), teams.clone(), ms.clone());
    let mut reversed = actual(users, teams, ms);
    reversed.users.reverse();
    reversed.memberships.reverse();
    let mut p = policy();
    p.allow_deletions = true;
    let one = serde_json::to_string(&plan(&snapshot(SNAPSHOT), &a, &p).unwrap()).unwrap();
    let two = serde_json::to_string(&plan(&snapshot(SNAPSHOT), &a, &p).unwrap()).unwrap();
    let three = serde_json::to_string(&plan(&snapshot(SNAPSHOT), &reversed, &p).unwrap()).unwrap();
    assert_eq!(one, two);
    assert_eq!(one, three);
}

#[test]
fn new_ids_are_derived_from_the_idp_and_external_id_so_replanning_proposes_the_same_ids() {
    let a = plan(&snapshot(SNAPSHOT), &Actual::default(), &policy()).unwrap();
    let b = plan(&snapshot(SNAPSHOT), &Actual::default(), &policy()).unwrap();
    assert_eq!(a.user_names, b.user_names);
    assert_eq!(a.team_names, b.team_names);
}

#[test]
fn an_existing_account_is_adopted_by_user_name_case_insensitively_and_keeps_its_id() {
    let existing = user(7, "Alice@Example.COM", None, Source::Manual);
    let a = actual(vec![existing], vec![], vec![]);
    let plan = plan(&snapshot(SNAPSHOT), &a, &policy()).unwrap();
    let update = plan
        .ops
        .iter()
        .find_map(|op| match op {
            Op::UpdateUser { id, changes } => Some((*id, changes.clone())),
            _ => None,
        })
        .expect("alice is updated, not created");
    assert_eq!(update.0, uid(7));
    let attrs: Vec<&str> = update.1.iter().map(|c| c.attribute.as_str()).collect();
    assert!(
        attrs.contains(&"external_id") && attrs.contains(&"source"),
        "{attrs:?}"
    );
    assert!(!plan
        .ops
        .iter()
        .any(|op| matches!(op, Op::CreateUser(u) if u.user_name.folded() == "alice@example.com")));
}

#[test]
fn a_user_is_matched_by_external_id_before_user_name_so_a_rename_is_an_update() {
    let a = actual(
        vec![user(1, "alice.old@example.com", Some("u-1"), entra())],
        vec![],
        vec![],
    );
    let plan = plan(&snapshot(SNAPSHOT), &a, &policy()).unwrap();
    let renamed = plan.ops.iter().any(|op| {
        matches!(op, Op::UpdateUser { id, changes } if *id == uid(1)
            && changes.iter().any(|c| c.attribute == "user_name" && c.after == "alice@example.com"))
    });
    assert!(renamed, "{:?}", plan.ops);
}

#[test]
fn a_user_missing_from_a_complete_pull_is_deactivated_and_their_keys_blocked() {
    let mut users = vec![user(9, "gone@example.com", Some("u-9"), entra())];
    // Enough managed users that one deactivation stays under the 20% guard.
    for i in 10..20 {
        users.push(user(
            i,
            &format!("u{i}@example.com"),
            Some(&format!("x-{i}")),
            entra(),
        ));
    }
    let mut desired = snapshot(SNAPSHOT);
    for u in &users[1..] {
        desired.users.push(DesiredUser {
            external_id: u.external_id.clone(),
            ..DesiredUser::new(u.user_name.clone())
        });
    }
    let plan = plan(&desired, &actual(users, vec![], vec![]), &policy()).unwrap();
    let tail: Vec<&Op> = plan
        .ops
        .iter()
        .filter(|op| op.user_id() == Some(uid(9)))
        .collect();
    assert_eq!(
        tail,
        [
            &Op::DeactivateUser { id: uid(9) },
            &Op::BlockKeys { user_id: uid(9) }
        ]
    );
}

#[test]
fn users_of_other_sources_missing_from_a_pull_are_left_alone() {
    let a = actual(
        vec![
            user(1, "manual@example.com", None, Source::Manual),
            user(2, "scim@example.com", None, Source::Scim("default".into())),
            user(3, "okta@example.com", None, Source::Sync("okta".into())),
        ],
        vec![],
        vec![],
    );
    let plan = plan(&snapshot(SNAPSHOT), &a, &policy()).unwrap();
    assert!(plan
        .ops
        .iter()
        .all(|op| !matches!(op.user_id(), Some(id) if [uid(1), uid(2), uid(3)].contains(&id))));
}

#[test]
fn a_partial_pull_adds_and_updates_but_never_removes_deactivates_or_deletes() {
    let a = actual(
        vec![
            user(1, "gone@example.com", Some("u-9"), entra()),
            user(2, "alice@example.com", Some("u-1"), entra()),
        ],
        vec![
            team(1, "Production LLM Evals Group", Some("g-1"), entra()),
            team(2, "Gone Group", Some("g-2"), entra()),
        ],
        vec![member(1, 1, entra())],
    );
    let mut desired = snapshot(SNAPSHOT);
    desired.complete = false;
    let mut p = policy();
    p.delete_after = Some(std::time::Duration::ZERO);
    let plan = plan(&desired, &a, &p).unwrap();
    assert!(plan.ops.iter().all(|op| !matches!(
        op,
        Op::DeactivateUser { .. }
            | Op::DeleteUser { .. }
            | Op::DeleteTeam { .. }
            | Op::RemoveMember { .. }
            | Op::PurgeKeys { .. }
    )));
    assert!(kinds(&plan).contains(&"add_member"));
}

#[test]
fn a_deactivated_user_is_deleted_with_their_keys_only_once_delete_after_has_passed() {
    let mut gone = user(9, "gone@example.com", Some("u-9"), entra());
    gone.active = false;
    gone.modified = now() - chrono::Duration::days(10);
    let mut others: Vec<User> = (10..30)
        .map(|i| {
            user(
                i,
                &format!("u{i}@example.com"),
                Some(&format!("x-{i}")),
                entra(),
            )
        })
        .collect();
    let mut desired = snapshot(SNAPSHOT);
    for u in &others {
        desired.users.push(DesiredUser {
            external_id: u.external_id.clone(),
            ..DesiredUser::new(u.user_name.clone())
        });
    }
    others.push(gone);
    let a = actual(others, vec![], vec![]);

    let mut p = policy();
    p.delete_after = None;
    assert!(!kinds(&plan(&desired, &a, &p).unwrap()).contains(&"delete_user"));
    p.delete_after = Some(std::time::Duration::from_secs(30 * 86_400));
    assert!(!kinds(&plan(&desired, &a, &p).unwrap()).contains(&"delete_user"));
    p.delete_after = Some(std::time::Duration::from_secs(7 * 86_400));
    let plan = plan(&desired, &a, &p).unwrap();
    let ops: Vec<&Op> = plan
        .ops
        .iter()
        .filter(|op| op.user_id() == Some(uid(9)))
        .collect();
    assert_eq!(
        ops,
        [
            &Op::PurgeKeys {
                user_id: Some(uid(9)),
                team_id: None,
                reason: PurgeReason::UserDeleted
            },
            &Op::DeleteUser { id: uid(9) }
        ]
    );
    assert_eq!(plan.ops.last(), Some(&Op::DeleteUser { id: uid(9) }));
}

#[test]
fn manual_teams_and_memberships_are_never_touched_and_a_name_clash_is_reported() {
    let a = actual(
        vec![
            user(1, "alice@example.com", Some("u-1"), entra()),
            user(2, "zed@example.com", None, Source::Manual),
        ],
        vec![
            team(1, "Production LLM Evals Group", None, Source::Manual),
            team(2, "Ops", Some("g-2"), entra()),
        ],
        vec![
            member(1, 2, Source::Manual),
            member(2, 2, Source::Manual),
            member(2, 1, entra()),
        ],
    );
    let mut p = policy();
    p.allow_deletions = true;
    let plan = plan(&snapshot(SNAPSHOT), &a, &p).unwrap();
    assert!(
        plan.ops.iter().all(|op| op.team_id() != Some(tid(1))),
        "{:?}",
        plan.ops
    );
    assert!(
        plan.warnings.iter().any(|w| w.contains("owned by manual")),
        "{:?}",
        plan.warnings
    );
    // Ops (owned by the IdP, no longer listed) goes, but zed's manual membership is not
    // removed one by one; only alice's IdP-owned one would have been.
    assert!(!plan
        .ops
        .iter()
        .any(|op| matches!(op, Op::RemoveMember { user_id, .. } if *user_id == uid(2))));
}

/// 30 users of the IdP, all in one team; a snapshot that keeps the users and the team
/// but lists `members` for it.
fn one_big_team(members: &[u128]) -> (Actual, String) {
    let users: Vec<User> = (0..30)
        .map(|i| {
            user(
                i,
                &format!("u{i}@example.com"),
                Some(&format!("x-{i}")),
                entra(),
            )
        })
        .collect();
    let roster = (0..30).map(|i| member(1, i, entra())).collect();
    let a = actual(
        users,
        vec![team(1, "Everyone", Some("g-1"), entra())],
        roster,
    );
    let users_json: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"external_id": "x-{i}", "user_name": "u{i}@example.com"}}"#))
        .collect();
    let members_json: Vec<String> = members.iter().map(|i| format!(r#""x-{i}""#)).collect();
    let json = format!(
        r#"{{"idp": "entra", "complete": true, "users": [{}],
            "groups": [{{"external_id": "g-1", "display_name": "Everyone", "members": [{}]}}]}}"#,
        users_json.join(", "),
        members_json.join(", ")
    );
    (a, json)
}

#[test]
fn a_pull_that_suddenly_empties_a_team_is_refused_by_the_guard() {
    let (a, emptied) = one_big_team(&[]);
    let err = refusal(&snapshot(&emptied), &a, &policy());
    match &err {
        PlanError::MembershipGuard {
            removals, limit, ..
        } => assert_eq!((*removals, *limit), (30, 10)),
        other => panic!("expected the membership guard, got {other:?}"),
    }
    assert!(err.to_string().contains("--allow-deletions"), "{err}");
    let mut p = policy();
    p.allow_deletions = true;
    assert_eq!(
        plan(&snapshot(&emptied), &a, &p).unwrap().counts().destroy,
        30
    );
}

#[test]
fn a_few_people_leaving_a_team_pass_the_guard() {
    let (a, ten_left) = one_big_team(&(10..30).collect::<Vec<_>>());
    let plan = plan(&snapshot(&ten_left), &a, &policy()).expect("within the limit");
    assert_eq!(
        plan.ops
            .iter()
            .filter(|op| matches!(op, Op::RemoveMember { .. }))
            .count(),
        10
    );
    let (a, eleven_left) = one_big_team(&(11..30).collect::<Vec<_>>());
    assert!(matches!(
        plan_err(&snapshot(&eleven_left), &a),
        PlanError::MembershipGuard { removals: 11, .. }
    ));
}

#[test]
fn the_membership_guard_has_limits_of_its_own() {
    let (a, emptied) = one_big_team(&[]);
    // A tight deletion guard does not hold memberships once they have their own limits...
    let mut config = crate::config::Config::default();
    config.safety.max_deletions = 1;
    config.safety.max_membership_removals = Some(1_000);
    config.safety.max_membership_removal_ratio = Some(1.0);
    let p = Policy::from_config(&config, now());
    assert_eq!(
        plan(&snapshot(&emptied), &a, &p).unwrap().counts().destroy,
        30
    );
    // ... and a generous one does not loosen them.
    let mut config = crate::config::Config::default();
    config.safety.max_deletions = 10_000;
    config.safety.max_deletion_ratio = 1.0;
    config.safety.max_membership_removals = Some(5);
    let p = Policy::from_config(&config, now());
    let refused = refusal(&snapshot(&emptied), &a, &p);
    assert!(
        matches!(refused, PlanError::MembershipGuard { limit: 5, .. }),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("max_membership_removals = 5"),
        "{refused}"
    );
    // Unset, they are the deletion guard's, as before they existed.
    let defaults = crate::config::SafetyConfig::default();
    assert_eq!(defaults.membership_removals(), defaults.max_deletions);
    assert_eq!(
        defaults.membership_removal_ratio(),
        defaults.max_deletion_ratio
    );
}

fn plan_err(desired: &Desired, a: &Actual) -> PlanError {
    refusal(desired, a, &policy())
}

/// The refusal a guard's verdict stands for (the error `apply` reports).
fn refusal(desired: &Desired, a: &Actual, p: &Policy) -> PlanError {
    let planned = plan(desired, a, p).expect("a refused plan is still a plan");
    let verdict = planned.refusal().expect("the guard refuses it");
    assert_eq!(check_deletion_guard(&planned, a, p), Err(verdict.error()));
    verdict.error()
}

#[test]
fn a_refused_plan_is_the_whole_plan_with_the_verdict_and_its_removals_marked() {
    let (a, emptied) = one_big_team(&[]);
    let refused = plan(&snapshot(&emptied), &a, &policy()).expect("planned");
    let removals: Vec<&Op> = refused
        .ops
        .iter()
        .filter(|op| matches!(op, Op::RemoveMember { .. }))
        .collect();
    assert_eq!(removals.len(), 30, "every removal is in the plan");
    assert!(removals.iter().all(|op| refused.is_refused(op)));
    assert_eq!(
        refused.guard,
        Some(GuardVerdict {
            guard: Guard::MembershipRemovals,
            refused: true,
            count: 30,
            with_deleted_teams: 0,
            limit: 10,
            managed: 30,
            max: policy().max_membership_removals,
            max_ratio: policy().max_membership_removal_ratio,
        })
    );
    let reason = refused.guard.as_ref().unwrap().reason();
    assert!(
        reason.starts_with("refusing to remove 30 of 30") && reason.contains(ALLOW_DELETIONS_FLAG),
        "{reason}"
    );
    // The verdict survives the saved plan's round trip.
    let saved: Plan = serde_json::from_str(&serde_json::to_string(&refused).unwrap()).unwrap();
    assert_eq!(saved.guard, refused.guard);

    // Lifted: the same verdict, not refused, and nothing is marked.
    let mut p = policy();
    p.allow_deletions = true;
    let lifted = plan(&snapshot(&emptied), &a, &p).unwrap();
    assert_eq!(lifted.ops, refused.ops);
    let verdict = lifted.guard.clone().expect("the verdict is kept");
    assert!(!verdict.refused && lifted.refusal().is_none());
    assert!(!lifted.ops.iter().any(|op| lifted.is_refused(op)));
    assert_eq!(check_deletion_guard(&lifted, &a, &p), Ok(()));

    // Within the limits there is no verdict at all.
    let (a, ten_left) = one_big_team(&(10..30).collect::<Vec<_>>());
    assert_eq!(
        plan(&snapshot(&ten_left), &a, &policy()).unwrap().guard,
        None
    );
}

#[test]
fn the_deletion_guard_verdict_counts_deactivations_against_the_managed_users() {
    let users: Vec<User> = (0..10)
        .map(|i| {
            user(
                i,
                &format!("u{i}@example.com"),
                Some(&format!("x-{i}")),
                entra(),
            )
        })
        .collect();
    let a = actual(users, vec![], vec![]);
    let empty = r#"{"idp": "entra", "complete": true, "users": [], "groups": []}"#;
    let planned = plan(&snapshot(empty), &a, &policy()).unwrap();
    let verdict = planned.refusal().expect("refused");
    assert_eq!(
        (verdict.guard, verdict.count, verdict.limit, verdict.managed),
        (Guard::Deletions, 10, 2, 10)
    );
    assert_eq!(
        planned.counts().change,
        10,
        "all ten deactivations are shown"
    );
    let deactivations = planned
        .ops
        .iter()
        .filter(|op| matches!(op, Op::DeactivateUser { .. }));
    assert!(deactivations.clone().count() == 10);
    for op in deactivations {
        assert!(planned.is_refused(op));
    }
    // Blocking keys goes with a deactivation but is not what the guard refuses.
    assert!(planned
        .ops
        .iter()
        .filter(|op| matches!(op, Op::BlockKeys { .. }))
        .all(|op| !planned.is_refused(op)));
}

#[test]
fn holding_removals_plans_the_additions_and_updates_and_says_what_it_left_out() {
    // Of 30 members, the IdP now lists 5 plus a newcomer, and drops a user and a team.
    let (mut a, _) = one_big_team(&[]);
    a.teams.push(team(2, "Gone", Some("g-2"), entra()));
    a.memberships.push(member(2, 0, entra()));
    let mut users: Vec<String> = (0..29)
        .map(|i| format!(r#"{{"external_id": "x-{i}", "user_name": "u{i}@example.com", "display_name": "U{i}"}}"#))
        .collect();
    users.push(r#"{"external_id": "x-new", "user_name": "new@example.com"}"#.into());
    let json = format!(
        r#"{{"idp": "entra", "complete": true, "users": [{}],
            "groups": [{{"external_id": "g-1", "display_name": "Everyone",
                         "members": ["x-0", "x-1", "x-2", "x-3", "x-4", "x-new"]}}]}}"#,
        users.join(", ")
    );
    let whole = plan(&snapshot(&json), &a, &policy()).unwrap();
    assert!(whole.refusal().is_some());
    let held_policy = Policy {
        hold_removals: true,
        ..policy()
    };
    let held = plan(&snapshot(&json), &a, &held_policy).unwrap();
    assert_eq!(held.guard, None, "nothing left for a guard to refuse");
    assert!(
        !held.ops.iter().any(super::is_guarded),
        "{:?}",
        kinds(&held)
    );
    // Everything else of the whole plan is there, but for the keys a held
    // deactivation would have blocked.
    let deactivated: BTreeSet<Uuid> = whole
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::DeactivateUser { id } => Some(*id),
            _ => None,
        })
        .collect();
    let kept: Vec<&Op> = whole
        .ops
        .iter()
        .filter(|op| !super::is_guarded(op))
        .filter(|op| !matches!(op, Op::BlockKeys { user_id } if deactivated.contains(user_id)))
        .collect();
    assert_eq!(held.ops.iter().collect::<Vec<_>>(), kept);
    assert!(held.ops.contains(&Op::AddMember {
        team_id: tid(1),
        user_id: whole
            .user_names
            .iter()
            .find(|(_, n)| n.as_str() == "new@example.com")
            .map(|(id, _)| *id)
            .unwrap(),
    }));
    assert_eq!(held.counts().change, 29, "display names are updated");
    assert_eq!(
        held.warnings
            .iter()
            .filter(|w| w.starts_with("removals held back"))
            .collect::<Vec<_>>(),
        [
            &"removals held back while a refused plan of IdP \"entra\" is in quarantine \
           (scimsync plans list): 1 user deactivation(s) or deletion(s), 1 team deletion(s) \
           and 25 membership removal(s) are left out of this plan"
                .to_owned()
        ]
    );
}

#[test]
fn the_deletion_guard_refuses_a_mass_deactivation_unless_deletions_are_allowed() {
    let users: Vec<User> = (0..10)
        .map(|i| {
            user(
                i,
                &format!("u{i}@example.com"),
                Some(&format!("x-{i}")),
                entra(),
            )
        })
        .collect();
    let a = actual(users, vec![], vec![]);
    let empty = r#"{"idp": "entra", "complete": true, "users": [], "groups": []}"#;
    let err = refusal(&snapshot(empty), &a, &policy());
    match &err {
        PlanError::DeletionGuard {
            deletions, limit, ..
        } => assert_eq!((*deletions, *limit), (10, 2)),
        other => panic!("expected the guard, got {other:?}"),
    }
    assert!(err.to_string().contains("--allow-deletions"), "{err}");
    let mut p = policy();
    p.allow_deletions = true;
    assert_eq!(plan(&snapshot(empty), &a, &p).unwrap().counts().change, 10);
    // The same emptiness from a partial pull is harmless.
    let partial = r#"{"idp": "entra", "complete": false, "users": [], "groups": []}"#;
    assert!(plan(&snapshot(partial), &a, &policy()).unwrap().is_empty());
}

#[test]
fn leaving_a_team_purges_the_keys_for_that_team_unless_configured_otherwise() {
    let users: Vec<User> = (1..=2)
        .map(|i| {
            user(
                i,
                ["", "alice@example.com", "bob@example.com"][i as usize],
                Some(&format!("u-{i}")),
                entra(),
            )
        })
        .collect();
    let a = actual(
        users,
        vec![team(1, "Production LLM Evals Group", Some("g-1"), entra())],
        vec![member(1, 1, entra()), member(1, 2, entra())],
    );
    let only_alice = SNAPSHOT.replace(r#""members": ["u-1", "u-2"]"#, r#""members": ["u-1"]"#);
    let mut plan_with = plan(&snapshot(&only_alice), &a, &policy()).unwrap();
    plan_with
        .ops
        .retain(|op| !matches!(op, Op::UpdateUser { .. }));
    assert_eq!(
        plan_with.ops,
        [
            Op::RemoveMember {
                team_id: tid(1),
                user_id: uid(2)
            },
            Op::PurgeKeys {
                user_id: Some(uid(2)),
                team_id: Some(tid(1)),
                reason: PurgeReason::RemovedFromTeam
            }
        ]
    );
    let mut p = policy();
    p.purge_team_keys_on_removal = false;
    let without = plan(&snapshot(&only_alice), &a, &p).unwrap();
    assert!(!kinds(&without).contains(&"purge_keys"));
    assert!(kinds(&without).contains(&"remove_member"));
}

#[test]
fn reactivating_a_user_unblocks_the_keys_provisioning_blocked() {
    let mut alice = user(1, "alice@example.com", Some("u-1"), entra());
    alice.active = false;
    let a = actual(
        vec![alice, user(2, "bob@example.com", Some("u-2"), entra())],
        vec![],
        vec![],
    );
    let mut desired = snapshot(SNAPSHOT);
    desired.teams.clear();
    let plan = plan(&desired, &a, &policy()).unwrap();
    let ops: Vec<&Op> = plan
        .ops
        .iter()
        .filter(|op| op.user_id() == Some(uid(1)))
        .collect();
    assert!(
        matches!(ops[0], Op::UpdateUser { changes, .. } if changes.iter().any(|c| c.attribute == "active"))
    );
    assert_eq!(ops[ops.len() - 1], &Op::UnblockKeys { user_id: uid(1) });
}

#[test]
fn role_groups_give_their_members_the_role_and_leaving_takes_it_back() {
    let mut p = policy();
    p.role_groups.insert(
        "production llm evals group".into(),
        Role::parse("admin").unwrap(),
    );
    let plan1 = plan(&snapshot(SNAPSHOT), &Actual::default(), &p).unwrap();
    for op in &plan1.ops {
        if let Op::CreateUser(u) = op {
            assert_eq!(u.role.as_str(), "admin");
        }
    }
    let state = apply_in_memory(&Actual::default(), &plan1, now());
    let only_alice = SNAPSHOT.replace(r#""members": ["u-1", "u-2"]"#, r#""members": ["u-1"]"#);
    let plan2 = plan(&snapshot(&only_alice), &state, &p).unwrap();
    let bob = state
        .users
        .iter()
        .find(|u| u.user_name.as_str() == "bob@example.com")
        .unwrap()
        .id;
    assert!(
        plan2.ops.iter().any(
            |op| matches!(op, Op::UpdateUser { id, changes } if *id == bob
        && changes.iter().any(|c| c.attribute == "role" && c.after == "viewer"))
        ),
        "{:?}",
        plan2.ops
    );
}

#[test]
fn an_auto_created_team_starts_with_the_configured_defaults() {
    let mut p = policy();
    p.team_defaults
        .insert("max_budget".into(), serde_json::json!(100));
    let plan = plan(&snapshot(SNAPSHOT), &Actual::default(), &p).unwrap();
    let created = plan.ops.iter().find_map(|op| match op {
        Op::CreateTeam(t) => Some(t),
        _ => None,
    });
    assert_eq!(
        created.unwrap().metadata.get("max_budget"),
        Some(&serde_json::json!(100))
    );
}

fn scim(users: Vec<DesiredUser>, teams: Vec<DesiredTeam>) -> Desired {
    Desired {
        users,
        teams,
        ..Desired::new(Source::Scim("default".into()), Scope::Listed)
    }
}

#[test]
fn a_scim_create_with_a_taken_user_name_is_refused_as_taken() {
    let a = Actual {
        users: vec![user(1, "alice@example.com", None, Source::Manual)],
        ..Actual::default()
    };
    let d = scim(
        vec![DesiredUser {
            id: Some(uid(99)),
            intent: Intent::Create,
            ..DesiredUser::new(UserName::parse("ALICE@example.com").unwrap())
        }],
        vec![],
    );
    assert_eq!(
        plan(&d, &a, &policy()).unwrap_err(),
        PlanError::UserNameTaken {
            user_name: "ALICE@example.com".into()
        }
    );
}

#[test]
fn a_scim_update_or_delete_of_a_missing_resource_is_not_found() {
    let d = scim(
        vec![DesiredUser {
            id: Some(uid(5)),
            intent: Intent::Update,
            ..DesiredUser::new(UserName::parse("x").unwrap())
        }],
        vec![],
    );
    assert!(matches!(
        plan(&d, &Actual::default(), &policy()),
        Err(PlanError::NotFound {
            kind: ResourceKind::User,
            ..
        })
    ));
    let mut d = scim(vec![], vec![]);
    d.delete_teams.push(tid(3));
    assert!(matches!(
        plan(&d, &Actual::default(), &policy()),
        Err(PlanError::NotFound {
            kind: ResourceKind::Team,
            ..
        })
    ));
}

#[test]
fn a_scim_delete_purges_keys_first_and_is_not_subject_to_the_guard() {
    let a = Actual {
        users: vec![user(
            1,
            "alice@example.com",
            None,
            Source::Scim("default".into()),
        )],
        ..Actual::default()
    };
    let mut d = scim(vec![], vec![]);
    d.delete_users.push(uid(1));
    assert_eq!(
        kinds(&plan(&d, &a, &policy()).unwrap()),
        ["purge_keys", "delete_user"]
    );
}

fn patch_members(add: Vec<MemberRef>, remove: Vec<MemberRef>) -> Desired {
    scim(
        vec![],
        vec![DesiredTeam {
            id: Some(tid(1)),
            intent: Intent::Update,
            members: MemberSpec::Delta { add, remove },
            ..DesiredTeam::new(TeamName::parse("Evals").unwrap())
        }],
    )
}

#[test]
fn a_scim_patch_naming_an_unknown_member_is_rejected_or_skipped_as_configured() {
    let a = Actual {
        users: vec![user(
            1,
            "alice@example.com",
            None,
            Source::Scim("default".into()),
        )],
        teams: vec![team(1, "Evals", None, Source::Scim("default".into()))],
        ..Actual::default()
    };
    let d = patch_members(
        vec![MemberRef::UserId(uid(1)), MemberRef::UserId(uid(2))],
        vec![],
    );
    assert_eq!(
        plan(&d, &a, &policy()).unwrap_err(),
        PlanError::UnknownMember {
            id: uid(2).to_string()
        }
    );
    let mut p = policy();
    p.unknown_members = crate::config::UnknownMembers::Ignore;
    assert_eq!(kinds(&plan(&d, &a, &p).unwrap()), ["add_member"]);
}

#[test]
fn a_scim_patch_does_not_remove_a_manual_membership() {
    let a = Actual {
        users: vec![user(
            1,
            "alice@example.com",
            None,
            Source::Scim("default".into()),
        )],
        teams: vec![team(1, "Evals", None, Source::Scim("default".into()))],
        memberships: vec![member(1, 1, Source::Manual)],
        ..Actual::default()
    };
    let d = patch_members(vec![], vec![MemberRef::UserId(uid(1))]);
    assert!(plan(&d, &a, &policy()).unwrap().is_empty());
}

#[test]
fn a_sign_in_sets_one_users_memberships_and_touches_no_one_else() {
    let sso = Source::Sso("entra".into());
    let a = Actual {
        users: vec![
            user(1, "alice@example.com", None, sso.clone()),
            user(2, "bob@example.com", None, sso.clone()),
        ],
        teams: vec![
            team(1, "Old", Some("g-old"), sso.clone()),
            team(2, "Keep", Some("g-keep"), Source::Manual),
        ],
        memberships: vec![
            member(1, 1, sso.clone()),
            member(1, 2, sso.clone()),
            member(2, 1, Source::Manual),
        ],
        full_user_memberships: [uid(1)].into_iter().collect(),
        ..Actual::default()
    };
    let d = Desired {
        users: vec![DesiredUser::new(
            UserName::parse("alice@example.com").unwrap(),
        )],
        teams: vec![DesiredTeam {
            external_id: Some("g-new".into()),
            ..DesiredTeam::new(TeamName::parse("New").unwrap())
        }],
        ..Desired::new(sso.clone(), Scope::UserMemberships)
    };
    let plan = plan(&d, &a, &policy()).unwrap();
    assert_eq!(
        kinds(&plan),
        ["create_team", "add_member", "remove_member", "purge_keys"]
    );
    assert!(plan
        .ops
        .iter()
        .all(|op| op.user_id().is_none() || op.user_id() == Some(uid(1))));
    assert!(plan.ops.iter().all(|op| op.team_id() != Some(tid(2))));
}

#[test]
fn plan_for_one_user_keeps_only_their_operations_and_the_teams_they_join() {
    let plan = plan_for_user(
        &snapshot(SNAPSHOT),
        &Actual::default(),
        &policy(),
        "BOB@example.com",
    )
    .unwrap();
    assert_eq!(kinds(&plan), ["create_user", "create_team", "add_member"]);
    assert!(plan_for_user(&snapshot(SNAPSHOT), &Actual::default(), &policy(), "nobody").is_err());
}

#[test]
fn snapshot_errors_name_the_line_column_and_field() {
    let bad = "{\"idp\": \"entra\", \"complete\": true,\n \"users\": [{\"external_id\": \"u-1\", \"user_name\": 7}]}";
    match Snapshot::parse(bad).unwrap_err() {
        SnapshotError::Parse {
            line,
            column,
            field,
            message,
        } => {
            assert_eq!(line, 2);
            assert!(column > 30, "{column}");
            assert_eq!(field, "users[0].user_name");
            assert!(message.contains("invalid type"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let typo = r#"{"idp": "entra", "complete": true, "usres": []}"#;
    let err = Snapshot::parse(typo).unwrap_err().to_string();
    assert!(err.contains("usres") && err.contains("line 1"), "{err}");
    let dup = r#"{"idp": "e", "complete": true, "users": [{"external_id": "a", "user_name": "x"}, {"external_id": "b", "user_name": "X"}]}"#;
    assert!(Snapshot::parse(dup)
        .unwrap_err()
        .to_string()
        .contains("users[1]"));
}

// ---------------------------------------------------------------------------------
// Properties over random states.

const NAMES: [&str; 6] = ["ann", "Bob", "cy", "DEE", "eve", "fay"];
const TEAM_NAMES: [&str; 4] = ["T0", "t1", "T2", "Ops"];

fn arb_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Sync("x".into())),
        Just(Source::Sync("y".into())),
        Just(Source::Sso("x".into())),
        Just(Source::Scim("default".into())),
        Just(Source::Manual),
    ]
}

prop_compose! {
    fn arb_actual()(
        users in prop::collection::vec((0..6usize, prop::option::of(0..6usize), arb_source(), any::<bool>(), 0..3i64), 0..7),
        teams in prop::collection::vec((0..4usize, prop::option::of(0..4usize), arb_source()), 0..5),
        members in prop::collection::vec((0..5usize, 0..7usize, arb_source()), 0..14),
    ) -> Actual {
        let mut seen = BTreeSet::new();
        let mut us = Vec::new();
        for (i, (name, ext, source, active, age)) in users.into_iter().enumerate() {
            if !seen.insert(name) { continue; }
            let mut u = user(i as u128, NAMES[name], ext.map(|e| format!("e{e}")).as_deref(), source);
            u.active = active;
            u.modified = now() - chrono::Duration::days(age * 5);
            us.push(u);
        }
        let ts: Vec<Team> = teams.into_iter().enumerate()
            .map(|(i, (name, ext, source))| team(i as u128, TEAM_NAMES[name], ext.map(|e| format!("g{e}")).as_deref(), source))
            .collect();
        let mut ms = BTreeMap::new();
        for (t, u, source) in members {
            if let (Some(t), Some(u)) = (ts.get(t), us.get(u)) {
                ms.entry((t.id, u.id)).or_insert(Membership { team_id: t.id, user_id: u.id, source });
            }
        }
        actual(us, ts, ms.into_values().collect())
    }
}

prop_compose! {
    fn arb_desired()(
        complete in any::<bool>(),
        users in prop::collection::vec((0..6usize, prop::option::of(0..6usize), any::<bool>(), prop::option::of(0..3usize)), 0..6),
        teams in prop::collection::vec((0..4usize, 0..4usize, prop::collection::vec(0..7usize, 0..5)), 0..4),
    ) -> Desired {
        let mut names = BTreeSet::new();
        let mut exts = BTreeSet::new();
        let mut us = Vec::new();
        for (name, ext, active, email) in users {
            if !names.insert(name) || ext.is_some_and(|e| !exts.insert(e)) { continue; }
            us.push(DesiredUser {
                external_id: ext.map(|e| format!("e{e}")),
                active,
                email: email.map(|e| format!("m{e}@example.com")),
                ..DesiredUser::new(UserName::parse(NAMES[name]).unwrap())
            });
        }
        let mut gexts = BTreeSet::new();
        let mut ts = Vec::new();
        for (name, ext, members) in teams {
            if !gexts.insert(ext) { continue; }
            ts.push(DesiredTeam {
                external_id: Some(format!("g{ext}")),
                members: MemberSpec::Exactly(members.into_iter().map(|m| MemberRef::ExternalId(format!("e{m}"))).collect()),
                ..DesiredTeam::new(TeamName::parse(TEAM_NAMES[name]).unwrap())
            });
        }
        Desired { complete, users: us, teams: ts, ..Desired::new(Source::Sync("x".into()), Scope::Everything) }
    }
}

prop_compose! {
    fn arb_policy()(
        delete_after in prop_oneof![Just(None), Just(Some(0u64)), Just(Some(7 * 86_400u64))],
        role_group in any::<bool>(),
        purge in any::<bool>(),
    ) -> Policy {
        let mut p = policy();
        p.allow_deletions = true;
        p.delete_after = delete_after.map(std::time::Duration::from_secs);
        p.purge_team_keys_on_removal = purge;
        if role_group {
            p.role_groups.insert("t0".into(), Role::parse("admin").unwrap());
        }
        p
    }
}

/// Desired states the planner legitimately refuses (e.g. a rename onto a taken name)
/// are not what these properties are about.
fn planned(d: &Desired, a: &Actual, p: &Policy) -> Option<Plan> {
    match plan(d, a, p) {
        Ok(plan) => Some(plan),
        Err(PlanError::UserNameTaken { .. } | PlanError::Invalid(_)) => None,
        Err(e) => panic!("unexpected refusal: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn applying_a_plan_then_planning_again_gives_an_empty_plan(a in arb_actual(), d in arb_desired(), p in arb_policy()) {
        let Some(first) = planned(&d, &a, &p) else { return Ok(()) };
        let after = apply_in_memory(&a, &first, now());
        let second = plan(&d, &after, &p).unwrap();
        prop_assert!(second.is_empty(), "first: {:?}\nsecond: {:?}", first.ops, second.ops);
    }

    #[test]
    fn a_plan_never_touches_manual_teams_or_memberships(a in arb_actual(), d in arb_desired(), p in arb_policy()) {
        let Some(plan) = planned(&d, &a, &p) else { return Ok(()) };
        let manual_teams: BTreeSet<Uuid> = a.teams.iter().filter(|t| t.source.is_manual()).map(|t| t.id).collect();
        let manual_members: BTreeSet<(Uuid, Uuid)> = a.memberships.iter()
            .filter(|m| m.source.is_manual()).map(|m| (m.team_id, m.user_id)).collect();
        for op in &plan.ops {
            if let Some(t) = op.team_id() {
                prop_assert!(!manual_teams.contains(&t), "{op:?} touches a manual team");
            }
            if let Op::RemoveMember { team_id, user_id } = op {
                prop_assert!(!manual_members.contains(&(*team_id, *user_id)), "{op:?}");
            }
            // A manual user is only ever changed when the IdP lists them (adoption).
            if let Some(u) = op.user_id() {
                if let Some(existing) = a.users.iter().find(|x| x.id == u && x.source.is_manual()) {
                    let listed = d.users.iter().any(|du| du.user_name == existing.user_name
                        || (du.external_id.is_some() && du.external_id == existing.external_id));
                    let membership_only = matches!(op, Op::AddMember { .. } | Op::RemoveMember { .. } | Op::PurgeKeys { team_id: Some(_), .. });
                    let role_only = matches!(op, Op::UpdateUser { changes, .. } if changes.iter().all(|c| c.attribute == "role"));
                    prop_assert!(listed || membership_only || role_only, "{op:?} touches unlisted manual user");
                }
            }
        }
    }

    #[test]
    fn planning_is_deterministic(a in arb_actual(), d in arb_desired(), p in arb_policy()) {
        let one = plan(&d, &a, &p).map(|p| serde_json::to_string(&p).unwrap());
        let mut shuffled = a.clone();
        shuffled.users.reverse();
        shuffled.teams.reverse();
        shuffled.memberships.reverse();
        let two = plan(&d, &shuffled, &p).map(|p| serde_json::to_string(&p).unwrap());
        prop_assert_eq!(one, two);
    }

    #[test]
    fn a_sign_in_converges_and_touches_only_its_user(a in arb_actual(), name in 0..6usize, teams in prop::collection::vec((0..4usize, 0..4usize), 0..3)) {
        let sso = Source::Sso("x".into());
        let mut gexts = BTreeSet::new();
        let d = Desired {
            users: vec![DesiredUser::new(UserName::parse(NAMES[name]).unwrap())],
            teams: teams.into_iter().filter(|(_, e)| gexts.insert(*e)).map(|(n, e)| DesiredTeam {
                external_id: Some(format!("g{e}")),
                ..DesiredTeam::new(TeamName::parse(TEAM_NAMES[n]).unwrap())
            }).collect(),
            ..Desired::new(sso, Scope::UserMemberships)
        };
        let Some(first) = planned(&d, &a, &policy()) else { return Ok(()) };
        let me = first.user_names.iter().find(|(_, n)| n.to_lowercase() == NAMES[name].to_lowercase()).map(|(id, _)| *id);
        for op in &first.ops {
            if let Some(u) = op.user_id() {
                prop_assert_eq!(Some(u), me, "{:?}", op);
            }
        }
        let after = apply_in_memory(&a, &first, now());
        prop_assert!(plan(&d, &after, &policy()).unwrap().is_empty());
    }
}

/// SCIM handlers and the scheduler run the engine inside spawned tasks.
#[allow(dead_code)]
fn the_engine_futures_are_send(engine: &Engine, d: &Desired, p: &Policy, a: &Actor) {
    fn send<T: Send>(_: T) {}
    send(engine.apply(Request::new(d, p, a)));
    send(engine.plan(Request::new(d, p, a)));
}
#[allow(dead_code)]
fn the_apply_future_is_send(tx: &mut WriteTx, plan: &Plan, a: &Actor) {
    fn send<T: Send>(_: T) {}
    send(apply(tx, plan, a));
}

#[test]
fn a_sign_in_through_another_idp_adds_memberships_but_leaves_the_user_as_it_is() {
    let a = Actual {
        users: vec![user(1, "alice@example.com", Some("e-1"), entra())],
        full_user_memberships: [uid(1)].into_iter().collect(),
        ..Actual::default()
    };
    let okta = Source::Sso("okta".into());
    let d = Desired {
        users: vec![DesiredUser {
            external_id: Some("o-1".into()),
            display_name: Some("Alice (Okta)".into()),
            ..DesiredUser::new(UserName::parse("ALICE@example.com").unwrap())
        }],
        teams: vec![DesiredTeam {
            external_id: Some("o-g".into()),
            ..DesiredTeam::new(TeamName::parse("Okta Team").unwrap())
        }],
        ..Desired::new(okta, Scope::UserMemberships)
    };
    let plan = plan(&d, &a, &policy()).unwrap();
    assert_eq!(kinds(&plan), ["create_team", "add_member"]);
    assert!(plan
        .ops
        .iter()
        .any(|op| matches!(op, Op::AddMember { user_id, .. } if *user_id == uid(1))));
    assert!(
        plan.warnings.iter().any(|w| w.contains("IdP \"entra\"")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn a_scim_patch_may_not_remove_a_membership_another_idp_owns() {
    let a = Actual {
        users: vec![user(1, "alice@example.com", None, Source::Manual)],
        teams: vec![team(1, "Evals", None, Source::Manual)],
        memberships: vec![member(1, 1, entra())],
        ..Actual::default()
    };
    let d = patch_members(vec![], vec![MemberRef::UserId(uid(1))]);
    let refused = plan(&d, &a, &policy()).unwrap_err();
    assert!(matches!(
        refused,
        PlanError::NotOwned {
            kind: ResourceKind::Membership,
            ..
        }
    ));
    assert!(refused.to_string().contains("IdP \"entra\""), "{refused}");
}

#[test]
fn role_groups_of_one_idp_do_not_change_another_idps_user() {
    let a = Actual {
        users: vec![user(1, "alice@example.com", Some("e-1"), entra())],
        everything: true,
        ..Actual::default()
    };
    let mut policy = policy();
    policy
        .role_groups
        .insert("Okta Admins".into(), Role::parse("admin").unwrap());
    let snapshot = r#"{"idp": "okta", "complete": true,
      "users": [{"external_id": "o-1", "user_name": "alice@example.com"}],
      "groups": [{"external_id": "o-g", "display_name": "Okta Admins", "members": ["o-1"]}]}"#;
    let d = Snapshot::parse(snapshot).unwrap().into_desired();
    let plan = plan(&d, &a, &policy).unwrap();
    assert_eq!(kinds(&plan), ["create_team", "add_member"]);
}
