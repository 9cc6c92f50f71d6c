//! /Groups (gateway teams): parse → desired state → reconcile → render, like /Users.
//!
//! Membership changes in a PATCH become `MemberSpec::Delta`, so adding one member to
//! a team of 100,000 reads and writes only that one membership; the roster is never
//! loaded to be modified.

use super::list::{ListParams, Projection};
use super::lower::Resource;
use super::patch::{
    apply_operations, member_changes, parse_patch_request, MemberChange, PatchOperation,
};
use super::resources::{parse_group, render_group};
use super::response::{expect_version, with_not_found, Written};
use crate::config::UnknownMembers;
use crate::domain::Team;
use crate::error::ApiError;
use crate::reconcile::{
    Actor, Desired, DesiredTeam, Intent, MemberRef, MemberSpec, Policy, Request, Scope,
};
use crate::state::AppState;
use axum::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

const READ_ONLY: &[&str] = &["id", "meta"];

/// Largest roster a PATCH response carries; see [`patch`]. Checking it reads at most
/// this many index entries, so a membership change stays cheap however large the team.
pub const MAX_MEMBERS_IN_PATCH_RESPONSE: u64 = 1_000;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Group {id} not found"))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id.trim()).map_err(|_| not_found(id))
}

/// Member values are user ids. One that is not even a UUID names no user: under
/// `unknown_members = "reject"` that fails the request naming it, under "ignore"
/// it is dropped. (UUIDs of missing users are the reconcile engine's to judge.)
fn member_refs(ids: &[String], policy: &Policy, adding: bool) -> Result<Vec<MemberRef>, ApiError> {
    let mut refs = Vec::with_capacity(ids.len());
    for id in ids {
        match Uuid::parse_str(id) {
            Ok(uuid) => refs.push(MemberRef::UserId(uuid)),
            // Removing a member that cannot exist removes nothing, successfully.
            Err(_) if !adding => {}
            Err(_) if policy.unknown_members == UnknownMembers::Ignore => {}
            Err(_) => {
                return Err(ApiError::invalid_value(format!(
                    "member {id} does not exist"
                )))
            }
        }
    }
    Ok(refs)
}

fn one_team(actor: &Actor, team: DesiredTeam) -> Desired {
    let mut desired = Desired::new(actor.scim_source(), Scope::Listed);
    desired.teams.push(team);
    desired
}

/// Renders teams, loading the members of the whole page in one query only when the
/// response shows them (Entra lists groups with excludedAttributes=members).
async fn render_all(
    state: &AppState,
    base: &str,
    teams: &[Team],
    projection: &Projection,
) -> Result<Vec<Value>, ApiError> {
    let members = if projection.wants("members") {
        let ids: Vec<Uuid> = teams.iter().map(|t| t.id).collect();
        Some(state.store.members_of_teams(&ids).await?)
    } else {
        None
    };
    Ok(teams
        .iter()
        .map(|team| {
            let mine = members
                .as_ref()
                .map(|m| m.get(&team.id).map(Vec::as_slice).unwrap_or_default());
            render_group(team, mine, base)
        })
        .collect())
}

pub async fn list(
    state: &AppState,
    base: &str,
    params: &ListParams,
) -> Result<(u64, Vec<Value>), ApiError> {
    let query = params.query(Resource::Group)?;
    let page = state.store.list_teams(&query).await?;
    let mut resources = render_all(state, base, &page.items, &params.projection).await?;
    resources
        .iter_mut()
        .for_each(|r| params.projection.apply(r));
    Ok((page.total, resources))
}

async fn read_back(
    state: &AppState,
    base: &str,
    id: Uuid,
    status: StatusCode,
    projection: &Projection,
) -> Result<Written, ApiError> {
    let team = state
        .store
        .team(id)
        .await?
        .ok_or_else(|| not_found(&id.to_string()))?;
    let mut rendered = render_all(state, base, std::slice::from_ref(&team), projection).await?;
    Ok(Written {
        status,
        location: (status == StatusCode::CREATED).then(|| format!("{base}/Groups/{id}")),
        resource: rendered.pop(),
        version: Some(team.version),
    })
}

pub async fn get(
    state: &AppState,
    base: &str,
    id: &str,
    projection: &Projection,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    read_back(state, base, uuid, StatusCode::OK, projection)
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                not_found(id)
            } else {
                e
            }
        })
}

