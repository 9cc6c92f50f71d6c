//! An IdP that misbehaves: it hangs, stalls mid-answer, sends half a page, an HTML
//! error page with 200, JSON of the wrong shape, next-page links to nowhere, storms of
//! 5xx and 429, or suddenly no groups or no members at all. Whatever it does, a sync
//! gives up within the configured limits, says clearly what was wrong (no secret in
//! it), records the failure in `sync_state`, never deletes or deactivates on such a
//! pull, backs off when it keeps failing, and converges once the IdP is well again.
//!
//! The faults come from a proxy in front of the mock IdPs (`idp_mocks::faults`), so the
//! mocks answer like the real APIs and the proxy breaks the answers like a network or
//! a broken IdP would. Every connection uses a one-second request timeout and short
//! backoffs, so each test takes a few seconds.

use crate::common;
use crate::idp_mocks;

use chrono::{DateTime, Utc};
use common::teams_of;
use common::TestApp;
use idp_mocks::faults::{Fault, FaultyUpstream};
use idp_mocks::graph::GraphMock;
use idp_mocks::kit::paging;
use idp_mocks::{snapshot_json, Faults};
use scimsync::config::{Config, IdpConfig};
use scimsync::domain::Trigger;
use scimsync::idp::{Idp, PullStats};
use scimsync::reconcile::Actor;
use scimsync::store::sync_state::SyncState;
use scimsync::store::Store;
use scimsync::sync::SyncReport;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A generous bound for "it did not hang": a faulty run with a one-second timeout and
/// one retry takes about two seconds; a loaded machine may take several times that.
const DID_NOT_HANG: Duration = Duration::from_secs(30);

/// What the store holds, as sorted lines: every user with their `active` flag, and
/// every membership. Equal before and after means nothing was deleted or deactivated.
async fn fingerprint(store: &Store) -> Vec<String> {
    let users = store.all_users().await.unwrap();
    let teams = store.all_teams().await.unwrap();
    let mut lines: Vec<String> = users
        .iter()
        .map(|u| format!("user {} active={}", u.user_name.as_str(), u.active))
        .collect();
    lines.extend(
        teams
            .iter()
            .map(|t| format!("team {}", t.display_name.as_str())),
    );
    for m in store.all_memberships().await.unwrap() {
        let user = users.iter().find(|u| u.id == m.user_id).unwrap();
        let team = teams.iter().find(|t| t.id == m.team_id).unwrap();
        lines.push(format!(
            "member {} {}",
            team.display_name.as_str(),
            user.user_name.as_str()
        ));
    }
    lines.sort();
    lines
}

/// The retry settings every test uses: one-second timeout, one retry, short backoff.
fn impatient(mut config: IdpConfig) -> IdpConfig {
    config.request_timeout_secs = Some(1);
    config.max_retries = Some(1);
    config.retry_backoff_ms = Some(10);
    config
}

/// An Entra connection through a faulty proxy in front of a mock Graph.
async fn entra(name: &str) -> (GraphMock, FaultyUpstream, IdpConfig) {
    let mock = GraphMock::start().await;
    let proxy = FaultyUpstream::start(&mock.base_url).await;
    let mut config = impatient(mock.config(name, &["LLM *"]));
    proxy.reroute(&mut config);
    (mock, proxy, config)
}

/// Waits for a scheduled run of `idp` that started after `since` to be recorded.
async fn run_started_after(store: &Store, idp: &str, since: DateTime<Utc>) -> SyncState {
    let deadline = Instant::now() + DID_NOT_HANG;
    loop {
        if let Some(state) = store.sync_state(idp).await.unwrap() {
            if state.last_pull.is_some_and(|t| t > since) {
                return state;
            }
        }
        assert!(
            Instant::now() < deadline,
            "a scheduled run of {idp} that started after {since} is recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn last_result(state: &SyncState) -> Value {
    state.last_result.clone().expect("the run is described")
}

/// Asserts that `text` (an error, a log, a sync_state row) contains no credential of
/// the mock IdPs: no client secret, no API token, no access token.
fn assert_no_secret(text: &str) {
    for secret in [
        idp_mocks::graph::CLIENT_SECRET,
        idp_mocks::okta::API_TOKEN,
        idp_mocks::keycloak::CLIENT_SECRET,
        idp_mocks::onelogin::CLIENT_SECRET,
        idp_mocks::auth0::CLIENT_SECRET,
        "mock-access-token-",
        "PRIVATE KEY",
    ] {
        assert!(!text.contains(secret), "{secret:?} leaked into: {text}");
    }
}

/// The log lines of this test binary, captured from the first call on.
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Writer(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Writer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter("scimsync=info")
            .with_ansi(false)
            .with_writer(move || Writer(buffer))
            .try_init();
        buffer
    })
}

fn log_lines_about(idp: &str) -> Vec<String> {
    let logs = captured_logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(&format!("idp={idp}")))
        .map(str::to_owned)
        .collect()
}

/// The value of a gauge for one IdP in the app's Prometheus exposition.
async fn gauge(app: &TestApp, name: &str, idp: &str) -> Option<f64> {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{idp=\"{idp}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until a gauge for one IdP shows `value`.
async fn gauge_becomes(app: &TestApp, name: &str, idp: &str, value: f64) {
    let deadline = Instant::now() + DID_NOT_HANG;
    loop {
        let now = gauge(app, name, idp).await;
        if now == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{idp={idp:?}}} is {now:?}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------
// Timeouts, end to end through the scheduler.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_idp_that_accepts_the_request_but_never_answers_fails_the_scheduled_run_within_the_request_timeout_and_the_next_run_converges(
) {
    let (mock, proxy, mut config) = entra("entra-hang").await;
    config.schedule = Some("* * * * * *".into());
    let app = TestApp::spawn_with(move |c| c.idp.push(config)).await;
    let first = run_started_after(&app.store, "entra-hang", DateTime::UNIX_EPOCH).await;
    assert_eq!(last_result(&first)["outcome"], "success", "{first:?}");
    let before = fingerprint(&app.store).await;
    assert!(before.contains(&"member LLM Admins alice@contoso.com".to_owned()));

    // Graph stops answering: every API call (a delta round or a full listing,
    // whichever the run makes) hangs. Meanwhile Alice leaves LLM Admins.
    proxy.inject("/v1.0/", Fault::Hang);
    mock.remove_member("g-admins", "u-alice");
    let hung = Utc::now();
    let state = run_started_after(&app.store, "entra-hang", hung).await;
    let result = last_result(&state);
    assert_eq!(result["outcome"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("timed out") && error.contains("1 s (request_timeout_secs)"),
        "the error says which limit was hit: {error}"
    );
    assert!(error.contains(&proxy.base_url), "and where: {error}");
    assert_no_secret(&result.to_string());
    assert!(
        result["duration_ms"].as_u64().unwrap() < DID_NOT_HANG.as_millis() as u64,
        "the run gave up instead of hanging: {result}"
    );
    assert!(state.consecutive_failures >= 1, "{state:?}");
    assert!(
        state.last_success.is_some(),
        "the last success is remembered"
    );
    assert_eq!(
        fingerprint(&app.store).await,
        before,
        "nothing deleted or deactivated"
    );

    // The IdP answers again: the next run applies what changed meanwhile.
    proxy.heal();
    let healed = Utc::now();
    let state = run_started_after(&app.store, "entra-hang", healed).await;
    assert_eq!(last_result(&state)["outcome"], "success", "{state:?}");
    assert_eq!(state.consecutive_failures, 0);
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Users"]
    );
}

#[tokio::test]
async fn an_idp_that_sends_the_headers_then_stalls_the_body_fails_the_scheduled_run_within_the_request_timeout_and_deletes_nothing(
) {
    let (mock, proxy, mut config) = entra("entra-stall").await;
    config.schedule = Some("* * * * * *".into());
    let app = TestApp::spawn_with(move |c| c.idp.push(config)).await;
    let first = run_started_after(&app.store, "entra-stall", DateTime::UNIX_EPOCH).await;
    assert_eq!(last_result(&first)["outcome"], "success", "{first:?}");
    let before = fingerprint(&app.store).await;

    // Every answer stalls mid-body; meanwhile Alice leaves LLM Admins and Bob leaves
    // LLM Users.
    proxy.inject("/v1.0/", Fault::StallBody);
    mock.remove_member("g-admins", "u-alice");
    mock.remove_member("g-users", "u-bob");
    let stalled = Utc::now();
    let state = run_started_after(&app.store, "entra-stall", stalled).await;
    let result = last_result(&state);
    assert_eq!(result["outcome"], "failed", "{result}");
    assert_eq!(result["destroy"], 0);
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("200 OK but the body could not be read")
            && error.contains("1 s (request_timeout_secs)"),
        "{error}"
    );
    assert_no_secret(&result.to_string());
    assert!(result["duration_ms"].as_u64().unwrap() < DID_NOT_HANG.as_millis() as u64);
    assert_eq!(
        fingerprint(&app.store).await,
        before,
        "nothing deleted or deactivated"
    );

    proxy.heal();
    let healed = Utc::now();
    let state = run_started_after(&app.store, "entra-stall", healed).await;
    assert_eq!(last_result(&state)["outcome"], "success", "{state:?}");
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Users"]
    );
    assert!(teams_of(&app.store, "bob@contoso.com").await.is_empty());
}

