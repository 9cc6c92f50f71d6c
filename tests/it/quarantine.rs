//! Quarantined plans: a sync whose plan a guard refuses keeps it for an operator,
//! applies its additions and updates, and holds its removals until `scimsync plans
//! approve` or `reject` decides. Against the Graph mock and the real store (SQLite,
//! or PostgreSQL with SCIMSYNC_TEST_POSTGRES_URL), decided from the built binary.

use crate::common::{teams_of, TestApp};
use crate::idp_mocks::graph::GraphMock;
use scimsync::domain::{Trigger, UserName};
use scimsync::reconcile::Actor;
use scimsync::sync::SyncReport;
use serde_json::Value;
use std::process::{Command, Output};

/// A Graph tenant synced once, managing LLM Users (alice, bob, carol, dave) and LLM
/// Admins (alice), under an IdP name of its own (metrics are process-wide).
struct Synced {
    mock: GraphMock,
    app: TestApp,
    config: scimsync::config::Config,
    idp: &'static str,
}

impl Synced {
    async fn new(idp: &'static str) -> Self {
        let mock = GraphMock::start().await;
        let app = TestApp::spawn().await;
        let mut config = app.config.clone();
        config.idp.push(mock.config(idp, &["LLM *"]));
        let s = Synced {
            mock,
            app,
            config,
            idp,
        };
        assert_eq!(s.sync().await.outcome, "success");
        s
    }

    async fn sync(&self) -> SyncReport {
        let actor = Actor::new(Trigger::Sync, "scheduler");
        scimsync::sync::sync_now(&self.app.store, &self.config, self.idp, &actor)
            .await
            .expect("the IdP is configured")
    }

    /// The IdP suddenly answers LLM Users with nobody in it, while Eve joins LLM Admins.
    fn empty_the_users_group(&self) {
        for user in ["u-alice", "u-bob", "u-carol", "u-dave", "d-printer"] {
            self.mock.remove_member("g-users", user);
        }
        self.mock.add_member("g-admins", "u-eve");
    }

    async fn active(&self, user: &str) -> bool {
        crate::common::is_active(&self.app.store, user).await
    }

