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
use super::load::{fingerprint, load_actual, load_actual_knowing};
use super::ops::Plan;
use super::plan::{plan, plan_for_user};
use super::policy::{check_deletion_guard, GuardVerdict, PlanError, Policy, ResourceKind};
use super::render::render_text;
use super::snapshot::Snapshot;
use super::summary::summarize;
use super::Actor;
use crate::domain::{ApiKey, PurgeReason, Team, User};
use crate::keys::{self, Secret};
use crate::store::actual::AuditRecord;
use crate::store::quarantine::{NewQuarantinedPlan, QuarantinedBody, QuarantinedPlan};
use crate::store::{Savepoint, Store, StoreError, WriteTx};
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
    /// → 503: the change was one of several committed together (see `batch.rs`) and
    /// their transaction failed, so nothing of it was applied and it is safe to retry.
    /// The database's own error (the text) is for the log, not the client.
    #[error("the change was not applied: the transaction it shared with others failed ({0})")]
    NotCommitted(String),
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
    #[error("there is no quarantined plan {0}; `scimsync plans list --all` lists them")]
    NoSuchQuarantinedPlan(i64),
    /// A decision about a plan that was decided already.
    #[error(
        "plan {id} was {decision} already (by {by}){}; nothing was done",
        match superseded_by {
            Some(next) => format!(": review plan {next} instead (`scimsync plans show {next}`)"),
            None => String::new(),
        }
    )]
    AlreadyDecided {
        id: i64,
        decision: String,
        by: String,
        superseded_by: Option<i64>,
    },
    /// A kept plan that cannot be read back (written by another version, or damaged).
    #[error("quarantined plan {id} cannot be read: {reason}; reject it and let the next sync plan again")]
    UnreadableQuarantinedPlan { id: i64, reason: String },
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

/// A change whose plan a guard may refuse, from a sync that nobody watches: a refused
/// plan is kept for an operator instead of dropped (see [`Engine::apply_or_quarantine`]).
#[derive(Debug, Clone, Copy)]
pub struct Quarantine<'a> {
    pub idp: &'a str,
}

/// What [`Engine::apply_or_quarantine`] did.
#[derive(Debug, Clone)]
pub struct Synced {
    /// What was applied: the whole plan, or, while the IdP has a plan in quarantine,
    /// the plan without its removals.
    pub applied: Applied,
    /// The IdP's plan awaiting a decision, if any.
    pub quarantined: Option<Quarantined>,
}

/// The plan of an IdP in quarantine, as a sync left it.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub id: i64,
    /// This change's own plan was refused (and is the one kept); when `None` an
    /// earlier refusal is still awaiting a decision.
    pub refusal: Option<GuardVerdict>,
    /// Removals (deactivations, deletions, membership removals) left out of what was
    /// applied.
    pub held: Vec<String>,
}

/// What approving a quarantined plan did.
#[derive(Debug, Clone)]
pub enum Approval {
    /// The store was as the plan found it: the plan was applied, deletions allowed.
    Applied(Applied),
    /// The store had changed: the kept desired state was planned again against it,
    /// and the new plan is in quarantine in place of the old, for review.
    Replanned { id: i64, plan: Plan },
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
        refuse_if_guarded(&plan)?;
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

