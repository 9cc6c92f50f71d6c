//! Drift: what a target lacks or has in excess compared with the store, and its repair
//! (`scimsync plan --target`, `apply --target`, the target's schedule and the daemon's
//! start). The deletion guard applies: a plan that would delete or deactivate more of
//! the target's scimsync-made objects than `[safety]` allows is refused unless the
//! operator allows deletions.

use super::litellm::{LiteTeam, LiteUser, UserSpec};
use super::{Target, TargetError};
use crate::config::SafetyConfig;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub before: Value,
    pub after: Value,
}

/// One repair.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DriftOp {
    CreateUser {
        id: Uuid,
        user_name: String,
    },
    /// A target user with the same email, not made by scimsync: stamped with our
    /// mark (`adopted: true`) and managed from now on, with these changes.
    AdoptUser {
        id: Uuid,
        user_name: String,
        litellm_user_id: String,
        changes: Vec<FieldChange>,
    },
    UpdateUser {
        id: Uuid,
        user_name: String,
        litellm_user_id: String,
        changes: Vec<FieldChange>,
    },
    /// A user scimsync made for an id the store no longer has.
    DeleteUser {
        litellm_user_id: String,
    },
    CreateTeam {
        id: Uuid,
        display_name: String,
        /// LiteLLM teams with the same alias that scimsync did not make. Never adopted:
        /// a team made by hand may be another group of people under the same name,
        /// and taking it over would hand its keys and budget to the IdP's group.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        alias_taken_by: Vec<String>,
    },
    UpdateTeam {
        id: Uuid,
        display_name: String,
        litellm_team_id: String,
        changes: Vec<FieldChange>,
    },
    DeleteTeam {
        litellm_team_id: String,
        team_alias: Option<String>,
    },
    AddMember {
        team_id: Uuid,
        user_id: Uuid,
        team: String,
        user: String,
    },
    RemoveMember {
        litellm_team_id: String,
        litellm_user_id: String,
        team: String,
    },
}

impl DriftOp {
    fn is_removal(&self) -> bool {
        match self {
            DriftOp::DeleteUser { .. } | DriftOp::DeleteTeam { .. } => true,
            DriftOp::UpdateUser { changes, .. } | DriftOp::AdoptUser { changes, .. } => changes
                .iter()
                .any(|c| c.field == "metadata.scim_active" && c.after == Value::Bool(false)),
            _ => false,
        }
    }
}

