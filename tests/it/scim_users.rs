//! The identity store's rules for users provisioned over SCIM: uniqueness, roles,
//! deactivation and API keys, deletion, read-only and write-only attributes, audit.

use crate::common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use scimsync::domain::{Role, TokenScope};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

async fn create_user(app: &TestApp, body: Value) -> Value {
    let (status, created) = app.scim_json(Method::POST, "/Users", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

fn id_of(resource: &Value) -> Uuid {
    resource["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .expect("a UUID id")
}

async fn patch(app: &TestApp, path: &str, operations: Value) -> (StatusCode, Value) {
    app.scim_json(Method::PATCH, path, Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})))
        .await
}

#[tokio::test]
async fn posting_a_user_whose_user_name_exists_in_another_case_is_409_uniqueness() {
    let app = TestApp::spawn().await;
    let first = create_user(
        &app,
        json!({"userName": "Alice@Example.com", "displayName": "First"}),
    )
    .await;
    let (status, body) = app
        .scim_json(
            Method::POST,
            "/Users",
            Some(json!({"userName": "alice@EXAMPLE.com", "displayName": "Second"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["scimType"], "uniqueness");
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["displayName"], "First");
    assert_eq!(list["Resources"][0]["id"], first["id"]);
}

#[tokio::test]
async fn renaming_a_user_onto_a_taken_user_name_is_409_and_changes_nothing() {
    let app = TestApp::spawn().await;
    create_user(&app, json!({"userName": "taken"})).await;
    let other = create_user(&app, json!({"userName": "other"})).await;
    let (status, body) = patch(
        &app,
        &format!("/Users/{}", id_of(&other)),
        json!([{"op": "replace", "path": "userName", "value": "TAKEN"}]),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["scimType"], "uniqueness");
    let (_, now) = app
        .scim_json(Method::GET, &format!("/Users/{}", id_of(&other)), None)
        .await;
    assert_eq!(now["userName"], "other");
}

#[tokio::test]
async fn a_new_user_gets_the_configured_default_role() {
    let app = TestApp::spawn_with(|config| {
        config.provisioning.default_role = Role::parse("internal_user").unwrap();
    })
    .await;
    let user = create_user(&app, json!({"userName": "new"})).await;
    let stored = app.store.user(id_of(&user)).await.unwrap().unwrap();
    assert_eq!(stored.role.as_str(), "internal_user");
}

#[tokio::test]
async fn members_of_a_role_group_get_its_role_and_lose_it_when_they_leave() {
    let app = TestApp::spawn_with(|config| {
        config.provisioning.role_groups =
            BTreeMap::from([("LLM Admins".to_owned(), Role::parse("admin").unwrap())]);
    })
    .await;
    let user = create_user(&app, json!({"userName": "boss"})).await;
    let user_id = id_of(&user);
    let (_, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "LLM Admins"})),
        )
        .await;
    let group_path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let (status, _) = patch(
        &app,
        &group_path,
        json!([{"op": "add", "path": "members", "value": [{"value": user_id}]}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.store
            .user(user_id)
            .await
            .unwrap()
            .unwrap()
            .role
            .as_str(),
        "admin"
    );
    let (status, _) = patch(
        &app,
        &group_path,
        json!([{"op": "remove", "path": format!("members[value eq \"{user_id}\"]")}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.store
            .user(user_id)
            .await
            .unwrap()
            .unwrap()
            .role
            .as_str(),
        "viewer"
    );
}

#[tokio::test]
async fn deactivating_a_user_blocks_their_keys_and_reactivating_unblocks_them() {
    let app = TestApp::spawn().await;
    let user = create_user(&app, json!({"userName": "keyholder"})).await;
    let user_id = id_of(&user);
    let (_, secret) = app.new_api_key(user_id, None).await;
    assert_eq!(app.whoami(&secret).await.0, StatusCode::OK);

    let path = format!("/Users/{user_id}");
    let (status, body) = patch(
        &app,
        &path,
        json!([{"op": "replace", "path": "active", "value": false}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["active"], false);
    assert_eq!(app.whoami(&secret).await.0, StatusCode::UNAUTHORIZED);
    let keys = app.store.list_keys(Some(user_id)).await.unwrap();
    assert!(keys.iter().all(|k| k.blocked_by.is_some()), "{keys:?}");

    let (status, _) = patch(
        &app,
        &path,
        json!([{"op": "replace", "path": "active", "value": true}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, who) = app.whoami(&secret).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["user_id"], user_id.to_string());
}

#[tokio::test]
async fn an_inactive_user_is_still_returned_by_get_and_by_filters() {
    let app = TestApp::spawn().await;
    let user = create_user(&app, json!({"userName": "sleepy", "active": false})).await;
    let (status, got) = app
        .scim_json(Method::GET, &format!("/Users/{}", id_of(&user)), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["active"], false);
    let (_, found) = app
        .scim_json(Method::GET, "/Users?filter=userName+eq+%22sleepy%22", None)
        .await;
    assert_eq!(found["totalResults"], 1);
}

#[tokio::test]
async fn deleting_a_user_removes_memberships_purges_keys_with_an_audit_copy_then_404s() {
    let app = TestApp::spawn().await;
    let user = create_user(&app, json!({"userName": "leaver"})).await;
    let user_id = id_of(&user);
    let (_, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "Team", "members": [{"value": user_id}]})),
        )
        .await;
    let (key_id, secret) = app.new_api_key(user_id, None).await;

    let (status, body) = app
        .scim_json(Method::DELETE, &format!("/Users/{user_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null);
    let (status, _) = app
        .scim_json(Method::GET, &format!("/Users/{user_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .scim_json(Method::DELETE, &format!("/Users/{user_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(app.whoami(&secret).await.0, StatusCode::UNAUTHORIZED);
    assert!(app.store.list_keys(Some(user_id)).await.unwrap().is_empty());
    let purged = app.store.deleted_keys(user_id).await.unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].id, key_id);
    let (_, group) = app
        .scim_json(
            Method::GET,
            &format!("/Groups/{}", group["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(group["members"].as_array().map_or(0, Vec::len), 0);
}

#[tokio::test]
async fn a_password_is_accepted_but_never_stored_or_returned() {
    let app = TestApp::spawn().await;
    let user = create_user(
        &app,
        json!({"userName": "secretive", "password": "hunter2-Secret!"}),
    )
    .await;
    assert!(user.get("password").is_none());
    let stored = app.store.user(id_of(&user)).await.unwrap().unwrap();
    assert!(!serde_json::to_string(&stored).unwrap().contains("hunter2"));
    let (status, patched) = patch(
        &app,
        &format!("/Users/{}", id_of(&user)),
        json!([{"op": "replace", "path": "password", "value": "another-Secret!"}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert!(patched.get("password").is_none());
    let (_, filtered) = app
        .scim_json(Method::GET, "/Users?attributes=password", None)
        .await;
    assert!(filtered["Resources"][0].get("password").is_none());
}

#[tokio::test]
async fn the_groups_attribute_is_derived_from_memberships_and_read_only() {
    let app = TestApp::spawn().await;
    let user = create_user(
        &app,
        json!({"userName": "joiner", "groups": [{"value": "ignored"}]}),
    )
    .await;
    assert!(
        user.get("groups").is_none(),
        "groups sent on POST are ignored: {user}"
    );
    let user_id = id_of(&user);
    let (_, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "Readers", "members": [{"value": user_id}]})),
        )
        .await;
    let (_, got) = app
        .scim_json(Method::GET, &format!("/Users/{user_id}"), None)
        .await;
    assert_eq!(got["groups"][0]["value"], group["id"]);
    assert_eq!(got["groups"][0]["display"], "Readers");

    let (status, body) = patch(
        &app,
        &format!("/Users/{user_id}"),
        json!([{"op": "add", "path": "groups", "value": [{"value": group["id"]}]}]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["scimType"], "mutability");
    let (_, no_groups) = app
        .scim_json(
            Method::GET,
            &format!("/Users/{user_id}?excludedAttributes=groups"),
            None,
        )
        .await;
    assert!(no_groups.get("groups").is_none());
}

#[tokio::test]
async fn enterprise_attributes_entitlements_and_roles_are_stored_and_returned_faithfully() {
    let app = TestApp::spawn().await;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "userName": "faithful",
        "name": {"givenName": "Faith", "familyName": "Ful", "middleName": "M", "formatted": "Faith M Ful"},
        "title": "Engineer",
        "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}],
        "addresses": [{"locality": "Lisbon", "country": "PT", "type": "work", "primary": true}],
        "entitlements": [{"value": "gpt-4o"}],
        "roles": [{"value": "researcher", "primary": true}],
        ENTERPRISE: {"employeeNumber": "701984", "costCenter": "4130", "department": "Tour Operations",
                     "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}}
    });
    let created = create_user(&app, body.clone()).await;
    let (_, got) = app
        .scim_json(Method::GET, &format!("/Users/{}", id_of(&created)), None)
        .await;
    for key in [
        "name",
        "title",
        "phoneNumbers",
        "addresses",
        "entitlements",
        "roles",
        ENTERPRISE,
    ] {
        assert_eq!(got[key], body[key], "{key}");
    }
    assert_eq!(got["schemas"], body["schemas"]);
}

#[tokio::test]
async fn every_change_is_audited_with_the_token_name_as_actor() {
    let app = TestApp::spawn().await;
    let token = app.new_token("okta-prod", TokenScope::Scim).await;
    let response = app
        .http
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(json!({"userName": "audited"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let entries = app.store.audit_since(None).await.unwrap();
    let mine: Vec<_> = entries.iter().filter(|e| e.actor == "okta-prod").collect();
    assert!(!mine.is_empty(), "{entries:?}");
    assert!(mine.iter().all(|e| e.trigger == "scim"), "{mine:?}");
}

#[tokio::test]
async fn put_replaces_the_user_and_clears_what_it_leaves_out() {
    let app = TestApp::spawn().await;
    let user = create_user(
        &app,
        json!({"userName": "replace", "displayName": "Old", "title": "Old title", "externalId": "e1"}),
    )
    .await;
    let (status, replaced) = app
        .scim_json(
            Method::PUT,
            &format!("/Users/{}", id_of(&user)),
            Some(json!({"userName": "replace", "displayName": "New", "externalId": "e1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["displayName"], "New");
    assert!(replaced.get("title").is_none());
    assert_eq!(replaced["active"], true, "active is kept when not given");
    assert_eq!(replaced["meta"]["created"], user["meta"]["created"]);
    assert_ne!(replaced["meta"]["version"], user["meta"]["version"]);
}

#[tokio::test]
async fn the_answer_to_a_post_is_exactly_what_a_get_returns_afterwards_etag_included() {
    let app = TestApp::spawn().await;
    let response = app
        .scim(Method::POST, "/Users")
        .header("content-type", "application/scim+json")
        .body(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "userName": "echo@example.com",
                "externalId": "e-1",
                "name": {"givenName": "Echo", "familyName": "Back"},
                "emails": [{"value": "echo@example.com", "type": "work", "primary": true}],
                ENTERPRISE: {"department": "Acoustics"}
            })
            .to_string(),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let posted_etag = response.headers()["etag"].clone();
    let posted: Value = response.json().await.expect("json");

    let got = app
        .scim(Method::GET, &format!("/Users/{}", id_of(&posted)))
        .send()
        .await
        .expect("sent");
    assert_eq!(got.headers()["etag"], posted_etag);
    let got: Value = got.json().await.expect("json");
    assert_eq!(got, posted);
}

#[tokio::test]
async fn joining_or_leaving_a_group_changes_the_users_etag_so_a_conditional_get_is_not_304() {
    let app = TestApp::spawn().await;
    let user = create_user(&app, json!({"userName": "member@example.com"})).await;
    let path = format!("/Users/{}", id_of(&user));
    let etag_of = |response: &reqwest::Response| response.headers()["etag"].clone();
    let before = app.scim(Method::GET, &path).send().await.expect("sent");
    let before = etag_of(&before);

    let (status, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(
                json!({"displayName": "Readers", "members": [{"value": id_of(&user).to_string()}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");

    let after = app
        .scim(Method::GET, &path)
        .header("if-none-match", before.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(
        after.status(),
        StatusCode::OK,
        "the groups changed: not 304"
    );
    let joined = etag_of(&after);
    assert_ne!(joined, before);
    let body: Value = after.json().await.expect("json");
    assert_eq!(body["groups"][0]["display"], "Readers");
    assert_eq!(body["meta"]["version"], joined.to_str().expect("ascii"));

    let (status, _) = patch(
        &app,
        &format!("/Groups/{}", group["id"].as_str().expect("id")),
        json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", id_of(&user))}]),
    )
    .await;
    assert!(status.is_success());
    let left = app
        .scim(Method::GET, &path)
        .header("if-none-match", joined.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(left.status(), StatusCode::OK, "left the group: not 304");
    assert_ne!(etag_of(&left), joined);
}

#[tokio::test]
async fn renaming_or_deleting_a_users_team_changes_the_users_etag() {
    let app = TestApp::spawn().await;
    let user = create_user(&app, json!({"userName": "renamed-team@example.com"})).await;
    let path = format!("/Users/{}", id_of(&user));
    let (status, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(
                json!({"displayName": "Before", "members": [{"value": id_of(&user).to_string()}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group_path = format!("/Groups/{}", group["id"].as_str().expect("id"));
    let etag = |app: &TestApp| {
        let path = path.clone();
        let request = app.scim(Method::GET, &path);
        async move {
            let response = request.send().await.expect("sent");
            let etag = response.headers()["etag"].clone();
            let body: Value = response.json().await.expect("json");
            (etag, body)
        }
    };
    let (before, _) = etag(&app).await;

    let (status, _) = patch(
        &app,
        &group_path,
        json!([{"op": "replace", "path": "displayName", "value": "After"}]),
    )
    .await;
    assert!(status.is_success());
    let (renamed, body) = etag(&app).await;
    assert_ne!(renamed, before, "the groups attribute shows the new name");
    assert_eq!(body["groups"][0]["display"], "After");

    let (status, _) = app.scim_json(Method::DELETE, &group_path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (deleted, body) = etag(&app).await;
    assert_ne!(deleted, renamed, "the team left the groups attribute");
    assert_eq!(body.get("groups").cloned().unwrap_or(json!([])), json!([]));
}
