//! Scheduled and on-demand IdP syncs against the real store: what gets applied, what a
//! failed or partial pull may not do, and what sync_state records.

use crate::common;
use crate::idp_mocks;

use common::{teams_of, TestApp};
use idp_mocks::graph::GraphMock;
use scimsync::domain::Trigger;
use scimsync::reconcile::Actor;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_scheduled_sync_applies_the_idps_groups_and_records_the_run() {
    let mock = GraphMock::start().await;
    let mut idp = mock.config("entra", &["LLM *"]);
    idp.schedule = Some("* * * * * *".into());
    let app = TestApp::spawn_with(move |c| c.idp.push(idp)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = loop {
        if let Some(state) = app.store.sync_state("entra").await.unwrap() {
            if state.last_success.is_some() {
                break state;
            }
        }
        assert!(Instant::now() < deadline, "a scheduled run happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state.consecutive_failures, 0);
    let result = state.last_result.expect("the run is described");
    assert_eq!(result["outcome"], "success");
    assert_eq!(result["groups"], 2);
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
    assert_eq!(teams_of(&app.store, "bob@contoso.com").await, ["LLM Users"]);
    let teams = app.store.all_teams().await.unwrap();
    assert!(teams.iter().all(|t| t.source.to_string() == "sync:entra"));
}

#[tokio::test]
async fn a_failed_or_partial_pull_produces_no_deletions_and_a_complete_one_catches_up() {
    let mock = GraphMock::start().await;
    let mut idp = mock.config("entra", &["LLM *"]);
    idp.max_retries = Some(0);
    let app = TestApp::spawn_with(|_| {}).await;
    let mut config = app.config.clone();
    config.idp.push(idp);
    let actor = Actor::new(Trigger::Sync, "test");
    let sync = || scimsync::sync::sync_now(&app.store, &config, "entra", &actor);

    let report = sync().await.unwrap();
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );

    // Alice leaves LLM Admins, but LLM Users cannot be read: the pull is partial.
    mock.remove_member("g-admins", "u-alice");
    *mock.faults.failing_path.lock().unwrap() = Some("g-users/transitiveMembers".into());
    let report = sync().await.unwrap();
    assert_eq!(report.outcome, "partial", "{report:?}");
    assert_eq!(report.destroy, 0);
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
    assert_eq!(teams_of(&app.store, "bob@contoso.com").await, ["LLM Users"]);

    // The IdP is down altogether: nothing is applied.
    mock.faults
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let report = sync().await.unwrap();
    assert_eq!(report.outcome, "failed", "{report:?}");
    assert!(report.error.is_some());
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
    let state = app.store.sync_state("entra").await.unwrap().unwrap();
    assert_eq!(state.consecutive_failures, 2);
    assert!(
        state.last_success.is_some(),
        "the last success is remembered"
    );

    // Back to normal: the complete pull removes what the IdP removed.
    mock.faults
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    *mock.faults.failing_path.lock().unwrap() = None;
    let report = sync().await.unwrap();
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Users"]
    );
    let state = app.store.sync_state("entra").await.unwrap().unwrap();
    assert_eq!(state.consecutive_failures, 0);
}

#[tokio::test]
async fn a_slow_scheduled_run_is_never_overlapped_by_the_next_tick() {
    let mock = GraphMock::start().await;
    // Every API call takes a second, so a run (two delta links, three pages of groups,
    // then members) lasts several ticks of an every-second schedule.
    *mock.faults.delay.lock().unwrap() = Duration::from_secs(1);
    let mut idp = mock.config("entra", &["LLM *"]);
    idp.schedule = Some("* * * * * *".into());
    let app = TestApp::spawn_with(move |c| c.idp.push(idp)).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    // Each scheduled Entra run starts by asking for a "from now on" groups delta link.
    let runs_started = mock
        .faults
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.starts_with("/v1.0/groups/delta?") && p.contains("deltatoken=latest"))
        .count();
    assert_eq!(runs_started, 1, "the ticks during the run were skipped");
    assert!(
        mock.faults.calls_to("/v1.0/groups?") >= 1,
        "the one run is making progress"
    );
    drop(app);
}

/// The `[[idp]]` examples in config.toml.example are commented out; uncommented, they
/// must parse and validate, one per kind.
#[test]
fn every_idp_kind_has_an_example_in_the_example_configuration_that_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[[idp]] examples").expect("an [[idp]] section");
    let examples: String = text[start..]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| !l.starts_with("##"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = scimsync::config::Config::from_toml(&examples, &path)
        .unwrap_or_else(|e| panic!("the examples parse: {e}\n{examples}"));
    config.validate().expect("the examples are valid");
    let kinds: Vec<String> = config
        .idp
        .iter()
        .map(|i| format!("{:?}", i.kind).to_lowercase())
        .collect();
    assert_eq!(
        kinds,
        ["entra", "okta", "google", "keycloak", "onelogin", "auth0"]
    );
    for idp in &config.idp {
        if let Some(schedule) = &idp.schedule {
            assert_eq!(schedule.split_whitespace().count(), 6, "cron with seconds");
        }
    }
}
