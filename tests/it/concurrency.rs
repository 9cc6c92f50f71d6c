//! Many IdP clients writing the same group at once: no update lost, the roster exactly
//! what the operations imply, no 5xx and no "database is locked"; If-Match races end
//! in one winner and 412s, never a silent overwrite.

use crate::common;

use common::TestApp;
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn create_users(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (status, user) = app
            .scim_json(
                Method::POST,
                "/Users",
                Some(json!({"userName": format!("{prefix}{i}@example.com")})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        ids.push(user["id"].as_str().expect("id").to_owned());
    }
    ids
}

async fn roster(app: &TestApp, path: &str) -> (String, BTreeSet<String>, String) {
    let response = app.scim(Method::GET, path).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("ETag")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    let members = body["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["value"].as_str().expect("value").to_owned())
                .collect()
        })
        .unwrap_or_default();
    (
        body["displayName"].as_str().expect("name").to_owned(),
        members,
        etag,
    )
}

async fn patch(
    app: &TestApp,
    path: &str,
    operations: Value,
    if_match: Option<&str>,
) -> (StatusCode, String) {
    let mut request = app
        .scim(Method::PATCH, path)
        .header("content-type", common::SCIM_JSON)
        .body(json!({"schemas": [PATCH_OP], "Operations": operations}).to_string());
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

fn assert_healthy(outcomes: &[(String, StatusCode, String)]) {
    for (what, status, body) in outcomes {
        assert!(
            !body.to_ascii_lowercase().contains("locked")
                && !body.to_ascii_lowercase().contains("busy"),
            "{what}: {status} {body}"
        );
        assert!(!status.is_server_error(), "{what}: {status} {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_adding_members_while_others_rename_and_remove_lose_nothing() {
    let app = TestApp::spawn().await;
    let old = create_users(&app, "old", 24).await;
    let new = create_users(&app, "new", 64).await;
    let (status, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "LLM Everyone",
                        "members": old.iter().map(|id| json!({"value": id})).collect::<Vec<_>>()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group = format!("/Groups/{}", group["id"].as_str().expect("id"));

    // 64 adders, 16 removers of the first 16 old members, 8 renamers, all at once.
    let removed: Vec<String> = old[..16].to_vec();
    let names: Vec<String> = (0..8).map(|i| format!("LLM Everyone v{i}")).collect();
    let mut tasks = Vec::new();
    for id in &new {
        let ops = json!([{"op": "add", "path": "members", "value": [{"value": id}]}]);
        tasks.push((format!("add {id}"), ops));
    }
    for id in &removed {
        let ops = json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]);
        tasks.push((format!("remove {id}"), ops));
    }
    for name in &names {
        let ops = json!([{"op": "replace", "path": "displayName", "value": name}]);
        tasks.push((format!("rename {name}"), ops));
    }
    // Interleave the kinds so that renames and removals overlap the additions.
    tasks.sort_by_key(|(what, _)| {
        let h = what
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        h % 1009
    });
    let outcomes = join_all(tasks.into_iter().map(|(what, ops)| {
        let app = &app;
        let group = group.clone();
        async move {
            let (status, body) = patch(app, &group, ops, None).await;
            (what, status, body)
        }
    }))
    .await;
    assert_healthy(&outcomes);
    for (what, status, body) in &outcomes {
        assert!(
            *status == StatusCode::OK || *status == StatusCode::NO_CONTENT,
            "{what}: {status} {body}"
        );
    }

    let (name, members, _) = roster(&app, &group).await;
    let expected: BTreeSet<String> = old[16..].iter().chain(new.iter()).cloned().collect();
    let missing: Vec<_> = expected.difference(&members).collect();
    let extra: Vec<_> = members.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
    assert!(names.contains(&name), "final name {name:?}");

    // Each user's groups agree with the roster (one truth).
    let (_, alice) = app
        .scim_json(Method::GET, &format!("/Users/{}", new[0]), None)
        .await;
    assert_eq!(alice["groups"].as_array().map(Vec::len), Some(1), "{alice}");
    let (_, gone) = app
        .scim_json(Method::GET, &format!("/Users/{}", removed[0]), None)
        .await;
    assert_eq!(
        gone["groups"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{gone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_user_creation_with_colliding_names_yields_one_user_and_clean_conflicts() {
    let app = TestApp::spawn().await;
    let outcomes = join_all((0..32).map(|i| {
        let app = &app;
        async move {
            // Eight spellings of the same four names, differing only in case.
            let name = format!("User{}@Example.com", i % 4);
            let name = if i % 2 == 0 {
                name.to_lowercase()
            } else {
                name.to_uppercase()
            };
            let response = app
                .scim(Method::POST, "/Users")
                .header("content-type", common::SCIM_JSON)
                .body(json!({"userName": name}).to_string())
                .send()
                .await
                .expect("sent");
            let status = response.status();
            (name, status, response.text().await.unwrap_or_default())
        }
    }))
    .await;
    assert_healthy(&outcomes);
    let created = outcomes
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::CREATED)
        .count();
    let conflicts = outcomes
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (4, 28), "{outcomes:#?}");
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 4);
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_412_and_the_newer_write_survives() {
    let app = TestApp::spawn().await;
    let (_, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "Original"})),
        )
        .await;
    let path = format!("/Groups/{}", group["id"].as_str().expect("id"));
    let (_, _, first_etag) = roster(&app, &path).await;

    let rename = |name: &str| json!([{"op": "replace", "path": "displayName", "value": name}]);
    let (status, body) = patch(&app, &path, rename("Second"), Some(&first_etag)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = patch(&app, &path, rename("Lost update"), Some(&first_etag)).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    let (status, body) = app
        .scim_json(Method::PUT, &path, Some(json!({"displayName": "Lost put"})))
        .await;
    // Without If-Match a PUT is unconditional (RFC 7644 §3.14): that is the client's choice.
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, current) = roster(&app, &path).await;
    let put_stale = app
        .scim(Method::PUT, &path)
        .header("content-type", common::SCIM_JSON)
        .header("if-match", &first_etag)
        .body(json!({"displayName": "Stale put"}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(put_stale.status(), StatusCode::PRECONDITION_FAILED);
    let delete_stale = app
        .scim(Method::DELETE, &path)
        .header("if-match", &first_etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(delete_stale.status(), StatusCode::PRECONDITION_FAILED);
    let (name, _, etag) = roster(&app, &path).await;
    assert_eq!(name, "Lost put");
    assert_eq!(etag, current);
}

/// On PostgreSQL this holds because every write transaction takes the advisory writer
/// lock before it reads the version it checks (src/store/locks.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_racing_with_the_same_if_match_produce_exactly_one_winner() {
    let app = TestApp::spawn().await;
    let (_, user) = app
        .scim_json(
            Method::POST,
            "/Users",
            Some(json!({"userName": "race@example.com"})),
        )
        .await;
    let path = format!("/Users/{}", user["id"].as_str().expect("id"));
    let mut etag = user["meta"]["version"]
        .as_str()
        .expect("version")
        .to_owned();
    for round in 0..3 {
        let outcomes = join_all((0..16).map(|i| {
            let (app, path, etag) = (&app, &path, &etag);
            async move {
                let name = format!("Writer {round}.{i}");
                let ops = json!([{"op": "replace", "path": "displayName", "value": name}]);
                let (status, body) = patch(app, path, ops, Some(etag)).await;
                (name, status, body)
            }
        }))
        .await;
        assert_healthy(&outcomes);
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|(_, s, _)| *s == StatusCode::OK)
            .collect();
        let refused = outcomes
            .iter()
            .filter(|(_, s, _)| *s == StatusCode::PRECONDITION_FAILED)
            .count();
        assert_eq!(
            (winners.len(), refused),
            (1, 15),
            "round {round}: {outcomes:#?}"
        );
        let (_, now) = app.scim_json(Method::GET, &path, None).await;
        assert_eq!(now["displayName"], winners[0].0.as_str());
        // The next round races on the winner's version.
        let winner: Value = serde_json::from_str(&winners[0].2).expect("json");
        assert_eq!(winner["meta"]["version"], now["meta"]["version"]);
        assert_ne!(now["meta"]["version"], json!(etag));
        etag = now["meta"]["version"].as_str().expect("version").to_owned();
    }
}

#[tokio::test]
async fn creates_at_once_each_get_their_own_answer_and_a_taken_name_is_refused_alone() {
    let app = TestApp::spawn().await;
    create_users(&app, "already-here", 1).await;
    // 40 creates at once (they commit together, in batches): among them a name that
    // is taken, and one name sent twice in different case.
    let mut names: Vec<String> = (0..37).map(|i| format!("new{i}@example.com")).collect();
    names.push("ALREADY-HERE0@example.com".into());
    names.push("twice@example.com".into());
    names.push("Twice@Example.com".into());
    let answers = join_all(
        names
            .iter()
            .map(|name| app.scim_json(Method::POST, "/Users", Some(json!({"userName": name})))),
    )
    .await;

    let mut created = BTreeSet::new();
    let mut refused = Vec::new();
    for (name, (status, body)) in names.iter().zip(&answers) {
        match status {
            &StatusCode::CREATED => {
                assert_eq!(body["userName"], json!(name));
                created.insert(body["id"].as_str().expect("id").to_owned());
            }
            &StatusCode::CONFLICT => {
                assert_eq!(body["scimType"], "uniqueness", "{body}");
                refused.push(name.to_lowercase());
            }
            other => panic!("{name}: {other} {body}"),
        }
    }
    refused.sort();
    assert_eq!(refused, ["already-here0@example.com", "twice@example.com"]);
    assert_eq!(created.len(), 38);
    let (status, list) = app.scim_json(Method::GET, "/Users?count=100", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["totalResults"], 39, "{list}");
    for id in &created {
        let (status, _) = app
            .scim_json(Method::GET, &format!("/Users/{id}"), None)
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{id} was answered 201, so it is stored"
        );
    }
}
