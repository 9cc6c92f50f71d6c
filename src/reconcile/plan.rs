//! `plan()`: the pure heart of the engine. Given what is wanted and what is, it
//! computes the ordered idempotent operations that make the one into the other.
//!
//! Pure and deterministic: no I/O, no clock (the policy carries `now`), no hash-map
//! iteration order in the output; the same inputs give a byte-identical plan.
//! Everything is indexed once (hash maps, sorted vectors), so planning is
//! O(n log n) in users + teams + memberships.

use super::desired::{Desired, DesiredTeam, DesiredUser, Intent, MemberRef, MemberSpec, Scope};
use super::ops::{Actual, Change, NewTeam, NewUser, Op, Plan, TeamDeletions, FORMAT_VERSION};
use super::policy::{guard_verdict, Ownership, PlanError, Policy, ResourceKind};
use crate::config::UnknownMembers;
use crate::domain::{Membership, PurgeReason, Role, Source, Team, User, UserName};
use serde_json::Value;
// Fx hashing: ids and names are not attacker-chosen keys here, and a pull hashes millions.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Sorts and deduplicates (team, user) pairs.
fn sorted_pairs(mut pairs: Vec<(Uuid, Uuid)>) -> Vec<(Uuid, Uuid)> {
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Namespace of the UUID v5 ids given to users and teams an IdP pull creates, so that
/// planning the same snapshot twice proposes the same ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x8f0c_2a4e_7b1d_4c3a_9e57_1d2b_6a90_c3f1);

/// Plans the change from `actual` to `desired` under `policy`. Pure.
/// A plan the guards would refuse is still returned whole, with their verdict in
/// `guard`: showing it is always safe; the engine refuses to apply it.
pub fn plan(desired: &Desired, actual: &Actual, policy: &Policy) -> Result<Plan, PlanError> {
    let mut plan = Planner::new(desired, actual, policy).run()?;
    plan.guard = guard_verdict(&plan, actual, policy);
    Ok(plan)
}

/// Like [`plan`], restricted to one user (`plan --user USER`): USER is an id or a
/// userName, of a user in the desired state or in the store.
pub fn plan_for_user(
    desired: &Desired,
    actual: &Actual,
    policy: &Policy,
    user: &str,
) -> Result<Plan, PlanError> {
    let mut plan = Planner::new(desired, actual, policy).run()?;
    let id = resolve_user_selector(&plan, desired, actual, user).ok_or_else(|| {
        PlanError::Invalid(format!(
            "no user {user:?} in the desired state or the store (give an id or a userName)"
        ))
    })?;
    plan.restrict_to_user(id);
    plan.guard = guard_verdict(&plan, actual, policy);
    Ok(plan)
}

fn resolve_user_selector(
    plan: &Plan,
    desired: &Desired,
    actual: &Actual,
    user: &str,
) -> Option<Uuid> {
    if let Ok(id) = Uuid::parse_str(user) {
        if plan.user_names.contains_key(&id) || actual.users.iter().any(|u| u.id == id) {
            return Some(id);
        }
    }
    let name = UserName::parse(user).ok()?;
    // The plan's name table holds the final userName of every user it touches.
    if let Some((id, _)) = plan
        .user_names
        .iter()
        .find(|(_, n)| crate::domain::fold_identifier(n.trim()) == name.folded())
    {
        return Some(*id);
    }
    if let Some(u) = actual.users.iter().find(|u| u.user_name == name) {
        return Some(u.id);
    }
    // A desired user whose plan is empty is still a valid selector: the result is "no changes".
    desired
        .users
        .iter()
        .any(|u| u.user_name == name)
        .then(Uuid::nil)
}

/// Whether `actor` owns what `owner` owns: the pull, the sign-ins and the SCIM pushes
/// of one IdP share ownership; manual data belongs to no IdP.
pub(crate) fn may_manage(owner: &Source, actor: &Source) -> bool {
    owner.same_owner(actor)
}

/// Individual lines for at most this many users owned elsewhere or adopted; a summary
/// line for the rest (two overlapping IdPs may share thousands of people).
const NAMED_USER_NOTES: usize = 20;

fn derived_id(kind: &str, source: &Source, key: &str, attempt: u32) -> Uuid {
    let name = if attempt == 0 {
        format!("{kind}\n{source}\n{key}")
    } else {
        format!("{kind}\n{source}\n{key}\n{attempt}")
    };
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// A desired user with the id it has (or will have) and what exists of it.
struct PlannedUser<'a> {
    d: &'a DesiredUser,
    id: Uuid,
    existing: Option<&'a User>,
    /// Another IdP owns the existing user: the plan leaves the user as it is, though
    /// memberships in this IdP's own teams still refer to them.
    foreign: bool,
}

struct PlannedTeam<'a> {
    d: &'a DesiredTeam,
    id: Uuid,
    existing: Option<&'a Team>,
}

/// Indexes over `Actual`, built once per plan.
struct Index<'a> {
    users_by_id: HashMap<Uuid, &'a User>,
    /// Candidates per external id, best first (owned by the desired source, then by id).
    users_by_ext: HashMap<&'a str, Vec<&'a User>>,
    users_by_name: HashMap<&'a str, &'a User>,
    teams_by_id: HashMap<Uuid, &'a Team>,
    teams_by_ext: HashMap<&'a str, Vec<&'a Team>>,
    teams_by_name: HashMap<String, Vec<&'a Team>>,
    /// Memberships sorted by (team, user) and by (user, team).
    by_team: Vec<&'a Membership>,
    by_user: Vec<&'a Membership>,
}

impl<'a> Index<'a> {
    fn new(actual: &'a Actual, source: &Source, need_by_user: bool) -> Self {
        let mut users_by_ext: HashMap<&str, Vec<&User>> = HashMap::default();
        let mut users_by_name =
            HashMap::with_capacity_and_hasher(actual.users.len(), Default::default());
        let mut users_by_id =
            HashMap::with_capacity_and_hasher(actual.users.len(), Default::default());
        for u in &actual.users {
            users_by_id.insert(u.id, u);
            users_by_name.insert(u.user_name.folded(), u);
            if let Some(e) = &u.external_id {
                users_by_ext.entry(e.as_str()).or_default().push(u);
            }
        }
        for list in users_by_ext.values_mut() {
            list.sort_by_key(|u| (!may_manage(&u.source, source), u.id));
        }
        let mut teams_by_id =
            HashMap::with_capacity_and_hasher(actual.teams.len(), Default::default());
        let mut teams_by_ext: HashMap<&str, Vec<&Team>> = HashMap::default();
        let mut teams_by_name: HashMap<String, Vec<&Team>> = HashMap::default();
        for t in &actual.teams {
            teams_by_id.insert(t.id, t);
            if let Some(e) = &t.external_id {
                teams_by_ext.entry(e.as_str()).or_default().push(t);
            }
            teams_by_name
                .entry(t.display_name.as_str().to_lowercase())
                .or_default()
                .push(t);
        }
        for list in teams_by_ext.values_mut() {
            list.sort_by_key(|t| (!may_manage(&t.source, source), t.id));
        }
        for list in teams_by_name.values_mut() {
            list.sort_by_key(|t| (!may_manage(&t.source, source), t.id));
        }
        let mut by_team: Vec<&Membership> = actual.memberships.iter().collect();
        // Ids are unique per membership, so unstable sorts are deterministic (and faster).
        by_team.sort_unstable_by_key(|m| (m.team_id, m.user_id));
        // Only sign-ins and role groups ask for a user's teams; a pull of a million
        // memberships need not sort them a second time.
        let mut by_user = if need_by_user {
            by_team.clone()
        } else {
            Vec::new()
        };
        by_user.sort_unstable_by_key(|m| (m.user_id, m.team_id));
        Index {
            users_by_id,
            users_by_ext,
            users_by_name,
            teams_by_id,
            teams_by_ext,
            teams_by_name,
            by_team,
            by_user,
        }
    }

