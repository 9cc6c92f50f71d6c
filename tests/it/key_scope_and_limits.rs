//! Issue #13, items 4, 6 and 7: a key speaks only for a team its user is in; durations
//! from the operator never wrap around; refusals are not operations, and two
//! Authorization headers are not a choice left to the server.

use crate::common;

use common::daemon::*;
use common::TestApp;
use reqwest::{Method, StatusCode};
use scimsync::domain::TokenScope;
use serde_json::{json, Value};
use std::process::Output;
use uuid::Uuid;

/// Runs the CLI against the app's database from another process, as an operator would.
async fn cli(app: &TestApp, args: &[&str]) -> Output {
    let url = app.config.database.url.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("dir");
        run(scimsync(dir.path())
            .env("SCIMSYNC_DATABASE_URL", url)
            .args(&args))
    })
    .await
    .expect("CLI ran")
}

async fn scim_created(app: &TestApp, path: &str, body: Value) -> Uuid {
    let (status, created) = app.scim_json(Method::POST, path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
        .expect("an id")
}

#[tokio::test]
async fn a_key_cannot_be_scoped_to_a_team_its_user_is_not_in() {
    let app = TestApp::spawn().await;
    let bob = app.seed_user("bob@example.com").await;
    let ops = app.seed_team("Ops").await;

    let out = cli(
        &app,
        &[
            "key",
            "create",
            "--user",
            "bob@example.com",
            "--team",
            "Ops",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "bob@example.com is not a member of team \"Ops\"; add them to the team in the IdP first"
        ),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "no key printed");
    assert!(app.store.list_keys(Some(bob.id)).await.unwrap().is_empty());

    // The library refuses too, so no other caller can mint such a key.
    let new = scimsync::reconcile::NewKey {
        user_id: bob.id,
        team_id: Some(ops.id),
        ..Default::default()
    };
    let refused = app
        .engine()
        .issue_key(new, &crate::common::operator())
        .await;
    assert!(matches!(
        refused,
        Err(scimsync::reconcile::EngineError::NotAMember { .. })
    ));
    assert!(app.store.list_keys(Some(bob.id)).await.unwrap().is_empty());

    // Once bob is in Ops the same command works, and whoami vouches for Ops.
    app.seed_member(ops.id, bob.id).await;
    let out = cli(
        &app,
        &[
            "key",
            "create",
            "--user",
            "bob@example.com",
            "--team",
            "Ops",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = app.whoami(stdout(&out).trim()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["team_id"], ops.id.to_string());
}

#[tokio::test]
async fn whoami_refuses_a_team_key_once_its_user_left_the_team() {
    let app = TestApp::spawn_with(|c| c.provisioning.purge_team_keys_on_removal = false).await;
    let bob = scim_created(&app, "/Users", json!({"userName": "bob@example.com"})).await;
    let ops = scim_created(
        &app,
        "/Groups",
        json!({"displayName": "Ops", "members": [{"value": bob}]}),
    )
    .await;
    let (team_key_id, team_key) = app.new_api_key(bob, Some(ops)).await;
    let (_, personal_key) = app.new_api_key(bob, None).await;
    for _ in 0..2 {
        // Twice: whatever the first answer left in a cache must not outlive what follows.
        let (status, body) = app.whoami(&team_key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["team_id"], ops.to_string());
    }

    // The IdP takes bob out of Ops; with purging off the key stays in the store...
    let (status, body) = app
        .scim_json(
            Method::PATCH,
            &format!("/Groups/{ops}"),
            Some(json!({"Operations": [
                {"op": "remove", "path": format!("members[value eq \"{bob}\"]")}
            ]})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let kept: Vec<Uuid> = app
        .store
        .list_keys(Some(bob))
        .await
        .unwrap()
        .iter()
        .map(|k| k.id)
        .collect();
    assert!(
        kept.contains(&team_key_id),
        "purge_team_keys_on_removal = false"
    );
    // ...but no longer speaks for Ops.
    let (status, body) = app.whoami(&team_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(app.whoami(&personal_key).await.0, StatusCode::OK);

    // Back in the team, the key works again.
    let (status, body) = app
        .scim_json(
            Method::PATCH,
            &format!("/Groups/{ops}"),
            Some(json!({"Operations": [
                {"op": "add", "path": "members", "value": [{"value": bob}]}
            ]})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(app.whoami(&team_key).await.0, StatusCode::OK);
    assert_eq!(app.whoami(&team_key).await.0, StatusCode::OK);

    // A removal made straight in the database (another process, an operator's SQL).
    let mut tx = app.store.begin_write().await.unwrap();
    assert!(tx.remove_member(ops, bob).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(app.whoami(&team_key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.whoami(&personal_key).await.0, StatusCode::OK);
}

#[test]
fn an_overflowing_delete_after_is_refused_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    for (value, expected) in [
        (
            "144115188075855872d",
            "delete_after = \"144115188075855872d\" is too long (at most 100 years",
        ),
        ("18446744073709551615s", "is too long (at most 100 years"),
        ("36501d", "is too long (at most 100 years"),
        ("-30d", "is negative"),
        ("1.5d", "has a fraction"),
        ("d", "has no number"),
        ("30", "has no unit"),
        ("30w", "unknown unit \"w\""),
    ] {
        let config = write(
            dir.path(),
            "c.toml",
            &format!("[provisioning]\ndefault_role = \"viewer\"\ndelete_after = \"{value}\"\n"),
        );
        let out = run(scimsync(dir.path())
            .args(["check-config", "--config"])
            .arg(&config));
        assert_eq!(out.status.code(), Some(1), "{value}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}:3:", config.display())),
            "{value}: the file and line: {err}"
        );
        assert!(err.contains("delete_after"), "{value}: the key: {err}");
        assert!(err.contains(expected), "{value}: {err}");
        assert!(!stdout(&out).contains("configuration OK"));
    }
    let config = write(
        dir.path(),
        "c.toml",
        "[provisioning]\ndelete_after = \"36500d\"\n",
    );
    let out = run(scimsync(dir.path())
        .args(["check-config", "--config"])
        .arg(&config));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn expires_in_zero_or_overflowing_is_refused() {
    let app = TestApp::spawn().await;
    let carol = app.seed_user("carol@example.com").await;
    for (value, expected) in [
        (
            "0s",
            "--expires-in \"0s\" is zero; a key's expiry must be in the future",
        ),
        ("0d", "is zero"),
        (
            "144115188075855872d",
            "--expires-in \"144115188075855872d\" is too long (at most 10 years",
        ),
        ("18446744073709551615s", "is too long"),
        ("3651d", "is too long (at most 10 years, 3650d)"),
        ("-1h", "is negative"),
        ("2.5h", "has a fraction"),
    ] {
        // `=`: a value starting with '-' would otherwise be read as a flag.
        let flag = format!("--expires-in={value}");
        let out = cli(
            &app,
            &["key", "create", "--user", "carol@example.com", &flag],
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{value}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{value}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{value}: no key printed");
    }
    assert!(app
        .store
        .list_keys(Some(carol.id))
        .await
        .unwrap()
        .is_empty());

    let before = scimsync::store::now();
    let out = cli(
        &app,
        &[
            "key",
            "create",
            "--user",
            "carol@example.com",
            "--expires-in",
            "3650d",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = app.store.list_keys(Some(carol.id)).await.unwrap();
    let expires = keys[0].expires.expect("an expiry");
    assert!(expires >= before + chrono::Duration::days(3650));
    assert!(expires <= scimsync::store::now() + chrono::Duration::days(3650));
    assert_eq!(app.whoami(stdout(&out).trim()).await.0, StatusCode::OK);
}

/// The value of a counter's samples whose labels include all of `labels`.
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn exposition(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// Sends `count` GETs of /scim/v2/Users with the given Authorization values.
async fn list_users(http: &reqwest::Client, url: &str, authorization: Option<&str>, count: usize) {
    for _ in 0..count {
        let mut request = http.get(url);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("request sent");
        assert!(response.status().is_client_error() || response.status().is_success());
    }
}

#[tokio::test]
async fn refused_requests_do_not_count_as_scim_operations() {
    // A daemon process of its own: the metrics recorder is per process, and the other
    // tests of this binary make SCIM requests of their own.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve(dir.path());
    if let Some(server) = common::postgres_server() {
        cmd.env(
            "SCIMSYNC_DATABASE_URL",
            common::fresh_postgres_database(&server).await,
        );
    }
    let daemon = tokio::task::spawn_blocking(move || Daemon::start(cmd))
        .await
        .unwrap();
    let token = std::fs::read_to_string(dir.path().join(scimsync::app::INITIAL_TOKEN_FILE))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let users = daemon.url("/scim/v2/Users");
    let list = [("resource", "User"), ("kind", "list")];
    list_users(&http, &users, None, 5).await;
    list_users(&http, &users, Some("Basic dXNlcjpwYXNz"), 5).await;
    let forged = format!("Bearer scimsync_{}", "A".repeat(43));
    list_users(&http, &users, Some(&forged), 5).await;
    let text = exposition(&http, &daemon.url("/metrics")).await;
    assert_eq!(
        sample(&text, "scimsync_http_requests_total", &[("status", "401")]),
        15.0,
        "the refusals are counted as HTTP requests"
    );
    assert_eq!(
        sample(&text, "scimsync_scim_operations_total", &[]),
        0.0,
        "{text}"
    );

    list_users(&http, &users, Some(&format!("Bearer {token}")), 2).await;
    let text = exposition(&http, &daemon.url("/metrics")).await;
    assert_eq!(
        sample(&text, "scimsync_scim_operations_total", &list),
        2.0,
        "{text}"
    );
    drop(daemon);
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("dana@example.com").await;
    let (_, key) = app.new_api_key(user.id, None).await;
    let sso = app.new_token("gateway", TokenScope::Sso).await;
    let forged = format!("scimsync_{}", "A".repeat(43));
    let cases = [
        (
            Method::GET,
            "/scim/v2/Users",
            app.scim_token.clone(),
            forged.clone(),
        ),
        (
            Method::GET,
            "/scim/v2/Users",
            forged.clone(),
            app.scim_token.clone(),
        ),
        (
            Method::GET,
            "/scim/v2/Users",
            app.scim_token.clone(),
            app.scim_token.clone(),
        ),
        (
            Method::GET,
            "/v1/whoami",
            key.clone(),
            format!("sk-{}", "B".repeat(43)),
        ),
        (Method::GET, "/v1/whoami", key.clone(), key.clone()),
        (Method::POST, "/v1/sso/sign-in", sso.clone(), forged.clone()),
    ];
    for (method, path, first, second) in cases {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .header("authorization", format!("Bearer {first}"))
            .header("authorization", format!("Bearer {second}"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{method} {path}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/scim+json",
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert_eq!(body["status"], "400");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("more than one Authorization header"),
            "{body}"
        );
    }
    // One header still works.
    assert_eq!(app.whoami(&key).await.0, StatusCode::OK);
}
