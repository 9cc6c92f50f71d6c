//! The reconcile engine: the one code path that writes users, teams, memberships and keys.
//!
//! A caller describes what it wants ([`Desired`]) and hands it to the [`Engine`], the
//! front door, which owns the write transaction: [`load_actual`] reads the part of the
//! store that the wish touches ([`Actual`]); [`plan`] computes, purely and
//! deterministically, the ordered idempotent operations that close the gap ([`Plan`]);
//! the guards judge it; [`apply`] runs them, auditing each; the engine commits. A dry run
//! stops at the plan.

mod apply;
pub mod batch;
pub mod desired;
mod engine;
mod load;
mod ops;
mod outbox;
mod plan;
mod policy;
mod record;
pub mod render;
pub mod snapshot;
pub mod summary;
#[cfg(test)]
mod tests;

pub use apply::{apply, user_from_new, ApplyError, ApplySummary};
pub use desired::{Desired, DesiredTeam, DesiredUser, Intent, MemberRef, MemberSpec, Scope};
pub use engine::{
    Applied, Approval, Engine, EngineError, Expect, NewKey, PullState, Quarantine, Quarantined,
    Request, Synced,
};
pub use load::{fingerprint, load_actual};
pub use ops::{
    Actual, Change, Counts, NewTeam, NewUser, Op, OpKind, Plan, TeamDeletions, FORMAT_VERSION,
};
pub use plan::{plan, plan_for_user};
pub use policy::{
    check_deletion_guard, guard_verdict, is_guarded, Guard, GuardVerdict, Ownership, PlanError,
    Policy, ResourceKind, ALLOW_DELETIONS_FLAG, ALWAYS_ALLOWED_MEMBERSHIP_REMOVALS,
};

use crate::domain::{Source, Trigger};

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