    fn roster(&self, team: Uuid) -> &[&'a Membership] {
        let start = self.by_team.partition_point(|m| m.team_id < team);
        let end = self.by_team.partition_point(|m| m.team_id <= team);
        &self.by_team[start..end]
    }

    fn user_teams(&self, user: Uuid) -> &[&'a Membership] {
        let start = self.by_user.partition_point(|m| m.user_id < user);
        let end = self.by_user.partition_point(|m| m.user_id <= user);
        &self.by_user[start..end]
    }

    fn membership(&self, team: Uuid, user: Uuid) -> Option<&'a Membership> {
        self.by_team
            .binary_search_by(|m| (m.team_id, m.user_id).cmp(&(team, user)))
            .ok()
            .map(|i| self.by_team[i])
    }
}

struct Planner<'a> {
    desired: &'a Desired,
    actual: &'a Actual,
    policy: &'a Policy,
    ix: Index<'a>,
    warnings: BTreeSet<String>,
    /// Member references that match no user (skipped), and a few of them to show.
    unknown_members: usize,
    unknown_examples: BTreeSet<String>,
    /// Listed users another IdP owns (left alone), and users nobody's sync owned that
    /// this plan adopts: (userName, owner) each.
    foreign_users: BTreeSet<(String, String)>,
    adopted_users: BTreeSet<(String, String)>,
    /// What `policy.hold_removals` left out of the plan.
    held: Held,
}

/// Removals left out of a plan by `policy.hold_removals`, counted for its warning.
#[derive(Debug, Default)]
struct Held {
    /// Deactivations and deletions of users.
    users: usize,
    teams: usize,
    memberships: usize,
}

/// Where an operation goes in a plan: creates before updates, both before memberships,
/// and removals (which may take keys and memberships with them) last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    CreateUser,
    UpdateUser,
    CreateTeam,
    UpdateTeam,
    /// Added and removed memberships, placed here from their own sorted lists (a pull
    /// can plan a million; they never pass through the general sort).
    Memberships,
    Deactivate,
    DeleteTeam,
    DeleteUser,
}

/// The position of one operation in a plan: its phase, the user or team it is about,
/// and its step among that one's operations. Unique per operation, so an unstable
/// sort is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    phase: Phase,
    subject: Uuid,
    step: u8,
}

/// An operation and where it sorts.
struct Placed {
    key: SortKey,
    op: Op,
}

impl Placed {
    fn new(phase: Phase, subject: Uuid, step: u8, op: Op) -> Self {
        Placed {
            key: SortKey {
                phase,
                subject,
                step,
            },
            op,
        }
    }
}

impl<'a> Planner<'a> {
    fn new(desired: &'a Desired, actual: &'a Actual, policy: &'a Policy) -> Self {
        Planner {
            desired,
            actual,
            policy,
            ix: Index::new(
                actual,
                &desired.source,
                desired.scope == Scope::UserMemberships || !policy.role_groups.is_empty(),
            ),
            warnings: BTreeSet::new(),
            unknown_members: 0,
            unknown_examples: BTreeSet::new(),
            foreign_users: BTreeSet::new(),
            adopted_users: BTreeSet::new(),
            held: Held::default(),
        }
    }

    fn ownership(&self, owner: &Source) -> Ownership {
        self.policy.ownership(owner, &self.desired.source)
    }

    fn not_owned(&self, kind: ResourceKind, id: Uuid, name: &str, owner: &Source) -> PlanError {
        PlanError::NotOwned {
            kind,
            id,
            name: name.to_owned(),
            owner: owner.clone(),
            actor: self.desired.source.clone(),
        }
    }

    /// A SCIM write names its targets: refused outright when another IdP owns one.
    fn check_listed_target(
        &self,
        kind: ResourceKind,
        id: Uuid,
        name: &str,
        owner: &Source,
    ) -> Result<(), PlanError> {
        if self.scope() == Scope::Listed && self.ownership(owner) == Ownership::Foreign {
            return Err(self.not_owned(kind, id, name, owner));
        }
        Ok(())
    }

    fn scope(&self) -> Scope {
        self.desired.scope
    }

    /// Whether this desired state may change a team owned by `owner`. SCIM names its
    /// targets explicitly (an IdP may well manage a team an operator created); pulls
    /// and sign-ins only change what their IdP owns or may adopt. No one changes
    /// another IdP's team.
    fn may_touch_team(&self, owner: &Source) -> bool {
        match self.ownership(owner) {
            Ownership::Own | Ownership::Adoptable => true,
            Ownership::Manual => self.scope() == Scope::Listed,
            Ownership::Foreign => false,
        }
    }

    /// Whether this desired state may remove a membership owned by `owner`: only its
    /// own IdP's (or those it may adopt); never a manual one.
    fn may_remove_membership(&self, owner: &Source) -> bool {
        matches!(self.ownership(owner), Ownership::Own | Ownership::Adoptable)
    }

