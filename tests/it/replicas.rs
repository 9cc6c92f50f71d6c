//! Several replicas, one PostgreSQL database: three real `scimsync serve` processes
//! share a fresh database, take SCIM traffic at once, and hand a scheduled sync over
//! when the replica running it is killed.
//!
//! PostgreSQL only: without `SCIMSYNC_TEST_POSTGRES_URL` the test prints that it is
//! skipped and passes (SQLite has one process per database file by design).

use crate::common;
use crate::idp_mocks;

use common::daemon::{serve, Daemon};
use futures::future::join_all;
use idp_mocks::graph::{self, GraphMock};
use reqwest::StatusCode;
use scimsync::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const STARTED: &str = "starting the scheduled run";
const SKIPPED: &str = "another replica is running this sync";

/// An every-second sync of the Graph mock's "LLM *" groups.
fn config_toml(mock: &GraphMock) -> String {
    format!(
        r#"[[idp]]
name = "entra"
kind = "entra"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret = "{secret}"
login_url = "{base}"
api_base_url = "{base}/v1.0"
groups = ["LLM *"]
schedule = "* * * * * *"
max_retries = 3
retry_backoff_ms = 50
"#,
        tenant = graph::TENANT,
        client = graph::CLIENT_ID,
        secret = graph::CLIENT_SECRET,
        base = mock.base_url,
    )
}

fn replica(dir: &Path, config: &Path, database_url: &str) -> Daemon {
    let mut cmd = serve(dir);
    cmd.arg("--config")
        .arg(config)
        .arg("--database-url")
        .arg(database_url)
        // The sync module's debug lines say when a replica skips a tick.
        .env("SCIMSYNC_LOG_LEVEL", "scimsync::sync=debug,info");
    Daemon::start(cmd)
}