// ---------------------------------------------------------------------------------
// An IdP that suddenly has nothing.
// ---------------------------------------------------------------------------------

/// Every page of a Graph list, emptied.
fn no_items() -> Fault {
    Fault::rewrite(|page, _| {
        page["value"] = json!([]);
        if let Some(page) = page.as_object_mut() {
            page.remove("@odata.nextLink");
        }
    })
}

#[tokio::test]
async fn after_a_restart_a_first_scheduled_pull_that_finds_zero_groups_is_stopped_by_the_deletion_guard(
) {
    let (_mock, proxy, config) = entra("entra-empty").await;
    let mut scheduled = config.clone();
    scheduled.schedule = Some("* * * * * *".into());
    // Before the restart: a populated sync.
    let before_restart = TestApp::spawn_with(move |c| c.idp.push(config)).await;
    let actor = Actor::new(Trigger::Sync, "test");
    let report = scimsync::sync::sync_now(
        &before_restart.store,
        &before_restart.config,
        "entra-empty",
        &actor,
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, "success", "{report:?}");
    let before = fingerprint(&before_restart.store).await;

    // The IdP now lists no groups at all, and scimsync starts again on the same
    // database: its first scheduled run is a full pull.
    proxy.inject("/v1.0/groups?", no_items());
    let restarted_at = Utc::now();
    let database = before_restart.config.database.url.clone();
    let token = before_restart
        .dir
        .path()
        .join(scimsync::app::INITIAL_TOKEN_FILE);
    let app = TestApp::spawn_with(move |c| {
        c.database.url = database;
        let state_directory = c.server.state_directory.clone().unwrap();
        std::fs::copy(
            &token,
            state_directory.join(scimsync::app::INITIAL_TOKEN_FILE),
        )
        .unwrap();
        c.idp.push(scheduled);
    })
    .await;
    let state = run_started_after(&app.store, "entra-empty", restarted_at).await;
    let result = last_result(&state);
    assert_eq!(result["outcome"], "quarantined", "{result}");
    assert_eq!(result["groups"], 0, "the IdP really said: no groups");
    let error = result["error"].as_str().unwrap();
    // Two teams deleted and three active users deactivated, of four users and two teams.
    assert!(
        error.contains("refusing to delete or deactivate 5 of 6") && error.contains("[safety]"),
        "{error}"
    );
    assert_eq!(result["quarantined"]["refused"], true, "{result}");
    assert_eq!(
        state.consecutive_failures, 0,
        "a refused plan is kept, not failed: the run applied what it safely could"
    );
    assert_eq!(fingerprint(&app.store).await, before, "the state is intact");

    // Healed, the IdP's runs still hold removals back until the plan is decided.
    proxy.heal();
    let healed = Utc::now();
    let state = run_started_after(&app.store, "entra-empty", healed).await;
    let result = last_result(&state);
    assert_eq!(result["outcome"], "quarantined", "{state:?}");
    assert_eq!(result["quarantined"]["refused"], false, "{result}");
    assert_eq!(state.consecutive_failures, 0);
    assert_eq!(fingerprint(&app.store).await, before);
    let kept = app.store.quarantined_plans(false).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    scimsync::reconcile::Engine::new(app.store.clone())
        .reject_quarantined(kept[0].id, &Actor::new(Trigger::Cli, "operator"))
        .await
        .unwrap();
    let rejected = Utc::now();
    let state = run_started_after(&app.store, "entra-empty", rejected).await;
    assert_eq!(last_result(&state)["outcome"], "success", "{state:?}");
    assert_eq!(fingerprint(&app.store).await, before);
}

#[tokio::test]
async fn an_idp_whose_groups_suddenly_have_zero_members_is_stopped_by_the_deletion_guard() {
    let (_mock, proxy, config) = entra("entra-nobody").await;
    let app = TestApp::spawn().await;
    let mut app_config = app.config.clone();
    app_config.idp.push(config);
    let actor = Actor::new(Trigger::Sync, "test");
    let sync = || scimsync::sync::sync_now(&app.store, &app_config, "entra-nobody", &actor);
    assert_eq!(sync().await.unwrap().outcome, "success");
    let before = fingerprint(&app.store).await;

    // Both managed groups are still there, with nobody in them: every IdP user would be
    // deactivated. Four users and two teams are managed; 20 % of six is one.
    proxy.inject("/transitiveMembers/", no_items());
    let report = sync().await.unwrap();
    assert_eq!(report.outcome, "quarantined", "{report:?}");
    assert_eq!(report.groups, 2);
    assert_eq!(report.users, 0);
    let error = report.error.clone().unwrap();
    assert!(
        error.contains("refusing to delete or deactivate 3 of 6"),
        "{error}"
    );
    assert_eq!(fingerprint(&app.store).await, before, "the state is intact");
    let state = app.store.sync_state("entra-nobody").await.unwrap().unwrap();
    assert_eq!(state.consecutive_failures, 0);

    proxy.heal();
    let healed = sync().await.unwrap();
    assert_eq!(healed.outcome, "quarantined", "the plan awaits a decision");
    let plan = healed.quarantined.expect("the kept plan").plan;
    scimsync::reconcile::Engine::new(app.store.clone())
        .reject_quarantined(plan, &Actor::new(Trigger::Cli, "operator"))
        .await
        .unwrap();
    assert_eq!(sync().await.unwrap().outcome, "success");
    assert_eq!(fingerprint(&app.store).await, before);
}

// ---------------------------------------------------------------------------------
// Storms: bounded retries, then a clean failure.
// ---------------------------------------------------------------------------------

/// Runs one sync with a connector built here, so that its client's counters can be read.
async fn sync_with(store: &Store, config: &Config, idp_config: &IdpConfig) -> (SyncReport, Idp) {
    let idp = Idp::from_config(idp_config).unwrap();
    let actor = Actor::new(Trigger::Sync, "test");
    let report = scimsync::sync::sync_once(store, config, &idp, &actor).await;
    (report, idp)
}

