//! The reconcile engine: the one code path that writes users, teams, memberships and keys.
//!
//! A caller describes what it wants ([`Desired`]); [`load_actual`] reads the part of the
//! store that the wish touches ([`Actual`]); [`plan`] computes, purely and
//! deterministically, the ordered idempotent operations that close the gap ([`Plan`]);
//! [`apply`] runs them in the caller's transaction, auditing each. SCIM handlers call
//! [`reconcile_in`]; the CLI renders the plan first (`scimsync plan`) or applies it.

mod apply;
pub mod batch;
pub mod desired;
mod load;
mod plan;
pub mod render;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use apply::{apply, user_from_new, ApplyError, ApplySummary};
pub use desired::{Desired, DesiredTeam, DesiredUser, Intent, MemberRef, MemberSpec, Scope};
pub use load::{fingerprint, load_actual};
pub use plan::{
    check_deletion_guard, plan, plan_for_user, Actual, Change, Counts, NewTeam, NewUser, Op,
    OpKind, Plan, PurgeCause, FORMAT_VERSION,
};

use crate::config::{Config, UnknownMembers};
use crate::domain::{Role, Source, Trigger};
use crate::store::{StoreError, WriteTx};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// What the configuration allows provisioning to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Role of a user created without one (and of one who leaves every role group).
    pub default_role: Role,
    /// Group display name, id or external id → role its members get.
    pub role_groups: BTreeMap<String, Role>,
    pub unknown_members: UnknownMembers,
    pub purge_team_keys_on_removal: bool,
    /// How long a user missing from a complete pull stays deactivated before deletion;
    /// `None`: never delete, only deactivate.
    pub delete_after: Option<Duration>,
    pub max_deletions: u64,
    pub max_deletion_ratio: f64,
    /// `[safety] max_membership_removals` and `max_membership_removal_ratio`, resolved
    /// (they default to the deletion guard's limits).
    pub max_membership_removals: u64,
    pub max_membership_removal_ratio: f64,
    /// `--allow-deletions`: lifts the deletion guard.
    pub allow_deletions: bool,
    /// `[teams] defaults`: the metadata an auto-created team starts with.
    pub team_defaults: Map<String, Value>,
    /// The clock `delete_after` is measured against; an input so that plans are reproducible.
    pub now: DateTime<Utc>,
    /// `[ownership] adopt`: IdP → the owners (IdP names, or "manual") whose objects it
    /// may take over.
    pub adopt: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// How the IdP behind a desired state stands to the owner of an object it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The same IdP owns it, whichever way its data arrived (push, pull or sign-in).
    Own,
    /// Nobody's: an operator made it by hand. A pull may adopt such a user.
    Manual,
    /// Another owner's, which `[ownership] adopt` lets this IdP take over.
    Adoptable,
    /// Another IdP's: left alone by pulls and sign-ins, refused to SCIM writes.
    Foreign,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        let p = &config.provisioning;
        Policy {
            default_role: p.default_role.clone(),
            role_groups: p.role_groups.clone(),
            unknown_members: p.unknown_members,
            purge_team_keys_on_removal: p.purge_team_keys_on_removal,
            delete_after: p.delete_after,
            max_deletions: config.safety.max_deletions,
            max_deletion_ratio: config.safety.max_deletion_ratio,
            max_membership_removals: config.safety.membership_removals(),
            max_membership_removal_ratio: config.safety.membership_removal_ratio(),
            allow_deletions: false,
            team_defaults: config.teams.defaults.clone(),
            now: crate::store::now(),
            adopt: config
                .ownership
                .adopt
                .iter()
                .map(|(idp, owners)| (idp.clone(), owners.iter().cloned().collect()))
                .collect(),
        }
    }

    /// How `actor` (the source of a desired state) stands to what `owner` owns.
    pub fn ownership(&self, owner: &Source, actor: &Source) -> Ownership {
        if owner.same_owner(actor) {
            return Ownership::Own;
        }
        let adoptable = actor.idp().is_some_and(|idp| {
            self.adopt
                .get(idp)
                .is_some_and(|owners| owners.contains(owner.idp().unwrap_or("manual")))
        });
        match (adoptable, owner.is_manual()) {
            (true, _) => Ownership::Adoptable,
            (false, true) => Ownership::Manual,
            (false, false) => Ownership::Foreign,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_config(&Config::default())
    }
}

/// Who applies a plan, for the audit log: the trigger and e.g. the SCIM token's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub trigger: Trigger,
    pub name: String,
    /// The IdP a SCIM token pushes for; `None` for every other actor.
    pub idp: Option<String>,
}

impl Actor {
    pub fn new(trigger: Trigger, name: impl Into<String>) -> Self {
        Self {
            trigger,
            name: name.into(),
            idp: None,
        }
    }

    /// A SCIM request made with the token `name`, bound to `idp`.
    pub fn scim_token(name: impl Into<String>, idp: impl Into<String>) -> Self {
        Self {
            trigger: Trigger::Scim,
            name: name.into(),
            idp: Some(idp.into()),
        }
    }

    /// The owner of what this actor's SCIM writes create, and the one whose objects
    /// they may change.
    pub fn scim_source(&self) -> Source {
        Source::Scim(
            self.idp
                .clone()
                .unwrap_or_else(|| crate::domain::DEFAULT_SCIM_IDP.to_owned()),
        )
    }
}

