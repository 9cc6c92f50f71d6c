//! Groups are teams and group membership is the memberships table: the rules for
//! members, unknown and nested members, rosters that are never loaded to be changed,
//! and team deletion.

use crate::common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use scimsync::config::UnknownMembers;
use serde_json::{json, Value};
use uuid::Uuid;

async fn create(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, created) = app.scim_json(Method::POST, path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn user(app: &TestApp, user_name: &str) -> String {
    create(app, "/Users", json!({"userName": user_name})).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn patch(app: &TestApp, path: &str, operations: Value) -> (StatusCode, Value) {
    app.scim_json(Method::PATCH, path, Some(json!({"Operations": operations})))
        .await
}

fn member_ids(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["value"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn group_members_are_user_ids_and_memberships_are_the_one_truth() {
    let app = TestApp::spawn().await;
    let (a, b) = (user(&app, "a").await, user(&app, "b").await);
    let group = create(
        &app,
        "/Groups",
        json!({"displayName": "Eng", "members": [{"value": a}, {"value": b}]}),
    )
    .await;
    assert_eq!(member_ids(&group), sorted(vec![a.clone(), b.clone()]));
    assert_eq!(group["members"][0]["type"], "User");
    let team_id = Uuid::parse_str(group["id"].as_str().unwrap()).unwrap();
    let memberships = app.store.all_memberships().await.unwrap();
    assert_eq!(
        memberships.iter().filter(|m| m.team_id == team_id).count(),
        2
    );

    let (status, found) = app
        .scim_json(
            Method::GET,
            &format!("/Groups?filter=members[value eq \"{a}\"]&excludedAttributes=members"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["totalResults"], 1);
    assert!(found["Resources"][0].get("members").is_none());
}

#[tokio::test]
async fn adding_and_removing_members_in_one_patch_applies_in_order() {
    let app = TestApp::spawn().await;
    let (a, b, c) = (
        user(&app, "a").await,
        user(&app, "b").await,
        user(&app, "c").await,
    );
    let group = create(
        &app,
        "/Groups",
        json!({"displayName": "Ops", "members": [{"value": a}]}),
    )
    .await;
    let path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let (status, patched) = patch(
        &app,
        &path,
        json!([
            {"op": "remove", "path": format!("members[value eq \"{a}\"]")},
            {"op": "add", "path": "members", "value": [{"value": b}, {"value": c}]},
            {"op": "remove", "path": "members", "value": [{"value": c}]}
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(member_ids(&patched), vec![b.clone()]);
    assert_ne!(
        patched["meta"]["version"], group["meta"]["version"],
        "a membership change bumps the version"
    );

    let (status, emptied) = patch(&app, &path, json!([{"op": "remove", "path": "members"}])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(member_ids(&emptied).is_empty());
    let (status, replaced) = patch(
        &app,
        &path,
        json!([{"op": "replace", "path": "members", "value": [{"value": a}]}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(member_ids(&replaced), vec![a]);
}

#[tokio::test]
async fn an_unknown_member_fails_the_whole_patch_naming_the_id() {
    let app = TestApp::spawn().await;
    let a = user(&app, "a").await;
    let group = create(&app, "/Groups", json!({"displayName": "Strict"})).await;
    let path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let ghost = Uuid::new_v4().to_string();
    for unknown in [ghost.as_str(), "not-even-a-uuid"] {
        let (status, body) = patch(
            &app,
            &path,
            json!([
                {"op": "replace", "path": "displayName", "value": "Renamed"},
                {"op": "add", "path": "members", "value": [{"value": a}, {"value": unknown}]}
            ]),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["scimType"], "invalidValue");
        assert!(body["detail"].as_str().unwrap().contains(unknown), "{body}");
    }
    let (_, now) = app.scim_json(Method::GET, &path, None).await;
    assert_eq!(now["displayName"], "Strict");
    assert!(member_ids(&now).is_empty());
}

#[tokio::test]
async fn with_unknown_members_ignored_the_rest_of_the_patch_applies() {
    let app =
        TestApp::spawn_with(|config| config.provisioning.unknown_members = UnknownMembers::Ignore)
            .await;
    let a = user(&app, "a").await;
    let group = create(&app, "/Groups", json!({"displayName": "Lenient"})).await;
    let path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let (status, body) = patch(
        &app,
        &path,
        json!([{"op": "add", "path": "members", "value": [{"value": a}, {"value": Uuid::new_v4()}, {"value": "fake-member-id"}]}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(member_ids(&body), vec![a]);
}

#[tokio::test]
async fn removing_a_non_member_succeeds_and_nested_group_members_are_ignored() {
    let app = TestApp::spawn().await;
    let a = user(&app, "a").await;
    let inner = create(&app, "/Groups", json!({"displayName": "Inner"})).await;
    let outer = create(
        &app,
        "/Groups",
        json!({"displayName": "Outer", "members": [{"value": a}, {"value": inner["id"], "type": "Group"}]}),
    )
    .await;
    assert_eq!(member_ids(&outer), vec![a.clone()]);
    let path = format!("/Groups/{}", outer["id"].as_str().unwrap());
    let stranger = user(&app, "stranger").await;
    let (status, body) = patch(
        &app,
        &path,
        json!([{"op": "remove", "path": format!("members[value eq \"{stranger}\"]")},
               {"op": "remove", "path": "members[value eq \"not-a-uuid\"]"},
               {"op": "add", "path": "members", "value": [{"value": inner["id"], "type": "Group"}]}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(member_ids(&body), vec![a]);
}

#[tokio::test]
async fn put_replaces_the_roster_exactly() {
    let app = TestApp::spawn().await;
    let (a, b) = (user(&app, "a").await, user(&app, "b").await);
    let group = create(
        &app,
        "/Groups",
        json!({"displayName": "Put", "members": [{"value": a}]}),
    )
    .await;
    let path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let (status, replaced) = app
        .scim_json(
            Method::PUT,
            &path,
            Some(json!({"displayName": "Put 2", "members": [{"value": b}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["displayName"], "Put 2");
    assert_eq!(member_ids(&replaced), vec![b]);
}

#[tokio::test]
async fn listing_groups_with_members_excluded_leaves_rosters_out() {
    let app = TestApp::spawn().await;
    let a = user(&app, "a").await;
    create(
        &app,
        "/Groups",
        json!({"displayName": "One", "members": [{"value": a}]}),
    )
    .await;
    create(&app, "/Groups", json!({"displayName": "Two"})).await;
    let (_, listed) = app
        .scim_json(
            Method::GET,
            "/Groups?excludedAttributes=members&filter=displayName+eq+%22one%22",
            None,
        )
        .await;
    assert_eq!(listed["totalResults"], 1);
    assert_eq!(listed["Resources"][0]["displayName"], "One");
    assert!(listed["Resources"][0].get("members").is_none());
    let (_, all) = app
        .scim_json(Method::GET, "/Groups?sortBy=displayName", None)
        .await;
    assert_eq!(member_ids(&all["Resources"][0]), vec![a]);
}

#[tokio::test]
async fn deleting_a_group_removes_its_memberships_and_purges_its_keys() {
    let app = TestApp::spawn().await;
    let a = user(&app, "a").await;
    let user_id = Uuid::parse_str(&a).unwrap();
    let group = create(
        &app,
        "/Groups",
        json!({"displayName": "Doomed", "members": [{"value": a}]}),
    )
    .await;
    let team_id = Uuid::parse_str(group["id"].as_str().unwrap()).unwrap();
    let (_, team_key) = app.new_api_key(user_id, Some(team_id)).await;
    let (_, personal_key) = app.new_api_key(user_id, None).await;

    let (status, _) = app
        .scim_json(Method::DELETE, &format!("/Groups/{team_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .scim_json(Method::GET, &format!("/Groups/{team_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.whoami(&team_key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.whoami(&personal_key).await.0, StatusCode::OK);
    assert!(app.store.all_memberships().await.unwrap().is_empty());
    let (_, got) = app
        .scim_json(Method::GET, &format!("/Users/{a}"), None)
        .await;
    assert!(got.get("groups").is_none());
}

#[tokio::test]
async fn adding_a_member_to_a_large_group_answers_without_the_roster_when_asked() {
    let app = TestApp::spawn().await;
    let mut members = Vec::new();
    for i in 0..200 {
        members.push(json!({"value": user(&app, &format!("member{i}")).await}));
    }
    let group = create(
        &app,
        "/Groups",
        json!({"displayName": "Big", "members": members}),
    )
    .await;
    let newcomer = user(&app, "newcomer").await;
    let (status, body) = app
        .scim_json(
            Method::PATCH,
            &format!("/Groups/{}?excludedAttributes=members", group["id"].as_str().unwrap()),
            Some(json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": newcomer}]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("members").is_none());
    let (_, counted) = app
        .scim_json(
            Method::GET,
            &format!("/Groups?filter=members[value eq \"{newcomer}\"]&excludedAttributes=members"),
            None,
        )
        .await;
    assert_eq!(counted["totalResults"], 1);
}

#[tokio::test]
async fn a_patch_on_a_group_too_large_to_echo_answers_204_instead_of_the_roster() {
    use scimsync::domain::Source;
    let app = TestApp::spawn().await;
    let group = create(&app, "/Groups", json!({"displayName": "Huge"})).await;
    let team_id = Uuid::parse_str(group["id"].as_str().unwrap()).unwrap();
    // More members than a PATCH answer echoes, pushed in one engine transaction.
    let mut desired = scimsync::reconcile::Desired::new(
        Source::Scim("default".into()),
        scimsync::reconcile::Scope::Listed,
    );
    let mut ids = Vec::new();
    for i in 0..=scimsync::scim::groups::MAX_MEMBERS_IN_PATCH_RESPONSE {
        let id = Uuid::new_v4();
        desired.users.push(scimsync::reconcile::DesiredUser {
            id: Some(id),
            intent: scimsync::reconcile::Intent::Create,
            ..scimsync::reconcile::DesiredUser::new(
                scimsync::domain::UserName::parse(&format!("bulk-member-{i}")).unwrap(),
            )
        });
        ids.push(scimsync::reconcile::MemberRef::UserId(id));
    }
    desired.teams.push(scimsync::reconcile::DesiredTeam {
        id: Some(team_id),
        intent: scimsync::reconcile::Intent::Update,
        members: scimsync::reconcile::MemberSpec::Delta {
            add: ids,
            remove: Vec::new(),
        },
        ..scimsync::reconcile::DesiredTeam::new(scimsync::domain::TeamName::parse("Huge").unwrap())
    });
    common::apply_as_operator(&app.store, &desired).await;
    let newcomer = user(&app, "newcomer").await;
    let response = app
        .scim(Method::PATCH, &format!("/Groups/{team_id}"))
        .header("content-type", "application/scim+json")
        .body(json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": newcomer}]}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().contains_key("etag"));
    let (_, found) = app
        .scim_json(
            Method::GET,
            &format!("/Groups?filter=members[value eq \"{newcomer}\"]&excludedAttributes=members"),
            None,
        )
        .await;
    assert_eq!(found["totalResults"], 1);
}
