//! Plans: what a guard refused in a scheduled or sign-in sync, kept for an admin to
//! approve or reject (as `scimsync plans` does, through the same engine calls). A
//! decision posts a form and lands back on the plan's page (post/redirect/get), so a
//! reload never posts it again; a second decision about a decided plan (two tabs, a
//! double click) is refused by the engine in its transaction and said so here.

use super::layout::{self, Section};
use super::session::Admin;
use super::{UiError, UiResult, BASE};
use crate::reconcile::{summary, Approval, Engine, EngineError, Policy};
use crate::state::AppState;
use crate::store::quarantine::{PlanSummary, QuarantinedPlan};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

/// Decided plans shown per page.
const PAGE: u64 = 50;

/// A plan id from the address; anything else is a plan that does not exist.
fn plan_id(raw: &str) -> UiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| UiError::NotFound("there is no such plan".into()))
}

fn plan_href(id: i64) -> String {
    format!("{BASE}/plans/{id}")
}

/// A plan's decision in words: `approved by ui:admin`, with when.
fn decision(kept: &QuarantinedPlan) -> Markup {
    html! {
        @match &kept.decision {
            None => strong.pending { "awaiting a decision" },
            Some(d) => {
                strong class={"decision " (d)} { (d) }
                " by " (kept.decided_by.as_deref().unwrap_or("?"))
                " · " (layout::when(kept.decided))
                @if let Some(next) = kept.superseded_by {
                    " · replaced by " a href=(plan_href(next)) { "plan " (next) }
                }
            }
        }
    }
}

