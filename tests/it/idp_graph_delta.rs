//! Scheduled Entra syncs with Microsoft Graph delta queries: the first run pulls in
//! full and stores where to resume; later runs read only what changed (groups/delta
//! with members@delta, users/delta) and apply it to the last run's state; a link Graph
//! no longer knows means a full resync; a delta that fails changes nothing; nested
//! groups, and groups entering the managed set, are read in full.

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

impl Scheduled {
    async fn new(
        mock: &GraphMock,
        configure: impl FnOnce(&mut scimsync::config::IdpConfig),
    ) -> Self {
        let mut idp_config = mock.config("entra", &["LLM *"]);
        configure(&mut idp_config);
        let app = TestApp::spawn_with(|_| {}).await;
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
