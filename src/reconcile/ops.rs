//! The plan's vocabulary: the operations, the plan itself and the actual state it is
//! computed against. Shared by the planner (plan.rs), apply, render and the CLI's saved
//! plans; no logic beyond what describes a plan.

use super::desired::Scope;
use super::policy::{is_guarded, GuardVerdict};
use crate::domain::{Membership, PurgeReason, Role, Source, Team, TeamName, User, UserName};
use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Version of the plan file and of the JSON rendering; bumped on incompatible change.
pub const FORMAT_VERSION: &str = "1";

/// The part of the store a desired state touches, as [`super::load_actual`] read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actual {
    pub users: Vec<User>,
    pub teams: Vec<Team>,
    pub memberships: Vec<Membership>,
    /// Every row of the store is here: absence from these lists means absence from the store.
    pub everything: bool,
    /// Teams whose whole roster is in `memberships`.
    pub full_rosters: BTreeSet<Uuid>,
    /// Users all of whose memberships are in `memberships` (and the role-mapped teams
    /// among them in `teams`).
    pub full_user_memberships: BTreeSet<Uuid>,
    /// How many API keys are scoped to each team (read for whole-state plans, so that a
    /// plan can say what deleting a team takes with it).
    #[serde(default)]
    pub team_keys: BTreeMap<Uuid, u64>,
}

/// A user a plan creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewUser {
    pub id: Uuid,
    pub user_name: UserName,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub role: Role,
    pub active: bool,
    pub attributes: Map<String, Value>,
    pub source: Source,
}

/// A team a plan creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTeam {
    pub id: Uuid,
    pub display_name: TeamName,
    pub external_id: Option<String>,
    pub metadata: Map<String, Value>,
    pub source: Source,
}

/// One attribute's change, as the JSON columns and SCIM see the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub attribute: String,
    pub before: Value,
    pub after: Value,
}

/// One idempotent operation. Applying it when its effect is already there changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    CreateUser(Box<NewUser>),
    UpdateUser {
        id: Uuid,
        changes: Vec<Change>,
    },
    DeactivateUser {
        id: Uuid,
    },
    DeleteUser {
        id: Uuid,
    },
    CreateTeam(Box<NewTeam>),
    UpdateTeam {
        id: Uuid,
        changes: Vec<Change>,
    },
    DeleteTeam {
        id: Uuid,
    },
    /// The membership is owned by the plan's source.
    AddMember {
        team_id: Uuid,
        user_id: Uuid,
    },
    RemoveMember {
        team_id: Uuid,
        user_id: Uuid,
    },
    /// Blocks the user's unblocked keys, marking them blocked by provisioning.
    BlockKeys {
        user_id: Uuid,
    },
    /// Unblocks only the keys provisioning blocked.
    UnblockKeys {
        user_id: Uuid,
    },
    /// Moves keys to deleted_api_keys: all of a user's, all of a team's, or a user's
    /// keys for one team.
    PurgeKeys {
        user_id: Option<Uuid>,
        team_id: Option<Uuid>,
        reason: PurgeReason,
    },
}

/// The kind of an [`Op`], for rendering, counting and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    CreateUser,
    UpdateUser,
    DeactivateUser,
    DeleteUser,
    CreateTeam,
    UpdateTeam,
    DeleteTeam,
    AddMember,
    RemoveMember,
    BlockKeys,
    UnblockKeys,
    PurgeKeys,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::CreateUser => "create_user",
            OpKind::UpdateUser => "update_user",
            OpKind::DeactivateUser => "deactivate_user",
            OpKind::DeleteUser => "delete_user",
            OpKind::CreateTeam => "create_team",
            OpKind::UpdateTeam => "update_team",
            OpKind::DeleteTeam => "delete_team",
            OpKind::AddMember => "add_member",
            OpKind::RemoveMember => "remove_member",
            OpKind::BlockKeys => "block_keys",
            OpKind::UnblockKeys => "unblock_keys",
            OpKind::PurgeKeys => "purge_keys",
        }
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::CreateUser(_) => OpKind::CreateUser,
            Op::UpdateUser { .. } => OpKind::UpdateUser,
            Op::DeactivateUser { .. } => OpKind::DeactivateUser,
            Op::DeleteUser { .. } => OpKind::DeleteUser,
            Op::CreateTeam(_) => OpKind::CreateTeam,
            Op::UpdateTeam { .. } => OpKind::UpdateTeam,
            Op::DeleteTeam { .. } => OpKind::DeleteTeam,
            Op::AddMember { .. } => OpKind::AddMember,
            Op::RemoveMember { .. } => OpKind::RemoveMember,
            Op::BlockKeys { .. } => OpKind::BlockKeys,
            Op::UnblockKeys { .. } => OpKind::UnblockKeys,
            Op::PurgeKeys { .. } => OpKind::PurgeKeys,
        }
    }

    /// The user this operation is about, if any.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Op::CreateUser(u) => Some(u.id),
            Op::UpdateUser { id, .. } | Op::DeactivateUser { id } | Op::DeleteUser { id } => {
                Some(*id)
            }
            Op::AddMember { user_id, .. }
            | Op::RemoveMember { user_id, .. }
            | Op::BlockKeys { user_id }
            | Op::UnblockKeys { user_id } => Some(*user_id),
            Op::PurgeKeys { user_id, .. } => *user_id,
            Op::CreateTeam(_) | Op::UpdateTeam { .. } | Op::DeleteTeam { .. } => None,
        }
    }

    /// The team this operation is about, if any.
    pub fn team_id(&self) -> Option<Uuid> {
        match self {
            Op::CreateTeam(t) => Some(t.id),
            Op::UpdateTeam { id, .. } | Op::DeleteTeam { id } => Some(*id),
            Op::AddMember { team_id, .. } | Op::RemoveMember { team_id, .. } => Some(*team_id),
            Op::PurgeKeys { team_id, .. } => *team_id,
            _ => None,
        }
    }

    /// Whether this is a deletion or deactivation, which the deletion guard counts.
    pub fn is_removal(&self) -> bool {
        match self {
            Op::DeactivateUser { .. } | Op::DeleteUser { .. } | Op::DeleteTeam { .. } => true,
            Op::UpdateUser { changes, .. } => changes
                .iter()
                .any(|c| c.attribute == "active" && c.after == Value::Bool(false)),
            _ => false,
        }
    }
}

