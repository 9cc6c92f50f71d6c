//! Overview: per IdP its mode, last sync, next run and last error; per token its last
//! request; and "sync now", which pulls the IdP and shows the plan first, then applies
//! exactly that plan on confirmation (refused if the store changed meanwhile), under
//! the IdP's sync lock, like `scimsync plan --idp` and `apply --plan`.

use super::layout::{self, Section};
use super::session::Admin;
use super::{UiError, UiResult, BASE};
use crate::domain::TokenScope;
use crate::reconcile::{self, Engine, EngineError, Plan, Policy, Request};
use crate::state::AppState;
use crate::store::quarantine::QuarantinedPlan;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A shown plan waits this long for its confirmation.
const PLAN_LIFETIME: Duration = Duration::from_secs(15 * 60);

struct Pending {
    idp: String,
    admin: String,
    plan: Plan,
    made: Instant,
}

/// Plans shown by "sync now", awaiting confirmation, by a random id. In memory: a
/// restart forgets them, and the admin plans again.
#[derive(Clone, Default)]
pub struct PendingPlans(Arc<Mutex<HashMap<String, Pending>>>);

impl PendingPlans {
    fn put(&self, pending: Pending) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(mut plans) = self.0.lock() {
            plans.retain(|_, p| p.made.elapsed() < PLAN_LIFETIME);
            plans.insert(id.clone(), pending);
        }
        id
    }

    fn take(&self, id: &str) -> Option<Pending> {
        let mut plans = self.0.lock().ok()?;
        plans
            .remove(id)
            .filter(|p| p.made.elapsed() < PLAN_LIFETIME)
    }
}

/// The next time a cron schedule (with seconds) fires.
fn next_run(schedule: &str) -> Option<DateTime<Utc>> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        // As tokio-cron-scheduler parses the same schedule, so the time shown is the
        // time it runs.
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .ok()?
        .find_next_occurrence(&Utc::now(), false)
        .ok()
}

/// `1 user`, `2 users`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn text<'a>(result: Option<&'a serde_json::Value>, key: &str) -> Option<&'a str> {
    result?.get(key)?.as_str()
}

