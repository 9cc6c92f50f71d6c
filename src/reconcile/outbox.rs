//! What an applied plan leaves for the downstream targets: one outbox row per changed
//! user, team and membership. The rows name the object; the worker in src/target/
//! reads the object as it is when it delivers, so rows of one object may be merged or
//! repeated without harm. Key operations leave none: the target follows a user's
//! deactivation and deletion, which is what blocks and purges keys there.

use super::ops::{Op, Plan};
use crate::store::targets::NewOutboxRow;
use serde_json::json;

pub fn outbox_rows(plan: &Plan) -> Vec<NewOutboxRow> {
    plan.ops
        .iter()
        .filter_map(|op| {
            let object = match op {
                Op::CreateUser(u) => format!("user:{}", u.id),
                Op::UpdateUser { id, .. } | Op::DeactivateUser { id } | Op::DeleteUser { id } => {
                    format!("user:{id}")
                }
                Op::CreateTeam(t) => format!("team:{}", t.id),
                Op::UpdateTeam { id, .. } | Op::DeleteTeam { id } => format!("team:{id}"),
                Op::AddMember { team_id, user_id } | Op::RemoveMember { team_id, user_id } => {
                    format!("member:{team_id}:{user_id}")
                }
                Op::BlockKeys { .. } | Op::UnblockKeys { .. } | Op::PurgeKeys { .. } => {
                    return None
                }
            };
            let source = plan.source.to_string();
            Some(NewOutboxRow {
                object,
                op: op.kind().as_str(),
                payload: json!({"source": source}),
            })
        })
        .collect()
}
