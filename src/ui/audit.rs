//! The audit log: filtered by time, trigger, actor and target, paged newest first by
//! row id, and exported as JSON with the same filter.

use super::layout::{self, Section};
use super::session::Admin;
use super::{UiError, UiResult, BASE};
use crate::state::AppState;
use crate::store::console::{AuditFilter, TargetMatch};
use crate::store::ExportedEntry;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

const PAGE: u32 = 50;
/// The most entries one JSON export holds; `scimsync audit export` streams any number.
const EXPORT_LIMIT: u32 = 50_000;
const TRIGGERS: &[&str] = &["scim", "sso", "sync", "cli", "ui"];

#[derive(Debug, Deserialize, Default)]
pub struct AuditParams {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    trigger: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
    before: Option<i64>,
}

/// A date (`2026-12-07`), a date and time (`2026-12-07T10:00`, from a
/// datetime-local field) or RFC 3339, all UTC.
fn parse_time(raw: &str, what: &str) -> UiResult<Option<DateTime<Utc>>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    Err(UiError::BadRequest(format!(
        "{what} {raw:?} is not a time: give YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
    )))
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl AuditParams {
    fn filter(&self) -> UiResult<AuditFilter> {
        Ok(AuditFilter {
            since: parse_time(&self.since, "since")?,
            until: parse_time(&self.until, "until")?,
            trigger: non_empty(&self.trigger),
            actor: non_empty(&self.actor),
            target: non_empty(&self.target).map(TargetMatch::StartsWith),
        })
    }

    /// The filter as a query string, for the next page and the export link.
    fn query_string(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("since", self.since.trim())
            .append_pair("until", self.until.trim())
            .append_pair("trigger", self.trigger.trim())
            .append_pair("actor", self.actor.trim())
            .append_pair("target", self.target.trim())
            .finish()
    }
}

/// Audit entries as a table (also on a user's page).
pub fn table(entries: &[ExportedEntry]) -> Markup {
    html! {
        @if entries.is_empty() { p.muted { "No audit entries." } } @else {
            div.table-wrap {
                table.audit {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Trigger" } th scope="col" { "Actor" }
                        th scope="col" { "Operation" } th scope="col" { "Target" } th scope="col" { "Detail" } } }
                    tbody {
                        @for e in entries {
                            tr {
                                td { (layout::when(Some(e.entry.at))) }
                                td { (e.entry.trigger) }
                                td { (e.entry.actor) }
                                td { (e.entry.operation) }
                                td { code { (e.entry.target) } }
                                td.wrap { @let detail = e.entry.detail.to_string();
                                    @if detail.len() <= 60 { code.detail { (detail) } } @else {
                                        details { summary { "Show" } code.detail { (detail) } }
                                    } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn page(
    State(state): State<AppState>,
    admin: Admin,
    Query(params): Query<AuditParams>,
) -> UiResult<Markup> {
    let filter = params.filter()?;
    let entries = state.store.audit_page(&filter, params.before, PAGE).await?;
    let query = params.query_string();
    let older = (entries.len() == PAGE as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let body = html! {
        h1 { "Audit log" }
        form.filters role="search" method="get" action={(BASE) "/audit"} {
            div { label for="since" { "From (UTC)" } input type="datetime-local" id="since" name="since" value=(params.since); }
            div { label for="until" { "Until (UTC)" } input type="datetime-local" id="until" name="until" value=(params.until); }
            div { label for="trigger" { "Trigger" }
                select id="trigger" name="trigger" {
                    option value="" { "any" }
                    @for t in TRIGGERS { option value=(t) selected[params.trigger == *t] { (t) } }
                } }
            div { label for="actor" { "Actor" } input type="text" id="actor" name="actor" value=(params.actor) placeholder="ui:admin"; }
            div { label for="target" { "Target begins with" } input type="text" id="target" name="target" value=(params.target) placeholder="user:"; }
            div.actions { button type="submit" { "Filter" } }
        }
        p { a href={(BASE) "/audit/export?" (query)} download="audit.json" { "Export these entries as JSON" }
            span.muted { " (up to " (EXPORT_LIMIT) "; " code { "scimsync audit export" } " has no limit)" } }
        (table(&entries))
        nav.pager aria-label="Pages" {
            @if params.before.is_some() { a href={(BASE) "/audit?" (query)} { "Newest" } }
            @if let Some(id) = older { a rel="next" href={(BASE) "/audit?" (query) "&before=" (id)} { "Older →" } }
        }
    };
    Ok(layout::page(&admin, Section::Audit, "Audit", body))
}

/// The filtered entries as a JSON array, newest first.
pub async fn export(
    State(state): State<AppState>,
    admin: Admin,
    Query(params): Query<AuditParams>,
) -> UiResult<Response> {
    let filter = params.filter()?;
    let entries = state
        .store
        .audit_page(&filter, params.before, EXPORT_LIMIT)
        .await?;
    let body = serde_json::to_vec_pretty(&entries)
        .map_err(|e| UiError::BadRequest(format!("cannot encode the entries: {e}")))?;
    tracing::info!(admin = %admin.token_name, entries = entries.len(), "console: audit exported");
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.json\"",
            ),
        ],
        body,
    )
        .into_response())
}
