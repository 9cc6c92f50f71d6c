//! /Users: each operation is parse → desired state → reconcile → render. Used by
//! the HTTP handlers and by /Bulk alike.

use super::list::{ListParams, Projection};
use super::lower::Resource;
use super::patch::{apply_operations, parse_patch_request};
use super::resources::{parse_user, render_user, UserInput};
use super::response::{expect_version, with_not_found, Written};
use crate::domain::User;
use crate::error::ApiError;
use crate::reconcile::{user_from_new, Actor, Desired, DesiredUser, Intent, Op, Scope};
use crate::state::AppState;
use axum::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// Attributes a PATCH may not change. `groups` is derived from memberships and is
/// changed through /Groups.
const READ_ONLY: &[&str] = &["id", "meta", "groups"];

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("User {id} not found"))
}

/// Ids are UUIDs; anything else names no user.
pub fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id.trim()).map_err(|_| not_found(id))
}

/// The desired state "this one user, like so".
fn one_user(
    actor: &Actor,
    input: UserInput,
    id: Uuid,
    intent: Intent,
    active_by_default: bool,
) -> Desired {
    let mut desired = Desired::new(actor.scim_source(), Scope::Listed);
    desired.users.push(DesiredUser {
        id: Some(id),
        intent,
        external_id: input.external_id,
        user_name: input.user_name,
        email: input.email,
        display_name: input.display_name,
        given_name: input.given_name,
        family_name: input.family_name,
        active: input.active.unwrap_or(active_by_default),
        role: None,
        attributes: Some(input.attributes),
    });
    desired
}

/// Renders users with their groups (loaded for the whole page in one query) unless
/// the client left `groups` out. The projection is applied by the caller.
async fn render_all(
    state: &AppState,
    base: &str,
    users: &[User],
    projection: &Projection,
) -> Result<Vec<Value>, ApiError> {
    let groups = if projection.wants("groups") {
        let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
        Some(state.store.groups_of_users(&ids).await?)
    } else {
        None
    };
    Ok(users
        .iter()
        .map(|user| {
            let mine = groups
                .as_ref()
                .map(|g| g.get(&user.id).map(Vec::as_slice).unwrap_or_default());
            render_user(user, mine, base)
        })
        .collect())
}

pub async fn list(
    state: &AppState,
    base: &str,
    params: &ListParams,
) -> Result<(u64, Vec<Value>), ApiError> {
    let query = params.query(Resource::User)?;
    let page = state.store.list_users(&query).await?;
    let mut resources = render_all(state, base, &page.items, &params.projection).await?;
    resources
        .iter_mut()
        .for_each(|r| params.projection.apply(r));
    Ok((page.total, resources))
}

/// The stored user as a 200 response (unprojected; the caller projects).
async fn read_back(
    state: &AppState,
    base: &str,
    id: Uuid,
    status: StatusCode,
) -> Result<Written, ApiError> {
    let user = state
        .store
        .user(id)
        .await?
        .ok_or_else(|| not_found(&id.to_string()))?;
    let groups = state.store.groups_of_users(&[id]).await?;
    let resource = render_user(
        &user,
        Some(groups.get(&id).map(Vec::as_slice).unwrap_or_default()),
        base,
    );
    Ok(Written {
        status,
        location: (status == StatusCode::CREATED).then(|| format!("{base}/Users/{id}")),
        resource: Some(resource),
        version: Some(user.version),
    })
}

pub async fn get(
    state: &AppState,
    base: &str,
    id: &str,
    projection: &Projection,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    let user = state.store.user(uuid).await?.ok_or_else(|| not_found(id))?;
    let mut rendered = render_all(state, base, std::slice::from_ref(&user), projection).await?;
    Ok(Written {
        status: StatusCode::OK,
        resource: rendered.pop(),
        version: Some(user.version),
        location: None,
    })
}

pub async fn create(
    state: &AppState,
    actor: &Actor,
    base: &str,
    body: &Value,
) -> Result<Written, ApiError> {
    let input = parse_user(body)?;
    let id = Uuid::new_v4();
    let desired = one_user(actor, input, id, Intent::Create, true);
    let created = state.writes().create(desired, actor.clone()).await?;
    let (plan, applied) = (created.plan, created.summary);
    // The row just inserted is exactly the plan's new user stamped with the apply's
    // time, and a new user is in no group: answering from it saves two reads.
    let inserted = plan.ops.iter().find_map(|op| match op {
        Op::CreateUser(new) if new.id == id => Some(user_from_new(new, applied.applied_at)),
        _ => None,
    });
    let Some(user) = inserted else {
        return read_back(state, base, id, StatusCode::CREATED).await;
    };
    Ok(Written {
        status: StatusCode::CREATED,
        location: Some(format!("{base}/Users/{id}")),
        resource: Some(render_user(&user, Some(&[]), base)),
        version: Some(user.version),
    })
}

/// PUT: a full replace of an existing user (never a create). Attributes left out
/// are cleared, except `active`, which stays as it is when not given. Committed with
/// whatever other writes are waiting (`reconcile::batch`).
pub async fn replace(
    state: &AppState,
    actor: &Actor,
    base: &str,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    let input = parse_user(body)?;
    let who = actor.clone();
    state
        .writes()
        .change_user(
            uuid,
            expect_version(if_match),
            state.policy(),
            actor.clone(),
            move |current| {
                Ok::<_, ApiError>(one_user(&who, input, uuid, Intent::Update, current.active))
            },
        )
        .await
        .map_err(|e| with_not_found(e, || not_found(id)))?;
    read_back(state, base, uuid, StatusCode::OK).await
}

/// PATCH: the operations are applied, in order, to the user as SCIM renders it, and
/// the result is the desired user. All or nothing; committed with whatever other
/// writes are waiting.
pub async fn patch(
    state: &AppState,
    actor: &Actor,
    base: &str,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    let operations = parse_patch_request(body)?;
    let (who, at) = (actor.clone(), base.to_owned());
    state
        .writes()
        .change_user(
            uuid,
            expect_version(if_match),
            state.policy(),
            actor.clone(),
            move |current| {
                let mut resource = render_user(current, None, &at);
                apply_operations(&mut resource, &operations, READ_ONLY)?;
                let input = parse_user(&resource)?;
                Ok::<_, ApiError>(one_user(&who, input, uuid, Intent::Update, current.active))
            },
        )
        .await
        .map_err(|e| with_not_found(e, || not_found(id)))?;
    read_back(state, base, uuid, StatusCode::OK).await
}

/// DELETE: memberships, keys (with an audit copy) and the user go in one transaction.
pub async fn delete(
    state: &AppState,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    state
        .engine
        .change_user(
            uuid,
            &expect_version(if_match),
            &state.policy(),
            actor,
            |_| {
                let mut desired = Desired::new(actor.scim_source(), Scope::Listed);
                desired.delete_users.push(uuid);
                Ok::<_, ApiError>(desired)
            },
        )
        .await
        .map_err(|e| with_not_found(e, || not_found(id)))?;
    Ok(Written::no_content())
}