#[tokio::test]
async fn a_storm_of_server_errors_is_retried_a_bounded_number_of_times_then_the_run_fails_cleanly()
{
    let (_mock, proxy, mut idp_config) = entra("entra-5xx").await;
    idp_config.max_retries = Some(2);
    let app = TestApp::spawn().await;
    let (report, _) = sync_with(&app.store, &app.config, &idp_config).await;
    assert_eq!(report.outcome, "success");
    let before = fingerprint(&app.store).await;

    // "/v1.0/groups" is both the listing and groups/delta: the runs after the first
    // continue from the stored delta base, and the storm must reach them too.
    for status in [500, 502, 503, 504] {
        proxy.heal();
        let body = json!({"error": {"code": "UnknownError", "message": format!("storm {status}")}});
        proxy.inject("/v1.0/groups", Fault::status(status, &[], body));
        let asked = proxy.requests_to("/v1.0/groups");
        let (report, idp) = sync_with(&app.store, &app.config, &idp_config).await;
        assert_eq!(report.outcome, "failed", "{status}: {report:?}");
        assert_eq!(
            proxy.requests_to("/v1.0/groups") - asked,
            3,
            "{status}: the first attempt and max_retries = 2 retries, no more"
        );
        assert_eq!(PullStats::get(&idp.connector.stats().retries), 2);
        let error = report.error.unwrap();
        assert!(
            error.contains(&format!("answered {status}"))
                && error.contains(&format!("storm {status}")),
            "{error}"
        );
        assert_no_secret(&error);
        assert_eq!(fingerprint(&app.store).await, before, "{status}");
    }
    let state = app.store.sync_state("entra-5xx").await.unwrap().unwrap();
    assert_eq!(state.consecutive_failures, 4);

    proxy.heal();
    let (report, _) = sync_with(&app.store, &app.config, &idp_config).await;
    assert_eq!(report.outcome, "success", "{report:?}");
}

#[tokio::test]
async fn a_storm_of_429s_is_waited_out_as_retry_after_says_then_the_run_fails_cleanly() {
    let (_mock, proxy, mut idp_config) = entra("entra-429").await;
    idp_config.max_retries = Some(2);
    let app = TestApp::spawn().await;
    let (report, _) = sync_with(&app.store, &app.config, &idp_config).await;
    assert_eq!(report.outcome, "success");
    let before = fingerprint(&app.store).await;

    // The listing and groups/delta alike: this run continues from the stored base.
    let body = json!({"error": {"code": "TooManyRequests", "message": "Too many requests"}});
    proxy.inject(
        "/v1.0/groups",
        Fault::status(429, &[("retry-after", "1")], body),
    );
    let asked = proxy.requests_to("/v1.0/groups");
    let (report, idp) = sync_with(&app.store, &app.config, &idp_config).await;
    assert_eq!(report.outcome, "failed", "{report:?}");
    let error = report.error.unwrap();
    assert!(
        error.contains("still rate limited after 3 attempts"),
        "{error}"
    );
    assert_eq!(
        proxy.requests_to("/v1.0/groups") - asked,
        3,
        "the first attempt and max_retries = 2 retries, no more"
    );
    let stats = idp.connector.stats();
    assert_eq!(PullStats::get(&stats.throttled), 3);
    assert_eq!(PullStats::get(&stats.retries), 2);
    assert!(
        PullStats::get(&stats.waited_ms) >= 2000,
        "each retry waited the second Retry-After asked for, not the 10 ms backoff"
    );
    assert_eq!(fingerprint(&app.store).await, before);

    proxy.heal();
    let (report, _) = sync_with(&app.store, &app.config, &idp_config).await;
    assert_eq!(report.outcome, "success", "{report:?}");
}

