//! Scheduled Entra syncs with Microsoft Graph delta queries: the first run pulls in
//! full and stores where to resume; later runs read only what changed (groups/delta
//! with members@delta, users/delta) and apply it to the last run's state; a link Graph
//! no longer knows means a full resync; a delta that fails changes nothing; nested
//! groups, and groups entering the managed set, are read in full. The base a delta
//! applies to is kept in the store, so a restart or another replica continues with a
//! delta run; a base for another groups filter, or one whose apply was refused, is not
//! used.

use crate::common;
use crate::idp_mocks;

use common::TestApp;
use idp_mocks::graph::GraphMock;
use idp_mocks::teams_of;
use scimsync::config::Config;
use scimsync::domain::{Trigger, UserName};
use scimsync::idp::{Idp, PullKind};
use scimsync::reconcile::Actor;
use scimsync::sync::{sync_once, SyncReport};

/// A store and a connector kept across runs, as the scheduler keeps them.
struct Scheduled {
    app: TestApp,
    config: Config,
    idp: Idp,
}

/// A database that outlives the apps started on it: what a restarted daemon, or a
/// second replica, finds.
struct SharedDatabase {
    url: String,
    /// Holds the SQLite file, and the first app's initial SCIM token for the later
    /// ones (the harness reads it from each app's state directory).
    dir: tempfile::TempDir,
}

impl SharedDatabase {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = match common::postgres_server() {
            Some(server) => common::fresh_postgres_database(&server).await,
            None => format!("sqlite://{}", dir.path().join("shared.db").display()),
        };
        Self { url, dir }
    }

    fn token(&self) -> std::path::PathBuf {
        self.dir.path().join(scimsync::app::INITIAL_TOKEN_FILE)
    }
}

impl Scheduled {
    async fn new(
        mock: &GraphMock,
        configure: impl FnOnce(&mut scimsync::config::IdpConfig),
    ) -> Self {
        Self::start(mock, None, configure).await
    }

    /// An app on `database`, as a restarted daemon or another replica.
    async fn on(
        mock: &GraphMock,
        database: &SharedDatabase,
        configure: impl FnOnce(&mut scimsync::config::IdpConfig),
    ) -> Self {
        let s = Self::start(mock, Some(database), configure).await;
        let token = s.app.dir.path().join(scimsync::app::INITIAL_TOKEN_FILE);
        if !database.token().exists() {
            std::fs::copy(token, database.token()).unwrap();
        }
        s
    }

    async fn start(
        mock: &GraphMock,
        database: Option<&SharedDatabase>,
        configure: impl FnOnce(&mut scimsync::config::IdpConfig),
    ) -> Self {
        let mut idp_config = mock.config("entra", &["LLM *"]);
        configure(&mut idp_config);
        let shared = database.map(|d| (d.url.clone(), d.token()));
        let app = TestApp::spawn_with(move |c| {
            if let Some((url, token)) = shared {
                c.database.url = url;
                if token.exists() {
                    let state = c.server.state_directory.clone().unwrap();
                    std::fs::copy(token, state.join(scimsync::app::INITIAL_TOKEN_FILE)).unwrap();
                }
            }
        })
        .await;
        let mut config = app.config.clone();
        // Five users: a guard sized for real tenants would refuse any deactivation.
        config.safety.max_deletion_ratio = 1.0;
        config.idp.push(idp_config.clone());
        let idp = Idp::from_config(&idp_config).unwrap();
        Self { app, config, idp }
    }

    async fn run(&self) -> SyncReport {
        let actor = Actor::new(Trigger::Sync, "scheduler");
        sync_once(&self.app.store, &self.config, &self.idp, &actor).await
    }

    /// Stops this app as a restart would: its connections closed, its memory gone.
    async fn stop(self) {
        self.app.store.close().await;
    }

    async fn last_pull(&self) -> serde_json::Value {
        let state = self.app.store.sync_state("entra").await.unwrap().unwrap();
        state.last_result.unwrap()["pull"].clone()
    }