/// What kind of resource an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    User,
    Team,
    Membership,
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResourceKind::User => "user",
            ResourceKind::Team => "group",
            ResourceKind::Membership => "membership",
        })
    }
}

/// Why a desired state cannot be planned. Every message is safe to show to a SCIM
/// client or an operator: it names what the caller sent, nothing internal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("userName {user_name:?} is already taken by another user")]
    UserNameTaken { user_name: String },
    /// A member reference that matches no user (with `unknown_members = "reject"`).
    #[error("member {id} does not exist")]
    UnknownMember { id: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: ResourceKind, id: Uuid },
    /// A SCIM write to what another IdP owns.
    #[error(
        "{kind} {name:?} is owned by {}; this token pushes for IdP {:?}, which may read it \
         but not change or remove it (to hand it over: [ownership] adopt = {{ {} = [\"{}\"] }})",
        owner.owner_label(),
        actor.idp().unwrap_or_default(),
        actor.idp().unwrap_or_default(),
        owner.idp().unwrap_or("manual")
    )]
    NotOwned {
        kind: ResourceKind,
        id: Uuid,
        name: String,
        owner: Source,
        actor: Source,
    },
    #[error(
        "refusing to delete or deactivate {deletions} of {managed} managed users and teams: \
         the limit is {limit} ([safety] max_deletions = {max_deletions}, max_deletion_ratio = \
         {max_ratio}); check the IdP, then re-run with --allow-deletions if this is intended"
    )]
    DeletionGuard {
        /// Deletions plus deactivations in the plan.
        deletions: u64,
        /// The effective limit: the smaller of max_deletions and the ratio's share.
        limit: u64,
        managed: u64,
        max_deletions: u64,
        max_ratio: f64,
    },
    #[error(
        "refusing to remove {removals} of {managed} managed team memberships{} (and the \
         keys scoped to those teams): the limit is {limit} ([safety] \
         max_membership_removals = {max_removals}, max_membership_removal_ratio = \
         {max_ratio}); check the IdP, then re-run with --allow-deletions if this is intended",
        match with_deleted_teams {
            0 => String::new(),
            n => format!(", {n} of them by deleting the teams they are in"),
        }
    )]
    MembershipGuard {
        removals: u64,
        /// How many of the removals come with teams the plan deletes.
        with_deleted_teams: u64,
        limit: u64,
        managed: u64,
        max_removals: u64,
        max_ratio: f64,
    },
    /// The desired state contradicts itself (e.g. two users with one userName).
    #[error("{0}")]
    Invalid(String),
}

/// Everything [`reconcile_in`] can fail with; the SCIM layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// → 409 uniqueness.
    #[error("userName {user_name:?} is already taken by another user")]
    UserNameTaken { user_name: String },
    /// → 400 invalidValue.
    #[error("member {id} does not exist")]
    UnknownMember { id: String },
    /// → 404.
    #[error("{kind} {id} not found")]
    NotFound { kind: ResourceKind, id: Uuid },
    /// → 403: the object belongs to another IdP.
    #[error("{0}")]
    NotOwned(PlanError),
    /// Only IdP pulls and the CLI meet this; the message says to use --allow-deletions.
    #[error("{0}")]
    DeletionGuard(PlanError),
    /// → 400 invalidValue.
    #[error("{0}")]
    Invalid(String),
    /// → 500; the text is for the log, not the client.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PlanError> for ReconcileError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::UserNameTaken { user_name } => ReconcileError::UserNameTaken { user_name },
            PlanError::UnknownMember { id } => ReconcileError::UnknownMember { id },
            PlanError::NotFound { kind, id } => ReconcileError::NotFound { kind, id },
            e @ PlanError::NotOwned { .. } => ReconcileError::NotOwned(e),
            e @ (PlanError::DeletionGuard { .. } | PlanError::MembershipGuard { .. }) => {
                ReconcileError::DeletionGuard(e)
            }
            PlanError::Invalid(m) => ReconcileError::Invalid(m),
        }
    }
}

impl From<ApplyError> for ReconcileError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::UserNameTaken { user_name } => ReconcileError::UserNameTaken { user_name },
            ApplyError::InvalidPlan(m) => ReconcileError::Invalid(m),
            ApplyError::Store(e) => ReconcileError::Store(e),
        }
    }
}

/// `load_actual` + `plan` + `apply` inside the caller's transaction. SCIM handlers open
/// the transaction, check ETags, call this, then commit; on error they drop the
/// transaction, which rolls everything back.
pub async fn reconcile_in(
    tx: &mut WriteTx,
    desired: &Desired,
    policy: &Policy,
    actor: &Actor,
) -> Result<Plan, ReconcileError> {
    Ok(reconcile_and_summarise(tx, desired, policy, actor).await?.0)
}

/// [`reconcile_in`], also returning what the apply did (and when), from which a
/// caller can render what it created without reading it back.
pub async fn reconcile_and_summarise(
    tx: &mut WriteTx,
    desired: &Desired,
    policy: &Policy,
    actor: &Actor,
) -> Result<(Plan, ApplySummary), ReconcileError> {
    let actual = load_actual(tx, desired, policy).await?;
    let plan = plan(desired, &actual, policy)?;
    let summary = apply(tx, &plan, actor).await?;
    Ok((plan, summary))
}
