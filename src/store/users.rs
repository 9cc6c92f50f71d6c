use super::rows::{user_from_row, USER_COLUMNS};
use super::{format_ts, is_unique_violation, Savepoint, Store, StoreError, StoreResult, WriteTx};
use crate::domain::{User, UserName};
use sqlx::AnyConnection;
use uuid::Uuid;

async fn fetch_user(conn: &mut AnyConnection, id: Uuid) -> StoreResult<Option<User>> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

async fn fetch_user_by_name(
    conn: &mut AnyConnection,
    name: &UserName,
) -> StoreResult<Option<User>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE user_name_folded = $1"
    ))
    .bind(name.folded().to_owned())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

impl Store {
    pub async fn user(&self, id: Uuid) -> StoreResult<Option<User>> {
        let read = async {
            let mut conn = self.pool().acquire().await?;
            fetch_user(&mut conn, id).await
        };
        self.cache
            .through(
                |cached| cached.users.get(&id).cloned().map(Some),
                read,
                |cached, user| {
                    if let Some(user) = user {
                        cached.put_user(user);
                    }
                },
            )
            .await
    }

    pub async fn user_by_name(&self, name: &UserName) -> StoreResult<Option<User>> {
        let mut conn = self.pool().acquire().await?;
        fetch_user_by_name(&mut conn, name).await
    }

    /// Resolves an operator's USER argument: a user id, else a userName.
    pub async fn resolve_user(&self, id_or_name: &str) -> StoreResult<Option<User>> {
        if let Ok(id) = Uuid::parse_str(id_or_name) {
            if let Some(user) = self.user(id).await? {
                return Ok(Some(user));
            }
        }
        match UserName::parse(id_or_name) {
            Ok(name) => self.user_by_name(&name).await,
            Err(_) => Ok(None),
        }
    }

    /// Every user, in id order. Used to load actual state for reconciliation.
    pub async fn all_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(user_from_row).collect()
    }
}

impl WriteTx {
    pub async fn user(&mut self, id: Uuid) -> StoreResult<Option<User>> {
        fetch_user(self.conn(), id).await
    }

    /// A savepoint, then the user (see [`WriteTx::savepoint_then_row`]).
    pub async fn savepoint_then_user(
        &mut self,
        savepoint: &'static str,
        id: Uuid,
    ) -> (Option<Savepoint>, StoreResult<Option<User>>) {
        let (taken, row) = self
            .savepoint_then_row(savepoint, "users", USER_COLUMNS, id)
            .await;
        let user = row.and_then(|row| row.as_ref().map(user_from_row).transpose());
        (taken, user)
    }

    pub async fn user_by_name(&mut self, name: &UserName) -> StoreResult<Option<User>> {
        fetch_user_by_name(self.conn(), name).await
    }

    /// Overwrites every mutable column of an existing user; `id` and `created` never change.
    pub async fn update_user(&mut self, user: &User) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE users SET user_name = $1, user_name_folded = $2, external_id = $3, email = $4, \
             display_name = $5, given_name = $6, family_name = $7, role = $8, active = $9, \
             attributes = $10, source = $11, modified = $12, version = $13 WHERE id = $14",
        )
        .bind(user.user_name.as_str().to_owned())
        .bind(user.user_name.folded().to_owned())
        .bind(user.external_id.clone())
        .bind(user.email.clone())
        .bind(user.display_name.clone())
        .bind(user.given_name.clone())
        .bind(user.family_name.clone())
        .bind(user.role.as_str().to_owned())
        .bind(user.active)
        .bind(serde_json::Value::Object(user.attributes.clone()).to_string())
        .bind(user.source.to_string())
        .bind(format_ts(user.modified))
        .bind(user.version)
        .bind(user.id.to_string())
        .execute(self.conn())
        .await;
        match result {
            Ok(done) if done.rows_affected() == 0 => {
                Err(StoreError::NotFound(format!("user {}", user.id)))
            }
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "a user with userName {:?}",
                user.user_name.as_str()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the user row; memberships go with it (ON DELETE CASCADE). Callers purge
    /// the user's keys first, in the same transaction. Returns false when already gone.
    pub async fn delete_user(&mut self, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.to_string())
            .execute(self.conn())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