    /// What a full pull would change now: nothing, when the delta runs got it right.
    async fn full_pull_changes(&self) -> (usize, usize, usize) {
        let actor = Actor::new(Trigger::Sync, "test");
        let full = scimsync::sync::sync_now(&self.app.store, &self.config, "entra", &actor)
            .await
            .unwrap();
        assert_eq!(full.outcome, "success", "{full:?}");
        (full.add, full.change, full.destroy)
    }

    async fn cursor(&self) -> Option<String> {
        self.app
            .store
            .sync_state("entra")
            .await
            .unwrap()
            .and_then(|s| s.delta_cursor)
    }

    async fn teams(&self, user: &str) -> Vec<String> {
        teams_of(&self.app.store, user).await
    }

    async fn user(&self, name: &str) -> scimsync::domain::User {
        self.app
            .store
            .user_by_name(&UserName::parse(name).unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name} in the store"))
    }
}

/// Full member reads: what a delta run must not need.
fn full_reads(mock: &GraphMock) -> usize {
    mock.faults.calls_to("/transitiveMembers")
}

#[tokio::test]
async fn a_first_scheduled_run_pulls_in_full_and_stores_where_to_resume() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |_| {}).await;
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Full);
    assert!(full_reads(&mock) > 0);
    assert_eq!(
        s.teams("alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
    // "From now on" links for groups and users, asked for once each, before the pull.
    assert_eq!(mock.faults.calls_to("/groups/delta?"), 1);
    assert_eq!(mock.faults.calls_to("/users/delta?"), 1);
    assert_eq!(mock.faults.calls_to("deltatoken=latest"), 2);
    let cursor = s.cursor().await.expect("a delta cursor is stored");
    assert!(
        cursor.contains("/v1.0/groups/delta?$deltatoken="),
        "{cursor}"
    );
    assert!(
        cursor.contains("/v1.0/users/delta?$deltatoken="),
        "{cursor}"
    );
    let result = s.app.store.sync_state("entra").await.unwrap().unwrap();
    assert_eq!(result.last_result.unwrap()["pull"], "full");
}

#[tokio::test]
async fn the_next_run_follows_the_delta_link_and_applies_adds_removals_and_user_changes() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |_| {}).await;
    assert_eq!(s.run().await.outcome, "success");
    let first_cursor = s.cursor().await.unwrap();
    let reads = full_reads(&mock);

    // Eve joins LLM Admins (new to the managed groups), Bob leaves LLM Users (his only
    // managed group), Alice's account is disabled and Carol's surname changes.
    mock.add_member("g-admins", "u-eve");
    mock.remove_member("g-users", "u-bob");
    mock.set_user_field("u-alice", "accountEnabled", serde_json::json!(false));
    mock.set_user_field("u-carol", "surname", serde_json::json!("Diaz-Ng"));
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Delta);
    assert_eq!(full_reads(&mock), reads, "no group was read in full");
    assert!(mock.faults.calls_to("/groups/delta?$deltatoken=0-") >= 1);

    assert_eq!(s.teams("eve@contoso.com").await, ["LLM Admins"]);
    let eve = s.user("eve@contoso.com").await;
    assert_eq!(
        eve.given_name.as_deref(),
        Some("Eve"),
        "details of a new member"
    );
    assert_eq!(eve.family_name.as_deref(), Some("Moss"));
    assert_eq!(eve.external_id.as_deref(), Some("u-eve"));
    assert!(s.teams("bob@contoso.com").await.is_empty());
    assert!(
        !s.user("bob@contoso.com").await.active,
        "gone from every managed group"
    );
    assert!(
        !s.user("alice@contoso.com").await.active,
        "disabled in Entra"
    );
    assert_eq!(
        s.user("carol@contoso.com").await.family_name.as_deref(),
        Some("Diaz-Ng")
    );
    // Details of members nobody changed are kept, not lost.
    let dave = s.user("dave@contoso.com").await;
    assert_eq!(dave.given_name.as_deref(), Some("Dave"));
    assert_eq!(dave.email.as_deref(), Some("dave@contoso.com"));
    let cursor = s.cursor().await.unwrap();
    assert_ne!(cursor, first_cursor, "the cursor moves on");

    // A full pull now finds nothing left to do: the delta run reached the same state.
    let actor = Actor::new(Trigger::Sync, "test");
    let full = scimsync::sync::sync_now(&s.app.store, &s.config, "entra", &actor)
        .await
        .unwrap();
    assert_eq!(full.outcome, "success", "{full:?}");
    assert_eq!((full.add, full.change, full.destroy), (0, 0, 0), "{full:?}");
    assert_eq!(
        s.cursor().await.unwrap(),
        cursor,
        "a one-off full pull keeps the cursor"
    );

    // Nothing changed since: the next delta is empty and so is its plan.
    let report = s.run().await;
    assert_eq!(report.pull, PullKind::Delta);
    assert_eq!((report.add, report.change, report.destroy), (0, 0, 0));
}