/// What the target needs, and whether the guard lets it through.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftPlan {
    pub target: String,
    pub ops: Vec<DriftOp>,
    /// Why the deletion guard refuses the plan (`None`: it does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Outbox changes the target kept refusing and that are no longer retried; this
    /// plan covers what they were about, and applying it without failures clears them.
    pub dead_letters: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriftCounts {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl DriftPlan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn counts(&self) -> DriftCounts {
        let mut c = DriftCounts::default();
        for op in &self.ops {
            match op {
                DriftOp::CreateUser { .. }
                | DriftOp::CreateTeam { .. }
                | DriftOp::AddMember { .. } => c.add += 1,
                DriftOp::AdoptUser { .. }
                | DriftOp::UpdateUser { .. }
                | DriftOp::UpdateTeam { .. } => c.change += 1,
                DriftOp::DeleteUser { .. }
                | DriftOp::DeleteTeam { .. }
                | DriftOp::RemoveMember { .. } => c.destroy += 1,
            }
        }
        c
    }

    /// Like `terraform plan`.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = format!("Target {:?}:\n", self.target);
        if self.dead_letters > 0 {
            let _ = writeln!(
                out,
                "{} outbox change(s) were refused {} times and are no longer retried (dead letters; \
                 `scimsync_target_outbox_dead`). The plan below covers them; applying it without \
                 failures clears them.",
                self.dead_letters,
                super::worker::DEAD_AFTER
            );
        }
        if self.ops.is_empty() {
            out.push_str("No changes. LiteLLM matches the store.\n");
            return out;
        }
        let changes = |out: &mut String, changes: &[FieldChange]| {
            for c in changes {
                let _ = writeln!(out, "      {}: {} → {}", c.field, c.before, c.after);
            }
        };
        for op in &self.ops {
            match op {
                DriftOp::CreateUser { user_name, .. } => {
                    let _ = writeln!(out, "  + user {user_name}");
                }
                DriftOp::AdoptUser {
                    user_name,
                    litellm_user_id,
                    changes: c,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "  ~ user {user_name}: adopt existing LiteLLM user {litellm_user_id:?} (same email; managed by scimsync from now on)"
                    );
                    changes(&mut out, c);
                }
                DriftOp::UpdateUser {
                    user_name,
                    changes: c,
                    ..
                } => {
                    let _ = writeln!(out, "  ~ user {user_name}");
                    changes(&mut out, c);
                }
                DriftOp::DeleteUser { litellm_user_id } => {
                    let _ = writeln!(
                        out,
                        "  - user {litellm_user_id:?} (made by scimsync; no longer in the store)"
                    );
                }
                DriftOp::CreateTeam {
                    display_name,
                    alias_taken_by,
                    ..
                } => {
                    let _ = writeln!(out, "  + team {display_name}");
                    if !alias_taken_by.is_empty() {
                        let _ = writeln!(
                            out,
                            "      note: LiteLLM already has a team with this alias that is not scimsync's ({}); it is left alone and a separate team is created",
                            alias_taken_by
                                .iter()
                                .map(|t| format!("{t:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    }
                }
                DriftOp::UpdateTeam {
                    display_name,
                    changes: c,
                    ..
                } => {
                    let _ = writeln!(out, "  ~ team {display_name}");
                    changes(&mut out, c);
                }
                DriftOp::DeleteTeam {
                    litellm_team_id,
                    team_alias,
                } => {
                    let _ = writeln!(
                        out,
                        "  - team {} ({litellm_team_id}; made by scimsync; no longer in the store)",
                        team_alias.as_deref().unwrap_or("(no alias)")
                    );
                }
                DriftOp::AddMember { team, user, .. } => {
                    let _ = writeln!(out, "  + member {user} of team {team}");
                }
                DriftOp::RemoveMember {
                    team,
                    litellm_user_id,
                    ..
                } => {
                    let _ = writeln!(out, "  - member {litellm_user_id:?} of team {team}");
                }
            }
        }
        let c = self.counts();
        let _ = writeln!(
            out,
            "\nPlan: {} to add, {} to change, {} to destroy.",
            c.add, c.change, c.destroy
        );
        if let Some(why) = &self.refused {
            let _ = writeln!(out, "Refused by the deletion guard: {why}");
        }
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "counts": self.counts(),
            "ops": self.ops,
            "refused": self.refused,
            "dead_letters": self.dead_letters,
        })
    }
}

