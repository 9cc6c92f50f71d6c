//! `audit` for people: each entry's target named (`user alice@example.com`) rather than
//! given by id (`user:<uuid>`). Most entries carry the names in their detail, as they
//! were when the entry was written; the rest are looked up, a page at a time
//! ([`crate::store::Store::audit_names`]).

use super::{Cell, Table, Tone};
use crate::store::{format_ts, AuditEntry, AuditNames};
use serde_json::Value;
use std::collections::BTreeSet;
use uuid::Uuid;

/// Entries per page: one names query each, well within every backend's parameter limit.
pub const PAGE: usize = 200;

/// What an entry's target column says, split into its parts.
enum Target<'a> {
    User(Uuid),
    Team(Uuid),
    Member {
        team: Uuid,
        user: Uuid,
    },
    Keys {
        user: Option<Uuid>,
        team: Option<Uuid>,
    },
    Key(Uuid),
    Other(&'a str),
}

fn parse_target(target: &str) -> Target<'_> {
    let id = |s: &str| Uuid::parse_str(s).ok();
    let parts: Vec<&str> = target.split(':').collect();
    let parsed = match parts.as_slice() {
        ["user", u] => id(u).map(Target::User),
        ["team", t] => id(t).map(Target::Team),
        ["key", k] => id(k).map(Target::Key),
        ["membership", t, u] => id(t)
            .zip(id(u))
            .map(|(team, user)| Target::Member { team, user }),
        ["keys"] => Some(Target::Keys {
            user: None,
            team: None,
        }),
        ["keys", "user", u] => id(u).map(|u| Target::Keys {
            user: Some(u),
            team: None,
        }),
        ["keys", "team", t] => id(t).map(|t| Target::Keys {
            user: None,
            team: Some(t),
        }),
        ["keys", "team", t, "user", u] => id(t).zip(id(u)).map(|(t, u)| Target::Keys {
            user: Some(u),
            team: Some(t),
        }),
        _ => None,
    };
    parsed.unwrap_or(Target::Other(target))
}

/// A name the entry's detail recorded, at `path`. A plan that did not know a name
/// recorded the id in its place: that counts as none.
fn recorded<'a>(detail: &'a Value, path: &[&str], id: Uuid) -> Option<&'a str> {
    let mut v = detail;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str()
        .filter(|name| !name.is_empty() && Uuid::parse_str(name).ok() != Some(id))
}

/// Where each kind of target keeps its names in the detail: the reconcile engine's
/// records (src/reconcile/record.rs `op_record`), and the short detail of memberships.
fn recorded_user(detail: &Value, id: Uuid) -> Option<&str> {
    recorded(detail, &["target", "user_name"], id).or_else(|| recorded(detail, &["user_name"], id))
}

fn recorded_team(detail: &Value, id: Uuid) -> Option<&str> {
    recorded(detail, &["target", "display_name"], id)
        .or_else(|| recorded(detail, &["target", "team"], id))
        .or_else(|| recorded(detail, &["team"], id))
}

/// The ids a page needs looked up: (users, teams, keys), each once.
pub fn unnamed(entries: &[AuditEntry]) -> (Vec<Uuid>, Vec<Uuid>, Vec<Uuid>) {
    let (mut users, mut teams, mut keys) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut user = |id: Uuid, d: &Value| {
        if recorded_user(d, id).is_none() {
            users.insert(id);
        }
    };
    let mut team = |id: Uuid, d: &Value| {
        if recorded_team(d, id).is_none() {
            teams.insert(id);
        }
    };
    for e in entries {
        let d = &e.detail;
        match parse_target(&e.target) {
            Target::User(u) => user(u, d),
            Target::Team(t) => team(t, d),
            Target::Member { team: t, user: u } => {
                user(u, d);
                team(t, d);
            }
            Target::Keys { user: u, team: t } => {
                u.into_iter().for_each(|u| user(u, d));
                t.into_iter().for_each(|t| team(t, d));
            }
            Target::Key(k) => {
                keys.insert(k);
            }
            Target::Other(_) => {}
        }
    }
    (
        users.into_iter().collect(),
        teams.into_iter().collect(),
        keys.into_iter().collect(),
    )
}