#[tokio::test]
async fn member_changes_split_over_several_pages_are_all_applied() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |_| {}).await;
    assert_eq!(s.run().await.outcome, "success");
    // Four members change in LLM Admins and one in LLM Users: the mock (two per
    // entry, two entries per page) sends LLM Admins as two entries and LLM Users on a
    // second page.
    for u in ["u-eve", "u-bob", "u-carol"] {
        mock.add_member("g-admins", u);
    }
    mock.remove_member("g-admins", "u-alice");
    mock.remove_member("g-admins", "u-carol");
    mock.remove_member("g-users", "u-dave");
    let report = s.run().await;
    assert_eq!(report.pull, PullKind::Delta, "{report:?}");
    assert_eq!(report.outcome, "success", "{report:?}");
    assert!(mock.faults.calls_to("/groups/delta?$skiptoken=") >= 1);
    assert_eq!(s.teams("alice@contoso.com").await, ["LLM Users"]);
    assert_eq!(
        s.teams("bob@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
    assert_eq!(s.teams("carol@contoso.com").await, ["LLM Users"]);
    assert_eq!(s.teams("eve@contoso.com").await, ["LLM Admins"]);
    assert!(s.teams("dave@contoso.com").await.is_empty());
}

#[tokio::test]
async fn a_link_graph_no_longer_knows_means_a_full_resync_and_a_new_cursor() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |_| {}).await;
    assert_eq!(s.run().await.outcome, "success");
    let first_cursor = s.cursor().await.unwrap();
    let reads = full_reads(&mock);

    mock.remove_member("g-admins", "u-alice");
    mock.expire_delta_tokens();
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Resync);
    assert!(full_reads(&mock) > reads, "read in full");
    assert_eq!(s.teams("alice@contoso.com").await, ["LLM Users"]);
    let cursor = s.cursor().await.expect("a new cursor");
    assert_ne!(cursor, first_cursor);

    // And the run after that is a delta again, from the new cursor.
    mock.add_member("g-admins", "u-alice");
    let report = s.run().await;
    assert_eq!(report.pull, PullKind::Delta, "{report:?}");
    assert_eq!(
        s.teams("alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
}

#[tokio::test]
async fn graphs_400_sync_state_not_found_is_a_resync_too() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |_| {}).await;
    assert_eq!(s.run().await.outcome, "success");
    mock.dir.lock().unwrap().expired_with_400 = true;
    mock.expire_delta_tokens();
    mock.remove_member("g-users", "u-carol");
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Resync);
    assert!(s.teams("carol@contoso.com").await.is_empty());
}

#[tokio::test]
async fn a_failed_delta_run_changes_nothing_and_the_next_one_reads_the_same_changes() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |c| c.max_retries = Some(0)).await;
    assert_eq!(s.run().await.outcome, "success");
    let cursor = s.cursor().await.unwrap();
    let memberships = s.app.store.all_memberships().await.unwrap();

    mock.add_member("g-admins", "u-eve");
    mock.remove_member("g-users", "u-bob");
    // The users round fails after the groups round went through.
    *mock.faults.failing_path.lock().unwrap() = Some("/users/delta".into());
    let report = s.run().await;
    assert_eq!(report.outcome, "failed", "{report:?}");
    assert!(report.error.is_some());
    assert_eq!(s.app.store.all_memberships().await.unwrap(), memberships);
    assert_eq!(s.teams("bob@contoso.com").await, ["LLM Users"]);
    let state = s.app.store.sync_state("entra").await.unwrap().unwrap();
    assert_eq!(state.delta_cursor.as_deref(), Some(cursor.as_str()));
    assert_eq!(state.consecutive_failures, 1);

    // A new member who cannot be looked up fails the run too, without a half-apply.
    *mock.faults.failing_path.lock().unwrap() = Some("/users/u-eve".into());
    let report = s.run().await;
    assert_eq!(report.outcome, "failed", "{report:?}");
    assert_eq!(s.app.store.all_memberships().await.unwrap(), memberships);
    assert_eq!(s.cursor().await.as_deref(), Some(cursor.as_str()));

    *mock.faults.failing_path.lock().unwrap() = None;
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Delta);
    assert_eq!(s.teams("eve@contoso.com").await, ["LLM Admins"]);
    assert!(s.teams("bob@contoso.com").await.is_empty());
}

