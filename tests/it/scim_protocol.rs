//! RFC 7644 as spoken over HTTP: discovery, media types, errors, lists, filters,
//! paging, sorting, projection, ETags, /.search and /Bulk.

use crate::common;

use common::{TestApp, SCIM_JSON};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

async fn create_user(app: &TestApp, body: Value) -> Value {
    let (status, created) = app.scim_json(Method::POST, "/Users", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn create_named(app: &TestApp, user_name: &str) -> Value {
    create_user(app, json!({"userName": user_name})).await
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, scim_type: Option<&str>) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["schemas"][0], ERROR_SCHEMA, "{body}");
    assert_eq!(body["status"], expected.as_u16().to_string(), "{body}");
    match scim_type {
        Some(t) => assert_eq!(body["scimType"], t, "{body}"),
        None => assert!(body.get("scimType").is_none(), "{body}"),
    }
}

/// userNames of a list response, in order.
fn user_names(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .expect("Resources")
        .iter()
        .map(|r| r["userName"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn filter_users(app: &TestApp, filter: &str) -> (StatusCode, Value) {
    let response = app
        .scim(Method::GET, "/Users")
        .query(&[("filter", filter)])
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn filtered_names(app: &TestApp, filter: &str) -> Vec<String> {
    let (status, body) = filter_users(app, filter).await;
    assert_eq!(status, StatusCode::OK, "{filter}: {body}");
    let mut names = user_names(&body);
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// Discovery

#[tokio::test]
async fn discovery_describes_users_with_the_enterprise_extension_and_groups() {
    let app = TestApp::spawn().await;
    let (status, config) = app
        .scim_json(Method::GET, "/ServiceProviderConfig", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["patch"]["supported"], true);
    assert_eq!(config["filter"]["maxResults"], 1000);
    assert_eq!(config["bulk"]["supported"], true);
    assert_eq!(config["etag"]["supported"], true);
    assert_eq!(config["sort"]["supported"], true);
    assert_eq!(config["changePassword"]["supported"], false);

    let (_, types) = app.scim_json(Method::GET, "/ResourceTypes", None).await;
    assert_eq!(types["totalResults"], 2);
    let (status, user_type) = app
        .scim_json(Method::GET, "/ResourceTypes/User", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user_type["schemaExtensions"][0]["schema"], ENTERPRISE);

    let (_, schemas) = app.scim_json(Method::GET, "/Schemas", None).await;
    let ids: Vec<&str> = schemas["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            ENTERPRISE,
            "urn:ietf:params:scim:schemas:core:2.0:Group"
        ]
    );
    let (status, _) = app
        .scim_json(Method::GET, &format!("/Schemas/{ENTERPRISE}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.scim_json(Method::GET, "/Schemas/urn:nope", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn other_methods_on_discovery_endpoints_are_405_in_the_scim_envelope() {
    let app = TestApp::spawn().await;
    for path in [
        "/ServiceProviderConfig",
        "/ResourceTypes",
        "/Schemas",
        "/ResourceTypes/User",
    ] {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let (status, body) = app.scim_json(method.clone(), path, Some(json!({}))).await;
            assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, None);
        }
    }
}

// ---------------------------------------------------------------------------
// Media types and errors

#[tokio::test]
async fn posting_a_user_answers_201_with_location_etag_and_meta() {
    let app = TestApp::spawn().await;
    let response = app
        .scim(Method::POST, "/Users")
        .header("content-type", SCIM_JSON)
        .body(json!({"userName": "bjensen"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["content-type"], SCIM_JSON);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("{}/scim/v2/Users/{id}", app.base_url));
    assert_eq!(body["meta"]["location"], location);
    assert_eq!(body["meta"]["resourceType"], "User");
    assert_eq!(body["meta"]["version"], etag);
    assert!(etag.starts_with("W/\""), "{etag}");
    assert!(body["meta"]["created"].is_string() && body["meta"]["lastModified"].is_string());
}

#[tokio::test]
async fn application_json_and_missing_content_types_are_accepted_and_answered_as_scim_json() {
    let app = TestApp::spawn().await;
    for (i, content_type) in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = app
            .scim(Method::POST, "/Users")
            .body(json!({"userName": format!("user{i}")}).to_string());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{content_type:?}");
        assert_eq!(response.headers()["content-type"], SCIM_JSON);
    }
    let response = app
        .scim(Method::POST, "/Users")
        .header("content-type", "text/xml")
        .body("<user/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn malformed_json_is_400_invalid_syntax_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let response = app
        .scim(Method::POST, "/Users")
        .header("content-type", SCIM_JSON)
        .body("{\"userName\": \"x\",")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        Some("invalidSyntax"),
    );
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 0);
}

#[tokio::test]
async fn wrong_types_and_a_missing_user_name_are_400_invalid_value() {
    let app = TestApp::spawn().await;
    for body in [
        json!({"displayName": "no user name"}),
        json!({"userName": 42}),
        json!({"userName": "x", "active": "maybe"}),
        json!({"userName": "x", "name": "not an object"}),
        json!({"userName": "x", "emails": "a@example.com"}),
    ] {
        let (status, error) = app
            .scim_json(Method::POST, "/Users", Some(body.clone()))
            .await;
        assert_error(
            status,
            &error,
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
        );
    }
    let (status, error) = app
        .scim_json(Method::POST, "/Users", Some(json!(["array"])))
        .await;
    assert_error(
        status,
        &error,
        StatusCode::BAD_REQUEST,
        Some("invalidSyntax"),
    );
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 0);
}

#[tokio::test]
async fn an_oversized_body_is_413_in_the_scim_envelope() {
    let app = TestApp::spawn_with(|config| config.server.max_body_bytes = 4096).await;
    let big = json!({"userName": "x", "title": "t".repeat(10_000)});
    let (status, body) = app.scim_json(Method::POST, "/Users", Some(big)).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, None);
}

#[tokio::test]
async fn an_unknown_id_is_404_for_every_method_and_put_never_creates() {
    let app = TestApp::spawn().await;
    for path in [
        "/Users/6f1c0d3c-3f5a-4b59-9a51-1b6f3f4b9f00",
        "/Users/not-a-uuid",
        "/Groups/nope",
    ] {
        let (status, body) = app.scim_json(Method::GET, path, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, None);
        let (status, body) = app
            .scim_json(
                Method::PUT,
                path,
                Some(json!({"userName": "ghost", "displayName": "ghost"})),
            )
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND, None);
        let (status, body) = app
            .scim_json(Method::PATCH, path, Some(json!({"Operations": []})))
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND, None);
        let (status, body) = app.scim_json(Method::DELETE, path, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, None);
    }
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 0);
}

