//! `quarantined_plans`: plans a guard refused in a scheduled or sign-in sync, each
//! waiting for an operator's decision (`scimsync plans`). At most one per IdP is
//! pending; the engine writes them, in the transactions that decide about them.
//!
//! A plan of a million operations is megabytes: lists read only the small columns,
//! and the plan, its rendering and its snapshot are read by id.

use super::{format_ts, parse_ts, Store, StoreResult, WriteTx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::fmt;

/// A kept plan, without its large columns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantinedPlan {
    pub id: i64,
    pub idp: String,
    /// What made the plan: `sync` (a scheduled or one-off pull), `sso` (a sign-in), or
    /// `cli` (an approval that had to plan again).
    pub trigger: String,
    /// Why it is kept: the guard's refusal, and whether it was planned again.
    pub reason: String,
    /// The store's state the plan was made against (`reconcile::fingerprint`).
    pub fingerprint: String,
    pub created: DateTime<Utc>,
    pub decided: Option<DateTime<Utc>>,
    /// `approved`, `rejected`, `superseded` (a later refusal or a re-plan replaced it).
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub superseded_by: Option<i64>,
    /// What the plan would do, in a line; `None` for a plan kept before summaries
    /// were (`reconcile::summary` then makes one from the plan).
    pub summary: Option<PlanSummary>,
}

/// How many removals a [`PlanSummary`] names; the rest are counted.
pub const SUMMARY_NAMES: usize = 5;

/// A kept plan in a line: its counts and the first of its removals by name, which is
/// what an operator deciding about it looks for first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub add: u64,
    pub change: u64,
    pub destroy: u64,
    /// Deactivations, deletions and membership removals (deactivations are counted
    /// as changes above, yet are what the guard holds back).
    pub removals: u64,
    /// The first removals (at most [`SUMMARY_NAMES`]), users before teams before
    /// memberships, each by name.
    pub removes: Vec<Removal>,
}

/// One removal a plan makes, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Removal {
    DeactivateUser { user: String },
    DeleteUser { user: String },
    DeleteTeam { team: String },
    RemoveMember { user: String, team: String },
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removal::DeactivateUser { user } => write!(f, "{user} (deactivate)"),
            Removal::DeleteUser { user } => write!(f, "{user} (delete)"),
            Removal::DeleteTeam { team } => write!(f, "team {team:?}"),
            Removal::RemoveMember { user, team } => write!(f, "{user} from {team:?}"),
        }
    }
}

impl PlanSummary {
    /// `1 to add, 4 to change, 0 to destroy`, as the plan's own summary line counts.
    pub fn counts(&self) -> String {
        format!(
            "{} to add, {} to change, {} to destroy",
            self.add, self.change, self.destroy
        )
    }

    /// The removals named, and how many more there are: `bob (deactivate), carol
    /// (deactivate) and 2 more`; `None` when the plan removes nothing.
    pub fn removes_line(&self) -> Option<String> {
        if self.removals == 0 {
            return None;
        }
        let named: Vec<String> = self.removes.iter().map(ToString::to_string).collect();
        let more = self.removals.saturating_sub(named.len() as u64);
        Some(match (named.is_empty(), more) {
            (true, _) => format!("{more} removals"),
            (false, 0) => named.join(", "),
            (false, more) => format!("{} and {more} more", named.join(", ")),
        })
    }
}

impl fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.counts())?;
        if let Some(removes) = self.removes_line() {
            write!(f, "; removes {removes}")?;
        }
        Ok(())
    }
}

impl QuarantinedPlan {
    pub fn is_pending(&self) -> bool {
        self.decided.is_none()
    }
}

/// A kept plan's large columns.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedBody {
    /// The plan, as `reconcile::Plan` serializes (the format of `plan --out`).
    pub plan: String,
    /// The plan as `scimsync plan` shows it, without colour.
    pub rendered: String,
    /// The desired state the plan was made from, as a snapshot (docs/snapshot.md).
    pub snapshot: String,
}

/// A plan to keep.
#[derive(Debug, Clone, Copy)]
pub struct NewQuarantinedPlan<'a> {
    pub idp: &'a str,
    pub trigger: &'a str,
    pub reason: &'a str,
    pub fingerprint: &'a str,
    pub plan: &'a str,
    pub rendered: &'a str,
    pub snapshot: &'a str,
    pub summary: &'a PlanSummary,
}

const COLUMNS: &str = "id, idp, trigger, reason, fingerprint, created, decided, decision, \
                       decided_by, superseded_by, summary";

fn from_row(row: &sqlx::any::AnyRow) -> StoreResult<QuarantinedPlan> {
    let ts = |name: &str| -> StoreResult<Option<DateTime<Utc>>> {
        let raw: Option<String> = row.try_get(name)?;
        raw.map(|r| parse_ts("quarantined_plans", &r)).transpose()
    };
    let created: String = row.try_get("created")?;
    // A summary that does not read (written by another version) is only a
    // shortcut missed: the plan itself is summarised instead.
    let summary: Option<String> = row.try_get("summary")?;
    let summary = summary.and_then(|s| serde_json::from_str(&s).ok());
    Ok(QuarantinedPlan {
        id: row.try_get("id")?,
        idp: row.try_get("idp")?,
        trigger: row.try_get("trigger")?,
        reason: row.try_get("reason")?,
        fingerprint: row.try_get("fingerprint")?,
        created: parse_ts("quarantined_plans", &created)?,
        decided: ts("decided")?,
        decision: row.try_get("decision")?,
        decided_by: row.try_get("decided_by")?,
        superseded_by: row.try_get("superseded_by")?,
        summary,
    })
}