#[tokio::test]
async fn with_nested_groups_every_scheduled_run_pulls_in_full() {
    let mock = GraphMock::start().await;
    // Sales (Bob, Eve) inside LLM Users: its members are LLM Users' members too.
    mock.add_member("g-users", "g-sales");
    let s = Scheduled::new(&mock, |_| {}).await;
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(s.teams("eve@contoso.com").await, ["LLM Users"]);
    assert_eq!(s.cursor().await, None, "no delta can be trusted here");

    // A change inside the nested group reaches LLM Users through a full pull.
    mock.remove_member("g-sales", "u-eve");
    let report = s.run().await;
    assert_eq!(report.pull, PullKind::Full, "{report:?}");
    assert!(s.teams("eve@contoso.com").await.is_empty());
}

#[tokio::test]
async fn a_group_nested_after_the_first_run_sends_the_next_run_to_a_full_pull() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |_| {}).await;
    assert_eq!(s.run().await.outcome, "success");
    assert!(s.cursor().await.is_some());
    let reads = full_reads(&mock);

    mock.add_member("g-admins", "g-sales");
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Full);
    assert!(full_reads(&mock) > reads);
    assert_eq!(
        s.teams("bob@contoso.com").await,
        ["LLM Admins", "LLM Users"],
        "nested members count, as in a full pull"
    );
    assert_eq!(s.cursor().await, None);
}

#[tokio::test]
async fn a_group_renamed_into_the_managed_groups_is_read_in_full() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |_| {}).await;
    assert_eq!(s.run().await.outcome, "success");
    mock.put_group("g-sales", "LLM Sales");
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Full);
    assert_eq!(s.teams("eve@contoso.com").await, ["LLM Sales"]);

    // A managed group renamed (still managed) is a delta: the team follows the name.
    mock.put_group("g-admins", "LLM Administrators");
    let report = s.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Delta);
    assert_eq!(
        s.teams("alice@contoso.com").await,
        ["LLM Administrators", "LLM Users"]
    );
}

/// Delta rounds asked for with a stored link (not "latest"): what a delta run does.
fn delta_reads(mock: &GraphMock) -> usize {
    mock.faults.calls_to("/groups/delta?$deltatoken=0-")
}

#[tokio::test]
async fn a_restarted_daemon_continues_with_a_delta_pull() {
    let mock = GraphMock::start().await;
    let database = SharedDatabase::new().await;
    let before = Scheduled::on(&mock, &database, |_| {}).await;
    let report = before.run().await;
    assert_eq!((report.outcome, report.pull), ("success", PullKind::Full));
    before.stop().await;

    mock.add_member("g-admins", "u-eve");
    mock.remove_member("g-users", "u-bob");
    mock.set_user_field("u-carol", "surname", serde_json::json!("Diaz-Ng"));
    let (reads, deltas) = (full_reads(&mock), delta_reads(&mock));
    let restarted = Scheduled::on(&mock, &database, |_| {}).await;
    let report = restarted.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Delta);
    assert_eq!(restarted.last_pull().await, "delta");
    assert_eq!(full_reads(&mock), reads, "no group was read in full");
    assert!(delta_reads(&mock) > deltas, "the stored link was followed");
    // Eve joined (a user and a membership added), Bob left his only managed group
    // (deactivated, membership removed), Carol's surname changed.
    assert!(report.add >= 2 && report.change >= 1, "{report:?}");
    assert_eq!(restarted.teams("eve@contoso.com").await, ["LLM Admins"]);
    assert!(restarted.teams("bob@contoso.com").await.is_empty());
    assert!(!restarted.user("bob@contoso.com").await.active);
    assert_eq!(
        restarted
            .user("carol@contoso.com")
            .await
            .family_name
            .as_deref(),
        Some("Diaz-Ng")
    );
    // Members nobody changed keep their details: they came from the stored base.
    let dave = restarted.user("dave@contoso.com").await;
    assert_eq!(dave.given_name.as_deref(), Some("Dave"));
    assert_eq!(dave.email.as_deref(), Some("dave@contoso.com"));
    assert_eq!(restarted.full_pull_changes().await, (0, 0, 0));
}

