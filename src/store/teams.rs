use super::rows::{team_from_row, uuid, TEAM_COLUMNS};
use super::{format_ts, Savepoint, Store, StoreError, StoreResult, WriteTx};
use crate::domain::{Membership, Source, Team};
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

async fn fetch_team(conn: &mut AnyConnection, id: Uuid) -> StoreResult<Option<Team>> {
    let row = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(team_from_row).transpose()
}

impl Store {
    pub async fn team(&self, id: Uuid) -> StoreResult<Option<Team>> {
        let mut conn = self.pool().acquire().await?;
        fetch_team(&mut conn, id).await
    }

    /// Resolves an operator's TEAM argument: a team id, else a display name (case-insensitive).
    /// A name shared by several teams is ambiguous and resolves to nothing.
    pub async fn resolve_team(&self, id_or_name: &str) -> StoreResult<Option<Team>> {
        if let Ok(id) = Uuid::parse_str(id_or_name) {
            if let Some(team) = self.team(id).await? {
                return Ok(Some(team));
            }
        }
        let rows = sqlx::query(&format!(
            "SELECT {TEAM_COLUMNS} FROM teams WHERE display_name_folded = $1 LIMIT 2"
        ))
        .bind(id_or_name.trim().to_lowercase())
        .fetch_all(self.pool())
        .await?;
        match rows.as_slice() {
            [one] => team_from_row(one).map(Some),
            _ => Ok(None),
        }
    }

    pub async fn all_teams(&self) -> StoreResult<Vec<Team>> {
        let rows = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(team_from_row).collect()
    }

    pub async fn all_memberships(&self) -> StoreResult<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT team_id, user_id, source FROM memberships ORDER BY team_id, user_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let team_id: String = row.try_get("team_id")?;
                let user_id: String = row.try_get("user_id")?;
                let source: String = row.try_get("source")?;
                Ok(Membership {
                    team_id: uuid("memberships", &team_id)?,
                    user_id: uuid("memberships", &user_id)?,
                    source: Source::parse(&source).map_err(|e| StoreError::Corrupt {
                        table: "memberships",
                        detail: e.to_string(),
                    })?,
                })
            })
            .collect()
    }
}

impl WriteTx {
    pub async fn team(&mut self, id: Uuid) -> StoreResult<Option<Team>> {
        fetch_team(self.conn(), id).await
    }

    /// A savepoint, then the team (see [`WriteTx::savepoint_then_row`]).
    pub async fn savepoint_then_team(
        &mut self,
        savepoint: &'static str,
        id: Uuid,
    ) -> (Option<Savepoint>, StoreResult<Option<Team>>) {
        let (taken, row) = self
            .savepoint_then_row(savepoint, "teams", TEAM_COLUMNS, id)
            .await;
        let team = row.and_then(|row| row.as_ref().map(team_from_row).transpose());
        (taken, team)
    }

    pub async fn update_team(&mut self, team: &Team) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE teams SET display_name = $1, display_name_folded = $2, external_id = $3, \
             metadata = $4, source = $5, modified = $6, version = $7 WHERE id = $8",
        )
        .bind(team.display_name.as_str().to_owned())
        .bind(team.display_name.as_str().to_lowercase())
        .bind(team.external_id.clone())
        .bind(serde_json::Value::Object(team.metadata.clone()).to_string())
        .bind(team.source.to_string())
        .bind(format_ts(team.modified))
        .bind(team.version)
        .bind(team.id.to_string())
        .execute(self.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("team {}", team.id)));
        }
        Ok(())
    }

    /// Deletes the team row; memberships go with it. Callers purge team-scoped keys first.
    pub async fn delete_team(&mut self, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM teams WHERE id = $1")
            .bind(id.to_string())
            .execute(self.conn())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a membership if present. Returns whether it was removed.
    pub async fn remove_member(&mut self, team_id: Uuid, user_id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM memberships WHERE team_id = $1 AND user_id = $2")
            .bind(team_id.to_string())
            .bind(user_id.to_string())
            .execute(self.conn())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
