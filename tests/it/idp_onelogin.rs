//! The OneLogin connector's wire format, against a mock API v2: the JSON
//! client-credentials grant with HTTP Basic, roles as groups, `After-Cursor` paging,
//! members' records (names, email, `status` and `state`) read in batches from the
//! users API.
//! Faults (throttling, token expiry, server errors, timeouts, wrong credentials,
//! partial pulls, broken pages and paging loops) are specified once for every
//! connector in `idp_faults.rs`.

use crate::idp_mocks;

use idp_mocks::onelogin::{group_id, user_id, user_with, OneLoginMock};
use idp_mocks::{snapshot_json, Dir, Group};
use scimsync::idp::Idp;
use serde_json::{json, Value};

fn user(id: &str, key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({"external_id": id, "user_name": format!("{key}@example.com"),
        "email": format!("{key}@example.com"), "display_name": format!("{given} {family}"),
        "given_name": given, "family_name": family, "active": active})
}

/// What a pull of "LLM *" yields. A role's user listing has neither email, first and
/// last names nor a status; they come from the users API, so Dave (suspended) is
/// inactive.
fn expected() -> Value {
    json!({"idp": "onelogin", "complete": true,
        "users": [user("1001", "alice", "Alice", "Ng", true),
            user("1002", "bob", "Bob", "Stone", true),
            user("1003", "carol", "Carol", "Diaz", true),
            user("1004", "dave", "Dave", "Kim", false)],
        "groups": [
            {"external_id": "502", "display_name": "LLM Admins", "members": ["1001"]},
            {"external_id": "501", "display_name": "LLM Users",
             "members": ["1001", "1002", "1003", "1004"]}]})
}

async fn onelogin() -> (OneLoginMock, Idp) {
    let mock = OneLoginMock::start().await;
    let idp = Idp::from_config(&mock.config("onelogin", &["LLM *"])).unwrap();
    (mock, idp)
}

#[tokio::test]
async fn a_onelogin_pull_asks_for_a_token_in_json_and_follows_every_cursor() {
    let (mock, idp) = onelogin().await;
    let pull = idp.pull().await.unwrap();
    assert_eq!(
        snapshot_json(&pull.snapshot),
        expected(),
        "{:?}",
        pull.problems
    );
    assert_eq!(mock.bad_token_requests.lock().unwrap().len(), 0);
    assert_eq!(mock.faults.tokens(), 1);
    // Four roles two a page; LLM Users' four members two a page.
    assert_eq!(mock.faults.calls_to("/api/2/roles?"), 2);
    assert_eq!(
        mock.faults.calls_to("/api/2/roles?limit=1000&cursor=cur-2"),
        1
    );
    assert_eq!(mock.faults.calls_to("/roles/501/users"), 2);
    assert_eq!(
        mock.faults.calls_to("/roles/503/"),
        0,
        "unmanaged roles are not read"
    );
    // One users request per role (LLM Users' answer two a page), for its members only.
    assert_eq!(
        mock.faults
            .calls_to("/api/2/users?user_ids=1001%2C1002%2C1003%2C1004&fields="),
        2
    );
    assert_eq!(
        mock.faults.calls_to("/api/2/users?user_ids=1001&fields="),
        1
    );
    assert_eq!(mock.faults.calls_to("/api/2/users?"), 3);
}

/// A role "LLM Status" holding one user per `status`/`state` pair, in a mock that
/// pages by 1000.
async fn onelogin_with_statuses(cases: &[(&str, i64, i64)]) -> (OneLoginMock, Idp) {
    let mut dir = Dir::default();
    let mut members = Vec::new();
    for (n, (key, status, state)) in cases.iter().enumerate() {
        let id = (2001 + n).to_string();
        dir.users.insert(
            id.clone(),
            user_with(&id, key, "Test", key, *status, *state),
        );
        members.push(id);
    }
    dir.groups.push(Group {
        id: "601".into(),
        name: "LLM Status".into(),
        members,
        parent: None,
    });
    let mock = OneLoginMock::start_with(dir, 1000).await;
    let idp = Idp::from_config(&mock.config("onelogin", &["LLM *"])).unwrap();
    (mock, idp)
}

