//! Who owns what (issue #13): an IdP changes and removes only what it owns, however its
//! data arrives (SCIM push with a token bound to it, pull, sign-in); another IdP's
//! users are left alone by pulls and refused to SCIM writes; a group that vanishes from
//! a complete pull is held by the membership guard like an emptied one.
//!
//! Pulls go through the engine as `scimsync apply --snapshot` does; pushes go over HTTP
//! with tokens bound to IdPs. Everything runs on SQLite, and on PostgreSQL when
//! SCIMSYNC_TEST_POSTGRES_URL is set.

use crate::common::{TestApp, SCIM_JSON};
use reqwest::{Method, StatusCode};
use scimsync::domain::{Source, TokenScope, User, UserName};
use scimsync::reconcile::snapshot::Snapshot;
use scimsync::reconcile::{self, Actor, Engine, EngineError, Plan, Policy, Request};
use scimsync::store::Store;
use serde_json::{json, Value};
use std::process::Output;

/// Plans a snapshot against the store and applies it in one transaction, as
/// `scimsync apply --snapshot` does.
async fn pull(store: &Store, snapshot: &str, policy: &Policy) -> Result<Plan, EngineError> {
    let desired = Snapshot::parse(snapshot)
        .expect("valid snapshot")
        .into_desired();
    let actor = Actor::new(scimsync::domain::Trigger::Cli, "test");
    let applied = Engine::new(store.clone())
        .apply(Request::new(&desired, policy, &actor))
        .await?;
    Ok(applied.plan)
}

async fn pulled(store: &Store, snapshot: &str) -> Plan {
    pull(store, snapshot, &Policy::default())
        .await
        .expect("pull applied")
}

async fn user(store: &Store, name: &str) -> User {
    store
        .user_by_name(&UserName::parse(name).expect("name"))
        .await
        .expect("read")
        .unwrap_or_else(|| panic!("{name} exists"))
}

async fn team_members(store: &Store, team: &str) -> Vec<String> {
    let team = store
        .resolve_team(team)
        .await
        .expect("read")
        .unwrap_or_else(|| panic!("team {team} exists"));
    let mut names = Vec::new();
    let memberships = store.all_memberships().await.expect("memberships");
    for m in memberships.iter().filter(|m| m.team_id == team.id) {
        names.push(
            store
                .user(m.user_id)
                .await
                .expect("read")
                .expect("member exists")
                .user_name
                .to_string(),
        );
    }
    names.sort();
    names
}

/// A SCIM request made with a given token.
async fn scim_as(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .request(method, app.url(&format!("/scim/v2{path}")))
        .bearer_auth(token)
        .header("accept", SCIM_JSON);
    if let Some(body) = body {
        request = request
            .header("content-type", SCIM_JSON)
            .body(body.to_string());
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

const ENTRA: &str = r#"{"idp": "entra", "complete": true,
 "users": [{"external_id": "e-alice", "user_name": "alice@example.com", "display_name": "Alice"},
           {"external_id": "e-bob", "user_name": "bob@example.com"}],
 "groups": [{"external_id": "e-g1", "display_name": "LLM Evals", "members": ["e-alice", "e-bob"]}]}"#;

/// Okta lists the same person under another spelling and another external id.
const OKTA: &str = r#"{"idp": "okta", "complete": true,
 "users": [{"external_id": "o-9", "user_name": "Alice@Example.com", "display_name": "Alice (Okta)"},
           {"external_id": "o-10", "user_name": "carol@example.com"}],
 "groups": [{"external_id": "o-g1", "display_name": "Okta Research", "members": ["o-9", "o-10"]}]}"#;

const OKTA_WITHOUT_ALICE: &str = r#"{"idp": "okta", "complete": true,
 "users": [{"external_id": "o-10", "user_name": "carol@example.com"}],
 "groups": [{"external_id": "o-g1", "display_name": "Okta Research", "members": ["o-10"]}]}"#;

