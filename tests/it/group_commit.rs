//! Group commit of SCIM PUTs and PATCHes (issue #16): writes that queue up while the
//! writer lock is busy are applied in one transaction, each in a savepoint of its own.
//! A refused one is refused and undone alone; the others commit; every client is
//! answered after the commit that holds its change, and a failed commit fails them all.
//!
//! Batching is forced by holding the writer lock (a write transaction of the test's
//! own) until the requests are queued, one by one and in order, then letting go: the
//! batching task takes all of them into its next transaction. Runs on SQLite, and on
//! PostgreSQL when SCIMSYNC_TEST_POSTGRES_URL is set.

use crate::common::{self, TestApp, SCIM_JSON};
use reqwest::{Method, RequestBuilder, StatusCode};
use scimsync::domain::TokenScope;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn patch_body(operations: Value) -> String {
    json!({"schemas": [PATCH_OP], "Operations": operations}).to_string()
}

fn add_member(app: &TestApp, group: &str, user: &str) -> RequestBuilder {
    app.scim(
        Method::PATCH,
        &format!("/Groups/{group}?excludedAttributes=members"),
    )
    .header("content-type", SCIM_JSON)
    .body(patch_body(
        json!([{"op": "add", "path": "members", "value": [{"value": user}]}]),
    ))
}

