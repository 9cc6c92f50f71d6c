//! The OneLogin connector against a mock API v2: the JSON client-credentials grant with
//! HTTP Basic, roles as groups, `After-Cursor` paging, `X-RateLimit-*` throttling,
//! token expiry, server errors, and partial pulls.

mod common;
mod idp_mocks;

use idp_mocks::onelogin::OneLoginMock;
use idp_mocks::{snapshot_json, Faults};
use scimsync::idp::{Idp, PullStats};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn user(id: &str, key: &str, name: &str) -> Value {
    json!({"external_id": id, "user_name": format!("{key}@example.com"),
        "email": format!("{key}@example.com"), "display_name": name, "active": true})
}

/// What a pull of "LLM *" yields. A role's user listing has the full name but neither
/// first and last names nor a status, so Dave (suspended) reads as active here.
fn expected() -> Value {
    json!({"idp": "onelogin", "complete": true,
        "users": [user("1001", "alice", "Alice Ng"), user("1002", "bob", "Bob Stone"),
            user("1003", "carol", "Carol Diaz"), user("1004", "dave", "Dave Kim")],
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
}

#[tokio::test]
async fn a_onelogin_429_is_waited_out_until_the_rate_limit_resets() {
    let (mock, idp) = onelogin().await;
    *mock.faults.throttle_at.lock().unwrap() = Some(2);
    let started = Instant::now();
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(Faults::count(&mock.faults.throttled), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "X-RateLimit-Reset: 1"
    );
    assert_eq!(PullStats::get(&idp.connector.stats().retries), 1);
}

#[tokio::test]
async fn a_spent_onelogin_rate_limit_budget_pauses_until_the_reset() {
    let (mock, idp) = onelogin().await;
    *mock.faults.budget_spent_at.lock().unwrap() = Some(1);
    let started = Instant::now();
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(PullStats::get(&idp.connector.stats().throttled), 1);
}

#[tokio::test]
async fn a_onelogin_access_token_that_expires_mid_pull_is_refreshed_once() {
    let (mock, idp) = onelogin().await;
    *mock.faults.expire_token_at.lock().unwrap() = Some(3);
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(mock.faults.tokens(), 2);
    assert_eq!(PullStats::get(&idp.connector.stats().token_rejections), 1);
}

#[tokio::test]
async fn a_onelogin_server_error_is_retried() {
    let (mock, idp) = onelogin().await;
    *mock.faults.fail_at.lock().unwrap() = Some(2);
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(Faults::count(&mock.faults.server_errors), 1);
}

#[tokio::test]
async fn a_wrong_onelogin_client_secret_fails_the_pull_without_showing_it() {
    let mock = OneLoginMock::start().await;
    let mut config = mock.config("onelogin", &["LLM *"]);
    config.client_secret = Some("not-the-onelogin-secret".into());
    let err = Idp::from_config(&config)
        .unwrap()
        .pull()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Authentication Failure"), "{err}");
    assert!(!err.contains("not-the-onelogin-secret"), "{err}");
}

#[tokio::test]
async fn a_onelogin_users_roles_are_found_by_email() {
    let (_mock, idp) = onelogin().await;
    let (user, groups) = idp.user_with_groups("alice@example.com").await.unwrap();
    assert_eq!(user.id, "1001");
    assert_eq!(user.given_name.as_deref(), Some("Alice"));
    let mut names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["LLM Admins", "LLM Users"]);
    let (dave, _) = idp.user_with_groups("dave@example.com").await.unwrap();
    assert!(!dave.active, "a suspended user is inactive");
}

#[tokio::test]
async fn a_onelogin_pull_that_cannot_read_a_role_deletes_nothing() {
    let mock = OneLoginMock::start().await;
    let app = common::TestApp::spawn().await;
    let mut config = app.config.clone();
    let mut idp = mock.config("onelogin", &["LLM *"]);
    idp.max_retries = Some(0);
    config.idp.push(idp);
    let dir = mock.dir.clone();
    idp_mocks::a_partial_pull_deletes_nothing(
        &app.store,
        &config,
        "onelogin",
        &mock.faults,
        "/roles/501/users",
        move || dir.lock().unwrap().remove_member("502", "1001"),
        ("alice@example.com", "LLM Admins"),
    )
    .await;
}