    /// Runs the built binary against the app's database, as an operator would.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scimsync"));
        cmd.arg("--database-url")
            .arg(&self.app.config.database.url)
            .args(args)
            .env_remove("SCIMSYNC_CONFIG")
            .env_remove("SCIMSYNC_DATABASE_URL")
            .env("SCIMSYNC_LOG_LEVEL", "warn");
        tokio::task::spawn_blocking(move || cmd.output().expect("scimsync runs"))
            .await
            .expect("the command finished")
    }

    /// The audit entries of `operation`, as `scimsync audit --format json` lists them.
    async fn audited(&self, operation: &str) -> Vec<Value> {
        let out = self.cli(&["audit", "--format", "json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let entries: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON audit");
        entries
            .into_iter()
            .filter(|e| e["operation"] == operation)
            .collect()
    }

    async fn pending(&self) -> Vec<scimsync::store::quarantine::QuarantinedPlan> {
        self.app
            .store
            .quarantined_plans(false)
            .await
            .expect("listed")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn metric(name_and_labels: &str) -> Option<f64> {
    scimsync::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_suddenly_empty_group_is_quarantined_and_only_the_additions_are_applied() {
    scimsync::metrics::init();
    let s = Synced::new("entra-quarantine-empty").await;
    s.empty_the_users_group();

    let report = s.sync().await;
    assert_eq!(report.outcome, "quarantined", "{report:?}");
    let note = report.quarantined.clone().expect("the run says so");
    assert!(note.refused, "{note:?}");
    assert_eq!(note.guard, Some("deletions"));
    assert!(
        note.reason
            .as_deref()
            .is_some_and(|r| r.contains("refusing to delete or deactivate")),
        "{note:?}"
    );
    assert_eq!(note.held.len(), 1, "{note:?}");
    // No removal applied...
    for user in ["alice@contoso.com", "bob@contoso.com", "carol@contoso.com"] {
        assert!(s.active(user).await, "{user} stays active");
        assert!(
            teams_of(&s.app.store, user)
                .await
                .contains(&"LLM Users".to_owned()),
            "{user} stays in LLM Users"
        );
    }
    // ... while the addition is.
    assert_eq!(
        teams_of(&s.app.store, "eve@contoso.com").await,
        ["LLM Admins"]
    );

    // The plan is kept, whole, with why; last_result and /metrics say so.
    let kept = s.pending().await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    let plan = &kept[0];
    assert_eq!(
        (plan.id, plan.idp.as_str(), plan.trigger.as_str()),
        (note.plan, s.idp, "sync")
    );
    assert!(plan.reason.contains("refusing to delete or deactivate"));
    let (_, body) = s
        .app
        .store
        .quarantined_plan(plan.id)
        .await
        .unwrap()
        .expect("kept");
    assert!(
        body.rendered
            .contains("~ user bob@contoso.com (deactivate) [refused]"),
        "{}",
        body.rendered
    );
    assert!(
        !body.rendered.contains("eve@contoso.com"),
        "the additions are applied already, so not in the kept plan: {}",
        body.rendered
    );
    let state = s.app.store.sync_state(s.idp).await.unwrap().unwrap();
    let result = state.last_result.expect("recorded");
    assert_eq!(result["outcome"], "quarantined", "{result}");
    assert_eq!(result["quarantined"]["plan"], plan.id, "{result}");
    assert_eq!(state.consecutive_failures, 0);
    let gauge = format!("scimsync_quarantined_plans{{idp=\"{}\"}} ", s.idp);
    assert_eq!(metric(&gauge), Some(1.0));
    let refusals = format!(
        "scimsync_guard_refusals_total{{idp=\"{}\",guard=\"deletions\"}} ",
        s.idp
    );
    assert_eq!(metric(&refusals), Some(1.0));
    let audited = s.audited("quarantine_plan").await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["target"], format!("plan:{}", plan.id));
    assert_eq!(audited[0]["actor"], "scheduler");

    // The same refusal again keeps the same plan rather than piling up.
    let again = s.sync().await;
    assert_eq!(again.outcome, "quarantined");
    assert_eq!(again.quarantined.map(|q| q.plan), Some(plan.id));
    assert_eq!(s.app.store.quarantined_plans(true).await.unwrap().len(), 1);
    assert_eq!(metric(&refusals), Some(2.0));

    // `plans list` and `plans show` show it like `plan` does.
    let list = s.cli(&["plans", "list"]).await;
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    assert!(stdout(&list).contains(s.idp), "{}", stdout(&list));
    let id = plan.id.to_string();
    let show = s.cli(&["plans", "show", &id]).await;
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    let text = stdout(&show);
    assert!(
        text.contains("~ user carol@contoso.com (deactivate) [refused]")
            && text.contains("Refused by the guard: refusing to delete or deactivate")
            && text.contains(&format!("scimsync plans approve {id}")),
        "{text}"
    );
    let json = s.cli(&["plans", "show", &id, "--format", "json"]).await;
    let doc: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(doc["plan"]["guard"]["refused"], true, "{doc}");
}

#[tokio::test]
async fn while_a_plan_is_in_quarantine_later_syncs_apply_no_removals() {
    let s = Synced::new("entra-quarantine-hold").await;
    s.empty_the_users_group();
    let first = s.sync().await.quarantined.expect("quarantined").plan;

    // The IdP heals, but Alice also leaves LLM Admins: a removal the guards would
    // allow, held all the same while the IdP has a plan awaiting a decision.
    for user in ["u-alice", "u-bob", "u-carol", "u-dave"] {
        s.mock.add_member("g-users", user);
    }
    s.mock.remove_member("g-admins", "u-alice");
    s.mock.add_member("g-users", "u-eve");
    let report = s.sync().await;
    assert_eq!(report.outcome, "quarantined", "{report:?}");
    let note = report.quarantined.expect("said");
    assert_eq!((note.plan, note.refused), (first, false));
    assert!(
        note.held
            .first()
            .is_some_and(|w| w.contains("1 membership removal(s)")),
        "{:?}",
        note.held
    );
    assert_eq!(
        teams_of(&s.app.store, "alice@contoso.com").await,
        ["LLM Admins", "LLM Users"],
        "the removal waits"
    );
    assert_eq!(
        teams_of(&s.app.store, "eve@contoso.com").await,
        ["LLM Admins", "LLM Users"],
        "additions go on"
    );

    // Rejected, the next sync applies the IdP's removals as usual.
    let id = first.to_string();
    let reject = s.cli(&["plans", "reject", &id, "--by", "ops-bob"]).await;
    assert_eq!(reject.status.code(), Some(0), "{}", stderr(&reject));
    let report = s.sync().await;
    assert_eq!(report.outcome, "success", "{report:?}");
    assert_eq!(
        teams_of(&s.app.store, "alice@contoso.com").await,
        ["LLM Users"]
    );
}

#[tokio::test]
async fn approving_a_quarantined_plan_applies_it_and_the_audit_names_the_operator() {
    let s = Synced::new("entra-quarantine-approve").await;
    s.empty_the_users_group();
    let id = s.sync().await.quarantined.expect("quarantined").plan;

    let out = s
        .cli(&["plans", "approve", &id.to_string(), "--by", "ops-alice"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("Approved plan {id}")),
        "{}",
        stdout(&out)
    );
    assert!(
        !s.active("bob@contoso.com").await,
        "the removals are applied"
    );
    assert!(teams_of(&s.app.store, "bob@contoso.com").await.is_empty());
    assert_eq!(
        teams_of(&s.app.store, "alice@contoso.com").await,
        ["LLM Admins"]
    );
    assert!(s.pending().await.is_empty());
    let decided = s.app.store.quarantined_plans(true).await.unwrap();
    assert_eq!(decided[0].decision.as_deref(), Some("approved"));
    assert_eq!(decided[0].decided_by.as_deref(), Some("ops-alice"));

    let audited = s.audited("approve_plan").await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(
        (
            &audited[0]["actor"],
            &audited[0]["trigger"],
            &audited[0]["target"]
        ),
        (
            &Value::from("ops-alice"),
            &Value::from("cli"),
            &Value::from(format!("plan:{id}"))
        )
    );
    // Its operations are audited with the same actor.
    let deactivated = s.audited("deactivate_user").await;
    assert!(
        !deactivated.is_empty() && deactivated.iter().all(|e| e["actor"] == "ops-alice"),
        "{deactivated:?}"
    );

    // A decided plan cannot be decided again.
    let again = s.cli(&["plans", "reject", &id.to_string()]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("was approved already (by ops-alice)"),
        "{}",
        stderr(&again)
    );
}

#[tokio::test]
async fn rejecting_a_quarantined_plan_drops_it_and_removes_nothing() {
    let s = Synced::new("entra-quarantine-reject").await;
    s.empty_the_users_group();
    let id = s.sync().await.quarantined.expect("quarantined").plan;

    let out = s
        .cli(&["plans", "reject", &id.to_string(), "--by", "ops-carol"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(s.pending().await.is_empty());
    assert!(s.active("bob@contoso.com").await);
    assert_eq!(
        teams_of(&s.app.store, "bob@contoso.com").await,
        ["LLM Users"]
    );
    let audited = s.audited("reject_plan").await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["actor"], "ops-carol");
    assert_eq!(audited[0]["target"], format!("plan:{id}"));

    // The IdP still says the same: the next sync is refused again, a new plan.
    let next = s.sync().await.quarantined.expect("quarantined again").plan;
    assert_ne!(next, id);
    let list = s.cli(&["plans", "list", "--all", "--format", "json"]).await;
    let all: Vec<Value> = serde_json::from_slice(&list.stdout).expect("JSON");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["decision"], "rejected");
}

#[tokio::test]
async fn approving_after_the_store_changed_plans_again_and_keeps_the_new_plan() {
    let s = Synced::new("entra-quarantine-stale").await;
    s.empty_the_users_group();
    let id = s.sync().await.quarantined.expect("quarantined").plan;

    // Someone adds a user by hand: the store is no longer what the plan was made against.
    s.app.seed_user("walk-in@example.com").await;
    let out = s
        .cli(&["plans", "approve", &id.to_string(), "--by", "ops-dan"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Nothing was applied: the store has changed"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("~ user bob@contoso.com (deactivate) [refused]"),
        "the new plan is shown: {}",
        stdout(&out)
    );
    assert!(s.active("bob@contoso.com").await, "nothing applied");

    let pending = s.pending().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let new = &pending[0];
    assert_ne!(new.id, id);
    assert!(
        new.reason
            .starts_with(&format!("planned again when plan {id} was approved")),
        "{}",
        new.reason
    );
    let all = s.app.store.quarantined_plans(true).await.unwrap();
    let old = all.iter().find(|p| p.id == id).expect("kept");
    assert_eq!(
        (old.decision.as_deref(), old.superseded_by),
        (Some("superseded"), Some(new.id))
    );
    let replanned = s.audited("replan_plan").await;
    assert_eq!(replanned.len(), 1);
    assert_eq!(replanned[0]["actor"], "ops-dan");

    // The old one now points at the new one; approving the new one applies it.
    let stale = s.cli(&["plans", "approve", &id.to_string()]).await;
    assert_eq!(stale.status.code(), Some(1));
    assert!(
        stderr(&stale).contains(&format!("review plan {} instead", new.id)),
        "{}",
        stderr(&stale)
    );
    let out = s
        .cli(&["plans", "approve", &new.id.to_string(), "--by", "ops-dan"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!s.active("bob@contoso.com").await);
    assert!(
        s.active("walk-in@example.com").await,
        "not the IdP's to remove"
    );
}

#[tokio::test]
async fn plans_list_says_what_each_plan_would_remove_by_name_in_text_and_json() {
    let s = Synced::new("entra-quarantine-names").await;
    s.empty_the_users_group();
    let id = s.sync().await.quarantined.expect("quarantined").plan;

    let list = s.cli(&["plans", "list"]).await;
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    let text = stdout(&list);
    let row = text
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .unwrap_or_else(|| panic!("a line for plan {id}: {text}"));
    assert!(
        row.contains("pending")
            && row.contains("to add,")
            && row
                .contains("; removes bob@contoso.com (deactivate), carol@contoso.com (deactivate)"),
        "{row}"
    );
    let bob = s
        .app
        .store
        .user_by_name(&UserName::parse("bob@contoso.com").unwrap())
        .await
        .unwrap()
        .expect("bob");
    assert!(
        !text.contains(&bob.id.to_string()),
        "names, not ids: {text}"
    );
    assert!(!text.contains("refusing"), "the reason is --wide's: {text}");
    let wide = stdout(&s.cli(&["plans", "list", "--wide"]).await);
    assert!(wide.contains("refusing to delete or deactivate"), "{wide}");

    let json = s.cli(&["plans", "list", "--format", "json"]).await;
    let plans: Vec<Value> = serde_json::from_slice(&json.stdout).expect("JSON");
    let summary = &plans[0]["summary"];
    assert!(
        summary["removals"].as_u64().is_some_and(|n| n >= 2),
        "{summary}"
    );
    assert_eq!(
        summary["removes"][0],
        serde_json::json!({"kind": "deactivate_user", "user": "bob@contoso.com"}),
        "{summary}"
    );

    let show = stdout(&s.cli(&["plans", "show", &id.to_string()]).await);
    assert!(
        show.lines().any(|l| l.starts_with("Would: ")
            && l.contains("removes bob@contoso.com (deactivate)")),
        "{show}"
    );
    let show_json = s
        .cli(&["plans", "show", &id.to_string(), "--format", "json"])
        .await;
    let doc: Value = serde_json::from_slice(&show_json.stdout).expect("JSON");
    assert_eq!(doc["summary"]["removes"][0]["user"], "bob@contoso.com");
}