#[tokio::test]
async fn a_failing_operation_makes_the_whole_patch_change_nothing() {
    let app = TestApp::spawn().await;
    let user = create_user(&app, json!({"userName": "atomic", "displayName": "Before"})).await;
    let id = user["id"].as_str().unwrap();
    let (status, body) = app
        .scim_json(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"Operations": [
                {"op": "replace", "path": "displayName", "value": "After"},
                {"op": "remove"}
            ]})),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, Some("noTarget"));
    let (_, now) = app
        .scim_json(Method::GET, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(now["displayName"], "Before");
    assert_eq!(now["meta"]["version"], user["meta"]["version"]);
}

// ---------------------------------------------------------------------------
// Lists, paging, sorting

#[tokio::test]
async fn a_list_that_matches_nothing_is_200_with_total_results_zero() {
    let app = TestApp::spawn().await;
    let (status, body) = filter_users(&app, "userName eq \"nobody\"").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["schemas"][0], LIST_SCHEMA);
    assert_eq!(body["totalResults"], 0);
    assert_eq!(body["itemsPerPage"], 0);
    assert_eq!(body["startIndex"], 1);
    assert_eq!(body["Resources"], json!([]));
}

#[tokio::test]
async fn pages_are_stable_one_based_and_clamped_as_the_rfc_says() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        create_named(&app, &format!("user{i}")).await;
    }
    let page = |query: &'static str| {
        let app = &app;
        async move {
            app.scim_json(Method::GET, &format!("/Users?{query}"), None)
                .await
                .1
        }
    };
    let first = page("startIndex=1&count=2").await;
    assert_eq!(user_names(&first), ["user0", "user1"]);
    assert_eq!(first["totalResults"], 5);
    assert_eq!(first["itemsPerPage"], 2);
    assert_eq!(
        user_names(&page("startIndex=3&count=2").await),
        ["user2", "user3"]
    );
    assert_eq!(user_names(&page("startIndex=5&count=2").await), ["user4"]);
    assert_eq!(
        user_names(&page("startIndex=9&count=2").await),
        Vec::<String>::new()
    );
    // startIndex below 1 is 1; a negative count is 0; a huge count is the maximum.
    let clamped = page("startIndex=-4&count=-1").await;
    assert_eq!(clamped["startIndex"], 1);
    assert_eq!(clamped["itemsPerPage"], 0);
    assert_eq!(clamped["totalResults"], 5);
    let huge = page("startIndex=0&count=99999999999999999999").await;
    assert_eq!(huge["itemsPerPage"], 5);
    let (status, body) = app.scim_json(Method::GET, "/Users?count=ten", None).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, Some("invalidValue"));
}