#[tokio::test]
async fn onelogin_statuses_and_states_map_to_active_as_documented() {
    // (userName key, status, state, active?)
    let cases = [
        ("active", 1, 1, true),
        ("unactivated", 0, 1, false),
        ("suspended", 2, 1, false),
        ("locked", 3, 1, false),
        ("password-expired", 4, 1, true),
        ("awaiting-reset", 5, 1, true),
        ("password-pending", 7, 1, false),
        ("security-questions", 8, 1, true),
        ("unknown-status", 42, 1, false),
        ("unapproved", 1, 0, false),
        ("rejected", 1, 2, false),
        ("unlicensed", 1, 3, false),
    ];
    let codes: Vec<(&str, i64, i64)> = cases.iter().map(|c| (c.0, c.1, c.2)).collect();
    let (_mock, idp) = onelogin_with_statuses(&codes).await;
    let pull = idp.pull().await.unwrap();
    assert!(pull.snapshot.complete, "{:?}", pull.problems);
    assert_eq!(pull.snapshot.users.len(), cases.len());
    for (key, status, state, active) in cases {
        let u = pull
            .snapshot
            .users
            .iter()
            .find(|u| u.user_name.as_str() == format!("{key}@example.com"))
            .unwrap_or_else(|| panic!("{key} pulled"));
        assert_eq!(u.active, active, "{key}: status {status}, state {state}");
        assert_eq!(u.given_name.as_deref(), Some("Test"), "{key}");
        assert_eq!(u.family_name.as_deref(), Some(key), "{key}");
    }
}

#[tokio::test]
async fn a_large_onelogin_role_reads_its_members_records_a_hundred_ids_a_request() {
    let cases: Vec<(String, i64, i64)> = (0..250).map(|n| (format!("user{n:03}"), 1, 1)).collect();
    let codes: Vec<(&str, i64, i64)> = cases.iter().map(|c| (c.0.as_str(), c.1, c.2)).collect();
    let (mock, idp) = onelogin_with_statuses(&codes).await;
    let pull = idp.pull().await.unwrap();
    assert!(pull.snapshot.complete, "{:?}", pull.problems);
    assert_eq!(pull.snapshot.users.len(), 250);
    assert_eq!(pull.snapshot.groups[0].members.len(), 250);
    assert_eq!(mock.faults.calls_to("/roles/601/users"), 1);
    assert_eq!(
        mock.faults.calls_to("/api/2/users?user_ids="),
        3,
        "100 + 100 + 50 ids"
    );
    let longest = mock
        .faults
        .log
        .lock()
        .unwrap()
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0);
    assert!(longest < 2048, "request URLs stay short: {longest}");
}

#[tokio::test]
async fn a_onelogin_role_member_the_users_api_no_longer_knows_makes_the_pull_partial() {
    let (mock, idp) = onelogin().await;
    mock.deleted_users.lock().unwrap().insert(user_id("bob"));
    let pull = idp.pull().await.unwrap();
    assert!(!pull.snapshot.complete, "nothing is removed on a guess");
    assert!(
        pull.problems.iter().any(|p| p.contains("1002")),
        "{:?}",
        pull.problems
    );
    let admins = pull
        .snapshot
        .groups
        .iter()
        .find(|g| g.external_id == group_id("admins"))
        .expect("the other role is read");
    assert_eq!(admins.members, ["1001"]);
}

#[tokio::test]
async fn a_onelogin_users_roles_are_found_by_email() {
    let (mock, idp) = onelogin().await;
    let (user, groups) = idp.user_with_groups("alice@example.com").await.unwrap();
    assert_eq!(user.id, "1001");
    assert_eq!(user.given_name.as_deref(), Some("Alice"));
    let mut names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["LLM Admins", "LLM Users"]);
    let (dave, _) = idp.user_with_groups("dave@example.com").await.unwrap();
    assert!(!dave.active, "a suspended user is inactive");
    mock_lock(&mock, &user_id("carol"));
    let (locked, _) = idp.user_with_groups("carol@example.com").await.unwrap();
    assert!(!locked.active, "a locked user is inactive at sign-in too");
}

/// Locks a user (`status` 3), as too many failed logins would.
fn mock_lock(mock: &OneLoginMock, id: &str) {
    if let Some(u) = mock.dir.lock().unwrap().users.get_mut(id) {
        u["status"] = json!(3);
    }
}
