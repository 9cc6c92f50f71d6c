//! `apply()`: runs a plan's operations, in order, inside the caller's transaction.
//!
//! Every operation is idempotent on its own: create if absent, set if different,
//! delete if present; "already gone" is success. Applying a plan twice changes nothing
//! the second time. Runs of creations and added memberships go to the store as
//! multi-row statements, so a first pull of a million memberships is a few thousand
//! statements. Each operation that changed something is written to the audit log.

use super::ops::{Change, NewTeam, NewUser, Op, Plan};
use super::record::op_record;
use super::Actor;
use crate::domain::{Role, Source, Team, TeamName, User, UserName};
use crate::store::actual::AuditRecord;
use crate::store::{StoreError, WriteTx};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use uuid::Uuid;

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplySummary {
    /// Operations that changed something (each has an audit_log entry).
    pub applied: usize,
    /// Operations whose effect was already there.
    pub unchanged: usize,
    pub keys_blocked: u64,
    pub keys_unblocked: u64,
    pub keys_purged: u64,
    /// The time stamped on everything this apply created or changed.
    #[serde(skip)]
    pub applied_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Another user holds the userName (e.g. created since the plan was made).
    #[error("userName {user_name:?} is already taken by another user")]
    UserNameTaken { user_name: String },
    /// A plan file whose operations do not make sense (hand-edited, or from another version).
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Plans at least this long are applied with a larger database cache.
const BULK_OPS: usize = 10_000;

/// Audit rows are written in batches of this many.
const AUDIT_FLUSH: usize = 2000;

struct Applier<'a> {
    tx: &'a mut WriteTx,
    plan: &'a Plan,
    actor: &'a Actor,
    now: DateTime<Utc>,
    audit: Vec<AuditRecord>,
    summary: ApplySummary,
    /// Teams whose membership changed: their version is bumped once at the end, so
    /// that a SCIM Group's ETag changes.
    touched: BTreeSet<Uuid>,
    /// Teams created by this apply; they are new already and need no extra bump.
    created_teams: HashSet<Uuid>,
    /// Users whose memberships changed: a SCIM User shows its `groups`, so its
    /// version (and ETag) moves too, or a client holding the old ETag would be told
    /// 304 Not Modified about a resource that did change.
    touched_users: BTreeSet<Uuid>,
    /// Users created by this apply.
    created_users: HashSet<Uuid>,
}

/// Applies `plan` within `tx`. The caller commits; on error it drops the transaction,
/// which undoes everything.
pub async fn apply(
    tx: &mut WriteTx,
    plan: &Plan,
    actor: &Actor,
) -> Result<ApplySummary, ApplyError> {
    let now = crate::store::now();
    let mut a = Applier {
        tx,
        plan,
        actor,
        now,
        audit: Vec::new(),
        summary: ApplySummary {
            applied_at: now,
            ..ApplySummary::default()
        },
        touched: BTreeSet::new(),
        created_teams: HashSet::new(),
        touched_users: BTreeSet::new(),
        created_users: HashSet::new(),
    };
    let ops = &plan.ops;
    // A large plan touches more of the database than SQLite's default page cache
    // holds; re-reading spilled pages would dominate the time of a first pull.
    let bulk = ops.len() >= BULK_OPS;
    if bulk {
        a.tx.begin_bulk().await?;
    }
    let mut i = 0;
    while i < ops.len() {
        // A run of operations of one batchable kind goes to the store together.
        match &ops[i] {
            Op::CreateUser(_) => {
                let j = run_end(ops, i, |op| matches!(op, Op::CreateUser(_)));
                a.create_users(&ops[i..j]).await?;
                i = j;
            }
            Op::CreateTeam(_) => {
                let j = run_end(ops, i, |op| matches!(op, Op::CreateTeam(_)));
                a.create_teams(&ops[i..j]).await?;
                i = j;
            }
            Op::AddMember { .. } => {
                let j = run_end(ops, i, |op| matches!(op, Op::AddMember { .. }));
                a.add_members(&ops[i..j]).await?;
                i = j;
            }
            op => {
                a.single(op).await?;
                i += 1;
            }
        }
        if a.audit.len() >= AUDIT_FLUSH {
            a.flush_audit().await?;
        }
    }
    let touched: Vec<Uuid> = a
        .touched
        .iter()
        .filter(|t| !a.created_teams.contains(t))
        .copied()
        .collect();
    let touched_users: Vec<Uuid> = a
        .touched_users
        .iter()
        .filter(|u| !a.created_users.contains(u))
        .copied()
        .collect();
    a.tx.touch_teams_and_users(&touched, &touched_users, a.now)
        .await?;
    // The last audit rows ride with the caller's COMMIT: a round trip saved per write.
    let records = std::mem::take(&mut a.audit);
    a.tx.audit_at_commit(a.actor.trigger, &a.actor.name, a.now, &records)
        .await?;
    if bulk {
        a.tx.end_bulk().await?;
    }
    Ok(a.summary)
}

