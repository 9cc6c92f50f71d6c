//! What the admin console (src/ui) reads and writes beyond the lists every front end
//! shares: its sessions, the token changes it makes (each with its audit row, in one
//! transaction), and paged, filtered views of the audit log and the API keys.

use super::audit::ExportedEntry;
use super::keys::{key_from_row, KEY_COLUMNS};
use super::lists::Listed;
use super::{format_ts, is_unique_violation, now, parse_ts, Store, StoreError, StoreResult};
use crate::domain::{ApiKey, TokenScope, Trigger};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;
use std::time::Duration;

/// A signed-in console session: the admin token it was opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    pub token_name: String,
}

/// Why a session id names no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// Never was one, or signed out, or its token was revoked.
    Unknown,
    /// It saw no request for longer than the idle limit; it is gone now.
    Expired,
}

/// `last_seen` is refreshed at most this often: every page view would be a write.
const TOUCH_INTERVAL: Duration = Duration::from_secs(15);

fn ago(idle: Duration) -> DateTime<Utc> {
    now() - chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::MAX)
}

/// The audit log as the console filters it. Text filters match exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub trigger: Option<String>,
    pub actor: Option<String>,
    pub target: Option<TargetMatch>,
}

/// Which targets an audit filter keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetMatch {
    /// Exactly this target (`user:<id>`): one range of the target index, newest first.
    Exactly(String),
    /// Every target beginning with this (`user:` finds all users).
    StartsWith(String),
}

/// An API key with the names an operator recognises it by.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub key: ApiKey,
    pub user_name: String,
    pub team_name: Option<String>,
}

/// Which keys the console's Keys page lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyFilter {
    /// The start of the key's visible prefix or of its user's userName.
    pub search: Option<String>,
    /// Only keys that are blocked (`Some(true)`) or not (`Some(false)`).
    pub blocked: Option<bool>,
    /// Only keys scoped to this team.
    pub team: Option<uuid::Uuid>,
    /// Only this user's keys.
    pub user: Option<uuid::Uuid>,
}

/// Builds a WHERE clause with numbered parameters, all text.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    binds: Vec<String>,
}

impl Conditions {
    fn push(&mut self, clause: impl FnOnce(usize) -> String, value: String) {
        self.binds.push(value);
        self.clauses.push(clause(self.binds.len()));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            "1 = 1".to_owned()
        } else {
            self.clauses.join(" AND ")
        }
    }
}

