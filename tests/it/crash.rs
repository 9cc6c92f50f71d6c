//! Crash consistency: kill -9 in the middle of a large `scimsync apply`, in the
//! middle of SCIM DELETEs of users with keys, and in the middle of membership PATCHes
//! committed together, then look at the database. It must hold the state before or
//! the state after, never a mixture, and the next plan must converge.

use crate::common;

use common::daemon::{run, scimsync, serve, stderr, stdout, Daemon};
use rand::Rng;
use scimsync::domain::{Source, TokenScope};
use scimsync::store::Store;
use serde_json::{json, Value};
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Size of the plan the CI run kills (users, groups, memberships per user). The
/// issue's full size (100,000 operations) runs with CRASH_USERS=20000
/// (scripts/reliability.sh does).
fn plan_size() -> (usize, usize, usize) {
    let users = std::env::var("CRASH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    (users, 100, 5)
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("scimsync.db").display())
}

/// The snapshot: `users` users, `groups` groups, each user in `per_user` groups.
/// `version` changes every display name, so v2 updates what v1 created.
fn snapshot(users: usize, groups: usize, per_user: usize, version: u32) -> Value {
    let users_json: Vec<Value> = (0..users)
        .map(|i| {
            json!({"external_id": format!("u-{i}"), "user_name": format!("user{i}@example.com"),
                   "email": format!("user{i}@example.com"),
                   "display_name": format!("User {i} v{version}"), "active": true})
        })
        .collect();
    let mut members: Vec<Vec<String>> = vec![Vec::new(); groups];
    for i in 0..users {
        for k in 0..per_user {
            members[(i + k * 7) % groups].push(format!("u-{i}"));
        }
    }
    let groups_json: Vec<Value> = members
        .into_iter()
        .enumerate()
        .map(|(g, m)| {
            json!({"external_id": format!("g-{g}"), "display_name": format!("LLM Group {g} v{version}"),
                   "members": m})
        })
        .collect();
    json!({"idp": "entra", "complete": true, "users": users_json, "groups": groups_json})
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    users: i64,
    teams: i64,
    memberships: i64,
    /// Rows whose display name carries the v2 marker.
    v2_users: i64,
    v2_teams: i64,
}

async fn open(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("database opens")
}

async fn count(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .expect("count")
        .get::<i64, _>(0)
}

async fn counts(url: &str) -> Counts {
    let pool = open(url).await;
    let counts = Counts {
        users: count(&pool, "SELECT COUNT(*) FROM users").await,
        teams: count(&pool, "SELECT COUNT(*) FROM teams").await,
        memberships: count(&pool, "SELECT COUNT(*) FROM memberships").await,
        v2_users: count(
            &pool,
            "SELECT COUNT(*) FROM users WHERE display_name LIKE '% v2'",
        )
        .await,
        v2_teams: count(
            &pool,
            "SELECT COUNT(*) FROM teams WHERE display_name LIKE '% v2'",
        )
        .await,
    };
    pool.close().await;
    counts
}