/// The end of the run of operations from `start` that satisfy `pred`.
/// (A plain function: a closure held across an await would make `apply`'s future
/// lose `Send` for callers that spawn it.)
fn run_end(ops: &[Op], start: usize, pred: fn(&Op) -> bool) -> usize {
    start
        + ops[start..]
            .iter()
            .take(RUN_CHUNK)
            .take_while(|op| pred(op))
            .count()
}

/// Batched operations go to the store this many at a time, with their audit rows
/// flushed in between, so that memory does not grow with the plan.
const RUN_CHUNK: usize = 2000;

/// The row a `CreateUser` operation inserts when applied at `now`.
pub fn user_from_new(n: &NewUser, now: DateTime<Utc>) -> User {
    User {
        id: n.id,
        user_name: n.user_name.clone(),
        external_id: n.external_id.clone(),
        email: n.email.clone(),
        display_name: n.display_name.clone(),
        given_name: n.given_name.clone(),
        family_name: n.family_name.clone(),
        role: n.role.clone(),
        active: n.active,
        attributes: n.attributes.clone(),
        source: n.source.clone(),
        created: now,
        modified: now,
        version: 1,
    }
}

pub(super) fn team_from_new(n: &NewTeam, now: DateTime<Utc>) -> Team {
    Team {
        id: n.id,
        display_name: n.display_name.clone(),
        external_id: n.external_id.clone(),
        metadata: n.metadata.clone(),
        source: n.source.clone(),
        created: now,
        modified: now,
        version: 1,
    }
}

/// Equal in everything a plan can set (not in bookkeeping: created, modified, version).
fn same_user(a: &User, b: &User) -> bool {
    a.user_name.as_str() == b.user_name.as_str()
        && a.external_id == b.external_id
        && a.email == b.email
        && a.display_name == b.display_name
        && a.given_name == b.given_name
        && a.family_name == b.family_name
        && a.role == b.role
        && a.active == b.active
        && a.attributes == b.attributes
        && a.source == b.source
}

fn same_team(a: &Team, b: &Team) -> bool {
    a.display_name == b.display_name
        && a.external_id == b.external_id
        && a.metadata == b.metadata
        && a.source == b.source
}

fn invalid(attr: &str, v: &Value) -> ApplyError {
    ApplyError::InvalidPlan(format!("attribute {attr} cannot be set to {v}"))
}

fn opt_text(attr: &str, v: &Value) -> Result<Option<String>, ApplyError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(invalid(attr, other)),
    }
}

fn text<'v>(attr: &str, v: &'v Value) -> Result<&'v str, ApplyError> {
    v.as_str().ok_or_else(|| invalid(attr, v))
}

pub(super) fn set_user_attr(u: &mut User, c: &Change) -> Result<(), ApplyError> {
    let v = &c.after;
    let a = c.attribute.as_str();
    match a {
        "user_name" => {
            u.user_name = UserName::parse(text(a, v)?).map_err(|_| invalid(a, v))?;
        }
        "external_id" => u.external_id = opt_text(a, v)?,
        "email" => u.email = opt_text(a, v)?,
        "display_name" => u.display_name = opt_text(a, v)?,
        "given_name" => u.given_name = opt_text(a, v)?,
        "family_name" => u.family_name = opt_text(a, v)?,
        "role" => u.role = Role::parse(text(a, v)?).map_err(|_| invalid(a, v))?,
        "active" => u.active = v.as_bool().ok_or_else(|| invalid(a, v))?,
        "attributes" => match v {
            Value::Object(m) => u.attributes = m.clone(),
            other => return Err(invalid(a, other)),
        },
        "source" => u.source = Source::parse(text(a, v)?).map_err(|_| invalid(a, v))?,
        other => {
            return Err(ApplyError::InvalidPlan(format!(
                "users have no attribute {other:?}"
            )))
        }
    }
    Ok(())
}

pub(super) fn set_team_attr(t: &mut Team, c: &Change) -> Result<(), ApplyError> {
    let v = &c.after;
    let a = c.attribute.as_str();
    match a {
        "display_name" => {
            t.display_name = TeamName::parse(text(a, v)?).map_err(|_| invalid(a, v))?
        }
        "external_id" => t.external_id = opt_text(a, v)?,
        "metadata" => match v {
            Value::Object(m) => t.metadata = m.clone(),
            other => return Err(invalid(a, other)),
        },
        "source" => t.source = Source::parse(text(a, v)?).map_err(|_| invalid(a, v))?,
        other => {
            return Err(ApplyError::InvalidPlan(format!(
                "teams have no attribute {other:?}"
            )))
        }
    }
    Ok(())
}