/// What a plan would do: its counts, and the first of its removals by name.
fn would(summary: Option<&PlanSummary>) -> Markup {
    html! {
        @match summary {
            Some(s) => {
                (s.counts())
                @if let Some(removes) = s.removes_line() { br; "removes " (removes) }
            }
            None => span.muted { "unreadable; see the plan" },
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    offset: u64,
}

/// Plans awaiting a decision, then decided ones, newest first.
pub async fn list(
    State(state): State<AppState>,
    admin: Admin,
    Query(params): Query<ListParams>,
) -> UiResult<Markup> {
    let (mut pending, (mut decided, total)) = tokio::try_join!(
        state.store.quarantined_plans(false),
        state.store.decided_quarantined_plans(params.offset, PAGE)
    )?;
    summary::fill_missing(&state.store, &mut pending).await?;
    summary::fill_missing(&state.store, &mut decided).await?;
    let body = html! {
        h1 { "Plans" }
        p.help { "A sync whose plan a safety guard refuses (too many removals) keeps it here. "
            "While an IdP has a plan waiting, its syncs still apply additions and updates, "
            "but hold every removal until the plan is approved or rejected." }
        section aria-labelledby="pending-title" {
            h2 id="pending-title" { "Awaiting a decision" }
            @if pending.is_empty() {
                p { "No plan awaits a decision." }
            }
            div.cards {
                @for kept in &pending {
                    article.card aria-labelledby={"plan-" (kept.id)} {
                        h3 id={"plan-" (kept.id)} { a href=(plan_href(kept.id)) { "Plan " (kept.id) " · " (kept.idp) } }
                        dl {
                            dt { "Kept" } dd { (layout::when(Some(kept.created))) " · " (kept.trigger) }
                            dt { "Why" } dd { (kept.reason) }
                            dt { "Summary" } dd { (would(kept.summary.as_ref())) }
                        }
                        p { a href=(plan_href(kept.id)) { "Review plan " (kept.id) " and decide" } }
                    }
                }
            }
        }
        section aria-labelledby="decided-title" {
            h2 id="decided-title" { "Decided" }
            @if total == 0 {
                p { "No plan has been decided yet." }
            } @else {
                div.table-wrap {
                    table.plans {
                        caption.visually-hidden { "Decided plans" }
                        thead { tr { th scope="col" { "Plan" } th scope="col" { "IdP" } th scope="col" { "Decision" }
                            th scope="col" { "Summary" } th scope="col" { "Kept" } } }
                        tbody {
                            @for kept in &decided {
                                tr {
                                    td { a href=(plan_href(kept.id)) { "Plan " (kept.id) } }
                                    td { (kept.idp) }
                                    td.wrap { (decision(kept)) }
                                    td.wrap { (would(kept.summary.as_ref())) }
                                    td { (layout::when(Some(kept.created))) }
                                }
                            }
                        }
                    }
                }
                (layout::pager(&format!("{BASE}/plans"), "", params.offset, PAGE, total))
            }
        }
    };
    Ok(layout::page(&admin, Section::Plans, "Plans", body))
}

/// Set by a decision that lands back on the plan's page.
#[derive(Debug, Deserialize, Default)]
pub struct PlanParams {
    done: Option<String>,
    #[serde(default)]
    applied: u64,
    #[serde(default)]
    unchanged: u64,
}

/// The decision just made, as the page reports it. Only which one comes from the
/// address: what it says is read from the plan as stored.
fn done_notice(params: &PlanParams, kept: &QuarantinedPlan) -> Option<Markup> {
    let id = kept.id;
    match (params.done.as_deref(), kept.decision.as_deref()) {
        (Some("approved"), Some("approved")) => Some(html! {
            "Plan " (id) " is approved: " (params.applied) " operations applied, "
            (params.unchanged) " already in place."
        }),
        (Some("rejected"), Some("rejected")) => Some(html! {
            "Plan " (id) " is rejected: nothing was applied. The next sync of "
            (kept.idp) " plans afresh."
        }),
        (Some("replanned"), Some("superseded")) => kept.superseded_by.map(|next| {
            html! {
                "Nothing was applied: the store had changed since plan " (id) " was made. "
                "It was planned again from the same IdP answer against the store as it is now "
                "and kept as " a href=(plan_href(next)) { "plan " (next) } " for review: "
                "look at it, then approve or reject it."
            }
        }),
        _ => None,
    }
}

pub async fn show(
    State(state): State<AppState>,
    admin: Admin,
    Path(raw): Path<String>,
    Query(params): Query<PlanParams>,
) -> UiResult<Response> {
    let id = plan_id(&raw)?;
    render(&state, &admin, id, &params, None, StatusCode::OK).await
}

/// A plan's page: what it is, why it was kept, what it would do, the decision or the
/// forms to make it, and its diff. `params` may report a decision just made; `error`
/// a decision refused.
async fn render(
    state: &AppState,
    admin: &Admin,
    id: i64,
    params: &PlanParams,
    error: Option<String>,
    status: StatusCode,
) -> UiResult<Response> {
    let Some((kept, body)) = state.store.quarantined_plan(id).await? else {
        return Err(UiError::NotFound(format!("there is no plan {id}")));
    };
    let summary = kept.summary.clone().or_else(|| summary::of_kept(&body));
    let rendered = layout::shorten_plan(&body.rendered, &format!("scimsync plans show {id}"));
    let page = html! {
        h1 { "Plan " (id) " · " (kept.idp) }
        @if let Some(notice) = done_notice(params, &kept) { p.notice role="status" { (notice) } }
        @if let Some(error) = &error { p.error role="alert" { (error) } }
        dl.plan-facts {
            dt { "Status" } dd { (decision(&kept)) }
            dt { "IdP" } dd { (kept.idp) }
            dt { "Trigger" } dd { (kept.trigger) }
            dt { "Kept" } dd { (layout::when(Some(kept.created))) }
            dt { "Why" } dd { (kept.reason) }
            dt { "Summary" } dd { (would(summary.as_ref())) }
        }
        @if kept.is_pending() {
            section.decide aria-labelledby="decide-title" {
                h2 id="decide-title" { "Decide" }
                p.help { "Approving applies every change below, removals included, if the store is still "
                    "as the plan found it. If it has changed since, nothing is applied: the plan is made "
                    "again and kept for review. Rejecting applies nothing; the IdP's next sync plans afresh." }
                div.decide-forms {
                    form method="post" action={(plan_href(id)) "/approve"} {
                        (layout::csrf(admin))
                        button type="submit" { "Approve plan " (id) " and apply its removals" }
                    }
                    form method="post" action={(plan_href(id)) "/reject"} {
                        (layout::csrf(admin))
                        button.danger type="submit" { "Reject plan " (id) " (apply nothing)" }
                    }
                }
            }
        }
        section aria-labelledby="changes-title" {
            h2 id="changes-title" { "Changes" }
            @if !kept.is_pending() {
                p.help { "As the plan was kept: its [refused] marks are the guard's verdict when the sync made it." }
            }
            (layout::plan_text(&rendered, &format!("Changes of plan {id}")))
        }
        p { a href={(BASE) "/plans"} { "All plans" } }
    };
    let title = format!("Plan {id}");
    Ok((status, layout::page(admin, Section::Plans, &title, page)).into_response())
}

/// Approves a plan, as `scimsync plans approve` does: applied with deletions allowed
/// if the store has not changed since it was made, else planned again and kept.
pub async fn approve(
    State(state): State<AppState>,
    admin: Admin,
    Path(raw): Path<String>,
) -> UiResult<Response> {
    let id = plan_id(&raw)?;
    let policy = Policy::from_config(&state.current_config(), crate::store::now());
    let outcome = Engine::new(state.store.clone())
        .approve_quarantined(id, &policy, &admin.actor())
        .await;
    match outcome {
        Ok(Approval::Applied(applied)) => {
            tracing::info!(admin = %admin.token_name, plan = id, applied = applied.summary.applied,
                "console: quarantined plan approved and applied");
            Ok(Redirect::to(&format!(
                "{}?done=approved&applied={}&unchanged={}",
                plan_href(id),
                applied.summary.applied,
                applied.summary.unchanged
            ))
            .into_response())
        }
        Ok(Approval::Replanned { id: new, .. }) => {
            tracing::info!(admin = %admin.token_name, plan = id, replanned = new,
                "console: the store had changed; the plan was made again and kept");
            Ok(Redirect::to(&format!("{}?done=replanned", plan_href(id))).into_response())
        }
        Err(e) => refused(&state, &admin, id, e).await,
    }
}

/// Rejects a plan: nothing applied, the decision audited.
pub async fn reject(
    State(state): State<AppState>,
    admin: Admin,
    Path(raw): Path<String>,
) -> UiResult<Response> {
    let id = plan_id(&raw)?;
    match Engine::new(state.store.clone())
        .reject_quarantined(id, &admin.actor())
        .await
    {
        Ok(_) => {
            tracing::info!(admin = %admin.token_name, plan = id, "console: quarantined plan rejected");
            Ok(Redirect::to(&format!("{}?done=rejected", plan_href(id))).into_response())
        }
        Err(e) => refused(&state, &admin, id, e).await,
    }
}

/// A decision the engine refused: a decided plan's page says what it was decided
/// already, and that nothing was done now.
async fn refused(state: &AppState, admin: &Admin, id: i64, e: EngineError) -> UiResult<Response> {
    match e {
        EngineError::NoSuchQuarantinedPlan(_) => {
            Err(UiError::NotFound(format!("there is no plan {id}")))
        }
        EngineError::AlreadyDecided { decision, by, .. } => {
            let message =
                format!("Plan {id} was {decision} already (by {by}); nothing was done now.");
            let none = PlanParams::default();
            render(state, admin, id, &none, Some(message), StatusCode::CONFLICT).await
        }
        other => Err(other.into()),
    }
}
