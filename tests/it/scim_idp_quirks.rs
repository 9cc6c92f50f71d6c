//! Request shapes real identity providers send (Microsoft Entra ID, Okta, OneLogin,
//! Keycloak's SCIM plugin), replayed as they arrive on the wire. A strict RFC
//! parser would refuse several of them; each must work.

use crate::common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.scim(method, path);
    if let Some(body) = body {
        request = request
            .header("content-type", content_type)
            .body(body.to_string());
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON")
        },
    )
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, body) = app.scim_json(Method::POST, path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn id(resource: &Value) -> &str {
    resource["id"].as_str().expect("id")
}

// ---------------------------------------------------------------------------
// Microsoft Entra ID

/// Entra's provisioning user, nulls and all.
fn entra_user(user_name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7b3b5d5a1f53",
        "userName": user_name,
        "active": true,
        "displayName": null,
        "emails": [{"primary": true, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Ada Lovelace", "familyName": "Lovelace", "givenName": "Ada"},
        "roles": [],
        "title": null,
        ENTERPRISE: {"department": null, "manager": null}
    })
}

#[tokio::test]
async fn entra_creates_a_user_with_null_attributes_and_finds_it_by_user_name_and_external_id() {
    let app = TestApp::spawn().await;
    let user = created(&app, "/Users", entra_user("Ada@contoso.com")).await;
    assert!(user.get("displayName").is_none() && user.get("title").is_none());
    assert!(
        user.get(ENTERPRISE).is_none(),
        "an extension of nulls is no extension: {user}"
    );
    // Entra encodes spaces in filters as '+'.
    let (status, found) = app
        .scim_json(
            Method::GET,
            "/Users?filter=userName+eq+%22ada%40contoso.com%22",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["totalResults"], 1);
    let (_, by_external) = app
        .scim_json(
            Method::GET,
            "/Users?filter=externalId+eq+%220a21f0f2-8d2a-4f8e-bf98-7b3b5d5a1f53%22",
            None,
        )
        .await;
    assert_eq!(by_external["Resources"][0]["id"], user["id"]);
}

#[tokio::test]
async fn entra_patches_with_capitalised_ops_string_booleans_and_value_paths() {
    let app = TestApp::spawn().await;
    let user = created(&app, "/Users", json!({"userName": "grace@contoso.com"})).await;
    let path = format!("/Users/{}", id(&user));
    let (status, patched) = app
        .scim_json(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "grace@contoso.com"},
                {"op": "Replace", "path": "name.familyName", "value": "Hopper"},
                {"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": "mgr-1"},
                {"op": "Replace", "path": "active", "value": "False"}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["emails"],
        json!([{"type": "work", "value": "grace@contoso.com"}])
    );
    assert_eq!(patched["name"]["familyName"], "Hopper");
    assert_eq!(patched[ENTERPRISE]["manager"], json!({"value": "mgr-1"}));
    assert_eq!(patched["active"], false);
    // A deactivated user is still there for Entra's next lookup.
    let (_, found) = app
        .scim_json(
            Method::GET,
            "/Users?filter=userName+eq+%22grace%40contoso.com%22",
            None,
        )
        .await;
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["active"], false);
}

#[tokio::test]
async fn entra_path_less_replace_with_dotted_and_urn_keys_and_a_listed_manager() {
    let app = TestApp::spawn().await;
    let user = created(&app, "/Users", entra_user("alan@contoso.com")).await;
    let (status, patched) = app
        .scim_json(
            Method::PATCH,
            &format!("/Users/{}", id(&user)),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Replace", "value": {
                    "name.givenName": "Alan",
                    "displayName": "Alan Turing",
                    format!("{ENTERPRISE}:department"): "Cryptanalysis",
                    "active": "True"
                }},
                {"op": "Replace", "path": format!("{ENTERPRISE}:manager"), "value": [{"$ref": null, "value": "boss-1"}]}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"]["givenName"], "Alan");
    assert_eq!(patched["displayName"], "Alan Turing");
    assert_eq!(patched[ENTERPRISE]["department"], "Cryptanalysis");
    assert_eq!(patched[ENTERPRISE]["manager"]["value"], "boss-1");
    assert_eq!(patched["active"], true);
}