fn apply(dir: &Path, snapshot: &Path) -> std::process::Command {
    let mut cmd = scimsync(dir);
    cmd.env("SCIMSYNC_DATABASE_URL", db_url(dir))
        .arg("apply")
        .arg("--snapshot")
        .arg(snapshot);
    cmd
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn killing_apply_midway_leaves_the_state_before_or_after_and_the_next_apply_converges() {
    let (users, groups, per_user) = plan_size();
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = db_url(dir.path());

    // Before: a smaller v1 state applied in full.
    let v1 = dir.path().join("v1.json");
    std::fs::write(&v1, snapshot(users / 4, groups, 2, 1).to_string()).expect("v1 written");
    let out = run(&mut apply(dir.path(), &v1));
    assert!(out.status.success(), "{}", stderr(&out));
    let before = block_on(counts(&url));
    assert_eq!(before.users as usize, users / 4);
    // Kept to go back to "before" when a kill lands after the commit.
    let saved = dir.path().join("before.db");
    std::fs::copy(dir.path().join("scimsync.db"), &saved).expect("before saved");
    let restore = || {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("scimsync.db{suffix}")));
        }
        std::fs::copy(&saved, dir.path().join("scimsync.db")).expect("before restored");
    };

    // After: every user renamed, four times as many users, more memberships.
    let v2 = dir.path().join("v2.json");
    std::fs::write(&v2, snapshot(users, groups, per_user, 2).to_string()).expect("v2 written");
    let after = Counts {
        users: users as i64,
        teams: groups as i64,
        memberships: (users * per_user) as i64,
        v2_users: users as i64,
        v2_teams: groups as i64,
    };

    // How long an uninterrupted apply takes, measured on a copy, so the kills land inside it.
    let probe = tempfile::tempdir().expect("probe directory");
    std::fs::copy(
        dir.path().join("scimsync.db"),
        probe.path().join("scimsync.db"),
    )
    .expect("copy");
    let started = Instant::now();
    let out = run(&mut apply(probe.path(), &v2));
    let full = started.elapsed();
    eprintln!("full apply: {full:?}");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(block_on(counts(&db_url(probe.path()))), after);

    let mut rng = rand::thread_rng();
    let mut killed_midway = 0;
    for round in 0..8 {
        let delay = full.mul_f64(rng.gen_range(0.15..0.85));
        let mut child = apply(dir.path(), &v2)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("apply starts");
        std::thread::sleep(delay);
        let running = child.try_wait().expect("wait").is_none();
        child.kill().expect("SIGKILL sent");
        let status = child.wait().expect("reaped");
        let now = block_on(counts(&url));
        assert!(
            now == before || now == after,
            "round {round}: killed after {delay:?} (running: {running}, {status}): \
             the store is neither before nor after:\n  before {before:?}\n  now    {now:?}\n  after  {after:?}"
        );
        if now == after {
            // The kill landed after the commit: start again from "before".
            restore();
            assert_eq!(block_on(counts(&url)), before);
        } else if running {
            killed_midway += 1;
            if killed_midway == 3 {
                break;
            }
        }
    }
    assert!(killed_midway > 0, "no kill landed while apply was running");

    // Restart: applying again converges, and a plan right after is empty.
    let out = run(&mut apply(dir.path(), &v2));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(block_on(counts(&url)), after);
    let out = run(scimsync(dir.path())
        .env("SCIMSYNC_DATABASE_URL", &url)
        .args(["plan", "--detailed-exitcode", "--snapshot"])
        .arg(&v2));
    assert_eq!(
        out.status.code(),
        Some(0),
        "the plan after a converged apply is not empty:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

const USERS: usize = 400;

/// `scimsync serve` on the database at `url`.
fn daemon_on(dir: &Path, url: &str) -> Daemon {
    let mut cmd = serve(dir);
    cmd.env("SCIMSYNC_DATABASE_URL", url);
    Daemon::start(cmd)
}

/// A SCIM token of the default IdP.
async fn default_scim_token(store: &Store) -> String {
    store
        .issue_token("idp", TokenScope::Scim, "default")
        .await
        .expect("token")
        .expose()
        .to_owned()
}

/// `n` users named PREFIXi@example.com and a team, all new, as the default IdP's SCIM
/// client would push them (the team holding every one of them if `members`); with the
/// users' ids and the team's.
fn scim_users_and_team(
    prefix: &str,
    n: usize,
    team: &str,
    members: bool,
) -> (scimsync::reconcile::Desired, Vec<Uuid>, Uuid) {
    use scimsync::reconcile::{Desired, DesiredTeam, DesiredUser, Intent, MemberRef, MemberSpec};
    let team_id = Uuid::new_v4();
    let mut desired = Desired::new(
        Source::Scim("default".into()),
        scimsync::reconcile::Scope::Listed,
    );
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        let name =
            scimsync::domain::UserName::parse(&format!("{prefix}{i}@example.com")).expect("name");
        desired.users.push(DesiredUser {
            id: Some(*id),
            intent: Intent::Create,
            ..DesiredUser::new(name)
        });
    }
    desired.teams.push(DesiredTeam {
        id: Some(team_id),
        intent: Intent::Create,
        members: match members {
            true => MemberSpec::Exactly(ids.iter().map(|id| MemberRef::UserId(*id)).collect()),
            false => MemberSpec::Unchanged,
        },
        ..DesiredTeam::new(scimsync::domain::TeamName::parse(team).expect("name"))
    });
    (desired, ids, team_id)
}
const KEYS_PER_USER: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_during_user_deletions_never_separates_a_user_from_their_keys() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = db_url(dir.path());
    let store = Store::open(&url, 2).await.expect("store");
    // The victims, their team and memberships, pushed as the default IdP's SCIM client
    // would: through the engine, in one transaction.
    let (desired, ids, team_id) = scim_users_and_team("victim", USERS, "Everyone", true);
    common::apply_as_operator(&store, &desired).await;
    for user_id in &ids {
        for k in 0..KEYS_PER_USER {
            let team_id = (k == 0).then_some(team_id);
            let new = scimsync::reconcile::NewKey {
                user_id: *user_id,
                team_id,
                ..Default::default()
            };
            scimsync::reconcile::Engine::new(store.clone())
                .issue_key(new, &crate::common::operator())
                .await
                .expect("key");
        }
    }
    let token = default_scim_token(&store).await;
    store.close().await;

    let mut daemon = daemon_on(dir.path(), &url);
    let base = daemon.url("/scim/v2/Users");
    let client = reqwest::Client::new();
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deleting = {
        let ids = ids.clone();
        let client = client.clone();
        let acknowledged = acknowledged.clone();
        tokio::spawn(async move {
            let mut done = 0;
            for chunk in ids.chunks(8) {
                let results = futures::future::join_all(chunk.iter().map(|id| {
                    client
                        .delete(format!("{base}/{id}"))
                        .bearer_auth(&token)
                        .send()
                }))
                .await;
                for result in results {
                    match result {
                        Ok(r) if r.status() == 204 => {
                            done += 1;
                            acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(r) => panic!("DELETE answered {}", r.status()),
                        Err(_) => return done, // the daemon is gone
                    }
                }
            }
            done
        })
    };
    // Kill at a random point well inside the stream of deletions.
    let kill_at = rand::thread_rng().gen_range(USERS / 8..USERS / 2);
    let started = Instant::now();
    while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < kill_at {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "deletions stalled"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    daemon.child.kill().expect("SIGKILL sent");
    let _ = daemon.child.wait();
    let acknowledged = deleting.await.expect("deleter");
    drop(daemon);

    let pool = open(&url).await;
    let mut gone = 0;
    for id in &ids {
        let id = id.to_string();
        let user = count(
            &pool,
            &format!("SELECT COUNT(*) FROM users WHERE id = '{id}'"),
        )
        .await;
        let keys = count(
            &pool,
            &format!("SELECT COUNT(*) FROM api_keys WHERE user_id = '{id}'"),
        )
        .await;
        let audit = count(
            &pool,
            &format!("SELECT COUNT(*) FROM deleted_api_keys WHERE user_id = '{id}'"),
        )
        .await;
        let memberships = count(
            &pool,
            &format!("SELECT COUNT(*) FROM memberships WHERE user_id = '{id}'"),
        )
        .await;
        match user {
            1 => assert_eq!(
                (keys, audit, memberships),
                (KEYS_PER_USER as i64, 0, 1),
                "user {id} survived but lost part of their keys or membership"
            ),
            0 => {
                assert_eq!(
                    (keys, audit, memberships),
                    (0, KEYS_PER_USER as i64, 0),
                    "user {id} is gone but not all of their keys went with them"
                );
                gone += 1;
            }
            n => panic!("{n} rows for user {id}"),
        }
    }
    pool.close().await;
    // Every DELETE the client saw acknowledged is durable.
    assert!(
        gone >= acknowledged,
        "{acknowledged} deletions acknowledged, {gone} in the database"
    );
    assert!(
        gone < USERS,
        "every deletion finished before the kill; nothing was interrupted"
    );

    // The restarted daemon serves and agrees with the database.
    let daemon = daemon_on(dir.path(), &url);
    let ready = client
        .get(daemon.url("/readyz"))
        .send()
        .await
        .expect("restarted daemon answers");
    assert_eq!(ready.status(), 200);
}

/// Members added by PATCH, one per request, in the grouped-commit test below.
const PATCHED: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_during_grouped_patches_keeps_every_acknowledged_member_and_no_half_patch(
) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = match common::postgres_server() {
        Some(server) => common::fresh_postgres_database(&server).await,
        None => db_url(dir.path()),
    };
    let store = Store::open(&url, 2).await.expect("store");
    // The users and their (empty) group, as the default IdP's SCIM client made them.
    let (desired, ids, team_id) = scim_users_and_team("member", PATCHED, "Grouped", false);
    common::apply_as_operator(&store, &desired).await;
    let token = default_scim_token(&store).await;
    store.close().await;

    let mut daemon = daemon_on(dir.path(), &url);
    let group = daemon.url(&format!(
        "/scim/v2/Groups/{team_id}?excludedAttributes=members"
    ));
    let metrics = daemon.url("/metrics");
    let reader = token.clone();
    let client = reqwest::Client::new();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let patching = {
        let (ids, client, acknowledged) = (ids.clone(), client.clone(), acknowledged.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            // 32 PATCHes in flight at any time, so that they queue up and commit together.
            let answers = futures::stream::iter(ids).map(|id| {
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]
                });
                let request = client
                    .patch(&group)
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send();
                async move { (id, request.await) }
            });
            let mut answers = answers.buffer_unordered(32);
            while let Some((id, answer)) = answers.next().await {
                match answer {
                    Ok(r) if r.status().is_success() => {
                        if let Ok(mut acked) = acknowledged.lock() {
                            acked.push(id);
                        }
                    }
                    // Only a refusal the test did not cause is an error here.
                    Ok(r) => panic!("PATCH answered {}", r.status()),
                    Err(_) => {} // the daemon is gone
                }
            }
        })
    };
    let acked = |acknowledged: &std::sync::Mutex<Vec<Uuid>>| {
        acknowledged.lock().map(|a| a.len()).unwrap_or_default()
    };
    let kill_at = rand::thread_rng().gen_range(PATCHED / 8..PATCHED / 2);
    let started = Instant::now();
    while acked(&acknowledged) < kill_at {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "PATCHes stalled"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Taken at the last moment: how many changes shared their transactions.
    let exposition = client
        .get(&metrics)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    daemon.child.kill().expect("SIGKILL sent");
    let _ = daemon.child.wait();
    let _ = patching.await;
    drop(daemon);
    let acknowledged: Vec<Uuid> = acknowledged.lock().map(|a| a.clone()).unwrap_or_default();

    let figure = |name: &str| -> f64 {
        exposition
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (changes, transactions) = (
        figure("scimsync_scim_change_batch_size_sum"),
        figure("scimsync_scim_change_batch_size_count"),
    );
    assert!(
        changes > transactions,
        "{changes} PATCHes in {transactions} transactions: none were grouped"
    );

    let pool = open(&url).await;
    let team = team_id.to_string();
    let members: std::collections::BTreeSet<String> =
        sqlx::query("SELECT user_id FROM memberships WHERE team_id = $1")
            .bind(&team)
            .fetch_all(&pool)
            .await
            .expect("members")
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
    for id in &acknowledged {
        assert!(
            members.contains(&id.to_string()),
            "member {id} was acknowledged but is not in the group after the crash"
        );
    }
    assert!(
        members.len() < PATCHED,
        "every PATCH finished before the kill; nothing was interrupted"
    );
    // Each PATCH is whole or absent: its membership, its audit row and its user's
    // version (a member PATCH bumps the user it adds). PATCHes of different users that
    // queue together are applied as one change of the group, so the group's version
    // moves once per such change: at least once, at most once per member.
    let audited = count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM audit_log WHERE operation = 'add_member' \
             AND target LIKE 'membership:{team}:%'"
        ),
    )
    .await;
    let version = count(
        &pool,
        &format!("SELECT version FROM teams WHERE id = '{team}'"),
    )
    .await;
    let bumped_users = count(
        &pool,
        &format!(
            "SELECT COUNT(*) FROM users WHERE version > 1 AND id IN \
             (SELECT user_id FROM memberships WHERE team_id = '{team}')"
        ),
    )
    .await;
    let bumped_anyone = count(&pool, "SELECT COUNT(*) FROM users WHERE version > 1").await;
    assert_eq!(audited, members.len() as i64, "audit rows for the members");
    assert_eq!(
        (bumped_users, bumped_anyone),
        (members.len() as i64, members.len() as i64),
        "exactly the users added have a new version"
    );
    assert!(
        (2..=1 + members.len() as i64).contains(&version),
        "the group's version {version} for {} members",
        members.len()
    );
    pool.close().await;

    // The restarted daemon serves what the database holds.
    let daemon = daemon_on(dir.path(), &url);
    let read: Value = client
        .get(daemon.url(&format!("/scim/v2/Groups/{team_id}")))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("restarted daemon answers")
        .json()
        .await
        .expect("a group");
    let served: std::collections::BTreeSet<String> = read["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["value"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(served, members);
}
