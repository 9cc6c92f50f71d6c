//! Users, teams and keys: searchable, paged lists through the store's list queries
//! (which page over an index, so a deep page of 100,000 users costs what the first
//! does), a page per user and per team, key revocation, and a dry-run sign-in.

use super::layout::{self, Section};
use super::session::Admin;
use super::{UiError, UiResult, BASE};
use crate::domain::Team;
use crate::state::AppState;
use crate::store::console::{AuditFilter, KeyFilter, KeyRow, TargetMatch};
use crate::store::query::{Comparison, Field, ListQuery, Predicate, Sort, Value};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

const PAGE: u64 = 50;

#[derive(Debug, Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: u64,
    /// Set by a key revocation that returns here: the revoked key's prefix.
    revoked: Option<String>,
}

fn revoked_notice(prefix: Option<&str>) -> Markup {
    layout::notice(prefix.map(|p| format!("Key {p}… is revoked.")).as_deref())
}

impl ListParams {
    fn query_string(&self) -> String {
        if self.q.trim().is_empty() {
            String::new()
        } else {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("q", self.q.trim())
                .finish()
        }
    }
}

fn parse_id(raw: &str, what: &str) -> UiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| UiError::NotFound(format!("no such {what}")))
}

/// Names beginning with `prefix`, as an index range on the folded column: the page is
/// read in name order from the same index, however many users there are.
fn name_prefix(field: Field, prefix: &str) -> Predicate {
    Predicate::And(
        Box::new(Predicate::Compare {
            field: field.clone(),
            op: Comparison::GreaterOrEqual,
            value: Value::Text(prefix.to_owned()),
        }),
        Box::new(Predicate::Compare {
            field,
            op: Comparison::Less,
            value: Value::Text(format!("{prefix}\u{10FFFF}")),
        }),
    )
}

fn search_form(action: &str, label: &str, q: &str) -> Markup {
    html! {
        form.search role="search" method="get" action=(action) {
            div.field { label for="q" { (label) } input type="search" id="q" name="q" value=(q); }
            button type="submit" { "Search" }
        }
    }
}

pub async fn users(
    State(state): State<AppState>,
    admin: Admin,
    Query(params): Query<ListParams>,
) -> UiResult<Markup> {
    let q = params.q.trim();
    let query = ListQuery {
        filter: (!q.is_empty()).then(|| name_prefix(Field::UserName, q)),
        // userName order is served by the unique index on the folded name, which
        // also serves the search's range.
        sort: Some(Sort {
            field: Field::UserName,
            descending: false,
        }),
        offset: params.offset,
        limit: PAGE,
    };
    let listed = state.store.list_users(&query).await?;
    let ids: Vec<Uuid> = listed.items.iter().map(|u| u.id).collect();
    let groups = state.store.groups_of_users(&ids).await?;
    let body = html! {
        h1 { "Users" }
        (search_form(&format!("{BASE}/users"), "userName begins with", q))
        div.table-wrap {
            table {
                caption.visually-hidden { "Users" }
                thead { tr { th scope="col" { "userName" } th scope="col" { "Name" } th scope="col" { "Active" }
                    th scope="col" { "Source" } th scope="col" { "Teams" } } }
                tbody {
                    @for user in &listed.items {
                        tr {
                            td { a href={(BASE) "/users/" (user.id)} { (user.user_name.as_str()) } }
                            td { (user.display_name.as_deref().unwrap_or("")) }
                            td { @if user.active { "yes" } @else { strong { "no" } } }
                            td { (user.source) }
                            td { @for (i, g) in groups.get(&user.id).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
                                @if i > 0 { ", " }
                                a href={(BASE) "/teams/" (g.id)} { (g.display_name.as_str()) }
                            } }
                        }
                    }
                }
            }
        }
        (layout::pager(&format!("{BASE}/users"), &params.query_string(), params.offset, PAGE, listed.total))
    };
    Ok(layout::page(&admin, Section::Users, "Users", body))
}

