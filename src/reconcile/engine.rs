//! The engine's front door: the one place a write to users, teams, memberships and
//! keys begins. A caller describes a change (a desired state, the policy it is judged
//! by, who asks, and the preconditions it rests on); the engine opens and owns the write
//! transaction, loads what the change touches, plans, checks the guards, applies with an
//! audit row per operation, and commits. A dry run is the same up to the plan, and
//! writes nothing.
//!
//! Preconditions are checked inside the transaction, against what it reads: an If-Match
//! version, or a saved plan's fingerprint of the store.

use super::apply::{apply, ApplyError, ApplySummary};
use super::desired::{Desired, Scope};
use super::load::{fingerprint, load_actual};
use super::ops::Plan;
use super::plan::{plan, plan_for_user};
use super::policy::{check_deletion_guard, PlanError, Policy, ResourceKind};
use super::Actor;
use crate::domain::{ApiKey, PurgeReason, Team, User};
use crate::keys::{self, Secret};
use crate::store::actual::AuditRecord;
use crate::store::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

/// Everything a change can end in. Each lower layer's error is kept whole, so that
/// src/error.rs (the one place errors become HTTP) and the CLI can say exactly what
/// went wrong.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The desired state cannot be planned, or a guard refused the plan.
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// → 500; the text is for the log, not the client.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// → 412: the target is no longer at a version the caller accepts.
    #[error("the resource has changed since the version given in If-Match")]
    PreconditionFailed,
    /// A saved plan whose store has moved on since it was made.
    #[error(
        "the plan is stale: the store has changed since it was made. Nothing was applied; \
         run `scimsync plan` again and review the new plan."
    )]
    StalePlan,
    /// A saved plan without the fingerprint that would prove it still applies.
    #[error(
        "the plan has no fingerprint of the state it was made against; save it with \
         `scimsync plan --out`"
    )]
    UnfingerprintedPlan,
    /// A key scoped to a team its user is not in.
    #[error("{user} is not a member of team {team:?}; add them to the team in the IdP first")]
    NotAMember { user: String, team: String },
}

impl EngineError {
    /// Whether the deletion or membership guard refused the plan (`--allow-deletions`
    /// would let it through).
    pub fn is_guard_refusal(&self) -> bool {
        matches!(
            self,
            EngineError::Plan(PlanError::DeletionGuard { .. } | PlanError::MembershipGuard { .. })
        )
    }
}

/// Which versions of its target a change accepts (SCIM's If-Match, parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No precondition (no If-Match, or `*`).
    AnyVersion,
    /// One of these versions; none at all when the tags named no version of ours.
    OneOf(Vec<i64>),
}

impl Expect {
    fn accepts(&self, version: i64) -> bool {
        match self {
            Expect::AnyVersion => true,
            Expect::OneOf(versions) => versions.contains(&version),
        }
    }
}

/// A change to make: the desired state and how to judge and record it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub desired: &'a Desired,
    pub policy: &'a Policy,
    pub actor: &'a Actor,
    /// `plan --user`: only what concerns this user (an id or a userName).
    pub for_user: Option<&'a str>,
    /// Record the store's fingerprint in the plan (for `plan --out`).
    pub fingerprint: bool,
    /// A scheduled pull's state to keep with the plan it produced: written in the same
    /// transaction, so it is kept exactly when the plan is applied.
    pub pull_state: Option<PullState<'a>>,
}

/// Where an IdP's next incremental pull starts: its delta cursor and the state of the
/// run that reached it.
#[derive(Debug, Clone, Copy)]
pub struct PullState<'a> {
    pub idp: &'a str,
    pub cursor: &'a str,
    pub delta_base: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn new(desired: &'a Desired, policy: &'a Policy, actor: &'a Actor) -> Self {
        Request {
            desired,
            policy,
            actor,
            for_user: None,
            fingerprint: false,
            pull_state: None,
        }
    }
}

/// What an applied change did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub plan: Plan,
    pub summary: ApplySummary,
}

/// The front door. Cheap to clone: it holds the store's handle.
#[derive(Clone)]
pub struct Engine {
    store: Store,
}

impl Engine {
    pub fn new(store: Store) -> Self {
        Engine { store }
    }

