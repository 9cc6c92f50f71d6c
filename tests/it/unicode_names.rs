//! One person is one user however the IdP spells their name in Unicode: composed or
//! decomposed accents, fullwidth letters and case are one userName; invisible format
//! characters are refused; a database folded by the old rule is re-folded at start, and
//! a start that would merge two users refuses, naming both.

use crate::common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use scimsync::app::App;
use scimsync::config::Config;
use serde_json::{json, Value};
use sqlx::{Connection, Row};
use std::process::Command;
use tokio::sync::oneshot;

const JOSE_COMPOSED: &str = "jos\u{e9}@example.com";
const JOSE_DECOMPOSED_UPPER: &str = "JOSE\u{301}@EXAMPLE.COM";

async fn create_user(app: &TestApp, user_name: &str) -> Value {
    let (status, created) = app
        .scim_json(Method::POST, "/Users", Some(json!({"userName": user_name})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn users_named(base_url: &str, token: &str, user_name: &str) -> Value {
    let filter = format!("userName eq \"{user_name}\"");
    let response = reqwest::Client::new()
        .get(format!("{base_url}/scim/v2/Users"))
        .query(&[("filter", filter.as_str())])
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("a JSON list")
}

async fn database(config: &Config) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&config.database.url)
        .await
        .expect("database reachable")
}

/// Makes the database look as the code before the Unicode folding left it: this row's
/// userName as the IdP sent it and folded by lowercasing only, and the fold version 1.
async fn write_as_the_old_code_would(config: &Config, id: &str, user_name: &str) {
    let mut db = database(config).await;
    sqlx::query("UPDATE users SET user_name = $1, user_name_folded = $2 WHERE id = $3")
        .bind(user_name.to_owned())
        .bind(user_name.to_lowercase())
        .bind(id.to_owned())
        .execute(&mut db)
        .await
        .expect("row rewritten");
    sqlx::query("UPDATE fold_versions SET version = 1 WHERE name = 'user_name_folded'")
        .execute(&mut db)
        .await
        .expect("fold version reset");
    let _ = db.close().await;
}

async fn stored_fold(config: &Config, id: &str) -> (String, i64) {
    let mut db = database(config).await;
    let folded: String = sqlx::query("SELECT user_name_folded FROM users WHERE id = $1")
        .bind(id.to_owned())
        .fetch_one(&mut db)
        .await
        .expect("user row")
        .try_get(0)
        .expect("text");
    let version: i64 =
        sqlx::query("SELECT version FROM fold_versions WHERE name = 'user_name_folded'")
            .fetch_one(&mut db)
            .await
            .expect("fold version row")
            .try_get(0)
            .expect("integer");
    let _ = db.close().await;
    (folded, version)
}

/// Starts the app again on the same database, as after an upgrade; returns its base URL
/// and what stops it, or why it would not start.
async fn restart(config: &Config) -> Result<(String, oneshot::Sender<()>), String> {
    let app = App::build(config.clone())
        .await
        .map_err(|e| format!("{e:#}"))?;
    let addr = app.local_addr().expect("bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = app
            .serve(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((format!("http://{addr}"), stop))
}

#[tokio::test]
async fn a_decomposed_twin_of_an_existing_user_name_is_409_uniqueness() {
    let app = TestApp::spawn().await;
    let first = create_user(&app, JOSE_COMPOSED).await;
    let (status, body) = app
        .scim_json(
            Method::POST,
            "/Users",
            Some(json!({"userName": JOSE_DECOMPOSED_UPPER})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["scimType"], "uniqueness");
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["id"], first["id"]);
}

#[tokio::test]
async fn a_decomposed_user_name_is_kept_composed() {
    let app = TestApp::spawn().await;
    let created = create_user(&app, "jose\u{301}@example.com").await;
    assert_eq!(created["userName"], JOSE_COMPOSED);
}

#[tokio::test]
async fn a_fullwidth_twin_of_an_existing_user_name_is_409_uniqueness() {
    let app = TestApp::spawn().await;
    create_user(&app, "alice@example.com").await;
    let (status, body) = app
        .scim_json(
            Method::POST,
            "/Users",
            Some(json!({"userName": "\u{ff21}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["scimType"], "uniqueness");
}

#[tokio::test]
async fn invisible_format_characters_in_a_user_name_are_400_naming_the_character() {
    let app = TestApp::spawn().await;
    for (c, code) in [
        ('\u{200B}', "U+200B"),
        ('\u{200D}', "U+200D"),
        ('\u{2060}', "U+2060"),
        ('\u{FEFF}', "U+FEFF"),
        ('\u{202E}', "U+202E"),
        ('\u{00AD}', "U+00AD"),
    ] {
        let (status, body) = app
            .scim_json(
                Method::POST,
                "/Users",
                Some(json!({"userName": format!("jo{c}se@example.com")})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{code}: {body}");
        assert_eq!(body["scimType"], "invalidValue", "{code}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!(
                "userName contains the invisible format character {code}"
            )),
            "{detail}"
        );
    }
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 0);
}

#[tokio::test]
async fn a_user_name_filter_with_a_twin_spelling_finds_the_user() {
    let app = TestApp::spawn().await;
    let created = create_user(&app, JOSE_COMPOSED).await;
    for twin in [
        JOSE_DECOMPOSED_UPPER,
        "\u{ff4a}\u{ff4f}\u{ff53}\u{e9}@example.com",
        "JOS\u{c9}@example.com",
    ] {
        let list = users_named(&app.base_url, &app.scim_token, twin).await;
        assert_eq!(list["totalResults"], 1, "{twin:?}: {list}");
        assert_eq!(list["Resources"][0]["id"], created["id"]);
    }
}

#[tokio::test]
async fn user_names_folded_by_the_old_rule_are_refolded_at_start() {
    let app = TestApp::spawn().await;
    let jose = create_user(&app, JOSE_COMPOSED).await;
    let jose_id = jose["id"].as_str().expect("id").to_owned();
    let alice = create_user(&app, "Alice@example.com").await;
    let alice_id = alice["id"].as_str().expect("id").to_owned();
    // The old code stored a decomposed spelling as sent, folded by lowercasing.
    write_as_the_old_code_would(&app.config, &jose_id, JOSE_DECOMPOSED_UPPER).await;
    assert_eq!(
        stored_fold(&app.config, &jose_id).await,
        ("jose\u{301}@example.com".to_owned(), 1)
    );

    let (base_url, _stop) = restart(&app.config).await.expect("restarts");

    assert_eq!(
        stored_fold(&app.config, &jose_id).await,
        (JOSE_COMPOSED.to_owned(), 2)
    );
    assert_eq!(
        stored_fold(&app.config, &alice_id).await.0,
        "alice@example.com"
    );
    let list = users_named(&base_url, &app.scim_token, JOSE_COMPOSED).await;
    assert_eq!(list["totalResults"], 1, "{list}");
    assert_eq!(list["Resources"][0]["id"], jose_id.as_str());
    // The composed twin the old rule would have let in is now one user.
    let response = reqwest::Client::new()
        .post(format!("{base_url}/scim/v2/Users"))
        .bearer_auth(&app.scim_token)
        .header("content-type", common::SCIM_JSON)
        .body(json!({"userName": JOSE_COMPOSED}).to_string())
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn two_rows_that_become_one_user_name_refuse_the_start_naming_both() {
    let app = TestApp::spawn().await;
    let first = create_user(&app, JOSE_COMPOSED).await;
    let first_id = first["id"].as_str().expect("id").to_owned();
    let second = create_user(&app, "placeholder@example.com").await;
    let second_id = second["id"].as_str().expect("id").to_owned();
    // Under the old rule these were two users: the composed and the decomposed spelling.
    write_as_the_old_code_would(&app.config, &second_id, JOSE_DECOMPOSED_UPPER).await;

    let refused = restart(&app.config)
        .await
        .expect_err("the start is refused");

    for needle in [
        first_id.clone(),
        second_id.clone(),
        format!("{JOSE_COMPOSED:?}"),
        format!("{JOSE_DECOMPOSED_UPPER:?}"),
        "UPDATE users SET user_name".to_owned(),
    ] {
        assert!(
            refused.contains(&needle),
            "{needle} missing from: {refused}"
        );
    }
    // Nothing was changed: the operator decides.
    assert_eq!(
        stored_fold(&app.config, &second_id).await,
        ("jose\u{301}@example.com".to_owned(), 1)
    );
}

#[tokio::test]
async fn a_stored_user_name_with_a_format_character_refuses_the_start_naming_it() {
    let app = TestApp::spawn().await;
    let bob = create_user(&app, "bob@example.com").await;
    let bob_id = bob["id"].as_str().expect("id").to_owned();
    write_as_the_old_code_would(&app.config, &bob_id, "bob\u{200B}@example.com").await;

    let refused = restart(&app.config)
        .await
        .expect_err("the start is refused");

    assert!(refused.contains(&bob_id), "{refused}");
    assert!(
        refused.contains("invisible format character U+200B"),
        "{refused}"
    );
}

#[test]
fn a_snapshot_with_twin_user_names_is_refused_naming_both() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let snapshot = dir.path().join("snap.json");
    std::fs::write(
        &snapshot,
        json!({"idp": "entra", "complete": true, "users": [
            {"external_id": "u-1", "user_name": JOSE_COMPOSED},
            {"external_id": "u-2", "user_name": "bob@example.com"},
            {"external_id": "u-3", "user_name": "\u{ff2a}ose\u{301}@example.com"},
        ]})
        .to_string(),
    )
    .expect("snapshot written");
    let out = Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("scimsync.db").display()
        ))
        .arg("plan")
        .arg("--snapshot")
        .arg(&snapshot)
        .env_remove("SCIMSYNC_CONFIG")
        .env_remove("SCIMSYNC_DATABASE_URL")
        .env("SCIMSYNC_LOG_LEVEL", "warn")
        .output()
        .expect("scimsync runs");
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("users[2]"), "{message}");
    assert!(message.contains("\"u-3\""), "{message}");
    assert!(message.contains("users[0]"), "{message}");
    assert!(message.contains("\"u-1\""), "{message}");
}
