//! The Google Workspace connector against a mock Directory API: the service account's
//! JWT-bearer grant, `nextPageToken` paging, derived (nested) membership, 429 and 403
//! quota errors, token expiry, server errors, and partial pulls.

mod common;
mod idp_mocks;

use idp_mocks::google::GoogleMock;
use idp_mocks::{snapshot_json, temp_file, Faults};
use scimsync::idp::{Idp, PullStats};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn user(key: &str, active: bool) -> Value {
    json!({"external_id": format!("1000{key}"), "user_name": format!("{key}@example.com"),
        "email": format!("{key}@example.com"), "active": active})
}

/// What a pull of "LLM *" yields: member listings carry emails and status, not
/// names; Dave is SUSPENDED; Eve is in LLM Users through the nested LLM Contractors.
fn expected() -> Value {
    json!({"idp": "google", "complete": true,
        "users": [user("alice", true), user("bob", true), user("carol", true),
            user("dave", false), user("eve", true)],
        "groups": [
            {"external_id": "03admins", "display_name": "LLM Admins", "members": ["1000alice"]},
            {"external_id": "03contractors", "display_name": "LLM Contractors",
             "members": ["1000eve"]},
            {"external_id": "03users", "display_name": "LLM Users",
             "members": ["1000alice", "1000bob", "1000carol", "1000dave", "1000eve"]}]})
}

async fn google() -> (GoogleMock, Idp, tempfile::TempDir) {
    let mock = GoogleMock::start().await;
    let (dir, key_file) = temp_file("service-account.json", &mock.key_file_json());
    let idp = Idp::from_config(&mock.config("google", &["LLM *"], &key_file)).unwrap();
    (mock, idp, dir)
}

#[tokio::test]
async fn a_google_pull_follows_every_page_token_and_includes_derived_members() {
    let (mock, idp, _dir) = google().await;
    let pull = idp.pull().await.unwrap();
    assert_eq!(
        snapshot_json(&pull.snapshot),
        expected(),
        "{:?}",
        pull.problems
    );
    // Six groups two a page is three pages; LLM Users' six entries (a nested group
    // among them) are three.
    assert_eq!(mock.faults.calls_to("/admin/directory/v1/groups?"), 3);
    assert_eq!(mock.faults.calls_to("pageToken=tok-4"), 2);
    assert_eq!(mock.faults.calls_to("/groups/03users/members"), 3);
    assert_eq!(
        mock.faults.calls_to("includeDerivedMembership=true"),
        mock.faults.calls_to("/members")
    );
    assert_eq!(mock.faults.calls_to("/groups/03sales"), 0);
    assert_eq!(mock.faults.tokens(), 1);
}

#[tokio::test]
async fn a_google_429_is_waited_out() {
    let (mock, idp, _dir) = google().await;
    *mock.faults.throttle_at.lock().unwrap() = Some(3);
    let started = Instant::now();
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(Faults::count(&mock.faults.throttled), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1"
    );
    assert_eq!(PullStats::get(&idp.connector.stats().retries), 1);
}

#[tokio::test]
async fn a_google_403_user_rate_limit_exceeded_is_retried_with_backoff() {
    let (mock, idp, _dir) = google().await;
    *mock.faults.quota_at.lock().unwrap() = Some(2);
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(Faults::count(&mock.faults.throttled), 1);
    let stats = idp.connector.stats();
    assert_eq!(PullStats::get(&stats.throttled), 1);
    assert_eq!(PullStats::get(&stats.retries), 1);
}

#[tokio::test]
async fn a_google_access_token_that_expires_mid_pull_is_refreshed_once() {
    let (mock, idp, _dir) = google().await;
    *mock.faults.expire_token_at.lock().unwrap() = Some(4);
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(mock.faults.tokens(), 2);
    assert_eq!(PullStats::get(&idp.connector.stats().token_rejections), 1);
}

#[tokio::test]
async fn a_google_server_error_is_retried() {
    let (mock, idp, _dir) = google().await;
    *mock.faults.fail_at.lock().unwrap() = Some(1);
    let pull = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&pull.snapshot), expected());
    assert_eq!(Faults::count(&mock.faults.server_errors), 1);
}

#[tokio::test]
async fn a_service_account_key_google_does_not_know_is_refused_without_showing_it() {
    let mock = GoogleMock::start().await;
    let mut wrong: Value = serde_json::from_str(&mock.key_file_json()).unwrap();
    wrong["private_key"] = json!(idp_mocks::jwt::rogue_key().pem);
    let (_dir, key_file) = temp_file("service-account.json", &wrong.to_string());
    let idp = Idp::from_config(&mock.config("google", &["LLM *"], &key_file)).unwrap();
    let err = idp.pull().await.unwrap_err().to_string();
    assert!(
        err.contains("invalid_grant") || err.contains("Invalid JWT"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

#[tokio::test]
async fn a_google_users_groups_are_found_by_primary_email() {
    let (_mock, idp, _dir) = google().await;
    let (user, groups) = idp.user_with_groups("alice@example.com").await.unwrap();
    assert_eq!(user.id, "1000alice");
    assert_eq!(user.display_name.as_deref(), Some("Alice Ng"));
    let mut names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["LLM Admins", "LLM Users"]);
}

#[tokio::test]
async fn a_google_pull_that_cannot_read_a_group_deletes_nothing() {
    let (mock, _, _dir) = google().await;
    let (_key_dir, key_file) = temp_file("service-account.json", &mock.key_file_json());
    let app = common::TestApp::spawn().await;
    let mut config = app.config.clone();
    let mut idp = mock.config("google", &["LLM *"], &key_file);
    idp.max_retries = Some(0);
    config.idp.push(idp);
    let dir = mock.dir.clone();
    idp_mocks::a_partial_pull_deletes_nothing(
        &app.store,
        &config,
        "google",
        &mock.faults,
        "/groups/03users/members",
        move || dir.lock().unwrap().remove_member("03admins", "1000alice"),
        ("alice@example.com", "LLM Admins"),
    )
    .await;
}
