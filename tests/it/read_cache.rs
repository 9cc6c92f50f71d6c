//! The read cache never serves anything older than the database: a commit by another
//! process (the CLI, an operator's `token revoke`, another store on the same file, another
//! replica on PostgreSQL) is seen by the very next request. On SQLite the cache is
//! validated by the wal-index header, on PostgreSQL by the generations row that triggers
//! bump; these tests run on both.

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

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.scim_json(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn a_write_to_users_leaves_the_next_token_check_in_the_cache() {
    let app = TestApp::spawn().await;
    get_ok(&app, "/Users").await;
    get_ok(&app, "/Users").await;
    let before = app.store.read_cache_stats();
    assert!(
        before.token_hits >= 1,
        "a second check is a hit: {before:?}"
    );

    app.seed_user("linus@example.com").await;
    get_ok(&app, "/Users").await;

    let after = app.store.read_cache_stats();
    assert_eq!(
        after.token_misses, before.token_misses,
        "the commit to users did not send the token check to the database"
    );
    assert_eq!(after.token_hits, before.token_hits + 1);
}

#[tokio::test]
async fn a_token_revoked_or_created_in_this_process_takes_effect_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let other = app
        .new_token("other", scimsync::domain::TokenScope::Scim)
        .await;
    for _ in 0..3 {
        assert_eq!(get_with(&app, &other, "/Users").await.0, StatusCode::OK);
        get_ok(&app, "/Users").await;
    }

    assert!(app.store.revoke_token("other").await.expect("revoked"));
    assert_eq!(
        get_with(&app, &other, "/Users").await.0,
        StatusCode::UNAUTHORIZED
    );
    get_ok(&app, "/Users").await;

    // A token refused while unknown is accepted as soon as it exists.
    let unknown = scimsync::keys::mint_token();
    assert_eq!(
        get_with(&app, unknown.expose(), "/Users").await.0,
        StatusCode::UNAUTHORIZED
    );
    app.store
        .create_token(
            "late",
            scimsync::domain::TokenScope::Scim,
            "default",
            &scimsync::keys::hash_secret(unknown.expose()),
        )
        .await
        .expect("created");
    assert_eq!(
        get_with(&app, unknown.expose(), "/Users").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_cached_answer_is_per_url_host_and_projection_and_honours_if_none_match() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("ken@example.com").await;
    let path = format!("/Users/{}", user.id);
    for _ in 0..2 {
        let full = get_ok(&app, &path).await;
        assert_eq!(full["userName"], "ken@example.com");
        let trimmed = get_ok(&app, &format!("{path}?attributes=displayName")).await;
        assert!(trimmed.get("userName").is_none(), "{trimmed}");
        let elsewhere: Value = app
            .scim(Method::GET, &path)
            .header("host", "scim.example.net")
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert_eq!(
            elsewhere["meta"]["location"],
            format!("http://scim.example.net/scim/v2/Users/{}", user.id)
        );
        assert_ne!(full["meta"]["location"], elsewhere["meta"]["location"]);
    }
    let etag = app
        .scim(Method::GET, &path)
        .send()
        .await
        .expect("sent")
        .headers()
        .get("etag")
        .cloned()
        .expect("an ETag");
    let unchanged = app
        .scim(Method::GET, &path)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.headers().get("etag"), Some(&etag));
}

async fn get_with(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .get(app.url(&format!("/scim/v2{path}")))
        .bearer_auth(token.to_owned())
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Two daemons on one database, and a SCIM token named `name` both accept.
async fn two_replicas_and_a_token(name: &str) -> (TestApp, TestApp, String) {
    let a = TestApp::spawn().await;
    let b = a.spawn_replica().await;
    let token = a.new_token(name, scimsync::domain::TokenScope::Scim).await;
    (a, b, token)
}

#[tokio::test]
async fn a_revocation_on_one_replica_is_refused_by_the_other_on_its_very_next_request() {
    let (a, b, token) = two_replicas_and_a_token("shared").await;
    for _ in 0..3 {
        assert_eq!(get_with(&a, &token, "/Users").await.0, StatusCode::OK);
        assert_eq!(get_with(&b, &token, "/Users").await.0, StatusCode::OK);
    }
    assert!(a.store.revoke_token("shared").await.expect("revoked"));
    assert_eq!(
        get_with(&b, &token, "/Users").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&a, &token, "/Users").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// The guarantee, under load: each commit on one replica is followed at once by reads
/// on the other, while other readers keep it busy (and so share freshness checks); no
/// read may return a version older than the last commit that finished before it began.
#[tokio::test]
async fn no_read_on_any_replica_is_older_than_a_commit_that_finished_before_it_began() {
    let (a, b, token) = two_replicas_and_a_token("reader").await;
    let user = a.seed_user("barbara@example.com").await;
    let by_id = format!("/Users/{}", user.id);
    let by_name = "/Users?filter=userName%20eq%20%22barbara@example.com%22";

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    for _ in 0..4 {
        let (stop, http, url, token) = (
            stop.clone(),
            b.http.clone(),
            b.url(&format!("/scim/v2{by_id}")),
            token.clone(),
        );
        background.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http.get(&url).bearer_auth(&token).send().await;
            }
        }));
    }

    for round in 1..=25 {
        let mut changed = user.clone();
        changed.display_name = Some(format!("round {round}"));
        changed.version = user.version + round;
        let mut tx = a.store.begin_write().await.expect("transaction");
        tx.update_user(&changed).await.expect("updated");
        tx.commit().await.expect("committed");

        for replica in [&b, &a] {
            let (status, one) = get_with(replica, &token, &by_id).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(one["displayName"], format!("round {round}"), "by id");
            let (_, list) = get_with(replica, &token, by_name).await;
            assert_eq!(
                list["Resources"][0]["displayName"],
                format!("round {round}"),
                "by filter"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in background {
        task.await.expect("reader");
    }
}

/// Clients that hang up while their request waits for a freshness check must not leave
/// that check, or the ones queued behind it, unfinished for everyone after them.
#[tokio::test]
async fn requests_abandoned_mid_read_do_not_stall_the_requests_after_them() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("edsger@example.com").await;
    let url = app.url(&format!("/scim/v2/Users/{}", user.id));
    for round in 0..20u64 {
        let impatient = reqwest::Client::builder()
            .timeout(std::time::Duration::from_micros(200 + 100 * round))
            .build()
            .expect("client");
        let abandoned: Vec<_> = (0..16)
            .map(|_| impatient.get(&url).bearer_auth(&app.scim_token).send())
            .collect();
        futures::future::join_all(abandoned).await;
        let patient = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            app.scim(Method::GET, &format!("/Users/{}", user.id)).send(),
        )
        .await
        .expect("answered within 10 s")
        .expect("sent");
        assert_eq!(patient.status(), StatusCode::OK);
    }
}
