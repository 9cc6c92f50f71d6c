//! Reading the actual state a desired state touches, and fingerprinting it.
//!
//! Scoped on purpose: a SCIM write reads a handful of rows by index, never a whole
//! table, so that a POST costs the same in a store of ten users as in one of 100,000.

use super::desired::{Desired, Intent, MemberRef, MemberSpec, Scope};
use super::ops::Actual;
use super::Policy;
use crate::domain::{Membership, Team, User};
use crate::store::actual::{TeamKey, UserKey};
use crate::store::{StoreError, WriteTx};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// What has been read so far, deduplicated by id.
#[derive(Default)]
struct Loaded {
    users: BTreeMap<Uuid, User>,
    teams: BTreeMap<Uuid, Team>,
    memberships: BTreeMap<(Uuid, Uuid), Membership>,
    full_rosters: BTreeSet<Uuid>,
    full_user_memberships: BTreeSet<Uuid>,
}

impl Loaded {
    async fn users(
        &mut self,
        tx: &mut WriteTx,
        key: UserKey,
        values: BTreeSet<String>,
    ) -> Result<(), StoreError> {
        if values.is_empty() {
            return Ok(());
        }
        let values: Vec<String> = values.into_iter().collect();
        for u in tx.users_where(key, &values).await? {
            self.users.insert(u.id, u);
        }
        Ok(())
    }

    async fn teams(
        &mut self,
        tx: &mut WriteTx,
        key: TeamKey,
        values: BTreeSet<String>,
    ) -> Result<(), StoreError> {
        if values.is_empty() {
            return Ok(());
        }
        let values: Vec<String> = values.into_iter().collect();
        for t in tx.teams_where(key, &values).await? {
            self.teams.insert(t.id, t);
        }
        Ok(())
    }

    fn memberships(&mut self, rows: Vec<Membership>) {
        for m in rows {
            self.memberships.insert((m.team_id, m.user_id), m);
        }
    }

    /// Loads every membership of these users, and the teams they are in.
    async fn user_memberships(
        &mut self,
        tx: &mut WriteTx,
        users: BTreeSet<Uuid>,
    ) -> Result<(), StoreError> {
        let users: Vec<Uuid> = users
            .into_iter()
            .filter(|u| !self.full_user_memberships.contains(u))
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        let rows = tx.memberships_of_users(&users).await?;
        let teams: BTreeSet<String> = rows
            .iter()
            .filter(|m| !self.teams.contains_key(&m.team_id))
            .map(|m| m.team_id.to_string())
            .collect();
        self.memberships(rows);
        self.full_user_memberships.extend(users);
        self.teams(tx, TeamKey::Id, teams).await
    }

    /// The ids of the loaded teams a desired team may match.
    fn team_candidates(&self, d: &super::desired::DesiredTeam) -> Vec<Uuid> {
        let name = d.display_name.as_str().to_lowercase();
        self.teams
            .values()
            .filter(|t| {
                Some(t.id) == d.id
                    || (d.intent == Intent::Upsert
                        && ((d.external_id.is_some() && t.external_id == d.external_id)
                            || t.display_name.as_str().to_lowercase() == name))
            })
            .map(|t| t.id)
            .collect()
    }

    /// The ids of loaded users a member reference may name.
    fn member_candidates(&self, r: &MemberRef) -> Vec<Uuid> {
        match r {
            MemberRef::UserId(id) => vec![*id],
            MemberRef::ExternalId(e) => self
                .users
                .values()
                .filter(|u| u.external_id.as_deref() == Some(e.as_str()))
                .map(|u| u.id)
                .collect(),
        }
    }

    fn into_actual(self, everything: bool) -> Actual {
        Actual {
            users: self.users.into_values().collect(),
            teams: self.teams.into_values().collect(),
            memberships: self.memberships.into_values().collect(),
            everything,
            full_rosters: self.full_rosters,
            full_user_memberships: self.full_user_memberships,
            team_keys: BTreeMap::new(),
        }
    }
}

/// Reads what `plan(desired, ..)` needs, within `tx`:
/// - `Everything`: every user, team and membership (a pull compares against it all);
/// - `Listed`: only the users and teams named (by id, external id or userName), the
///   exact membership pairs of a `Delta`, the roster of a team given `Exactly`, and, when
///   role groups are configured and a role group's membership changes, the memberships
///   of the users concerned;
/// - `UserMemberships`: the user, all their memberships and the teams concerned.
pub async fn load_actual(
    tx: &mut WriteTx,
    desired: &Desired,
    policy: &Policy,
) -> Result<Actual, StoreError> {
    load_actual_knowing(tx, desired, policy, None).await
}

