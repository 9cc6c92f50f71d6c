//! The reconcile engine against a real database: applying is idempotent, planning after
//! applying is empty, keys follow their users and teams, and SCIM-sized changes read
//! only the rows they touch.

use crate::common;

use common::TestApp;
use scimsync::domain::{BlockedBy, Source, TeamName, Trigger, UserName};
use scimsync::reconcile::snapshot::Snapshot;
use scimsync::reconcile::{
    self, Actor, Desired, DesiredTeam, Intent, MemberRef, MemberSpec, Plan, Policy, Scope,
};
use scimsync::store::Store;
use uuid::Uuid;

const SNAPSHOT: &str = r#"{"idp": "entra", "complete": true,
 "users":  [{"external_id": "u-1", "user_name": "alice@example.com", "email": "alice@example.com",
             "display_name": "Alice", "given_name": "Alice", "family_name": "Ng", "active": true},
            {"external_id": "u-2", "user_name": "bob@example.com", "email": "bob@example.com"},
            {"external_id": "u-3", "user_name": "carol@example.com"},
            {"external_id": "u-4", "user_name": "dave@example.com"},
            {"external_id": "u-5", "user_name": "erin@example.com"},
            {"external_id": "u-6", "user_name": "frank@example.com"}],
 "groups": [{"external_id": "g-1", "display_name": "Production LLM Evals Group",
             "members": ["u-1", "u-2", "u-3"]},
            {"external_id": "g-2", "display_name": "LLM Admins", "members": ["u-1"]}]}"#;

fn desired(json: &str) -> Desired {
    Snapshot::parse(json)
        .expect("valid snapshot")
        .into_desired()
}

fn without(json: &str, what: &str) -> String {
    let out = json.replace(what, "");
    assert_ne!(out, json, "{what} not in the snapshot");
    out
}

fn cli() -> Actor {
    Actor::new(Trigger::Cli, "test")
}

/// Plans `desired` against the store and applies it in one transaction.
async fn sync(store: &Store, desired: &Desired, policy: &Policy) -> Plan {
    reconcile::Engine::new(store.clone())
        .apply(reconcile::Request::new(desired, policy, &cli()))
        .await
        .expect("reconciled")
        .plan
}

async fn replan(store: &Store, desired: &Desired, policy: &Policy) -> Plan {
    let mut tx = store.begin_write().await.expect("transaction");
    let actual = reconcile::load_actual(&mut tx, desired, policy)
        .await
        .expect("loaded");
    reconcile::plan(desired, &actual, policy).expect("planned")
}

fn allow_deletions() -> Policy {
    Policy {
        allow_deletions: true,
        ..Policy::default()
    }
}

async fn user_id(store: &Store, name: &str) -> Uuid {
    store
        .user_by_name(&UserName::parse(name).unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name} exists"))
        .id
}

#[tokio::test]
async fn applying_a_plan_twice_changes_nothing_the_second_time_and_replanning_is_empty() {
    let app = TestApp::spawn().await;
    let d = desired(SNAPSHOT);
    let policy = Policy::default();
    let plan = sync(&app.store, &d, &policy).await;
    assert_eq!(plan.counts().add, 6 + 2 + 4);

    let mut tx = app.store.begin_write().await.unwrap();
    let again = reconcile::apply(&mut tx, &plan, &cli()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again.applied, 0, "{again:?}");
    assert_eq!(again.unchanged, plan.ops.len());

    assert!(replan(&app.store, &d, &policy).await.is_empty());
    assert_eq!(app.store.all_users().await.unwrap().len(), 6);
    assert_eq!(app.store.all_memberships().await.unwrap().len(), 4);
}

#[tokio::test]
async fn an_existing_account_is_adopted_by_user_name_and_keeps_its_id_and_keys() {
    let app = TestApp::spawn().await;
    let existing = app.seed_user("Alice@Example.com").await;
    let (_, key) = app.new_api_key(existing.id, None).await;
    sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    let alice = app.store.user(existing.id).await.unwrap().expect("same id");
    assert_eq!(alice.external_id.as_deref(), Some("u-1"));
    assert_eq!(alice.source, Source::Sync("entra".into()));
    assert_eq!(alice.user_name.as_str(), "alice@example.com");
    assert_eq!(app.whoami(&key).await.0, 200);
}