#[tokio::test]
async fn after_three_failed_runs_in_a_row_the_scheduler_backs_off_says_so_and_a_success_puts_it_back_on_schedule(
) {
    captured_logs();
    let (_mock, proxy, mut config) = entra("entra-backoff").await;
    config.schedule = Some("* * * * * *".into());
    config.max_retries = Some(0);
    proxy.inject("/v1.0/", Fault::status(500, &[], json!({"error": "down"})));
    let app = TestApp::spawn_with(move |c| c.idp.push(config)).await;

    // Three failed runs, one a second.
    let deadline = Instant::now() + DID_NOT_HANG;
    let state = loop {
        let state = app.store.sync_state("entra-backoff").await.unwrap();
        if let Some(state) = state.filter(|s| s.consecutive_failures >= 3) {
            break state;
        }
        assert!(Instant::now() < deadline, "three scheduled runs failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state.consecutive_failures, 3);
    // The gauge and the warning follow the recorded run a moment later.
    gauge_becomes(&app, "scimsync_sync_backoff_seconds", "entra-backoff", 60.0).await;
    let deadline = Instant::now() + DID_NOT_HANG;
    while !log_lines_about("entra-backoff").iter().any(|l| {
        l.contains("WARN")
            && l.contains("backing off before the next attempt")
            && l.contains("failures=3")
            && l.contains("backoff_secs=60")
    }) {
        assert!(
            Instant::now() < deadline,
            "a warning says the IdP is backed off: {:#?}",
            log_lines_about("entra-backoff")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The next ticks are skipped: the IdP is left alone.
    let asked = proxy.requests();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(proxy.requests(), asked, "no request during the backoff");
    let state = app
        .store
        .sync_state("entra-backoff")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.consecutive_failures, 3);

    // The IdP recovers. Rather than wait out the minute, the last failure is moved ten
    // minutes into the past (a fourth failure: two minutes' backoff, long over).
    proxy.heal();
    let past = Utc::now() - chrono::Duration::minutes(10);
    let failure = json!({"outcome": "failed", "error": "moved into the past by the test"});
    app.store
        .record_sync("entra-backoff", past, false, &failure, None)
        .await
        .unwrap();
    let recovered = run_started_after(&app.store, "entra-backoff", past).await;
    assert_eq!(
        last_result(&recovered)["outcome"],
        "success",
        "{recovered:?}"
    );
    assert_eq!(recovered.consecutive_failures, 0);
    gauge_becomes(&app, "scimsync_sync_backoff_seconds", "entra-backoff", 0.0).await;
    // ... and it is back on its every-second schedule.
    let again = run_started_after(&app.store, "entra-backoff", recovered.last_pull.unwrap()).await;
    assert_eq!(last_result(&again)["outcome"], "success");
    assert_no_secret(&log_lines_about("entra-backoff").join("\n"));
}

// ---------------------------------------------------------------------------------
// Truncated and malformed pages.
// ---------------------------------------------------------------------------------

/// A fault, and what the error must say about it.
struct Case {
    name: &'static str,
    fault: Fault,
    says: &'static str,
}

/// The faults every connector must survive, whatever its API looks like.
fn generic_cases() -> Vec<Case> {
    vec![
        Case {
            name: "a JSON body cut in the middle",
            fault: Fault::TruncatedJson,
            says: "truncated",
        },
        Case {
            name: "a connection closed mid-body (Content-Length mismatch)",
            fault: Fault::ClosedMidBody,
            says: "body could not be read",
        },
        Case {
            name: "an HTML error page with 200",
            fault: Fault::ok_body(
                "text/html; charset=utf-8",
                "<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>\
                 <body><h1>We'll be back soon</h1></body></html>",
            ),
            says: "not JSON but text/html",
        },
        Case {
            name: "an empty 200",
            fault: Fault::ok_body("application/json", ""),
            says: "body is empty",
        },
        Case {
            name: "a list that is not a list",
            fault: Fault::rewrite(|page, _| match page {
                Value::Array(_) => *page = json!({"unexpected": "an object where a list belongs"}),
                Value::Object(fields) => {
                    for value in fields.values_mut() {
                        if value.is_array() {
                            *value = json!("not a list");
                        }
                    }
                }
                _ => {}
            }),
            says: "expected shape",
        },
        Case {
            name: "items without an id",
            fault: Fault::rewrite(|page, _| {
                fn strip(value: &mut Value) {
                    match value {
                        Value::Array(items) => items.iter_mut().for_each(strip),
                        Value::Object(fields) => {
                            fields.remove("id");
                            fields.remove("user_id");
                            fields.values_mut().for_each(strip);
                        }
                        _ => {}
                    }
                }
                strip(page)
            }),
            says: "id",
        },
    ]
}

/// The Graph-specific ones: `value` not an array, and `@odata.nextLink` gone wrong.
fn graph_cases() -> Vec<Case> {
    let mut cases = generic_cases();
    cases.extend([
        Case {
            name: "`value` not an array",
            fault: Fault::rewrite(|page, _| page["value"] = json!({"id": "g-1"})),
            says: "expected shape",
        },
        Case {
            name: "a body that stalls after the headers",
            fault: Fault::StallBody,
            says: "request_timeout_secs",
        },
        Case {
            name: "an @odata.nextLink that is not a URL",
            fault: paging::odata_next_link_to("%%garbage%%"),
            says: "next-page link",
        },
        Case {
            name: "an @odata.nextLink to another host",
            fault: paging::odata_next_link_to("https://graph.attacker.example/v1.0/groups"),
            says: "another host",
        },
    ]);
    cases
}

/// One IdP behind a faulty proxy, with what the table needs to know about its API.
struct Upstream {
    config: IdpConfig,
    proxy: FaultyUpstream,
    /// Requests that list the groups (every page).
    groups_list: String,
    /// Requests for LLM Users' members (every page).
    users_members: String,
    /// Alice's userName as this connector spells it.
    alice: &'static str,
    /// Takes Alice out of LLM Admins in the IdP.
    alice_leaves_admins: Box<dyn Fn() + Send>,
    _keep: Box<dyn std::any::Any + Send>,
}

/// The shared specification: after a good sync, Alice leaves LLM Admins in the IdP;
/// then each fault, on the group listing and on LLM Users' members, makes the sync fail
/// (listing) or partial (members) with an error that names the URL and what was wrong,
/// and changes nothing in the store; once the IdP is healed, the sync converges.
async fn faulty_pages_delete_nothing(upstream: Upstream, cases: Vec<Case>) {
    let Upstream {
        config: idp_config,
        proxy,
        groups_list,
        users_members,
        alice,
        alice_leaves_admins,
        _keep,
    } = upstream;
    let name = idp_config.name.clone();
    let app = TestApp::spawn().await;
    let mut config = app.config.clone();
    config.idp.push(idp_config);
    let actor = Actor::new(Trigger::Sync, "test");
    let sync = || scimsync::sync::sync_now(&app.store, &config, &name, &actor);

    let report = sync().await.unwrap();
    assert_eq!(
        report.outcome,
        "success",
        "{name}: {report:?}\n{:#?}",
        proxy.log()
    );
    assert_eq!(
        teams_of(&app.store, alice).await,
        ["LLM Admins", "LLM Users"],
        "{name}"
    );
    let before = fingerprint(&app.store).await;
    alice_leaves_admins();

    for case in &cases {
        for (fragment, outcome) in [(&groups_list, "failed"), (&users_members, "partial")] {
            proxy.heal();
            proxy.inject(fragment, case.fault.clone());
            let faulted = proxy.faulted();
            let started = Instant::now();
            let report = sync().await.unwrap();
            let what = format!("{name}, {} on {fragment}", case.name);
            assert!(
                proxy.faulted() > faulted,
                "{what}: the fault was hit\n{:#?}",
                proxy.log()
            );
            assert!(started.elapsed() < DID_NOT_HANG, "{what}: did not hang");
            assert_eq!(report.outcome, outcome, "{what}: {report:?}");
            assert_eq!(report.destroy, 0, "{what}");
            let error = match outcome {
                "failed" => report.error.clone().unwrap_or_default(),
                _ => report.problems.join("\n"),
            };
            assert!(
                error.contains(case.says) && error.contains(&proxy.base_url),
                "{what}: the error names the URL and says {:?}: {error}",
                case.says
            );
            if outcome == "partial" {
                assert!(error.contains("LLM Users"), "{what}: {error}");
            }
            assert_no_secret(&serde_json::to_string(&report).unwrap());
            assert_eq!(
                fingerprint(&app.store).await,
                before,
                "{what}: nothing deleted or deactivated"
            );
        }
    }
    let state = app.store.sync_state(&name).await.unwrap().unwrap();
    assert_eq!(state.consecutive_failures, 2 * cases.len() as i64, "{name}");

    proxy.heal();
    let report = sync().await.unwrap();
    assert_eq!(report.outcome, "success", "{name}: {report:?}");
    assert_eq!(
        teams_of(&app.store, alice).await,
        ["LLM Users"],
        "{name}: the healed IdP's change is applied"
    );
}

#[tokio::test]
async fn truncated_and_malformed_graph_pages_fail_the_sync_clearly_and_delete_nothing() {
    // The Graph mock's users are @contoso.com; the shared table checks @example.com,
    // so its own run checks the Graph names.
    let (mock, proxy, idp_config) = entra("entra-pages").await;
    let app = TestApp::spawn().await;
    let mut config = app.config.clone();
    config.idp.push(idp_config);
    let actor = Actor::new(Trigger::Sync, "test");
    let sync = || scimsync::sync::sync_now(&app.store, &config, "entra-pages", &actor);
    assert_eq!(sync().await.unwrap().outcome, "success");
    let before = fingerprint(&app.store).await;
    mock.remove_member("g-admins", "u-alice");

    let cases = graph_cases();
    for case in &cases {
        for (fragment, outcome) in [("/v1.0/groups?", "failed"), ("/groups/g-users/", "partial")] {
            proxy.heal();
            proxy.inject(fragment, case.fault.clone());
            let report = sync().await.unwrap();
            let what = format!("{} on {fragment}", case.name);
            assert_eq!(report.outcome, outcome, "{what}: {report:?}");
            let error = match outcome {
                "failed" => report.error.clone().unwrap_or_default(),
                _ => report.problems.join("\n"),
            };
            assert!(
                error.contains(case.says) && error.contains(&proxy.base_url),
                "{what}: {error}"
            );
            assert_no_secret(&error);
            assert_eq!(fingerprint(&app.store).await, before, "{what}");
        }
    }
    let state = app.store.sync_state("entra-pages").await.unwrap().unwrap();
    let result = last_result(&state);
    assert_eq!(
        result["outcome"], "partial",
        "the last failure is on record"
    );
    assert!(result["problems"][0]
        .as_str()
        .unwrap()
        .contains("another host"));

    proxy.heal();
    assert_eq!(sync().await.unwrap().outcome, "success");
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Users"]
    );
}

#[tokio::test]
async fn a_graph_next_link_that_points_back_at_its_own_page_does_not_loop_forever() {
    let (_mock, proxy, idp_config) = entra("entra-loop").await;
    proxy.inject("/groups/g-users/", paging::odata_next_link_to_this_page());
    let idp = Idp::from_config(&idp_config).unwrap();
    let pull = tokio::time::timeout(DID_NOT_HANG, idp.pull())
        .await
        .expect("the pull stops following a link it has already followed");
    let pull = pull.unwrap();
    assert!(!pull.snapshot.complete, "{:?}", pull.problems);
    assert!(
        pull.problems[0].contains("LLM Users")
            && pull.problems[0].contains("points back at a page already read"),
        "{:?}",
        pull.problems
    );
}

#[tokio::test]
async fn a_graph_page_without_a_value_array_is_an_error_not_an_empty_group() {
    let (_mock, proxy, idp_config) = entra("entra-novalue").await;
    let app = TestApp::spawn().await;
    let mut config = app.config.clone();
    config.idp.push(idp_config);
    let actor = Actor::new(Trigger::Sync, "test");
    let sync = || scimsync::sync::sync_now(&app.store, &config, "entra-novalue", &actor);
    assert_eq!(sync().await.unwrap().outcome, "success");
    let before = fingerprint(&app.store).await;

    // `{}` with 200: real Graph always sends `value`, even when it is empty.
    proxy.inject(
        "/groups/g-admins/",
        Fault::ok_body("application/json", "{}"),
    );
    let report = sync().await.unwrap();
    assert_eq!(report.outcome, "partial", "{report:?}");
    assert!(
        report.problems[0].contains("LLM Admins")
            && report.problems[0].contains("missing field `value`"),
        "{:?}",
        report.problems
    );
    assert_eq!(
        fingerprint(&app.store).await,
        before,
        "Alice is still an admin"
    );
}

// The same table for every connector, through the same proxy.

#[tokio::test]
async fn truncated_and_malformed_okta_pages_fail_the_sync_clearly_and_delete_nothing() {
    faulty_pages_delete_nothing(upstream(Kind::Okta).await, generic_cases()).await;
}

#[tokio::test]
async fn truncated_and_malformed_google_pages_fail_the_sync_clearly_and_delete_nothing() {
    faulty_pages_delete_nothing(upstream(Kind::Google).await, generic_cases()).await;
}

#[tokio::test]
async fn a_google_member_without_an_id_makes_the_pull_partial_instead_of_removing_them() {
    let Upstream {
        config: idp_config,
        proxy,
        _keep,
        ..
    } = upstream(Kind::Google).await;
    let app = TestApp::spawn().await;
    let mut config = app.config.clone();
    config.idp.push(idp_config);
    let actor = Actor::new(Trigger::Sync, "test");
    let sync = || scimsync::sync::sync_now(&app.store, &config, "google", &actor);
    assert_eq!(sync().await.unwrap().outcome, "success");
    let before = fingerprint(&app.store).await;

    // Bob, in LLM Users only, comes back without his id: one deactivation is within
    // the deletion guard's limit, so only the connector can stop it.
    proxy.inject(
        "/groups/03users/members",
        Fault::rewrite(|page, _| {
            for member in page["members"].as_array_mut().into_iter().flatten() {
                if member["email"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("bob@"))
                {
                    member.as_object_mut().unwrap().remove("id");
                }
            }
        }),
    );
    let report = sync().await.unwrap();
    assert_eq!(report.outcome, "partial", "{report:?}");
    assert!(
        report.problems[0].contains("LLM Users") && report.problems[0].contains("no id"),
        "{:?}",
        report.problems
    );
    assert_eq!(fingerprint(&app.store).await, before, "Bob is untouched");
}

#[tokio::test]
async fn truncated_and_malformed_keycloak_pages_fail_the_sync_clearly_and_delete_nothing() {
    faulty_pages_delete_nothing(upstream(Kind::Keycloak).await, generic_cases()).await;
}

#[tokio::test]
async fn truncated_and_malformed_onelogin_pages_fail_the_sync_clearly_and_delete_nothing() {
    faulty_pages_delete_nothing(upstream(Kind::OneLogin).await, generic_cases()).await;
}

#[tokio::test]
async fn truncated_and_malformed_auth0_pages_fail_the_sync_clearly_and_delete_nothing() {
    faulty_pages_delete_nothing(upstream(Kind::Auth0).await, generic_cases()).await;
}

// ---------------------------------------------------------------------------------
// Paging that never ends: a next-page cursor back to a page already read, a server
// that ignores the paging offset.
// ---------------------------------------------------------------------------------

/// A paging fault on one listing, and what the error must say about it.
struct PagingCase {
    name: &'static str,
    /// Requests it breaks (path and query contain this).
    fragment: String,
    /// "failed" when the group listing breaks, "partial" when a group's members do.
    outcome: &'static str,
    /// The group the problem must name (members only).
    group: &'static str,
    fault: Fault,
    says: &'static str,
}

/// The shared specification: after a good sync, Alice leaves LLM Admins in the IdP;
/// then each paging fault makes the sync fail (listing) or partial (members) within
/// the hang bound, with an error that names the URL and says why, never treating the
/// loop as the end of the list, and changes nothing in the store; once the IdP is
/// healed, the sync converges.
async fn endless_paging_fails_the_sync_and_deletes_nothing(
    upstream: Upstream,
    cases: Vec<PagingCase>,
) {
    let Upstream {
        config: idp_config,
        proxy,
        alice,
        alice_leaves_admins,
        _keep,
        ..
    } = upstream;
    let name = idp_config.name.clone();
    let app = TestApp::spawn().await;
    let mut config = app.config.clone();
    config.idp.push(idp_config);
    let actor = Actor::new(Trigger::Sync, "test");
    let sync = || async {
        tokio::time::timeout(
            DID_NOT_HANG,
            scimsync::sync::sync_now(&app.store, &config, &name, &actor),
        )
        .await
    };

    let report = sync().await.expect("a healthy sync ends").unwrap();
    assert_eq!(report.outcome, "success", "{name}: {report:?}");
    let before = fingerprint(&app.store).await;
    alice_leaves_admins();

    for case in &cases {
        proxy.heal();
        proxy.inject(&case.fragment, case.fault.clone());
        let faulted = proxy.faulted();
        let what = format!("{name}, {} on {}", case.name, case.fragment);
        let report = sync()
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: the sync pages forever ({} requests so far)",
                    proxy.requests()
                )
            })
            .unwrap();
        assert!(proxy.faulted() > faulted, "{what}: the fault was hit");
        assert_eq!(report.outcome, case.outcome, "{what}: {report:?}");
        assert_eq!(report.destroy, 0, "{what}");
        let error = match case.outcome {
            "failed" => report.error.clone().unwrap_or_default(),
            _ => report.problems.join("\n"),
        };
        assert!(
            error.contains(case.says) && error.contains(&proxy.base_url),
            "{what}: the error names the URL and says {:?}: {error}",
            case.says
        );
        assert!(!error.contains("another host"), "{what}: {error}");
        if case.outcome == "partial" {
            assert!(error.contains(case.group), "{what}: {error}");
        }
        assert_no_secret(&serde_json::to_string(&report).unwrap());
        assert_eq!(
            fingerprint(&app.store).await,
            before,
            "{what}: nothing deleted or deactivated"
        );
    }

    proxy.heal();
    let report = sync().await.expect("a healed sync ends").unwrap();
    assert_eq!(report.outcome, "success", "{name}: {report:?}");
    assert_eq!(
        teams_of(&app.store, alice).await,
        ["LLM Users"],
        "{name}: the healed IdP's change is applied"
    );
}