/// [`load_actual`] when `known`, a team the desired state names by id, was read in
/// `tx` already (a SCIM change to one group reads it first, for its If-Match): it is
/// not read again, which is one round trip fewer under the writer lock.
pub(crate) async fn load_actual_knowing(
    tx: &mut WriteTx,
    desired: &Desired,
    policy: &Policy,
    known: Option<&Team>,
) -> Result<Actual, StoreError> {
    if desired.scope == Scope::Everything {
        let (users, teams, memberships) = tx.load_everything().await?;
        let team_keys = tx.key_counts_by_team().await?.into_iter().collect();
        return Ok(Actual {
            users,
            teams,
            memberships,
            team_keys,
            everything: true,
            ..Actual::default()
        });
    }

    if only_creates_new_users(desired) {
        return Ok(Loaded::default().into_actual(false));
    }

    if let Some(actual) = members_of_one_known_team(tx, desired, policy, known).await? {
        return Ok(actual);
    }

    let mut l = Loaded::default();
    let mut user_ids = BTreeSet::new();
    let mut user_exts = BTreeSet::new();
    let mut user_names = BTreeSet::new();
    for u in &desired.users {
        if let Some(id) = u.id {
            user_ids.insert(id.to_string());
        }
        if let Some(e) = &u.external_id {
            user_exts.insert(e.clone());
        }
        // By name also for updates: a rename must not take another user's userName.
        user_names.insert(u.user_name.folded().to_owned());
    }
    user_ids.extend(desired.delete_users.iter().map(Uuid::to_string));
    for t in &desired.teams {
        let refs: Box<dyn Iterator<Item = &MemberRef>> = match &t.members {
            MemberSpec::Unchanged => Box::new(std::iter::empty()),
            MemberSpec::Exactly(refs) => Box::new(refs.iter()),
            MemberSpec::Delta { add, remove } => Box::new(add.iter().chain(remove.iter())),
        };
        for r in refs {
            match r {
                MemberRef::UserId(id) => user_ids.insert(id.to_string()),
                MemberRef::ExternalId(e) => user_exts.insert(e.clone()),
            };
        }
    }
    let keys = [
        (UserKey::Id, user_ids.into_iter().collect()),
        (UserKey::ExternalId, user_exts.into_iter().collect()),
        (UserKey::NameFolded, user_names.into_iter().collect()),
    ];
    for u in tx.users_matching(&keys).await? {
        l.users.insert(u.id, u);
    }

    let mut team_ids: BTreeSet<String> = desired.delete_teams.iter().map(Uuid::to_string).collect();
    let mut team_exts = BTreeSet::new();
    let mut team_names = BTreeSet::new();
    for t in &desired.teams {
        if let Some(id) = t.id {
            team_ids.insert(id.to_string());
        }
        if t.intent == Intent::Upsert {
            if let Some(e) = &t.external_id {
                team_exts.insert(e.clone());
            }
            team_names.insert(t.display_name.as_str().to_lowercase());
        }
    }
    if let Some(team) = known.filter(|t| team_ids.remove(&t.id.to_string())) {
        l.teams.insert(team.id, team.clone());
    }
    let keys = [
        (TeamKey::Id, team_ids.into_iter().collect()),
        (TeamKey::ExternalId, team_exts.into_iter().collect()),
        (TeamKey::NameFolded, team_names.into_iter().collect()),
    ];
    for t in tx.teams_matching(&keys).await? {
        l.teams.insert(t.id, t);
    }

    // Teams the role groups point at, so that the plan can tell which memberships decide roles.
    let mut mapped: BTreeSet<Uuid> = BTreeSet::new();
    if !policy.role_groups.is_empty() {
        let keys: BTreeSet<String> = policy.role_groups.keys().cloned().collect();
        let ids: BTreeSet<String> = keys
            .iter()
            .filter(|k| Uuid::parse_str(k).is_ok())
            .cloned()
            .collect();
        let names: BTreeSet<String> = keys.iter().map(|k| k.to_lowercase()).collect();
        l.teams(tx, TeamKey::Id, ids).await?;
        l.teams(tx, TeamKey::ExternalId, keys.clone()).await?;
        l.teams(tx, TeamKey::NameFolded, names.clone()).await?;
        for t in l.teams.values() {
            let is_mapped = keys.contains(&t.id.to_string())
                || t.external_id.as_ref().is_some_and(|e| keys.contains(e))
                || names.contains(&t.display_name.as_str().to_lowercase());
            if is_mapped {
                mapped.insert(t.id);
            }
        }
    }

    match desired.scope {
        Scope::Everything => unreachable!("handled above"),
        Scope::UserMemberships => {
            let ids: BTreeSet<Uuid> = l.users.keys().copied().collect();
            l.user_memberships(tx, ids).await?;
        }
        Scope::Listed => {
            let mut role_users: BTreeSet<Uuid> = BTreeSet::new();
            for d in &desired.teams {
                let candidates = l.team_candidates(d);
                let role_relevant = !policy.role_groups.is_empty()
                    && (candidates.iter().any(|t| mapped.contains(t))
                        || policy.role_groups.keys().any(|k| {
                            k.to_lowercase() == d.display_name.as_str().to_lowercase()
                                || d.external_id.as_deref() == Some(k.as_str())
                                || d.id.map(|i| i.to_string()).as_deref() == Some(k.as_str())
                        }));
                match &d.members {
                    MemberSpec::Unchanged => {}
                    MemberSpec::Exactly(refs) => {
                        for t in &candidates {
                            let roster = tx.team_roster(*t).await?;
                            if role_relevant {
                                role_users.extend(roster.iter().map(|m| m.user_id));
                            }
                            l.memberships(roster);
                            l.full_rosters.insert(*t);
                        }
                        if role_relevant {
                            for r in refs {
                                role_users.extend(l.member_candidates(r));
                            }
                        }
                    }
                    MemberSpec::Delta { add, remove } => {
                        let users: BTreeSet<Uuid> = add
                            .iter()
                            .chain(remove.iter())
                            .flat_map(|r| l.member_candidates(r))
                            .collect();
                        let users: Vec<Uuid> = users.into_iter().collect();
                        for t in &candidates {
                            let rows = tx.membership_pairs(*t, &users).await?;
                            l.memberships(rows);
                        }
                        if role_relevant {
                            role_users.extend(users);
                        }
                    }
                }
            }
            if !role_users.is_empty() {
                let missing: BTreeSet<String> = role_users
                    .iter()
                    .filter(|u| !l.users.contains_key(u))
                    .map(Uuid::to_string)
                    .collect();
                l.users(tx, UserKey::Id, missing).await?;
                l.user_memberships(tx, role_users).await?;
            }
        }
    }
    Ok(l.into_actual(false))
}