#[tokio::test]
async fn sort_by_orders_case_insensitively_with_unassigned_values_last() {
    let app = TestApp::spawn().await;
    create_user(
        &app,
        json!({"userName": "b", "name": {"familyName": "zeta"}}),
    )
    .await;
    create_user(
        &app,
        json!({"userName": "C", "name": {"familyName": "Alpha"}}),
    )
    .await;
    create_user(&app, json!({"userName": "a"})).await;
    let (_, asc) = app
        .scim_json(Method::GET, "/Users?sortBy=userName", None)
        .await;
    assert_eq!(user_names(&asc), ["a", "b", "C"]);
    let (_, desc) = app
        .scim_json(
            Method::GET,
            "/Users?sortBy=userName&sortOrder=descending",
            None,
        )
        .await;
    assert_eq!(user_names(&desc), ["C", "b", "a"]);
    let (_, by_family) = app
        .scim_json(Method::GET, "/Users?sortBy=name.familyName", None)
        .await;
    assert_eq!(user_names(&by_family), ["C", "b", "a"]);
}

// ---------------------------------------------------------------------------
// Filters

async fn filter_fixture() -> TestApp {
    let app = TestApp::spawn().await;
    create_user(
        &app,
        json!({
            "userName": "Alice@Example.com", "externalId": "EXT-1", "displayName": "Alice Ng",
            "name": {"givenName": "Alice", "familyName": "Ng"},
            "emails": [{"value": "alice@example.com", "type": "work", "primary": true},
                       {"value": "alice@home.test", "type": "home"}],
            ENTERPRISE: {"department": "R&D", "manager": {"value": "m-1"}}
        }),
    )
    .await;
    create_user(
        &app,
        json!({
            "userName": "bob_100%", "externalId": "ext-1", "displayName": "Bob",
            "emails": [{"value": "bob@other.test", "type": "work"}], "active": false
        }),
    )
    .await;
    create_user(&app, json!({"userName": "carol", "title": "CTO"})).await;
    app
}

#[tokio::test]
async fn user_name_filters_are_case_insensitive_and_external_id_filters_are_exact() {
    let app = filter_fixture().await;
    assert_eq!(
        filtered_names(&app, "userName eq \"alice@example.COM\"").await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, "USERNAME EQ \"ALICE@EXAMPLE.COM\"").await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, "externalId eq \"EXT-1\"").await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, "externalId eq \"ext-1\"").await,
        ["bob_100%"]
    );
    assert_eq!(
        filtered_names(&app, "id eq \"not-an-id\"").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn substring_filters_treat_percent_and_underscore_literally() {
    let app = filter_fixture().await;
    assert_eq!(
        filtered_names(&app, "userName co \"_100%\"").await,
        ["bob_100%"]
    );
    assert_eq!(
        filtered_names(&app, "userName co \"%\"").await,
        ["bob_100%"]
    );
    assert_eq!(
        filtered_names(&app, "userName sw \"ALI\"").await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, "userName ew \".com\"").await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, "externalId sw \"EXT\"").await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, "displayName co \"ng\"").await,
        ["Alice@Example.com"]
    );
}

