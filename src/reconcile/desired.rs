//! Desired state: what a caller (SCIM request, SSO sign-in, IdP pull, operator)
//! wants to be true. The engine compares it with the store and plans the difference.

use crate::domain::{Role, Source, TeamName, UserName};
use serde_json::{Map, Value};
use uuid::Uuid;

/// What a caller wants to be true. `scope` says what absence means.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Who is asking; new teams and memberships are owned by it, and a sync only
    /// changes what its own source owns.
    pub source: Source,
    pub scope: Scope,
    /// False for a partial IdP pull: it may add and update but never deactivates or deletes.
    pub complete: bool,
    pub users: Vec<DesiredUser>,
    pub teams: Vec<DesiredTeam>,
    /// Users to delete outright (SCIM DELETE). Missing ids are `NotFound`.
    pub delete_users: Vec<Uuid>,
    /// Teams to delete outright (SCIM DELETE). Missing ids are `NotFound`.
    pub delete_teams: Vec<Uuid>,
}

impl Desired {
    /// An empty desired state: with `Scope::Listed` it plans nothing.
    pub fn new(source: Source, scope: Scope) -> Self {
        Self {
            source,
            scope,
            complete: true,
            users: Vec::new(),
            teams: Vec::new(),
            delete_users: Vec::new(),
            delete_teams: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything `source` owns: a user, team or membership owned by `source` and absent
    /// from `users`/`teams` is deactivated or removed (a full IdP pull; only when
    /// `complete` is true).
    Everything,
    /// Only the listed users and teams and the explicitly listed membership changes;
    /// absence means nothing (SCIM writes).
    Listed,
    /// One user's memberships among teams `source` may manage (SSO sign-in): the single
    /// user in `users` ends up in exactly the teams listed in `teams` (auto-created when
    /// missing; their `members` are ignored); memberships of this user in other teams
    /// owned by `source` are removed; nothing of any other user is touched.
    UserMemberships,
}

/// How a desired user or team relates to what exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Intent {
    /// Match by id, then external id, then name; create when nothing matches (IdP pulls, SSO).
    #[default]
    Upsert,
    /// Must be new (SCIM POST). A user whose userName is taken is `UserNameTaken`;
    /// `id`, when given, is the id the new resource gets, and must be one the caller
    /// drew fresh (a random v4 UUID): for users, nobody looks whether it exists.
    Create,
    /// Must exist already, found by `id` (SCIM PUT/PATCH); missing is `NotFound`.
    Update,
}

/// A user as the caller wants it. Every field is the complete new value (`None`
/// clears it), except `role` and `attributes`, where `None` means "not the caller's say".
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUser {
    /// SCIM: the fixed id of a user being created, or the id of the target. `None` for
    /// IdP pulls, where a new user's id is derived from (source, external id) by UUID v5.
    pub id: Option<Uuid>,
    pub intent: Intent,
    pub external_id: Option<String>,
    pub user_name: UserName,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub active: bool,
    /// `None`: `default_role` on create, then whatever `role_groups` says; an existing
    /// user's role is kept unless a role group decides it.
    pub role: Option<Role>,
    /// SCIM attributes not modelled as columns. `None`: leave unchanged.
    pub attributes: Option<Map<String, Value>>,
}

impl DesiredUser {
    /// A user with just a userName, active, everything else empty; fill in the rest.
    pub fn new(user_name: UserName) -> Self {
        Self {
            id: None,
            intent: Intent::Upsert,
            external_id: None,
            user_name,
            email: None,
            display_name: None,
            given_name: None,
            family_name: None,
            active: true,
            role: None,
            attributes: None,
        }
    }
}

/// A team (an IdP group) as the caller wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredTeam {
    /// SCIM: the fixed id of a team being created, or the id of the target. `None` for
    /// IdP pulls, where a new team's id is derived from (source, group external id).
    pub id: Option<Uuid>,
    pub intent: Intent,
    /// The IdP's group id. `None` leaves an existing team's external id unchanged.
    pub external_id: Option<String>,
    pub display_name: TeamName,
    /// `None`: leave unchanged (and `[teams] defaults` alone on create).
    pub metadata: Option<Map<String, Value>>,
    pub members: MemberSpec,
}

impl DesiredTeam {
    pub fn new(display_name: TeamName) -> Self {
        Self {
            id: None,
            intent: Intent::Upsert,
            external_id: None,
            display_name,
            metadata: None,
            members: MemberSpec::Unchanged,
        }
    }
}

/// What should happen to a team's members.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberSpec {
    Unchanged,
    /// Exactly these members (SCIM PUT, IdP pull). Memberships owned by `Manual`
    /// (and, for a sync, by other sources) are kept even when not listed.
    Exactly(Vec<MemberRef>),
    /// Add and remove these (SCIM PATCH). Only the listed pairs are read, so adding one
    /// member to a team of 100,000 costs the same as adding one to an empty team.
    Delta {
        add: Vec<MemberRef>,
        remove: Vec<MemberRef>,
    },
}

/// How a desired membership names its user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberRef {
    UserId(Uuid),
    /// A user's external id: a user in the same `Desired`, else one in the store.
    ExternalId(String),
}

impl std::fmt::Display for MemberRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberRef::UserId(id) => write!(f, "{id}"),
            MemberRef::ExternalId(e) => write!(f, "externalId {e:?}"),
        }
    }
}
