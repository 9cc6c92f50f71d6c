//! A write transaction is all or nothing however it ends: committed, dropped after an
//! error, or cancelled at any await because the client went away. Whatever happened to
//! the last one, the next write goes through. (On SQLite scimsync runs BEGIN, COMMIT
//! and ROLLBACK itself on the writer's own connection, so this is its own promise, not
//! sqlx's.)

use crate::common;

use common::TestApp;
use scimsync::domain::{Source, Trigger, User, UserName};
use scimsync::store::actual::AuditRecord;
use scimsync::store::Store;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;
use uuid::Uuid;

fn user(name: &str) -> User {
    common::new_user(name, Source::Manual)
}

fn audit_record(target: &str) -> AuditRecord {
    AuditRecord {
        operation: "create_user",
        target: target.to_owned(),
        detail: serde_json::json!({}),
    }
}

async fn audited_targets(store: &Store) -> Vec<String> {
    store
        .audit_since(None)
        .await
        .expect("audit log")
        .into_iter()
        .map(|e| e.target)
        .collect()
}

/// A user with its audit row, written and committed; what every SCIM write amounts to.
async fn write_user(store: Store, user: User) -> Result<(), scimsync::store::StoreError> {
    let mut tx = store.begin_write().await?;
    tx.insert_users_if_absent(std::slice::from_ref(&user))
        .await?;
    tx.audit_at_commit(
        Trigger::Cli,
        "test",
        scimsync::store::now(),
        &[audit_record(user.user_name.as_str())],
    )
    .await?;
    tx.commit().await
}

/// The next write must neither hang behind nor trip over what the last one left.
async fn next_write_goes_through(store: &Store, name: &str) {
    tokio::time::timeout(
        Duration::from_secs(10),
        write_user(store.clone(), user(name)),
    )
    .await
    .expect("the next write is not held up")
    .expect("the next write commits");
    assert!(store
        .user_by_name(&UserName::parse(name).expect("name"))
        .await
        .expect("read")
        .is_some());
}

#[tokio::test]
async fn a_write_dropped_before_commit_leaves_nothing_not_even_its_audit_rows() {
    let app = TestApp::spawn().await;
    let dropped = user("dropped@example.com");
    {
        let mut tx = app.store.begin_write().await.expect("begin");
        tx.insert_users_if_absent(std::slice::from_ref(&dropped))
            .await
            .expect("insert");
        tx.audit_at_commit(
            Trigger::Cli,
            "test",
            scimsync::store::now(),
            &[audit_record("dropped")],
        )
        .await
        .expect("audit kept for the commit");
    }

    next_write_goes_through(&app.store, "next@example.com").await;
    assert!(app.store.user(dropped.id).await.expect("read").is_none());
    let targets = audited_targets(&app.store).await;
    assert!(!targets.contains(&"dropped".to_owned()), "{targets:?}");
    assert!(
        targets.contains(&"next@example.com".to_owned()),
        "{targets:?}"
    );
}

#[tokio::test]
async fn a_write_cancelled_at_any_await_is_all_or_nothing_and_the_next_write_goes_through() {
    let app = TestApp::spawn().await;
    // Cancel after 0, 1, 2, ... polls: during the lock, the BEGIN, the INSERT, the
    // COMMIT, and (for the larger counts) after it completed.
    for polls in 0..40 {
        let name = format!("cancelled-{polls}@example.com");
        let cancelled = user(&name);
        let mut write = Box::pin(write_user(app.store.clone(), cancelled.clone()));
        for _ in 0..polls {
            let done =
                std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx).is_ready())).await;
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(write);

        next_write_goes_through(&app.store, &format!("after-{polls}@example.com")).await;
        // Either the whole write landed, user and audit row, or none of it did.
        let stored = app.store.user(cancelled.id).await.expect("read").is_some();
        let audited = audited_targets(&app.store).await.contains(&name);
        assert_eq!(
            stored, audited,
            "after {polls} polls: user {stored}, audit row {audited}"
        );
    }
}

#[tokio::test]
async fn a_failed_statement_rolls_the_whole_write_back() {
    let app = TestApp::spawn().await;
    let first = user("taken@example.com");
    write_user(app.store.clone(), first)
        .await
        .expect("first write");

    let bystander = user("bystander@example.com");
    // A key for a user who does not exist breaks the foreign key: a statement that fails.
    let orphan = scimsync::domain::ApiKey {
        id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        team_id: None,
        name: None,
        prefix: "sk-orphan".into(),
        created: scimsync::store::now(),
        expires: None,
        blocked_by: None,
    };
    let mut tx = app.store.begin_write().await.expect("begin");
    tx.insert_users_if_absent(std::slice::from_ref(&bystander))
        .await
        .expect("insert");
    assert!(
        tx.insert_key(&orphan, "hash").await.is_err(),
        "a key needs an existing user"
    );
    drop(tx);

    next_write_goes_through(&app.store, "next@example.com").await;
    assert!(app.store.user(bystander.id).await.expect("read").is_none());
}