#[tokio::test]
async fn logical_operators_follow_their_precedence_and_parentheses() {
    let app = filter_fixture().await;
    // and binds tighter than or.
    assert_eq!(
        filtered_names(
            &app,
            "userName eq \"carol\" or userName sw \"a\" and active eq true"
        )
        .await,
        ["Alice@Example.com", "carol"]
    );
    assert_eq!(
        filtered_names(
            &app,
            "(userName eq \"carol\" or userName sw \"b\") and active eq true"
        )
        .await,
        ["carol"]
    );
    assert_eq!(
        filtered_names(&app, "not (active eq true)").await,
        ["bob_100%"]
    );
    assert_eq!(filtered_names(&app, "title pr").await, ["carol"]);
    assert_eq!(
        filtered_names(&app, "not (title pr)").await,
        ["Alice@Example.com", "bob_100%"]
    );
    assert_eq!(filtered_names(&app, "active eq false").await, ["bob_100%"]);
}

#[tokio::test]
async fn value_path_sub_attribute_and_urn_filters_are_evaluated_in_the_database() {
    let app = filter_fixture().await;
    assert_eq!(
        filtered_names(
            &app,
            "emails[type eq \"work\" and value co \"@example.com\"]"
        )
        .await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, "emails.value eq \"ALICE@HOME.TEST\"").await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, "emails[type eq \"work\"]").await,
        ["Alice@Example.com", "bob_100%"]
    );
    assert_eq!(
        filtered_names(&app, "name.givenName eq \"alice\"").await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(
            &app,
            "urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"carol\""
        )
        .await,
        ["carol"]
    );
    assert_eq!(
        filtered_names(&app, &format!("{ENTERPRISE}:department eq \"r&d\"")).await,
        ["Alice@Example.com"]
    );
    assert_eq!(
        filtered_names(&app, &format!("{ENTERPRISE}:manager.value eq \"m-1\"")).await,
        ["Alice@Example.com"]
    );
    let (_, all) = app.scim_json(Method::GET, "/Users", None).await;
    let created = all["Resources"][1]["meta"]["created"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        filtered_names(&app, &format!("meta.created ge \"{created}\"")).await,
        ["bob_100%", "carol"]
    );
}

#[tokio::test]
async fn a_user_created_without_an_email_list_is_found_by_its_single_email() {
    let app = TestApp::spawn().await;
    app.seed_user("dave@example.com").await;
    assert_eq!(
        filtered_names(&app, "emails.value eq \"dave@example.com\"").await,
        ["dave@example.com"]
    );
    assert_eq!(
        filtered_names(&app, "emails[type eq \"work\" and primary eq true]").await,
        ["dave@example.com"]
    );
}

#[tokio::test]
async fn malformed_and_unsupported_filters_are_400_invalid_filter_never_everything() {
    let app = filter_fixture().await;
    for filter in [
        "userName eq",
        "userName xx \"a\"",
        "(userName eq \"a\"",
        "favoriteColor eq \"blue\"",
        "urn:example:custom:1.0:User:thing eq \"x\"",
        "active gt true",
        "meta.created gt \"yesterday\"",
    ] {
        let (status, body) = filter_users(&app, filter).await;
        assert_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            Some("invalidFilter"),
        );
    }
}

// ---------------------------------------------------------------------------
// Projection, search, ETags