    fn run(mut self) -> Result<Plan, PlanError> {
        validate(self.desired)?;
        let users = self.resolve_users()?;
        let teams = self.resolve_teams()?;

        let mut ops: Vec<Placed> = Vec::new();
        let mut user_names: BTreeMap<Uuid, String> = BTreeMap::new();
        let mut team_names: BTreeMap<Uuid, String> = BTreeMap::new();

        // Removals by omission and explicit deletions, first, so that later steps can
        // leave deleted users and teams alone.
        let deleted_users = self.plan_user_removals(&users, &mut ops, &mut user_names)?;
        let deleted_teams = self.plan_team_removals(&teams, &mut ops, &mut team_names)?;

        let planned_ids: HashMap<Uuid, &PlannedUser> = users.iter().map(|p| (p.id, p)).collect();
        let ext_to_planned: HashMap<&str, Uuid> = users
            .iter()
            .filter_map(|p| p.d.external_id.as_deref().map(|e| (e, p.id)))
            .collect();

        let (adds, mut removes) = self.plan_memberships(
            &users,
            &teams,
            &planned_ids,
            &ext_to_planned,
            &deleted_users,
        )?;
        if self.policy.hold_removals {
            // Before the roles, which follow the memberships that remain.
            self.held.memberships += removes.len();
            removes.clear();
        }

        let roles = self.plan_roles(
            &users,
            &teams,
            &adds,
            &removes,
            &deleted_users,
            &deleted_teams,
        );

        self.check_user_names(&users, &deleted_users)?;

        // Users named in the desired state.
        for p in &users {
            if deleted_users.contains(&p.id) {
                continue;
            }
            if p.foreign {
                // Named for the memberships that may refer to them; otherwise untouched.
                if let Some(u) = p.existing {
                    user_names.insert(p.id, u.user_name.as_str().to_owned());
                }
                continue;
            }
            user_names.insert(p.id, p.d.user_name.as_str().to_owned());
            let role = roles.get(&p.id).cloned();
            match p.existing {
                None => {
                    let d = p.d;
                    let new = NewUser {
                        id: p.id,
                        user_name: d.user_name.clone(),
                        external_id: d.external_id.clone(),
                        email: d.email.clone(),
                        display_name: d.display_name.clone(),
                        given_name: d.given_name.clone(),
                        family_name: d.family_name.clone(),
                        role: d
                            .role
                            .clone()
                            .or(role)
                            .unwrap_or_else(|| self.policy.default_role.clone()),
                        active: d.active,
                        attributes: d.attributes.clone().unwrap_or_default(),
                        source: self.desired.source.clone(),
                    };
                    ops.push(Placed::new(
                        Phase::CreateUser,
                        p.id,
                        0,
                        Op::CreateUser(Box::new(new)),
                    ));
                }
                Some(existing) => {
                    let mut changes = self.user_changes(p, existing, role);
                    if self.policy.hold_removals {
                        let before = changes.len();
                        changes.retain(|c| !(c.attribute == "active" && c.after == false));
                        self.held.users += before - changes.len();
                    }
                    if changes.is_empty() {
                        continue;
                    }
                    let active_change = changes
                        .iter()
                        .find(|c| c.attribute == "active")
                        .map(|c| c.after.clone());
                    ops.push(Placed::new(
                        Phase::UpdateUser,
                        p.id,
                        0,
                        Op::UpdateUser { id: p.id, changes },
                    ));
                    match active_change {
                        Some(Value::Bool(false)) => ops.push(Placed::new(
                            Phase::UpdateUser,
                            p.id,
                            1,
                            Op::BlockKeys { user_id: p.id },
                        )),
                        Some(Value::Bool(true)) => ops.push(Placed::new(
                            Phase::UpdateUser,
                            p.id,
                            1,
                            Op::UnblockKeys { user_id: p.id },
                        )),
                        _ => {}
                    }
                }
            }
        }
        // Users not named in the desired state whose role follows a membership change.
        for (id, role) in &roles {
            if planned_ids.contains_key(id) || deleted_users.contains(id) {
                continue;
            }
            if let Some(u) = self.ix.users_by_id.get(id) {
                if &u.role != role {
                    user_names.insert(u.id, u.user_name.as_str().to_owned());
                    let changes = vec![Change {
                        attribute: "role".into(),
                        before: Value::String(u.role.as_str().to_owned()),
                        after: Value::String(role.as_str().to_owned()),
                    }];
                    ops.push(Placed::new(
                        Phase::UpdateUser,
                        u.id,
                        0,
                        Op::UpdateUser { id: u.id, changes },
                    ));
                }
            }
        }

        // Teams named in the desired state.
        for p in &teams {
            team_names.insert(p.id, p.d.display_name.as_str().to_owned());
            match p.existing {
                None => {
                    let mut metadata = self.policy.team_defaults.clone();
                    if let Some(m) = &p.d.metadata {
                        for (k, v) in m {
                            metadata.insert(k.clone(), v.clone());
                        }
                    }
                    let new = NewTeam {
                        id: p.id,
                        display_name: p.d.display_name.clone(),
                        external_id: p.d.external_id.clone(),
                        metadata,
                        source: self.desired.source.clone(),
                    };
                    ops.push(Placed::new(
                        Phase::CreateTeam,
                        p.id,
                        0,
                        Op::CreateTeam(Box::new(new)),
                    ));
                }
                Some(existing) => {
                    let changes = self.team_changes(p, existing);
                    if !changes.is_empty() {
                        ops.push(Placed::new(
                            Phase::UpdateTeam,
                            p.id,
                            0,
                            Op::UpdateTeam { id: p.id, changes },
                        ));
                    }
                }
            }
        }

        // Every planned user and team is named already; only members found in the store
        // (by id or external id) and teams of removed memberships may still need a name.
        for &(_, user_id) in adds.iter().chain(removes.iter()) {
            if !planned_ids.contains_key(&user_id) {
                self.name_user(user_id, &planned_ids, &mut user_names);
            }
        }
        for &(team_id, _) in &removes {
            self.name_team(team_id, &teams, &mut team_names);
        }

        let mut team_deletions = TeamDeletions::default();
        for id in &deleted_teams {
            team_deletions.teams += 1;
            team_deletions.memberships += self.ix.roster(*id).len() as u64;
            team_deletions.keys += self.actual.team_keys.get(id).copied().unwrap_or(0);
        }
        self.note_users();
        self.note_held();

        if self.unknown_members > 0 {
            let examples: Vec<String> = std::mem::take(&mut self.unknown_examples)
                .into_iter()
                .collect();
            self.warnings.insert(format!(
                "{} member reference(s) match no user and were skipped (e.g. {})",
                self.unknown_members,
                examples.join(", ")
            ));
        }
        ops.sort_unstable_by_key(|o| o.key);
        // Memberships, already sorted by (team, user), go between the updates and the
        // removals without passing through the sort (they can be a million).
        let purge = self.policy.purge_team_keys_on_removal;
        let mut sorted = Vec::with_capacity(ops.len() + adds.len() + removes.len() * 2);
        let mut rest = ops.into_iter().peekable();
        while let Some(placed) = rest.next_if(|o| o.key.phase < Phase::Memberships) {
            sorted.push(placed.op);
        }
        sorted.extend(
            adds.iter()
                .map(|&(team_id, user_id)| Op::AddMember { team_id, user_id }),
        );
        for &(team_id, user_id) in &removes {
            sorted.push(Op::RemoveMember { team_id, user_id });
            if purge {
                sorted.push(Op::PurgeKeys {
                    user_id: Some(user_id),
                    team_id: Some(team_id),
                    reason: PurgeReason::RemovedFromTeam,
                });
            }
        }
        sorted.extend(rest.map(|o| o.op));
        Ok(Plan {
            format_version: FORMAT_VERSION.to_owned(),
            source: self.desired.source.clone(),
            scope: self.desired.scope,
            fingerprint: None,
            ops: sorted,
            user_names,
            team_names,
            warnings: self.warnings.into_iter().collect(),
            team_deletions,
            guard: None,
        })
    }

