//! `plans list`: one line per kept plan, saying what it would do by name.

use super::{or_dash, Cell, Table, Tone};
use crate::store::format_ts;
use crate::store::quarantine::QuarantinedPlan;

/// A plan's status in a few words, toned: pending needs a look.
pub fn status(p: &QuarantinedPlan) -> Cell {
    match (&p.decision, &p.decided_by, p.superseded_by) {
        (None, _, _) => Cell::new("pending", Tone::Warn),
        (Some(d), by, next) => {
            let by = by.as_deref().unwrap_or("?");
            let text = match next {
                Some(next) => format!("{d} by {by} (see plan {next})"),
                None => format!("{d} by {by}"),
            };
            let tone = match d.as_str() {
                "approved" => Tone::Good,
                "rejected" => Tone::Bad,
                _ => Tone::Dim,
            };
            Cell::new(text, tone)
        }
    }
}

/// The `plans list` table: what each plan would do, counts and the first names it
/// removes; `wide` adds when it was decided and why it was kept (the guard's refusal,
/// a long line).
pub fn plans_table(plans: &[QuarantinedPlan], wide: bool) -> Table {
    let mut table = if wide {
        Table::new([
            "ID", "IDP", "TRIGGER", "CREATED", "STATUS", "DECIDED", "SUMMARY", "REASON",
        ])
    } else {
        Table::new(["ID", "IDP", "TRIGGER", "CREATED", "STATUS", "SUMMARY"])
    };
    for p in plans {
        let mut row = vec![
            Cell::from(p.id.to_string()),
            Cell::from(p.idp.clone()),
            Cell::from(p.trigger.clone()),
            Cell::from(format_ts(p.created)),
            status(p),
        ];
        if wide {
            row.push(or_dash(p.decided.map(format_ts)));
        }
        row.push(match &p.summary {
            Some(summary) => Cell::from(summary.to_string()),
            None => Cell::new("(unreadable; see plans show)", Tone::Dim),
        });
        if wide {
            row.push(Cell::from(p.reason.clone()));
        }
        table.row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::quarantine::{PlanSummary, Removal};

    fn kept(id: i64, summary: Option<PlanSummary>) -> QuarantinedPlan {
        QuarantinedPlan {
            id,
            idp: "entra".into(),
            trigger: "sync".into(),
            reason: "refusing to delete or deactivate 4 of 5 managed users".into(),
            fingerprint: "f".into(),
            created: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            decided: None,
            decision: None,
            decided_by: None,
            superseded_by: None,
            summary,
        }
    }

    #[test]
    fn a_plan_reads_as_its_counts_and_the_names_it_removes() {
        let summary = PlanSummary {
            add: 1,
            change: 4,
            destroy: 1,
            removals: 7,
            removes: vec![
                Removal::DeactivateUser {
                    user: "bob@contoso.com".into(),
                },
                Removal::DeleteTeam {
                    team: "Evals".into(),
                },
                Removal::RemoveMember {
                    user: "carol@contoso.com".into(),
                    team: "LLM Users".into(),
                },
            ],
        };
        let text = plans_table(&[kept(7, Some(summary)), kept(8, None)], false).render(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "7   entra  sync     2023-11-14T22:13:20.000000Z  pending  1 to add, 4 to change, \
             1 to destroy; removes bob@contoso.com (deactivate), team \"Evals\", \
             carol@contoso.com from \"LLM Users\" and 4 more"
        );
        assert!(lines[2].ends_with("(unreadable; see plans show)"), "{text}");
        assert!(!text.contains("refusing"), "the reason is --wide's");
        let wide = plans_table(&[kept(7, None)], true).render(false);
        assert!(
            wide.contains("REASON") && wide.contains("refusing to delete"),
            "{wide}"
        );
    }
}
