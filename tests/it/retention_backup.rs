//! Months in production: `[audit] retain` prunes in batches, `audit export` ships the
//! log first, `backup` copies a live SQLite database, and maintenance keeps SQLite's
//! WAL in check without making the read cache stale.

use crate::common::TestApp;
use reqwest::{Method, StatusCode};
use scimsync::store::retention::Checkpoint;
use scimsync::store::Store;
use serde_json::{json, Value};
use sqlx::{AnyPool, Row};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OLD: &str = "2020-01-01T00:00:00.000000Z";

fn cli(url: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("SCIMSYNC_CONFIG")
        .env_remove("SCIMSYNC_DATABASE_URL")
        .env("SCIMSYNC_LOG_LEVEL", "warn")
        .output()
        .expect("scimsync runs")
}

async fn sql(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("database opens")
}

async fn count(pool: &AnyPool, query: &str) -> i64 {
    sqlx::query(query)
        .fetch_one(pool)
        .await
        .expect("count")
        .get::<i64, _>(0)
}

async fn ids(pool: &AnyPool, query: &str) -> Vec<i64> {
    sqlx::query(query)
        .fetch_all(pool)
        .await
        .expect("ids")
        .iter()
        .map(|row| row.get::<i64, _>(0))
        .collect()
}

fn user_body(user_name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "active": true,
    })
}