#[tokio::test]
async fn a_user_dropped_by_the_idp_is_deactivated_and_their_keys_work_again_on_return() {
    let app = TestApp::spawn().await;
    sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    let bob = user_id(&app.store, "bob@example.com").await;
    let (_, key) = app.new_api_key(bob, None).await;
    assert_eq!(app.whoami(&key).await.0, 200);

    let gone = without(
        SNAPSHOT,
        r#"{"external_id": "u-2", "user_name": "bob@example.com", "email": "bob@example.com"},"#,
    );
    let plan = sync(&app.store, &desired(&gone), &Policy::default()).await;
    assert!(plan
        .ops
        .iter()
        .any(|op| matches!(op, reconcile::Op::DeactivateUser { id } if *id == bob)));
    assert!(!app.store.user(bob).await.unwrap().unwrap().active);
    let keys = app.store.list_keys(Some(bob)).await.unwrap();
    assert_eq!(keys[0].blocked_by, Some(BlockedBy::Provisioning));
    assert_eq!(app.whoami(&key).await.0, 401);

    sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    assert!(app.store.user(bob).await.unwrap().unwrap().active);
    assert_eq!(app.whoami(&key).await.0, 200);
}

#[tokio::test]
async fn a_user_deleted_after_delete_after_loses_every_key_with_an_audit_copy() {
    let app = TestApp::spawn().await;
    sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    let bob = user_id(&app.store, "bob@example.com").await;
    let (key_id, _) = app.new_api_key(bob, None).await;
    let gone = without(
        SNAPSHOT,
        r#"{"external_id": "u-2", "user_name": "bob@example.com", "email": "bob@example.com"},"#,
    );
    let policy = Policy {
        delete_after: Some(std::time::Duration::ZERO),
        ..Policy::default()
    };
    sync(&app.store, &desired(&gone), &policy).await;
    assert!(app.store.user(bob).await.unwrap().is_none());
    let deleted = app.store.deleted_keys(bob).await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].id, key_id);
    assert_eq!(deleted[0].reason, "user_deleted");
    assert_eq!(deleted[0].trigger, "cli");
}

#[tokio::test]
async fn leaving_a_team_purges_the_keys_scoped_to_that_team_only() {
    let app = TestApp::spawn().await;
    sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    let bob = user_id(&app.store, "bob@example.com").await;
    let team = app
        .store
        .resolve_team("Production LLM Evals Group")
        .await
        .unwrap()
        .unwrap();
    let (team_key, _) = app.new_api_key(bob, Some(team.id)).await;
    let (own_key, _) = app.new_api_key(bob, None).await;
    let moved = SNAPSHOT.replace(r#"["u-1", "u-2", "u-3"]"#, r#"["u-1", "u-3"]"#);
    sync(&app.store, &desired(&moved), &Policy::default()).await;
    let left: Vec<Uuid> = app
        .store
        .list_keys(Some(bob))
        .await
        .unwrap()
        .iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(left, [own_key]);
    let deleted = app.store.deleted_keys(bob).await.unwrap();
    assert_eq!(
        (deleted[0].id, deleted[0].reason.as_str()),
        (team_key, "removed_from_team")
    );
    let after = app.store.team(team.id).await.unwrap().unwrap();
    assert!(
        after.version > team.version,
        "a membership change bumps the team's version"
    );
}

#[tokio::test]
async fn a_group_the_idp_drops_is_deleted_with_its_keys_but_a_manual_team_stays() {
    let app = TestApp::spawn().await;
    let manual = app.seed_team("Hand Made").await;
    sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    let admins = app.store.resolve_team("LLM Admins").await.unwrap().unwrap();
    let alice = user_id(&app.store, "alice@example.com").await;
    let (key, _) = app.new_api_key(alice, Some(admins.id)).await;
    let gone = without(
        SNAPSHOT,
        r#",
            {"external_id": "g-2", "display_name": "LLM Admins", "members": ["u-1"]}"#,
    );
    sync(&app.store, &desired(&gone), &allow_deletions()).await;
    assert!(app.store.team(admins.id).await.unwrap().is_none());
    assert!(app.store.team(manual.id).await.unwrap().is_some());
    assert!(app
        .store
        .deleted_keys(alice)
        .await
        .unwrap()
        .iter()
        .any(|k| k.id == key && k.reason == "team_deleted"));
}

#[tokio::test]
async fn a_partial_snapshot_adds_but_removes_nothing() {
    let app = TestApp::spawn().await;
    sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    let partial = r#"{"idp": "entra", "complete": false,
        "users": [{"external_id": "u-9", "user_name": "zoe@example.com"}],
        "groups": [{"external_id": "g-1", "display_name": "Production LLM Evals Group", "members": ["u-9"]}]}"#;
    let plan = sync(&app.store, &desired(partial), &Policy::default()).await;
    assert_eq!(plan.counts().destroy, 0);
    assert_eq!(plan.counts().change, 0);
    assert_eq!(
        app.store
            .all_users()
            .await
            .unwrap()
            .iter()
            .filter(|u| u.active)
            .count(),
        7
    );
    assert_eq!(app.store.all_memberships().await.unwrap().len(), 5);
}

