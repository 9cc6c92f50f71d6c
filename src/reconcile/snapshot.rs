//! The snapshot: an IdP's state as JSON (docs/snapshot.md, docs/snapshot.schema.json).
//! `scimsync pull` writes it, `scimsync plan --snapshot` reads it.

use super::desired::{Desired, DesiredTeam, DesiredUser, Intent, MemberRef, MemberSpec, Scope};
use crate::domain::{Role, Source, TeamName, UserName};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The IdP connection the state comes from; what it creates is owned by `sync:<idp>`.
    pub idp: String,
    /// False for a partial pull: it may add and update but never deletes or deactivates.
    pub complete: bool,
    #[serde(default)]
    pub users: Vec<SnapshotUser>,
    #[serde(default)]
    pub groups: Vec<SnapshotGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotUser {
    /// The IdP's id of the user; group `members` refer to it.
    pub external_id: String,
    pub user_name: UserName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
    /// A role set by the IdP; without it the role follows role_groups or the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Extra SCIM attributes to keep; without it, existing ones are left as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotGroup {
    /// The IdP's group id.
    pub external_id: String,
    pub display_name: TeamName,
    /// External ids of the member users.
    #[serde(default)]
    pub members: Vec<String>,
    /// Team metadata to set; without it an existing team's metadata is left alone and a
    /// new team gets `[teams] defaults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// A snapshot that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    /// Malformed JSON or a value of the wrong shape, at a line and column, in a field.
    #[error("line {line}, column {column}{}: {message}", field_suffix(.field))]
    Parse {
        line: usize,
        column: usize,
        /// The path of the offending field, e.g. `users[3].user_name`; empty at the top.
        field: String,
        message: String,
    },
    /// Well-formed but contradictory (e.g. one external id used twice).
    #[error("{0}")]
    Invalid(String),
}

fn field_suffix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!(", field {field}")
    }
}

impl Snapshot {
    /// Parses a snapshot, naming the line, column and field of any problem.
    pub fn parse(text: &str) -> Result<Snapshot, SnapshotError> {
        // The fast path: a valid snapshot parses once, without tracking field paths.
        if let Ok(snapshot) = serde_json::from_str::<Snapshot>(text) {
            snapshot.validate()?;
            return Ok(snapshot);
        }
        // A broken one is parsed again to find the field the error is in.
        let mut de = serde_json::Deserializer::from_str(text);
        let snapshot: Snapshot = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            SnapshotError::Parse {
                line: inner.line(),
                column: inner.column(),
                field,
                message: strip_location(&inner.to_string()),
            }
        })?;
        de.end().map_err(|e| SnapshotError::Parse {
            line: e.line(),
            column: e.column(),
            field: String::new(),
            message: strip_location(&e.to_string()),
        })?;
        snapshot.validate()?;
        Ok(snapshot)
    }

    fn validate(&self) -> Result<(), SnapshotError> {
        if self.idp.trim().is_empty() {
            return Err(SnapshotError::Invalid("idp must not be empty".into()));
        }
        let mut ext = HashSet::default();
        let mut names: HashMap<&str, (usize, &SnapshotUser)> = HashMap::default();
        for (i, u) in self.users.iter().enumerate() {
            if !ext.insert(u.external_id.as_str()) {
                return Err(SnapshotError::Invalid(format!(
                    "users[{i}]: external_id {:?} is used by an earlier user",
                    u.external_id
                )));
            }
            // Both are named: twins such as a composed and a decomposed `é`, or fullwidth
            // letters, look alike, and the operator has to find the one to fix at the IdP.
            if let Some((j, earlier)) = names.insert(u.user_name.folded(), (i, u)) {
                return Err(SnapshotError::Invalid(format!(
                    "users[{i}] (external_id {:?}, user_name {:?}) and users[{j}] (external_id {:?}, \
                     user_name {:?}) are one user name: user names are compared after Unicode \
                     normalisation, width mapping and case folding; rename one at the IdP",
                    u.external_id,
                    u.user_name.as_str(),
                    earlier.external_id,
                    earlier.user_name.as_str()
                )));
            }
        }
        let mut groups = HashSet::default();
        for (i, g) in self.groups.iter().enumerate() {
            if !groups.insert(g.external_id.as_str()) {
                return Err(SnapshotError::Invalid(format!(
                    "groups[{i}]: external_id {:?} is used by an earlier group",
                    g.external_id
                )));
            }
        }
        Ok(())
    }

    /// The snapshot a pull's desired state was made from (the inverse of
    /// [`Snapshot::into_desired`]), so that a quarantined plan can keep what it was
    /// planned from without a second copy in memory on every run. `None` for a desired
    /// state no snapshot describes (SCIM writes, sign-ins).
    pub fn from_desired(desired: &Desired) -> Option<Snapshot> {
        let idp = match &desired.source {
            Source::Sync(idp) if desired.scope == Scope::Everything => idp.clone(),
            _ => return None,
        };
        if !desired.delete_users.is_empty() || !desired.delete_teams.is_empty() {
            return None;
        }
        let users = desired
            .users
            .iter()
            .map(|u| {
                (u.id.is_none() && u.intent == Intent::Upsert).then_some(())?;
                Some(SnapshotUser {
                    external_id: u.external_id.clone()?,
                    user_name: u.user_name.clone(),
                    email: u.email.clone(),
                    display_name: u.display_name.clone(),
                    given_name: u.given_name.clone(),
                    family_name: u.family_name.clone(),
                    active: u.active,
                    role: u.role.clone(),
                    attributes: u.attributes.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let groups = desired
            .teams
            .iter()
            .map(|t| {
                (t.id.is_none() && t.intent == Intent::Upsert).then_some(())?;
                let MemberSpec::Exactly(members) = &t.members else {
                    return None;
                };
                Some(SnapshotGroup {
                    external_id: t.external_id.clone()?,
                    display_name: t.display_name.clone(),
                    members: members
                        .iter()
                        .map(|m| match m {
                            MemberRef::ExternalId(e) => Some(e.clone()),
                            MemberRef::UserId(_) => None,
                        })
                        .collect::<Option<Vec<_>>>()?,
                    metadata: t.metadata.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Snapshot {
            idp,
            complete: desired.complete,
            users,
            groups,
        })
    }

    /// The desired state this snapshot describes: everything the IdP owns.
    pub fn into_desired(self) -> Desired {
        let users = self
            .users
            .into_iter()
            .map(|u| DesiredUser {
                external_id: Some(u.external_id),
                email: u.email,
                display_name: u.display_name,
                given_name: u.given_name,
                family_name: u.family_name,
                active: u.active,
                role: u.role,
                attributes: u.attributes,
                ..DesiredUser::new(u.user_name)
            })
            .collect();
        let teams = self
            .groups
            .into_iter()
            .map(|g| DesiredTeam {
                external_id: Some(g.external_id),
                metadata: g.metadata,
                members: MemberSpec::Exactly(
                    g.members.into_iter().map(MemberRef::ExternalId).collect(),
                ),
                ..DesiredTeam::new(g.display_name)
            })
            .collect();
        Desired {
            complete: self.complete,
            users,
            teams,
            ..Desired::new(Source::Sync(self.idp), Scope::Everything)
        }
    }
}

/// serde_json appends " at line L column C"; the error already carries them as fields.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