/// The most frequent SCIM write, a PATCH of the members of one group by user id, read
/// in one statement (the users named and their memberships of the group) instead of
/// two; the group itself was read already. `None` for any other desired state. What it
/// reads is exactly what the general path above reads for such a change: no role
/// groups, no users or teams looked up by name or external id.
async fn members_of_one_known_team(
    tx: &mut WriteTx,
    desired: &Desired,
    policy: &Policy,
    known: Option<&Team>,
) -> Result<Option<Actual>, StoreError> {
    let (Some(team), [wanted]) = (known, desired.teams.as_slice()) else {
        return Ok(None);
    };
    let MemberSpec::Delta { add, remove } = &wanted.members else {
        return Ok(None);
    };
    let simple = desired.scope == Scope::Listed
        && desired.users.is_empty()
        && desired.delete_users.is_empty()
        && desired.delete_teams.is_empty()
        && policy.role_groups.is_empty()
        && wanted.id == Some(team.id)
        && wanted.intent == Intent::Update;
    if !simple {
        return Ok(None);
    }
    let mut ids = BTreeSet::new();
    for r in add.iter().chain(remove.iter()) {
        match r {
            MemberRef::UserId(id) => ids.insert(id.to_string()),
            MemberRef::ExternalId(_) => return Ok(None),
        };
    }
    let mut l = Loaded::default();
    l.teams.insert(team.id, team.clone());
    let ids: Vec<String> = ids.into_iter().collect();
    for (user, membership) in tx.users_with_membership_of(team.id, &ids).await? {
        if let Some(m) = membership {
            l.memberships.insert((m.team_id, m.user_id), m);
        }
        l.users.insert(user.id, user);
    }
    Ok(Some(l.into_actual(false)))
}

/// True when `desired` only creates users whose ids the caller drew fresh (SCIM POST):
/// such a wish needs nothing from the store. The ids cannot exist yet, the new users
/// are in no team, and a userName already taken is refused by the insert itself (the
/// unique index on the folded name), which `apply` reports as `UserNameTaken`.
pub(crate) fn only_creates_new_users(desired: &Desired) -> bool {
    desired.scope == Scope::Listed
        && desired.teams.is_empty()
        && desired.delete_users.is_empty()
        && desired.delete_teams.is_empty()
        && !desired.users.is_empty()
        && desired
            .users
            .iter()
            .all(|u| u.intent == Intent::Create && u.id.is_some())
}