/// Sends a SCIM request to one replica; returns status and parsed body.
async fn scim(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http
        .request(method, format!("{base}/scim/v2{path}"))
        .bearer_auth(token)
        .header("accept", common::SCIM_JSON);
    if let Some(body) = body {
        request = request
            .header("content-type", common::SCIM_JSON)
            .body(body.to_string());
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every membership as (team, user name).
async fn memberships(store: &Store) -> BTreeSet<(String, String)> {
    let teams = store.all_teams().await.expect("teams");
    let users = store.all_users().await.expect("users");
    store
        .all_memberships()
        .await
        .expect("memberships")
        .into_iter()
        .filter_map(|m| {
            let team = teams.iter().find(|t| t.id == m.team_id)?;
            let user = users.iter().find(|u| u.id == m.user_id)?;
            Some((
                team.display_name.as_str().to_owned(),
                user.user_name.as_str().to_owned(),
            ))
        })
        .collect()
}

/// The sync lines of every replica's log, for failure messages.
fn logs(replicas: &[Option<Daemon>], killed: &str) -> String {
    let mut out = format!("killed replica:\n{killed}");
    for (i, r) in replicas.iter().enumerate() {
        if let Some(r) = r {
            out.push_str(&format!("replica {i}:\n{}", r.log()));
        }
    }
    out.lines()
        .filter(|l| l.contains("sync") || l.contains("replica"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgresql_three_replicas_share_writes_and_hand_the_sync_over_when_its_holder_dies() {
    let Some(server) = common::postgres_server() else {
        eprintln!("skipped: needs SCIMSYNC_TEST_POSTGRES_URL (three replicas share one PostgreSQL database)");
        return;
    };
    let began = Instant::now();
    let database_url = common::fresh_postgres_database(&server).await;
    // Each IdP call takes a while, so a run lasts a few seconds: long enough to kill
    // the replica in the middle of one.
    let mock = GraphMock::start().await;
    *mock.faults.delay.lock().unwrap() = Duration::from_millis(300);
    let shared = tempfile::tempdir().expect("temporary directory");
    let config = common::daemon::write(shared.path(), "config.toml", &config_toml(&mock));
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temporary directory"))
        .collect();

    // All three start at once on the empty database: migrations and the first token
    // must cope with the race.
    let starts = dirs.iter().map(|dir| {
        let (dir, config, url) = (dir.path().to_owned(), config.clone(), database_url.clone());
        tokio::task::spawn_blocking(move || replica(&dir, &config, &url))
    });
    let mut replicas: Vec<Option<Daemon>> = join_all(starts)
        .await
        .into_iter()
        .map(|r| Some(r.expect("replica started")))
        .collect();
    let token_files: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.path().join("initial-scim-token")).ok())
        .collect();
    assert_eq!(
        token_files.len(),
        1,
        "exactly one replica wrote the first token"
    );
    let token = token_files[0].trim().to_owned();
    let bases: Vec<String> = replicas.iter().flatten().map(|r| r.url("")).collect();
    let http = reqwest::Client::new();
    let store = Store::open(&database_url, 2).await.expect("store opens");

    // SCIM traffic at all three while the scheduled sync runs: five users created on
    // each replica, then 15 member adds to one group spread over the three, racing a
    // rename of that group.
    let creates = (0..15).map(|i| {
        let (http, base, token) = (&http, &bases[i % 3], &token);
        async move {
            let (status, user) = scim(
                http,
                base,
                token,
                reqwest::Method::POST,
                "/Users",
                Some(json!({"userName": format!("replica{}-user{i}@example.com", i % 3)})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{user}");
            user["id"].as_str().expect("id").to_owned()
        }
    });
    let user_ids = join_all(creates).await;
    let (status, group) = scim(
        &http,
        &bases[1],
        &token,
        reqwest::Method::POST,
        "/Groups",
        Some(json!({"displayName": "Replicated Team"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group_path = format!("/Groups/{}", group["id"].as_str().expect("id"));
    let mut writes: Vec<_> = user_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                i % 3,
                json!([{"op": "add", "path": "members", "value": [{"value": id}]}]),
            )
        })
        .collect();
    writes.insert(
        7,
        (
            2,
            json!([{"op": "replace", "path": "displayName", "value": "Replicated Team v2"}]),
        ),
    );
    let outcomes = join_all(writes.into_iter().map(|(replica, ops)| {
        let (http, base, token, path) = (&http, &bases[replica], &token, &group_path);
        async move {
            let body = json!({"schemas": [PATCH_OP], "Operations": ops});
            scim(http, base, token, reqwest::Method::PATCH, path, Some(body)).await
        }
    }))
    .await;
    for (status, body) in &outcomes {
        assert!(status.is_success(), "{status} {body}");
    }
    // Every replica reads the same, complete roster.
    for base in &bases {
        let (status, group) =
            scim(&http, base, &token, reqwest::Method::GET, &group_path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(group["displayName"], "Replicated Team v2");
        let members: BTreeSet<&str> = group["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|m| m["value"].as_str())
            .collect();
        assert_eq!(members, user_ids.iter().map(String::as_str).collect());
    }

    // Twelve writers holding the same ETag, spread over the three replicas: one wins,
    // the others get 412, never a silent overwrite.
    let user_path = format!("/Users/{}", user_ids[0]);
    let (_, user) = scim(
        &http,
        &bases[0],
        &token,
        reqwest::Method::GET,
        &user_path,
        None,
    )
    .await;
    let etag = user["meta"]["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let races = join_all((0..12).map(|i| {
        let (http, base, token, path, etag) = (&http, &bases[i % 3], &token, &user_path, &etag);
        async move {
            let ops =
                json!([{"op": "replace", "path": "displayName", "value": format!("Writer {i}")}]);
            let response = http
                .patch(format!("{base}/scim/v2{path}"))
                .bearer_auth(token)
                .header("content-type", common::SCIM_JSON)
                .header("if-match", etag)
                .body(json!({"schemas": [PATCH_OP], "Operations": ops}).to_string())
                .send()
                .await
                .expect("request sent");
            response.status()
        }
    }))
    .await;
    let won = races.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = races
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((won, refused), (1, 11), "{races:?}");

    // Wait for a replica to start a run, and kill it in the middle of that run.
    let before: Vec<usize> = replicas
        .iter()
        .flatten()
        .map(|r| count(&r.log(), STARTED))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let holder = loop {
        let found = (0..3).find(|&i| {
            replicas[i]
                .as_ref()
                .is_some_and(|r| count(&r.log(), STARTED) > before[i])
        });
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "no replica started a sync run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Every IdP call takes 300 ms: a full run makes about six, a delta run (the delta
    // base is kept in the database, so most runs after the first are deltas) at least
    // two, one after the other. 400 ms in, either kind is mid-pull.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // While it holds the lock, no other replica can start a run: count theirs now.
    let others_before: Vec<(usize, usize)> = (0..3)
        .filter_map(|i| replicas[i].as_ref().map(|r| (i, count(&r.log(), STARTED))))
        .collect();
    let mut killed = replicas[holder].take().expect("running");
    killed.child.kill().expect("SIGKILL sent");
    let _ = killed.child.wait();
    let killed_log = killed.log();
    let killed_at = scimsync::store::now();
    let tail = &killed_log[killed_log.rfind(STARTED).expect("its run started")..];
    assert!(
        !tail.contains("IdP sync done"),
        "the replica was killed mid-run:\n{tail}"
    );

    // The IdP changes after the kill, so only a run that started afterwards can know.
    mock.add_member("g-admins", "u-eve");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = store.sync_state("entra").await.expect("sync_state");
        let resumed = state
            .as_ref()
            .and_then(|s| s.last_success)
            .is_some_and(|t| t > killed_at);
        let roster = memberships(&store).await;
        if resumed && roster.contains(&("LLM Admins".to_owned(), "eve@contoso.com".to_owned())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sync did not resume on another replica: {state:?}\n{}",
            logs(&replicas, &killed_log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over: Vec<usize> = others_before
        .iter()
        .filter(|(i, n)| {
            replicas[*i]
                .as_ref()
                .is_some_and(|r| count(&r.log(), STARTED) > *n)
        })
        .map(|(i, _)| *i)
        .collect();
    eprintln!(
        "replica {holder} was killed mid-run; {:?} after the start the sync had resumed on {took_over:?}",
        began.elapsed()
    );
    assert!(
        !took_over.is_empty(),
        "a surviving replica ran the sync after the kill:\n{}",
        logs(&replicas, &killed_log)
    );
    // While one replica ran the sync, the others skipped their ticks.
    assert!(
        replicas
            .iter()
            .flatten()
            .chain(std::iter::once(&killed))
            .any(|r| r.log().contains(SKIPPED)),
        "replicas skipped ticks while another held the sync lock"
    );

    // The final state, exactly: the SCIM team with its 15 members, and the IdP's two
    // groups as the IdP now has them (dave is disabled, the printer is not a user).
    let mut expected: BTreeSet<(String, String)> = (0..15)
        .map(|i| {
            (
                "Replicated Team v2".to_owned(),
                format!("replica{}-user{i}@example.com", i % 3),
            )
        })
        .collect();
    for (team, user) in [
        ("LLM Admins", "alice@contoso.com"),
        ("LLM Admins", "eve@contoso.com"),
        ("LLM Users", "alice@contoso.com"),
        ("LLM Users", "bob@contoso.com"),
        ("LLM Users", "carol@contoso.com"),
        ("LLM Users", "dave@contoso.com"),
    ] {
        expected.insert((team.to_owned(), user.to_owned()));
    }
    assert_eq!(memberships(&store).await, expected);
    let teams: BTreeSet<String> = store
        .all_teams()
        .await
        .expect("teams")
        .iter()
        .map(|t| t.display_name.as_str().to_owned())
        .collect();
    assert_eq!(
        teams,
        ["LLM Admins", "LLM Users", "Replicated Team v2"]
            .map(str::to_owned)
            .into()
    );
    // No session is left waiting on an advisory lock (the killed replica's went with it).
    let waiting: i64 = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
    )
    .fetch_one(&sqlx::AnyPool::connect(&database_url).await.expect("pool"))
    .await
    .expect("pg_locks");
    assert_eq!(waiting, 0, "nobody is stuck waiting on a lock");
    store.close().await;
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "took {:?}",
        began.elapsed()
    );
}
