//! The Auth0 connector's wire format, against a mock Management API: the
//! client-credentials grant with the tenant's Management API audience, roles paged with
//! totals, a role's users with checkpoint paging and their records (`blocked`, names)
//! from a batched user search.
//! Faults (throttling, token expiry, server errors, timeouts, wrong credentials,
//! partial pulls, broken pages and paging loops) are specified once for every
//! connector in `idp_faults.rs`.

use crate::idp_mocks;

use idp_mocks::auth0::Auth0Mock;
use idp_mocks::snapshot_json;
use scimsync::idp::Idp;
use serde_json::{json, Value};

fn user(key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({"external_id": format!("auth0|{key}"), "user_name": format!("{key}@example.com"),
        "email": format!("{key}@example.com"), "display_name": format!("{given} {family}"),
        "given_name": given, "family_name": family, "active": active})
}

/// What a pull of "LLM *" yields. A role's user listing has neither given and family
/// names nor `blocked`; the user search adds them, so Dave (blocked) is inactive.
fn expected() -> Value {
    json!({"idp": "auth0", "complete": true,
        "users": [user("alice", "Alice", "Ng", true), user("bob", "Bob", "Stone", true),
            user("carol", "Carol", "Diaz", true), user("dave", "Dave", "Kim", false)],
        "groups": [
            {"external_id": "rol_admins", "display_name": "LLM Admins",
             "members": ["auth0|alice"]},
            {"external_id": "rol_users", "display_name": "LLM Users",
             "members": ["auth0|alice", "auth0|bob", "auth0|carol", "auth0|dave"]}]})
}

async fn auth0() -> (Auth0Mock, Idp) {
    let mock = Auth0Mock::start().await;
    let idp = Idp::from_config(&mock.config("auth0", &["LLM *"])).unwrap();
    (mock, idp)
}

#[tokio::test]
async fn an_auth0_pull_pages_roles_and_follows_role_user_checkpoints() {
    let (mock, idp) = auth0().await;
    let pull = idp.pull().await.unwrap();
    assert_eq!(
        snapshot_json(&pull.snapshot),
        expected(),
        "{:?}",
        pull.problems
    );
    // 114 roles at 100 a page; LLM Users' four members two a checkpoint.
    assert_eq!(mock.faults.calls_to("/api/v2/roles?"), 2);
    assert_eq!(mock.faults.calls_to("/roles/rol_users/users?take=100"), 2);
    assert_eq!(
        mock.faults
            .calls_to("/roles/rol_users/users?take=100&from=cp-2"),
        1
    );
    assert_eq!(mock.faults.calls_to("/roles/rol_sales"), 0);
    assert_eq!(
        mock.faults.tokens(),
        1,
        "the token was asked for the tenant's Management API audience"
    );
    // One search per page of members (LLM Users two pages, LLM Admins one), and no
    // user read one by one.
    assert_eq!(mock.faults.calls_to("/api/v2/users?q="), 3);
    assert_eq!(mock.faults.calls_to("search_engine=v3"), 3);
    assert_eq!(mock.faults.calls_to("/api/v2/users/"), 0);
}

#[tokio::test]
async fn a_member_the_auth0_search_index_does_not_hold_yet_is_read_by_id() {
    let (mock, idp) = auth0().await;
    mock.unindexed.lock().unwrap().insert("auth0|dave".into());
    let pull = idp.pull().await.unwrap();
    assert_eq!(
        snapshot_json(&pull.snapshot),
        expected(),
        "{:?}",
        pull.problems
    );
    assert_eq!(mock.faults.calls_to("/api/v2/users/auth0|dave"), 1);
    assert_eq!(mock.faults.calls_to("/api/v2/users/"), 1);
}

#[tokio::test]
async fn an_auth0_role_member_who_no_longer_exists_makes_the_pull_partial() {
    let (mock, idp) = auth0().await;
    mock.deleted_users
        .lock()
        .unwrap()
        .insert("auth0|bob".into());
    let pull = idp.pull().await.unwrap();
    assert!(!pull.snapshot.complete, "nothing is removed on a guess");
    assert!(
        pull.problems.iter().any(|p| p.contains("auth0|bob")),
        "{:?}",
        pull.problems
    );
    let admins = pull
        .snapshot
        .groups
        .iter()
        .find(|g| g.external_id == "rol_admins")
        .expect("the other role is read");
    assert_eq!(admins.members, ["auth0|alice"]);
}

#[tokio::test]
async fn an_auth0_users_roles_are_found_by_email_and_by_user_id() {
    let (_mock, idp) = auth0().await;
    let (user, groups) = idp.user_with_groups("alice@example.com").await.unwrap();
    assert_eq!(user.id, "auth0|alice");
    assert_eq!(user.family_name.as_deref(), Some("Ng"));
    let mut names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["LLM Admins", "LLM Users"]);
    let (dave, _) = idp.user_with_groups("auth0|dave").await.unwrap();
    assert!(!dave.active, "a blocked user is inactive");
}