const ALREADY_READ: &str = "points back at a page already read";

#[tokio::test]
async fn an_okta_next_link_back_to_an_earlier_page_fails_the_sync_instead_of_paging_forever() {
    let upstream = upstream(Kind::Okta).await;
    let cases = vec![
        PagingCase {
            name: "rel=\"next\" back to the first page",
            fragment: upstream.groups_list.clone(),
            outcome: "failed",
            group: "",
            fault: paging::link_next_back_to_the_first_page(),
            says: ALREADY_READ,
        },
        PagingCase {
            name: "rel=\"next\" back to the first page",
            fragment: upstream.users_members.clone(),
            outcome: "partial",
            group: "LLM Users",
            fault: paging::link_next_back_to_the_first_page(),
            says: ALREADY_READ,
        },
        PagingCase {
            name: "rel=\"next\" that is not a URL",
            fragment: upstream.users_members.clone(),
            outcome: "partial",
            group: "LLM Users",
            fault: paging::link_next_to("%%garbage%%"),
            says: "the next-page link is not an absolute URL",
        },
    ];
    endless_paging_fails_the_sync_and_deletes_nothing(upstream, cases).await;
}

#[tokio::test]
async fn a_google_page_token_back_to_a_page_already_read_fails_the_sync_instead_of_paging_forever()
{
    let upstream = upstream(Kind::Google).await;
    let back = || paging::body_cursor_back_to_this_page("pageToken", "nextPageToken");
    let cases = vec![
        PagingCase {
            name: "nextPageToken back to its own page",
            fragment: upstream.groups_list.clone(),
            outcome: "failed",
            group: "",
            fault: back(),
            says: ALREADY_READ,
        },
        PagingCase {
            name: "nextPageToken back to its own page",
            fragment: upstream.users_members.clone(),
            outcome: "partial",
            group: "LLM Users",
            fault: back(),
            says: ALREADY_READ,
        },
    ];
    endless_paging_fails_the_sync_and_deletes_nothing(upstream, cases).await;
}

