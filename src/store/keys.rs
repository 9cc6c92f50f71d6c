use super::rows::uuid;
use super::{format_ts, now, parse_ts, Store, StoreError, StoreResult, WriteTx};
use crate::domain::{ApiKey, BlockedBy, PurgeReason, Role, Trigger, UserName};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

/// Who a valid API key belongs to: what the gateway needs on every request it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPrincipal {
    pub key_id: Uuid,
    pub user_id: Uuid,
    pub user_name: UserName,
    pub role: Role,
    pub team_id: Option<Uuid>,
}

pub(super) const KEY_COLUMNS: &str =
    "id, user_id, team_id, name, prefix, created, expires, blocked_by";

pub(super) fn key_from_row(row: &AnyRow) -> StoreResult<ApiKey> {
    const T: &str = "api_keys";
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let team_id: Option<String> = row.try_get("team_id")?;
    let created: String = row.try_get("created")?;
    let expires: Option<String> = row.try_get("expires")?;
    let blocked_by: Option<String> = row.try_get("blocked_by")?;
    Ok(ApiKey {
        id: uuid(T, &id)?,
        user_id: uuid(T, &user_id)?,
        team_id: team_id.as_deref().map(|t| uuid(T, t)).transpose()?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created: parse_ts(T, &created)?,
        expires: expires.as_deref().map(|t| parse_ts(T, t)).transpose()?,
        blocked_by: match blocked_by {
            None => None,
            Some(b) => Some(BlockedBy::parse(&b).ok_or_else(|| StoreError::Corrupt {
                table: T,
                detail: format!("blocked_by {b:?}"),
            })?),
        },
    })
}

/// A key with its owner's userName and its team's display name, for `key list`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedKey {
    pub key: ApiKey,
    pub user_name: String,
    /// None for a key without a team.
    pub team_name: Option<String>,
}

impl Store {
    /// Stores a new key. A team-scoped key needs its user to be a member of the team
    /// ([`StoreError::NotAMember`] otherwise), checked in the same transaction as the
    /// insert: writers are serialised, so no removal can slip in between.
    pub async fn list_keys(&self, user_id: Option<Uuid>) -> StoreResult<Vec<ApiKey>> {
        let rows = match user_id {
            Some(user) => {
                sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created, id"
                ))
                .bind(user.to_string())
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created, id"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(key_from_row).collect()
    }