#[tokio::test]
async fn a_restarted_daemon_whose_stored_link_expired_resyncs_in_full() {
    let mock = GraphMock::start().await;
    let database = SharedDatabase::new().await;
    let before = Scheduled::on(&mock, &database, |_| {}).await;
    assert_eq!(before.run().await.outcome, "success");
    before.stop().await;

    mock.remove_member("g-admins", "u-alice");
    mock.expire_delta_tokens();
    let restarted = Scheduled::on(&mock, &database, |_| {}).await;
    let report = restarted.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Resync);
    assert_eq!(restarted.teams("alice@contoso.com").await, ["LLM Users"]);
    mock.add_member("g-admins", "u-alice");
    assert_eq!(restarted.run().await.pull, PullKind::Delta);
    assert_eq!(
        restarted.teams("alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
}

#[tokio::test]
async fn another_replica_continues_from_the_base_the_first_wrote() {
    let mock = GraphMock::start().await;
    let database = SharedDatabase::new().await;
    let first = Scheduled::on(&mock, &database, |_| {}).await;
    let second = Scheduled::on(&mock, &database, |_| {}).await;
    assert_eq!(first.run().await.pull, PullKind::Full);

    mock.add_member("g-admins", "u-eve");
    let report = second.run().await;
    assert_eq!(
        (report.outcome, report.pull),
        ("success", PullKind::Delta),
        "{report:?}"
    );
    assert_eq!(second.teams("eve@contoso.com").await, ["LLM Admins"]);

    // The first replica's own base (without Eve) is out of date: it must continue from
    // the one the second wrote, or it would take Eve out again.
    mock.set_user_field("u-dave", "surname", serde_json::json!("Kim-Lee"));
    let reads = full_reads(&mock);
    let report = first.run().await;
    assert_eq!(
        (report.outcome, report.pull),
        ("success", PullKind::Delta),
        "{report:?}"
    );
    assert_eq!(full_reads(&mock), reads, "no group was read in full");
    assert_eq!(report.destroy, 0, "{report:?}");
    assert_eq!(first.teams("eve@contoso.com").await, ["LLM Admins"]);
    assert_eq!(
        first.user("dave@contoso.com").await.family_name.as_deref(),
        Some("Kim-Lee")
    );

    mock.remove_member("g-users", "u-bob");
    let report = second.run().await;
    assert_eq!(report.pull, PullKind::Delta, "{report:?}");
    assert!(second.teams("bob@contoso.com").await.is_empty());
    assert_eq!(
        second.user("dave@contoso.com").await.family_name.as_deref(),
        Some("Kim-Lee"),
        "the first replica's change is in the base the second read"
    );
    assert_eq!(second.full_pull_changes().await, (0, 0, 0));
}

#[tokio::test]
async fn a_base_from_another_groups_filter_is_not_used() {
    let mock = GraphMock::start().await;
    let database = SharedDatabase::new().await;
    let before = Scheduled::on(&mock, &database, |_| {}).await;
    assert_eq!(before.run().await.outcome, "success");
    before.stop().await;

    // Sales now managed too: the stored base knows nothing of its members.
    let widened = |c: &mut scimsync::config::IdpConfig| {
        c.groups = vec!["LLM *".into(), "Sales".into()];
    };
    let reads = full_reads(&mock);
    let restarted = Scheduled::on(&mock, &database, widened).await;
    let report = restarted.run().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(report.pull, PullKind::Full);
    assert_eq!(restarted.last_pull().await, "full");
    assert!(full_reads(&mock) > reads, "read in full");
    assert_eq!(restarted.teams("eve@contoso.com").await, ["Sales"]);
    restarted.stop().await;

    // The base that run stored is for the new filter, and is used.
    mock.remove_member("g-sales", "u-eve");
    let again = Scheduled::on(&mock, &database, widened).await;
    let report = again.run().await;
    assert_eq!(report.pull, PullKind::Delta, "{report:?}");
    assert!(again.teams("eve@contoso.com").await.is_empty());
    assert_eq!(again.full_pull_changes().await, (0, 0, 0));
}

#[tokio::test]
async fn a_refused_apply_keeps_the_previous_base() {
    let mock = GraphMock::start().await;
    let database = SharedDatabase::new().await;
    let mut s = Scheduled::on(&mock, &database, |_| {}).await;
    assert_eq!(s.run().await.outcome, "success");
    let stored = s.app.store.delta_base("entra").await.unwrap();
    assert!(stored.0.is_some() && stored.1.is_some());

    // Bob leaves his only managed group (a deactivation) and Eve joins LLM Admins; a
    // guard that allows no deletion refuses the plan: Eve's addition is applied, Bob's
    // removal is kept in quarantine.
    mock.remove_member("g-users", "u-bob");
    mock.add_member("g-admins", "u-eve");
    s.config.safety.max_deletion_ratio = 0.0;
    let report = s.run().await;
    assert_eq!(report.outcome, "quarantined", "{report:?}");
    assert_eq!(report.pull, PullKind::Delta);
    assert_eq!(
        s.app.store.delta_base("entra").await.unwrap(),
        stored,
        "the base and cursor of the last run that was not refused stay"
    );
    assert_eq!(s.teams("bob@contoso.com").await, ["LLM Users"]);
    assert_eq!(s.teams("eve@contoso.com").await, ["LLM Admins"]);
    s.stop().await;

    // After a restart with the guard relaxed, the plan still awaits a decision; once
    // rejected, the next delta still has Bob's change.
    let restarted = Scheduled::on(&mock, &database, |_| {}).await;
    let report = restarted.run().await;
    assert_eq!(report.outcome, "quarantined", "{report:?}");
    assert_eq!(restarted.teams("bob@contoso.com").await, ["LLM Users"]);
    let kept = report.quarantined.expect("the plan in quarantine").plan;
    scimsync::reconcile::Engine::new(restarted.app.store.clone())
        .reject_quarantined(
            kept,
            &scimsync::reconcile::Actor::new(scimsync::domain::Trigger::Cli, "operator"),
        )
        .await
        .expect("rejected");
    let report = restarted.run().await;
    assert_eq!(
        (report.outcome, report.pull),
        ("success", PullKind::Delta),
        "{report:?}"
    );
    assert!(restarted.teams("bob@contoso.com").await.is_empty());
    assert!(!restarted.user("bob@contoso.com").await.active);
    assert_eq!(restarted.teams("eve@contoso.com").await, ["LLM Admins"]);
    assert_eq!(restarted.full_pull_changes().await, (0, 0, 0));
}

#[tokio::test]
async fn pulls_are_counted_by_kind_in_the_metrics() {
    let mock = GraphMock::start().await;
    let s = Scheduled::new(&mock, |c| c.name = "entra-pulls-counted".into()).await;
    scimsync::metrics::init();
    let count = |kind: &str| {
        let needle =
            format!("scimsync_sync_pulls_total{{idp=\"entra-pulls-counted\",kind=\"{kind}\"}} ");
        scimsync::metrics::render()
            .lines()
            .find_map(|l| l.strip_prefix(needle.as_str()).map(str::to_owned))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(s.run().await.pull, PullKind::Full);
    mock.add_member("g-admins", "u-eve");
    assert_eq!(s.run().await.pull, PullKind::Delta);
    assert_eq!((count("full"), count("delta"), count("resync")), (1, 1, 0));
    assert!(scimsync::metrics::render().contains("# HELP scimsync_sync_pulls_total "));
}
