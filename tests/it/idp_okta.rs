//! The Okta connector's wire format, against a mock Okta org: private_key_jwt and SSWS,
//! `Link` paging, users' groups by login.
//! Faults (throttling, token expiry, server errors, timeouts, wrong credentials,
//! partial pulls, broken pages and paging loops) are specified once for every
//! connector in `idp_faults.rs`.

use crate::idp_mocks;

use idp_mocks::okta::{self, OktaMock};
use idp_mocks::{snapshot_json, temp_file};
use scimsync::idp::Idp;
use serde_json::{json, Value};

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
async fn an_okta_users_groups_are_found_by_login() {
    let (_mock, idp, _dir) = oauth().await;
    let (user, groups) = idp.user_with_groups("Carol@Example.com").await.unwrap();
    assert_eq!(user.id, "00ucarol");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["LLM Users"]);
}