/// A SHA-256 digest of an actual state: it changes whenever any row in it changes
/// (every write bumps a version or adds, removes or re-owns a row), which is what lets
/// `apply --plan` refuse a plan computed against a state that is gone.
pub fn fingerprint(actual: &Actual) -> String {
    let mut h = Sha256::new();
    let field = |h: &mut Sha256, s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    let mut users: Vec<&User> = actual.users.iter().collect();
    users.sort_unstable_by_key(|u| u.id);
    field(&mut h, "users");
    for u in users {
        h.update(u.id.as_bytes());
        h.update(u.version.to_le_bytes());
        field(&mut h, &crate::store::format_ts(u.modified));
        field(&mut h, u.user_name.as_str());
        field(&mut h, u.external_id.as_deref().unwrap_or("\0"));
        field(&mut h, u.role.as_str());
        field(&mut h, &u.source.to_string());
        h.update([u8::from(u.active)]);
    }
    let mut teams: Vec<&Team> = actual.teams.iter().collect();
    teams.sort_unstable_by_key(|t| t.id);
    field(&mut h, "teams");
    for t in teams {
        h.update(t.id.as_bytes());
        h.update(t.version.to_le_bytes());
        field(&mut h, &crate::store::format_ts(t.modified));
        field(&mut h, t.display_name.as_str());
        field(&mut h, t.external_id.as_deref().unwrap_or("\0"));
        field(&mut h, &t.source.to_string());
    }
    let mut memberships: Vec<&Membership> = actual.memberships.iter().collect();
    memberships.sort_unstable_by_key(|m| (m.team_id, m.user_id));
    field(&mut h, "memberships");
    // Sources repeat for nearly every membership: format each distinct one once.
    let mut sources: Vec<(&crate::domain::Source, String)> = Vec::new();
    for m in memberships {
        h.update(m.team_id.as_bytes());
        h.update(m.user_id.as_bytes());
        let text = match sources.iter().find(|(s, _)| *s == &m.source) {
            Some((_, text)) => text.as_str(),
            None => {
                sources.push((&m.source, m.source.to_string()));
                sources.last().map_or("", |(_, t)| t.as_str())
            }
        };
        field(&mut h, text);
    }
    h.update([u8::from(actual.everything)]);
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Source, TeamName, Trigger, UserName};
    use crate::reconcile::{Actor, DesiredTeam, DesiredUser, Engine, Request};
    use crate::store::Store;

    #[tokio::test]
    async fn a_members_patch_of_a_team_read_already_loads_what_the_general_path_loads() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("load.db").display());
        let store = Store::open(&url, 2).await.expect("store");
        let source = Source::Scim("default".into());
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let team_id = Uuid::new_v4();
        let mut seed = Desired::new(source.clone(), Scope::Listed);
        for (i, id) in ids.iter().enumerate() {
            let name = UserName::parse(&format!("u{i}@example.com")).expect("name");
            seed.users.push(DesiredUser {
                id: Some(*id),
                intent: Intent::Create,
                ..DesiredUser::new(name)
            });
        }
        let name = TeamName::parse("Loaded").expect("name");
        seed.teams.push(DesiredTeam {
            id: Some(team_id),
            intent: Intent::Create,
            members: MemberSpec::Exactly(vec![
                MemberRef::UserId(ids[0]),
                MemberRef::UserId(ids[2]),
            ]),
            ..DesiredTeam::new(name.clone())
        });
        let policy = Policy::default();
        let actor = Actor::new(Trigger::Scim, "test");
        Engine::new(store.clone())
            .apply(Request::new(&seed, &policy, &actor))
            .await
            .expect("seeded");

        // Adds a member, a non-member and a user that does not exist; removes a member
        // and a non-member.
        let mut change = Desired::new(source, Scope::Listed);
        change.teams.push(DesiredTeam {
            id: Some(team_id),
            intent: Intent::Update,
            members: MemberSpec::Delta {
                add: vec![
                    MemberRef::UserId(ids[0]),
                    MemberRef::UserId(ids[1]),
                    MemberRef::UserId(Uuid::new_v4()),
                ],
                remove: vec![MemberRef::UserId(ids[2]), MemberRef::UserId(ids[3])],
            },
            ..DesiredTeam::new(name)
        });
        let mut tx = store.begin_write().await.expect("transaction");
        let team = tx.team(team_id).await.expect("read").expect("team");
        let general = load_actual(&mut tx, &change, &policy)
            .await
            .expect("general");
        let fast = load_actual_knowing(&mut tx, &change, &policy, Some(&team))
            .await
            .expect("one statement");
        assert_eq!(fast, general);
        assert_eq!(fast.users.len(), 4);
        assert_eq!(fast.memberships.len(), 2);
    }
}
