use super::rows::uuid;
use super::{format_ts, parse_ts, Store, StoreResult, WriteTx};
use crate::domain::Trigger;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use sqlx::Row;
use std::collections::HashMap;
use uuid::Uuid;

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

/// The owner of a key an audit entry names (`key:<id>`), live or revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub prefix: String,
    pub user_id: Uuid,
    /// None once the user is deleted.
    pub user_name: Option<String>,
    pub team_id: Option<Uuid>,
    pub team_name: Option<String>,
}

/// Current names of the users, teams and keys a page of audit entries names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditNames {
    pub users: HashMap<Uuid, String>,
    pub teams: HashMap<Uuid, String>,
    pub keys: HashMap<Uuid, KeyOwner>,
}

/// `$from, $from+1, ...` for `count` parameters.
fn numbered(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Names for the ids a page of audit entries carries, in one query whatever the
    /// page holds: an operator listing thousands of entries costs one round trip per
    /// page, not one per row. Ids no longer in the store are simply absent. Keys are
    /// looked up among live and revoked keys alike, with their owner's and team's names.
    /// Callers keep each list to a page's worth (a few hundred): every id is one
    /// parameter, and keys take two.
    pub async fn audit_names(
        &self,
        users: &[Uuid],
        teams: &[Uuid],
        keys: &[Uuid],
    ) -> StoreResult<AuditNames> {
        // Every branch has the same columns; NULLs are cast so that PostgreSQL types
        // the union's columns as text.
        const NONE: &str = "CAST(NULL AS TEXT)";
        let mut branches = Vec::new();
        let mut args: Vec<String> = Vec::new();
        if !users.is_empty() {
            branches.push(format!(
                "SELECT CAST('user' AS TEXT) AS kind, id, user_name AS name, {NONE} AS prefix, \
                 {NONE} AS user_id, {NONE} AS team_id, {NONE} AS team_name \
                 FROM users WHERE id IN ({})",
                numbered(args.len() + 1, users.len())
            ));
            args.extend(users.iter().map(Uuid::to_string));
        }
        if !teams.is_empty() {
            branches.push(format!(
                "SELECT CAST('team' AS TEXT) AS kind, id, display_name AS name, {NONE} AS prefix, \
                 {NONE} AS user_id, {NONE} AS team_id, {NONE} AS team_name \
                 FROM teams WHERE id IN ({})",
                numbered(args.len() + 1, teams.len())
            ));
            args.extend(teams.iter().map(Uuid::to_string));
        }
        if !keys.is_empty() {
            let live = numbered(args.len() + 1, keys.len());
            let revoked = numbered(args.len() + keys.len() + 1, keys.len());
            branches.push(format!(
                "SELECT CAST('key' AS TEXT) AS kind, k.id, u.user_name AS name, k.prefix, \
                 k.user_id, k.team_id, t.display_name AS team_name \
                 FROM (SELECT id, user_id, team_id, prefix FROM api_keys WHERE id IN ({live}) \
                       UNION ALL \
                       SELECT id, user_id, team_id, prefix FROM deleted_api_keys WHERE id IN ({revoked})) k \
                 LEFT JOIN users u ON u.id = k.user_id LEFT JOIN teams t ON t.id = k.team_id"
            ));
            args.extend(keys.iter().map(Uuid::to_string));
            args.extend(keys.iter().map(Uuid::to_string));
        }
        let mut names = AuditNames::default();
        if branches.is_empty() {
            return Ok(names);
        }
        let sql = branches.join(" UNION ALL ");
        let mut query = sqlx::query(&sql);
        for arg in args {
            query = query.bind(arg);
        }
        for row in query.fetch_all(self.pool()).await? {
            let kind: String = row.try_get("kind")?;
            let id: String = row.try_get("id")?;
            let name: Option<String> = row.try_get("name")?;
            match kind.as_str() {
                "user" => {
                    names
                        .users
                        .insert(uuid("users", &id)?, name.unwrap_or_default());
                }
                "team" => {
                    names
                        .teams
                        .insert(uuid("teams", &id)?, name.unwrap_or_default());
                }
                _ => {
                    let user_id: Option<String> = row.try_get("user_id")?;
                    let team_id: Option<String> = row.try_get("team_id")?;
                    names.keys.insert(
                        uuid("api_keys", &id)?,
                        KeyOwner {
                            prefix: row
                                .try_get::<Option<String>, _>("prefix")?
                                .unwrap_or_default(),
                            user_id: uuid("api_keys", user_id.as_deref().unwrap_or_default())?,
                            user_name: name,
                            team_id: team_id
                                .as_deref()
                                .map(|t| uuid("api_keys", t))
                                .transpose()?,
                            team_name: row.try_get("team_name")?,
                        },
                    );
                }
            }
        }
        Ok(names)
    }
}