fn body_of(row: &sqlx::any::AnyRow) -> StoreResult<QuarantinedBody> {
    Ok(QuarantinedBody {
        plan: row.try_get("plan")?,
        rendered: row.try_get("rendered")?,
        snapshot: row.try_get("snapshot")?,
    })
}

impl Store {
    /// Kept plans, newest first: those awaiting a decision, or with `all` every one.
    pub async fn quarantined_plans(&self, all: bool) -> StoreResult<Vec<QuarantinedPlan>> {
        let filter = if all { "" } else { "WHERE decided IS NULL" };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM quarantined_plans {filter} ORDER BY id DESC"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Decided plans, newest first, `limit` from `offset`, and how many there are.
    pub async fn decided_quarantined_plans(
        &self,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<QuarantinedPlan>, u64)> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM quarantined_plans WHERE decided IS NOT NULL \
             ORDER BY id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM quarantined_plans WHERE decided IS NOT NULL")
                .fetch_one(self.pool())
                .await?
                .try_get("n")?;
        let plans = rows.iter().map(from_row).collect::<StoreResult<_>>()?;
        Ok((plans, u64::try_from(total).unwrap_or(0)))
    }

    /// One kept plan with its large columns.
    pub async fn quarantined_plan(
        &self,
        id: i64,
    ) -> StoreResult<Option<(QuarantinedPlan, QuarantinedBody)>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, plan, rendered, snapshot FROM quarantined_plans WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| Ok((from_row(&row)?, body_of(&row)?)))
            .transpose()
    }

    /// How many plans await a decision, per IdP (IdPs with none are left out).
    pub async fn pending_quarantine_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT idp, COUNT(*) AS pending FROM quarantined_plans WHERE decided IS NULL \
             GROUP BY idp ORDER BY idp",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("idp")?, row.try_get("pending")?)))
            .collect()
    }
}

impl WriteTx {
    /// The plan of `idp` awaiting a decision, with its large columns.
    pub async fn pending_quarantined_plan(
        &mut self,
        idp: &str,
    ) -> StoreResult<Option<(QuarantinedPlan, QuarantinedBody)>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, plan, rendered, snapshot FROM quarantined_plans \
             WHERE idp = $1 AND decided IS NULL"
        ))
        .bind(idp.to_owned())
        .fetch_optional(self.conn())
        .await?;
        row.map(|row| Ok((from_row(&row)?, body_of(&row)?)))
            .transpose()
    }

    /// One kept plan, read in the transaction that decides about it.
    pub async fn quarantined_plan(
        &mut self,
        id: i64,
    ) -> StoreResult<Option<(QuarantinedPlan, QuarantinedBody)>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, plan, rendered, snapshot FROM quarantined_plans WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.conn())
        .await?;
        row.map(|row| Ok((from_row(&row)?, body_of(&row)?)))
            .transpose()
    }

    /// Keeps a plan, pending; returns its id. The IdP must have no pending plan left
    /// (decide about it first).
    pub async fn insert_quarantined_plan(
        &mut self,
        new: NewQuarantinedPlan<'_>,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let row = sqlx::query(
            "INSERT INTO quarantined_plans (idp, trigger, reason, fingerprint, plan, rendered, \
             snapshot, created, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING id",
        )
        .bind(new.idp.to_owned())
        .bind(new.trigger.to_owned())
        .bind(new.reason.to_owned())
        .bind(new.fingerprint.to_owned())
        .bind(new.plan.to_owned())
        .bind(new.rendered.to_owned())
        .bind(new.snapshot.to_owned())
        .bind(format_ts(at))
        .bind(serde_json::to_string(new.summary).ok())
        .fetch_one(self.conn())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Records the decision about a pending plan. False when it was no longer pending.
    pub async fn decide_quarantined_plan(
        &mut self,
        id: i64,
        decision: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE quarantined_plans SET decided = $1, decision = $2, decided_by = $3 \
             WHERE id = $4 AND decided IS NULL",
        )
        .bind(format_ts(at))
        .bind(decision.to_owned())
        .bind(by.to_owned())
        .bind(id)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Points a superseded plan at the one that replaced it.
    pub async fn mark_superseded_by(&mut self, id: i64, by: i64) -> StoreResult<()> {
        sqlx::query("UPDATE quarantined_plans SET superseded_by = $1 WHERE id = $2")
            .bind(by)
            .bind(id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// A pending plan refused again with the very same operations: it stays the plan
    /// the operator reviews, now against the store as it is.
    pub async fn refresh_quarantined_plan(
        &mut self,
        id: i64,
        fingerprint: &str,
        plan: &str,
        snapshot: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE quarantined_plans SET fingerprint = $1, plan = $2, snapshot = $3 \
             WHERE id = $4 AND decided IS NULL",
        )
        .bind(fingerprint.to_owned())
        .bind(plan.to_owned())
        .bind(snapshot.to_owned())
        .bind(id)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