/// Creates a user over SCIM (one audit entry each) and returns its id.
async fn post_user(app: &TestApp, user_name: &str) -> String {
    let (status, body) = app
        .scim_json(Method::POST, "/Users", Some(user_body(user_name)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// Ages the first `n` audit entries to 2020.
async fn age_audit_entries(pool: &AnyPool, n: usize) -> Vec<i64> {
    let old = ids(pool, "SELECT id FROM audit_log ORDER BY id").await;
    let old = old[..n].to_vec();
    for id in &old {
        sqlx::query(&format!(
            "UPDATE audit_log SET at = '{OLD}' WHERE id = {id}"
        ))
        .execute(pool)
        .await
        .expect("aged");
    }
    old
}

#[tokio::test]
async fn a_prune_keeps_what_is_inside_retain_and_drops_what_is_older_in_batches() {
    let app = TestApp::spawn().await;
    let pool = sql(&app.config.database.url).await;
    for i in 0..6 {
        post_user(&app, &format!("prune{i}@example.com")).await;
    }
    let owner = app.seed_user("owner@example.com").await;
    let (old_key, _) = app.new_api_key(owner.id, None).await;
    let (recent_key, _) = app.new_api_key(owner.id, None).await;
    let operator = crate::common::operator();
    assert!(app.engine().revoke_key(old_key, &operator).await.unwrap());
    assert!(app
        .engine()
        .revoke_key(recent_key, &operator)
        .await
        .unwrap());
    sqlx::query(&format!(
        "UPDATE deleted_api_keys SET deleted = '{OLD}' WHERE id = '{old_key}'"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let aged = age_audit_entries(&pool, 3).await;
    let entries = count(&pool, "SELECT COUNT(*) FROM audit_log").await;
    assert!(entries >= 6, "{entries}");

    let retain = chrono::Duration::days(400);
    let before = scimsync::store::now() - retain;
    let pruned = scimsync::maintenance::prune(&app.store, before, 2, Duration::ZERO)
        .await
        .expect("pruned");
    assert_eq!(pruned.audit_log, 3);
    assert_eq!(pruned.deleted_api_keys, 1);
    // 3 audit entries at 2 a transaction, then the one key.
    assert_eq!(pruned.batches, 3);

    let left = ids(&pool, "SELECT id FROM audit_log ORDER BY id").await;
    assert_eq!(left.len() as i64, entries - 3);
    assert!(
        aged.iter().all(|id| !left.contains(id)),
        "{aged:?} {left:?}"
    );
    let keys: Vec<String> = sqlx::query("SELECT id FROM deleted_api_keys")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    assert_eq!(keys, vec![recent_key.to_string()]);

    let again = scimsync::maintenance::prune(&app.store, before, 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again, Default::default(), "nothing older is left");
}

#[tokio::test]
async fn the_daemon_prunes_to_retain_on_its_own() {
    let app = TestApp::spawn_with(|config| {
        config.audit.retain = Some(Duration::from_secs(86_400));
        config.audit.prune_every = Duration::from_secs(1);
        config.audit.prune_batch = 1;
    })
    .await;
    let pool = sql(&app.config.database.url).await;
    for i in 0..4 {
        post_user(&app, &format!("daemon{i}@example.com")).await;
    }
    let entries = count(&pool, "SELECT COUNT(*) FROM audit_log").await;
    age_audit_entries(&pool, 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(
        &pool,
        &format!("SELECT COUNT(*) FROM audit_log WHERE at = '{OLD}'"),
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "the daemon did not prune");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM audit_log").await,
        entries - 2,
        "entries inside retain stay"
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("# HELP scimsync_audit_rows_pruned_total"),
        "{metrics}"
    );
    let pruned: f64 = metrics
        .lines()
        .find(|l| l.starts_with("scimsync_audit_rows_pruned_total{table=\"audit_log\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the audit_log series");
    assert!(pruned >= 2.0, "{pruned}");
}

#[tokio::test]
async fn audit_export_prints_exactly_the_entries_since_time_as_json_lines() {
    let app = TestApp::spawn().await;
    let pool = sql(&app.config.database.url).await;
    for i in 0..5 {
        post_user(&app, &format!("export{i}@example.com")).await;
    }
    // SCIM clients may send a password; it must not reach the exported log.
    let mut with_password = user_body("secretive@example.com");
    with_password["password"] = json!("hunter2-never-exported");
    let (status, _) = app
        .scim_json(Method::POST, "/Users", Some(with_password))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    age_audit_entries(&pool, 2).await;
    let expected = ids(
        &pool,
        "SELECT id FROM audit_log WHERE at >= '2021-01-01' ORDER BY id",
    )
    .await;
    assert!(expected.len() >= 4, "{expected:?}");

    let url = &app.config.database.url;
    let out = cli(
        url,
        &[
            "audit",
            "export",
            "--since",
            "2021-01-01",
            "--format",
            "jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.ends_with('\n'));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON value"))
        .collect();
    let exported: Vec<i64> = lines
        .iter()
        .map(|entry| {
            assert!(entry.is_object(), "{entry}");
            for field in ["at", "trigger", "actor", "operation", "target", "detail"] {
                assert!(entry.get(field).is_some(), "{field} in {entry}");
            }
            assert!(entry["at"].as_str().unwrap() >= "2021-01-01", "{entry}");
            entry["id"].as_i64().expect("id")
        })
        .collect();
    assert_eq!(exported, expected);

    let everything = cli(url, &["audit", "export"]);
    assert_eq!(everything.status.code(), Some(0), "{everything:?}");
    assert_eq!(
        String::from_utf8_lossy(&everything.stdout).lines().count() as i64,
        count(&pool, "SELECT COUNT(*) FROM audit_log").await
    );
    // The audit command keeps its flags beside the new subcommand.
    let text = cli(url, &["audit", "--since", "24h"]);
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    assert_eq!(
        String::from_utf8_lossy(&text.stdout).lines().count(),
        1 + expected.len(),
        "a header and the entries of the last day"
    );
    let refused = cli(url, &["audit", "export", "--format", "text"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
}

#[tokio::test]
async fn a_backup_taken_under_write_load_restores_to_a_consistent_store() {
    let app = TestApp::spawn().await;
    if app.config.database.url.starts_with("postgres") {
        // What PostgreSQL gets instead is checked below, on every backend.
        return;
    }
    let (status, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Backed up",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group_id = group["id"].as_str().unwrap().to_owned();

    // The writer: one user after another, each added to the group, over HTTP.
    let app = Arc::new(app);
    let committed = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, committed, stop) = (app.clone(), committed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = post_user(&app, &format!("load{n}@example.com")).await;
                let (status, body) = app
                    .scim_json(
                        Method::PATCH,
                        &format!("/Groups/{group_id}"),
                        Some(json!({
                            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}],
                        })),
                    )
                    .await;
                assert!(status.is_success(), "{status} {body}");
                n += 1;
                committed.store(n, Ordering::SeqCst);
            }
        })
    };
    while committed.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let out_path = app.dir.path().join("backup.db");
    let url = app.config.database.url.clone();
    let out_arg = out_path.to_str().unwrap().to_owned();
    // Users exist only from a committed POST on; no user is ever deleted.
    let at_least = committed.load(Ordering::SeqCst);
    let out = {
        let (url, out_arg) = (url.clone(), out_arg.clone());
        tokio::task::spawn_blocking(move || cli(&url, &["backup", "--out", &out_arg]))
            .await
            .unwrap()
    };
    let at_most = committed.load(Ordering::SeqCst) + 1;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the writer never failed");
    let leftovers: Vec<_> = std::fs::read_dir(app.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Restored: what `Store::open` makes of the file, and what SQLite says of it.
    let backup_url = format!("sqlite://{}", out_path.display());
    let pool = sql(&backup_url).await;
    let integrity: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(integrity, "ok");
    let orphans = count(
        &pool,
        "SELECT COUNT(*) FROM memberships m \
         LEFT JOIN users u ON u.id = m.user_id LEFT JOIN teams t ON t.id = m.team_id \
         WHERE u.id IS NULL OR t.id IS NULL",
    )
    .await;
    assert_eq!(orphans, 0);
    let users = count(&pool, "SELECT COUNT(*) FROM users").await;
    assert!(
        (at_least..=at_most).contains(&users),
        "{users} users: the writer had committed {at_least} when the backup began and at most {at_most} when it ended"
    );
    pool.close().await;
    let restored = Store::open(&backup_url, 2).await.expect("the backup opens");
    let members = restored.all_memberships().await.expect("memberships read");
    assert!(members.len() as i64 >= users - 1, "{}", members.len());

    let again = cli(&url, &["backup", "--out", &out_arg]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists; pass --force"),
        "{again:?}"
    );
    let forced = cli(&url, &["backup", "--out", &out_arg, "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{forced:?}");
    let db_path = url.trim_start_matches("sqlite://");
    let onto_itself = cli(&url, &["backup", "--out", db_path, "--force"]);
    assert_eq!(onto_itself.status.code(), Some(1), "{onto_itself:?}");
}

#[test]
fn backup_on_postgresql_points_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.db");
    // Refused before any connection is made: the server need not exist.
    let refused = cli(
        "postgres://scimsync@127.0.0.1:1/scimsync",
        &["backup", "--out", out.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pg_dump"),
        "{refused:?}"
    );
    assert!(!out.exists());
}

#[tokio::test]
async fn sqlite_checkpoints_empty_the_wal_and_leave_no_stale_read() {
    let app = TestApp::spawn().await;
    if app.config.database.url.starts_with("postgres") {
        // No-op there: autovacuum does this work.
        app.store
            .sqlite_maintenance(Checkpoint::Truncate)
            .await
            .unwrap();
        return;
    }
    let id = post_user(&app, "cached@example.com").await;
    let get_name = || async {
        let (status, body) = app
            .scim_json(Method::GET, &format!("/Users/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        body["displayName"].clone()
    };
    assert_eq!(get_name().await, Value::Null);
    assert_eq!(get_name().await, Value::Null, "now from the read cache");

    app.store
        .sqlite_maintenance(Checkpoint::Truncate)
        .await
        .expect("checkpointed");
    let wal = std::path::PathBuf::from(format!(
        "{}-wal",
        app.config.database.url.trim_start_matches("sqlite://")
    ));
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);

    // Another process's write (as the CLI's), after the checkpoint: seen at once.
    let other = Store::open(&app.config.database.url, 1).await.unwrap();
    other.sqlite_maintenance(Checkpoint::Passive).await.unwrap();
    drop(other);
    let (status, _) = app
        .scim_json(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": "Renamed"}],
            })),
        )
        .await;
    assert!(status.is_success());
    assert_eq!(get_name().await, json!("Renamed"));
    app.store
        .sqlite_maintenance(Checkpoint::Passive)
        .await
        .expect("checkpointed");
    assert_eq!(get_name().await, json!("Renamed"));
}

#[tokio::test]
async fn a_bulk_apply_on_postgresql_refreshes_the_planner_statistics() {
    let app = TestApp::spawn().await;
    if !app.config.database.url.starts_with("postgres") {
        return;
    }
    let pool = sql(&app.config.database.url).await;
    let analysed = "SELECT COUNT(*) FROM pg_stat_user_tables \
                    WHERE relname = 'memberships' AND last_analyze IS NOT NULL";
    assert_eq!(count(&pool, analysed).await, 0);
    let mut tx = app.store.begin_write().await.unwrap();
    tx.begin_bulk().await.unwrap();
    tx.end_bulk().await.unwrap();
    tx.commit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&pool, analysed).await == 0 {
        assert!(Instant::now() < deadline, "no ANALYZE after the bulk apply");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