async fn create(app: &TestApp, path: &str, body: Value) -> String {
    let (status, created) = app.scim_json(Method::POST, path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().expect("id").to_owned()
}

async fn user(app: &TestApp, name: &str) -> String {
    create(
        app,
        "/Users",
        json!({"userName": format!("{name}@example.com")}),
    )
    .await
}

async fn group(app: &TestApp, name: &str) -> String {
    create(app, "/Groups", json!({"displayName": name})).await
}

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.expect("body read");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends `requests`, in order, while the writer lock is held, so that the group commit
/// takes them all into one transaction; returns their answers in order, and how many
/// transactions the group commit committed meanwhile.
async fn in_one_batch(
    app: &TestApp,
    requests: Vec<RequestBuilder>,
) -> (Vec<(StatusCode, Value)>, u64) {
    let (answers, transactions, _) = in_one_batch_counted(app, requests).await;
    (answers, transactions)
}

/// [`in_one_batch`], and how many writes the committed transactions applied.
async fn in_one_batch_counted(
    app: &TestApp,
    requests: Vec<RequestBuilder>,
) -> (Vec<(StatusCode, Value)>, u64, u64) {
    let writes = app.state.writes().clone();
    let queued = writes.queued();
    let (transactions, applied) = writes.committed();
    let held = app.store.begin_write().await.expect("writer lock");
    let mut answers = Vec::new();
    for (i, request) in requests.into_iter().enumerate() {
        answers.push(tokio::spawn(send(request)));
        let started = Instant::now();
        while writes.queued() < queued + i as u64 + 1 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "request {i} never reached the group commit"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    drop(held);
    let mut out = Vec::new();
    for answer in answers {
        out.push(answer.await.expect("request task"));
    }
    let (transactions_after, applied_after) = writes.committed();
    (
        out,
        transactions_after - transactions,
        applied_after - applied,
    )
}

async fn members(app: &TestApp, group: &str) -> BTreeSet<String> {
    let id = Uuid::parse_str(group).expect("uuid");
    app.store
        .all_memberships()
        .await
        .expect("memberships")
        .into_iter()
        .filter(|m| m.team_id == id)
        .map(|m| m.user_id.to_string())
        .collect()
}

async fn version(app: &TestApp, group: &str) -> i64 {
    let id = Uuid::parse_str(group).expect("uuid");
    app.store
        .team(id)
        .await
        .expect("read")
        .expect("team")
        .version
}

/// The audit rows about the memberships of `group`.
async fn membership_audit(app: &TestApp, group: &str) -> Vec<(String, String)> {
    let prefix = format!("membership:{group}:");
    app.store
        .audit_since(None)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.target.starts_with(&prefix))
        .map(|e| (e.operation, e.target))
        .collect()
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

#[tokio::test]
async fn a_refused_patch_among_accepted_ones_is_refused_alone_and_the_others_commit() {
    let app = TestApp::spawn().await;
    let team = group(&app, "Evals").await;
    let [a, b, c, d] = [
        user(&app, "a").await,
        user(&app, "b").await,
        user(&app, "c").await,
        user(&app, "d").await,
    ];
    let okta = app
        .new_idp_token("okta-push", TokenScope::Scim, "okta")
        .await;
    let theirs = {
        let (status, created) = send(
            app.http
                .post(app.url("/scim/v2/Groups"))
                .bearer_auth(&okta)
                .header("content-type", SCIM_JSON)
                .body(json!({"displayName": "Okta's"}).to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().expect("id").to_owned()
    };
    let before = version(&app, &team).await;

    let (answers, transactions, applied) = in_one_batch_counted(
        &app,
        vec![
            add_member(&app, &team, &a),
            // An If-Match of a version the group never had.
            add_member(&app, &team, &b).header("if-match", etag(before + 40)),
            // A group that does not exist.
            add_member(&app, &Uuid::new_v4().to_string(), &c),
            // A value the group cannot take: refused while building the change.
            app.scim(Method::PATCH, &format!("/Groups/{team}"))
                .header("content-type", SCIM_JSON)
                .body(patch_body(json!([
                    {"op": "add", "path": "members", "value": [{"value": c}]},
                    {"op": "replace", "path": "displayName", "value": ""}
                ]))),
            // Another IdP's group.
            add_member(&app, &theirs, &c),
            add_member(&app, &team, &d),
        ],
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(
        statuses,
        [200, 412, 404, 400, 403, 200],
        "answers: {answers:?}"
    );
    assert_eq!(transactions, 1, "the six PATCHes shared one transaction");
    assert_eq!(applied, 2, "only the applied PATCHes count as committed");
    assert_eq!(
        members(&app, &team).await,
        BTreeSet::from([a.clone(), d.clone()])
    );
    assert!(members(&app, &theirs).await.is_empty());
    assert_eq!(
        version(&app, &team).await,
        before + 2,
        "one version per applied PATCH, none for the refused"
    );
    let audited = membership_audit(&app, &team).await;
    assert_eq!(
        audited,
        vec![
            ("add_member".to_owned(), format!("membership:{team}:{a}")),
            ("add_member".to_owned(), format!("membership:{team}:{d}")),
        ],
        "one audit row per applied membership, in order, none for the refused"
    );
    // The display name the refused PATCH would have emptied is still there.
    let (status, read) = app
        .scim_json(Method::GET, &format!("/Groups/{team}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["displayName"], "Evals");
    assert_eq!(read["meta"]["version"], json!(etag(before + 2)));
}

#[tokio::test]
async fn two_patches_with_the_same_if_match_in_one_batch_end_in_one_winner_and_a_412() {
    let app = TestApp::spawn().await;
    let team = group(&app, "Raced").await;
    let (first, second) = (user(&app, "first").await, user(&app, "second").await);
    let tag = etag(version(&app, &team).await);

    let (answers, transactions) = in_one_batch(
        &app,
        vec![
            add_member(&app, &team, &first).header("if-match", &tag),
            add_member(&app, &team, &second).header("if-match", &tag),
        ],
    )
    .await;
    assert_eq!(transactions, 1);
    assert_eq!(answers[0].0, StatusCode::OK, "{:?}", answers[0]);
    assert_eq!(
        answers[1].0,
        StatusCode::PRECONDITION_FAILED,
        "the second was judged against the first's change: {:?}",
        answers[1]
    );
    assert_eq!(members(&app, &team).await, BTreeSet::from([first]));
    assert_eq!(membership_audit(&app, &team).await.len(), 1);
}

#[tokio::test]
async fn the_same_member_added_by_two_patches_in_one_batch_ends_as_one_at_a_time_would() {
    let app = TestApp::spawn().await;
    let (batched, alone) = (group(&app, "Batched").await, group(&app, "Alone").await);
    let member = user(&app, "twice").await;
    let (start_batched, start_alone) = (version(&app, &batched).await, version(&app, &alone).await);

    let (answers, transactions) = in_one_batch(
        &app,
        vec![
            add_member(&app, &batched, &member),
            add_member(&app, &batched, &member),
        ],
    )
    .await;
    assert_eq!(transactions, 1);
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    // The same two PATCHes, one after the other.
    for _ in 0..2 {
        let (status, body) = send(add_member(&app, &alone, &member)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    assert_eq!(
        members(&app, &batched).await,
        BTreeSet::from([member.clone()])
    );
    assert_eq!(
        version(&app, &batched).await - start_batched,
        version(&app, &alone).await - start_alone,
        "the same versions as one at a time"
    );
    let ops = |rows: Vec<(String, String)>| rows.into_iter().map(|(op, _)| op).collect::<Vec<_>>();
    assert_eq!(
        ops(membership_audit(&app, &batched).await),
        ops(membership_audit(&app, &alone).await),
        "the same audit rows as one at a time"
    );
    assert_eq!(membership_audit(&app, &batched).await.len(), 1);
}

#[tokio::test]
async fn puts_of_users_and_groups_queued_together_commit_together_and_a_refused_one_alone() {
    let app = TestApp::spawn().await;
    let team = group(&app, "Replaced").await;
    let (kept, renamed) = (user(&app, "kept").await, user(&app, "renamed").await);
    let taken = user(&app, "taken").await;

    let put = |path: String, body: Value| {
        app.scim(Method::PUT, &path)
            .header("content-type", SCIM_JSON)
            .body(body.to_string())
    };
    let (answers, transactions) = in_one_batch(
        &app,
        vec![
            put(
                format!("/Groups/{team}"),
                json!({"displayName": "Replaced too", "members": [{"value": kept}]}),
            ),
            put(
                format!("/Users/{renamed}"),
                json!({"userName": "new-name@example.com"}),
            ),
            // Takes a userName another user holds: 409, undone alone.
            put(
                format!("/Users/{kept}"),
                json!({"userName": "TAKEN@example.com", "displayName": "Nope"}),
            ),
            app.scim(Method::PATCH, &format!("/Users/{taken}"))
                .header("content-type", SCIM_JSON)
                .body(patch_body(
                    json!([{"op": "replace", "path": "displayName", "value": "Still here"}]),
                )),
        ],
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 409, 200], "{answers:?}");
    assert_eq!(transactions, 1);
    assert_eq!(members(&app, &team).await, BTreeSet::from([kept.clone()]));
    assert_eq!(answers[0].1["displayName"], "Replaced too");
    assert_eq!(answers[1].1["userName"], "new-name@example.com");
    assert_eq!(answers[3].1["displayName"], "Still here");
    let (_, unchanged) = app
        .scim_json(Method::GET, &format!("/Users/{kept}"), None)
        .await;
    assert_eq!(unchanged["userName"], "kept@example.com");
    assert!(unchanged.get("displayName").is_none(), "{unchanged}");
}

/// A table whose deferred foreign key fails the COMMIT of any transaction in which a
/// membership of `victim` was inserted (the statements themselves all succeed).
async fn arm_commit_bomb(app: &TestApp, victim: &str) {
    let table = "CREATE TABLE commit_bomb \
                 (ref TEXT REFERENCES teams(id) DEFERRABLE INITIALLY DEFERRED)";
    let statements = match common::postgres_server() {
        Some(_) => vec![
            table.to_owned(),
            "CREATE FUNCTION arm_commit_bomb() RETURNS trigger AS $$ \
             BEGIN INSERT INTO commit_bomb VALUES ('no such team'); RETURN NEW; END \
             $$ LANGUAGE plpgsql"
                .to_owned(),
            format!(
                "CREATE TRIGGER commit_bomb AFTER INSERT ON memberships FOR EACH ROW \
                 WHEN (NEW.user_id = '{victim}') EXECUTE FUNCTION arm_commit_bomb()"
            ),
        ],
        None => vec![
            table.to_owned(),
            format!(
                "CREATE TRIGGER commit_bomb AFTER INSERT ON memberships \
                 WHEN NEW.user_id = '{victim}' \
                 BEGIN INSERT INTO commit_bomb VALUES ('no such team'); END"
            ),
        ],
    };
    execute(app, &statements).await;
}

/// Runs DDL on the app's database behind its back, on a connection of its own.
async fn execute(app: &TestApp, statements: &[String]) {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&app.config.database.url)
        .await
        .expect("database");
    for statement in statements {
        conn.execute(statement.as_str()).await.expect(statement);
    }
    let _ = conn.close().await;
}

#[tokio::test]
async fn a_failed_commit_fails_every_write_of_its_batch_and_keeps_none_of_them() {
    let app = TestApp::spawn().await;
    let (one, two) = (group(&app, "One").await, group(&app, "Two").await);
    let (a, victim, b) = (
        user(&app, "a").await,
        user(&app, "victim").await,
        user(&app, "b").await,
    );
    arm_commit_bomb(&app, &victim).await;
    let versions = (version(&app, &one).await, version(&app, &two).await);
    let audit_before = app.store.audit_since(None).await.expect("audit").len();

    let (answers, transactions) = in_one_batch(
        &app,
        vec![
            add_member(&app, &one, &a),
            add_member(&app, &two, &victim),
            add_member(&app, &one, &b),
        ],
    )
    .await;
    assert_eq!(transactions, 0);
    for (status, body) in &answers {
        assert_eq!(
            *status,
            StatusCode::SERVICE_UNAVAILABLE,
            "no write of a failed batch is reported as applied: {body}"
        );
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.contains("FOREIGN KEY") && !detail.contains("commit_bomb"),
            "{detail}"
        );
    }
    assert!(members(&app, &one).await.is_empty());
    assert!(members(&app, &two).await.is_empty());
    assert_eq!(
        (version(&app, &one).await, version(&app, &two).await),
        versions
    );
    assert_eq!(
        app.store.audit_since(None).await.expect("audit").len(),
        audit_before
    );

    // The writer is whole again: the next PATCH commits.
    let (status, body) = send(add_member(&app, &one, &a)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(members(&app, &one).await, BTreeSet::from([a]));
}

/// Makes the database refuse (a statement error, after which PostgreSQL refuses every
/// further statement of the transaction until it is rolled back to a savepoint) any
/// insert of a membership of `victim`.
async fn refuse_memberships_of(app: &TestApp, victim: &str) {
    let statements = match common::postgres_server() {
        Some(_) => vec![
            "CREATE FUNCTION refuse_victim() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'disk on fire'; END $$ LANGUAGE plpgsql"
                .to_owned(),
            format!(
                "CREATE TRIGGER refuse_victim BEFORE INSERT ON memberships FOR EACH ROW \
                 WHEN (NEW.user_id = '{victim}') EXECUTE FUNCTION refuse_victim()"
            ),
        ],
        None => vec![format!(
            "CREATE TRIGGER refuse_victim BEFORE INSERT ON memberships \
             WHEN NEW.user_id = '{victim}' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )],
    };
    execute(app, &statements).await;
}

#[tokio::test]
async fn a_patch_that_fails_after_writing_is_undone_to_its_savepoint_and_the_others_commit() {
    let app = TestApp::spawn().await;
    let team = group(&app, "Before").await;
    let (a, victim, b) = (
        user(&app, "a").await,
        user(&app, "victim").await,
        user(&app, "b").await,
    );
    refuse_memberships_of(&app, &victim).await;
    let before = version(&app, &team).await;

    let (answers, transactions) = in_one_batch(
        &app,
        vec![
            add_member(&app, &team, &a),
            // Renames the group (written first), then fails at the membership.
            app.scim(Method::PATCH, &format!("/Groups/{team}"))
                .header("content-type", SCIM_JSON)
                .body(patch_body(json!([
                    {"op": "replace", "path": "displayName", "value": "After"},
                    {"op": "add", "path": "members", "value": [{"value": victim}]}
                ]))),
            add_member(&app, &team, &b),
        ],
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(statuses, [200, 500, 200], "{answers:?}");
    assert_eq!(transactions, 1);
    let detail = answers[1].1["detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("disk on fire"), "{detail}");
    assert_eq!(
        members(&app, &team).await,
        BTreeSet::from([a.clone(), b.clone()])
    );
    let (_, read) = app
        .scim_json(Method::GET, &format!("/Groups/{team}"), None)
        .await;
    assert_eq!(
        read["displayName"], "Before",
        "the rename went with its savepoint"
    );
    assert_eq!(version(&app, &team).await, before + 2);
    let audit = app.store.audit_since(None).await.expect("audit");
    assert!(
        !audit.iter().any(|e| e.detail.to_string().contains("After")),
        "no audit row of the undone PATCH"
    );
    assert_eq!(membership_audit(&app, &team).await.len(), 2);
}

fn remove_member(app: &TestApp, group: &str, user: &str) -> RequestBuilder {
    app.scim(
        Method::PATCH,
        &format!("/Groups/{group}?excludedAttributes=members"),
    )
    .header("content-type", SCIM_JSON)
    .body(patch_body(json!([
        {"op": "remove", "path": format!("members[value eq \"{user}\"]")}
    ])))
}

async fn users(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(user(app, &format!("{prefix}{i}")).await);
    }
    ids
}

#[tokio::test]
async fn member_patches_of_one_group_queued_together_are_applied_as_one_change_and_all_answered() {
    let app = TestApp::spawn().await;
    let team = group(&app, "Merged").await;
    let joiners = users(&app, "joiner", 6).await;
    let before = version(&app, &team).await;

    let merged_before = app.state.writes().merged();
    let requests = joiners.iter().map(|u| add_member(&app, &team, u)).collect();
    let (answers, transactions, applied) = in_one_batch_counted(&app, requests).await;
    assert_eq!(app.state.writes().merged() - merged_before, 6);
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    assert_eq!(transactions, 1);
    assert_eq!(applied, 6, "every PATCH counts as a write");
    assert_eq!(
        members(&app, &team).await,
        joiners.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        version(&app, &team).await,
        before + 1,
        "six PATCHes naming different users became one change of the group"
    );
    let (status, read) = app
        .scim_json(
            Method::GET,
            &format!("/Groups/{team}?excludedAttributes=members"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["meta"]["version"], json!(etag(before + 1)));
    for (_, body) in &answers {
        assert_eq!(body, &read, "each answer shows the group as committed");
    }
    let audited: BTreeSet<(String, String)> =
        membership_audit(&app, &team).await.into_iter().collect();
    let expected: BTreeSet<(String, String)> = joiners
        .iter()
        .map(|u| ("add_member".to_owned(), format!("membership:{team}:{u}")))
        .collect();
    assert_eq!(
        audited, expected,
        "one audit row per member, as one at a time"
    );
}

#[tokio::test]
async fn a_patch_naming_a_user_that_does_not_exist_among_mergeable_ones_is_refused_alone() {
    let app = TestApp::spawn().await;
    let team = group(&app, "Careful").await;
    let (a, b) = (user(&app, "a").await, user(&app, "b").await);
    let ghost = Uuid::new_v4().to_string();
    let before = version(&app, &team).await;

    let (answers, transactions) = in_one_batch(
        &app,
        vec![
            add_member(&app, &team, &a),
            add_member(&app, &team, &ghost),
            add_member(&app, &team, &b),
        ],
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(statuses, [200, 400, 200], "{answers:?}");
    let detail = answers[1].1["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&ghost),
        "the refusal names the member: {detail}"
    );
    assert_eq!(transactions, 1);
    assert_eq!(members(&app, &team).await, BTreeSet::from([a, b]));
    assert_eq!(
        version(&app, &team).await,
        before + 2,
        "applied one by one once the merged change was refused"
    );
    assert_eq!(membership_audit(&app, &team).await.len(), 2);
}

#[tokio::test]
async fn member_removals_queued_together_take_every_named_member_out() {
    let app = TestApp::spawn().await;
    let team = group(&app, "Shrinking").await;
    let staff = users(&app, "staff", 5).await;
    for member in &staff {
        let (status, body) = send(add_member(&app, &team, member)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let before = version(&app, &team).await;

    let leaving = &staff[..3];
    let requests = leaving
        .iter()
        .map(|u| remove_member(&app, &team, u))
        .collect();
    let (answers, transactions) = in_one_batch(&app, requests).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    assert_eq!(transactions, 1);
    assert_eq!(
        members(&app, &team).await,
        staff[3..].iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(version(&app, &team).await, before + 1);
    let removed = membership_audit(&app, &team)
        .await
        .into_iter()
        .filter(|(op, _)| op == "remove_member")
        .count();
    assert_eq!(removed, 3, "one audit row per member taken out");
}

#[tokio::test]
async fn a_member_added_then_removed_in_one_batch_ends_as_one_at_a_time_would() {
    let app = TestApp::spawn().await;
    let (batched, alone) = (group(&app, "Batched").await, group(&app, "Alone").await);
    let (flicker, stays) = (user(&app, "flicker").await, user(&app, "stays").await);

    let sequence = |team: &str| {
        vec![
            add_member(&app, team, &flicker),
            add_member(&app, team, &stays),
            remove_member(&app, team, &flicker),
        ]
    };
    let (answers, transactions) = in_one_batch(&app, sequence(&batched)).await;
    assert_eq!(transactions, 1);
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    for request in sequence(&alone) {
        let (status, body) = send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    assert_eq!(
        members(&app, &batched).await,
        BTreeSet::from([stays.clone()])
    );
    assert_eq!(members(&app, &alone).await, BTreeSet::from([stays]));
    let ops = |rows: Vec<(String, String)>| {
        let mut ops: Vec<String> = rows.into_iter().map(|(op, _)| op).collect();
        ops.sort();
        ops
    };
    assert_eq!(
        ops(membership_audit(&app, &batched).await),
        ops(membership_audit(&app, &alone).await),
        "the same audit rows as one at a time: the add and the removal both recorded"
    );
}

fn post_user(app: &TestApp, user_name: &str) -> RequestBuilder {
    app.scim(Method::POST, "/Users")
        .header("content-type", SCIM_JSON)
        .body(json!({"userName": user_name}).to_string())
}

#[tokio::test]
async fn creates_of_unicode_twins_queued_together_make_one_user_and_one_conflict() {
    let app = TestApp::spawn().await;
    // "josé" precomposed, then with a combining accent: one person.
    let (composed, decomposed) = ("jos\u{e9}@example.com", "jose\u{301}@example.com");
    let merged_before = app.state.writes().merged();
    let (answers, transactions, applied) = in_one_batch_counted(
        &app,
        vec![
            post_user(&app, "first@example.com"),
            post_user(&app, composed),
            post_user(&app, decomposed),
            post_user(&app, "last@example.com"),
        ],
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(statuses, [201, 201, 409, 201], "{answers:?}");
    assert_eq!(transactions, 1);
    assert_eq!(applied, 3);
    assert_eq!(
        app.state.writes().merged() - merged_before,
        0,
        "the merged create was refused and its creates applied one by one"
    );
    let (status, listed) = app
        .scim_json(
            Method::GET,
            &format!("/Users?filter=userName%20eq%20%22{decomposed}%22"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["totalResults"], 1, "{listed}");
    assert_eq!(listed["Resources"][0]["id"], answers[1].1["id"]);
}