fn name_conflict(e: StoreError, user_name: &UserName) -> ApplyError {
    match e {
        StoreError::Conflict(_) => ApplyError::UserNameTaken {
            user_name: user_name.as_str().to_owned(),
        },
        other => ApplyError::Store(other),
    }
}

impl Applier<'_> {
    fn record(&mut self, op: &Op, extra: Option<(&str, Value)>) {
        // Memberships are by far the most numerous operations: their entry names the
        // pair (the target column has the ids) and nothing else.
        if let Op::AddMember { team_id, user_id } | Op::RemoveMember { team_id, user_id } = op {
            self.audit.push(AuditRecord {
                operation: op.kind().as_str(),
                target: format!("membership:{team_id}:{user_id}"),
                detail: json!({
                    "team": self.plan.team_label(*team_id),
                    "user_name": self.plan.user_label(*user_id),
                }),
            });
            self.summary.applied += 1;
            return;
        }
        let rec = op_record(self.plan, op);
        let target = rec.target_key();
        let mut detail = json!({"target": rec.target, "before": rec.before, "after": rec.after});
        if let Some((k, v)) = extra {
            detail[k] = v;
        }
        self.audit.push(AuditRecord {
            operation: rec.kind,
            target,
            detail,
        });
        self.summary.applied += 1;
    }

    async fn flush_audit(&mut self) -> Result<(), ApplyError> {
        if self.audit.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.audit);
        self.tx
            .audit_batch(self.actor.trigger, &self.actor.name, self.now, &records)
            .await?;
        Ok(())
    }

    /// Writes `wanted` over the stored user when they differ, bumping version and modified.
    async fn set_user(&mut self, current: User, mut wanted: User) -> Result<bool, ApplyError> {
        if same_user(&current, &wanted) {
            return Ok(false);
        }
        wanted.created = current.created;
        wanted.version = current.version + 1;
        wanted.modified = self.now;
        let name = wanted.user_name.clone();
        self.tx
            .update_user(&wanted)
            .await
            .map_err(|e| name_conflict(e, &name))?;
        Ok(true)
    }

    async fn create_users(&mut self, ops: &[Op]) -> Result<(), ApplyError> {
        let users: Vec<User> = ops
            .iter()
            .filter_map(|op| match op {
                Op::CreateUser(n) => Some(user_from_new(n, self.now)),
                _ => None,
            })
            .collect();
        let inserted: HashSet<Uuid> = self
            .tx
            .insert_users_if_absent(&users)
            .await?
            .into_iter()
            .collect();
        for (op, user) in ops.iter().zip(users) {
            if inserted.contains(&user.id) {
                self.created_users.insert(user.id);
                self.record(op, None);
                continue;
            }
            // Not inserted: either it exists (a re-applied plan: set what differs) or its
            // userName belongs to someone else.
            match self.tx.user(user.id).await? {
                Some(current) => {
                    if self.set_user(current, user).await? {
                        self.record(op, None);
                    } else {
                        self.summary.unchanged += 1;
                    }
                }
                None => {
                    return Err(ApplyError::UserNameTaken {
                        user_name: user.user_name.as_str().to_owned(),
                    })
                }
            }
        }
        Ok(())
    }

    async fn create_teams(&mut self, ops: &[Op]) -> Result<(), ApplyError> {
        let teams: Vec<Team> = ops
            .iter()
            .filter_map(|op| match op {
                Op::CreateTeam(n) => Some(team_from_new(n, self.now)),
                _ => None,
            })
            .collect();
        let inserted: HashSet<Uuid> = self
            .tx
            .insert_teams_if_absent(&teams)
            .await?
            .into_iter()
            .collect();
        for (op, team) in ops.iter().zip(teams) {
            if inserted.contains(&team.id) {
                self.created_teams.insert(team.id);
                self.record(op, None);
                continue;
            }
            match self.tx.team(team.id).await? {
                Some(current) if same_team(&current, &team) => self.summary.unchanged += 1,
                Some(current) => {
                    let wanted = Team {
                        created: current.created,
                        version: current.version + 1,
                        modified: self.now,
                        ..team
                    };
                    self.tx.update_team(&wanted).await?;
                    self.record(op, None);
                }
                // The insert only skips rows whose id exists; this cannot happen short of
                // a concurrent delete, which the transaction rules out.
                None => return Err(StoreError::NotFound(format!("team {}", team.id)).into()),
            }
        }
        Ok(())
    }

    async fn add_members(&mut self, ops: &[Op]) -> Result<(), ApplyError> {
        let pairs: Vec<(Uuid, Uuid)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::AddMember { team_id, user_id } => Some((*team_id, *user_id)),
                _ => None,
            })
            .collect();
        let added: HashSet<(Uuid, Uuid)> = self
            .tx
            .add_members_if_absent(&pairs, &self.plan.source, self.now)
            .await?
            .into_iter()
            .collect();
        for op in ops {
            if let Op::AddMember { team_id, user_id } = op {
                if added.contains(&(*team_id, *user_id)) {
                    self.touched.insert(*team_id);
                    self.touched_users.insert(*user_id);
                    self.record(op, None);
                } else {
                    self.summary.unchanged += 1;
                }
            }
        }
        Ok(())
    }

    async fn single(&mut self, op: &Op) -> Result<(), ApplyError> {
        let trigger = self.actor.trigger;
        let actor = self.actor.name.clone();
        let changed = match op {
            Op::UpdateUser { id, changes } => match self.tx.user(*id).await? {
                Some(current) => {
                    let mut wanted = current.clone();
                    for c in changes {
                        set_user_attr(&mut wanted, c)?;
                    }
                    self.set_user(current, wanted).await?
                }
                None => false,
            },
            Op::DeactivateUser { id } => match self.tx.user(*id).await? {
                Some(current) if current.active => {
                    let wanted = User {
                        active: false,
                        ..current.clone()
                    };
                    self.set_user(current, wanted).await?
                }
                _ => false,
            },
            Op::DeleteUser { id } => {
                self.touched_users.remove(id);
                self.tx.delete_user(*id).await?
            }
            Op::UpdateTeam { id, changes } => match self.tx.team(*id).await? {
                Some(current) => {
                    let mut wanted = current.clone();
                    for c in changes {
                        set_team_attr(&mut wanted, c)?;
                    }
                    if same_team(&current, &wanted) {
                        false
                    } else {
                        wanted.version = current.version + 1;
                        wanted.modified = self.now;
                        self.tx.update_team(&wanted).await?;
                        if wanted.display_name != current.display_name {
                            // Every member shows the team's name in its `groups`.
                            self.tx.touch_members_of(*id, self.now).await?;
                        }
                        true
                    }
                }
                None => false,
            },
            Op::DeleteTeam { id } => {
                // The members lose the team from their `groups`: their ETags move too.
                self.tx.touch_members_of(*id, self.now).await?;
                let gone = self.tx.delete_team(*id).await?;
                self.touched.remove(id);
                gone
            }
            Op::RemoveMember { team_id, user_id } => {
                let removed = self.tx.remove_member(*team_id, *user_id).await?;
                if removed {
                    self.touched.insert(*team_id);
                    self.touched_users.insert(*user_id);
                }
                removed
            }
            Op::BlockKeys { user_id } => {
                let n = self.tx.block_user_keys(*user_id).await?;
                self.summary.keys_blocked += n;
                return self.keys_done(op, n);
            }
            Op::UnblockKeys { user_id } => {
                let n = self.tx.unblock_user_keys(*user_id).await?;
                self.summary.keys_unblocked += n;
                return self.keys_done(op, n);
            }
            Op::PurgeKeys {
                user_id,
                team_id,
                reason,
            } => {
                let n = match (user_id, team_id) {
                    (Some(u), Some(t)) => {
                        self.tx.purge_member_keys(*t, *u, trigger, &actor).await?
                    }
                    (Some(u), None) => {
                        self.tx
                            .purge_user_keys(*u, *reason, trigger, &actor)
                            .await?
                    }
                    (None, Some(t)) => self.tx.purge_team_keys(*t, trigger, &actor).await?,
                    (None, None) => {
                        return Err(ApplyError::InvalidPlan(
                            "a key purge names neither user nor team".into(),
                        ))
                    }
                };
                self.summary.keys_purged += n;
                return self.keys_done(op, n);
            }
            Op::CreateUser(_) => {
                self.create_users(std::slice::from_ref(op)).await?;
                return Ok(());
            }
            Op::CreateTeam(_) => {
                self.create_teams(std::slice::from_ref(op)).await?;
                return Ok(());
            }
            Op::AddMember { .. } => {
                self.add_members(std::slice::from_ref(op)).await?;
                return Ok(());
            }
        };
        if changed {
            self.record(op, None);
        } else {
            self.summary.unchanged += 1;
        }
        Ok(())
    }

    /// Key operations are audited with how many keys they affected, when any.
    fn keys_done(&mut self, op: &Op, n: u64) -> Result<(), ApplyError> {
        if n > 0 {
            self.record(op, Some(("keys", json!(n))));
        } else {
            self.summary.unchanged += 1;
        }
        Ok(())
    }
}