#[tokio::test]
async fn a_onelogin_after_cursor_back_to_a_page_already_read_fails_the_sync_instead_of_paging_forever(
) {
    let upstream = upstream(Kind::OneLogin).await;
    let back = paging::after_cursor_back_to_this_page;
    let cases = vec![
        PagingCase {
            name: "After-Cursor back to its own page",
            fragment: upstream.groups_list.clone(),
            outcome: "failed",
            group: "",
            fault: back(),
            says: ALREADY_READ,
        },
        PagingCase {
            name: "After-Cursor back to its own page",
            fragment: upstream.users_members.clone(),
            outcome: "partial",
            group: "LLM Users",
            fault: back(),
            says: ALREADY_READ,
        },
    ];
    endless_paging_fails_the_sync_and_deletes_nothing(upstream, cases).await;
}

#[tokio::test]
async fn an_auth0_checkpoint_back_to_a_page_already_read_fails_the_sync_instead_of_paging_forever()
{
    let upstream = upstream(Kind::Auth0).await;
    let cases = vec![
        // The role list is page-numbered; one that ignores `page` answers the first
        // 100 roles again, and its total (114) would end the list without the rest.
        PagingCase {
            name: "a role list that ignores `page`",
            fragment: upstream.groups_list.clone(),
            outcome: "failed",
            group: "",
            fault: paging::ignoring_offset("page"),
            says: "holds the same items as a page already read",
        },
        PagingCase {
            name: "`next` back to its own page",
            fragment: upstream.users_members.clone(),
            outcome: "partial",
            group: "LLM Users",
            fault: paging::body_cursor_back_to_this_page("from", "next"),
            says: ALREADY_READ,
        },
    ];
    endless_paging_fails_the_sync_and_deletes_nothing(upstream, cases).await;
}

#[tokio::test]
async fn a_keycloak_server_that_ignores_first_fails_the_sync_instead_of_paging_forever() {
    // "Load Test" has 205 members: pages of 100, 100 and 5 when `first` is honoured.
    let mut upstream = upstream(Kind::Keycloak).await;
    upstream.config.groups.push("Load Test".into());
    let load_members = format!("/groups/{}/members", idp_mocks::keycloak::group_id("load"));
    let cases = vec![PagingCase {
        name: "every page the first one",
        fragment: load_members,
        outcome: "partial",
        group: "Load Test",
        fault: paging::ignoring_offset("first"),
        says: "holds the same items as a page already read",
    }];
    endless_paging_fails_the_sync_and_deletes_nothing(upstream, cases).await;
}

// ---------------------------------------------------------------------------------
// Every connector, described once: the shared suites below run over this table.
// ---------------------------------------------------------------------------------

/// The IdPs scimsync pulls from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Entra,
    Okta,
    Google,
    Keycloak,
    OneLogin,
    Auth0,
}

const EVERY_CONNECTOR: [Kind; 6] = [
    Kind::Entra,
    Kind::Okta,
    Kind::Google,
    Kind::Keycloak,
    Kind::OneLogin,
    Kind::Auth0,
];

/// One connector against its mock IdP, with what the shared scenarios need to know
/// about its API.
struct Connector {
    base_url: String,
    faults: Arc<Faults>,
    /// An `[[idp]]` straight to the mock, with the credentials a deployment would use
    /// (Okta: private_key_jwt).
    config: IdpConfig,
    /// The `[[idp]]` the proxy suites reroute (Okta: its SSWS token, since a
    /// private_key_jwt assertion names the mock's own token URL).
    proxied: IdpConfig,
    /// `config` with a secret or key the IdP does not know ...
    wrong_credentials: IdpConfig,
    /// ... what its refusal says (any one of these) ...
    refused: &'static [&'static str],
    /// ... and the credential text no error may show.
    wrong_secret: &'static str,
    /// Requests that list the groups (every page).
    groups_list: String,
    /// Requests for LLM Users' members (every page).
    users_members: String,
    /// Alice's userName as this connector spells it.
    alice: &'static str,
    /// Takes Alice out of LLM Admins in the IdP.
    alice_leaves_admins: Box<dyn Fn() + Send>,
    /// Whether the IdP announces its rate-limit budget on every answer (Okta, Auth0,
    /// OneLogin).
    announces_budget: bool,
    /// Whether the IdP also throttles with a 403 quota error (Google).
    refuses_over_quota: bool,
    _keep: Box<dyn std::any::Any + Send>,
}

/// Takes the user `user` out of the group `group` (keys of the standard directory)
/// in a mock whose ids `group_id` and `user_id` make.
fn alice_leaves(
    dir: &Arc<Mutex<idp_mocks::Dir>>,
    group: &str,
    user: &str,
    group_id: fn(&str) -> String,
    user_id: fn(&str) -> String,
) -> Box<dyn Fn() + Send> {
    let (dir, group, user) = (dir.clone(), group_id(group), user_id(user));
    Box::new(move || dir.lock().unwrap().remove_member(&group, &user))
}

impl Connector {
    /// A connector that signs in with a client secret (the wrong credential: another
    /// secret), its userNames emails, no budget headers, no quota refusals; the
    /// arms below change what differs.
    fn with_client_secret(
        base_url: &str,
        faults: &Arc<Faults>,
        config: IdpConfig,
        wrong_secret: &'static str,
        refused: &'static [&'static str],
    ) -> Self {
        let mut wrong_credentials = config.clone();
        wrong_credentials.client_secret = Some(wrong_secret.into());
        Connector {
            base_url: base_url.to_owned(),
            faults: faults.clone(),
            proxied: config.clone(),
            config,
            wrong_credentials,
            refused,
            wrong_secret,
            groups_list: String::new(),
            users_members: String::new(),
            alice: "alice@example.com",
            alice_leaves_admins: Box::new(|| {}),
            announces_budget: false,
            refuses_over_quota: false,
            _keep: Box::new(()),
        }
    }

    /// Keeps `mock` (and whatever else it needs) running as long as the connector.
    fn keeping(mut self, mock: impl std::any::Any + Send) -> Self {
        self._keep = Box::new(mock);
        self
    }
}

