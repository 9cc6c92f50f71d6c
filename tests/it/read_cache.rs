//! The read cache never serves anything older than the database: a commit by another
//! process (the CLI, an operator's `token revoke`, another store on the same file) is
//! seen by the very next request. On PostgreSQL the cache is off and these hold trivially.

use crate::common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use scimsync::store::Store;
use serde_json::{json, Value};

/// A second, independent store on the same database: what `scimsync token revoke` or
/// `scimsync apply` running beside the daemon amounts to.
async fn another_process(app: &TestApp) -> Store {
    Store::open(&app.config.database.url, 2)
        .await
        .expect("second store opens")
}

async fn list(app: &TestApp, query: &str) -> Value {
    let (status, body) = app
        .scim_json(Method::GET, &format!("/Users{query}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn a_token_revoked_by_another_process_is_refused_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        list(&app, "").await;
    }

    let cli = another_process(&app).await;
    assert!(cli.revoke_token("initial").await.expect("revoked"));

    let (status, _) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_user_changed_by_another_process_is_read_fresh_by_id_by_filter_and_in_counts() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("ada@example.com").await;
    let by_id = format!("/Users/{}", user.id);
    let by_name = "?filter=userName%20eq%20%22ada@example.com%22";
    for _ in 0..3 {
        let (status, _) = app.scim_json(Method::GET, &by_id, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list(&app, by_name).await["totalResults"], 1);
        assert_eq!(list(&app, "?count=0").await["totalResults"], 1);
    }

    let cli = another_process(&app).await;
    let mut renamed = user.clone();
    renamed.display_name = Some("Ada Lovelace".into());
    renamed.version += 1;
    let mut tx = cli.begin_write().await.expect("transaction");
    tx.update_user(&renamed).await.expect("updated");
    tx.commit().await.expect("committed");

    let (_, fresh) = app.scim_json(Method::GET, &by_id, None).await;
    assert_eq!(fresh["displayName"], "Ada Lovelace");
    assert_eq!(
        list(&app, by_name).await["Resources"][0]["displayName"],
        "Ada Lovelace"
    );

    let mut tx = cli.begin_write().await.expect("transaction");
    tx.delete_user(user.id).await.expect("deleted");
    tx.commit().await.expect("committed");

    let (status, _) = app.scim_json(Method::GET, &by_id, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(list(&app, by_name).await["totalResults"], 0);
    assert_eq!(list(&app, "?count=0").await["totalResults"], 0);
}

#[tokio::test]
async fn a_membership_added_elsewhere_shows_in_the_users_groups_at_once() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("grace@example.com").await;
    let by_id = format!("/Users/{}", user.id);
    for _ in 0..3 {
        let (_, body) = app.scim_json(Method::GET, &by_id, None).await;
        assert_eq!(body.get("groups").cloned().unwrap_or(json!([])), json!([]));
    }

    let team = app.seed_team("Compilers").await;
    let cli = another_process(&app).await;
    common::add_member_as_operator(&cli, team.id, user.id).await;

    let (_, body) = app.scim_json(Method::GET, &by_id, None).await;
    assert_eq!(body["groups"][0]["value"], team.id.to_string());
    assert_eq!(body["groups"][0]["display"], "Compilers");
}