/// Compares the store with the target.
pub async fn plan(
    target: &Target,
    safety: &SafetyConfig,
    allow_deletions: bool,
) -> Result<DriftPlan, TargetError> {
    let store = &target.store;
    let users = store.all_users().await?;
    let teams = store.all_teams().await?;
    let memberships = store.all_memberships().await?;
    let links = store.target_links(&target.name).await?;
    let remote_users = target.client.all_users().await?;
    let remote_teams = target.client.all_teams().await?;

    let link_of: BTreeMap<(&str, &str), &crate::store::targets::TargetLink> = links
        .iter()
        .map(|l| ((l.kind.as_str(), l.local_id.as_str()), l))
        .collect();
    let by_id: BTreeMap<&str, &LiteUser> = remote_users
        .iter()
        .map(|u| (u.user_id.as_str(), u))
        .collect();
    let by_email: BTreeMap<String, &LiteUser> = remote_users
        .iter()
        .filter_map(|u| Some((u.user_email.as_deref()?.to_lowercase(), u)))
        .collect();
    let by_owner: BTreeMap<&str, &LiteUser> = remote_users
        .iter()
        .filter_map(|u| Some((u.owner_id()?, u)))
        .collect();

    let mut ops = Vec::new();
    // Our user id → the target's user id it has or will have.
    let mut remote_of: BTreeMap<Uuid, String> = BTreeMap::new();
    let store_users: BTreeSet<String> = users.iter().map(|u| u.id.to_string()).collect();
    for user in &users {
        let id = user.id.to_string();
        let spec = UserSpec::of(user);
        let user_name = user.user_name.as_str().to_owned();
        let changes_on = |have: &LiteUser| -> Vec<FieldChange> {
            spec.diff(have)
                .into_iter()
                .map(|(field, before, after)| FieldChange {
                    field,
                    before,
                    after,
                })
                .collect()
        };
        let update = |have: &LiteUser| {
            let changes = changes_on(have);
            (!changes.is_empty()).then(|| DriftOp::UpdateUser {
                id: user.id,
                user_name: user_name.clone(),
                litellm_user_id: have.user_id.clone(),
                changes,
            })
        };
        let adopt = |have: &LiteUser| DriftOp::AdoptUser {
            id: user.id,
            user_name: user_name.clone(),
            litellm_user_id: have.user_id.clone(),
            changes: changes_on(have),
        };
        let linked = link_of
            .get(&("user", id.as_str()))
            .and_then(|link| Some((link, *by_id.get(link.remote_id.as_str())?)));
        match linked {
            Some((link, have)) => {
                remote_of.insert(user.id, link.remote_id.clone());
                // Linked before adoption stamped users (managed=false): adopted now.
                if !link.managed && have.owner_id() != Some(id.as_str()) {
                    ops.push(adopt(have));
                } else if let Some(op) = update(have) {
                    ops.push(op);
                }
            }
            None => {
                let email = spec.user_email.as_deref().map(str::to_lowercase);
                let found = email.as_deref().and_then(|e| by_email.get(e).copied());
                match (by_owner.get(id.as_str()), found) {
                    (Some(ours), _) => {
                        remote_of.insert(user.id, ours.user_id.clone());
                        // Ours, with the link lost: relinked by the repair (and updated).
                        ops.push(update(ours).unwrap_or(DriftOp::UpdateUser {
                            id: user.id,
                            user_name: user_name.clone(),
                            litellm_user_id: ours.user_id.clone(),
                            changes: vec![FieldChange {
                                field: "link",
                                before: Value::Null,
                                after: json!(ours.user_id),
                            }],
                        }));
                    }
                    (None, Some(theirs)) => {
                        remote_of.insert(user.id, theirs.user_id.clone());
                        ops.push(adopt(theirs));
                    }
                    (None, None) => {
                        remote_of.insert(user.id, user_name.clone());
                        ops.push(DriftOp::CreateUser {
                            id: user.id,
                            user_name: user_name.clone(),
                        });
                    }
                }
            }
        }
    }
    // A user made for an id the store no longer has is deleted, unless one of ours
    // is taking it over (same email).
    let taken: BTreeSet<&str> = remote_of.values().map(String::as_str).collect();
    for remote in &remote_users {
        if let Some(owner) = remote.owner_id() {
            if !store_users.contains(owner) && !taken.contains(remote.user_id.as_str()) {
                ops.push(DriftOp::DeleteUser {
                    litellm_user_id: remote.user_id.clone(),
                });
            }
        }
    }

    let teams_by_id: BTreeMap<&str, &LiteTeam> = remote_teams
        .iter()
        .map(|t| (t.team_id.as_str(), t))
        .collect();
    let store_teams: BTreeSet<String> = teams.iter().map(|t| t.id.to_string()).collect();
    let user_names: BTreeMap<Uuid, &str> =
        users.iter().map(|u| (u.id, u.user_name.as_str())).collect();
    let mut roster: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for m in &memberships {
        roster.entry(m.team_id).or_default().push(m.user_id);
    }
    let mut member_ops = Vec::new();
    for team in &teams {
        let id = team.id.to_string();
        let remote_id = link_of
            .get(&("team", id.as_str()))
            .map_or(id.clone(), |l| l.remote_id.clone());
        let alias = team.display_name.as_str();
        let owner = json!({"id": id, "source": team.source.to_string()});
        let have = teams_by_id.get(remote_id.as_str());
        match have {
            Some(have) => {
                let changes: Vec<FieldChange> = super::litellm::team_diff(alias, &owner, have)
                    .into_iter()
                    .map(|(field, before, after)| FieldChange {
                        field,
                        before,
                        after,
                    })
                    .collect();
                if !changes.is_empty() {
                    ops.push(DriftOp::UpdateTeam {
                        id: team.id,
                        display_name: alias.to_owned(),
                        litellm_team_id: remote_id.clone(),
                        changes,
                    });
                }
            }
            None => ops.push(DriftOp::CreateTeam {
                id: team.id,
                display_name: alias.to_owned(),
                alias_taken_by: remote_teams
                    .iter()
                    .filter(|t| t.owner_id().is_none())
                    .filter(|t| {
                        t.team_alias
                            .as_deref()
                            .is_some_and(|a| a.trim().to_lowercase() == alias.trim().to_lowercase())
                    })
                    .map(|t| t.team_id.clone())
                    .collect(),
            }),
        }
        let current: BTreeSet<&str> = have.map(|t| t.user_members().collect()).unwrap_or_default();
        let mut wanted = BTreeSet::new();
        for user in roster.get(&team.id).into_iter().flatten() {
            let Some(remote_user) = remote_of.get(user) else {
                continue;
            };
            wanted.insert(remote_user.as_str());
            if !current.contains(remote_user.as_str()) {
                member_ops.push(DriftOp::AddMember {
                    team_id: team.id,
                    user_id: *user,
                    team: alias.to_owned(),
                    user: user_names
                        .get(user)
                        .map_or_else(|| user.to_string(), |n| (*n).to_owned()),
                });
            }
        }
        for stray in current.difference(&wanted) {
            member_ops.push(DriftOp::RemoveMember {
                litellm_team_id: remote_id.clone(),
                litellm_user_id: (*stray).to_owned(),
                team: alias.to_owned(),
            });
        }
    }
    for remote in &remote_teams {
        if let Some(owner) = remote.owner_id() {
            if !store_teams.contains(owner) {
                ops.push(DriftOp::DeleteTeam {
                    litellm_team_id: remote.team_id.clone(),
                    team_alias: remote.team_alias.clone(),
                });
            }
        }
    }
    ops.extend(member_ops);

    let removals = ops.iter().filter(|op| op.is_removal()).count() as u64;
    let managed = (remote_users
        .iter()
        .filter(|u| u.owner_id().is_some())
        .count()
        + remote_teams
            .iter()
            .filter(|t| t.owner_id().is_some())
            .count()) as u64;
    let ratio_limit = (safety.max_deletion_ratio * managed as f64).floor() as u64;
    let limit = safety.max_deletions.min(ratio_limit);
    let refused = (!allow_deletions && removals > 0 && removals > limit).then(|| {
        format!(
            "{removals} deletions or deactivations in LiteLLM exceed the limit of {limit} \
             ([safety] max_deletions {}, max_deletion_ratio {} of {managed} objects scimsync \
             made there); review the plan and run again with --allow-deletions",
            safety.max_deletions, safety.max_deletion_ratio
        )
    });
    let dead_letters = store.outbox_dead(&target.name).await?;
    Ok(DriftPlan {
        target: target.name.clone(),
        ops,
        refused,
        dead_letters,
    })
}

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repaired {
    pub applied: usize,
    /// The operations that failed, with why.
    pub failures: Vec<String>,
}