#[tokio::test]
async fn every_applied_operation_is_audited_with_its_trigger_and_actor() {
    let app = TestApp::spawn().await;
    let before = app.store.audit_since(None).await.unwrap().len();
    let plan = sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    let entries = app.store.audit_since(None).await.unwrap();
    let ours: Vec<_> = entries[before..].iter().collect();
    assert_eq!(ours.len(), plan.ops.len());
    assert!(ours.iter().all(|e| e.trigger == "cli" && e.actor == "test"));
    assert_eq!(ours[0].operation, "create_user");
    assert!(ours
        .iter()
        .any(|e| e.operation == "add_member" && e.target.starts_with("membership:")));
}

#[tokio::test]
async fn adding_one_member_to_a_large_team_reads_only_that_pair() {
    let app = TestApp::spawn().await;
    // A team of 2,000 members, written through the engine like everything else.
    let users: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"external_id": "b-{i}", "user_name": "bulk{i}@example.com"}}"#))
        .collect();
    let members: Vec<String> = (0..2000).map(|i| format!(r#""b-{i}""#)).collect();
    let big = format!(
        r#"{{"idp": "entra", "complete": true, "users": [{}, {{"external_id": "n-1", "user_name": "new@example.com"}}],
            "groups": [{{"external_id": "big", "display_name": "Big", "members": [{}]}}]}}"#,
        users.join(","),
        members.join(",")
    );
    sync(&app.store, &desired(&big), &Policy::default()).await;
    let team = app.store.resolve_team("Big").await.unwrap().unwrap();
    let newcomer = user_id(&app.store, "new@example.com").await;

    // The team's own IdP pushing over SCIM: its pull and its pushes share the team.
    let mut d = Desired::new(Source::Scim("entra".into()), Scope::Listed);
    d.teams.push(DesiredTeam {
        id: Some(team.id),
        intent: Intent::Update,
        members: MemberSpec::Delta {
            add: vec![MemberRef::UserId(newcomer)],
            remove: vec![],
        },
        ..DesiredTeam::new(TeamName::parse("Big").unwrap())
    });
    let policy = Policy::default();
    let mut tx = app.store.begin_write().await.unwrap();
    let actual = reconcile::load_actual(&mut tx, &d, &policy).await.unwrap();
    assert!(
        actual.memberships.is_empty(),
        "{} memberships read",
        actual.memberships.len()
    );
    assert_eq!(actual.users.len(), 1);
    assert_eq!(actual.teams.len(), 1);
    let plan = reconcile::plan(&d, &actual, &policy).unwrap();
    reconcile::apply(&mut tx, &plan, &Actor::new(Trigger::Scim, "idp-token"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.store.all_memberships().await.unwrap().len(), 2001);
}

#[tokio::test]
async fn a_stale_fingerprint_is_detected_after_any_change_to_the_store() {
    let app = TestApp::spawn().await;
    sync(&app.store, &desired(SNAPSHOT), &Policy::default()).await;
    let scope = Desired::new(Source::Sync("entra".into()), Scope::Everything);
    let fingerprint = |store: Store| {
        let scope = scope.clone();
        async move {
            let mut tx = store.begin_write().await.unwrap();
            let actual = reconcile::load_actual(&mut tx, &scope, &Policy::default())
                .await
                .unwrap();
            reconcile::fingerprint(&actual)
        }
    };
    let first = fingerprint(app.store.clone()).await;
    assert_eq!(
        first,
        fingerprint(app.store.clone()).await,
        "stable while nothing changes"
    );
    let team = app.store.resolve_team("LLM Admins").await.unwrap().unwrap();
    let carol = user_id(&app.store, "carol@example.com").await;
    crate::common::add_member_as_operator(&app.store, team.id, carol).await;
    assert_ne!(first, fingerprint(app.store.clone()).await);
}
