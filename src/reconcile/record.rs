//! The record of one applied or planned operation: what the audit log keeps, what the
//! JSON plan shows, and what apply and render share.

use super::ops::{Change, Op, Plan};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// One operation as JSON consumers and the audit log see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpRecord {
    pub kind: &'static str,
    pub target: Value,
    pub before: Value,
    pub after: Value,
}

impl OpRecord {
    /// A compact target for the audit log's target column, e.g. `user:<id>`.
    pub fn target_key(&self) -> String {
        let get = |k: &str| self.target.get(k).and_then(Value::as_str).unwrap_or("-");
        match self.target.get("type").and_then(Value::as_str) {
            Some("user") => format!("user:{}", get("id")),
            Some("team") => format!("team:{}", get("id")),
            Some("membership") => format!("membership:{}:{}", get("team_id"), get("user_id")),
            _ => match (self.target.get("user_id"), self.target.get("team_id")) {
                (Some(Value::String(u)), Some(Value::String(t))) => {
                    format!("keys:team:{t}:user:{u}")
                }
                (Some(Value::String(u)), _) => format!("keys:user:{u}"),
                (_, Some(Value::String(t))) => format!("keys:team:{t}"),
                _ => "keys".to_owned(),
            },
        }
    }
}

/// SCIM clients could send a password; it must never reach a plan file, a terminal or
/// the audit log.
pub(super) fn redact(map: &Map<String, Value>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("password") {
                    (k.clone(), Value::String("<redacted>".into()))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect(),
    )
}

pub(super) fn change_value(c: &Change, v: &Value) -> Value {
    match (c.attribute.as_str(), v) {
        ("attributes", Value::Object(m)) => redact(m),
        _ => v.clone(),
    }
}

pub(super) fn user_target(plan: &Plan, id: Uuid) -> Value {
    json!({"type": "user", "id": id, "user_name": plan.user_label(id)})
}

pub(super) fn team_target(plan: &Plan, id: Uuid) -> Value {
    json!({"type": "team", "id": id, "display_name": plan.team_label(id)})
}

pub(super) fn changes_maps(changes: &[Change]) -> (Value, Value) {
    let mut before = Map::new();
    let mut after = Map::new();
    for c in changes {
        before.insert(c.attribute.clone(), change_value(c, &c.before));
        after.insert(c.attribute.clone(), change_value(c, &c.after));
    }
    (Value::Object(before), Value::Object(after))
}

/// The record of one operation: its kind, its target, and before/after attribute maps.
pub fn op_record(plan: &Plan, op: &Op) -> OpRecord {
    let kind = op.kind().as_str();
    let (target, before, after) = match op {
        Op::CreateUser(u) => (
            user_target(plan, u.id),
            Value::Null,
            json!({
                "user_name": u.user_name.as_str(),
                "external_id": u.external_id,
                "email": u.email,
                "display_name": u.display_name,
                "given_name": u.given_name,
                "family_name": u.family_name,
                "role": u.role.as_str(),
                "active": u.active,
                "attributes": redact(&u.attributes),
                "source": u.source.to_string(),
            }),
        ),
        Op::UpdateUser { id, changes } => {
            let (b, a) = changes_maps(changes);
            (user_target(plan, *id), b, a)
        }
        Op::DeactivateUser { id } => (
            user_target(plan, *id),
            json!({"active": true}),
            json!({"active": false}),
        ),
        Op::DeleteUser { id } => (user_target(plan, *id), json!({"exists": true}), Value::Null),
        Op::CreateTeam(t) => (
            team_target(plan, t.id),
            Value::Null,
            json!({
                "display_name": t.display_name.as_str(),
                "external_id": t.external_id,
                "metadata": t.metadata,
                "source": t.source.to_string(),
            }),
        ),
        Op::UpdateTeam { id, changes } => {
            let (b, a) = changes_maps(changes);
            (team_target(plan, *id), b, a)
        }
        Op::DeleteTeam { id } => (team_target(plan, *id), json!({"exists": true}), Value::Null),
        Op::AddMember { team_id, user_id } => (
            membership_target(plan, *team_id, *user_id),
            Value::Null,
            json!({"source": plan.source.to_string()}),
        ),
        Op::RemoveMember { team_id, user_id } => (
            membership_target(plan, *team_id, *user_id),
            json!({"member": true}),
            Value::Null,
        ),
        Op::BlockKeys { user_id } => (
            keys_target(plan, Some(*user_id), None),
            json!({"blocked_by": null}),
            json!({"blocked_by": "provisioning"}),
        ),
        Op::UnblockKeys { user_id } => (
            keys_target(plan, Some(*user_id), None),
            json!({"blocked_by": "provisioning"}),
            json!({"blocked_by": null}),
        ),
        Op::PurgeKeys {
            user_id,
            team_id,
            reason,
        } => {
            let mut target = keys_target(plan, *user_id, *team_id);
            target["reason"] = json!(reason.as_str());
            (target, json!({"keys": "present"}), Value::Null)
        }
    };
    OpRecord {
        kind,
        target,
        before,
        after,
    }
}

pub(super) fn membership_target(plan: &Plan, team: Uuid, user: Uuid) -> Value {
    json!({
        "type": "membership",
        "team_id": team,
        "team": plan.team_label(team),
        "user_id": user,
        "user_name": plan.user_label(user),
    })
}

pub(super) fn keys_target(plan: &Plan, user: Option<Uuid>, team: Option<Uuid>) -> Value {
    let mut t = Map::new();
    t.insert("type".into(), json!("keys"));
    if let Some(u) = user {
        t.insert("user_id".into(), json!(u));
        t.insert("user_name".into(), json!(plan.user_label(u)));
    }
    if let Some(team) = team {
        t.insert("team_id".into(), json!(team));
        t.insert("team".into(), json!(plan.team_label(team)));
    }
    Value::Object(t)
}
