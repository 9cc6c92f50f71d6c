//! LiteLLM as a downstream target: the real daemon with a `[[target]]` pointing at the
//! fake LiteLLM (tests/it/litellm_fake.rs), driven over SCIM like an IdP would.

use crate::common::daemon::{run, scimsync, stderr, stdout, write};
use crate::common::TestApp;
use crate::litellm_fake::{FakeLiteLlm, MASTER_KEY};
use reqwest::{Method, StatusCode};
use scimsync::config::{TargetConfig, TargetKind};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn spawn(
    fake: &FakeLiteLlm,
    configure: impl FnOnce(&mut scimsync::config::Config),
) -> TestApp {
    let url = fake.url.clone();
    TestApp::spawn_with(move |config| {
        let mut target = TargetConfig::new("litellm", TargetKind::Litellm, &url);
        target.master_key = Some(MASTER_KEY.into());
        target.max_retries = Some(0);
        config.target.push(target);
        configure(config);
    })
    .await
}

/// Waits until `check` holds (the worker delivers asynchronously).
async fn eventually(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Waits until the outbox of "litellm" is empty (everything delivered).
async fn drained(app: &TestApp) {
    let deadline = Instant::now() + WAIT;
    while waiting(app, "litellm").await > 0 {
        assert!(Instant::now() < deadline, "the outbox empties");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until /metrics shows every one of `lines`; returns the text.
async fn metrics_showing(app: &TestApp, lines: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if lines.iter().all(|l| text.contains(l)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {lines:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Outbox rows of `target` still to be delivered.
async fn waiting(app: &TestApp, target: &str) -> i64 {
    app.store.outbox_depth(target).await.unwrap().0
}

async fn create_user(app: &TestApp, user_name: &str) -> String {
    let (status, body) = app
        .scim_json(
            Method::POST,
            "/Users",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": user_name,
                "externalId": format!("ext-{user_name}"),
                "displayName": user_name.split('@').next(),
                "emails": [{"value": user_name, "primary": true}],
                "active": true,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn create_group(app: &TestApp, name: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let (status, body) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": name,
                "members": members,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn patch(app: &TestApp, path: &str, operations: Value) {
    let (status, body) = app
        .scim_json(
            Method::PATCH,
            path,
            Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
}

fn roster(team: &Value) -> Vec<String> {
    let mut ids: Vec<String> = team["members_with_roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["user_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn member_of(fake: &FakeLiteLlm, team: &str, user: &str) -> bool {
    fake.team(team)
        .is_some_and(|t| roster(&t).iter().any(|m| m == user))
}

#[tokio::test]
async fn scim_users_and_groups_are_mirrored_into_litellm() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |config| {
        config
            .teams
            .defaults
            .insert("models".into(), json!(["gpt-4o-mini"]));
        config
            .teams
            .defaults
            .insert("max_budget".into(), json!(25.0));
    })
    .await;
    let alice = create_user(&app, "alice@example.com").await;
    let bob = create_user(&app, "bob@example.com").await;
    let team = create_group(&app, "LLM Evals", &[&alice, &bob]).await;

    eventually("users, team and members in LiteLLM", WAIT, || {
        member_of(&fake, &team, "alice@example.com") && member_of(&fake, &team, "bob@example.com")
    })
    .await;
    let user = fake.user("alice@example.com").unwrap();
    assert_eq!(user["user_email"], "alice@example.com");
    assert_eq!(user["sso_user_id"], "ext-alice@example.com");
    assert_eq!(user["user_role"], "internal_user_viewer");
    assert_eq!(user["metadata"]["scim_active"], true);
    assert_eq!(user["metadata"]["scimsync"]["id"], alice.as_str());
    let litellm_team = fake.team(&team).unwrap();
    assert_eq!(litellm_team["team_alias"], "LLM Evals");
    assert_eq!(litellm_team["models"], json!(["gpt-4o-mini"]));
    assert_eq!(litellm_team["max_budget"], json!(25.0));
    assert_eq!(fake.key_count(), 0, "scimsync never has LiteLLM mint keys");

    // A rename updates the alias; a member removal and a group rename follow.
    patch(
        &app,
        &format!("/Users/{alice}"),
        json!([{"op": "replace", "path": "displayName", "value": "Alice Ng"}]),
    )
    .await;
    patch(
        &app,
        &format!("/Groups/{team}"),
        json!([
            {"op": "remove", "path": format!("members[value eq \"{bob}\"]")},
            {"op": "replace", "path": "displayName", "value": "LLM Evals Prod"},
        ]),
    )
    .await;
    eventually("alias, roster and team name follow", WAIT, || {
        fake.user("alice@example.com")
            .is_some_and(|u| u["user_alias"] == "Alice Ng")
            && !member_of(&fake, &team, "bob@example.com")
            && fake
                .team(&team)
                .is_some_and(|t| t["team_alias"] == "LLM Evals Prod")
    })
    .await;

    // Deleting the group deletes the team; deleting a user deletes theirs.
    let (status, _) = app
        .scim_json(Method::DELETE, &format!("/Groups/{team}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .scim_json(Method::DELETE, &format!("/Users/{bob}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    eventually("team and user deleted", WAIT, || {
        fake.team(&team).is_none() && fake.user("bob@example.com").is_none()
    })
    .await;
    assert!(fake.user("alice@example.com").is_some());
}

#[tokio::test]
async fn litellm_keys_stop_working_on_deactivation_and_work_again_on_reactivation() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |_| {}).await;
    let carol = create_user(&app, "carol@example.com").await;
    eventually("user created", WAIT, || {
        fake.user("carol@example.com").is_some()
    })
    .await;
    // An operator set metadata of their own in LiteLLM: it must survive our updates.
    fake.edit_user("carol@example.com", |u| {
        u["metadata"]["cost_center"] = json!("R&D-42");
    });
    let key = fake.generate_key("carol@example.com", None);
    assert!(fake.key_works(&key));

    patch(
        &app,
        &format!("/Users/{carol}"),
        json!([{"op": "replace", "path": "active", "value": false}]),
    )
    .await;
    eventually("key refused", WAIT, || !fake.key_works(&key)).await;
    let user = fake.user("carol@example.com").unwrap();
    assert_eq!(user["metadata"]["scim_active"], false);
    assert_eq!(
        user["metadata"]["cost_center"], "R&D-42",
        "metadata is read, merged, written"
    );

    patch(
        &app,
        &format!("/Users/{carol}"),
        json!([{"op": "replace", "path": "active", "value": true}]),
    )
    .await;
    eventually("key accepted again", WAIT, || fake.key_works(&key)).await;
    assert_eq!(
        fake.user("carol@example.com").unwrap()["metadata"]["cost_center"],
        "R&D-42"
    );
}

#[tokio::test]
async fn an_outage_during_changes_converges_afterwards_with_nothing_lost() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |_| {}).await;
    fake.set_failing(true);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create_user(&app, &format!("user{i}@example.com")).await);
    }
    let team = create_group(
        &app,
        "Outage",
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fake.users().is_empty(), "nothing gets through an outage");
    let depth = waiting(&app, "litellm").await;
    assert!(depth >= 6, "the changes wait in the outbox: {depth}");

    // Back, but slow.
    fake.set_failing(false);
    fake.set_latency(50);
    eventually("everything delivered", Duration::from_secs(30), || {
        (0..5).all(|i| member_of(&fake, &team, &format!("user{i}@example.com")))
    })
    .await;
    drained(&app).await;
}

#[tokio::test]
async fn a_litellm_user_with_the_same_email_is_adopted_and_deprovisioned_like_one_scimsync_made() {
    let fake = FakeLiteLlm::start().await;
    fake.insert_user(json!({"user_id": "dave-legacy", "user_email": "DAVE@example.com", "user_role": "proxy_admin", "metadata": {"note": "made by hand"}}));
    let app = spawn(&fake, |_| {}).await;
    let dave = create_user(&app, "dave@example.com").await;
    let team = create_group(&app, "Adopters", &[&dave]).await;

    eventually("dave adopted and added", WAIT, || {
        member_of(&fake, &team, "dave-legacy")
    })
    .await;
    assert!(fake.user("dave@example.com").is_none(), "no duplicate user");
    let legacy = fake.user("dave-legacy").unwrap();
    assert_eq!(legacy["metadata"]["scimsync"]["id"], dave.as_str());
    assert_eq!(legacy["metadata"]["scimsync"]["adopted"], true);
    assert_eq!(legacy["metadata"]["scim_active"], true);
    assert_eq!(
        legacy["metadata"]["note"], "made by hand",
        "metadata is read, merged, written"
    );
    assert_eq!(
        legacy["user_role"], "internal_user_viewer",
        "managed from now on"
    );
    let key = fake.generate_key("dave-legacy", None);
    let team_key = fake.generate_key("dave-legacy", Some(&team));
    assert!(fake.key_works(&key) && fake.key_works(&team_key));

    // Deprovisioning in the IdP reaches the adopted user's keys.
    patch(
        &app,
        &format!("/Users/{dave}"),
        json!([{"op": "replace", "path": "active", "value": false}]),
    )
    .await;
    eventually("the adopted user's keys refused", WAIT, || {
        !fake.key_works(&key)
    })
    .await;
    let legacy = fake.user("dave-legacy").unwrap();
    assert_eq!(legacy["metadata"]["scim_active"], false);
    assert_eq!(legacy["metadata"]["note"], "made by hand");
    assert_eq!(legacy["metadata"]["scimsync"]["adopted"], true);

    patch(
        &app,
        &format!("/Groups/{team}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{dave}\"]")}]),
    )
    .await;
    eventually("removed from the team", WAIT, || {
        !member_of(&fake, &team, "dave-legacy")
    })
    .await;

    let (status, _) = app
        .scim_json(Method::DELETE, &format!("/Users/{dave}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    eventually("the adopted user deleted", WAIT, || {
        fake.user("dave-legacy").is_none()
    })
    .await;
    assert!(!fake.key_works(&key) && !fake.key_works(&team_key));
}

#[tokio::test]
async fn litellm_users_and_teams_nobody_in_scimsync_matches_are_never_touched() {
    let fake = FakeLiteLlm::start().await;
    fake.insert_user(json!({"user_id": "erin", "user_email": "erin@example.com", "user_role": "proxy_admin", "metadata": {"note": "hand made"}}));
    fake.insert_team(json!({"team_id": "legacy-team", "team_alias": "Legacy", "members_with_roles": [{"user_id": "erin", "role": "user"}], "metadata": {"owner": "ops"}}));
    let erin_before = fake.user("erin").unwrap();
    let team_before = fake.team("legacy-team").unwrap();
    let app = spawn(&fake, |_| {}).await;
    let frank = create_user(&app, "frank@example.com").await;
    create_group(&app, "Newcomers", &[&frank]).await;
    eventually("frank mirrored", WAIT, || {
        fake.user("frank@example.com").is_some()
    })
    .await;
    let config = cli_config(&app, &fake, "");
    let out = cli(&app, &config, &["plan", "--target", "litellm"]).await;
    assert!(!stdout(&out).contains("erin"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("Legacy"), "{}", stdout(&out));
    let out = cli(
        &app,
        &config,
        &["apply", "--target", "litellm", "--allow-deletions"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fake.user("erin").unwrap(), erin_before);
    assert_eq!(fake.team("legacy-team").unwrap(), team_before);
}

#[tokio::test]
async fn a_litellm_team_with_the_same_alias_is_not_adopted_and_the_plan_says_so() {
    let fake = FakeLiteLlm::start().await;
    fake.insert_user(json!({"user_id": "gina", "user_email": "gina@example.com"}));
    fake.insert_team(json!({"team_id": "hand-made-evals", "team_alias": "Evals", "members_with_roles": [{"user_id": "gina", "role": "user"}], "max_budget": 500.0}));
    let team_before = fake.team("hand-made-evals").unwrap();
    // No target in the daemon: the CLI's plan and apply do it all.
    let app = TestApp::spawn().await;
    let harry = create_user(&app, "harry@example.com").await;
    let evals = create_group(&app, "Evals", &[&harry]).await;
    let config = cli_config(&app, &fake, "");
    let out = cli(&app, &config, &["plan", "--target", "litellm"]).await;
    let text = stdout(&out);
    assert!(text.contains("+ team Evals"), "{text}");
    assert!(
        text.contains("LiteLLM already has a team with this alias that is not scimsync's (\"hand-made-evals\")"),
        "{text}"
    );
    let out = cli(
        &app,
        &config,
        &["plan", "--target", "litellm", "--format", "json"],
    )
    .await;
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let create = plan["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["action"] == "create_team")
        .unwrap()
        .clone();
    assert_eq!(create["alias_taken_by"], json!(["hand-made-evals"]));

    let out = cli(&app, &config, &["apply", "--target", "litellm"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(member_of(&fake, &evals, "harry@example.com"));
    assert_eq!(fake.team(&evals).unwrap()["team_alias"], "Evals");
    assert_eq!(fake.team("hand-made-evals").unwrap(), team_before);
}

/// A config file for the CLI that points at the test app's database and the fake.
fn cli_config(app: &TestApp, fake: &FakeLiteLlm, extra: &str) -> std::path::PathBuf {
    write(
        app.dir.path(),
        "cli.toml",
        &format!(
            "[database]\nurl = {:?}\n{extra}\n[[target]]\nname = \"litellm\"\nkind = \"litellm\"\nurl = {:?}\nmaster_key_env = \"LITELLM_MASTER_KEY\"\n",
            app.config.database.url, fake.url
        ),
    )
}

/// Runs the CLI off the test's runtime thread, which must keep serving the fake.
async fn cli(app: &TestApp, config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = scimsync(app.dir.path());
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("LITELLM_MASTER_KEY", MASTER_KEY);
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

#[tokio::test]
async fn drift_is_shown_by_plan_target_and_repaired_by_apply_target_and_a_second_apply_writes_nothing(
) {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |_| {}).await;
    let frank = create_user(&app, "frank@example.com").await;
    let team = create_group(&app, "Drifters", &[&frank]).await;
    eventually("mirrored", WAIT, || {
        member_of(&fake, &team, "frank@example.com")
    })
    .await;
    // Everything delivered before the hand edits: a late delivery of the team would
    // undo the rename between the two plans below, and they would disagree.
    drained(&app).await;

    // Someone renames the team and adds a stray member in LiteLLM's UI.
    fake.insert_user(json!({"user_id": "mallory", "user_email": "mallory@example.com"}));
    fake.edit_team(&team, |t| {
        t["team_alias"] = json!("Renamed by hand");
        t["members_with_roles"]
            .as_array_mut()
            .unwrap()
            .push(json!({"user_id": "mallory", "role": "user"}));
    });
    let config = cli_config(&app, &fake, "");

    let out = cli(
        &app,
        &config,
        &["plan", "--target", "litellm", "--detailed-exitcode"],
    )
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}{}", stderr(&out));
    assert!(text.contains("~ team Drifters"), "{text}");
    assert!(
        text.contains("team_alias: \"Renamed by hand\" → \"Drifters\""),
        "{text}"
    );
    assert!(
        text.contains("- member \"mallory\" of team Drifters"),
        "{text}"
    );
    assert!(!text.contains(MASTER_KEY));

    let out = cli(
        &app,
        &config,
        &["plan", "--target", "litellm", "--format", "json"],
    )
    .await;
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["counts"], json!({"add": 0, "change": 1, "destroy": 1}));

    let out = cli(&app, &config, &["apply", "--target", "litellm"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let repaired = fake.team(&team).unwrap();
    assert_eq!(repaired["team_alias"], "Drifters");
    assert_eq!(roster(&repaired), vec!["frank@example.com"]);
    assert!(
        fake.user("mallory").is_some(),
        "the stray member's own user is not ours to delete"
    );

    let writes = fake.writes();
    let out = cli(&app, &config, &["apply", "--target", "litellm"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("No changes"), "{}", stdout(&out));
    assert_eq!(fake.writes(), writes, "a second apply makes no write call");
    let out = cli(
        &app,
        &config,
        &["plan", "--target", "litellm", "--detailed-exitcode"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn the_deletion_guard_refuses_a_mass_deletion_in_litellm() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |_| {}).await;
    // Users scimsync made for ids this store does not have (a restored old backup, a
    // wrong database URL): the repair would delete them all.
    for i in 0..5 {
        fake.insert_user(json!({
            "user_id": format!("ghost{i}"),
            "user_email": format!("ghost{i}@example.com"),
            "metadata": {"scimsync": {"id": uuid::Uuid::new_v4().to_string(), "source": "scim:default"}, "scim_active": true},
        }));
    }
    let config = cli_config(&app, &fake, "[safety]\nmax_deletions = 2\n");
    let out = cli(&app, &config, &["plan", "--target", "litellm"]).await;
    assert!(
        stdout(&out).contains("Refused by the deletion guard"),
        "{}",
        stdout(&out)
    );
    let writes = fake.writes();
    let out = cli(&app, &config, &["apply", "--target", "litellm"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("--allow-deletions"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fake.writes(), writes);
    assert_eq!(fake.users().len(), 5);

    let out = cli(
        &app,
        &config,
        &["apply", "--target", "litellm", "--allow-deletions"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(fake.users().is_empty());
}

/// Against a real LiteLLM proxy: set SCIMSYNC_TEST_LITELLM_URL and
/// SCIMSYNC_TEST_LITELLM_MASTER_KEY, then `cargo test --test it litellm_live -- --ignored`.
/// It creates a user and a team named `scimsync-live-*` and deletes them again.
#[tokio::test]
#[ignore = "needs a LiteLLM proxy: SCIMSYNC_TEST_LITELLM_URL and SCIMSYNC_TEST_LITELLM_MASTER_KEY"]
async fn litellm_live_mirror_against_a_real_proxy() {
    let (Ok(url), Ok(key)) = (
        std::env::var("SCIMSYNC_TEST_LITELLM_URL"),
        std::env::var("SCIMSYNC_TEST_LITELLM_MASTER_KEY"),
    ) else {
        eprintln!(
            "SCIMSYNC_TEST_LITELLM_URL and SCIMSYNC_TEST_LITELLM_MASTER_KEY are not set; skipped"
        );
        return;
    };
    let app = TestApp::spawn_with(|config| {
        let mut target = TargetConfig::new("litellm", TargetKind::Litellm, &url);
        target.master_key = Some(key.clone());
        config.target.push(target);
    })
    .await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("scimsync-live-{}@example.com", &suffix[..8]);
    let user = create_user(&app, &name).await;
    let team = create_group(&app, &format!("scimsync-live-{}", &suffix[..8]), &[&user]).await;
    let http = reqwest::Client::new();
    let info = |path: String| {
        let http = http.clone();
        let key = key.clone();
        async move {
            http.get(path)
                .bearer_auth(key)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let team_info = info(format!("{url}/team/info?team_id={team}")).await;
        if let Some(response) = team_info {
            let body: Value = response.json().await.unwrap();
            if body["team_info"]["members_with_roles"]
                .to_string()
                .contains(&name)
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "LiteLLM did not show the team with its member"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.scim_json(Method::DELETE, &format!("/Groups/{team}"), None)
        .await;
    app.scim_json(Method::DELETE, &format!("/Users/{user}"), None)
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting(&app, "litellm").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the deletions were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_the_commit_and_the_delivery_loses_nothing() {
    use crate::common::daemon::{serve, Daemon};
    let fake = FakeLiteLlm::start().await;
    fake.set_failing(true);
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &format!(
            "[database]\nurl = \"sqlite://{}\"\n[[target]]\nname = \"litellm\"\nkind = \"litellm\"\nurl = {:?}\nmaster_key_env = \"LITELLM_MASTER_KEY\"\nmax_retries = 0\n",
            dir.path().join("scimsync.db").display(),
            fake.url
        ),
    );
    let start = || {
        let mut cmd = serve(dir.path());
        cmd.arg("--config")
            .arg(&config)
            .env("LITELLM_MASTER_KEY", MASTER_KEY);
        Daemon::start(cmd)
    };
    let mut daemon = start();
    let token = std::fs::read_to_string(dir.path().join("initial-scim-token")).unwrap();
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let response = http
            .post(daemon.url("/scim/v2/Users"))
            .bearer_auth(token.trim())
            .header("content-type", "application/scim+json")
            .body(json!({"userName": format!("crash{i}@example.com"), "emails": [{"value": format!("crash{i}@example.com")}]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    let response = http
        .post(daemon.url("/scim/v2/Groups"))
        .bearer_auth(token.trim())
        .header("content-type", "application/scim+json")
        .body(json!({"displayName": "Survivors", "members": members}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let team = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Committed and answered, not delivered (LiteLLM is down): kill -9.
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    assert!(fake.users().is_empty());

    fake.set_failing(false);
    let _daemon = start();
    eventually(
        "everything delivered after the restart",
        Duration::from_secs(30),
        || (0..3).all(|i| member_of(&fake, &team, &format!("crash{i}@example.com"))),
    )
    .await;
}

#[tokio::test]
async fn without_a_target_nothing_is_written_to_the_outbox() {
    let app = TestApp::spawn().await;
    create_user(&app, "nobody@example.com").await;
    assert_eq!(waiting(&app, "litellm").await, 0);
}

#[tokio::test]
async fn metrics_show_the_outbox_and_failures_by_cause() {
    let fake = FakeLiteLlm::start().await;
    // Its own target name: the recorder is shared by every test in this binary.
    let url = fake.url.clone();
    let app = TestApp::spawn_with(move |config| {
        let mut target = TargetConfig::new("metered", TargetKind::Litellm, &url);
        target.master_key = Some(MASTER_KEY.into());
        target.max_retries = Some(0);
        config.target.push(target);
    })
    .await;
    fake.set_failing(true);
    create_user(&app, "metrics@example.com").await;
    let text = metrics_showing(
        &app,
        &[
            "scimsync_target_failures_total{target=\"metered\",cause=\"server_error\"}",
            "scimsync_target_outbox_depth{target=\"metered\"} 1",
        ],
    )
    .await;
    assert!(text.contains("# HELP scimsync_target_outbox_lag_seconds"));
    assert!(text.contains("# HELP scimsync_target_outbox_dead"));
    assert!(!text.contains(MASTER_KEY));
}

/// Users `prefix{i}@example.com` for i in 0..n, applied in one plan as an operator.
async fn seed_users(app: &TestApp, prefix: &str, n: usize) {
    use scimsync::reconcile::snapshot::Snapshot;
    let users: Vec<Value> = (0..n)
        .map(|i| {
            let name = format!("{prefix}{i:05}@example.com");
            json!({"external_id": format!("{prefix}-{i}"), "user_name": name, "email": name, "active": true})
        })
        .collect();
    let snapshot = json!({"idp": "seed", "complete": false, "users": users, "groups": []});
    let desired = Snapshot::parse(&snapshot.to_string())
        .expect("valid snapshot")
        .into_desired();
    // The configured policy: its targets are what gets an outbox row.
    let policy = scimsync::reconcile::Policy::from_config(&app.config, scimsync::store::now());
    app.engine()
        .apply(scimsync::reconcile::Request::new(
            &desired,
            &policy,
            &crate::common::operator(),
        ))
        .await
        .expect("applied");
}

#[tokio::test]
async fn changes_that_keep_failing_cannot_starve_a_newer_change() {
    let fake = FakeLiteLlm::start().await;
    // More failing changes than one round of the worker reads (2,000).
    fake.fail_users_starting_with("bad");
    let app = spawn(&fake, |_| {}).await;
    seed_users(&app, "bad", 2_100).await;
    // Committed after them: the old worker read the oldest 2,000 rows, all failing,
    // again and again, and never reached this one.
    let started = Instant::now();
    create_user(&app, "good@example.com").await;
    eventually(
        "the newer change delivered",
        Duration::from_secs(120),
        || fake.user("good@example.com").is_some(),
    )
    .await;
    assert!(
        fake.calls("/user/new") > 2_000,
        "a round of failing changes went first"
    );
    assert!(
        fake.users()
            .iter()
            .all(|u| !u["user_id"].as_str().unwrap_or_default().starts_with("bad")),
        "the failing users are still failing"
    );
    eprintln!(
        "delivered {:?} after the commit behind 2,100 failing changes",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dead_letter_is_counted_shown_by_the_plan_and_cleared_by_a_clean_repair() {
    let fake = FakeLiteLlm::start().await;
    fake.set_failing(true);
    let app = spawn(&fake, |_| {}).await;
    create_user(&app, "ivy@example.com").await;
    // Refused over and over until given up: what the worker does after 12
    // refusals, written as it writes it.
    let far = chrono::Utc::now() + chrono::Duration::days(1);
    let rows = app.store.outbox_due("litellm", far, 10, 10).await.unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 1, "{rows:?}");
    app.store
        .outbox_failed(&ids, chrono::Utc::now(), true, "refused (HTTP 400)")
        .await
        .unwrap();
    assert_eq!(waiting(&app, "litellm").await, 0);
    assert_eq!(app.store.outbox_dead("litellm").await.unwrap(), 1);
    assert!(
        app.store
            .outbox_due("litellm", far, 10, 10)
            .await
            .unwrap()
            .is_empty(),
        "a dead letter is not tried again"
    );
    metrics_showing(&app, &["scimsync_target_outbox_dead{target=\"litellm\"} 1"]).await;

    fake.set_failing(false);
    let config = cli_config(&app, &fake, "");
    let out = cli(&app, &config, &["plan", "--target", "litellm"]).await;
    assert!(
        stdout(&out).contains("1 outbox change(s) were refused"),
        "{}",
        stdout(&out)
    );
    let out = cli(&app, &config, &["apply", "--target", "litellm"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fake.user("ivy@example.com").is_some());
    assert_eq!(waiting(&app, "litellm").await, 0);
    assert_eq!(app.store.outbox_dead("litellm").await.unwrap(), 0);
}

#[tokio::test]
async fn the_members_of_a_team_are_added_in_one_call() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |_| {}).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create_user(&app, &format!("batch{i}@example.com")).await);
    }
    eventually("users mirrored", WAIT, || fake.users().len() == 5).await;
    let team = create_group(
        &app,
        "Batched",
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    eventually("members added", WAIT, || {
        (0..5).all(|i| member_of(&fake, &team, &format!("batch{i}@example.com")))
    })
    .await;
    assert_eq!(fake.calls("/team/member_add"), 1);
}

#[tokio::test]
async fn a_member_already_in_the_team_does_not_keep_the_others_out() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |_| {}).await;
    let jo = create_user(&app, "jo@example.com").await;
    let kim = create_user(&app, "kim@example.com").await;
    eventually("users mirrored", WAIT, || fake.users().len() == 2).await;
    let team = create_group(&app, "Overlap", &[]).await;
    eventually("team mirrored", WAIT, || fake.team(&team).is_some()).await;
    // Someone added jo by hand already: LiteLLM refuses the whole list for her.
    fake.edit_team(&team, |t| {
        t["members_with_roles"]
            .as_array_mut()
            .unwrap()
            .push(json!({"user_id": "jo@example.com", "role": "user"}));
    });
    patch(
        &app,
        &format!("/Groups/{team}"),
        json!([{"op": "add", "path": "members", "value": [{"value": jo}, {"value": kim}]}]),
    )
    .await;
    eventually("both members", WAIT, || {
        member_of(&fake, &team, "jo@example.com") && member_of(&fake, &team, "kim@example.com")
    })
    .await;
    drained(&app).await;
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_after_it_names() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |config| config.target[0].max_retries = Some(2)).await;
    // The drift repair at start lists users, then teams: the limit is for what follows.
    eventually("the start repair listed the teams", WAIT, || {
        fake.calls("/v2/team/list") > 0
    })
    .await;
    fake.rate_limit_next(1);
    let started = Instant::now();
    create_user(&app, "lee@example.com").await;
    eventually("delivered despite the 429", WAIT, || {
        fake.user("lee@example.com").is_some()
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(app.store.outbox_dead("litellm").await.unwrap(), 0);
}

#[tokio::test]
async fn a_user_whose_display_name_is_removed_converges_without_endless_writes() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake, |_| {}).await;
    let mia = create_user(&app, "mia@example.com").await;
    eventually("mirrored", WAIT, || fake.user("mia@example.com").is_some()).await;
    patch(
        &app,
        &format!("/Users/{mia}"),
        json!([{"op": "remove", "path": "displayName"}]),
    )
    .await;
    drained(&app).await;
    // LiteLLM ignores a null alias on /user/update: the plan must not keep asking.
    let config = cli_config(&app, &fake, "");
    let out = cli(
        &app,
        &config,
        &["plan", "--target", "litellm", "--detailed-exitcode"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_starts_the_worker_of_an_added_target_and_stops_a_removed_one() {
    use crate::common::daemon::{serve, Daemon};
    let fake = FakeLiteLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[log]\nlevel = \"info,scimsync::http=warn\"\n[database]\nurl = \"sqlite://{}\"\n",
        dir.path().join("scimsync.db").display()
    );
    let target = format!(
        "[[target]]\nname = \"litellm\"\nkind = \"litellm\"\nurl = {:?}\nmaster_key_env = \"LITELLM_MASTER_KEY\"\nmax_retries = 0\n",
        fake.url
    );
    let config = write(dir.path(), "config.toml", &base);
    let mut cmd = serve(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .env("LITELLM_MASTER_KEY", MASTER_KEY);
    let daemon = Daemon::start(cmd);
    let token = std::fs::read_to_string(dir.path().join("initial-scim-token")).unwrap();
    let http = reqwest::Client::new();
    let create = |name: &str| {
        let request = http
            .post(daemon.url("/scim/v2/Users"))
            .bearer_auth(token.trim())
            .header("content-type", "application/scim+json")
            .body(json!({"userName": name, "emails": [{"value": name}]}).to_string());
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }
    };
    create("before@example.com").await;

    write(dir.path(), "config.toml", &format!("{base}{target}"));
    hangup(&daemon);
    eventually("targets restarted", WAIT, || {
        daemon.log().contains("targets restarted")
    })
    .await;
    // The drift repair at the new target's start brings what was there before.
    eventually("the earlier user mirrored", WAIT, || {
        fake.user("before@example.com").is_some()
    })
    .await;
    create("during@example.com").await;
    eventually("a new change delivered", WAIT, || {
        fake.user("during@example.com").is_some()
    })
    .await;

    write(dir.path(), "config.toml", &base);
    hangup(&daemon);
    eventually("target removed", WAIT, || {
        daemon.log().contains("target removed")
    })
    .await;
    create("after@example.com").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        fake.user("after@example.com").is_none(),
        "no worker any more"
    );
}

fn hangup(daemon: &crate::common::daemon::Daemon) {
    std::process::Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
}

#[tokio::test]
async fn a_user_linked_before_adoption_stamped_users_is_adopted_by_the_next_repair() {
    use scimsync::store::targets::TargetLink;
    let fake = FakeLiteLlm::start().await;
    fake.insert_user(json!({"user_id": "nina-legacy", "user_email": "nina@example.com", "user_role": "proxy_admin", "metadata": {"note": "kept"}}));
    // A store written by an earlier version: linked, managed=false, never stamped.
    let app = TestApp::spawn().await;
    let nina = create_user(&app, "nina@example.com").await;
    app.store
        .set_target_link(
            "litellm",
            &TargetLink {
                kind: "user".into(),
                local_id: nina.clone(),
                remote_id: "nina-legacy".into(),
                managed: false,
            },
        )
        .await
        .unwrap();
    let config = cli_config(&app, &fake, "");
    let out = cli(&app, &config, &["plan", "--target", "litellm"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("~ user nina@example.com: adopt existing LiteLLM user \"nina-legacy\" (same email; managed by scimsync from now on)"),
        "{text}"
    );
    assert!(
        text.contains("user_role: \"proxy_admin\" → \"internal_user_viewer\""),
        "the plan shows what adoption changes: {text}"
    );
    let out = cli(&app, &config, &["apply", "--target", "litellm"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stamped = fake.user("nina-legacy").unwrap();
    assert_eq!(stamped["metadata"]["scimsync"]["id"], nina.as_str());
    assert_eq!(stamped["metadata"]["scimsync"]["adopted"], true);
    assert_eq!(stamped["metadata"]["note"], "kept");
    let link = app
        .store
        .target_link("litellm", "user", &nina)
        .await
        .unwrap()
        .unwrap();
    assert!(link.managed);
    let writes = fake.writes();
    let out = cli(&app, &config, &["apply", "--target", "litellm"]).await;
    assert!(stdout(&out).contains("No changes"), "{}", stdout(&out));
    assert_eq!(fake.writes(), writes);
}