    /// A sync's change (scheduled or one-off pull): applied whole when the guards
    /// allow it and the IdP has no plan in quarantine. Otherwise additions and
    /// updates are applied and removals held back (the plan is made again with
    /// `hold_removals`), and a refused plan is kept in quarantine for an operator:
    /// the plan of what is left once the additions are in, with the store's
    /// fingerprint after them, so that approving it applies exactly what was shown.
    pub async fn apply_or_quarantine(
        &self,
        change: Request<'_>,
        quarantine: Quarantine<'_>,
    ) -> Result<Synced, EngineError> {
        let mut tx = self.store.begin_write().await?;
        let pending = tx.pending_quarantined_plan(quarantine.idp).await?;
        let whole = plan_in(&mut tx, change).await?;
        let refusal = whole.refusal().cloned();
        if refusal.is_none() && pending.is_none() {
            let applied = apply_planned(&mut tx, whole, change).await?;
            tx.commit().await?;
            return Ok(Synced {
                applied,
                quarantined: None,
            });
        }
        drop(whole);
        let holding = Policy {
            hold_removals: true,
            ..change.policy.clone()
        };
        let held_change = Request {
            policy: &holding,
            // A refused run's pull is suspect: its delta base must not become what the
            // next runs apply their changes to, or a glitch that heals without a change
            // of its own would outlive the decision about it.
            pull_state: change.pull_state.filter(|_| refusal.is_none()),
            ..change
        };
        let held = plan_in(&mut tx, held_change).await?;
        // Without removals there is nothing for a guard to refuse; checked all the same.
        refuse_if_guarded(&held)?;
        let held_back = held_removals(&held);
        let applied = apply_planned(&mut tx, held, held_change).await?;
        let kept_id = pending.as_ref().map(|(kept, _)| kept.id);
        let id = match &refusal {
            Some(verdict) => {
                let actual = load_actual(&mut tx, change.desired, change.policy).await?;
                let mut remaining = plan(change.desired, &actual, change.policy)?;
                remaining.fingerprint = Some(fingerprint(&actual));
                // Kept with the plan, so that an approval can plan it again when the
                // store has moved on.
                let snapshot = Snapshot::from_desired(change.desired)
                    .and_then(|s| serde_json::to_string(&s).ok())
                    .ok_or_else(|| {
                        EngineError::Plan(PlanError::Invalid(
                            "only a pull's desired state can be kept in quarantine".into(),
                        ))
                    })?;
                keep(
                    &mut tx,
                    pending,
                    quarantine.idp,
                    change.actor.trigger.as_str(),
                    &verdict.reason(),
                    &remaining,
                    &snapshot,
                    change.actor,
                )
                .await
                .map(Some)?
            }
            None => kept_id,
        };
        tx.commit().await?;
        Ok(Synced {
            applied,
            quarantined: id.map(|id| Quarantined {
                id,
                refusal,
                held: held_back,
            }),
        })
    }

    /// Approves a quarantined plan: applied as it was kept, deletions allowed, when
    /// the store is still what it was made against (its fingerprint); otherwise the
    /// kept desired state is planned again against the store as it is now, and the
    /// new plan replaces the old one in quarantine, for the operator to review (an
    /// approval never applies anything the operator has not seen). Audited either way.
    pub async fn approve_quarantined(
        &self,
        id: i64,
        policy: &Policy,
        actor: &Actor,
    ) -> Result<Approval, EngineError> {
        let mut tx = self.store.begin_write().await?;
        let (kept, body) = tx
            .quarantined_plan(id)
            .await?
            .ok_or(EngineError::NoSuchQuarantinedPlan(id))?;
        let kept = pending(kept)?;
        let kept_plan = read_kept_plan(id, &body)?;
        let everything = Desired::new(kept_plan.source.clone(), Scope::Everything);
        let actual = load_actual(&mut tx, &everything, policy).await?;
        let now = crate::store::now();
        if fingerprint(&actual) == kept.fingerprint {
            let summary = apply(&mut tx, &kept_plan, actor).await?;
            enqueue_for_targets(&mut tx, &kept_plan, policy).await?;
            tx.decide_quarantined_plan(id, "approved", &actor.name, now)
                .await?;
            let mut detail = plan_detail(&kept.idp, &kept_plan, &kept.reason);
            detail["applied"] = json!(summary.applied);
            audit_plan(&mut tx, actor, "approve_plan", id, detail).await?;
            tx.commit().await?;
            return Ok(Approval::Applied(Applied {
                plan: kept_plan,
                summary,
            }));
        }
        let snapshot = Snapshot::parse(&body.snapshot).map_err(|e| {
            EngineError::UnreadableQuarantinedPlan {
                id,
                reason: e.to_string(),
            }
        })?;
        let desired = snapshot.into_desired();
        let actual = load_actual(&mut tx, &desired, policy).await?;
        let mut replanned = plan(&desired, &actual, policy)?;
        replanned.fingerprint = Some(fingerprint(&actual));
        if replanned.is_empty() {
            // Nothing is left to do (the store caught up some other way): approving
            // it can only mean closing it.
            tx.decide_quarantined_plan(id, "approved", &actor.name, now)
                .await?;
            let mut detail = plan_detail(&kept.idp, &replanned, &kept.reason);
            detail["applied"] = json!(0);
            audit_plan(&mut tx, actor, "approve_plan", id, detail).await?;
            tx.commit().await?;
            return Ok(Approval::Applied(Applied {
                plan: replanned,
                summary: ApplySummary::default(),
            }));
        }
        tx.decide_quarantined_plan(id, "superseded", &actor.name, now)
            .await?;
        let reason = format!(
            "planned again when plan {id} was approved: the store had changed since it was made{}",
            match replanned.refusal() {
                Some(verdict) => format!("; {}", verdict.reason()),
                None => String::new(),
            }
        );
        let new_id = tx
            .insert_quarantined_plan(
                NewQuarantinedPlan {
                    idp: &kept.idp,
                    trigger: actor.trigger.as_str(),
                    reason: &reason,
                    fingerprint: replanned.fingerprint.as_deref().unwrap_or_default(),
                    plan: &serde_json::to_string(&replanned).map_err(|e| {
                        EngineError::Store(StoreError::Corrupt {
                            table: "quarantined_plans",
                            detail: format!("cannot encode the plan: {e}"),
                        })
                    })?,
                    rendered: &render_text(&replanned, false),
                    snapshot: &body.snapshot,
                    summary: &summarize(&replanned),
                },
                now,
            )
            .await?;
        tx.mark_superseded_by(id, new_id).await?;
        audit_plan(
            &mut tx,
            actor,
            "replan_plan",
            id,
            json!({"idp": kept.idp, "superseded_by": new_id, "reason": "the store had changed"}),
        )
        .await?;
        audit_plan(
            &mut tx,
            actor,
            "quarantine_plan",
            new_id,
            plan_detail(&kept.idp, &replanned, &reason),
        )
        .await?;
        tx.commit().await?;
        Ok(Approval::Replanned {
            id: new_id,
            plan: replanned,
        })
    }

