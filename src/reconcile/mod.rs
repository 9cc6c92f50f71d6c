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
mod ops;
mod plan;
mod policy;
mod record;
pub mod render;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use apply::{apply, user_from_new, ApplyError, ApplySummary};
pub use desired::{Desired, DesiredTeam, DesiredUser, Intent, MemberRef, MemberSpec, Scope};
pub use load::{fingerprint, load_actual};
pub use ops::{
    Actual, Change, Counts, NewTeam, NewUser, Op, OpKind, Plan, TeamDeletions, FORMAT_VERSION,
};
pub use plan::{plan, plan_for_user};
pub use policy::{
    check_deletion_guard, Ownership, PlanError, Policy, ResourceKind,
    ALWAYS_ALLOWED_MEMBERSHIP_REMOVALS,
};

use crate::domain::{Source, Trigger};
use crate::store::{StoreError, WriteTx};
use uuid::Uuid;

/// The built-in configuration's policy, on the store's clock.
impl Default for Policy {
    fn default() -> Self {
        Policy::from_config(&crate::config::Config::default(), crate::store::now())
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