    /// [`Store::list_keys`] with the names an operator reads, joined in the same query.
    pub async fn list_keys_named(&self, user_id: Option<Uuid>) -> StoreResult<Vec<NamedKey>> {
        let select = "SELECT k.id, k.user_id, k.team_id, k.name, k.prefix, k.created, k.expires, \
                      k.blocked_by, u.user_name AS owner_name, t.display_name AS team_name \
                      FROM api_keys k JOIN users u ON u.id = k.user_id \
                      LEFT JOIN teams t ON t.id = k.team_id";
        let rows = match user_id {
            Some(user) => {
                sqlx::query(&format!(
                    "{select} WHERE k.user_id = $1 ORDER BY k.created, k.id"
                ))
                .bind(user.to_string())
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!("{select} ORDER BY k.created, k.id"))
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter()
            .map(|row| {
                Ok(NamedKey {
                    key: key_from_row(row)?,
                    user_name: row.try_get("owner_name")?,
                    team_name: row.try_get("team_name")?,
                })
            })
            .collect()
    }

    /// Revokes one key: it leaves api_keys for deleted_api_keys. False when no such key.
    /// The gateway's per-request question: whom does this key belong to, if anyone?
    /// One indexed lookup by hash; blocked, expired and inactive-user keys answer nothing,
    /// and so does a team key whose user is not (or no longer) in that team: leaving a
    /// team with `purge_team_keys_on_removal = false`, or a hand-made row, must not
    /// leave the key vouching for the team's budget and models. The membership test is
    /// part of the query, so no answer can predate the membership's removal.
    pub async fn authenticate_key(
        &self,
        hash: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<KeyPrincipal>> {
        let row = sqlx::query(
            "SELECT k.id, k.user_id, k.team_id, k.expires, k.blocked_by, k.hash, u.user_name, u.role, u.active \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.hash = $1 AND (k.team_id IS NULL OR EXISTS ( \
                 SELECT 1 FROM memberships m WHERE m.team_id = k.team_id AND m.user_id = k.user_id))",
        )
        .bind(hash.to_owned())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("hash")?;
        let blocked_by: Option<String> = row.try_get("blocked_by")?;
        let expires: Option<String> = row.try_get("expires")?;
        let active = super::rows::get_bool(&row, "active")?;
        let expired = match expires {
            Some(t) => parse_ts("api_keys", &t)? <= at,
            None => false,
        };
        if !crate::keys::hashes_match(&stored, hash) || blocked_by.is_some() || expired || !active {
            return Ok(None);
        }
        let id: String = row.try_get("id")?;
        let user_id: String = row.try_get("user_id")?;
        let team_id: Option<String> = row.try_get("team_id")?;
        let user_name: String = row.try_get("user_name")?;
        let role: String = row.try_get("role")?;
        let corrupt = |e: crate::domain::NameError| StoreError::Corrupt {
            table: "users",
            detail: e.to_string(),
        };
        Ok(Some(KeyPrincipal {
            key_id: uuid("api_keys", &id)?,
            user_id: uuid("api_keys", &user_id)?,
            team_id: team_id
                .as_deref()
                .map(|t| uuid("api_keys", t))
                .transpose()?,
            user_name: UserName::parse(&user_name).map_err(corrupt)?,
            role: Role::parse(&role).map_err(corrupt)?,
        }))
    }
}

impl WriteTx {
    /// Stores a new key (its hash, never the secret). A team key's user must be in the
    /// team: checked in this transaction, so nothing can change it in between.
    pub async fn insert_key(&mut self, key: &ApiKey, hash: &str) -> StoreResult<()> {
        if let Some(team_id) = key.team_id {
            let member = sqlx::query(
                "SELECT 1 AS member FROM memberships WHERE team_id = $1 AND user_id = $2",
            )
            .bind(team_id.to_string())
            .bind(key.user_id.to_string())
            .fetch_optional(self.conn())
            .await?;
            if member.is_none() {
                return Err(StoreError::NotAMember);
            }
        }
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, team_id, name, prefix, hash, created, expires, blocked_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(key.id.to_string())
        .bind(key.user_id.to_string())
        .bind(key.team_id.map(|t| t.to_string()))
        .bind(key.name.clone())
        .bind(key.prefix.clone())
        .bind(hash.to_owned())
        .bind(format_ts(key.created))
        .bind(key.expires.map(format_ts))
        .bind(key.blocked_by.map(|b| b.as_str()))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Moves one key to the audit copies; how many moved (0: already gone).
    pub async fn purge_key(
        &mut self,
        id: Uuid,
        reason: PurgeReason,
        trigger: Trigger,
        actor: &str,
    ) -> StoreResult<u64> {
        self.purge_keys_where("id = $5", &[id.to_string()], reason, trigger, actor)
            .await
    }

    /// Moves matching keys to deleted_api_keys (without their hash) and deletes them.
    /// `condition` is a fixed SQL fragment over api_keys using `$5`, `$6`, ... for `args`.
    async fn purge_keys_where(
        &mut self,
        condition: &str,
        args: &[String],
        reason: PurgeReason,
        trigger: Trigger,
        actor: &str,
    ) -> StoreResult<u64> {
        let insert_sql = format!(
            "INSERT INTO deleted_api_keys (id, user_id, team_id, name, prefix, created, deleted, reason, trigger, actor) \
             SELECT id, user_id, team_id, name, prefix, created, $1, $2, $3, $4 FROM api_keys WHERE {condition}"
        );
        let mut insert = sqlx::query(&insert_sql)
            .bind(format_ts(now()))
            .bind(reason.as_str())
            .bind(trigger.as_str())
            .bind(actor.to_owned());
        for arg in args {
            insert = insert.bind(arg.clone());
        }
        insert.execute(self.conn()).await?;
        // Placeholders must appear in ascending order, so the DELETE renumbers its own.
        let delete_condition = condition.replace("$5", "$1").replace("$6", "$2");
        let delete_sql = format!("DELETE FROM api_keys WHERE {delete_condition}");
        let mut delete = sqlx::query(&delete_sql);
        for arg in args {
            delete = delete.bind(arg.clone());
        }
        let done = delete.execute(self.conn()).await?;
        Ok(done.rows_affected())
    }

    /// Purges every key of a user (deprovisioning). Returns how many were removed.
    pub async fn purge_user_keys(
        &mut self,
        user_id: Uuid,
        reason: PurgeReason,
        trigger: Trigger,
        actor: &str,
    ) -> StoreResult<u64> {
        self.purge_keys_where(
            "user_id = $5",
            &[user_id.to_string()],
            reason,
            trigger,
            actor,
        )
        .await
    }

    /// Purges every key scoped to a team (the team is being deleted).
    pub async fn purge_team_keys(
        &mut self,
        team_id: Uuid,
        trigger: Trigger,
        actor: &str,
    ) -> StoreResult<u64> {
        self.purge_keys_where(
            "team_id = $5",
            &[team_id.to_string()],
            PurgeReason::TeamDeleted,
            trigger,
            actor,
        )
        .await
    }

    /// Purges the keys a user holds for one team (they left it).
    pub async fn purge_member_keys(
        &mut self,
        team_id: Uuid,
        user_id: Uuid,
        trigger: Trigger,
        actor: &str,
    ) -> StoreResult<u64> {
        self.purge_keys_where(
            "team_id = $5 AND user_id = $6",
            &[team_id.to_string(), user_id.to_string()],
            PurgeReason::RemovedFromTeam,
            trigger,
            actor,
        )
        .await
    }

    /// Blocks every unblocked key of a user on behalf of provisioning.
    pub async fn block_user_keys(&mut self, user_id: Uuid) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE api_keys SET blocked_by = $1 WHERE user_id = $2 AND blocked_by IS NULL",
        )
        .bind(BlockedBy::Provisioning.as_str())
        .bind(user_id.to_string())
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected())
    }