/// The user's enterprise manager as GET renders it.
async fn manager_of(app: &TestApp, user: &Value) -> Value {
    let (status, got) = app
        .scim_json(Method::GET, &format!("/Users/{}", id(user)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    got[ENTERPRISE]["manager"].clone()
}

async fn patch_ok(app: &TestApp, user: &Value, operations: Value) -> Value {
    let (status, patched) = app
        .scim_json(
            Method::PATCH,
            &format!("/Users/{}", id(user)),
            Some(json!({"schemas": [PATCH_OP], "Operations": operations})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{operations}: {patched}");
    patched
}

/// The request Microsoft's "Develop a SCIM endpoint" documentation shows Entra sending:
/// the path without the enterprise URN and the value a list of one reference.
#[tokio::test]
async fn entra_adds_the_manager_with_an_unqualified_path_and_a_list_of_references() {
    let app = TestApp::spawn().await;
    let boss = created(&app, "/Users", entra_user("boss@contoso.com")).await;
    let user = created(&app, "/Users", entra_user("report@contoso.com")).await;
    let patched = patch_ok(
        &app,
        &user,
        json!([{"op": "Add", "path": "manager", "value": [{"$ref": null, "value": id(&boss)}]}]),
    )
    .await;
    assert_eq!(patched[ENTERPRISE]["manager"], json!({"value": id(&boss)}));
    assert!(patched.get("manager").is_none(), "{patched}");
    assert!(patched["schemas"]
        .as_array()
        .is_some_and(|s| s.contains(&json!(ENTERPRISE))));
    assert_eq!(manager_of(&app, &user).await, json!({"value": id(&boss)}));
}

/// Replace and remove with an unqualified `manager` path reach the same attribute as
/// the URN-qualified ones, in every value form Entra uses.
#[tokio::test]
async fn entra_replaces_and_removes_the_manager_with_or_without_the_urn() {
    let app = TestApp::spawn().await;
    let first = created(&app, "/Users", entra_user("first@contoso.com")).await;
    let second = created(&app, "/Users", entra_user("second@contoso.com")).await;
    let user = created(&app, "/Users", entra_user("moved@contoso.com")).await;
    let urn_manager = format!("{ENTERPRISE}:manager");
    let set =
        |op: &str, path: &str, value: Value| json!([{"op": op, "path": path, "value": value}]);

    patch_ok(
        &app,
        &user,
        set("Replace", "manager", json!({"value": id(&first)})),
    )
    .await;
    assert_eq!(manager_of(&app, &user).await, json!({"value": id(&first)}));
    patch_ok(&app, &user, json!([{"op": "Remove", "path": "manager"}])).await;
    assert_eq!(manager_of(&app, &user).await, Value::Null);

    patch_ok(&app, &user, set("Add", "manager", json!(id(&second)))).await;
    assert_eq!(manager_of(&app, &user).await, json!({"value": id(&second)}));
    patch_ok(&app, &user, json!([{"op": "remove", "path": urn_manager}])).await;
    assert_eq!(manager_of(&app, &user).await, Value::Null);

    // Path-less, the way Entra batches attribute changes, with both value forms.
    patch_ok(
        &app,
        &user,
        json!([{"op": "replace", "value": {urn_manager.clone(): id(&first)}}]),
    )
    .await;
    assert_eq!(manager_of(&app, &user).await, json!({"value": id(&first)}));
    patch_ok(
        &app,
        &user,
        json!([{"op": "replace", "value": {urn_manager.clone(): {"value": id(&second)}}}]),
    )
    .await;
    assert_eq!(manager_of(&app, &user).await, json!({"value": id(&second)}));
    // An empty value clears the manager, as a remove does.
    patch_ok(&app, &user, set("Replace", "manager", json!({"value": ""}))).await;
    assert_eq!(manager_of(&app, &user).await, Value::Null);
}

#[tokio::test]
async fn entra_sends_an_empty_operations_list_which_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = created(&app, "/Users", json!({"userName": "idle"})).await;
    let (status, patched) = app
        .scim_json(
            Method::PATCH,
            &format!("/Users/{}", id(&user)),
            Some(json!({"schemas": [PATCH_OP], "Operations": []})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["meta"]["version"], user["meta"]["version"]);
}

#[tokio::test]
async fn entra_groups_with_a_microsoft_schema_member_removal_by_value_list_and_membership_checks() {
    let app = TestApp::spawn().await;
    let a = created(&app, "/Users", json!({"userName": "a@contoso.com"})).await;
    let b = created(&app, "/Users", json!({"userName": "b@contoso.com"})).await;
    let group = created(
        &app,
        "/Groups",
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                        "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Production LLM Evals Group",
            "members": []
        }),
    )
    .await;
    let path = format!("/Groups/{}", id(&group));
    let (status, _) = app
        .scim_json(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Add", "path": "members", "value": [{"value": id(&a)}, {"value": id(&b)}]}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, removed) = app
        .scim_json(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Remove", "path": "members", "value": [{"value": id(&a)}]}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(
        removed["members"],
        json!([{"value": id(&b), "$ref": format!("{}/scim/v2/Users/{}", app.base_url, id(&b)), "type": "User"}])
    );

    // Entra's lookups: by display name without members, and "is b a member of this group?".
    let (_, by_name) = app
        .scim_json(Method::GET, "/Groups?excludedAttributes=members&filter=displayName+eq+%22Production+LLM+Evals+Group%22", None)
        .await;
    assert_eq!(by_name["totalResults"], 1);
    assert!(by_name["Resources"][0].get("members").is_none());
    for (member, expected) in [(id(&b), 1), (id(&a), 0)] {
        let (_, check) = app
            .scim(Method::GET, "/Groups")
            .query(&[
                (
                    "filter",
                    format!(
                        "id eq \"{}\" and members[value eq \"{member}\"]",
                        id(&group)
                    ),
                ),
                ("excludedAttributes", "members".to_owned()),
            ])
            .send()
            .await
            .map(|r| (r.status(), r))
            .expect("sent");
        let body: Value = check.json().await.unwrap();
        assert_eq!(body["totalResults"], expected, "{body}");
    }
}

// ---------------------------------------------------------------------------
// Okta

#[tokio::test]
async fn okta_updates_by_put_with_id_meta_empty_groups_and_a_password() {
    let app = TestApp::spawn().await;
    let user = created(
        &app,
        "/Users",
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "isaac@example.com",
            "name": {"givenName": "Isaac", "familyName": "Newton"},
            "emails": [{"primary": true, "value": "isaac@example.com", "type": "work"}],
            "displayName": "Isaac Newton", "locale": "en-US", "externalId": "00u1abcd",
            "groups": [], "password": "1mJ0N3s!", "active": true
        }),
    )
    .await;
    let (status, replaced) = app
        .scim_json(
            Method::PUT,
            &format!("/Users/{}", id(&user)),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": id(&user),
                "userName": "isaac@example.com",
                "name": {"givenName": "Isaac", "familyName": "Newton-Smith"},
                "emails": [{"primary": true, "value": "isaac@example.com", "type": "work"}],
                "displayName": "Isaac Newton-Smith", "locale": "en-US", "externalId": "00u1abcd",
                "groups": [], "password": "an0therS3cret!", "active": true,
                "meta": {"resourceType": "User", "created": user["meta"]["created"]}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["name"]["familyName"], "Newton-Smith");
    assert!(replaced.get("password").is_none());
    assert_eq!(replaced["id"], user["id"]);
}

#[tokio::test]
async fn okta_deprovisions_by_a_path_less_replace_of_active() {
    let app = TestApp::spawn().await;
    let user = created(&app, "/Users", json!({"userName": "leaving@example.com"})).await;
    let user_id = uuid::Uuid::parse_str(id(&user)).unwrap();
    let (_, key) = app.new_api_key(user_id, None).await;
    let (status, patched) = app
        .scim_json(
            Method::PATCH,
            &format!("/Users/{user_id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": false}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["active"], false);
    assert_eq!(app.whoami(&key).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn okta_group_push_renames_with_its_own_id_and_swaps_members_in_one_patch() {
    let app = TestApp::spawn().await;
    let a = created(&app, "/Users", json!({"userName": "a@example.com"})).await;
    let b = created(&app, "/Users", json!({"userName": "b@example.com"})).await;
    let group = created(&app, "/Groups", json!({"displayName": "Okta Pushed", "members": [{"value": id(&a), "display": "a@example.com"}]})).await;
    let path = format!("/Groups/{}", id(&group));
    let (status, renamed) = app
        .scim_json(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "value": {"id": id(&group), "displayName": "Okta Pushed (renamed)"}}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["displayName"], "Okta Pushed (renamed)");
    let (status, swapped) = app
        .scim_json(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "remove", "path": format!("members[value eq \"{}\"]", id(&a))},
                {"op": "add", "path": "members", "value": [{"value": id(&b), "display": "b@example.com"}]}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{swapped}");
    let members: Vec<&str> = swapped["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(members, [id(&b)]);
    // Changing the id is still refused.
    let (status, body) = app
        .scim_json(
            Method::PATCH,
            &path,
            Some(json!({"Operations": [{"op": "replace", "value": {"id": "something-else"}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["scimType"], "mutability");
}

// ---------------------------------------------------------------------------
// OneLogin

#[tokio::test]
async fn onelogin_sends_string_active_a_null_id_old_schema_uris_unknown_keys_and_a_trailing_ampersand(
) {
    let app = TestApp::spawn().await;
    let user = created(
        &app,
        "/Users",
        json!({
            "schemas": ["urn:scim:schemas:core:2.0"],
            "id": null,
            "userName": "olga@example.com",
            "active": "true",
            "name": {"givenName": "Olga", "familyName": "K"},
            "emails": [{"value": "olga@example.com", "primary": "true"}],
            "custom_attribute_department": "Ops",
            "onelogin_user_id": 12345
        }),
    )
    .await;
    assert_eq!(user["active"], true);
    assert_eq!(user["emails"][0]["primary"], true);
    assert!(user.get("custom_attribute_department").is_none());
    let (status, found) = app
        .scim_json(
            Method::GET,
            "/Users?filter=userName%20eq%20%22olga%40example.com%22&",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["totalResults"], 1);
    let (status, patched) = app
        .scim_json(
            Method::PATCH,
            &format!("/Users/{}", id(&user)),
            Some(json!({"schemas": ["urn:scim:schemas:core:2.0"], "Operations": [{"op": "replace", "path": "active", "value": "false"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["active"], false);
}

// ---------------------------------------------------------------------------
// Keycloak's SCIM plugin

#[tokio::test]
async fn keycloak_lists_users_without_paging_parameters_and_gets_a_default_page() {
    let app = TestApp::spawn().await;
    for i in 0..105 {
        app.seed_user(&format!("kc-user-{i:03}")).await;
    }
    let (status, page) = send(&app, Method::GET, "/Users", "application/json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["totalResults"], 105);
    assert_eq!(page["itemsPerPage"], 100);
    assert_eq!(page["startIndex"], 1);
    assert_eq!(page["Resources"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn keycloak_creates_and_updates_with_application_json_and_put() {
    let app = TestApp::spawn().await;
    let (status, user) = send(
        &app,
        Method::POST,
        "/Users",
        "application/json",
        Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "kc", "active": true,
                    "name": {"givenName": "Key", "familyName": "Cloak"}, "emails": [{"value": "kc@example.com", "primary": true}]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let (status, replaced) = send(
        &app,
        Method::PUT,
        &format!("/Users/{}", id(&user)),
        "application/json",
        Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": id(&user), "userName": "kc", "active": false,
                    "name": {"givenName": "Key", "familyName": "Cloak"}, "emails": [{"value": "kc2@example.com", "primary": true}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["active"], false);
    assert_eq!(replaced["emails"][0]["value"], "kc2@example.com");
}

/// Microsoft's SCIM reference test collection (and Entra's validator) put a slash after
/// the resource type: `/Users/?filter=…`, `/Groups/`, `/ServiceProviderConfig/`.
#[tokio::test]
async fn microsoft_test_collection_trailing_slashes_name_the_same_resources() {
    let app = TestApp::spawn().await;
    let user = created(&app, "/Users/", json!({"userName": "slash@contoso.com"})).await;
    assert_eq!(user["userName"], "slash@contoso.com");
    let (status, found) = app
        .scim_json(
            Method::GET,
            "/Users/?filter=userName+eq+%22slash%40contoso.com%22",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        found["totalResults"], 1,
        "the query string is kept: {found}"
    );
    let (status, one) = app
        .scim_json(Method::GET, &format!("/Users/{}/", id(&user)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["id"], user["id"]);
    let group = created(&app, "/Groups/", json!({"displayName": "Slashers"})).await;
    let (status, groups) = app
        .scim_json(
            Method::GET,
            "/Groups/?filter=displayName+eq+%22Slashers%22&excludedAttributes=members",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{groups}");
    assert_eq!(groups["Resources"][0]["id"], group["id"]);
    for discovery in ["/ServiceProviderConfig/", "/ResourceTypes/", "/Schemas/"] {
        let (status, body) = app.scim_json(Method::GET, discovery, None).await;
        assert_eq!(status, StatusCode::OK, "{discovery}: {body}");
    }
    let (status, _) = app
        .scim_json(Method::DELETE, &format!("/Users/{}/", id(&user)), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Only slashes are forgiven: an unknown path is still unknown.
    let (status, _) = app.scim_json(Method::GET, "/Userz/", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