/// Carries out a plan: users and teams, then memberships, then deletions, each with
/// the target's concurrency. Refused by the guard: nothing is done.
pub async fn apply(target: &Target, plan: &DriftPlan) -> Result<Repaired, TargetError> {
    if let Some(why) = &plan.refused {
        return Err(TargetError::Conflict(format!(
            "refused by the deletion guard: {why}"
        )));
    }
    let phase_of = |op: &DriftOp| match op {
        DriftOp::AddMember { .. } | DriftOp::RemoveMember { .. } => 1,
        DriftOp::DeleteUser { .. } | DriftOp::DeleteTeam { .. } => 2,
        _ => 0,
    };
    let mut repaired = Repaired::default();
    for phase in 0..3 {
        let ops = plan.ops.iter().filter(|op| phase_of(op) == phase);
        // Members to add go in one call per team (up to 100 a call).
        let mut adds: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
        let mut calls = Vec::new();
        for op in ops {
            match op {
                DriftOp::AddMember {
                    team_id, user_id, ..
                } => adds.entry(*team_id).or_default().push(*user_id),
                other => calls.push(futures::future::Either::Left(async move {
                    vec![run(target, other).await]
                })),
            }
        }
        for (team, users) in adds {
            for chunk in users.chunks(100) {
                let chunk = chunk.to_vec();
                calls.push(futures::future::Either::Right(async move {
                    target
                        .sync_members(team, &chunk)
                        .await
                        .into_iter()
                        .map(|(_, result)| result)
                        .collect::<Vec<_>>()
                }));
            }
        }
        let results: Vec<Vec<Result<(), TargetError>>> = futures::stream::iter(calls)
            .buffer_unordered(target.concurrency)
            .collect()
            .await;
        for result in results.into_iter().flatten() {
            match result {
                Ok(()) => repaired.applied += 1,
                Err(e) => {
                    crate::metrics::target_failure(&target.name, e.cause());
                    repaired.failures.push(e.to_string());
                }
            }
        }
    }
    if repaired.failures.is_empty() && plan.dead_letters > 0 {
        let cleared = target.store.outbox_clear_dead(&target.name).await?;
        tracing::info!(target = %target.name, cleared, "dead letters cleared by a drift repair");
    }
    Ok(repaired)
}