    /// Unblocks only the keys provisioning blocked; an operator's block stays.
    pub async fn unblock_user_keys(&mut self, user_id: Uuid) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE api_keys SET blocked_by = NULL WHERE user_id = $1 AND blocked_by = $2",
        )
        .bind(user_id.to_string())
        .bind(BlockedBy::Provisioning.as_str())
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected())
    }
}

/// The audit copy of a key that a purge or revocation removed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeletedKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub team_id: Option<Uuid>,
    pub prefix: String,
    pub deleted: DateTime<Utc>,
    pub reason: String,
    pub trigger: String,
    pub actor: String,
}

impl Store {
    /// What purges and revocations removed from a user, oldest first.
    pub async fn deleted_keys(&self, user_id: Uuid) -> StoreResult<Vec<DeletedKey>> {
        const T: &str = "deleted_api_keys";
        let rows = sqlx::query(
            "SELECT id, user_id, team_id, prefix, deleted, reason, trigger, actor \
             FROM deleted_api_keys WHERE user_id = $1 ORDER BY deleted, id",
        )
        .bind(user_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let user_id: String = row.try_get("user_id")?;
                let team_id: Option<String> = row.try_get("team_id")?;
                let deleted: String = row.try_get("deleted")?;
                Ok(DeletedKey {
                    id: uuid(T, &id)?,
                    user_id: uuid(T, &user_id)?,
                    team_id: team_id.as_deref().map(|t| uuid(T, t)).transpose()?,
                    prefix: row.try_get("prefix")?,
                    deleted: parse_ts(T, &deleted)?,
                    reason: row.try_get("reason")?,
                    trigger: row.try_get("trigger")?,
                    actor: row.try_get("actor")?,
                })
            })
            .collect()
    }
}
