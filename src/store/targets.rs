//! The downstream targets' tables: the outbox an applied plan fills (in its own
//! transaction) and the worker in src/target/ empties, and the links between our ids
//! and a target's.

use super::rows::get_bool;
use super::{format_ts, parse_ts, Store, StoreResult, WriteTx};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// One change waiting for a target.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub target: String,
    /// `user:ID`, `team:ID` or `member:TEAM:USER`.
    pub object: String,
    pub op: String,
    pub payload: serde_json::Value,
    pub created: DateTime<Utc>,
    pub attempts: i64,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// A change to enqueue: what it is about and what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxRow {
    pub object: String,
    pub op: &'static str,
    pub payload: serde_json::Value,
}

/// Refusals after which an outbox row is a dead letter: never tried again, counted
/// apart, cleared by a drift repair that succeeds (src/target/worker.rs).
pub const OUTBOX_DEAD_AFTER: i64 = 12;

/// Our object → the target's id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLink {
    pub kind: String,
    pub local_id: String,
    pub remote_id: String,
    /// Created by scimsync (may be changed and deleted); false for an adopted object.
    pub managed: bool,
}

/// Rows per INSERT: 6 parameters each, far below either backend's limit.
const OUTBOX_CHUNK: usize = 500;

impl WriteTx {
    /// Enqueues `rows` for every target in `targets`, in this transaction.
    pub async fn enqueue_outbox(
        &mut self,
        targets: &[String],
        rows: &[NewOutboxRow],
    ) -> StoreResult<()> {
        let now = format_ts(super::now());
        for target in targets {
            for chunk in rows.chunks(OUTBOX_CHUNK) {
                let mut sql = String::from(
                    "INSERT INTO target_outbox \
                     (target, object, op, payload, created, next_attempt) VALUES ",
                );
                for i in 0..chunk.len() {
                    let b = i * 6;
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6
                    ));
                }
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = query
                        .bind(target.clone())
                        .bind(row.object.clone())
                        .bind(row.op.to_owned())
                        .bind(row.payload.to_string())
                        .bind(now.clone())
                        .bind(now.clone());
                }
                query.execute(self.conn()).await?;
            }
        }
        Ok(())
    }
}