    /// Turns the users left to another IdP, and those adopted, into warnings: one line
    /// each for the first few, one line for the rest.
    fn note_users(&mut self) {
        let foreign = std::mem::take(&mut self.foreign_users);
        let idp = self.desired.source.idp().unwrap_or_default().to_owned();
        for (name, owner) in foreign.iter().take(NAMED_USER_NOTES) {
            self.warnings.insert(format!(
                "user {name:?} is owned by {owner}; it is left as it is (IdP {idp:?} may still \
                 add it to its own teams; to hand it over: [ownership] adopt)"
            ));
        }
        if foreign.len() > NAMED_USER_NOTES {
            self.warnings.insert(format!(
                "{} more users listed by IdP {idp:?} are owned by other IdPs and left as they are",
                foreign.len() - NAMED_USER_NOTES
            ));
        }
        let adopted = std::mem::take(&mut self.adopted_users);
        for (name, owner) in adopted.iter().take(NAMED_USER_NOTES) {
            self.warnings.insert(format!(
                "user {name:?} (owned by {owner}) is adopted: IdP {idp:?} owns it from now on"
            ));
        }
        if adopted.len() > NAMED_USER_NOTES {
            self.warnings.insert(format!(
                "{} more users are adopted by IdP {idp:?}",
                adopted.len() - NAMED_USER_NOTES
            ));
        }
    }

    fn note_held(&mut self) {
        let Held {
            users,
            teams,
            memberships,
        } = self.held;
        if users + teams + memberships == 0 {
            return;
        }
        self.warnings.insert(format!(
            "removals held back while a refused plan of IdP {:?} is in quarantine \
             (scimsync plans list): {users} user deactivation(s) or deletion(s), {teams} team \
             deletion(s) and {memberships} membership removal(s) are left out of this plan",
            self.desired.source.idp().unwrap_or_default()
        ));
    }

    fn name_user(
        &self,
        id: Uuid,
        planned: &HashMap<Uuid, &PlannedUser>,
        names: &mut BTreeMap<Uuid, String>,
    ) {
        if names.contains_key(&id) {
            return;
        }
        let name = match (planned.get(&id), self.ix.users_by_id.get(&id)) {
            (Some(p), _) => p.d.user_name.as_str().to_owned(),
            (None, Some(u)) => u.user_name.as_str().to_owned(),
            (None, None) => return,
        };
        names.insert(id, name);
    }

    fn name_team(&self, id: Uuid, teams: &[PlannedTeam], names: &mut BTreeMap<Uuid, String>) {
        if names.contains_key(&id) {
            return;
        }
        if let Some(t) = self.ix.teams_by_id.get(&id) {
            names.insert(id, t.display_name.as_str().to_owned());
        } else if let Some(p) = teams.iter().find(|p| p.id == id) {
            names.insert(id, p.d.display_name.as_str().to_owned());
        }
    }