/// A connector of `kind` and its mock, managing "LLM *".
async fn connector(kind: Kind) -> Connector {
    const MANAGED: &[&str] = &["LLM *"];
    match kind {
        Kind::Entra => {
            use idp_mocks::graph::GraphMock;
            let mock = Arc::new(GraphMock::start().await);
            let leaving = mock.clone();
            Connector {
                groups_list: "/v1.0/groups?".into(),
                users_members: "/groups/g-users/".into(),
                alice: "alice@contoso.com",
                alice_leaves_admins: Box::new(move || leaving.remove_member("g-admins", "u-alice")),
                _keep: Box::new(mock.clone()),
                ..Connector::with_client_secret(
                    &mock.base_url,
                    &mock.faults,
                    mock.config("entra", MANAGED),
                    "not-the-right-secret",
                    &["invalid_client", "Invalid client secret"],
                )
            }
        }
        Kind::Okta => {
            use idp_mocks::okta::{client_key, group_id, user_id, OktaMock};
            let mock = OktaMock::start().await;
            let (key_dir, key_file) = idp_mocks::temp_file("okta.pem", &client_key().pem);
            let (rogue_dir, rogue_file) =
                idp_mocks::temp_file("rogue.pem", &idp_mocks::jwt::rogue_key().pem);
            let proxied = mock.ssws_config("okta", MANAGED);
            Connector {
                base_url: mock.base_url.clone(),
                faults: mock.faults.clone(),
                config: mock.oauth_config("okta", MANAGED, &key_file),
                proxied,
                wrong_credentials: mock.oauth_config("okta", MANAGED, &rogue_file),
                refused: &["invalid_client", "signature"],
                wrong_secret: "PRIVATE KEY",
                groups_list: "/api/v1/groups?".into(),
                users_members: format!("/groups/{}/users", group_id("users")),
                alice: "alice@example.com",
                alice_leaves_admins: alice_leaves(&mock.dir, "admins", "alice", group_id, user_id),
                announces_budget: true,
                refuses_over_quota: false,
                _keep: Box::new((mock, key_dir, rogue_dir)),
            }
        }
        Kind::Google => {
            use idp_mocks::google::{group_id, user_id, GoogleMock};
            let mock = GoogleMock::start().await;
            let key = mock.key_file_json();
            let (key_dir, key_file) = idp_mocks::temp_file("service-account.json", &key);
            let mut rogue: Value = serde_json::from_str(&key).unwrap();
            rogue["private_key"] = json!(idp_mocks::jwt::rogue_key().pem);
            let (rogue_dir, rogue_file) =
                idp_mocks::temp_file("service-account.json", &rogue.to_string());
            let config = mock.config("google", MANAGED, &key_file);
            Connector {
                base_url: mock.base_url.clone(),
                faults: mock.faults.clone(),
                proxied: config.clone(),
                config,
                wrong_credentials: mock.config("google", MANAGED, &rogue_file),
                refused: &["invalid_grant", "Invalid JWT"],
                wrong_secret: "PRIVATE KEY",
                groups_list: "/directory/v1/groups?".into(),
                users_members: format!("/groups/{}/members", group_id("users")),
                alice: "alice@example.com",
                alice_leaves_admins: alice_leaves(&mock.dir, "admins", "alice", group_id, user_id),
                announces_budget: false,
                refuses_over_quota: true,
                _keep: Box::new((mock, key_dir, rogue_dir)),
            }
        }
        Kind::Keycloak => {
            use idp_mocks::keycloak::{group_id, user_id, KeycloakMock, Version};
            let mock = KeycloakMock::start(Version::Modern).await;
            Connector {
                groups_list: "/groups?".into(),
                users_members: format!("/groups/{}/members", group_id("users")),
                alice: "alice",
                alice_leaves_admins: alice_leaves(&mock.dir, "admins", "alice", group_id, user_id),
                ..Connector::with_client_secret(
                    &mock.base_url,
                    &mock.faults,
                    mock.config("keycloak", MANAGED),
                    "not-the-keycloak-secret",
                    &["Invalid client"],
                )
            }
            .keeping(mock)
        }
        Kind::OneLogin => {
            use idp_mocks::onelogin::{group_id, user_id, OneLoginMock};
            let mock = OneLoginMock::start().await;
            Connector {
                groups_list: "/roles?".into(),
                users_members: format!("/roles/{}/users", group_id("users")),
                alice_leaves_admins: alice_leaves(&mock.dir, "admins", "alice", group_id, user_id),
                announces_budget: true,
                ..Connector::with_client_secret(
                    &mock.base_url,
                    &mock.faults,
                    mock.config("onelogin", MANAGED),
                    "not-the-onelogin-secret",
                    &["Authentication Failure"],
                )
            }
            .keeping(mock)
        }
        Kind::Auth0 => {
            use idp_mocks::auth0::{group_id, user_id, Auth0Mock};
            let mock = Auth0Mock::start().await;
            Connector {
                groups_list: "/roles?".into(),
                users_members: format!("/roles/{}/users", group_id("users")),
                alice_leaves_admins: alice_leaves(&mock.dir, "admins", "alice", group_id, user_id),
                announces_budget: true,
                ..Connector::with_client_secret(
                    &mock.base_url,
                    &mock.faults,
                    mock.config("auth0", MANAGED),
                    "not-the-auth0-secret",
                    &["Unauthorized"],
                )
            }
            .keeping(mock)
        }
    }
}

/// A connector of `kind` behind a faulty proxy, with impatient retry settings.
async fn upstream(kind: Kind) -> Upstream {
    let c = connector(kind).await;
    let proxy = FaultyUpstream::start(&c.base_url).await;
    let mut config = impatient(c.proxied.clone());
    proxy.reroute(&mut config);
    Upstream {
        config,
        proxy,
        groups_list: c.groups_list,
        users_members: c.users_members,
        alice: c.alice,
        alice_leaves_admins: c.alice_leaves_admins,
        _keep: Box::new((c._keep, c.faults)),
    }
}

// ---------------------------------------------------------------------------------
// The mock kit's fault switches, on every connector: throttling, spent budgets,
// expiring tokens, server errors, slow IdPs, wrong credentials, unreadable groups.
// Each faulty pull must yield what an undisturbed pull of the same IdP yields (what
// that is, each connector's own file specifies).
// ---------------------------------------------------------------------------------

/// What an undisturbed pull of `c` yields.
async fn undisturbed(c: &Connector) -> Value {
    let pull = Idp::from_config(&c.config).unwrap().pull().await.unwrap();
    assert!(pull.snapshot.complete, "{:?}", pull.problems);
    snapshot_json(&pull.snapshot)
}

/// A pull of `c` by a fresh connector (its own token, its own counters), timed.
async fn timed_pull(c: &Connector) -> (Value, Idp, Duration) {
    let idp = Idp::from_config(&c.config).unwrap();
    let started = Instant::now();
    let pull = idp.pull().await.unwrap();
    let took = started.elapsed();
    (snapshot_json(&pull.snapshot), idp, took)
}