impl Store {
    /// The rows of `target` due at `now`: up to `fresh` never tried (in commit order)
    /// and up to `retries` tried before (longest waiting first). Two shares, so that
    /// rows that keep failing cannot crowd out newer changes; dead letters
    /// ([`OUTBOX_DEAD_AFTER`]) are never returned.
    pub async fn outbox_due(
        &self,
        target: &str,
        now: DateTime<Utc>,
        fresh: i64,
        retries: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        const COLUMNS: &str =
            "id, target, object, op, payload, created, attempts, next_attempt, last_error";
        let now = format_ts(now);
        let mut rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM target_outbox WHERE target = $1 AND attempts = 0 \
             AND next_attempt <= $2 ORDER BY id LIMIT $3"
        ))
        .bind(target.to_owned())
        .bind(now.clone())
        .bind(fresh)
        .fetch_all(self.pool())
        .await?;
        rows.extend(
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM target_outbox WHERE target = $1 AND attempts > 0 \
                 AND attempts < $2 AND next_attempt <= $3 ORDER BY next_attempt, id LIMIT $4"
            ))
            .bind(target.to_owned())
            .bind(OUTBOX_DEAD_AFTER)
            .bind(now)
            .bind(retries)
            .fetch_all(self.pool())
            .await?,
        );
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload")?;
                let created: String = row.try_get("created")?;
                let next_attempt: String = row.try_get("next_attempt")?;
                Ok(OutboxRow {
                    id: row.try_get("id")?,
                    target: row.try_get("target")?,
                    object: row.try_get("object")?,
                    op: row.try_get("op")?,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                    created: parse_ts("target_outbox", &created)?,
                    attempts: row.try_get("attempts")?,
                    next_attempt: parse_ts("target_outbox", &next_attempt)?,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }

    /// Delivered rows go away.
    pub async fn outbox_delivered(&self, ids: &[i64]) -> StoreResult<()> {
        for chunk in ids.chunks(OUTBOX_CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "DELETE FROM target_outbox WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// A failed delivery of the rows `ids` (one object's): tried again at
    /// `next_attempt`, or, `dead`, never again (a dead letter). `error` must hold no
    /// secret.
    pub async fn outbox_failed(
        &self,
        ids: &[i64],
        next_attempt: DateTime<Utc>,
        dead: bool,
        error: &str,
    ) -> StoreResult<()> {
        for chunk in ids.chunks(OUTBOX_CHUNK) {
            let placeholders: Vec<String> = (4..4 + chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE target_outbox SET attempts = CASE WHEN $1 > 0 THEN $1 ELSE attempts + 1 END, \
                 next_attempt = $2, last_error = $3 WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql)
                .bind(if dead { OUTBOX_DEAD_AFTER } else { 0 })
                .bind(format_ts(next_attempt))
                .bind(error.to_owned());
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// How many rows wait for `target` (dead letters aside), and when the oldest of
    /// them was written.
    pub async fn outbox_depth(&self, target: &str) -> StoreResult<(i64, Option<DateTime<Utc>>)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS depth, MIN(created) AS oldest FROM target_outbox \
             WHERE target = $1 AND attempts < $2",
        )
        .bind(target.to_owned())
        .bind(OUTBOX_DEAD_AFTER)
        .fetch_one(self.pool())
        .await?;
        let depth: i64 = row.try_get("depth")?;
        let oldest: Option<String> = row.try_get("oldest")?;
        let oldest = oldest
            .map(|at| parse_ts("target_outbox", &at))
            .transpose()?;
        Ok((depth, oldest))
    }

    /// How many dead letters `target` has.
    pub async fn outbox_dead(&self, target: &str) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS dead FROM target_outbox WHERE target = $1 AND attempts >= $2",
        )
        .bind(target.to_owned())
        .bind(OUTBOX_DEAD_AFTER)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("dead")?)
    }

    /// Drops the dead letters of `target`: a drift repair that succeeded has made the
    /// target agree with the store, which is what they were about.
    pub async fn outbox_clear_dead(&self, target: &str) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM target_outbox WHERE target = $1 AND attempts >= $2")
            .bind(target.to_owned())
            .bind(OUTBOX_DEAD_AFTER)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn target_link(
        &self,
        target: &str,
        kind: &str,
        local_id: &str,
    ) -> StoreResult<Option<TargetLink>> {
        let row = sqlx::query(
            "SELECT kind, local_id, remote_id, managed FROM target_links \
             WHERE target = $1 AND kind = $2 AND local_id = $3",
        )
        .bind(target.to_owned())
        .bind(kind.to_owned())
        .bind(local_id.to_owned())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(link_from_row).transpose()
    }

    pub async fn target_links(&self, target: &str) -> StoreResult<Vec<TargetLink>> {
        let rows = sqlx::query(
            "SELECT kind, local_id, remote_id, managed FROM target_links WHERE target = $1 \
             ORDER BY kind, local_id",
        )
        .bind(target.to_owned())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(link_from_row).collect()
    }

    pub async fn set_target_link(&self, target: &str, link: &TargetLink) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO target_links (target, kind, local_id, remote_id, managed) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target, kind, local_id) DO UPDATE SET \
             remote_id = excluded.remote_id, managed = excluded.managed",
        )
        .bind(target.to_owned())
        .bind(link.kind.clone())
        .bind(link.local_id.clone())
        .bind(link.remote_id.clone())
        .bind(link.managed)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn remove_target_link(
        &self,
        target: &str,
        kind: &str,
        local_id: &str,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM target_links WHERE target = $1 AND kind = $2 AND local_id = $3")
            .bind(target.to_owned())
            .bind(kind.to_owned())
            .bind(local_id.to_owned())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The links of `kind` among `local_ids`.
    pub async fn target_links_among(
        &self,
        target: &str,
        kind: &str,
        local_ids: &[String],
    ) -> StoreResult<Vec<TargetLink>> {
        let mut links = Vec::new();
        for chunk in local_ids.chunks(OUTBOX_CHUNK) {
            let placeholders: Vec<String> = (3..3 + chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT kind, local_id, remote_id, managed FROM target_links \
                 WHERE target = $1 AND kind = $2 AND local_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql)
                .bind(target.to_owned())
                .bind(kind.to_owned());
            for id in chunk {
                query = query.bind(id.clone());
            }
            for row in query.fetch_all(self.pool()).await? {
                links.push(link_from_row(&row)?);
            }
        }
        Ok(links)
    }

    /// Which of `users` are in the team now.
    pub async fn members_among(
        &self,
        team: uuid::Uuid,
        users: &[uuid::Uuid],
    ) -> StoreResult<Vec<uuid::Uuid>> {
        let mut members = Vec::new();
        for chunk in users.chunks(OUTBOX_CHUNK) {
            let placeholders: Vec<String> = (2..2 + chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT user_id FROM memberships WHERE team_id = $1 AND user_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(team.to_string());
            for user in chunk {
                query = query.bind(user.to_string());
            }
            for row in query.fetch_all(self.pool()).await? {
                let id: String = row.try_get("user_id")?;
                if let Ok(id) = uuid::Uuid::parse_str(&id) {
                    members.push(id);
                }
            }
        }
        Ok(members)
    }

    /// Whether the user is in the team now.
    pub async fn is_member(&self, team: uuid::Uuid, user: uuid::Uuid) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 AS m FROM memberships WHERE team_id = $1 AND user_id = $2")
            .bind(team.to_string())
            .bind(user.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }
}

fn link_from_row(row: &sqlx::any::AnyRow) -> StoreResult<TargetLink> {
    Ok(TargetLink {
        kind: row.try_get("kind")?,
        local_id: row.try_get("local_id")?,
        remote_id: row.try_get("remote_id")?,
        managed: get_bool(row, "managed")?,
    })
}
