//! The Okta connector against a mock Okta org: private_key_jwt and SSWS, `Link` paging,
//! `X-Rate-Limit-*` throttling, token expiry, server errors, and partial pulls.

use crate::common;
use crate::idp_mocks;

use idp_mocks::okta::{self, OktaMock};
use idp_mocks::{snapshot_json, temp_file, Faults};
use scimsync::idp::{Idp, PullStats};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn user(key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({"external_id": format!("00u{key}"), "user_name": format!("{key}@example.com"),
        "email": format!("{key}@example.com"), "display_name": format!("{given} {family}"),
        "given_name": given, "family_name": family, "active": active})
}

/// What a pull of "LLM *" yields: Everyone, Sales and Finance are not managed; Dave is
/// DEPROVISIONED, so inactive.
fn expected() -> Value {
    json!({"idp": "okta", "complete": true,
        "users": [user("alice", "Alice", "Ng", true), user("bob", "Bob", "Stone", true),
            user("carol", "Carol", "Diaz", true), user("dave", "Dave", "Kim", false)],
        "groups": [
            {"external_id": "00gadmins", "display_name": "LLM Admins", "members": ["00ualice"]},
            {"external_id": "00gusers", "display_name": "LLM Users",
             "members": ["00ualice", "00ubob", "00ucarol", "00udave"]}]})
}

/// A mock with an OAuth (private_key_jwt) connector; the key file lives as long as
/// the returned guard.
async fn oauth() -> (OktaMock, Idp, tempfile::TempDir) {
    let mock = OktaMock::start().await;
    let (dir, key_file) = temp_file("okta.pem", &okta::client_key().pem);
    let idp = Idp::from_config(&mock.oauth_config("okta", &["LLM *"], &key_file)).unwrap();
    (mock, idp, dir)
}

#[tokio::test]
async fn an_okta_pull_with_private_key_jwt_follows_every_link_and_yields_the_managed_groups() {
    let (mock, idp, _dir) = oauth().await;
    let pull = idp.pull().await.unwrap();
    assert_eq!(
        snapshot_json(&pull.snapshot),
        expected(),
        "{:?}",
        pull.problems
    );
    // Five groups two a page is three pages; LLM Users' four members are two.
    assert_eq!(mock.faults.calls_to("/api/v1/groups?"), 3);
    assert_eq!(mock.faults.calls_to("/api/v1/groups?after=00gusers"), 1);
    assert_eq!(mock.faults.calls_to("/groups/00gusers/users"), 2);
    assert_eq!(
        mock.faults.calls_to("/groups/00gsales"),
        0,
        "unmanaged groups are not read"
    );
    assert_eq!(mock.faults.tokens(), 1, "one token serves the whole pull");
}

#[tokio::test]
async fn an_okta_pull_with_an_ssws_token_needs_no_token_endpoint() {
    let mock = OktaMock::start().await;
    let idp = Idp::from_config(&mock.ssws_config("okta", &["LLM *"])).unwrap();
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(mock.faults.tokens(), 0);
}

#[tokio::test]
async fn an_okta_429_is_waited_out_until_the_rate_limit_resets() {
    let (mock, idp, _dir) = oauth().await;
    *mock.faults.throttle_at.lock().unwrap() = Some(3);
    let started = Instant::now();
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(Faults::count(&mock.faults.throttled), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "X-Rate-Limit-Reset was honoured"
    );
    let stats = idp.connector.stats();
    assert_eq!(PullStats::get(&stats.throttled), 1);
    assert_eq!(PullStats::get(&stats.retries), 1);
}

#[tokio::test]
async fn a_spent_okta_rate_limit_budget_pauses_the_next_request_until_the_reset() {
    let (mock, idp, _dir) = oauth().await;
    *mock.faults.budget_spent_at.lock().unwrap() = Some(1);
    let started = Instant::now();
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        Faults::count(&mock.faults.throttled),
        0,
        "no 429 was needed"
    );
    assert_eq!(PullStats::get(&idp.connector.stats().throttled), 1);
}

#[tokio::test]
async fn an_okta_access_token_that_expires_mid_pull_is_refreshed_once() {
    let (mock, idp, _dir) = oauth().await;
    *mock.faults.expire_token_at.lock().unwrap() = Some(4);
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(mock.faults.tokens(), 2);
    assert_eq!(PullStats::get(&idp.connector.stats().token_rejections), 1);
}

#[tokio::test]
async fn an_okta_server_error_is_retried() {
    let (mock, idp, _dir) = oauth().await;
    *mock.faults.fail_at.lock().unwrap() = Some(2);
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(Faults::count(&mock.faults.server_errors), 1);
}

#[tokio::test]
async fn a_wrong_okta_key_fails_the_token_request_without_showing_the_key() {
    let mock = OktaMock::start().await;
    let rogue = idp_mocks::jwt::rogue_key();
    let (_dir, key_file) = temp_file("rogue.pem", &rogue.pem);
    let idp = Idp::from_config(&mock.oauth_config("okta", &["LLM *"], &key_file)).unwrap();
    let err = idp.pull().await.unwrap_err().to_string();
    assert!(
        err.contains("invalid_client") || err.contains("signature"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

#[tokio::test]
async fn an_okta_users_groups_are_found_by_login() {
    let (_mock, idp, _dir) = oauth().await;
    let (user, groups) = idp.user_with_groups("Carol@Example.com").await.unwrap();
    assert_eq!(user.id, "00ucarol");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["LLM Users"]);
}

#[tokio::test]
async fn an_okta_pull_that_cannot_read_a_group_deletes_nothing() {
    let mock = OktaMock::start().await;
    let app = common::TestApp::spawn().await;
    let mut config = app.config.clone();
    let mut idp = mock.ssws_config("okta", &["LLM *"]);
    idp.max_retries = Some(0);
    config.idp.push(idp);
    let dir = mock.dir.clone();
    idp_mocks::a_partial_pull_deletes_nothing(
        &app.store,
        &config,
        "okta",
        &mock.faults,
        "/groups/00gusers/users",
        move || dir.lock().unwrap().remove_member("00gadmins", "00ualice"),
        ("alice@example.com", "LLM Admins"),
    )
    .await;
}
