//! What provisioning may do: the policy read from the configuration (with the clock
//! passed in, so that plans are reproducible), who owns what, the deletion and
//! membership guards, and the errors planning can end in. Pure: no I/O.

use super::desired::Scope;
use super::ops::{Actual, Op, Plan};
use crate::config::{Config, UnknownMembers};
use crate::domain::{Role, Source};
use chrono::{DateTime, Utc};
use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};
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
    /// Plan no removals at all (deactivations, deletions, membership removals), and
    /// say so in the plan's warnings: while a refused plan of the same IdP waits in
    /// quarantine, its scheduled syncs keep adding and updating but take nothing away.
    pub hold_removals: bool,
    /// `[teams] defaults`: the metadata an auto-created team starts with.
    pub team_defaults: Map<String, Value>,
    /// The clock `delete_after` is measured against; an input so that plans are reproducible.
    pub now: DateTime<Utc>,
    /// `[ownership] adopt`: IdP → the owners (IdP names, or "manual") whose objects it
    /// may take over.
    pub adopt: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// `[[target]]` names: an applied plan leaves an outbox row per target and change.
    pub targets: Vec<String>,
}

impl Policy {
    /// Whether `other` sets the same rules, whatever instant each was taken at. Every
    /// field is named, so a new one must be decided on here.
    pub fn same_rules_as(&self, other: &Policy) -> bool {
        let Policy {
            default_role,
            role_groups,
            unknown_members,
            purge_team_keys_on_removal,
            delete_after,
            max_deletions,
            max_deletion_ratio,
            max_membership_removals,
            max_membership_removal_ratio,
            allow_deletions,
            hold_removals,
            team_defaults,
            now: _,
            adopt,
            targets,
        } = self;
        *default_role == other.default_role
            && *role_groups == other.role_groups
            && *unknown_members == other.unknown_members
            && *purge_team_keys_on_removal == other.purge_team_keys_on_removal
            && *delete_after == other.delete_after
            && *max_deletions == other.max_deletions
            && *max_deletion_ratio == other.max_deletion_ratio
            && *max_membership_removals == other.max_membership_removals
            && *max_membership_removal_ratio == other.max_membership_removal_ratio
            && *allow_deletions == other.allow_deletions
            && *hold_removals == other.hold_removals
            && *team_defaults == other.team_defaults
            && *adopt == other.adopt
            && *targets == other.targets
    }
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
    /// The policy `config` sets, measuring `delete_after` against `now`.
    pub fn from_config(config: &Config, now: DateTime<Utc>) -> Policy {
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
            hold_removals: false,
            team_defaults: config.teams.defaults.clone(),
            now,
            adopt: config
                .ownership
                .adopt
                .iter()
                .map(|(idp, owners)| (idp.clone(), owners.iter().cloned().collect()))
                .collect(),
            targets: config.target.iter().map(|t| t.name.clone()).collect(),
        }
    }

    /// How `actor` (the source of a desired state) stands to what `owner` owns.
    pub fn ownership(&self, owner: &Source, actor: &Source) -> Ownership {
        // An operator may change everything (README, "Who owns what").
        if owner.same_owner(actor) || actor.is_manual() {
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

/// The flag that lifts the guards, named in their messages and verdicts.
pub const ALLOW_DELETIONS_FLAG: &str = "--allow-deletions";

/// Which guard judged a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// `[safety] max_deletions` and `max_deletion_ratio`: users and teams deleted or
    /// deactivated.
    Deletions,
    /// `[safety] max_membership_removals` and `max_membership_removal_ratio`.
    MembershipRemovals,
}

impl Guard {
    pub fn as_str(self) -> &'static str {
        match self {
            Guard::Deletions => "deletions",
            Guard::MembershipRemovals => "membership_removals",
        }
    }
}

/// A guard's judgement of a whole-state plan whose removals exceed its limit. Kept in
/// the plan, so that `plan` can show the whole plan and what the guard thinks of it,
/// and only applying it is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardVerdict {
    pub guard: Guard,
    /// False when `--allow-deletions` lifted the guard for this plan.
    pub refused: bool,
    /// What the guard counts: deletions plus deactivations, or membership removals.
    pub count: u64,
    /// Membership removals that come with teams the plan deletes.
    #[serde(default)]
    pub with_deleted_teams: u64,
    /// The effective limit: the smaller of the count and the ratio's share.
    pub limit: u64,
    pub managed: u64,
    /// The configured maximum count and ratio the limit comes from.
    pub max: u64,
    pub max_ratio: f64,
}

impl GuardVerdict {
    /// The refusal, as `apply` reports it.
    pub fn error(&self) -> PlanError {
        match self.guard {
            Guard::Deletions => PlanError::DeletionGuard {
                deletions: self.count,
                limit: self.limit,
                managed: self.managed,
                max_deletions: self.max,
                max_ratio: self.max_ratio,
            },
            Guard::MembershipRemovals => PlanError::MembershipGuard {
                removals: self.count,
                with_deleted_teams: self.with_deleted_teams,
                limit: self.limit,
                managed: self.managed,
                max_removals: self.max,
                max_ratio: self.max_ratio,
            },
        }
    }