/// The smallest text greater than every text that begins with `prefix`, for an
/// index range instead of a LIKE (whose wildcards would need escaping).
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl Store {
    /// Opens a console session for an admin token, audited as its sign-in. Sessions
    /// idle past `idle` are removed in the same transaction.
    pub async fn open_ui_session(
        &self,
        hash: &str,
        token_name: &str,
        idle: Duration,
    ) -> StoreResult<()> {
        let at = now();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM ui_sessions WHERE last_seen < $1")
            .bind(format_ts(ago(idle)))
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "INSERT INTO ui_sessions (hash, token_name, created, last_seen) VALUES ($1, $2, $3, $3)",
        )
        .bind(hash.to_owned())
        .bind(token_name.to_owned())
        .bind(format_ts(at))
        .execute(tx.conn())
        .await?;
        tx.audit(
            Trigger::Ui,
            &ui_actor(token_name),
            "ui_sign_in",
            &format!("token:{token_name}"),
            &json!({}),
        )
        .await?;
        tx.commit().await
    }

    /// The session a cookie's hash names, if its admin token is still valid and it
    /// has not been idle longer than `idle`; seeing it counts as activity.
    pub async fn ui_session(
        &self,
        hash: &str,
        idle: Duration,
    ) -> StoreResult<Result<UiSession, NoSession>> {
        let row = sqlx::query(
            "SELECT s.token_name, s.last_seen FROM ui_sessions s \
             JOIN scim_tokens t ON t.name = s.token_name \
             WHERE s.hash = $1 AND t.revoked IS NULL AND t.scope = $2",
        )
        .bind(hash.to_owned())
        .bind(TokenScope::Admin.as_str())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Err(NoSession::Unknown));
        };
        let last_seen: String = row.try_get("last_seen")?;
        let last_seen = parse_ts("ui_sessions", &last_seen)?;
        let session = UiSession {
            token_name: row.try_get("token_name")?,
        };
        if last_seen < ago(idle) {
            self.end_ui_session(hash).await?;
            return Ok(Err(NoSession::Expired));
        }
        if last_seen < ago(TOUCH_INTERVAL) {
            let mut tx = self.begin_write().await?;
            sqlx::query("UPDATE ui_sessions SET last_seen = $1 WHERE hash = $2")
                .bind(format_ts(now()))
                .bind(hash.to_owned())
                .execute(tx.conn())
                .await?;
            tx.commit().await?;
        }
        Ok(Ok(session))
    }

    /// Ends a session (sign-out, or found expired). False when there was none.
    pub async fn end_ui_session(&self, hash: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM ui_sessions WHERE hash = $1")
            .bind(hash.to_owned())
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Writes one audit row for a console action that changes nothing else (a sign-out).
    pub async fn audit_ui_action(
        &self,
        token_name: &str,
        operation: &str,
        target: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        tx.audit(
            Trigger::Ui,
            &ui_actor(token_name),
            operation,
            target,
            detail,
        )
        .await?;
        tx.commit().await
    }

    /// Mints a token for the console's admin, audited in the same transaction. The
    /// returned secret is the only copy.
    pub async fn issue_token_audited(
        &self,
        name: &str,
        scope: TokenScope,
        idp: &str,
        admin: &str,
    ) -> StoreResult<crate::keys::Secret> {
        let secret = crate::keys::mint_token();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO scim_tokens (name, scope, idp, hash, created) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name.to_owned())
        .bind(scope.as_str())
        .bind(idp.to_owned())
        .bind(crate::keys::hash_secret(secret.expose()))
        .bind(format_ts(now()))
        .execute(tx.conn())
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("a token named {name:?}")))
            }
            Err(e) => return Err(e.into()),
        }
        tx.audit(
            Trigger::Ui,
            &ui_actor(admin),
            "create_token",
            &format!("token:{name}"),
            &json!({"scope": scope.as_str(), "idp": idp}),
        )
        .await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// Revokes a token for the console's admin, audited in the same transaction.
    /// False when no unrevoked token has that name.
    pub async fn revoke_token_audited(&self, name: &str, admin: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("UPDATE scim_tokens SET revoked = $1 WHERE name = $2 AND revoked IS NULL")
                .bind(format_ts(now()))
                .bind(name.to_owned())
                .execute(tx.conn())
                .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        tx.audit(
            Trigger::Ui,
            &ui_actor(admin),
            "revoke_token",
            &format!("token:{name}"),
            &json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Up to `limit` audit entries matching `filter`, newest first, older than the
    /// entry `before` (a row id) when given. Paging by id rather than by offset keeps a
    /// deep page as cheap as the first.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<ExportedEntry>> {
        let mut conditions = Conditions::default();
        if let Some(since) = filter.since {
            conditions.push(|n| format!("at >= ${n}"), format_ts(since));
        }
        if let Some(until) = filter.until {
            conditions.push(|n| format!("at < ${n}"), format_ts(until));
        }
        if let Some(trigger) = &filter.trigger {
            conditions.push(|n| format!("trigger = ${n}"), trigger.clone());
        }
        if let Some(actor) = &filter.actor {
            conditions.push(|n| format!("actor = ${n}"), actor.clone());
        }
        match &filter.target {
            Some(TargetMatch::Exactly(target)) => {
                conditions.push(|n| format!("target = ${n}"), target.clone());
            }
            Some(TargetMatch::StartsWith(prefix)) => {
                conditions.push(|n| format!("target >= ${n}"), prefix.clone());
                conditions.push(|n| format!("target < ${n}"), prefix_end(prefix));
            }
            None => {}
        }
        let mut sql = format!(
            "SELECT id, at, trigger, actor, operation, target, detail FROM audit_log WHERE {}",
            conditions.sql()
        );
        if before.is_some() {
            sql.push_str(&format!(" AND id < ${}", conditions.binds.len() + 1));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.max(1)));
        let mut query = sqlx::query(&sql);
        for value in conditions.binds {
            query = query.bind(value);
        }
        if let Some(before) = before {
            query = query.bind(before);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(super::audit::entry_of).collect()
    }

    /// One API key by id, with its names.
    pub async fn key_row(&self, id: uuid::Uuid) -> StoreResult<Option<KeyRow>> {
        let row = sqlx::query(&format!(
            "SELECT {}, u.user_name AS owner_name, t.display_name AS team_name \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             LEFT JOIN teams t ON t.id = k.team_id WHERE k.id = $1",
            qualified_key_columns()
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(key_row_of).transpose()
    }

    /// One page of API keys, newest first, with their users' and teams' names.
    pub async fn keys_page(
        &self,
        filter: &KeyFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Listed<KeyRow>> {
        let mut conditions = Conditions::default();
        if let Some(search) = filter.search.as_deref().filter(|s| !s.is_empty()) {
            let folded = search.to_lowercase();
            conditions.binds.push(search.to_owned());
            conditions.binds.push(prefix_end(search));
            conditions.binds.push(folded.clone());
            conditions.binds.push(prefix_end(&folded));
            conditions.clauses.push(
                "((k.prefix >= $1 AND k.prefix < $2) OR \
                 (u.user_name_folded >= $3 AND u.user_name_folded < $4))"
                    .to_owned(),
            );
        }
        if let Some(user) = filter.user {
            conditions.push(|n| format!("k.user_id = ${n}"), user.to_string());
        }
        if let Some(team) = filter.team {
            conditions.push(|n| format!("k.team_id = ${n}"), team.to_string());
        }
        match filter.blocked {
            Some(true) => conditions
                .clauses
                .push("k.blocked_by IS NOT NULL".to_owned()),
            Some(false) => conditions.clauses.push("k.blocked_by IS NULL".to_owned()),
            None => {}
        }
        let from = format!(
            "FROM api_keys k JOIN users u ON u.id = k.user_id \
             LEFT JOIN teams t ON t.id = k.team_id WHERE {}",
            conditions.sql()
        );
        let columns = qualified_key_columns();
        let page_sql = format!(
            "SELECT {columns}, u.user_name AS owner_name, t.display_name AS team_name {from} \
             ORDER BY k.created DESC, k.id LIMIT {} OFFSET {}",
            limit.max(1),
            offset
        );
        let count_sql = format!("SELECT COUNT(*) AS n {from}");
        let mut page = sqlx::query(&page_sql);
        let mut count = sqlx::query(&count_sql);
        for value in &conditions.binds {
            page = page.bind(value.clone());
            count = count.bind(value.clone());
        }
        let (rows, total) =
            tokio::try_join!(page.fetch_all(self.pool()), count.fetch_one(self.pool()))?;
        let total: i64 = total.try_get("n")?;
        let items = rows.iter().map(key_row_of).collect::<StoreResult<_>>()?;
        Ok(Listed {
            total: u64::try_from(total).unwrap_or(0),
            items,
        })
    }
}

fn qualified_key_columns() -> String {
    KEY_COLUMNS
        .split(',')
        .map(|c| format!("k.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_row_of(row: &sqlx::any::AnyRow) -> StoreResult<KeyRow> {
    Ok(KeyRow {
        key: key_from_row(row)?,
        user_name: row.try_get("owner_name")?,
        team_name: row.try_get("team_name")?,
    })
}

/// How the audit log names a console admin.
pub fn ui_actor(token_name: &str) -> String {
    format!("ui:{token_name}")
}