pub async fn create(
    state: &AppState,
    actor: &Actor,
    base: &str,
    body: &Value,
    projection: &Projection,
) -> Result<Written, ApiError> {
    let input = parse_group(body)?;
    let policy = state.policy();
    let id = Uuid::new_v4();
    let members = match &input.members {
        Some(ids) => MemberSpec::Exactly(member_refs(ids, &policy, true)?),
        None => MemberSpec::Unchanged,
    };
    let desired = one_team(
        actor,
        DesiredTeam {
            id: Some(id),
            intent: Intent::Create,
            external_id: input.external_id,
            display_name: input.display_name,
            metadata: None,
            members,
        },
    );
    state
        .engine
        .apply(Request::new(&desired, &policy, actor))
        .await?;
    read_back(state, base, id, StatusCode::CREATED, projection).await
}

/// PUT: a full replace; `members` left out means no members. Committed with whatever
/// other writes are waiting (`reconcile::batch`).
pub async fn replace(
    state: &AppState,
    actor: &Actor,
    base: &str,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
    projection: &Projection,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    let input = parse_group(body)?;
    let policy = state.policy();
    let members = member_refs(input.members.as_deref().unwrap_or_default(), &policy, true)?;
    let desired = one_team(
        actor,
        DesiredTeam {
            id: Some(uuid),
            intent: Intent::Update,
            external_id: input.external_id,
            display_name: input.display_name,
            metadata: None,
            members: MemberSpec::Exactly(members),
        },
    );
    state
        .writes()
        .change_team(
            uuid,
            expect_version(if_match),
            policy,
            actor.clone(),
            |_| Ok::<_, ApiError>(desired),
        )
        .await
        .map_err(|e| with_not_found(e, || not_found(id)))?;
    read_back(state, base, uuid, StatusCode::OK, projection).await
}

/// How a PATCH's member operations add up, in order, without the roster.
enum Members {
    Delta {
        add: Vec<String>,
        remove: Vec<String>,
    },
    Exactly(Vec<String>),
}

impl Members {
    /// Linear in the ids involved: lookups go through sets, so a PATCH naming tens of
    /// thousands of members is not quadratic.
    fn apply(&mut self, change: MemberChange) {
        use std::collections::HashSet;
        match (self, change) {
            (Members::Delta { add, remove }, MemberChange::Add(ids)) => {
                let incoming: HashSet<&String> = ids.iter().collect();
                remove.retain(|r| !incoming.contains(r));
                let mut present: HashSet<String> = add.iter().cloned().collect();
                for id in ids {
                    if present.insert(id.clone()) {
                        add.push(id);
                    }
                }
            }
            (Members::Delta { add, remove }, MemberChange::Remove(ids)) => {
                let outgoing: HashSet<&String> = ids.iter().collect();
                add.retain(|a| !outgoing.contains(a));
                remove.extend(ids);
            }
            (Members::Exactly(set), MemberChange::Add(ids)) => {
                let mut present: HashSet<String> = set.iter().cloned().collect();
                for id in ids {
                    if present.insert(id.clone()) {
                        set.push(id);
                    }
                }
            }
            (Members::Exactly(set), MemberChange::Remove(ids)) => {
                let outgoing: HashSet<String> = ids.into_iter().collect();
                set.retain(|m| !outgoing.contains(m));
            }
            (this, MemberChange::RemoveAll) => *this = Members::Exactly(Vec::new()),
            (this, MemberChange::ReplaceAll(ids)) => *this = Members::Exactly(ids),
        }
    }

    fn spec(self, policy: &Policy) -> Result<MemberSpec, ApiError> {
        Ok(match self {
            Members::Delta { add, remove } if add.is_empty() && remove.is_empty() => {
                MemberSpec::Unchanged
            }
            Members::Delta { add, remove } => MemberSpec::Delta {
                add: member_refs(&add, policy, true)?,
                remove: member_refs(&remove, policy, false)?,
            },
            Members::Exactly(ids) => MemberSpec::Exactly(member_refs(&ids, policy, true)?),
        })
    }
}