    pub fn reason(&self) -> String {
        self.error().to_string()
    }
}

/// Whether an operation is one the guards hold back: a deletion or deactivation,
/// a membership removal, or the purge of keys that goes with one of them.
pub fn is_guarded(op: &Op) -> bool {
    op.is_removal() || matches!(op, Op::RemoveMember { .. } | Op::PurgeKeys { .. })
}

/// The deletion guard: a whole-state plan whose deletions plus deactivations exceed
/// `[safety] max_deletions`, or `max_deletion_ratio` of the users and teams the source
/// manages, is refused unless `policy.allow_deletions`. `apply --plan` runs it again
/// against the state it applies to.
pub fn check_deletion_guard(
    plan: &Plan,
    actual: &Actual,
    policy: &Policy,
) -> Result<(), PlanError> {
    match guard_verdict(plan, actual, policy) {
        Some(verdict) if verdict.refused => Err(verdict.error()),
        _ => Ok(()),
    }
}

/// What the guards think of `plan`: `None` when it is within every limit (or is not
/// a whole-state plan), else the first guard it exceeds (memberships first), refused
/// unless `policy.allow_deletions`.
pub fn guard_verdict(plan: &Plan, actual: &Actual, policy: &Policy) -> Option<GuardVerdict> {
    // SCIM writes are explicit, one resource at a time; sign-ins never delete. Only
    // whole-state syncs can delete by omission, which is what the guard is for.
    if plan.scope != Scope::Everything {
        return None;
    }
    let refused = !policy.allow_deletions;
    if let Some(verdict) = membership_verdict(plan, actual, policy, refused) {
        return Some(verdict);
    }
    let deletions = plan.ops.iter().filter(|op| op.is_removal()).count() as u64;
    if deletions == 0 {
        return None;
    }
    let managed = (actual
        .users
        .iter()
        .filter(|u| u.source == plan.source)
        .count()
        + actual
            .teams
            .iter()
            .filter(|t| t.source == plan.source)
            .count()) as u64;
    // For a whole count, "more than ratio × managed" is "more than floor(ratio × managed)".
    let ratio_limit = (policy.max_deletion_ratio * managed as f64).floor() as u64;
    let limit = policy.max_deletions.min(ratio_limit);
    (deletions > limit).then_some(GuardVerdict {
        guard: Guard::Deletions,
        refused,
        count: deletions,
        with_deleted_teams: 0,
        limit,
        managed,
        max: policy.max_deletions,
        max_ratio: policy.max_deletion_ratio,
    })
}

/// Membership removals up to this many always pass the guard: in a small
/// organisation one person leaving a team of two is a 50% change, not an outage.
pub const ALWAYS_ALLOWED_MEMBERSHIP_REMOVALS: u64 = 10;

/// The same limits for memberships: an IdP that answers one group's members with an
/// empty list (a glitch, a permission lost) would otherwise take everyone out of that
/// team, and removal from a team purges the keys scoped to it, which cannot be undone.
fn membership_verdict(
    plan: &Plan,
    actual: &Actual,
    policy: &Policy,
    refused: bool,
) -> Option<GuardVerdict> {
    let removed = plan
        .ops
        .iter()
        .filter(|op| matches!(op, Op::RemoveMember { .. }))
        .count() as u64;
    // A team that vanished from a complete pull (a renamed or deleted group, a changed
    // `groups` filter) takes all its memberships and keys with it: exactly what an
    // emptied group would do, so it counts the same.
    let deleted_teams: HashSet<Uuid> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteTeam { id } => Some(*id),
            _ => None,
        })
        .collect();
    let with_deleted_teams = if deleted_teams.is_empty() {
        0
    } else {
        actual
            .memberships
            .iter()
            .filter(|m| deleted_teams.contains(&m.team_id))
            .count() as u64
    };
    let removals = removed + with_deleted_teams;
    if removals == 0 {
        return None;
    }
    let owned_teams: HashSet<Uuid> = actual
        .teams
        .iter()
        .filter(|t| t.source == plan.source)
        .map(|t| t.id)
        .collect();
    let managed = actual
        .memberships
        .iter()
        .filter(|m| m.source == plan.source || owned_teams.contains(&m.team_id))
        .count() as u64;
    let ratio_limit = (policy.max_membership_removal_ratio * managed as f64).floor() as u64;
    let limit = policy
        .max_membership_removals
        .min(ratio_limit.max(ALWAYS_ALLOWED_MEMBERSHIP_REMOVALS));
    (removals > limit).then_some(GuardVerdict {
        guard: Guard::MembershipRemovals,
        refused,
        count: removals,
        with_deleted_teams,
        limit,
        managed,
        max: policy.max_membership_removals,
        max_ratio: policy.max_membership_removal_ratio,
    })
}