    /// Rejects a quarantined plan: nothing is applied, the decision is audited, and
    /// the IdP's next sync plans afresh (and is refused again if the IdP still says
    /// the same).
    pub async fn reject_quarantined(
        &self,
        id: i64,
        actor: &Actor,
    ) -> Result<QuarantinedPlan, EngineError> {
        let mut tx = self.store.begin_write().await?;
        let (kept, _) = tx
            .quarantined_plan(id)
            .await?
            .ok_or(EngineError::NoSuchQuarantinedPlan(id))?;
        let kept = pending(kept)?;
        tx.decide_quarantined_plan(id, "rejected", &actor.name, crate::store::now())
            .await?;
        audit_plan(
            &mut tx,
            actor,
            "reject_plan",
            id,
            json!({"idp": kept.idp, "reason": kept.reason}),
        )
        .await?;
        tx.commit().await?;
        Ok(kept)
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
        let applied = change_in(&mut tx, id, expect, policy, actor, build).await?;
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
        let applied = change_in(&mut tx, id, expect, policy, actor, build).await?;
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

/// What a SCIM PUT, PATCH or DELETE changes, as it is now: a user or a team.
pub(crate) trait Target: Sized + Send + Sync + 'static {
    const KIND: ResourceKind;
    fn version(&self) -> i64;
    /// Reads it in `tx`.
    fn read(
        tx: &mut WriteTx,
        id: Uuid,
    ) -> impl std::future::Future<Output = Result<Option<Self>, StoreError>> + Send;
    /// Takes a savepoint in `tx`, then reads it (see `WriteTx::savepoint_then_row`).
    fn read_after_savepoint(
        tx: &mut WriteTx,
        savepoint: &'static str,
        id: Uuid,
    ) -> impl std::future::Future<Output = (Option<Savepoint>, Result<Option<Self>, StoreError>)> + Send;
    /// The team, which planning the change then need not read again.
    fn as_team(&self) -> Option<&Team> {
        None
    }
}

impl Target for User {
    const KIND: ResourceKind = ResourceKind::User;

    fn version(&self) -> i64 {
        self.version
    }

    fn read(
        tx: &mut WriteTx,
        id: Uuid,
    ) -> impl std::future::Future<Output = Result<Option<Self>, StoreError>> + Send {
        tx.user(id)
    }

    fn read_after_savepoint(
        tx: &mut WriteTx,
        savepoint: &'static str,
        id: Uuid,
    ) -> impl std::future::Future<Output = (Option<Savepoint>, Result<Option<Self>, StoreError>)> + Send
    {
        tx.savepoint_then_user(savepoint, id)
    }
}

impl Target for Team {
    const KIND: ResourceKind = ResourceKind::Team;

    fn version(&self) -> i64 {
        self.version
    }

    fn read(
        tx: &mut WriteTx,
        id: Uuid,
    ) -> impl std::future::Future<Output = Result<Option<Self>, StoreError>> + Send {
        tx.team(id)
    }