fn keys_table(admin: &Admin, keys: &[KeyRow], back: &str) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr { th scope="col" { "Prefix" } th scope="col" { "User" } th scope="col" { "Team" }
                    th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "State" }
                    th scope="col" { span.visually-hidden { "Action" } } } }
                tbody {
                    @for row in keys {
                        @let key = &row.key;
                        tr {
                            td { code { (key.prefix) "…" } }
                            td { a href={(BASE) "/users/" (key.user_id)} { (row.user_name) } }
                            td { @match (key.team_id, &row.team_name) {
                                (Some(id), Some(name)) => a href={(BASE) "/teams/" (id)} { (name) },
                                _ => span.muted { "personal" },
                            } }
                            td { (key.name.as_deref().unwrap_or("")) }
                            td { (layout::when(Some(key.created))) }
                            td { @match key.blocked_by {
                                Some(by) => { "blocked (" (by.as_str()) ")" },
                                None => @if key.expires.is_some_and(|e| e < chrono::Utc::now()) { "expired" } @else { "active" },
                            } }
                            td {
                                form.inline method="post" action={(BASE) "/keys/" (key.id) "/revoke"} {
                                    (layout::csrf(admin))
                                    input type="hidden" name="back" value=(back);
                                    button.danger type="submit" aria-label={"Revoke key " (key.prefix)} { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The user a console URL names (by id), or the page's 404.
async fn existing_user(state: &AppState, id: &str) -> UiResult<crate::domain::User> {
    let id = parse_id(id, "user")?;
    state
        .store
        .user(id)
        .await?
        .ok_or_else(|| UiError::NotFound("no such user".into()))
}

pub async fn user(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
) -> UiResult<Markup> {
    let user = existing_user(&state, &id).await?;
    let id = user.id;
    let back = format!("{BASE}/users/{id}");
    let filter = KeyFilter {
        user: Some(id),
        ..KeyFilter::default()
    };
    let audit_filter = AuditFilter {
        target: Some(TargetMatch::Exactly(format!("user:{id}"))),
        ..AuditFilter::default()
    };
    let ids = [id];
    let (groups, keys, audit) = tokio::try_join!(
        state.store.groups_of_users(&ids),
        state.store.keys_page(&filter, 0, 200),
        state.store.audit_page(&audit_filter, None, 20),
    )?;
    let keys = keys.items;
    let idps: Vec<String> = state
        .current_config()
        .idp
        .iter()
        .map(|i| i.name.clone())
        .collect();
    let body = html! {
        h1 { (user.user_name.as_str()) }
        (revoked_notice(params.revoked.as_deref()))
        dl.facts {
            dt { "Display name" } dd { (user.display_name.as_deref().unwrap_or("—")) }
            dt { "Email" } dd { (user.email.as_deref().unwrap_or("—")) }
            dt { "Active" } dd { @if user.active { "yes" } @else { "no" } }
            dt { "Role" } dd { (user.role.as_str()) }
            dt { "Source" } dd { (user.source) }
            dt { "External id" } dd { (user.external_id.as_deref().unwrap_or("—")) }
            dt { "Created" } dd { (layout::when(Some(user.created))) }
            dt { "Modified" } dd { (layout::when(Some(user.modified))) }
        }
        h2 { "Teams" }
        @let teams = groups.get(&id).map(Vec::as_slice).unwrap_or_default();
        @if teams.is_empty() { p.muted { "In no team." } }
        ul { @for g in teams { li { a href={(BASE) "/teams/" (g.id)} { (g.display_name.as_str()) } } } }
        h2 { "Keys" }
        @if keys.is_empty() { p.muted { "No keys." } } @else { (keys_table(&admin, &keys, &back)) }
        h2 { "Recent audit entries" }
        (super::audit::table(&audit))
        p { a href={(BASE) "/audit?target=user:" (id)} { "All audit entries for this user" } }
        h2 { "Dry-run sign-in" }
        @if idps.is_empty() {
            p.muted { "A dry-run sign-in asks an [[idp]] for the user's groups; none is configured." }
        } @else {
            form.stacked method="post" action={(BASE) "/users/" (id) "/dry-run"} {
                (layout::csrf(&admin))
                label for="dry-run-idp" { "What would a sign-in through this IdP change?" }
                select id="dry-run-idp" name="idp" { @for idp in &idps { option value=(idp) { (idp) } } }
                button type="submit" { "Plan a sign-in (changes nothing)" }
            }
        }
    };
    Ok(layout::page(
        &admin,
        Section::Users,
        user.user_name.as_str(),
        body,
    ))
}

#[derive(Deserialize)]
pub struct DryRunForm {
    idp: String,
}

/// What a sign-in of this user would change: the sign-in hook's dry run.
pub async fn dry_run_sign_in(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Form(form): Form<DryRunForm>,
) -> UiResult<Response> {
    let user = existing_user(&state, &id).await?;
    let id = user.id;
    let config = state.current_config();
    let timeout = Duration::from_secs(config.sso.timeout_secs.max(1));
    let outcome = tokio::time::timeout(
        timeout,
        crate::sso::sign_in_from_cli(
            &state.store,
            config,
            &form.idp,
            user.user_name.as_str(),
            true,
        ),
    )
    .await;
    let body = html! {
        h1 { "Dry-run sign-in: " (user.user_name.as_str()) " via " (form.idp) }
        @match outcome {
            Err(_) => p.error role="alert" { "The IdP did not answer within [sso] timeout_secs." },
            Ok(Err(e)) => p.error role="alert" { (e) },
            Ok(Ok(outcome)) => {
                p { "Teams the IdP puts " (outcome.user_name) " in: "
                    @if outcome.teams.is_empty() { "none" } @else { (outcome.teams.join(", ")) } "." }
                pre.plan { (crate::reconcile::render::render_text(&outcome.plan, false)) }
                p.muted { "Nothing was changed." }
            }
        }
        p { a href={(BASE) "/users/" (id)} { "Back to " (user.user_name.as_str()) } }
    };
    Ok(layout::page(&admin, Section::Users, "Dry-run sign-in", body).into_response())
}

pub async fn teams(
    State(state): State<AppState>,
    admin: Admin,
    Query(params): Query<ListParams>,
) -> UiResult<Markup> {
    let q = params.q.trim();
    let query = ListQuery {
        filter: (!q.is_empty()).then(|| name_prefix(Field::TeamName, &q.to_lowercase())),
        sort: Some(Sort {
            field: Field::TeamName,
            descending: false,
        }),
        offset: params.offset,
        limit: PAGE,
    };
    let listed = state.store.list_teams(&query).await?;
    let body = html! {
        h1 { "Teams" }
        (search_form(&format!("{BASE}/teams"), "Team name begins with", q))
        div.table-wrap {
            table {
                thead { tr { th scope="col" { "Team" } th scope="col" { "Source" } th scope="col" { "External id" } th scope="col" { "Created" } } }
                tbody {
                    @for team in &listed.items {
                        tr {
                            td { a href={(BASE) "/teams/" (team.id)} { (team.display_name.as_str()) } }
                            td { (team.source) }
                            td { (team.external_id.as_deref().unwrap_or("")) }
                            td { (layout::when(Some(team.created))) }
                        }
                    }
                }
            }
        }
        (layout::pager(&format!("{BASE}/teams"), &params.query_string(), params.offset, PAGE, listed.total))
    };
    Ok(layout::page(&admin, Section::Teams, "Teams", body))
}

pub async fn team(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
) -> UiResult<Markup> {
    let id = parse_id(&id, "team")?;
    let team: Team = state
        .store
        .team(id)
        .await?
        .ok_or_else(|| UiError::NotFound("no such team".into()))?;
    // The roster is read from the memberships primary key (team, user) and only the
    // page's users are looked up: a team's page costs the same among 100,000 users as
    // among 100. Members are in id order, which is stable across pages.
    let key_filter = KeyFilter {
        team: Some(id),
        ..KeyFilter::default()
    };
    let ids = [id];
    let (mut rosters, keys) = tokio::try_join!(
        state.store.members_of_teams(&ids),
        state.store.keys_page(&key_filter, 0, 200),
    )?;
    let roster = rosters.remove(&id).unwrap_or_default();
    let total = roster.len() as u64;
    let page: Vec<Uuid> = roster
        .iter()
        .skip(usize::try_from(params.offset).unwrap_or(usize::MAX))
        .take(PAGE as usize)
        .map(|m| m.id)
        .collect();
    let mut members = Vec::with_capacity(page.len());
    for user in futures::future::try_join_all(page.iter().map(|id| state.store.user(*id))).await? {
        members.extend(user);
    }
    members.sort_by(|a, b| a.user_name.as_str().cmp(b.user_name.as_str()));
    let back = format!("{BASE}/teams/{id}");
    let body = html! {
        h1 { (team.display_name.as_str()) }
        (revoked_notice(params.revoked.as_deref()))
        dl.facts {
            dt { "Source" } dd { (team.source) }
            dt { "External id" } dd { (team.external_id.as_deref().unwrap_or("—")) }
            dt { "Created" } dd { (layout::when(Some(team.created))) }
        }
        h2 { "Members" }
        @if members.is_empty() { p.muted { "No members." } }
        ul.members { @for u in &members { li { a href={(BASE) "/users/" (u.id)} { (u.user_name.as_str()) } } } }
        (layout::pager(&back, "", params.offset, PAGE, total))
        h2 { "Keys" }
        @if keys.items.is_empty() { p.muted { "No keys scoped to this team." } } @else { (keys_table(&admin, &keys.items, &back)) }
    };
    Ok(layout::page(
        &admin,
        Section::Teams,
        team.display_name.as_str(),
        body,
    ))
}

#[derive(Debug, Deserialize, Default)]
pub struct KeyParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    offset: u64,
    revoked: Option<String>,
}

pub async fn keys(
    State(state): State<AppState>,
    admin: Admin,
    Query(params): Query<KeyParams>,
) -> UiResult<Markup> {
    let q = params.q.trim();
    let filter = KeyFilter {
        search: (!q.is_empty()).then(|| q.to_owned()),
        blocked: match params.state.as_str() {
            "blocked" => Some(true),
            "unblocked" => Some(false),
            _ => None,
        },
        ..KeyFilter::default()
    };
    let listed = state.store.keys_page(&filter, params.offset, PAGE).await?;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("q", q)
        .append_pair("state", &params.state)
        .finish();
    let body = html! {
        h1 { "Keys" }
        (revoked_notice(params.revoked.as_deref()))
        form.search role="search" method="get" action={(BASE) "/keys"} {
            div.field { label for="q" { "Key prefix or userName begins with" }
                input type="search" id="q" name="q" value=(q); }
            div.field.narrow { label for="state" { "State" }
                select id="state" name="state" {
                    option value="" selected[params.state.is_empty()] { "any" }
                    option value="unblocked" selected[params.state == "unblocked"] { "not blocked" }
                    option value="blocked" selected[params.state == "blocked"] { "blocked" }
                } }
            button type="submit" { "Filter" }
        }
        @if listed.items.is_empty() { p.muted { "No keys match." } } @else { (keys_table(&admin, &listed.items, &format!("{BASE}/keys"))) }
        (layout::pager(&format!("{BASE}/keys"), &query, params.offset, PAGE, listed.total))
    };
    Ok(layout::page(&admin, Section::Keys, "Keys", body))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    back: String,
}

/// Revokes a key through the engine (which audits it), then returns to the page the
/// form was on.
pub async fn revoke_key(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> UiResult<Response> {
    let id = parse_id(&id, "key")?;
    let prefix = state.store.key_row(id).await?.map(|row| row.key.prefix);
    if !state.engine.revoke_key(id, &admin.actor()).await? {
        return Err(UiError::NotFound("that key is already gone".into()));
    }
    tracing::info!(admin = %admin.token_name, key = %id, "console: key revoked");
    // Only our own pages: an open redirect would let a link send an admin anywhere.
    let back = if form.back.starts_with(BASE) && !form.back.starts_with("//") {
        form.back
    } else {
        format!("{BASE}/keys")
    };
    let separator = if back.contains('?') { '&' } else { '?' };
    let target = format!(
        "{back}{separator}{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("revoked", prefix.as_deref().unwrap_or("the"))
            .finish()
    );
    Ok(Redirect::to(&target).into_response())
}