#[tokio::test]
async fn a_429_is_waited_out_as_the_idp_says_and_the_pull_completes_on_every_connector() {
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        let expected = undisturbed(&c).await;
        let throttled = Faults::count(&c.faults.throttled);
        *c.faults.throttle_at.lock().unwrap() = Some(c.faults.call_from_now(2));
        let (snapshot, idp, took) = timed_pull(&c).await;
        assert_eq!(snapshot, expected, "{kind:?}");
        assert_eq!(
            Faults::count(&c.faults.throttled) - throttled,
            1,
            "{kind:?}"
        );
        assert!(
            took >= Duration::from_secs(1),
            "{kind:?}: Retry-After or the rate-limit reset was honoured"
        );
        let stats = idp.connector.stats();
        assert_eq!(PullStats::get(&stats.throttled), 1, "{kind:?}");
        assert_eq!(PullStats::get(&stats.retries), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn an_over_quota_403_is_retried_with_backoff_where_the_idp_throttles_that_way() {
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        if !c.refuses_over_quota {
            continue;
        }
        let expected = undisturbed(&c).await;
        let throttled = Faults::count(&c.faults.throttled);
        *c.faults.quota_at.lock().unwrap() = Some(c.faults.call_from_now(2));
        let (snapshot, idp, _) = timed_pull(&c).await;
        assert_eq!(snapshot, expected, "{kind:?}");
        assert_eq!(
            Faults::count(&c.faults.throttled) - throttled,
            1,
            "{kind:?}"
        );
        let stats = idp.connector.stats();
        assert_eq!(PullStats::get(&stats.throttled), 1, "{kind:?}");
        assert_eq!(PullStats::get(&stats.retries), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn a_spent_rate_limit_budget_pauses_the_next_request_until_the_reset_where_the_idp_announces_it(
) {
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        if !c.announces_budget {
            continue;
        }
        let expected = undisturbed(&c).await;
        let throttled = Faults::count(&c.faults.throttled);
        *c.faults.budget_spent_at.lock().unwrap() = Some(c.faults.call_from_now(1));
        let (snapshot, idp, took) = timed_pull(&c).await;
        assert_eq!(snapshot, expected, "{kind:?}");
        assert!(took >= Duration::from_secs(1), "{kind:?}");
        assert_eq!(
            Faults::count(&c.faults.throttled),
            throttled,
            "{kind:?}: no 429 was needed"
        );
        assert_eq!(
            PullStats::get(&idp.connector.stats().throttled),
            1,
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn an_access_token_that_expires_mid_listing_is_refreshed_once_on_every_connector() {
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        let expected = undisturbed(&c).await;
        let tokens = c.faults.tokens();
        *c.faults.expire_token_at.lock().unwrap() = Some(c.faults.call_from_now(3));
        let (snapshot, idp, _) = timed_pull(&c).await;
        assert_eq!(snapshot, expected, "{kind:?}");
        assert_eq!(
            c.faults.tokens() - tokens,
            2,
            "{kind:?}: the first token and one renewal"
        );
        assert_eq!(
            PullStats::get(&idp.connector.stats().token_rejections),
            1,
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn a_token_near_the_end_of_its_lifetime_is_renewed_before_use_on_every_connector() {
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        *c.faults.token_lifetime.lock().unwrap() = Some(2);
        let idp = Idp::from_config(&c.config).unwrap();
        assert!(idp.pull().await.unwrap().snapshot.complete, "{kind:?}");
        assert_eq!(c.faults.tokens(), 1, "{kind:?}");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(idp.pull().await.unwrap().snapshot.complete, "{kind:?}");
        assert_eq!(
            c.faults.tokens(),
            2,
            "{kind:?}: renewed for the second pull"
        );
        assert_eq!(
            Faults::count(&c.faults.unauthorized),
            0,
            "{kind:?}: renewed before it ran out, not after a 401"
        );
    }
}

#[tokio::test]
async fn a_server_error_is_retried_and_the_pull_completes_on_every_connector() {
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        let expected = undisturbed(&c).await;
        let errors = Faults::count(&c.faults.server_errors);
        *c.faults.fail_at.lock().unwrap() = Some(c.faults.call_from_now(2));
        let (snapshot, idp, _) = timed_pull(&c).await;
        assert_eq!(snapshot, expected, "{kind:?}");
        assert_eq!(
            Faults::count(&c.faults.server_errors) - errors,
            1,
            "{kind:?}"
        );
        assert_eq!(
            PullStats::get(&idp.connector.stats().retries),
            1,
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn an_idp_slower_than_the_request_timeout_fails_the_pull_within_the_limit_on_every_connector()
{
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        let mut config = impatient(c.config.clone());
        config.max_retries = Some(0);
        *c.faults.delay.lock().unwrap() = Duration::from_secs(3);
        let started = Instant::now();
        let err = Idp::from_config(&config)
            .unwrap()
            .pull()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            started.elapsed() < Duration::from_millis(2900),
            "{kind:?}: gave up at the timeout"
        );
        assert!(
            err.contains("timed out") && err.contains("1 s (request_timeout_secs)"),
            "{kind:?}: {err}"
        );
        assert_no_secret(&err);
    }
}

#[tokio::test]
async fn a_credential_the_idp_does_not_know_fails_the_pull_without_showing_it_on_every_connector() {
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        let err = Idp::from_config(&c.wrong_credentials)
            .unwrap()
            .pull()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            c.refused.iter().any(|r| err.contains(r)),
            "{kind:?}: the IdP's refusal is passed on: {err}"
        );
        assert!(!err.contains(c.wrong_secret), "{kind:?}: {err}");
        assert!(!format!("{:?}", c.wrong_credentials).contains(c.wrong_secret));
        assert_eq!(c.faults.calls(), 0, "{kind:?}: no API call without a token");
    }
}

/// The shared specification of a pull that fails part-way: a first sync applies the
/// IdP's groups; then Alice leaves LLM Admins in the IdP while LLM Users' members
/// cannot be read. The pull names the group and still holds what it could read; the
/// sync is partial and deletes nothing; a third, complete sync catches up.
#[tokio::test]
async fn a_group_whose_members_cannot_be_read_makes_the_sync_partial_and_deletes_nothing_on_every_connector(
) {
    for kind in EVERY_CONNECTOR {
        let c = connector(kind).await;
        let mut idp_config = c.config.clone();
        idp_config.max_retries = Some(0);
        let name = idp_config.name.clone();

        *c.faults.failing_path.lock().unwrap() = Some(c.users_members.clone());
        let pull = Idp::from_config(&idp_config).unwrap().pull().await.unwrap();
        assert!(!pull.snapshot.complete, "{kind:?}");
        assert_eq!(pull.problems.len(), 1, "{kind:?}: {:?}", pull.problems);
        assert!(
            pull.problems[0].contains("LLM Users"),
            "{kind:?}: {:?}",
            pull.problems
        );
        assert!(
            pull.snapshot
                .groups
                .iter()
                .any(|g| g.display_name.as_str() == "LLM Admins"),
            "{kind:?}: what could be read is still there"
        );
        *c.faults.failing_path.lock().unwrap() = None;

        let app = TestApp::spawn().await;
        let mut config = app.config.clone();
        config.idp.push(idp_config);
        let actor = Actor::new(Trigger::Sync, "test");
        let sync = || scimsync::sync::sync_now(&app.store, &config, &name, &actor);
        let report = sync().await.unwrap();
        assert_eq!(report.outcome, "success", "{kind:?}: {report:?}");
        assert!(teams_of(&app.store, c.alice)
            .await
            .contains(&"LLM Admins".to_owned()));
        let before = fingerprint(&app.store).await;

        (c.alice_leaves_admins)();
        *c.faults.failing_path.lock().unwrap() = Some(c.users_members.clone());
        let report = sync().await.unwrap();
        assert_eq!(report.outcome, "partial", "{kind:?}: {report:?}");
        assert!(!report.complete, "{kind:?}");
        assert_eq!(report.destroy, 0, "{kind:?}: {report:?}");
        assert_eq!(
            fingerprint(&app.store).await,
            before,
            "{kind:?}: a partial pull removes no membership"
        );

        *c.faults.failing_path.lock().unwrap() = None;
        let report = sync().await.unwrap();
        assert_eq!(report.outcome, "success", "{kind:?}: {report:?}");
        assert_eq!(
            teams_of(&app.store, c.alice).await,
            ["LLM Users"],
            "{kind:?}: a complete pull removes what the IdP removed"
        );
    }
}