fn number(result: Option<&serde_json::Value>, key: &str) -> u64 {
    result
        .and_then(|r| r.get(key))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

pub async fn page(State(state): State<AppState>, admin: Admin) -> UiResult<Markup> {
    let config = state.current_config();
    let (states, tokens, pending) = tokio::try_join!(
        state.store.sync_states(),
        state.store.list_tokens(),
        state.store.quarantined_plans(false)
    )?;
    let mut idps: Vec<String> = config.idp.iter().map(|i| i.name.clone()).collect();
    for token in &tokens {
        if token.scope == TokenScope::Scim && token.revoked.is_none() && !idps.contains(&token.idp)
        {
            idps.push(token.idp.clone());
        }
    }
    for kept in &pending {
        if !idps.contains(&kept.idp) {
            idps.push(kept.idp.clone());
        }
    }
    let mut outboxes = Vec::with_capacity(config.target.len());
    for target in &config.target {
        outboxes.push((target, state.store.outbox_depth(&target.name).await?));
    }
    let now = crate::store::now();
    let body = html! {
        h1 { "Overview" }
        section aria-labelledby="idps-title" {
            h2 id="idps-title" { "Identity providers" }
            @if idps.is_empty() {
                p { "No [[idp]] is configured and no SCIM token pushes yet. Start at "
                    a href={(BASE) "/scim"} { "SCIM setup" } "." }
            }
            div.cards {
                @for name in &idps {
                    @let idp_config = config.idp.iter().find(|i| &i.name == name);
                    @let pushes = tokens.iter().any(|t| t.scope == TokenScope::Scim && t.revoked.is_none() && &t.idp == name);
                    @let mode = match (idp_config.is_some(), pushes) { (true, true) => "push and pull", (true, false) => "pull", _ => "push (SCIM)" };
                    @let sync = states.iter().find(|s| &s.idp == name);
                    @let result = sync.and_then(|s| s.last_result.as_ref());
                    @let kept = pending.iter().find(|p| &p.idp == name);
                    article.card aria-labelledby={"idp-" (name)} {
                        h3 id={"idp-" (name)} { (name) }
                        dl {
                            dt { "Mode" } dd { (mode) }
                            @if let Some(c) = idp_config { dt { "Kind" } dd { (format!("{:?}", c.kind).to_lowercase()) } }
                            dt { "Last sync" }
                            dd { (layout::when(sync.and_then(|s| s.last_pull)))
                                @if let Some(outcome) = text(result, "outcome") {
                                    " · " span class={"outcome " (outcome)} { (outcome) }
                                    " · " (text(result, "pull").unwrap_or("full"))
                                    " · " (number(result, "duration_ms")) " ms"
                                }
                            }
                            @if result.is_some() {
                                dt { "Counts" }
                                dd { (count(number(result, "users"), "user")) ", " (count(number(result, "groups"), "group")) " read; "
                                    (number(result, "add")) " added, " (number(result, "change")) " changed, "
                                    (number(result, "destroy")) " removed" }
                            }
                            dt { "Last success" } dd { (layout::when(sync.and_then(|s| s.last_success))) }
                            dt { "Next run" }
                            dd { @match idp_config.and_then(|c| c.schedule.as_deref()) {
                                Some(schedule) => { (layout::when(next_run(schedule))) " (" code { (schedule) } ")" }
                                None => span.muted { "not scheduled" },
                            } }
                            // A refusal whose plan is kept is said below, with the plan.
                            @if let Some(error) = text(result, "error").filter(|e| Some(*e) != kept.map(|k| k.reason.as_str())) {
                                dt { "Last error" } dd.error { (error) }
                            }
                        }
                        @if let Some(kept) = kept { (held(name, kept)) }
                        @if idp_config.is_some() {
                            form method="post" action={(BASE) "/sync/" (name) "/plan"} {
                                (layout::csrf(&admin))
                                button type="submit" aria-label={"Sync " (name) " now (shows the plan first)"} { "Sync now…" }
                            }
                        }
                    }
                }
            }
        }
        @if !outboxes.is_empty() {
            section aria-labelledby="targets-title" {
                h2 id="targets-title" { "Targets" }
                p.help { "Every committed change is queued for each gateway and delivered in order; \
                          a growing queue or an old oldest change means the gateway is not taking them." }
                div.table-wrap {
                    table {
                        thead { tr { th scope="col" { "Target" } th scope="col" { "Kind" } th scope="col" { "URL" }
                                     th scope="col" { "Changes waiting" } th scope="col" { "Oldest waiting" } } }
                        tbody {
                            @for (target, (depth, oldest)) in &outboxes {
                                tr { td { (target.name) } td { (format!("{:?}", target.kind).to_lowercase()) }
                                     td { code { (target.url) } } td { (depth) }
                                     td { (waiting_for(*oldest, now)) } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="tokens-title" {
            h2 id="tokens-title" { "Tokens" }
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Token" } th scope="col" { "Scope" } th scope="col" { "IdP" } th scope="col" { "Last request" } } }
                    tbody {
                        @for t in tokens.iter().filter(|t| t.revoked.is_none()) {
                            tr { td { (t.name) } td { (t.scope) }
                                td { @if t.scope == TokenScope::Scim { (t.idp) } }
                                td { (layout::when(t.last_used)) } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&admin, Section::Overview, "Overview", body))
}

/// How long the oldest queued change has waited ("—" for an empty queue), to the
/// second: the lag an operator compares with their alert's threshold.
fn waiting_for(oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match oldest {
        None => "—".to_owned(),
        Some(at) => {
            let seconds = (now - at).num_seconds().max(0).unsigned_abs();
            humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
        }
    }
}

/// An IdP's plan in quarantine: while it waits, its syncs hold every removal back.
fn held(idp: &str, kept: &QuarantinedPlan) -> Markup {
    html! {
        section.held aria-labelledby={"held-" (idp)} {
            h4 id={"held-" (idp)} { "Removals held: plan " (kept.id) " awaits a decision" }
            p { a href={(BASE) "/plans/" (kept.id)} { "Review plan " (kept.id) }
                " · kept " (layout::when(Some(kept.created))) }
            p.reason { (kept.reason) }
            p.help { "Until it is approved or rejected, syncs of " (idp)
                " apply additions and updates but no removals." }
        }
    }
}

/// Pulls the IdP and shows what applying would change; nothing is written.
pub async fn plan_sync(
    State(state): State<AppState>,
    Extension(pending): Extension<PendingPlans>,
    admin: Admin,
    Path(idp): Path<String>,
) -> UiResult<Response> {
    let config = state.current_config();
    crate::idp::idp_config(&config, &idp).map_err(|e| UiError::NotFound(e.to_string()))?;
    let snapshot = crate::idp::pull_snapshot(&config, &idp)
        .await
        .map_err(|e| UiError::BadRequest(format!("pulling {idp} failed: {e}")))?;
    let desired = snapshot.into_desired();
    // While a plan of this IdP awaits a decision its removals are that plan's to make:
    // a sync started here holds them back as a scheduled one does, or an operator
    // could apply some of them without looking at the plan that kept them.
    let kept = pending_plan_of(&state, &idp).await?;
    let policy = Policy {
        hold_removals: kept.is_some(),
        ..Policy::from_config(&config, crate::store::now())
    };
    let actor = admin.actor();
    let request = Request {
        fingerprint: true,
        ..Request::new(&desired, &policy, &actor)
    };
    let (plan, refusal) = match Engine::new(state.store.clone()).plan(request).await {
        Ok(plan) => (Some(plan), None),
        Err(e) if e.is_guard_refusal() => (None, Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let rendered = plan.as_ref().map(|p| {
        layout::shorten_plan(
            &reconcile::render::render_text(p, false),
            &format!("scimsync plan --idp {idp}"),
        )
    });
    let confirm = plan.filter(|p| !p.is_empty()).map(|plan| {
        pending.put(Pending {
            idp: idp.clone(),
            admin: admin.token_name.clone(),
            plan,
            made: Instant::now(),
        })
    });
    let body = html! {
        h1 { "Sync " (idp) ": plan" }
        @if let Some(kept) = &kept {
            p.notice role="status" {
                "Removals held: " a href={(BASE) "/plans/" (kept.id)} { "plan " (kept.id) }
                " awaits a decision, so this sync applies additions and updates only. "
                "Approve or reject plan " (kept.id) " to settle the removals."
            }
        }
        @if let Some(refusal) = &refusal {
            p.error role="alert" { (refusal) }
            p { "The console does not override the safety limits; review with "
                code { "scimsync plan --idp " (idp) } "." }
        }
        @if let Some(rendered) = &rendered { (layout::plan_text(rendered, &format!("Plan for {idp}"))) }
        @match &confirm {
            Some(id) => {
                form method="post" action={(BASE) "/sync/" (idp) "/apply"} {
                    (layout::csrf(&admin))
                    input type="hidden" name="plan" value=(id);
                    button type="submit" { "Apply this plan" }
                    " " a href=(BASE) { "Cancel" }
                }
            }
            None => { p { a href=(BASE) { "Back to the overview" } } }
        }
    };
    Ok(layout::page(&admin, Section::Overview, "Sync plan", body).into_response())
}

/// The plan of `idp` awaiting a decision, if any.
async fn pending_plan_of(state: &AppState, idp: &str) -> UiResult<Option<QuarantinedPlan>> {
    let pending = state.store.quarantined_plans(false).await?;
    Ok(pending.into_iter().find(|kept| kept.idp == idp))
}

#[derive(Deserialize)]
pub struct ApplyForm {
    plan: String,
}

/// Applies the plan shown, if the store is still what it was planned against.
pub async fn apply_sync(
    State(state): State<AppState>,
    Extension(pending): Extension<PendingPlans>,
    admin: Admin,
    Path(idp): Path<String>,
    Form(form): Form<ApplyForm>,
) -> UiResult<Response> {
    let Some(shown) = pending
        .take(&form.plan)
        .filter(|p| p.idp == idp && p.admin == admin.token_name)
    else {
        return Err(UiError::NotFound(
            "that plan is no longer waiting (applied, expired, or the daemon restarted); plan again"
                .into(),
        ));
    };
    if pending_plan_of(&state, &idp).await?.is_some()
        && shown.plan.ops.iter().any(|op| op.is_removal())
    {
        return Err(UiError::BadRequest(format!(
            "a plan of {idp} was kept for review after this one was shown, and its removals \
             are held until it is decided; nothing was applied. Plan again."
        )));
    }
    let Some(lock) = state.store.try_sync_lock(&idp).await? else {
        return Err(UiError::BadRequest(format!(
            "another sync of {idp} is running; nothing was applied. Try again once it has finished."
        )));
    };
    let config = state.current_config();
    let policy = Policy::from_config(&config, crate::store::now());
    let result = Engine::new(state.store.clone())
        .apply_saved(shown.plan, &policy, &admin.actor(), |_| {})
        .await;
    lock.release().await;
    let applied = match result {
        Ok(applied) => applied,
        Err(EngineError::StalePlan) => {
            return Err(UiError::BadRequest(
                "the store changed since this plan was made; nothing was applied. Plan again."
                    .into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(admin = %admin.token_name, %idp, applied = applied.summary.applied, "console: sync applied");
    let body = html! {
        h1 { "Sync " (idp) ": applied" }
        p.notice role="status" { (applied.summary.applied) " operations applied, "
            (applied.summary.unchanged) " already in place." }
        p { a href=(BASE) { "Back to the overview" } }
    };
    Ok(layout::page(&admin, Section::Overview, "Sync applied", body).into_response())
}