/// An ordered list of operations and what is needed to show and check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    pub source: Source,
    pub scope: Scope,
    /// A digest of the actual state the plan was computed against (set by the CLI for
    /// saved plans; `apply --plan` refuses the plan when the store no longer matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub ops: Vec<Op>,
    /// userName of every user an operation names, for rendering and the audit log.
    pub user_names: BTreeMap<Uuid, String>,
    /// Display name of every team an operation names.
    pub team_names: BTreeMap<Uuid, String>,
    /// Things the operator should know that did not stop the plan (sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the plan's team deletions take with them.
    #[serde(default)]
    pub team_deletions: TeamDeletions,
    /// What the deletion and membership guards think of the plan: `None` when it is
    /// within their limits. A refused plan is still a whole plan, to be shown; only
    /// applying it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardVerdict>,
}

/// What deleting teams takes with it: every membership of those teams, and every API
/// key scoped to them (purged, which cannot be undone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TeamDeletions {
    pub teams: u64,
    pub memberships: u64,
    pub keys: u64,
}

/// How many things a plan adds, changes and destroys (terraform's summary line).
/// Key operations are consequences of these and are not counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The guard's verdict when it refuses the plan.
    pub fn refusal(&self) -> Option<&GuardVerdict> {
        self.guard.as_ref().filter(|v| v.refused)
    }

    /// Whether applying this operation is what the guard refuses (the plan's
    /// removals, when the guard refuses the plan).
    pub fn is_refused(&self, op: &Op) -> bool {
        self.refusal().is_some() && is_guarded(op)
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for op in &self.ops {
            match op.kind() {
                OpKind::CreateUser | OpKind::CreateTeam | OpKind::AddMember => c.add += 1,
                OpKind::UpdateUser | OpKind::UpdateTeam | OpKind::DeactivateUser => c.change += 1,
                OpKind::DeleteUser | OpKind::DeleteTeam | OpKind::RemoveMember => c.destroy += 1,
                OpKind::BlockKeys | OpKind::UnblockKeys | OpKind::PurgeKeys => {}
            }
        }
        c
    }

    /// userName of a user named by an operation (its id when unknown).
    pub fn user_label(&self, id: Uuid) -> std::borrow::Cow<'_, str> {
        match self.user_names.get(&id) {
            Some(name) => std::borrow::Cow::Borrowed(name),
            None => std::borrow::Cow::Owned(id.to_string()),
        }
    }

    /// Display name of a team named by an operation (its id when unknown).
    pub fn team_label(&self, id: Uuid) -> std::borrow::Cow<'_, str> {
        match self.team_names.get(&id) {
            Some(name) => std::borrow::Cow::Borrowed(name),
            None => std::borrow::Cow::Owned(id.to_string()),
        }
    }

    /// Keeps only the operations about one user, plus the creation of teams they are
    /// added to (`plan --user`).
    pub fn restrict_to_user(&mut self, user: Uuid) {
        let needed_teams: HashSet<Uuid> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::AddMember { team_id, user_id } if *user_id == user => Some(*team_id),
                _ => None,
            })
            .collect();
        self.ops.retain(|op| match op {
            Op::CreateTeam(t) => needed_teams.contains(&t.id),
            Op::PurgeKeys { user_id, .. } => *user_id == Some(user),
            op => op.user_id() == Some(user),
        });
        let users: HashSet<Uuid> = self.ops.iter().filter_map(Op::user_id).collect();
        let teams: HashSet<Uuid> = self.ops.iter().filter_map(Op::team_id).collect();
        self.user_names.retain(|id, _| users.contains(id));
        self.team_names.retain(|id, _| teams.contains(id));
    }
}
