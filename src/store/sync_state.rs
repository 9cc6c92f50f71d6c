//! `sync_state`: per IdP, when it was last pulled, the last success, the delta cursor
//! and base, what the last run did, and how many runs in a row have failed (for backoff).
//!
//! The delta base (megabytes for a large tenant) is read and written only by the
//! functions that need it, never with the rest of the row.

use super::{format_ts, parse_ts, Store, StoreResult, WriteTx};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncState {
    pub idp: String,
    pub last_pull: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    /// An opaque resume point for incremental pulls (Graph's deltaLink).
    pub delta_cursor: Option<String>,
    /// What the last run did (outcome, duration, counts, error), as JSON.
    pub last_result: Option<serde_json::Value>,
    pub consecutive_failures: i64,
}

const COLUMNS: &str =
    "idp, last_pull, last_success, delta_cursor, last_result, consecutive_failures";

fn from_row(row: &sqlx::any::AnyRow) -> StoreResult<SyncState> {
    let ts = |name: &str| -> StoreResult<Option<DateTime<Utc>>> {
        let raw: Option<String> = row.try_get(name)?;
        raw.map(|r| parse_ts("sync_state", &r)).transpose()
    };
    let result: Option<String> = row.try_get("last_result")?;
    Ok(SyncState {
        idp: row.try_get("idp")?,
        last_pull: ts("last_pull")?,
        last_success: ts("last_success")?,
        delta_cursor: row.try_get("delta_cursor")?,
        last_result: result
            .map(|r| serde_json::from_str(&r).unwrap_or(serde_json::Value::String(r))),
        consecutive_failures: row.try_get("consecutive_failures")?,
    })
}

impl Store {
    pub async fn sync_state(&self, idp: &str) -> StoreResult<Option<SyncState>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sync_state WHERE idp = $1"))
            .bind(idp.to_owned())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn sync_states(&self) -> StoreResult<Vec<SyncState>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM sync_state ORDER BY idp"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Records a run. A success resets the failure count and, when given, stores the
    /// new delta cursor; a failure counts up and keeps the last success and cursor.
    pub async fn record_sync(
        &self,
        idp: &str,
        at: DateTime<Utc>,
        success: bool,
        result: &serde_json::Value,
        delta_cursor: Option<&str>,
    ) -> StoreResult<SyncState> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sync_state (idp, last_pull, last_success, delta_cursor, last_result, \
             consecutive_failures) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (idp) DO UPDATE SET last_pull = excluded.last_pull, \
             last_success = COALESCE(excluded.last_success, sync_state.last_success), \
             delta_cursor = COALESCE(excluded.delta_cursor, sync_state.delta_cursor), \
             last_result = excluded.last_result, \
             consecutive_failures = CASE WHEN excluded.last_success IS NULL \
             THEN sync_state.consecutive_failures + 1 ELSE 0 END",
        )
        .bind(idp.to_owned())
        .bind(format_ts(at))
        .bind(success.then(|| format_ts(at)))
        .bind(delta_cursor.map(str::to_owned))
        .bind(result.to_string())
        .bind(if success { 0i64 } else { 1i64 })
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        self.sync_state(idp)
            .await?
            .ok_or_else(|| super::StoreError::NotFound(format!("sync_state of {idp}")))
    }

    /// The delta cursor and the base it belongs to, read together so that they come
    /// from the same run.
    pub async fn delta_base(&self, idp: &str) -> StoreResult<(Option<String>, Option<Vec<u8>>)> {
        let row = sqlx::query("SELECT delta_cursor, delta_base FROM sync_state WHERE idp = $1")
            .bind(idp.to_owned())
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => Ok((row.try_get("delta_cursor")?, row.try_get("delta_base")?)),
            None => Ok((None, None)),
        }
    }

    /// Forgets the delta cursor and base (after a 410 Gone, the next pull is a full one).
    pub async fn clear_delta_cursor(&self, idp: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE sync_state SET delta_cursor = NULL, delta_base = NULL WHERE idp = $1")
            .bind(idp.to_owned())
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }
}

impl WriteTx {
    /// Stores the delta base of a run, and its cursor, in the transaction that applies
    /// the run's plan: if the apply fails or is refused, the previous base stays.
    pub async fn save_delta_base(
        &mut self,
        idp: &str,
        cursor: &str,
        encoded: &[u8],
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sync_state (idp, delta_cursor, delta_base, consecutive_failures) \
             VALUES ($1, $2, $3, 0) ON CONFLICT (idp) DO UPDATE SET \
             delta_cursor = excluded.delta_cursor, delta_base = excluded.delta_base",
        )
        .bind(idp.to_owned())
        .bind(cursor.to_owned())
        .bind(encoded.to_vec())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
