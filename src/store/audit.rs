use super::{format_ts, parse_ts, Store, StoreResult, WriteTx};
use crate::domain::Trigger;
use chrono::{DateTime, Utc};
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

impl Store {
    /// Audit entries at or after `since`, oldest first.
    pub async fn audit_since(&self, since: Option<DateTime<Utc>>) -> StoreResult<Vec<AuditEntry>> {
        let since = since.map(format_ts).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT at, trigger, actor, operation, target, detail FROM audit_log \
             WHERE at >= $1 ORDER BY id",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let at: String = row.try_get("at")?;
                let detail: String = row.try_get("detail")?;
                Ok(AuditEntry {
                    at: parse_ts("audit_log", &at)?,
                    trigger: row.try_get("trigger")?,
                    actor: row.try_get("actor")?,
                    operation: row.try_get("operation")?,
                    target: row.try_get("target")?,
                    detail: serde_json::from_str(&detail)
                        .unwrap_or(serde_json::Value::String(detail)),
                })
            })
            .collect()
    }
}