    fn read_after_savepoint(
        tx: &mut WriteTx,
        savepoint: &'static str,
        id: Uuid,
    ) -> impl std::future::Future<Output = (Option<Savepoint>, Result<Option<Self>, StoreError>)> + Send
    {
        tx.savepoint_then_team(savepoint, id)
    }

    fn as_team(&self) -> Option<&Team> {
        Some(self)
    }
}

/// [`Engine::change_user`] or [`Engine::change_team`] inside `tx`, which the caller
/// commits.
pub(super) async fn change_in<T: Target, E: From<EngineError>>(
    tx: &mut WriteTx,
    id: Uuid,
    expect: &Expect,
    policy: &Policy,
    actor: &Actor,
    build: impl FnOnce(&T) -> Result<Desired, E>,
) -> Result<Applied, E> {
    let current = T::read(tx, id).await;
    change_read(tx, current, id, expect, policy, actor, build).await
}

/// [`change_in`] as one of several changes that share a transaction (see `batch.rs`):
/// in a savepoint of its own, returned whenever it was taken, for the caller to roll
/// back to if the change is refused.
pub(super) async fn change_in_savepoint<T: Target, E: From<EngineError>>(
    tx: &mut WriteTx,
    savepoint: &'static str,
    id: Uuid,
    expect: &Expect,
    policy: &Policy,
    actor: &Actor,
    build: impl FnOnce(&T) -> Result<Desired, E>,
) -> (Option<Savepoint>, Result<Applied, E>) {
    let (taken, current) = T::read_after_savepoint(tx, savepoint, id).await;
    let changed = change_read(tx, current, id, expect, policy, actor, build).await;
    (taken, changed)
}

/// The rest of a change, once its target has been read in `tx` (a team is not read
/// again to plan it).
async fn change_read<T: Target, E: From<EngineError>>(
    tx: &mut WriteTx,
    current: Result<Option<T>, StoreError>,
    id: Uuid,
    expect: &Expect,
    policy: &Policy,
    actor: &Actor,
    build: impl FnOnce(&T) -> Result<Desired, E>,
) -> Result<Applied, E> {
    let current = current.map_err(EngineError::from)?;
    let current = checked(current.map(|t| (t.version(), t)), T::KIND, id, expect)?;
    let desired = build(&current)?;
    let change = Request::new(&desired, policy, actor);
    let plan = plan_knowing(tx, change, current.as_team()).await?;
    refuse_if_guarded(&plan)?;
    Ok(apply_planned(tx, plan, change).await?)
}

/// The target of a change as read in its transaction, if it exists at a version
/// `expect` accepts.
fn checked<T>(
    current: Option<(i64, T)>,
    kind: ResourceKind,
    id: Uuid,
    expect: &Expect,
) -> Result<T, EngineError> {
    let (version, current) = current.ok_or(EngineError::Plan(PlanError::NotFound { kind, id }))?;
    if !expect.accepts(version) {
        return Err(EngineError::PreconditionFailed);
    }
    Ok(current)
}

/// Loads what the change touches and plans it, guards included, inside `tx`.
async fn plan_in(tx: &mut WriteTx, change: Request<'_>) -> Result<Plan, EngineError> {
    plan_knowing(tx, change, None).await
}

/// [`plan_in`] with a team already read in `tx` (see [`load_actual_knowing`]).
async fn plan_knowing(
    tx: &mut WriteTx,
    change: Request<'_>,
    known: Option<&Team>,
) -> Result<Plan, EngineError> {
    let actual = load_actual_knowing(tx, change.desired, change.policy, known).await?;
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
/// and the grouped SCIM writes of `batch.rs`.
pub(super) async fn apply_in(
    tx: &mut WriteTx,
    change: Request<'_>,
) -> Result<Applied, EngineError> {
    let plan = plan_in(tx, change).await?;
    refuse_if_guarded(&plan)?;
    apply_planned(tx, plan, change).await
}

/// Applies a plan already judged, keeping the pull's state with it.
async fn apply_planned(
    tx: &mut WriteTx,
    plan: Plan,
    change: Request<'_>,
) -> Result<Applied, EngineError> {
    let summary = apply(tx, &plan, change.actor).await?;
    enqueue_for_targets(tx, &plan, change.policy).await?;
    if let Some(pull) = change.pull_state {
        tx.save_delta_base(pull.idp, pull.cursor, pull.delta_base)
            .await?;
    }
    Ok(Applied { plan, summary })
}

/// A plan shows what the guards think of it; applying one they refuse is refused.
fn refuse_if_guarded(plan: &Plan) -> Result<(), EngineError> {
    match plan.refusal() {
        Some(verdict) => Err(EngineError::Plan(verdict.error())),
        None => Ok(()),
    }
}

/// The removals a plan made with `hold_removals` left out, as its warnings say.
fn held_removals(plan: &Plan) -> Vec<String> {
    plan.warnings
        .iter()
        .filter(|w| w.starts_with("removals held back"))
        .cloned()
        .collect()
}

/// Whether two plans make the same changes (their verdicts and fingerprints aside).
fn same_changes(kept: &str, plan: &Plan) -> bool {
    serde_json::from_str::<Plan>(kept).is_ok_and(|kept| {
        kept.ops == plan.ops
            && kept.user_names == plan.user_names
            && kept.team_names == plan.team_names
    })
}

fn read_kept_plan(id: i64, body: &QuarantinedBody) -> Result<Plan, EngineError> {
    serde_json::from_str(&body.plan).map_err(|e| EngineError::UnreadableQuarantinedPlan {
        id,
        reason: e.to_string(),
    })
}

fn pending(kept: QuarantinedPlan) -> Result<QuarantinedPlan, EngineError> {
    match (&kept.decision, &kept.decided_by) {
        (Some(decision), by) if !kept.is_pending() => Err(EngineError::AlreadyDecided {
            id: kept.id,
            decision: decision.clone(),
            by: by.clone().unwrap_or_default(),
            superseded_by: kept.superseded_by,
        }),
        _ => Ok(kept),
    }
}

/// One audit row about a kept plan, written with the transaction that decides it.
async fn audit_plan(
    tx: &mut WriteTx,
    actor: &Actor,
    operation: &'static str,
    id: i64,
    detail: serde_json::Value,
) -> Result<(), EngineError> {
    let record = AuditRecord {
        operation,
        target: format!("plan:{id}"),
        detail,
    };
    tx.audit_at_commit(actor.trigger, &actor.name, crate::store::now(), &[record])
        .await?;
    Ok(())
}

/// What a kept plan is about, for its audit rows.
fn plan_detail(idp: &str, plan: &Plan, reason: &str) -> serde_json::Value {
    let counts = plan.counts();
    json!({
        "idp": idp,
        "reason": reason,
        "add": counts.add,
        "change": counts.change,
        "destroy": counts.destroy,
        "fingerprint": plan.fingerprint,
    })
}

/// Keeps `plan` as the IdP's plan awaiting a decision, in place of `pending` (one
/// per IdP: a repeated refusal replaces the earlier one rather than piling up, and
/// one with the very same changes stays the same plan). Returns its id.
#[allow(clippy::too_many_arguments)]
async fn keep(
    tx: &mut WriteTx,
    pending: Option<(QuarantinedPlan, QuarantinedBody)>,
    idp: &str,
    trigger: &str,
    reason: &str,
    plan: &Plan,
    snapshot: &str,
    actor: &Actor,
) -> Result<i64, EngineError> {
    let fingerprint = plan.fingerprint.clone().unwrap_or_default();
    let plan_json = serde_json::to_string(plan).map_err(|e| {
        EngineError::Store(StoreError::Corrupt {
            table: "quarantined_plans",
            detail: format!("cannot encode the plan: {e}"),
        })
    })?;
    if let Some((old, body)) = &pending {
        if same_changes(&body.plan, plan) {
            tx.refresh_quarantined_plan(old.id, &fingerprint, &plan_json, snapshot)
                .await?;
            return Ok(old.id);
        }
    }
    let now = crate::store::now();
    if let Some((old, _)) = &pending {
        tx.decide_quarantined_plan(old.id, "superseded", &actor.name, now)
            .await?;
    }
    let rendered = render_text(plan, false);
    let id = tx
        .insert_quarantined_plan(
            NewQuarantinedPlan {
                idp,
                trigger,
                reason,
                fingerprint: &fingerprint,
                plan: &plan_json,
                rendered: &rendered,
                snapshot,
                summary: &summarize(plan),
            },
            now,
        )
        .await?;
    if let Some((old, _)) = &pending {
        tx.mark_superseded_by(old.id, id).await?;
        audit_plan(
            tx,
            actor,
            "supersede_plan",
            old.id,
            json!({"idp": idp, "superseded_by": id}),
        )
        .await?;
    }
    audit_plan(
        tx,
        actor,
        "quarantine_plan",
        id,
        plan_detail(idp, plan, reason),
    )
    .await?;
    Ok(id)
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