#[tokio::test]
async fn another_idps_pull_leaves_a_user_it_does_not_own_as_it_is() {
    let app = TestApp::spawn().await;
    pulled(&app.store, ENTRA).await;
    let alice = user(&app.store, "alice@example.com").await;
    let evals = app.store.resolve_team("LLM Evals").await.unwrap().unwrap();
    let (_, key) = app.new_api_key(alice.id, Some(evals.id)).await;

    let plan = pulled(&app.store, OKTA).await;
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.contains("Alice@Example.com") || w.contains("alice@example.com"))
        .unwrap_or_else(|| panic!("a warning names alice: {:?}", plan.warnings));
    assert!(warning.contains(r#"IdP "entra""#), "{warning}");
    let rendered = reconcile::render::render_json(&plan);
    assert!(rendered.contains(r#"IdP \"entra\""#), "{rendered}");

    let after = user(&app.store, "alice@example.com").await;
    assert_eq!(after.source, Source::Sync("entra".into()));
    assert_eq!(after.external_id.as_deref(), Some("e-alice"));
    assert_eq!(after.display_name.as_deref(), Some("Alice"));
    // One person, one account: Okta's own team refers to the same user.
    assert_eq!(
        team_members(&app.store, "Okta Research").await,
        ["alice@example.com", "carol@example.com"]
    );

    // Okta no longer listing her takes her out of Okta's team, and nothing else.
    pulled(&app.store, OKTA_WITHOUT_ALICE).await;
    let after = user(&app.store, "alice@example.com").await;
    assert!(after.active, "Entra still lists alice");
    assert_eq!(app.whoami(&key).await.0, StatusCode::OK);
    assert_eq!(
        team_members(&app.store, "LLM Evals").await,
        ["alice@example.com", "bob@example.com"]
    );
}

#[tokio::test]
async fn alternating_two_idps_that_share_a_person_settles_on_empty_plans() {
    let app = TestApp::spawn().await;
    for _ in 0..2 {
        pulled(&app.store, ENTRA).await;
        pulled(&app.store, OKTA).await;
    }
    let entra = pulled(&app.store, ENTRA).await;
    let okta = pulled(&app.store, OKTA).await;
    assert!(entra.ops.is_empty(), "{:?}", entra.ops);
    assert!(okta.ops.is_empty(), "{:?}", okta.ops);
    assert_eq!(
        user(&app.store, "alice@example.com").await.source,
        Source::Sync("entra".into())
    );
}

#[tokio::test]
async fn a_pull_adopts_a_hand_made_user_and_the_plan_says_so() {
    let app = TestApp::spawn().await;
    let bob = app.seed_user("bob@example.com").await;
    assert_eq!(bob.source, Source::Manual);
    let plan = pulled(&app.store, ENTRA).await;
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("bob@example.com") && w.contains("adopted")),
        "{:?}",
        plan.warnings
    );
    let text = reconcile::render::render_text(&plan, false);
    assert!(
        text.contains(r#"source: "manual" → "sync:entra""#),
        "{text}"
    );
    let bob = user(&app.store, "bob@example.com").await;
    assert_eq!(bob.source, Source::Sync("entra".into()));
    assert_eq!(bob.external_id.as_deref(), Some("e-bob"));
}

#[tokio::test]
async fn an_adopt_rule_lets_one_idp_take_over_anothers_users() {
    let app = TestApp::spawn().await;
    pulled(&app.store, ENTRA).await;
    let mut policy = Policy::default();
    policy
        .adopt
        .insert("okta".into(), ["entra".to_owned()].into_iter().collect());
    let plan = pull(&app.store, OKTA, &policy).await.expect("applied");
    assert!(
        plan.warnings.iter().any(|w| w.contains("adopted")),
        "{:?}",
        plan.warnings
    );
    let alice = user(&app.store, "alice@example.com").await;
    assert_eq!(alice.source, Source::Sync("okta".into()));
    assert_eq!(alice.external_id.as_deref(), Some("o-9"));
}

#[tokio::test]
async fn a_pulls_member_ids_never_name_another_idps_user() {
    // Okta's group lists an id that happens to be Entra's id for alice; Okta has no
    // such user of its own, so the member is unknown, not alice.
    let app = TestApp::spawn().await;
    pulled(&app.store, ENTRA).await;
    let okta = r#"{"idp": "okta", "complete": true,
      "users": [{"external_id": "o-10", "user_name": "carol@example.com"}],
      "groups": [{"external_id": "o-g1", "display_name": "Okta Research", "members": ["o-10", "e-alice"]}]}"#;
    let plan = pulled(&app.store, okta).await;
    assert!(
        plan.warnings.iter().any(|w| w.contains("match no user")),
        "{:?}",
        plan.warnings
    );
    assert_eq!(
        team_members(&app.store, "Okta Research").await,
        ["carol@example.com"]
    );
}

/// A complete Entra pull managing one team of `n` people, each holding a key for it.
fn big_team_snapshot(n: usize, with_team: bool) -> String {
    let users: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"external_id": "u-{i}", "user_name": "user{i}@example.com"}}"#))
        .collect();
    let members: Vec<String> = (0..n).map(|i| format!(r#""u-{i}""#)).collect();
    let mut groups =
        vec![r#"{"external_id": "g-keep", "display_name": "Keep", "members": ["u-0"]}"#.to_owned()];
    if with_team {
        groups.push(format!(
            r#"{{"external_id": "g-big", "display_name": "Big", "members": [{}]}}"#,
            members.join(",")
        ));
    }
    format!(
        r#"{{"idp": "entra", "complete": true, "users": [{}], "groups": [{}]}}"#,
        users.join(","),
        groups.join(",")
    )
}

#[tokio::test]
async fn a_group_missing_from_a_complete_pull_is_held_by_the_membership_guard() {
    let app = TestApp::spawn().await;
    pulled(&app.store, &big_team_snapshot(30, true)).await;
    let big = app.store.resolve_team("Big").await.unwrap().unwrap();
    let mut keys = Vec::new();
    for i in 0..30 {
        let u = user(&app.store, &format!("user{i}@example.com")).await;
        keys.push(app.new_api_key(u.id, Some(big.id)).await.1);
    }

    let refused = pull(
        &app.store,
        &big_team_snapshot(30, false),
        &Policy::default(),
    )
    .await
    .expect_err("the guard refuses");
    let message = refused.to_string();
    assert!(refused.is_guard_refusal(), "{message}");
    assert!(
        message.contains("refusing to remove 30 of")
            && message.contains("30 of them by deleting the teams they are in"),
        "{message}"
    );
    assert_eq!(team_members(&app.store, "Big").await.len(), 30);
    for key in &keys {
        assert_eq!(app.whoami(key).await.0, StatusCode::OK, "keys survive");
    }

    // The plan says what the deletion takes with it, and applies when allowed.
    let allowed = Policy {
        allow_deletions: true,
        ..Policy::default()
    };
    let plan = pull(&app.store, &big_team_snapshot(30, false), &allowed)
        .await
        .expect("applied when allowed");
    let summary = reconcile::render::render_text(&plan, false);
    assert!(
        summary
            .lines()
            .find(|l| l.starts_with("Plan:"))
            .is_some_and(
                |l| l.ends_with("Deleting 1 team takes 30 memberships and 30 API keys with it.")
            ),
        "{summary}"
    );
    assert!(
        summary.trim_end().ends_with(
            "Guard lifted: --allow-deletions lifts the membership guard for this plan: 30 of \
             31 managed, above the limit of 10."
        ),
        "{summary}"
    );
    let json: Value =
        serde_json::from_str(&reconcile::render::render_json(&plan)).expect("valid JSON");
    assert_eq!(
        json["summary"]["team_deletions"],
        json!({"teams": 1, "memberships": 30, "keys": 30})
    );
    assert!(app.store.resolve_team("Big").await.unwrap().is_none());
    assert_eq!(app.whoami(&keys[0]).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_small_team_vanishing_passes_the_guard_and_says_what_it_takes() {
    let app = TestApp::spawn().await;
    pulled(&app.store, &big_team_snapshot(20, true)).await;
    let refused = pull(
        &app.store,
        &big_team_snapshot(20, false),
        &Policy::default(),
    )
    .await;
    // 20 of 21 managed memberships is over the ratio: held like an emptied group.
    assert!(refused.is_err());

    let app = TestApp::spawn().await;
    pulled(&app.store, &big_team_snapshot(3, true)).await;
    let plan = pulled(&app.store, &big_team_snapshot(3, false)).await;
    assert_eq!(plan.team_deletions.memberships, 3);
    assert_eq!(plan.team_deletions.keys, 0);
}

// ---- SCIM pushes with tokens bound to IdPs ----

fn new_user_body(name: &str) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "active": true})
}

#[tokio::test]
async fn what_a_bound_token_creates_is_owned_by_its_idp() {
    let app = TestApp::spawn().await;
    let okta = app
        .new_idp_token("okta-push", TokenScope::Scim, "okta")
        .await;
    let (status, body) = scim_as(
        &app,
        &okta,
        Method::POST,
        "/Users",
        Some(new_user_body("dora@example.com")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        user(&app.store, "dora@example.com").await.source,
        Source::Scim("okta".into())
    );
    // An unbound token pushes for the IdP "default".
    let (status, _) = app
        .scim_json(
            Method::POST,
            "/Users",
            Some(new_user_body("eve@example.com")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        user(&app.store, "eve@example.com").await.source,
        Source::Scim("default".into())
    );
}

#[tokio::test]
async fn a_scim_write_to_another_idps_objects_is_refused_naming_the_owner() {
    let app = TestApp::spawn().await;
    pulled(&app.store, ENTRA).await;
    let alice = user(&app.store, "alice@example.com").await;
    let evals = app.store.resolve_team("LLM Evals").await.unwrap().unwrap();
    let (_, key) = app.new_api_key(alice.id, Some(evals.id)).await;
    let okta = app
        .new_idp_token("okta-push", TokenScope::Scim, "okta")
        .await;
    let user_path = format!("/Users/{}", alice.id);
    let team_path = format!("/Groups/{}", evals.id);

    let attempts = [
        (
            Method::PATCH,
            user_path.clone(),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]}),
            ),
        ),
        (
            Method::PUT,
            user_path.clone(),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "alice@example.com", "active": false}),
            ),
        ),
        (Method::DELETE, user_path.clone(), None),
        (
            Method::PATCH,
            team_path.clone(),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", alice.id)}]}),
            ),
        ),
        (
            Method::PATCH,
            team_path.clone(),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": "Hijacked"}]}),
            ),
        ),
        (
            Method::PUT,
            team_path.clone(),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "LLM Evals", "members": []}),
            ),
        ),
        (Method::DELETE, team_path.clone(), None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = scim_as(&app, &okta, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(r#"IdP "entra""#) && detail.contains(r#""okta""#),
            "{method} {path}: {detail}"
        );
    }
    // The same default token as every other unbound token is refused too.
    let (status, _) = app.scim_json(Method::DELETE, &user_path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Reads stay open to every SCIM token.
    let (status, _) = scim_as(&app, &okta, Method::GET, &user_path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = scim_as(&app, &okta, Method::GET, &team_path, None).await;
    assert_eq!(status, StatusCode::OK);

    // Nothing changed.
    let after = user(&app.store, "alice@example.com").await;
    assert!(after.active);
    assert_eq!(after.version, alice.version);
    assert_eq!(
        team_members(&app.store, "LLM Evals").await,
        ["alice@example.com", "bob@example.com"]
    );
    assert_eq!(app.whoami(&key).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_idps_pull_and_its_scim_pushes_share_the_same_objects() {
    let app = TestApp::spawn().await;
    let entra = app
        .new_idp_token("entra-push", TokenScope::Scim, "entra")
        .await;
    // Entra pushes a user first; its pull later lists the same person.
    let (status, _) = scim_as(
        &app,
        &entra,
        Method::POST,
        "/Users",
        Some(new_user_body("alice@example.com")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let plan = pulled(&app.store, ENTRA).await;
    assert!(
        !plan.warnings.iter().any(|w| w.contains("owned by")),
        "{:?}",
        plan.warnings
    );
    let alice = user(&app.store, "alice@example.com").await;
    assert!(alice.source.same_owner(&Source::Scim("entra".into())));

    // Entra's SCIM client changes what Entra's pull created.
    let evals = app.store.resolve_team("LLM Evals").await.unwrap().unwrap();
    let bob = user(&app.store, "bob@example.com").await;
    let (status, body) = scim_as(
        &app,
        &entra,
        Method::PATCH,
        &format!("/Groups/{}", evals.id),
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", bob.id)}]}),
        ),
    )
    .await;
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(
        team_members(&app.store, "LLM Evals").await,
        ["alice@example.com"]
    );
}

#[tokio::test]
async fn an_adopt_rule_lets_a_scim_client_take_over_another_idps_user() {
    let app = TestApp::spawn_with(|c| {
        c.ownership
            .adopt
            .insert("okta".into(), vec!["entra".into()]);
    })
    .await;
    pulled(&app.store, ENTRA).await;
    let alice = user(&app.store, "alice@example.com").await;
    let okta = app
        .new_idp_token("okta-push", TokenScope::Scim, "okta")
        .await;
    let (status, body) = scim_as(
        &app,
        &okta,
        Method::PATCH,
        &format!("/Users/{}", alice.id),
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "displayName", "value": "Alice O."}]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = user(&app.store, "alice@example.com").await;
    assert_eq!(after.source, Source::Scim("okta".into()));
    assert_eq!(after.display_name.as_deref(), Some("Alice O."));
}

// ---- The token command ----

fn cli(app: &TestApp, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("--database-url")
        .arg(&app.config.database.url)
        .args(args)
        .env_remove("SCIMSYNC_CONFIG")
        .env_remove("SCIMSYNC_DATABASE_URL")
        .env("SCIMSYNC_LOG_LEVEL", "warn")
        .output()
        .expect("scimsync runs")
}

#[tokio::test]
async fn token_create_binds_a_scim_token_to_an_idp() {
    let app = TestApp::spawn().await;
    let out = cli(
        &app,
        &["token", "create", "--name", "okta-push", "--idp", "okta"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (status, _) = scim_as(
        &app,
        &token,
        Method::POST,
        "/Users",
        Some(new_user_body("frank@example.com")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        user(&app.store, "frank@example.com").await.source,
        Source::Scim("okta".into())
    );

    let list = cli(&app, &["token", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    let row = listed
        .lines()
        .find(|l| l.starts_with("okta-push"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.split_whitespace().nth(2) == Some("okta"), "{listed}");
    assert!(!listed.contains(&token), "no secret in the list");

    for (args, expected) in [
        (
            vec!["token", "create", "--name", "x", "--idp", "bad name"],
            "must be 1 to 64 letters",
        ),
        (
            vec![
                "token", "create", "--name", "y", "--scope", "sso", "--idp", "okta",
            ],
            "binds a SCIM token",
        ),
    ] {
        let out = cli(&app, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