async fn run(target: &Target, op: &DriftOp) -> Result<(), TargetError> {
    match op {
        DriftOp::CreateUser { id, .. }
        | DriftOp::AdoptUser { id, .. }
        | DriftOp::UpdateUser { id, .. } => target.sync_user(*id).await.map(drop),
        DriftOp::CreateTeam { id, .. } | DriftOp::UpdateTeam { id, .. } => {
            target.sync_team(*id).await.map(drop)
        }
        DriftOp::AddMember {
            team_id, user_id, ..
        } => target.sync_member(*team_id, *user_id).await,
        DriftOp::RemoveMember {
            litellm_team_id,
            litellm_user_id,
            ..
        } => target
            .client
            .member_delete(litellm_team_id, litellm_user_id)
            .await
            .map(drop),
        DriftOp::DeleteUser { litellm_user_id } => {
            target.client.user_delete(litellm_user_id).await.map(drop)
        }
        DriftOp::DeleteTeam {
            litellm_team_id, ..
        } => target.client.team_delete(litellm_team_id).await.map(drop),
    }
}

/// The daemon's repair (at start and on the target's schedule): plans, applies what
/// the guard allows, and logs what it did.
pub async fn repair(target: &Target, safety: &SafetyConfig) {
    let plan = match plan(target, safety, false).await {
        Ok(plan) => plan,
        Err(e) => {
            crate::metrics::target_failure(&target.name, e.cause());
            tracing::warn!(target = %target.name, error = %e, "drift check failed");
            return;
        }
    };
    if plan.is_empty() && plan.dead_letters == 0 {
        tracing::debug!(target = %target.name, "no drift");
        return;
    }
    if let Some(why) = &plan.refused {
        crate::metrics::target_failure(&target.name, "guard");
        tracing::error!(target = %target.name, reason = %why, "drift repair refused; run `scimsync plan --target` to review");
        return;
    }
    match apply(target, &plan).await {
        Ok(done) => {
            tracing::info!(target = %target.name, applied = done.applied, failed = done.failures.len(), "drift repaired")
        }
        Err(e) => tracing::warn!(target = %target.name, error = %e, "drift repair failed"),
    }
}

/// `scimsync plan --target NAME`: prints the plan; with `detailed_exitcode`, 2 when
/// there are changes.
pub async fn plan_command(
    config: &crate::config::Config,
    store: crate::store::Store,
    name: &str,
    json: bool,
    detailed_exitcode: bool,
    allow_deletions: bool,
) -> anyhow::Result<i32> {
    let target = Target::named(config, name, store)?;
    let plan = plan(&target, &config.safety, allow_deletions).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan.to_json())?);
    } else {
        print!("{}", plan.render_text());
    }
    Ok(if detailed_exitcode && !plan.is_empty() {
        2
    } else {
        0
    })
}

/// `scimsync apply --target NAME`: repairs the drift; 1 when the guard refuses or a
/// repair failed.
pub async fn apply_command(
    config: &crate::config::Config,
    store: crate::store::Store,
    name: &str,
    allow_deletions: bool,
) -> anyhow::Result<i32> {
    let target = Target::named(config, name, store)?;
    let plan = plan(&target, &config.safety, allow_deletions).await?;
    print!("{}", plan.render_text());
    if let Some(why) = &plan.refused {
        eprintln!("Nothing was applied: {why}");
        return Ok(1);
    }
    if plan.is_empty() && plan.dead_letters == 0 {
        return Ok(0);
    }
    let done = apply(&target, &plan).await?;
    for failure in &done.failures {
        eprintln!("failed: {failure}");
    }
    println!(
        "Applied {} of {} changes to {:?} ({} calls).",
        done.applied,
        plan.ops.len(),
        target.name,
        target.client.writes()
    );
    Ok(if done.failures.is_empty() { 0 } else { 1 })
}
