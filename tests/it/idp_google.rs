//! The Google Workspace connector's wire format, against a mock Directory API: the
//! service account's JWT-bearer grant, `nextPageToken` paging, derived (nested)
//! membership, members' names and suspension from one read of the account's users per
//! pull.
//! Faults (throttling, token expiry, server errors, timeouts, wrong credentials,
//! partial pulls, broken pages and paging loops) are specified once for every
//! connector in `idp_faults.rs`.

use crate::idp_mocks;

use idp_mocks::google::GoogleMock;
use idp_mocks::{snapshot_json, temp_file};
use scimsync::idp::Idp;
use serde_json::{json, Value};

fn user(key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({"external_id": format!("1000{key}"), "user_name": format!("{key}@example.com"),
        "email": format!("{key}@example.com"), "display_name": format!("{given} {family}"),
        "given_name": given, "family_name": family, "active": active})
}

/// What a pull of "LLM *" yields: member listings carry emails and status, the users
/// list names; Dave is SUSPENDED; Eve is in LLM Users through the nested LLM
/// Contractors.
fn expected() -> Value {
    json!({"idp": "google", "complete": true,
        "users": [user("alice", "Alice", "Ng", true), user("bob", "Bob", "Stone", true),
            user("carol", "Carol", "Diaz", true), user("dave", "Dave", "Kim", false),
            user("eve", "Eve", "Moss", true)],
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
    // among them) are three; so are the account's five users.
    assert_eq!(mock.faults.calls_to("/admin/directory/v1/groups?"), 3);
    assert_eq!(mock.faults.calls_to("pageToken=tok-4"), 3);
    assert_eq!(mock.faults.calls_to("/groups/03users/members"), 3);
    assert_eq!(
        mock.faults.calls_to("includeDerivedMembership=true"),
        mock.faults.calls_to("/members")
    );
    assert_eq!(mock.faults.calls_to("/groups/03sales"), 0);
    assert_eq!(mock.faults.tokens(), 1);
    // Names come from one listing of the account's users for all three groups, not
    // from a users.get per member.
    assert_eq!(
        mock.faults.calls_to(
            "/admin/directory/v1/users?customer=my_customer&projection=basic&maxResults=500"
        ),
        3
    );
    assert_eq!(mock.faults.calls_to("/admin/directory/v1/users?"), 3);
    assert_eq!(mock.faults.calls_to("/admin/directory/v1/users/"), 0);
}

#[tokio::test]
async fn each_google_pull_reads_the_accounts_users_afresh() {
    let (mock, idp, _dir) = google().await;
    let first = idp.pull().await.unwrap();
    assert_eq!(snapshot_json(&first.snapshot), expected());
    if let Some(alice) = mock.dir.lock().unwrap().users.get_mut("1000alice") {
        alice["suspended"] = json!(true);
        alice["name"]["givenName"] = json!("Alicia");
    }
    let second = idp.pull().await.unwrap();
    let alice = second
        .snapshot
        .users
        .iter()
        .find(|u| u.external_id == "1000alice")
        .expect("alice pulled");
    assert!(!alice.active, "suspended since the first pull");
    assert_eq!(alice.given_name.as_deref(), Some("Alicia"));
    assert_eq!(
        mock.faults.calls_to("/admin/directory/v1/users?"),
        6,
        "three pages a pull"
    );
}

#[tokio::test]
async fn an_archived_google_user_is_inactive() {
    let (mock, idp, _dir) = google().await;
    if let Some(carol) = mock.dir.lock().unwrap().users.get_mut("1000carol") {
        carol["archived"] = json!(true);
    }
    let pull = idp.pull().await.unwrap();
    let carol = pull
        .snapshot
        .users
        .iter()
        .find(|u| u.external_id == "1000carol")
        .expect("carol pulled");
    assert!(!carol.active);
    assert_eq!(carol.display_name.as_deref(), Some("Carol Diaz"));
}

#[tokio::test]
async fn a_google_member_from_another_account_keeps_what_the_member_entry_says() {
    let (mock, idp, _dir) = google().await;
    {
        let mut dir = mock.dir.lock().unwrap();
        dir.users.insert(
            "1000zoe".into(),
            idp_mocks::google::user("1000zoe", "zoe", "Zoe", "Park", true),
        );
        dir.add_member("03admins", "1000zoe");
    }
    mock.outsiders.lock().unwrap().insert("1000zoe".into());
    let pull = idp.pull().await.unwrap();
    assert!(pull.snapshot.complete, "{:?}", pull.problems);
    let zoe = pull
        .snapshot
        .users
        .iter()
        .find(|u| u.external_id == "1000zoe")
        .expect("zoe pulled");
    assert!(zoe.active);
    assert_eq!(zoe.email.as_deref(), Some("zoe@example.com"));
    assert_eq!(zoe.given_name, None, "this account does not know her name");
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