    /// The dry run: the plan the change would apply, guards checked, nothing written.
    /// It runs in a write transaction only for a consistent view of the store, and
    /// rolls it back.
    pub async fn plan(&self, change: Request<'_>) -> Result<Plan, EngineError> {
        let mut tx = self.store.begin_write().await?;
        plan_in(&mut tx, change).await
    }

    /// Plans, checks the guards, applies and commits.
    pub async fn apply(&self, change: Request<'_>) -> Result<Applied, EngineError> {
        let mut tx = self.store.begin_write().await?;
        let applied = apply_in(&mut tx, change).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Like [`Engine::apply`], after `show` has seen the plan (the CLI prints it first).
    pub async fn apply_shown(
        &self,
        change: Request<'_>,
        show: impl FnOnce(&Plan),
    ) -> Result<Applied, EngineError> {
        let mut tx = self.store.begin_write().await?;
        let plan = plan_in(&mut tx, change).await?;
        show(&plan);
        let summary = apply(&mut tx, &plan, change.actor).await?;
        enqueue_for_targets(&mut tx, &plan, change.policy).await?;
        tx.commit().await?;
        Ok(Applied { plan, summary })
    }

    /// A plan saved by `scimsync plan --out`, applied exactly as it was shown, and only
    /// if the store is still what the plan was computed against (the guards are checked
    /// again, against that same state).
    pub async fn apply_saved(
        &self,
        plan: Plan,
        policy: &Policy,
        actor: &Actor,
        show: impl FnOnce(&Plan),
    ) -> Result<Applied, EngineError> {
        let mut tx = self.store.begin_write().await?;
        let scope = Desired::new(plan.source.clone(), Scope::Everything);
        let actual = load_actual(&mut tx, &scope, policy).await?;
        match &plan.fingerprint {
            Some(saved) if *saved == fingerprint(&actual) => {}
            Some(_) => return Err(EngineError::StalePlan),
            None => return Err(EngineError::UnfingerprintedPlan),
        }
        check_deletion_guard(&plan, &actual, policy)?;
        show(&plan);
        let summary = apply(&mut tx, &plan, actor).await?;
        enqueue_for_targets(&mut tx, &plan, policy).await?;
        tx.commit().await?;
        Ok(Applied { plan, summary })
    }

    /// A change computed from one user as it is now (SCIM PUT, PATCH and DELETE): the
    /// user is read in the transaction, `expect` is checked against its version, and
    /// `build` turns it into the desired state, which is applied like [`Engine::apply`].
    pub async fn change_user<E: From<EngineError>>(
        &self,
        id: Uuid,
        expect: &Expect,
        policy: &Policy,
        actor: &Actor,
        build: impl FnOnce(&User) -> Result<Desired, E>,
    ) -> Result<Applied, E> {
        let mut tx = self.store.begin_write().await.map_err(EngineError::from)?;
        let current = tx
            .user(id)
            .await
            .map_err(EngineError::from)?
            .ok_or(EngineError::Plan(PlanError::NotFound {
                kind: ResourceKind::User,
                id,
            }))?;
        if !expect.accepts(current.version) {
            return Err(EngineError::PreconditionFailed.into());
        }
        let desired = build(&current)?;
        let applied = apply_in(&mut tx, Request::new(&desired, policy, actor)).await?;
        tx.commit().await.map_err(EngineError::from)?;
        Ok(applied)
    }

    /// [`Engine::change_user`] for a team (SCIM PUT, PATCH and DELETE on /Groups).
    pub async fn change_team<E: From<EngineError>>(
        &self,
        id: Uuid,
        expect: &Expect,
        policy: &Policy,
        actor: &Actor,
        build: impl FnOnce(&Team) -> Result<Desired, E>,
    ) -> Result<Applied, E> {
        let mut tx = self.store.begin_write().await.map_err(EngineError::from)?;
        let current = tx
            .team(id)
            .await
            .map_err(EngineError::from)?
            .ok_or(EngineError::Plan(PlanError::NotFound {
                kind: ResourceKind::Team,
                id,
            }))?;
        if !expect.accepts(current.version) {
            return Err(EngineError::PreconditionFailed.into());
        }
        let desired = build(&current)?;
        let applied = apply_in(&mut tx, Request::new(&desired, policy, actor)).await?;
        tx.commit().await.map_err(EngineError::from)?;
        Ok(applied)
    }

    /// Issues an API key for a user, optionally scoped to a team the user is in, and
    /// audits it. The returned secret is the only copy; the store keeps its hash.
    pub async fn issue_key(
        &self,
        new: NewKey,
        actor: &Actor,
    ) -> Result<(ApiKey, Secret), EngineError> {
        let secret = keys::mint_api_key();
        let now = crate::store::now();
        let key = ApiKey {
            id: Uuid::new_v4(),
            user_id: new.user_id,
            team_id: new.team_id,
            name: new.name,
            prefix: keys::visible_prefix(secret.expose()),
            created: now,
            expires: new.expires,
            blocked_by: None,
        };
        let mut tx = self.store.begin_write().await?;
        match tx
            .insert_key(&key, &keys::hash_secret(secret.expose()))
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotAMember) => {
                let user = tx.user(key.user_id).await?;
                let team = match key.team_id {
                    Some(t) => tx.team(t).await?,
                    None => None,
                };
                return Err(EngineError::NotAMember {
                    user: user.map_or_else(|| key.user_id.to_string(), |u| u.user_name.to_string()),
                    team: team.map_or_else(
                        || key.team_id.map(|t| t.to_string()).unwrap_or_default(),
                        |t| t.display_name.to_string(),
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let record = AuditRecord {
            operation: "issue_key",
            target: format!("key:{}", key.id),
            detail: json!({
                "before": null,
                "after": {
                    "user_id": key.user_id,
                    "team_id": key.team_id,
                    "name": key.name,
                    "prefix": key.prefix,
                    "expires": key.expires.map(crate::store::format_ts),
                },
            }),
        };
        tx.audit_at_commit(actor.trigger, &actor.name, now, &[record])
            .await?;
        tx.commit().await?;
        Ok((key, secret))
    }

    /// Revokes a key: it moves to the audit copies (deleted_api_keys) and the change is
    /// audited. False when no such key exists ("already gone").
    pub async fn revoke_key(&self, id: Uuid, actor: &Actor) -> Result<bool, EngineError> {
        let mut tx = self.store.begin_write().await?;
        let moved = tx
            .purge_key(id, PurgeReason::Revoked, actor.trigger, &actor.name)
            .await?;
        if moved > 0 {
            let record = AuditRecord {
                operation: "revoke_key",
                target: format!("key:{id}"),
                detail: json!({"before": {"key": "present"}, "after": null}),
            };
            tx.audit_at_commit(actor.trigger, &actor.name, crate::store::now(), &[record])
                .await?;
        }
        tx.commit().await?;
        Ok(moved > 0)
    }
}

/// A key to issue.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub user_id: Uuid,
    pub team_id: Option<Uuid>,
    pub name: Option<String>,
    pub expires: Option<DateTime<Utc>>,
}

/// Loads what the change touches and plans it, guards included, inside `tx`.
async fn plan_in(tx: &mut WriteTx, change: Request<'_>) -> Result<Plan, EngineError> {
    let actual = load_actual(tx, change.desired, change.policy).await?;
    let mut planned = match change.for_user {
        Some(user) => plan_for_user(change.desired, &actual, change.policy, user)?,
        None => plan(change.desired, &actual, change.policy)?,
    };
    if change.fingerprint {
        planned.fingerprint = Some(fingerprint(&actual));
    }
    Ok(planned)
}

/// Plans and applies inside `tx`, which the caller commits: the engine's own methods,
/// and the grouped SCIM creates (one transaction, one savepoint per create).
pub(super) async fn apply_in(
    tx: &mut WriteTx,
    change: Request<'_>,
) -> Result<Applied, EngineError> {
    let plan = plan_in(tx, change).await?;
    let summary = apply(tx, &plan, change.actor).await?;
    enqueue_for_targets(tx, &plan, change.policy).await?;
    if let Some(pull) = change.pull_state {
        tx.save_delta_base(pull.idp, pull.cursor, pull.delta_base)
            .await?;
    }
    Ok(Applied { plan, summary })
}

/// The downstream targets' share of an applied plan, in its transaction: the change
/// reaches them exactly when it is committed (src/target/ delivers it).
async fn enqueue_for_targets(
    tx: &mut WriteTx,
    plan: &Plan,
    policy: &Policy,
) -> Result<(), EngineError> {
    if policy.targets.is_empty() || plan.ops.is_empty() {
        return Ok(());
    }
    let rows = super::outbox::outbox_rows(plan);
    tx.enqueue_outbox(&policy.targets, &rows).await?;
    Ok(())
}