    /// Matches every desired user to an existing one or gives it a new id.
    /// Matching: id, then external id, then userName (case-insensitive); a matched user
    /// keeps its id, so adopting an account never re-keys it.
    fn resolve_users(&mut self) -> Result<Vec<PlannedUser<'a>>, PlanError> {
        let desired = self.desired;
        let mut claimed: HashMap<Uuid, usize> = HashMap::default();
        let mut out: Vec<Option<PlannedUser<'a>>> = Vec::with_capacity(desired.users.len());
        // First pass: explicit ids and external ids, which are authoritative.
        for (i, d) in desired.users.iter().enumerate() {
            let found: Option<&'a User> = match d.intent {
                Intent::Update => {
                    let id = d.id.ok_or_else(|| {
                        PlanError::Invalid(format!("user {} has no id to update", d.user_name))
                    })?;
                    let u = *self.ix.users_by_id.get(&id).ok_or(PlanError::NotFound {
                        kind: ResourceKind::User,
                        id,
                    })?;
                    self.check_listed_target(
                        ResourceKind::User,
                        u.id,
                        u.user_name.as_str(),
                        &u.source,
                    )?;
                    Some(u)
                }
                Intent::Create => {
                    if let Some(id) = d.id {
                        if self.ix.users_by_id.contains_key(&id) {
                            return Err(PlanError::Invalid(format!("user id {id} already exists")));
                        }
                    }
                    None
                }
                Intent::Upsert => {
                    let by_id = d.id.and_then(|id| self.ix.users_by_id.get(&id).copied());
                    by_id.or_else(|| {
                        d.external_id
                            .as_deref()
                            .and_then(|e| self.ix.users_by_ext.get(e))
                            .and_then(|list| {
                                // Several accounts may carry one external id (two IdPs, a
                                // re-created account); the one with this userName is it,
                                // which is also who holds the id after the plan.
                                // External ids are each IdP's own namespace: another
                                // IdP's user with the same one is another person.
                                list.iter()
                                    .filter(|u| {
                                        !claimed.contains_key(&u.id)
                                            && self.ownership(&u.source) != Ownership::Foreign
                                    })
                                    .min_by_key(|u| u.user_name != d.user_name)
                            })
                            .copied()
                    })
                }
            };
            if let Some(u) = found {
                if let Some(other) = claimed.insert(u.id, i) {
                    return Err(PlanError::Invalid(format!(
                        "users {} and {} both match the existing user {}",
                        desired.users[other].user_name, d.user_name, u.user_name
                    )));
                }
                out.push(Some(self.planned_existing(d, u)?));
            } else {
                out.push(None);
            }
        }
        // Second pass: adoption by userName, then new ids.
        let mut taken_new: HashSet<Uuid> = HashSet::default();
        for (i, d) in desired.users.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            if d.intent == Intent::Upsert {
                if let Some(u) = self.ix.users_by_name.get(d.user_name.folded()).copied() {
                    if let std::collections::hash_map::Entry::Vacant(slot) = claimed.entry(u.id) {
                        slot.insert(i);
                        out[i] = Some(self.planned_existing(d, u)?);
                        continue;
                    }
                }
            }
            let id = match d.id {
                Some(id) => id,
                None => {
                    let key = match &d.external_id {
                        Some(e) => format!("ext:{e}"),
                        None => format!("name:{}", d.user_name.folded()),
                    };
                    let mut attempt = 0;
                    loop {
                        let id = derived_id("user", &desired.source, &key, attempt);
                        if !self.ix.users_by_id.contains_key(&id) && !taken_new.contains(&id) {
                            break id;
                        }
                        attempt += 1;
                    }
                }
            };
            if !taken_new.insert(id) {
                return Err(PlanError::Invalid(format!("two users have the id {id}")));
            }
            out[i] = Some(PlannedUser {
                d,
                id,
                existing: None,
                foreign: false,
            });
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// A desired user matched to an existing one, as ownership allows: another IdP's
    /// user is refused to a SCIM write and left alone by a pull or sign-in (one person,
    /// one account: the match stands, so this IdP's teams may still refer to them);
    /// a user nobody's sync owns is adopted by a pull.
    fn planned_existing(
        &mut self,
        d: &'a DesiredUser,
        u: &'a User,
    ) -> Result<PlannedUser<'a>, PlanError> {
        let ownership = self.ownership(&u.source);
        let foreign = ownership == Ownership::Foreign;
        if foreign {
            self.check_listed_target(ResourceKind::User, u.id, u.user_name.as_str(), &u.source)?;
            self.foreign_users
                .insert((u.user_name.as_str().to_owned(), u.source.owner_label()));
        } else if ownership != Ownership::Own && self.adopts(&u.source) {
            self.adopted_users
                .insert((u.user_name.as_str().to_owned(), u.source.owner_label()));
        }
        Ok(PlannedUser {
            d,
            id: u.id,
            existing: Some(u),
            foreign,
        })
    }

    /// Whether planning takes over an object owned by `owner`: a pull adopts what it
    /// lists of hand-made users and of its own IdP's other channels; anyone adopts
    /// what `[ownership] adopt` hands them.
    fn adopts(&self, owner: &Source) -> bool {
        match self.ownership(owner) {
            Ownership::Adoptable => true,
            Ownership::Own | Ownership::Manual => {
                self.scope() == Scope::Everything && owner != &self.desired.source
            }
            Ownership::Foreign => false,
        }
    }

    /// Matches every desired team: id, then external id (the IdP group id), then display
    /// name (case-insensitive). A pull or sign-in leaves alone a team it does not own.
    fn resolve_teams(&mut self) -> Result<Vec<PlannedTeam<'a>>, PlanError> {
        /// How one desired team was resolved.
        enum Found<'t> {
            Pending,
            Team(&'t Team),
            New,
        }
        let desired = self.desired;
        let mut claimed: HashMap<Uuid, usize> = HashMap::default();
        let mut found: Vec<Found<'a>> = Vec::with_capacity(desired.teams.len());
        // First pass: explicit ids and group ids, which are authoritative; doing them
        // all before any name match makes the outcome independent of the order of groups.
        for d in &desired.teams {
            let f = match d.intent {
                Intent::Update => {
                    let id = d.id.ok_or_else(|| {
                        PlanError::Invalid(format!("group {} has no id to update", d.display_name))
                    })?;
                    Found::Team(self.ix.teams_by_id.get(&id).ok_or(PlanError::NotFound {
                        kind: ResourceKind::Team,
                        id,
                    })?)
                }
                Intent::Create => {
                    if let Some(id) = d.id {
                        if self.ix.teams_by_id.contains_key(&id) {
                            return Err(PlanError::Invalid(format!(
                                "group id {id} already exists"
                            )));
                        }
                    }
                    Found::New
                }
                Intent::Upsert => {
                    d.id.and_then(|id| self.ix.teams_by_id.get(&id).copied())
                        .or_else(|| {
                            // Another IdP's group with the same id is another group.
                            d.external_id
                                .as_deref()
                                .and_then(|e| self.ix.teams_by_ext.get(e))
                                .and_then(|l| {
                                    l.iter()
                                        .copied()
                                        .find(|t| self.ownership(&t.source) != Ownership::Foreign)
                                })
                        })
                        .map_or(Found::Pending, Found::Team)
                }
            };
            found.push(f);
        }
        let mut out: Vec<PlannedTeam<'a>> = Vec::with_capacity(desired.teams.len());
        let mut taken_new: HashSet<Uuid> = HashSet::default();
        for pass in [1, 2] {
            for (i, d) in desired.teams.iter().enumerate() {
                if pass == 2 {
                    if let Found::Pending = found[i] {
                        // Second pass: adoption by display name, of a team that is not some
                        // other group (a team with another group id is a different group
                        // that happens to share the name).
                        found[i] = self
                            .ix
                            .teams_by_name
                            .get(&d.display_name.as_str().to_lowercase())
                            .and_then(|list| {
                                list.iter().copied().find(|t| {
                                    !claimed.contains_key(&t.id)
                                        && match (&t.external_id, &d.external_id) {
                                            (Some(a), Some(b)) => {
                                                a == b || !may_manage(&t.source, &desired.source)
                                            }
                                            _ => true,
                                        }
                                })
                            })
                            .map_or(Found::New, Found::Team);
                    } else {
                        continue;
                    }
                }
                match found[i] {
                    Found::Pending => {}
                    Found::Team(t) => {
                        self.check_listed_target(
                            ResourceKind::Team,
                            t.id,
                            t.display_name.as_str(),
                            &t.source,
                        )?;
                        if !self.may_touch_team(&t.source) {
                            self.warnings.insert(format!(
                                "group {:?} matches team {:?} ({}), which is owned by {}; it is left \
                                 alone (rename one of them, or remove the team, to let the IdP manage it)",
                                d.display_name.as_str(),
                                t.display_name.as_str(),
                                t.id,
                                t.source
                            ));
                            continue;
                        }
                        if let Some(other) = claimed.insert(t.id, i) {
                            return Err(PlanError::Invalid(format!(
                                "groups {:?} and {:?} both match the existing team {:?}",
                                desired.teams[other].display_name.as_str(),
                                d.display_name.as_str(),
                                t.display_name.as_str()
                            )));
                        }
                        out.push(PlannedTeam {
                            d,
                            id: t.id,
                            existing: Some(t),
                        });
                    }
                    Found::New => {
                        let id = match d.id {
                            Some(id) => id,
                            None => {
                                let key = match &d.external_id {
                                    Some(e) => format!("ext:{e}"),
                                    None => {
                                        format!("name:{}", d.display_name.as_str().to_lowercase())
                                    }
                                };
                                let mut attempt = 0;
                                loop {
                                    let id = derived_id("team", &desired.source, &key, attempt);
                                    if !self.ix.teams_by_id.contains_key(&id)
                                        && !taken_new.contains(&id)
                                    {
                                        break id;
                                    }
                                    attempt += 1;
                                }
                            }
                        };
                        if !taken_new.insert(id) {
                            return Err(PlanError::Invalid(format!("two groups have the id {id}")));
                        }
                        out.push(PlannedTeam {
                            d,
                            id,
                            existing: None,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deactivations and deletions of users: explicit ones (SCIM DELETE) and, for a
    /// complete pull, the users the IdP owns that it no longer lists.
    fn plan_user_removals(
        &mut self,
        users: &[PlannedUser],
        ops: &mut Vec<Placed>,
        names: &mut BTreeMap<Uuid, String>,
    ) -> Result<HashSet<Uuid>, PlanError> {
        let mut deleted = HashSet::default();
        let delete = |u: &User, ops: &mut Vec<Placed>, names: &mut BTreeMap<Uuid, String>| {
            names.insert(u.id, u.user_name.as_str().to_owned());
            ops.push(Placed::new(
                Phase::DeleteUser,
                u.id,
                0,
                Op::PurgeKeys {
                    user_id: Some(u.id),
                    team_id: None,
                    reason: PurgeReason::UserDeleted,
                },
            ));
            ops.push(Placed::new(
                Phase::DeleteUser,
                u.id,
                1,
                Op::DeleteUser { id: u.id },
            ));
        };
        for id in &self.desired.delete_users {
            let u = self.ix.users_by_id.get(id).ok_or(PlanError::NotFound {
                kind: ResourceKind::User,
                id: *id,
            })?;
            self.check_listed_target(ResourceKind::User, u.id, u.user_name.as_str(), &u.source)?;
            if deleted.insert(*id) {
                delete(u, ops, names);
            }
        }
        if self.scope() != Scope::Everything || !self.desired.complete {
            return Ok(deleted);
        }
        let listed: HashSet<Uuid> = users.iter().map(|p| p.id).collect();
        let delete_after = self
            .policy
            .delete_after
            .and_then(|d| chrono::Duration::from_std(d).ok());
        // Held removals are planned aside, only to be counted.
        let hold = self.policy.hold_removals;
        let mut held_ops = Vec::new();
        let mut held_deleted = HashSet::default();
        let (sink, deleted_sink) = if hold {
            (&mut held_ops, &mut held_deleted)
        } else {
            (&mut *ops, &mut deleted)
        };
        for u in &self.actual.users {
            if u.source != self.desired.source
                || listed.contains(&u.id)
                || deleted_sink.contains(&u.id)
            {
                continue;
            }
            // `delete_after = "0s"` means "delete at once": deactivating first would
            // only postpone the deletion to the next run.
            if u.active && delete_after != Some(chrono::Duration::zero()) {
                names.insert(u.id, u.user_name.as_str().to_owned());
                sink.push(Placed::new(
                    Phase::Deactivate,
                    u.id,
                    0,
                    Op::DeactivateUser { id: u.id },
                ));
                sink.push(Placed::new(
                    Phase::Deactivate,
                    u.id,
                    1,
                    Op::BlockKeys { user_id: u.id },
                ));
            } else if let Some(after) = delete_after {
                // An inactive user's `modified` is when it was deactivated: nothing else
                // changes a user the IdP no longer lists. Any later change restarts the
                // clock, which errs on the side of keeping the account.
                if u.modified
                    .checked_add_signed(after)
                    .is_some_and(|due| due <= self.policy.now)
                {
                    deleted_sink.insert(u.id);
                    delete(u, sink, names);
                }
            }
        }
        if hold {
            self.held.users += held_ops.iter().filter(|o| o.op.is_removal()).count();
            for o in &held_ops {
                names.remove(&o.key.subject);
            }
        }
        Ok(deleted)
    }

    fn plan_team_removals(
        &mut self,
        teams: &[PlannedTeam],
        ops: &mut Vec<Placed>,
        names: &mut BTreeMap<Uuid, String>,
    ) -> Result<HashSet<Uuid>, PlanError> {
        let mut deleted = HashSet::default();
        let delete = |t: &Team, ops: &mut Vec<Placed>, names: &mut BTreeMap<Uuid, String>| {
            names.insert(t.id, t.display_name.as_str().to_owned());
            ops.push(Placed::new(
                Phase::DeleteTeam,
                t.id,
                0,
                Op::PurgeKeys {
                    user_id: None,
                    team_id: Some(t.id),
                    reason: PurgeReason::TeamDeleted,
                },
            ));
            ops.push(Placed::new(
                Phase::DeleteTeam,
                t.id,
                1,
                Op::DeleteTeam { id: t.id },
            ));
        };
        for id in &self.desired.delete_teams {
            let t = self.ix.teams_by_id.get(id).ok_or(PlanError::NotFound {
                kind: ResourceKind::Team,
                id: *id,
            })?;
            self.check_listed_target(ResourceKind::Team, t.id, t.display_name.as_str(), &t.source)?;
            if deleted.insert(*id) {
                delete(t, ops, names);
            }
        }
        if self.scope() != Scope::Everything || !self.desired.complete {
            return Ok(deleted);
        }
        let listed: HashSet<Uuid> = teams.iter().map(|p| p.id).collect();
        if self.policy.hold_removals {
            self.held.teams += self
                .actual
                .teams
                .iter()
                .filter(|t| {
                    t.source == self.desired.source
                        && !listed.contains(&t.id)
                        && !deleted.contains(&t.id)
                })
                .count();
            return Ok(deleted);
        }
        for t in &self.actual.teams {
            // Only teams the pull itself created (or took over) go; sign-in-created teams
            // of the same IdP may be outside the pull's group filter.
            if t.source == self.desired.source && !listed.contains(&t.id) && deleted.insert(t.id) {
                delete(t, ops, names);
            }
        }
        Ok(deleted)
    }

    fn resolve_member(
        &mut self,
        r: &MemberRef,
        planned: &HashMap<Uuid, &PlannedUser>,
        ext_to_planned: &HashMap<&str, Uuid>,
        deleted_users: &HashSet<Uuid>,
    ) -> Result<Option<Uuid>, PlanError> {
        let found = match r {
            MemberRef::UserId(id) => {
                (planned.contains_key(id) || self.ix.users_by_id.contains_key(id)).then_some(*id)
            }
            // Resolved against the state after the plan: a user this plan deletes, or
            // gives another external id, no longer answers to this one.
            MemberRef::ExternalId(e) => ext_to_planned.get(e.as_str()).copied().or_else(|| {
                let adopts = self.scope() == Scope::Everything;
                self.ix
                    .users_by_ext
                    .get(e.as_str())
                    .and_then(|l| {
                        l.iter()
                            .filter(|u| {
                                // A pull's member ids are its IdP's own; a SCIM client
                                // naming an externalId may mean anyone's user.
                                (!adopts || self.ownership(&u.source) != Ownership::Foreign)
                                    && !deleted_users.contains(&u.id)
                                    && planned.get(&u.id).map_or(true, |p| {
                                        p.d.external_id.is_none()
                                            || p.d.external_id.as_deref() == Some(e)
                                    })
                            })
                            // Ranked by ownership after the plan (a pull adopts the users it
                            // lists), so that planning again resolves to the same user.
                            .min_by_key(|u| {
                                let owned = (adopts && planned.contains_key(&u.id))
                                    || may_manage(&u.source, &self.desired.source);
                                (!owned, u.id)
                            })
                    })
                    .map(|u| u.id)
            }),
        };
        if found.is_some() {
            return Ok(found);
        }
        // A SCIM request naming a missing member is the client's mistake, reported
        // unless configured otherwise; a pull's group may list members (nested groups,
        // service accounts) that are not users, which is only worth a warning.
        if self.scope() == Scope::Listed && self.policy.unknown_members == UnknownMembers::Reject {
            return Err(PlanError::UnknownMember { id: r.to_string() });
        }
        self.unknown_members += 1;
        if self.unknown_examples.len() < 5 {
            self.unknown_examples.insert(r.to_string());
        }
        Ok(None)
    }

    #[allow(clippy::type_complexity)]
    fn plan_memberships(
        &mut self,
        users: &[PlannedUser],
        teams: &[PlannedTeam],
        planned: &HashMap<Uuid, &PlannedUser>,
        ext_to_planned: &HashMap<&str, Uuid>,
        deleted_users: &HashSet<Uuid>,
    ) -> Result<(Vec<(Uuid, Uuid)>, Vec<(Uuid, Uuid)>), PlanError> {
        // Vectors sorted once at the end: a first pull adds a million pairs, which a
        // tree set would make needlessly slow.
        let mut adds = Vec::new();
        let mut removes = Vec::new();
        // A partial pull may add but never remove: its member lists may be partial too.
        let may_remove = self.desired.complete;

        if self.scope() == Scope::UserMemberships {
            let [user] = users else {
                return Err(PlanError::Invalid(
                    "a sign-in's desired state names exactly one user".into(),
                ));
            };
            let wanted: HashSet<Uuid> = teams.iter().map(|t| t.id).collect();
            for t in teams {
                if self.ix.membership(t.id, user.id).is_none() {
                    adds.push((t.id, user.id));
                }
            }
            if may_remove {
                for m in self.ix.user_teams(user.id) {
                    let owned_team = self
                        .ix
                        .teams_by_id
                        .get(&m.team_id)
                        .is_some_and(|t| may_manage(&t.source, &self.desired.source));
                    if !wanted.contains(&m.team_id)
                        && owned_team
                        && self.may_remove_membership(&m.source)
                    {
                        removes.push((m.team_id, user.id));
                    }
                }
            }
            return Ok((sorted_pairs(adds), sorted_pairs(removes)));
        }

        for t in teams {
            match &t.d.members {
                MemberSpec::Unchanged => {}
                MemberSpec::Exactly(refs) => {
                    let mut want =
                        HashSet::with_capacity_and_hasher(refs.len(), Default::default());
                    for r in refs {
                        if let Some(u) =
                            self.resolve_member(r, planned, ext_to_planned, deleted_users)?
                        {
                            if !deleted_users.contains(&u) {
                                want.insert(u);
                            }
                        }
                    }
                    let roster: &[&Membership] = if t.existing.is_some() {
                        self.ix.roster(t.id)
                    } else {
                        &[]
                    };
                    let have: HashSet<Uuid> = roster.iter().map(|m| m.user_id).collect();
                    for u in want.iter().filter(|u| !have.contains(u)) {
                        adds.push((t.id, *u));
                    }
                    if may_remove {
                        for m in roster {
                            if !want.contains(&m.user_id)
                                && !deleted_users.contains(&m.user_id)
                                && self.may_remove_membership(&m.source)
                            {
                                removes.push((t.id, m.user_id));
                            }
                        }
                    }
                }
                MemberSpec::Delta { add, remove } => {
                    // Removing wins over adding the same member in one request.
                    let mut removed = HashSet::default();
                    for r in remove {
                        if let Some(u) =
                            self.resolve_member(r, planned, ext_to_planned, deleted_users)?
                        {
                            removed.insert(u);
                            if let Some(m) = self.ix.membership(t.id, u) {
                                if self.ownership(&m.source) == Ownership::Foreign {
                                    let user = self
                                        .ix
                                        .users_by_id
                                        .get(&u)
                                        .map_or_else(|| u.to_string(), |x| x.user_name.to_string());
                                    return Err(self.not_owned(
                                        ResourceKind::Membership,
                                        u,
                                        &format!("{user} in {}", t.d.display_name),
                                        &m.source,
                                    ));
                                }
                                if self.may_remove_membership(&m.source)
                                    && !deleted_users.contains(&u)
                                {
                                    removes.push((t.id, u));
                                }
                            }
                        }
                    }
                    for r in add {
                        if let Some(u) =
                            self.resolve_member(r, planned, ext_to_planned, deleted_users)?
                        {
                            let present =
                                t.existing.is_some() && self.ix.membership(t.id, u).is_some();
                            if !present && !deleted_users.contains(&u) && !removed.contains(&u) {
                                adds.push((t.id, u));
                            }
                        }
                    }
                }
            }
        }
        Ok((sorted_pairs(adds), sorted_pairs(removes)))
    }

    /// Roles decided by `[provisioning] role_groups`, for the users whose memberships
    /// change (and, for pulls and sign-ins, every user they name). A user in several
    /// role groups gets the role of the group whose key sorts first in the config.
    fn plan_roles(
        &self,
        users: &[PlannedUser],
        teams: &[PlannedTeam],
        adds: &[(Uuid, Uuid)],
        removes: &[(Uuid, Uuid)],
        deleted_users: &HashSet<Uuid>,
        deleted_teams: &HashSet<Uuid>,
    ) -> BTreeMap<Uuid, Role> {
        let mut roles = BTreeMap::new();
        let rg = &self.policy.role_groups;
        if rg.is_empty() {
            return roles;
        }
        // Which final teams are role-mapped, and by which key (its rank in the config).
        let keys: Vec<(&String, &Role)> = rg.iter().collect();
        let mut key_rank: HashMap<String, usize> = HashMap::default();
        for (rank, (k, _)) in keys.iter().enumerate() {
            key_rank.entry(k.to_string()).or_insert(rank);
            key_rank.entry(k.to_lowercase()).or_insert(rank);
        }
        let rank_of = |id: Uuid, ext: Option<&str>, name: &str| -> Option<usize> {
            [
                key_rank.get(&id.to_string()),
                ext.and_then(|e| key_rank.get(e)),
                key_rank.get(&name.to_lowercase()),
            ]
            .into_iter()
            .flatten()
            .min()
            .copied()
        };
        let mut mapped: HashMap<Uuid, usize> = HashMap::default();
        for p in teams {
            let ext =
                p.d.external_id
                    .as_deref()
                    .or(p.existing.and_then(|t| t.external_id.as_deref()));
            if let Some(r) = rank_of(p.id, ext, p.d.display_name.as_str()) {
                mapped.insert(p.id, r);
            }
        }
        let planned_teams: HashSet<Uuid> = teams.iter().map(|p| p.id).collect();
        for t in &self.actual.teams {
            if mapped.contains_key(&t.id)
                || deleted_teams.contains(&t.id)
                || planned_teams.contains(&t.id)
            {
                continue;
            }
            if let Some(r) = rank_of(t.id, t.external_id.as_deref(), t.display_name.as_str()) {
                mapped.insert(t.id, r);
            }
        }
        if mapped.is_empty() {
            return roles;
        }
        let mut added_by_user: HashMap<Uuid, Vec<Uuid>> = HashMap::default();
        let mut candidates: BTreeSet<Uuid> = BTreeSet::new();
        for &(t, u) in adds {
            if mapped.contains_key(&t) {
                added_by_user.entry(u).or_default().push(t);
                candidates.insert(u);
            }
        }
        for &(t, u) in removes {
            if mapped.contains_key(&t) {
                candidates.insert(u);
            }
        }
        if self.scope() != Scope::Listed {
            candidates.extend(users.iter().map(|p| p.id));
        }
        let explicit: HashMap<Uuid, bool> =
            users.iter().map(|p| (p.id, p.d.role.is_some())).collect();
        let new_users: HashSet<Uuid> = users
            .iter()
            .filter(|p| p.existing.is_none())
            .map(|p| p.id)
            .collect();
        let group_roles: HashSet<&Role> = rg.values().collect();
        for u in candidates {
            if deleted_users.contains(&u) || explicit.get(&u).copied().unwrap_or(false) {
                continue;
            }
            // A role is the user's, and another IdP's user is left as it is.
            let foreign = self
                .ix
                .users_by_id
                .get(&u)
                .is_some_and(|x| self.ownership(&x.source) == Ownership::Foreign);
            if foreign {
                continue;
            }
            let is_new = new_users.contains(&u);
            let known =
                is_new || self.actual.everything || self.actual.full_user_memberships.contains(&u);
            if !known {
                continue;
            }
            let mut best: Option<usize> = None;
            if !is_new {
                for m in self.ix.user_teams(u) {
                    if removes.binary_search(&(m.team_id, u)).is_ok()
                        || deleted_teams.contains(&m.team_id)
                    {
                        continue;
                    }
                    if let Some(&r) = mapped.get(&m.team_id) {
                        best = Some(best.map_or(r, |b| b.min(r)));
                    }
                }
            }
            for t in added_by_user.get(&u).into_iter().flatten() {
                if let Some(&r) = mapped.get(t) {
                    best = Some(best.map_or(r, |b| b.min(r)));
                }
            }
            let current = self.ix.users_by_id.get(&u).map(|x| &x.role);
            let role = match (best, current) {
                (Some(r), _) => keys[r].1.clone(),
                // Leaving the last role group takes away what the group gave, and only that.
                (None, Some(cur)) if group_roles.contains(cur) => self.policy.default_role.clone(),
                (None, Some(cur)) => cur.clone(),
                (None, None) => self.policy.default_role.clone(),
            };
            roles.insert(u, role);
        }
        roles
    }

    /// After the plan, no two users may share a userName (case-insensitively).
    fn check_user_names(
        &self,
        users: &[PlannedUser],
        deleted: &HashSet<Uuid>,
    ) -> Result<(), PlanError> {
        let moving: HashSet<Uuid> = users
            .iter()
            .filter_map(|p| p.existing.map(|u| u.id))
            .chain(deleted.iter().copied())
            .collect();
        let mut final_names: HashMap<&str, Uuid> = HashMap::default();
        for p in users {
            if deleted.contains(&p.id) {
                continue;
            }
            if let Some(other) = final_names.insert(p.d.user_name.folded(), p.id) {
                if other != p.id {
                    return Err(PlanError::Invalid(format!(
                        "two users are named {}",
                        p.d.user_name
                    )));
                }
            }
            if let Some(holder) = self.ix.users_by_name.get(p.d.user_name.folded()) {
                if holder.id != p.id && !moving.contains(&holder.id) {
                    return Err(PlanError::UserNameTaken {
                        user_name: p.d.user_name.as_str().to_owned(),
                    });
                }
                // The holder is renamed or deleted by this plan; unless it keeps the name.
                if holder.id != p.id && moving.contains(&holder.id) && !deleted.contains(&holder.id)
                {
                    let keeps = users
                        .iter()
                        .any(|q| q.id == holder.id && q.d.user_name == p.d.user_name);
                    if keeps {
                        return Err(PlanError::UserNameTaken {
                            user_name: p.d.user_name.as_str().to_owned(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn user_changes(&self, p: &PlannedUser, u: &User, role: Option<Role>) -> Vec<Change> {
        let d = p.d;
        // A pull or sign-in that does not know a value leaves it; SCIM's PUT and PATCH
        // send the whole resource, so there `None` clears.
        let keep_missing = d.intent == Intent::Upsert;
        let mut changes = Vec::new();
        let mut text = |name: &str, before: &Option<String>, after: &Option<String>| {
            if after.is_none() && keep_missing {
                return;
            }
            if before != after {
                changes.push(Change {
                    attribute: name.to_owned(),
                    before: before.clone().map_or(Value::Null, Value::String),
                    after: after.clone().map_or(Value::Null, Value::String),
                });
            }
        };
        text(
            "user_name",
            &Some(u.user_name.as_str().to_owned()),
            &Some(d.user_name.as_str().to_owned()),
        );
        text("external_id", &u.external_id, &d.external_id);
        text("email", &u.email, &d.email);
        text("display_name", &u.display_name, &d.display_name);
        text("given_name", &u.given_name, &d.given_name);
        text("family_name", &u.family_name, &d.family_name);
        let role = d.role.clone().or(role);
        if let Some(role) = role {
            if role != u.role {
                changes.push(Change {
                    attribute: "role".into(),
                    before: Value::String(u.role.as_str().to_owned()),
                    after: Value::String(role.as_str().to_owned()),
                });
            }
        }
        if d.active != u.active {
            changes.push(Change {
                attribute: "active".into(),
                before: Value::Bool(u.active),
                after: Value::Bool(d.active),
            });
        }
        if let Some(attrs) = &d.attributes {
            if attrs != &u.attributes {
                changes.push(Change {
                    attribute: "attributes".into(),
                    before: Value::Object(u.attributes.clone()),
                    after: Value::Object(attrs.clone()),
                });
            }
        }
        // A pull takes over the accounts it lists (adoption), so that it can later
        // deactivate them when the IdP drops them.
        if self.adopts(&u.source) {
            changes.push(Change {
                attribute: "source".into(),
                before: Value::String(u.source.to_string()),
                after: Value::String(self.desired.source.to_string()),
            });
        }
        changes
    }

    fn team_changes(&self, p: &PlannedTeam, t: &Team) -> Vec<Change> {
        let d = p.d;
        let mut changes = Vec::new();
        if d.display_name.as_str() != t.display_name.as_str() {
            changes.push(Change {
                attribute: "display_name".into(),
                before: Value::String(t.display_name.as_str().to_owned()),
                after: Value::String(d.display_name.as_str().to_owned()),
            });
        }
        let ext_changes = match d.intent {
            Intent::Upsert => d.external_id.is_some() && d.external_id != t.external_id,
            Intent::Create | Intent::Update => d.external_id != t.external_id,
        };
        if ext_changes {
            changes.push(Change {
                attribute: "external_id".into(),
                before: t.external_id.clone().map_or(Value::Null, Value::String),
                after: d.external_id.clone().map_or(Value::Null, Value::String),
            });
        }
        if let Some(m) = &d.metadata {
            if m != &t.metadata {
                changes.push(Change {
                    attribute: "metadata".into(),
                    before: Value::Object(t.metadata.clone()),
                    after: Value::Object(m.clone()),
                });
            }
        }
        // A pull takes over the teams the same IdP's sign-ins created.
        if self.adopts(&t.source) {
            changes.push(Change {
                attribute: "source".into(),
                before: Value::String(t.source.to_string()),
                after: Value::String(self.desired.source.to_string()),
            });
        }
        changes
    }
}

/// Contradictions within the desired state itself.
fn validate(desired: &Desired) -> Result<(), PlanError> {
    let mut names: HashMap<&str, &UserName> = HashMap::default();
    let mut exts: HashSet<&str> = HashSet::default();
    for u in &desired.users {
        if let Some(other) = names.insert(u.user_name.folded(), &u.user_name) {
            return Err(PlanError::Invalid(format!(
                "two users are named {other:?} and {:?}, one name once folded \
                 (userName ignores case, width and Unicode normalisation)",
                u.user_name.as_str()
            )));
        }
        if let Some(e) = &u.external_id {
            if !exts.insert(e) {
                return Err(PlanError::Invalid(format!(
                    "two users have the external id {e:?}"
                )));
            }
        }
    }
    let mut team_exts: HashSet<&str> = HashSet::default();
    for t in &desired.teams {
        if let Some(e) = &t.external_id {
            if !team_exts.insert(e) {
                return Err(PlanError::Invalid(format!(
                    "two groups have the external id {e:?}"
                )));
            }
        }
    }
    Ok(())
}
