//! What operators read in the shell: `key list`, `token list` and `audit` name users
//! and teams (ids with `--wide` or `--format json`), JSON for scripts, colour only on
//! a terminal and never under NO_COLOR, and durations read as documented. The real
//! binary against the database of a running TestApp, so both backends are covered.

use crate::common::TestApp;
use reqwest::{Method, StatusCode};
use scimsync::domain::{TokenScope, Trigger};
use serde_json::{json, Value};
use std::process::Output;

fn cli_env(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_scimsync"));
    cmd.arg("--database-url")
        .arg(&app.config.database.url)
        .args(args)
        .env_remove("SCIMSYNC_CONFIG")
        .env_remove("SCIMSYNC_DATABASE_URL")
        // Whatever the shell running the tests says about colour, each test says its own.
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("SCIMSYNC_LOG_LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("scimsync runs")
}

fn cli(app: &TestApp, args: &[&str]) -> String {
    let out = cli_env(app, args, &[]);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// alice in team "Evals" with a team key named laptop; bob with a key of his own.
async fn keyed_app() -> (TestApp, scimsync::domain::User, scimsync::domain::Team) {
    let app = TestApp::spawn().await;
    let alice = app.seed_user("alice@example.com").await;
    let bob = app.seed_user("bob@example.com").await;
    let team = app.seed_team("Evals").await;
    app.seed_member(team.id, alice.id).await;
    cli(
        &app,
        &[
            "key",
            "create",
            "--user",
            "alice@example.com",
            "--team",
            "Evals",
            "--name",
            "laptop",
        ],
    );
    app.new_api_key(bob.id, None).await;
    (app, alice, team)
}

#[tokio::test]
async fn key_list_shows_user_and_team_names_and_ids_only_when_wide() {
    let (app, alice, team) = keyed_app().await;
    let text = cli(&app, &["key", "list"]);
    let header = text.lines().next().unwrap_or_default();
    assert!(header.starts_with("ID"), "{text}");
    assert!(header.contains("USER") && header.contains("TEAM"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("laptop"))
        .unwrap_or_else(|| panic!("no laptop key in\n{text}"));
    assert!(line.contains("alice@example.com"), "{line}");
    assert!(line.contains("Evals"), "{line}");
    assert!(line.contains("active"), "{line}");
    assert!(text.contains("bob@example.com"), "{text}");
    assert!(!text.contains(&alice.id.to_string()), "{text}");
    assert!(!text.contains(&team.id.to_string()), "{text}");

    let wide = cli(&app, &["key", "list", "--wide"]);
    assert!(
        wide.lines().next().unwrap_or_default().contains("USER ID"),
        "{wide}"
    );
    assert!(wide.contains(&alice.id.to_string()), "{wide}");
    assert!(wide.contains(&team.id.to_string()), "{wide}");
    assert!(wide.contains("alice@example.com"), "{wide}");

    let only_alice = cli(&app, &["key", "list", "--user", "alice@example.com"]);
    assert_eq!(only_alice.lines().count(), 2, "{only_alice}");
}

#[tokio::test]
async fn key_list_json_is_one_document_with_ids_and_names() {
    let (app, alice, team) = keyed_app().await;
    let text = cli(&app, &["key", "list", "--format", "json"]);
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    let keys = doc["keys"].as_array().expect("a keys array");
    assert_eq!(keys.len(), 2, "{doc}");
    let laptop = keys
        .iter()
        .find(|k| k["name"] == "laptop")
        .expect("the laptop key");
    assert_eq!(laptop["user"]["id"], json!(alice.id));
    assert_eq!(laptop["user"]["user_name"], "alice@example.com");
    assert_eq!(laptop["team"]["id"], json!(team.id));
    assert_eq!(laptop["team"]["display_name"], "Evals");
    assert_eq!(laptop["state"], "active");
    assert!(laptop["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(laptop["prefix"]
        .as_str()
        .is_some_and(|p| p.starts_with("sk-")));
    let bobs = keys
        .iter()
        .find(|k| k["name"].is_null())
        .expect("bob's key");
    assert_eq!(bobs["team"], Value::Null);
}

#[tokio::test]
async fn token_list_has_a_json_form() {
    let app = TestApp::spawn().await;
    app.new_token("ops", TokenScope::Admin).await;
    let doc: Value =
        serde_json::from_str(&cli(&app, &["token", "list", "--format", "json"])).expect("JSON");
    let tokens = doc["tokens"].as_array().expect("a tokens array");
    let ops = tokens
        .iter()
        .find(|t| t["name"] == "ops")
        .expect("the ops token");
    assert_eq!(ops["scope"], "admin");
    assert_eq!(ops["idp"], Value::Null);
    assert_eq!(ops["state"], "active");
    let initial = tokens
        .iter()
        .find(|t| t["name"] == "initial")
        .expect("the initial token");
    assert_eq!(initial["idp"], "default");
    let text = cli(&app, &["token", "list"]);
    assert!(text.lines().any(|l| l.starts_with("ops ")), "{text}");
}

#[tokio::test]
async fn audit_names_users_teams_memberships_and_keys() {
    let app = TestApp::spawn().await;
    let (status, user) = app
        .scim_json(
            Method::POST,
            "/Users",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "frank@example.com", "active": true
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let user_id = user["id"].as_str().expect("user id").to_owned();
    let (status, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Research", "members": [{"value": user_id}]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let team_id = group["id"].as_str().expect("group id").to_owned();
    cli(
        &app,
        &[
            "key",
            "create",
            "--user",
            "frank@example.com",
            "--team",
            "Research",
        ],
    );
    // An entry whose detail names nobody (as older entries may): the name is looked up.
    let user_uuid = uuid::Uuid::parse_str(&user_id).expect("uuid");
    let mut tx = app.store.begin_write().await.expect("transaction");
    tx.audit(
        Trigger::Cli,
        "old",
        "update_user",
        &format!("user:{user_uuid}"),
        &json!({}),
    )
    .await
    .expect("audited");
    tx.commit().await.expect("commit");

    let text = cli(&app, &["audit"]);
    assert!(text.contains("user frank@example.com"), "{text}");
    assert!(text.contains("team \"Research\""), "{text}");
    assert!(
        text.contains("member frank@example.com of team \"Research\""),
        "{text}"
    );
    assert!(
        text.contains("of frank@example.com for team \"Research\""),
        "{text}"
    );
    let old = text
        .lines()
        .find(|l| l.contains("update_user"))
        .unwrap_or_else(|| panic!("no update_user in\n{text}"));
    assert!(old.contains("user frank@example.com"), "{old}");
    assert!(
        !text.contains(&user_id) && !text.contains(&team_id),
        "{text}"
    );

    let wide = cli(&app, &["audit", "--wide"]);
    assert!(wide.contains(&format!("user:{user_id}")), "{wide}");
    assert!(wide.contains("user frank@example.com"), "{wide}");

    // The JSON keeps its shape: the stored entries, ids and all.
    let doc: Value =
        serde_json::from_str(&cli(&app, &["audit", "--format", "json"])).expect("JSON");
    let entries = doc.as_array().expect("an array of entries");
    assert!(entries
        .iter()
        .any(|e| e["target"] == format!("user:{user_id}")));
}

fn has_escape(out: &Output) -> bool {
    out.stdout.contains(&0x1b)
}

#[tokio::test]
async fn colour_only_on_request_and_never_under_no_color() {
    let (app, _, _) = keyed_app().await;
    let snapshot = app.dir.path().join("snap.json");
    std::fs::write(
        &snapshot,
        r#"{"idp": "entra", "complete": true,
            "users": [{"external_id": "u-9", "user_name": "zoe@example.com"}],
            "groups": []}"#,
    )
    .expect("snapshot written");
    let snapshot = snapshot.to_str().expect("UTF-8 path");
    for args in [
        &["key", "list"][..],
        &["token", "list"],
        &["audit"],
        &["plan", "--snapshot", snapshot],
    ] {
        // Through a pipe, as in these tests: no colour.
        let piped = cli_env(&app, args, &[]);
        assert!(!has_escape(&piped), "{args:?}: {piped:?}");
        // Asked for through the pipe: colour, so the two checks below mean something.
        let forced = cli_env(&app, args, &[("CLICOLOR_FORCE", "1")]);
        assert!(has_escape(&forced), "{args:?}: {forced:?}");
        // NO_COLOR wins over everything.
        let refused = cli_env(&app, args, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
        assert!(!has_escape(&refused), "{args:?}: {refused:?}");
        assert_eq!(
            String::from_utf8_lossy(&refused.stdout),
            String::from_utf8_lossy(&piped.stdout).replace("\r", ""),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn expiry_durations_combine_units_and_keep_their_limit() {
    let app = TestApp::spawn().await;
    app.seed_user("alice@example.com").await;
    let before = scimsync::store::now();
    cli(
        &app,
        &[
            "key",
            "create",
            "--user",
            "alice@example.com",
            "--expires-in",
            "1d12h",
        ],
    );
    let doc: Value =
        serde_json::from_str(&cli(&app, &["key", "list", "--format", "json"])).expect("JSON");
    let expires = doc["keys"][0]["expires"].as_str().expect("an expiry");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("RFC 3339");
    let hours = (expires.with_timezone(&chrono::Utc) - before).num_hours();
    assert_eq!(hours, 36, "{expires}");
    let out = cli_env(
        &app,
        &[
            "key",
            "create",
            "--user",
            "alice@example.com",
            "--expires-in",
            "3650d1s",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is too long (at most 10 years, 3650d)"),
        "{err}"
    );
}