/// PATCH: member operations become a delta; the others are applied to the group as
/// rendered without its members. Committed with whatever other writes are waiting
/// (`reconcile::batch`): the most frequent write IdPs send, one member at a time.
pub async fn patch(
    state: &AppState,
    actor: &Actor,
    base: &str,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
    projection: &Projection,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    let operations = parse_patch_request(body)?;
    let policy = state.policy();
    let mut members = Members::Delta {
        add: Vec::new(),
        remove: Vec::new(),
    };
    let mut rest = Vec::new();
    for (index, operation) in operations.iter().enumerate() {
        let split = member_changes(operation).map_err(|e| {
            let mut err = ApiError::from(e);
            err.detail = format!("Operations[{index}]: {}", err.detail);
            err
        })?;
        if let Some(change) = split.members {
            members.apply(change);
        }
        rest.extend(split.rest);
    }
    let members = members.spec(&policy)?;
    let committed = match (rest.is_empty(), members) {
        // Members only, the PATCH IdPs send for every membership change: one that may
        // be merged with the others of its batch.
        (true, MemberSpec::Delta { add, remove }) => state
            .writes()
            .change_members(
                uuid,
                user_ids(add),
                user_ids(remove),
                expect_version(if_match),
                policy,
                actor.clone(),
            )
            .await
            .map(|changed| changed.team)
            .map_err(ApiError::from),
        (_, members) => patch_team(state, actor, base, uuid, rest, members, if_match, policy)
            .await
            .map(|()| None),
    };
    let committed = committed.map_err(|e| with_not_found(e, || not_found(id)))?;
    // Without its members (Entra asks so), the group as its batch committed it is the
    // answer, and costs no read.
    if let Some(team) = committed.filter(|_| !projection.wants("members")) {
        let mut rendered = render_all(state, base, std::slice::from_ref(&team), projection).await?;
        return Ok(Written {
            status: StatusCode::OK,
            location: None,
            resource: rendered.pop(),
            version: Some(team.version),
        });
    }
    // RFC 7644 §3.5.2 lets a PATCH answer 200 with the resource or 204. The resource
    // is the better answer (scim-sanity's strict mode insists on it) until echoing the
    // roster would cost far more than the change itself (reading 100,000 members takes
    // about a second); past that, 204 with the new ETag.
    if projection.wants("members")
        && state
            .store
            .team_has_more_members_than(uuid, MAX_MEMBERS_IN_PATCH_RESPONSE)
            .await?
    {
        let version = state.store.team(uuid).await?.map(|t| t.version);
        return Ok(Written {
            version,
            ..Written::no_content()
        });
    }
    read_back(state, base, uuid, StatusCode::OK, projection).await
}

/// The users a PATCH's member references name (member values are user ids: see
/// [`member_refs`]).
fn user_ids(refs: Vec<MemberRef>) -> Vec<Uuid> {
    refs.into_iter()
        .filter_map(|r| match r {
            MemberRef::UserId(id) => Some(id),
            MemberRef::ExternalId(_) => None,
        })
        .collect()
}

/// A PATCH with operations on other attributes than members (or replacing the whole
/// roster): applied to the group as rendered without its members.
#[allow(clippy::too_many_arguments)]
async fn patch_team(
    state: &AppState,
    actor: &Actor,
    base: &str,
    uuid: Uuid,
    rest: Vec<PatchOperation>,
    members: MemberSpec,
    if_match: Option<&str>,
    policy: Policy,
) -> Result<(), ApiError> {
    let (who, at) = (actor.clone(), base.to_owned());
    state
        .writes()
        .change_team(
            uuid,
            expect_version(if_match),
            policy,
            actor.clone(),
            move |current| {
                let mut resource = render_group(current, None, &at);
                apply_operations(&mut resource, &rest, READ_ONLY)?;
                let input = parse_group(&resource)?;
                Ok::<_, ApiError>(one_team(
                    &who,
                    DesiredTeam {
                        id: Some(uuid),
                        intent: Intent::Update,
                        external_id: input.external_id,
                        display_name: input.display_name,
                        metadata: None,
                        members,
                    },
                ))
            },
        )
        .await
        .map(drop)
}

/// DELETE: the team, its memberships and the keys scoped to it, in one transaction.
pub async fn delete(
    state: &AppState,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
) -> Result<Written, ApiError> {
    let uuid = parse_id(id)?;
    state
        .engine
        .change_team(
            uuid,
            &expect_version(if_match),
            &state.policy(),
            actor,
            |_| {
                let mut desired = Desired::new(actor.scim_source(), Scope::Listed);
                desired.delete_teams.push(uuid);
                Ok::<_, ApiError>(desired)
            },
        )
        .await
        .map_err(|e| with_not_found(e, || not_found(id)))?;
    Ok(Written::no_content())
}
