//! The Keycloak connector's wire format, against a mock Admin REST API: client
//! credentials, subgroups inline (before 23) and through `/children` (23 on), members of
//! subgroups counting for their parents, `first`/`max` paging.
//! Faults (throttling, token expiry, server errors, timeouts, wrong credentials,
//! partial pulls, broken pages and paging loops) are specified once for every
//! connector in `idp_faults.rs`.

use crate::idp_mocks;

use idp_mocks::keycloak::{group_id, user_id, KeycloakMock, Version};
use idp_mocks::snapshot_json;
use scimsync::idp::Idp;
use serde_json::{json, Value};

fn user(key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({"external_id": user_id(key), "user_name": key,
        "email": format!("{key}@example.com"), "display_name": format!("{given} {family}"),
        "given_name": given, "family_name": family, "active": active})
}

fn ids(keys: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = keys.iter().map(|k| user_id(k)).collect();
    ids.sort();
    ids
}

/// What a pull of "LLM *" yields: LLM Contractors is a subgroup of LLM Users, so Eve
/// is in both; Dave's account is disabled. Users come sorted by id.
fn expected() -> Value {
    let mut users = vec![
        user("alice", "Alice", "Ng", true),
        user("bob", "Bob", "Stone", true),
        user("carol", "Carol", "Diaz", true),
        user("dave", "Dave", "Kim", false),
        user("eve", "Eve", "Moss", true),
    ];
    users.sort_by(|a, b| a["external_id"].as_str().cmp(&b["external_id"].as_str()));
    json!({"idp": "keycloak", "complete": true, "users": users,
        "groups": [
            {"external_id": group_id("admins"), "display_name": "LLM Admins",
             "members": ids(&["alice"])},
            {"external_id": group_id("contractors"), "display_name": "LLM Contractors",
             "members": ids(&["eve"])},
            {"external_id": group_id("users"), "display_name": "LLM Users",
             "members": ids(&["alice", "bob", "carol", "dave", "eve"])}]})
}

async fn keycloak(version: Version) -> (KeycloakMock, Idp) {
    let mock = KeycloakMock::start(version).await;
    let idp = Idp::from_config(&mock.config("keycloak", &["LLM *"])).unwrap();
    (mock, idp)
}

#[tokio::test]
async fn a_keycloak_23_pull_reads_subgroups_through_children_and_counts_their_members_for_the_parent(
) {
    let (mock, idp) = keycloak(Version::Modern).await;
    let pull = idp.pull().await.unwrap();
    assert_eq!(
        snapshot_json(&pull.snapshot),
        expected(),
        "{:?}",
        pull.problems
    );
    let users = group_id("users");
    assert_eq!(
        mock.faults.calls_to(&format!("/groups/{users}/children")),
        1
    );
    assert_eq!(mock.faults.calls_to("/groups?"), 1);
    assert_eq!(
        mock.faults.calls_to(&group_id("load")),
        0,
        "unmanaged groups are not read"
    );
    assert_eq!(mock.faults.tokens(), 1);
}

#[tokio::test]
async fn a_keycloak_22_pull_takes_subgroups_from_the_group_list() {
    let (mock, idp) = keycloak(Version::Legacy).await;
    let pull = idp.pull().await.unwrap();
    assert_eq!(
        snapshot_json(&pull.snapshot),
        expected(),
        "{:?}",
        pull.problems
    );
    assert_eq!(mock.faults.calls_to("/children"), 0);
}

#[tokio::test]
async fn keycloak_members_are_read_max_at_a_time_until_a_short_page() {
    let mock = KeycloakMock::start(Version::Modern).await;
    let idp = Idp::from_config(&mock.config("keycloak", &["Load Test"])).unwrap();
    let pull = idp.pull().await.unwrap();
    assert!(pull.snapshot.complete);
    assert_eq!(pull.snapshot.groups[0].members.len(), 205);
    let load = group_id("load");
    for first in ["first=0&", "first=100&", "first=200&"] {
        assert_eq!(
            mock.faults.calls_to(&format!(
                "/groups/{load}/members?briefRepresentation=true&{first}max=100"
            )),
            1,
            "{first}"
        );
    }
    assert_eq!(mock.faults.calls_to(&format!("/groups/{load}/members")), 3);
}

#[tokio::test]
async fn a_disabled_keycloak_member_is_inactive_and_a_member_with_one_name_is_shown_by_it() {
    let mock = KeycloakMock::start(Version::Modern).await;
    {
        let mut dir = mock.dir.lock().unwrap();
        let id = user_id("cher");
        let mut cher = idp_mocks::keycloak::user(&id, "cher", "Cher", "", false);
        cher["lastName"] = Value::Null;
        dir.users.insert(id.clone(), cher);
        dir.add_member(&group_id("admins"), &id);
    }
    let idp = Idp::from_config(&mock.config("keycloak", &["LLM Admins"])).unwrap();
    let pull = idp.pull().await.unwrap();
    assert_eq!(
        mock.faults.calls_to("/members?briefRepresentation=true"),
        1,
        "members are read in the brief representation"
    );
    let cher = pull
        .snapshot
        .users
        .iter()
        .find(|u| u.user_name.as_str() == "cher")
        .expect("cher pulled");
    assert!(!cher.active, "enabled: false");
    assert_eq!(cher.display_name.as_deref(), Some("Cher"));
    assert_eq!(cher.given_name.as_deref(), Some("Cher"));
    assert_eq!(cher.family_name, None);
    assert_eq!(cher.email.as_deref(), Some("cher@example.com"));
}

#[tokio::test]
async fn a_keycloak_group_may_be_selected_by_its_path() {
    let mock = KeycloakMock::start(Version::Modern).await;
    let idp = Idp::from_config(&mock.config("keycloak", &["/LLM Users/*"])).unwrap();
    let pull = idp.pull().await.unwrap();
    let names: Vec<&str> = pull
        .snapshot
        .groups
        .iter()
        .map(|g| g.display_name.as_str())
        .collect();
    assert_eq!(names, ["LLM Contractors"]);
}

#[tokio::test]
async fn a_keycloak_user_in_a_subgroup_is_in_its_parent_too() {
    let (_mock, idp) = keycloak(Version::Modern).await;
    let (user, groups) = idp.user_with_groups("eve").await.unwrap();
    assert_eq!(user.id, user_id("eve"));
    let mut names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["LLM Contractors", "LLM Users"]);
    let (user, _) = idp.user_with_groups("alice@example.com").await.unwrap();
    assert_eq!(user.id, user_id("alice"), "found by email too");
}