fn user_name(id: Uuid, detail: &Value, names: &AuditNames) -> String {
    recorded_user(detail, id)
        .map(str::to_owned)
        .or_else(|| names.users.get(&id).cloned())
        .unwrap_or_else(|| id.to_string())
}

fn team_name(id: Uuid, detail: &Value, names: &AuditNames) -> String {
    let name = recorded_team(detail, id)
        .map(str::to_owned)
        .or_else(|| names.teams.get(&id).cloned());
    match name {
        Some(n) => format!("team {n:?}"),
        None => format!("team {id}"),
    }
}

/// The target as a person reads it: `user alice@example.com`, `team "Evals"`,
/// `member alice@example.com of team "Evals"`, `key sk-AbC of alice@example.com`.
/// A target that no longer has a name anywhere keeps its id.
pub fn target_label(entry: &AuditEntry, names: &AuditNames) -> String {
    let d = &entry.detail;
    match parse_target(&entry.target) {
        Target::User(u) => format!("user {}", user_name(u, d, names)),
        Target::Team(t) => team_name(t, d, names),
        Target::Member { team, user } => format!(
            "member {} of {}",
            user_name(user, d, names),
            team_name(team, d, names)
        ),
        Target::Keys { user, team } => {
            let mut label = "keys".to_owned();
            if let Some(u) = user {
                label.push_str(&format!(" of {}", user_name(u, d, names)));
            }
            if let Some(t) = team {
                label.push_str(&format!(" for {}", team_name(t, d, names)));
            }
            label
        }
        Target::Key(k) => match names.keys.get(&k) {
            Some(owner) => {
                let mut label = format!(
                    "key {} of {}",
                    owner.prefix,
                    owner
                        .user_name
                        .clone()
                        .unwrap_or_else(|| owner.user_id.to_string())
                );
                if let Some(t) = owner.team_id {
                    match &owner.team_name {
                        Some(n) => label.push_str(&format!(" for team {n:?}")),
                        None => label.push_str(&format!(" for team {t}")),
                    }
                }
                label
            }
            None => format!("key {k}"),
        },
        Target::Other(raw) => raw.to_owned(),
    }
}

/// One page of `audit` as a table; `wide` adds the stored target (ids) last.
pub fn audit_table(entries: &[AuditEntry], names: &AuditNames, wide: bool) -> Table {
    let mut headers = vec!["AT", "TRIGGER", "ACTOR", "OPERATION", "TARGET"];
    if wide {
        headers.push("TARGET ID");
    }
    // The widths of a timestamp and of the common triggers, actors and operations, so
    // that the columns stay put from one page to the next.
    let mut table = Table::new(headers).min_widths(&[27, 7, 16, 16, 40]);
    for e in entries {
        let mut row = vec![
            Cell::from(format_ts(e.at)),
            Cell::from(e.trigger.clone()),
            Cell::from(e.actor.clone()),
            Cell::from(e.operation.clone()),
            Cell::from(target_label(e, names)),
        ];
        if wide {
            row.push(Cell::new(e.target.clone(), Tone::Dim));
        }
        table.row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(target: &str, detail: Value) -> AuditEntry {
        AuditEntry {
            at: crate::store::now(),
            trigger: "cli".into(),
            actor: "cli".into(),
            operation: "op".into(),
            target: target.into(),
            detail,
        }
    }

    #[test]
    fn names_come_from_the_detail_and_only_the_rest_is_looked_up() {
        let (u, t, k) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let entries = vec![
            entry(
                &format!("user:{u}"),
                json!({"target": {"type": "user", "id": u, "user_name": "alice"}}),
            ),
            entry(
                &format!("membership:{t}:{u}"),
                json!({"team": t.to_string(), "user_name": "alice"}),
            ),
            entry(&format!("key:{k}"), json!({})),
            entry("something:else", json!({})),
        ];
        assert_eq!(unnamed(&entries), (vec![], vec![t], vec![k]));
        let mut names = AuditNames::default();
        names.teams.insert(t, "Evals".into());
        let labels: Vec<String> = entries.iter().map(|e| target_label(e, &names)).collect();
        assert_eq!(labels[0], "user alice");
        assert_eq!(labels[1], "member alice of team \"Evals\"");
        assert_eq!(labels[2], format!("key {k}"));
        assert_eq!(labels[3], "something:else");
    }
}
