//! The console's Plans pages over plain HTTP: a plan a guard refused in a pull of the
//! Graph mock, listed with its names, shown with its diff, and approved or rejected
//! through the same engine calls as `scimsync plans`, audited with the session. The
//! browser flow is in ui_browser.rs.

use crate::common::{teams_of, TestApp};
use crate::idp_mocks::graph::GraphMock;
use crate::ui_http::{client, sign_in, Session};
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use scimsync::domain::{Trigger, UserName};
use scimsync::reconcile::Actor;

/// The daemon with a Graph tenant synced once, then emptied of LLM Users so that the
/// next pull is refused by the deletion guard and its plan kept.
pub struct Quarantined {
    /// The IdP, kept for as long as the test runs.
    pub mock: GraphMock,
    pub app: TestApp,
    /// The kept plan's id.
    pub plan: i64,
}

impl Quarantined {
    pub async fn new(idp: &'static str) -> Self {
        let mock = GraphMock::start().await;
        let idp_config = mock.config(idp, &["LLM *"]);
        let app = TestApp::spawn_with(move |c| c.idp = vec![idp_config]).await;
        let sync = |app: &TestApp| {
            let actor = Actor::new(Trigger::Sync, "scheduler");
            let store = app.store.clone();
            let config = app.config.clone();
            async move {
                scimsync::sync::sync_now(&store, &config, idp, &actor)
                    .await
                    .expect("the IdP is configured")
            }
        };
        assert_eq!(sync(&app).await.outcome, "success");
        for user in ["u-alice", "u-bob", "u-carol", "u-dave", "d-printer"] {
            mock.remove_member("g-users", user);
        }
        let report = sync(&app).await;
        assert_eq!(report.outcome, "quarantined", "{report:?}");
        let plan = report.quarantined.expect("kept").plan;
        Quarantined { mock, app, plan }
    }

    pub async fn active(&self, user: &str) -> bool {
        crate::common::is_active(&self.app.store, user).await
    }

    async fn get(&self, session: &Session, path: &str) -> (StatusCode, String) {
        let response = client()
            .get(self.app.url(path))
            .header("cookie", &session.cookie)
            .send()
            .await
            .expect("page");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    /// Posts a decision form; `csrf` as the form sends it (`None`: left out).
    async fn decide(
        &self,
        session: &Session,
        decision: &str,
        id: i64,
        csrf: Option<&str>,
    ) -> reqwest::Response {
        let form: Vec<(&str, &str)> = csrf.map(|c| ("csrf", c)).into_iter().collect();
        client()
            .post(self.app.url(&format!("/ui/plans/{id}/{decision}")))
            .header("cookie", &session.cookie)
            .form(&form)
            .send()
            .await
            .expect("posted")
    }

    async fn audit(&self, operation: &str) -> Vec<scimsync::store::AuditEntry> {
        self.app
            .store
            .audit_since(None)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.operation == operation)
            .collect()
    }
}

fn location(response: &reqwest::Response) -> String {
    response.headers()[LOCATION]
        .to_str()
        .expect("text")
        .to_owned()
}

