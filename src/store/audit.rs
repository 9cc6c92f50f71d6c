use super::{format_ts, parse_ts, Store, StoreResult, WriteTx};
use crate::domain::Trigger;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use sqlx::Row;

/// One applied operation, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub trigger: String,
    pub actor: String,
    pub operation: String,
    pub target: String,
    pub detail: serde_json::Value,
}

impl WriteTx {
    pub async fn audit(
        &mut self,
        trigger: Trigger,
        actor: &str,
        operation: &str,
        target: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, trigger, actor, operation, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(format_ts(super::now()))
        .bind(trigger.as_str())
        .bind(actor.to_owned())
        .bind(operation.to_owned())
        .bind(target.to_owned())
        .bind(detail.to_string())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

/// One audit entry with its row id, as `scimsync audit export` writes it: the id
/// increases with every entry, so a shipper that exports overlapping windows can
/// drop the entries it already has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedEntry {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

const SELECT_SINCE: &str = "SELECT id, at, trigger, actor, operation, target, detail \
                            FROM audit_log WHERE at >= $1 ORDER BY id";

pub(super) fn entry_of(row: &sqlx::any::AnyRow) -> StoreResult<ExportedEntry> {
    let at: String = row.try_get("at")?;
    let detail: String = row.try_get("detail")?;
    Ok(ExportedEntry {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at: parse_ts("audit_log", &at)?,
            trigger: row.try_get("trigger")?,
            actor: row.try_get("actor")?,
            operation: row.try_get("operation")?,
            target: row.try_get("target")?,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        },
    })
}

impl Store {
    /// Audit entries at or after `since`, oldest first.
    pub async fn audit_since(&self, since: Option<DateTime<Utc>>) -> StoreResult<Vec<AuditEntry>> {
        let since = since.map(format_ts).unwrap_or_default();
        let rows = sqlx::query(SELECT_SINCE)
            .bind(since)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| entry_of(row).map(|e| e.entry))
            .collect()
    }

    /// [`Store::audit_since`] one entry at a time, as the database returns them, so
    /// that a log of any size is exported in constant memory. On SQLite it reads one
    /// snapshot: entries committed meanwhile are left for the next export.
    pub fn audit_stream(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> BoxStream<'_, StoreResult<ExportedEntry>> {
        let since = since.map(format_ts).unwrap_or_default();
        sqlx::query(SELECT_SINCE)
            .bind(since)
            .fetch(self.pool())
            .map(|row| entry_of(&row?))
            .boxed()
    }
}
