//! A kept plan in a line ([`PlanSummary`]): its counts and the first of its removals
//! by name. Made when a plan is kept, so that lists (the console's Plans page,
//! `scimsync plans list`) need not read the plan; made from the plan itself for plans
//! kept before summaries were.

use super::ops::{Op, Plan};
use crate::store::quarantine::{
    PlanSummary, QuarantinedBody, QuarantinedPlan, Removal, SUMMARY_NAMES,
};
use crate::store::{Store, StoreResult};

/// The summary of `plan`: removals ordered users, then teams, then memberships, each
/// by name (case-insensitively), so the same plan always names the same ones.
pub fn summarize(plan: &Plan) -> PlanSummary {
    let user = |id| plan.user_label(id).into_owned();
    let team = |id| plan.team_label(id).into_owned();
    let mut removals: Vec<(u8, String, Removal)> = Vec::new();
    for op in &plan.ops {
        let removal = match op {
            Op::DeactivateUser { id } => Removal::DeactivateUser { user: user(*id) },
            Op::UpdateUser { id, .. } if op.is_removal() => {
                Removal::DeactivateUser { user: user(*id) }
            }
            Op::DeleteUser { id } => Removal::DeleteUser { user: user(*id) },
            Op::DeleteTeam { id } => Removal::DeleteTeam { team: team(*id) },
            Op::RemoveMember { team_id, user_id } => Removal::RemoveMember {
                user: user(*user_id),
                team: team(*team_id),
            },
            _ => continue,
        };
        let (rank, key) = match &removal {
            Removal::DeactivateUser { user } | Removal::DeleteUser { user } => (0, user.clone()),
            Removal::DeleteTeam { team } => (1, team.clone()),
            Removal::RemoveMember { user, team } => (2, format!("{user}\0{team}")),
        };
        removals.push((rank, key.to_lowercase(), removal));
    }
    let total = removals.len() as u64;
    // Only the first few are kept: a partial selection, not a sort of them all (an
    // emptied group can remove a hundred thousand memberships).
    if removals.len() > SUMMARY_NAMES {
        removals.select_nth_unstable_by(SUMMARY_NAMES, |a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        removals.truncate(SUMMARY_NAMES);
    }
    removals.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let counts = plan.counts();
    PlanSummary {
        add: counts.add as u64,
        change: counts.change as u64,
        destroy: counts.destroy as u64,
        removals: total,
        removes: removals.into_iter().map(|(_, _, r)| r).collect(),
    }
}

/// The summary of a kept plan from the plan itself; `None` when it cannot be read
/// (kept by another version: its rendering still shows what it does).
pub fn of_kept(body: &QuarantinedBody) -> Option<PlanSummary> {
    serde_json::from_str::<Plan>(&body.plan)
        .ok()
        .map(|plan| summarize(&plan))
}

/// Fills in the summaries of plans kept before summaries were, from their plans.
pub async fn fill_missing(store: &Store, plans: &mut [QuarantinedPlan]) -> StoreResult<()> {
    for kept in plans.iter_mut().filter(|p| p.summary.is_none()) {
        if let Some((_, body)) = store.quarantined_plan(kept.id).await? {
            kept.summary = of_kept(&body);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Source;
    use crate::reconcile::{Scope, FORMAT_VERSION};
    use uuid::Uuid;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn plan(ops: Vec<Op>) -> Plan {
        Plan {
            format_version: FORMAT_VERSION.to_owned(),
            source: Source::Sync("entra".into()),
            scope: Scope::Everything,
            fingerprint: None,
            ops,
            user_names: [(id(1), "Zoe@x"), (id(2), "bob@x"), (id(3), "alice@x")]
                .into_iter()
                .map(|(i, n)| (i, n.to_owned()))
                .collect(),
            team_names: [(id(10), "Evals".to_owned())].into_iter().collect(),
            warnings: Vec::new(),
            team_deletions: Default::default(),
            guard: None,
        }
    }

    #[test]
    fn a_summary_names_users_then_teams_then_memberships_in_name_order() {
        let mut ops = vec![Op::AddMember {
            team_id: id(10),
            user_id: id(1),
        }];
        // Many membership removals: only the first by name are named.
        ops.extend((100..110).rev().map(|n| Op::RemoveMember {
            team_id: id(10),
            user_id: id(n),
        }));
        ops.push(Op::DeleteTeam { id: id(10) });
        ops.push(Op::DeactivateUser { id: id(1) });
        ops.push(Op::DeleteUser { id: id(3) });
        let s = summarize(&plan(ops));
        assert_eq!((s.add, s.change, s.destroy, s.removals), (1, 1, 12, 13));
        let named: Vec<String> = s.removes.iter().map(ToString::to_string).collect();
        let first_member = format!("{} from \"Evals\"", id(100));
        assert_eq!(
            named,
            [
                "alice@x (delete)",
                "Zoe@x (deactivate)",
                "team \"Evals\"",
                first_member.as_str(),
                &format!("{} from \"Evals\"", id(101)),
            ]
        );
        assert_eq!(
            s.to_string(),
            format!(
                "1 to add, 1 to change, 12 to destroy; removes alice@x (delete), Zoe@x \
                 (deactivate), team \"Evals\", {first_member}, {} from \"Evals\" and 8 more",
                id(101)
            )
        );
    }

    #[test]
    fn a_plan_that_removes_nothing_says_only_its_counts() {
        let s = summarize(&plan(vec![Op::AddMember {
            team_id: id(10),
            user_id: id(2),
        }]));
        assert_eq!(s.to_string(), "1 to add, 0 to change, 0 to destroy");
        assert_eq!(s.removes_line(), None);
    }
}