#[tokio::test]
async fn attributes_and_excluded_attributes_shape_every_response() {
    let app = TestApp::spawn().await;
    let response = app
        .scim(Method::POST, "/Users?attributes=userName")
        .header("content-type", SCIM_JSON)
        .body(json!({"userName": "x", "displayName": "X", "name": {"givenName": "G", "familyName": "F"}}).to_string())
        .send()
        .await
        .unwrap();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let keys: Vec<&String> = created.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["schemas", "id", "userName"]);

    let (_, only_given) = app
        .scim_json(
            Method::GET,
            &format!("/Users/{id}?attributes=name.givenName"),
            None,
        )
        .await;
    assert_eq!(only_given["name"], json!({"givenName": "G"}));
    assert!(only_given.get("userName").is_none());

    let (_, without) = app
        .scim_json(
            Method::GET,
            "/Users?excludedAttributes=name,meta,displayName",
            None,
        )
        .await;
    let user = &without["Resources"][0];
    assert!(
        user.get("name").is_none()
            && user.get("meta").is_none()
            && user.get("displayName").is_none()
    );
    assert_eq!(user["userName"], "x");
    assert_eq!(user["id"], id, "id is always returned");
}

#[tokio::test]
async fn post_search_filters_pages_and_projects_like_get() {
    let app = filter_fixture().await;
    let (status, found) = app
        .scim_json(
            Method::POST,
            "/Users/.search",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "active eq true", "sortBy": "userName", "sortOrder": "descending",
                "startIndex": 1, "count": 1, "attributes": ["userName"]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["totalResults"], 2);
    assert_eq!(
        found["Resources"],
        json!([{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": found["Resources"][0]["id"], "userName": "carol"}])
    );

    app.scim_json(
        Method::POST,
        "/Groups",
        Some(json!({"displayName": "Team"})),
    )
    .await;
    let (status, everything) = app
        .scim_json(Method::POST, "/.search", Some(json!({"filter": "id pr"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{everything}");
    assert_eq!(everything["totalResults"], 4);
}

#[tokio::test]
async fn etags_answer_if_none_match_with_304_and_a_stale_if_match_with_412() {
    let app = TestApp::spawn().await;
    let user = create_named(&app, "etag").await;
    let id = user["id"].as_str().unwrap();
    let etag = user["meta"]["version"].as_str().unwrap().to_owned();
    let path = format!("/Users/{id}");

    let response = app
        .scim(Method::GET, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()["etag"], etag.as_str());
    let response = app
        .scim(Method::GET, &path)
        .header("if-none-match", "W/\"999\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let stale = "W/\"999\"";
    let patch = json!({"Operations": [{"op": "replace", "path": "displayName", "value": "New"}]});
    for (method, body) in [
        (Method::PUT, Some(json!({"userName": "etag"}))),
        (Method::PATCH, Some(patch.clone())),
        (Method::DELETE, None),
    ] {
        let mut request = app.scim(method, &path).header("if-match", stale);
        if let Some(body) = body {
            request = request
                .header("content-type", SCIM_JSON)
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    }
    let response = app
        .scim(Method::PATCH, &path)
        .header("if-match", &etag)
        .header("content-type", SCIM_JSON)
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let new_etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
}

// ---------------------------------------------------------------------------
// Bulk

#[tokio::test]
async fn bulk_resolves_bulk_id_references_in_order() {
    let app = TestApp::spawn().await;
    let (status, response) = app
        .scim_json(
            Method::POST,
            "/Bulk",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": [
                    {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"userName": "bulk1"}},
                    {"method": "POST", "path": "/Groups", "bulkId": "g1",
                     "data": {"displayName": "Bulk Team", "members": [{"value": "bulkId:u1"}]}},
                    {"method": "PATCH", "path": "/Users/bulkId:u1",
                     "data": {"Operations": [{"op": "replace", "path": "displayName", "value": "Bulk One"}]}},
                    {"method": "POST", "path": "/Users", "bulkId": "dup", "data": {"userName": "BULK1"}}
                ]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let ops = response["Operations"].as_array().unwrap();
    let statuses: Vec<&str> = ops.iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["201", "201", "200", "409"]);
    assert_eq!(ops[3]["response"]["scimType"], "uniqueness");
    let group_location = ops[1]["location"].as_str().unwrap();
    let group: Value = app
        .http
        .get(group_location)
        .bearer_auth(&app.scim_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_id = ops[0]["location"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(group["members"][0]["value"], user_id);
}

#[tokio::test]
async fn bulk_stops_after_fail_on_errors_and_refuses_too_many_operations() {
    let app = TestApp::spawn().await;
    let bad = json!({"method": "POST", "path": "/Users", "data": {"displayName": "no userName"}});
    let good = json!({"method": "POST", "path": "/Users", "data": {"userName": "later"}});
    let (_, response) = app
        .scim_json(
            Method::POST,
            "/Bulk",
            Some(json!({"failOnErrors": 1, "Operations": [bad, good]})),
        )
        .await;
    assert_eq!(response["Operations"].as_array().unwrap().len(), 1);
    assert_eq!(response["Operations"][0]["status"], "400");

    let many: Vec<Value> = (0..1001).map(|_| good.clone()).collect();
    let (status, body) = app
        .scim_json(Method::POST, "/Bulk", Some(json!({"Operations": many})))
        .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, None);
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 0);
}

/// The unfiltered total comes from a count kept by triggers; `id pr` matches the same
/// resources but is counted row by row, so the two must agree after every kind of write.
async fn totals_agree(app: &TestApp, resource: &str) -> u64 {
    let (_, kept) = app
        .scim_json(Method::GET, &format!("/{resource}?count=0"), None)
        .await;
    let (_, counted) = app
        .scim_json(
            Method::GET,
            &format!("/{resource}?count=0&filter=id%20pr"),
            None,
        )
        .await;
    assert_eq!(kept["totalResults"], counted["totalResults"], "{resource}");
    kept["totalResults"].as_u64().expect("a number")
}

#[tokio::test]
async fn the_unfiltered_total_stays_exact_through_creates_conflicts_bulk_applies_and_deletes() {
    let app = TestApp::spawn().await;
    assert_eq!(totals_agree(&app, "Users").await, 0);
    let mut ids = Vec::new();
    for name in ["t1", "t2", "t3"] {
        ids.push(create_user(&app, json!({"userName": name})).await["id"].clone());
    }
    let (status, _) = app
        .scim_json(Method::POST, "/Users", Some(json!({"userName": "T1"})))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a refused insert is not counted"
    );
    app.seed_user("seeded@example.com").await;
    assert_eq!(totals_agree(&app, "Users").await, 4);

    // A whole-state apply inserts users and teams in multi-row statements.
    let snapshot = r#"{"idp": "bulk", "complete": true,
        "users": [{"external_id": "b1", "user_name": "b1@example.com"},
                  {"external_id": "b2", "user_name": "b2@example.com"}],
        "groups": [{"external_id": "g1", "display_name": "Bulk", "members": ["b1", "b2"]}]}"#;
    let desired = scimsync::reconcile::snapshot::Snapshot::parse(snapshot)
        .expect("snapshot")
        .into_desired();
    let policy = scimsync::reconcile::Policy::from_config(&app.config, scimsync::store::now());
    let actor = scimsync::reconcile::Actor::new(scimsync::domain::Trigger::Cli, "test");
    app.engine()
        .apply(scimsync::reconcile::Request::new(&desired, &policy, &actor))
        .await
        .expect("applied");
    assert_eq!(totals_agree(&app, "Users").await, 6);
    assert_eq!(totals_agree(&app, "Groups").await, 1);

    let (status, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "Pushed"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(totals_agree(&app, "Groups").await, 2);
    for id in &ids {
        let (status, _) = app
            .scim_json(
                Method::DELETE,
                &format!("/Users/{}", id.as_str().expect("id")),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, _) = app
        .scim_json(
            Method::DELETE,
            &format!("/Groups/{}", group["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(totals_agree(&app, "Users").await, 3);
    assert_eq!(totals_agree(&app, "Groups").await, 1);
}