#[tokio::test]
async fn ui_plans_lists_a_kept_plan_with_why_and_the_names_it_would_remove() {
    let q = Quarantined::new("entra-ui-list").await;
    let session = sign_in(&q.app, "admin").await;
    let (status, page) = q.get(&session, "/ui/plans").await;
    assert_eq!(status, StatusCode::OK);
    let id = q.plan;
    assert!(
        page.contains(&format!("Plan {id} · entra-ui-list")),
        "{page}"
    );
    assert!(
        page.contains("refusing to delete or deactivate"),
        "the guard's reason: {page}"
    );
    assert!(
        page.contains("bob@contoso.com (deactivate)")
            && page.contains("carol@contoso.com (deactivate)"),
        "removals by name: {page}"
    );
    let bob = q
        .app
        .store
        .user_by_name(&UserName::parse("bob@contoso.com").expect("name"))
        .await
        .expect("store")
        .expect("bob");
    assert!(
        !page.contains(&bob.id.to_string()),
        "names, not ids: {page}"
    );
    assert!(page.contains("No plan has been decided yet."), "{page}");
    // The navigation counts it, on every page.
    assert!(
        page.contains(r#"<span class="badge">1<span class="visually-hidden"> awaiting a decision</span></span>"#),
        "{page}"
    );
}

#[tokio::test]
async fn ui_overview_card_shows_the_pending_plan_and_that_removals_are_held() {
    let q = Quarantined::new("entra-ui-overview").await;
    let session = sign_in(&q.app, "admin").await;
    let (_, page) = q.get(&session, "/ui").await;
    let id = q.plan;
    assert!(
        page.contains(&format!("Removals held: plan {id} awaits a decision")),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"href="/ui/plans/{id}""#)),
        "links to it: {page}"
    );
    assert!(
        page.contains("apply additions and updates but no removals"),
        "{page}"
    );
    assert!(page.contains("refusing to delete or deactivate"), "{page}");
}

#[tokio::test]
async fn ui_plan_page_shows_the_kept_diff_coloured_by_class_and_the_decision_forms() {
    let q = Quarantined::new("entra-ui-show").await;
    let session = sign_in(&q.app, "admin").await;
    let id = q.plan;
    let response = client()
        .get(q.app.url(&format!("/ui/plans/{id}")))
        .header("cookie", &session.cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(
        csp.contains("style-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let page = response.text().await.expect("page");
    assert!(
        page.contains(
            r#"<span class="change">  ~ user bob@contoso.com (deactivate) [refused]</span>"#
        ),
        "{page}"
    );
    assert!(page.contains(r#"<span class="destroy">"#), "{page}");
    assert!(
        page.contains(r#"<span class="refusal">Refused by the guard: refusing to delete"#),
        "{page}"
    );
    assert!(!page.contains("style="), "no inline style: {page}");
    assert!(
        page.contains(&format!(r#"action="/ui/plans/{id}/approve""#))
            && page.contains(&format!("Approve plan {id} and apply its removals"))
            && page.contains(&format!("Reject plan {id} (apply nothing)")),
        "{page}"
    );
    assert!(
        page.contains(&session.csrf),
        "the forms carry the CSRF token"
    );

    for missing in ["/ui/plans/999999", "/ui/plans/abc", "/ui/plans/-1"] {
        let (status, page) = q.get(&session, missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert!(page.contains("there is no"), "{page}");
    }
}

#[tokio::test]
async fn ui_approving_a_plan_applies_it_and_audits_the_session_as_actor() {
    let q = Quarantined::new("entra-ui-approve").await;
    let session = sign_in(&q.app, "ops-admin").await;
    let id = q.plan;
    let response = q.decide(&session, "approve", id, Some(&session.csrf)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let to = location(&response);
    assert!(
        to.starts_with(&format!("/ui/plans/{id}?done=approved&applied=")),
        "{to}"
    );
    assert!(!q.active("bob@contoso.com").await, "the removals applied");
    assert!(teams_of(&q.app.store, "bob@contoso.com").await.is_empty());

    let (_, page) = q.get(&session, &to).await;
    assert!(
        page.contains(&format!("Plan {id} is approved:")) && page.contains("operations applied"),
        "{page}"
    );
    assert!(
        page.contains(r#"<strong class="decision approved">approved</strong> by ui:ops-admin"#),
        "{page}"
    );
    assert!(
        !page.contains("/approve\"") && !page.contains("/reject\""),
        "a decided plan has no buttons: {page}"
    );

    let approvals = q.audit("approve_plan").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(
        (
            approvals[0].actor.as_str(),
            approvals[0].trigger.as_str(),
            approvals[0].target.as_str()
        ),
        ("ui:ops-admin", "ui", format!("plan:{id}").as_str())
    );
    let deactivations = q.audit("deactivate_user").await;
    assert!(
        deactivations.iter().any(|e| e.actor == "ui:ops-admin"),
        "its operations are the admin's: {deactivations:?}"
    );

    // Decided, it leaves the pending list for the decided one, with who and when.
    let (_, list) = q.get(&session, "/ui/plans").await;
    assert!(list.contains("No plan awaits a decision."), "{list}");
    assert!(
        list.contains(
            r#"<strong class="decision approved">approved</strong> by ui:ops-admin · <time"#
        ),
        "{list}"
    );
}

#[tokio::test]
async fn ui_a_second_approval_of_a_plan_is_refused_and_applies_nothing_again() {
    let q = Quarantined::new("entra-ui-twice").await;
    let session = sign_in(&q.app, "admin").await;
    let id = q.plan;
    // Two tabs submitting at once: one applies, the other is told.
    let (a, b) = tokio::join!(
        q.decide(&session, "approve", id, Some(&session.csrf)),
        q.decide(&session, "approve", id, Some(&session.csrf))
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::SEE_OTHER, StatusCode::CONFLICT]);
    let refused = if a.status() == StatusCode::CONFLICT {
        a
    } else {
        b
    };
    let page = refused.text().await.expect("page");
    assert!(
        page.contains(&format!(
            "Plan {id} was approved already (by ui:admin); nothing was done now."
        )),
        "{page}"
    );
    assert!(!page.contains("/approve\""), "no buttons: {page}");

    // And again later (a reload, a third tab); a reject as well.
    let again = q.decide(&session, "approve", id, Some(&session.csrf)).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let reject = q.decide(&session, "reject", id, Some(&session.csrf)).await;
    assert_eq!(reject.status(), StatusCode::CONFLICT);
    assert_eq!(q.audit("approve_plan").await.len(), 1, "applied once");
    assert!(q.audit("reject_plan").await.is_empty());
}

#[tokio::test]
async fn ui_a_decision_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing() {
    let q = Quarantined::new("entra-ui-csrf").await;
    let session = sign_in(&q.app, "admin").await;
    let other = sign_in(&q.app, "other-admin").await;
    let id = q.plan;
    for (decision, csrf) in [
        ("approve", None),
        ("approve", Some("0".repeat(64))),
        ("approve", Some(other.csrf.clone())),
        ("reject", None),
    ] {
        let response = q.decide(&session, decision, id, csrf.as_deref()).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{decision} {csrf:?}"
        );
        let page = response.text().await.expect("page");
        assert!(page.contains("security token"), "{page}");
    }
    assert!(q.active("bob@contoso.com").await);
    let pending = q.app.store.quarantined_plans(false).await.expect("plans");
    assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), [id]);
}

#[tokio::test]
async fn ui_rejecting_a_plan_applies_nothing_and_is_audited_with_the_session() {
    let q = Quarantined::new("entra-ui-reject").await;
    let session = sign_in(&q.app, "admin").await;
    let id = q.plan;
    let response = q.decide(&session, "reject", id, Some(&session.csrf)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let to = location(&response);
    assert_eq!(to, format!("/ui/plans/{id}?done=rejected"));
    assert!(q.active("bob@contoso.com").await, "nothing applied");
    assert_eq!(
        teams_of(&q.app.store, "bob@contoso.com").await,
        ["LLM Users"]
    );
    let (_, page) = q.get(&session, &to).await;
    assert!(
        page.contains(&format!("Plan {id} is rejected: nothing was applied.")),
        "{page}"
    );
    let rejections = q.audit("reject_plan").await;
    assert_eq!(rejections.len(), 1);
    assert_eq!(rejections[0].actor, "ui:admin");
    assert_eq!(rejections[0].target, format!("plan:{id}"));
}

#[tokio::test]
async fn ui_approving_after_the_store_changed_plans_again_and_links_to_the_new_plan() {
    let q = Quarantined::new("entra-ui-stale").await;
    let session = sign_in(&q.app, "admin").await;
    let id = q.plan;
    q.app.seed_user("walk-in@example.com").await;
    let response = q.decide(&session, "approve", id, Some(&session.csrf)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let to = location(&response);
    assert_eq!(to, format!("/ui/plans/{id}?done=replanned"));
    assert!(q.active("bob@contoso.com").await, "nothing applied");

    let pending = q.app.store.quarantined_plans(false).await.expect("plans");
    assert_eq!(pending.len(), 1);
    let new = pending[0].id;
    assert_ne!(new, id);
    let (_, page) = q.get(&session, &to).await;
    assert!(
        page.contains("Nothing was applied: the store had changed since plan"),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"<a href="/ui/plans/{new}">plan {new}</a>"#)),
        "links to the new plan: {page}"
    );
    assert!(page.contains("superseded"), "{page}");
    assert!(!page.contains("/approve\""), "the old plan has no buttons");
    let (_, new_page) = q.get(&session, &format!("/ui/plans/{new}")).await;
    assert!(
        new_page.contains(&format!("action=\"/ui/plans/{new}/approve\"")),
        "the new plan awaits a decision: {new_page}"
    );
    assert_eq!(q.audit("replan_plan").await[0].actor, "ui:admin");
}

#[tokio::test]
async fn ui_plans_need_an_admin_session() {
    let q = Quarantined::new("entra-ui-session").await;
    let id = q.plan;
    // No session, or a SCIM token as a bearer: to the sign-in page, or refused.
    for bearer in [None, Some(q.app.scim_token.clone())] {
        let mut get = client().get(q.app.url(&format!("/ui/plans/{id}")));
        let mut post = client()
            .post(q.app.url(&format!("/ui/plans/{id}/approve")))
            .form(&[("csrf", "0".repeat(64))]);
        if let Some(token) = &bearer {
            get = get.bearer_auth(token);
            post = post.bearer_auth(token);
        }
        let page = get.send().await.expect("sent");
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&page), "/ui/sign-in");
        let posted = post.send().await.expect("sent");
        assert_eq!(posted.status(), StatusCode::UNAUTHORIZED);
    }
    // A session whose admin token is revoked ends with it.
    let session = sign_in(&q.app, "leaving-admin").await;
    q.app
        .store
        .revoke_token("leaving-admin")
        .await
        .expect("revoked");
    let posted = q.decide(&session, "approve", id, Some(&session.csrf)).await;
    assert_eq!(posted.status(), StatusCode::UNAUTHORIZED);
    assert!(q.active("bob@contoso.com").await, "nothing applied");
    assert!(q.audit("approve_plan").await.is_empty());
}

#[tokio::test]
async fn ui_a_plan_kept_without_a_readable_summary_is_summarised_from_the_plan_itself() {
    let q = Quarantined::new("entra-ui-legacy").await;
    let session = sign_in(&q.app, "admin").await;
    // Kept before summaries were (NULL), or by a version whose summary does not read.
    for summary in [None, Some("{not json")] {
        sqlx::query("UPDATE quarantined_plans SET summary = $1")
            .bind(summary)
            .execute(&crate::ui_http::database(&q.app).await)
            .await
            .expect("summary changed");
        let (_, list) = q.get(&session, "/ui/plans").await;
        assert!(
            list.contains("removes bob@contoso.com (deactivate)"),
            "{summary:?}: {list}"
        );
        let (_, page) = q.get(&session, &format!("/ui/plans/{}", q.plan)).await;
        assert!(
            page.contains("removes bob@contoso.com (deactivate)"),
            "{summary:?}: {page}"
        );
    }
}

#[tokio::test]
async fn a_console_sync_holds_removals_while_a_plan_of_its_idp_awaits_a_decision() {
    let q = Quarantined::new("entra-ui-hold").await;
    // Everyone but carol is back in the group: on its own, carol's removal is within the
    // guard's limits, so only the kept plan stands between the console and removing her.
    for user in ["u-alice", "u-bob", "u-dave", "d-printer"] {
        q.mock.add_member("g-users", user);
    }
    let session = sign_in(&q.app, "admin").await;
    let response = client()
        .post(q.app.url("/ui/sync/entra-ui-hold/plan"))
        .header("cookie", &session.cookie)
        .form(&[("csrf", session.csrf.as_str())])
        .send()
        .await
        .expect("posted");
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.expect("page");
    let id = q.plan;
    assert!(
        page.contains("Removals held: ") && page.contains(&format!("href=\"/ui/plans/{id}\"")),
        "the page names the plan that holds the removals: {page}"
    );
    assert!(
        !page.contains("name=\"plan\""),
        "nothing but removals was left to apply, so nothing is offered: {page}"
    );
    assert!(
        q.active("carol@contoso.com").await,
        "carol stays until plan {id} is decided"
    );
}
