//! Reads and batched writes for the reconcile engine.
//!
//! The reads are scoped: a SCIM write loads only the rows it touches (by id, external
//! id, folded name, or exact membership pairs), so its cost does not grow with the
//! store. A full pull loads everything once. The writes are multi-row statements so
//! that applying a million memberships is a few thousand statements in one transaction.

use super::rows::{team_from_row, user_from_row, uuid, TEAM_COLUMNS, USER_COLUMNS};
use super::{format_ts, is_unique_violation, StoreError, StoreResult, WriteTx};
use crate::domain::{Membership, Source, Team, User};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

/// SQLite page cache during bulk writes, in KiB (128 MiB).
const BULK_CACHE_KIB: u32 = 131_072;

/// Values per IN (...) list: well under SQLite's and PostgreSQL's parameter limits.
const IN_CHUNK: usize = 500;

/// A users column the engine looks users up by. A closed set, so that SQL is never
/// assembled from caller text.
#[derive(Debug, Clone, Copy)]
pub enum UserKey {
    Id,
    ExternalId,
    /// The case-folded userName.
    NameFolded,
}

impl UserKey {
    fn column(self) -> &'static str {
        match self {
            UserKey::Id => "id",
            UserKey::ExternalId => "external_id",
            UserKey::NameFolded => "user_name_folded",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum TeamKey {
    Id,
    ExternalId,
    /// The lower-cased display name.
    NameFolded,
}

impl TeamKey {
    fn column(self) -> &'static str {
        match self {
            TeamKey::Id => "id",
            TeamKey::ExternalId => "external_id",
            TeamKey::NameFolded => "display_name_folded",
        }
    }
}

/// An audit_log row to be written in a batch.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub operation: &'static str,
    pub target: String,
    pub detail: serde_json::Value,
}

/// How statements number their parameters. SQLite gets anonymous `?`: sqlx's SQLite
/// driver looks each numbered parameter up by name, which SQLite answers with a linear
/// scan, so a statement with thousands of `$n` costs quadratic time to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Params {
    Anonymous,
    Numbered,
}

fn params_of(conn: &sqlx::AnyConnection) -> Params {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        Params::Anonymous
    } else {
        Params::Numbered
    }
}

/// `$start, $start+1, ...` (or `?, ?, ...`) for `count` parameters.
fn placeholders(style: Params, start: usize, count: usize) -> String {
    (start..start + count)
        .map(|i| match style {
            Params::Anonymous => "?".to_owned(),
            Params::Numbered => format!("${i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2, $3), ($4, $5, $6), ...` for `rows` rows of `width` columns.
fn value_rows(style: Params, rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(&placeholders(style, r * width + 1, width));
        out.push(')');
    }
    out
}

fn membership_from_row(row: &AnyRow) -> StoreResult<Membership> {
    const T: &str = "memberships";
    let team_id: String = row.try_get("team_id")?;
    let user_id: String = row.try_get("user_id")?;
    let source: String = row.try_get("source")?;
    Ok(Membership {
        team_id: uuid(T, &team_id)?,
        user_id: uuid(T, &user_id)?,
        source: parse_source(T, &source)?,
    })
}

fn parse_source(table: &'static str, raw: &str) -> StoreResult<Source> {
    Source::parse(raw).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

impl WriteTx {
    /// Every user, team and membership: what a full pull may need to compare against.
    pub async fn load_everything(
        &mut self,
    ) -> StoreResult<(Vec<User>, Vec<Team>, Vec<Membership>)> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
            .fetch_all(self.conn())
            .await?;
        let users = rows
            .iter()
            .map(user_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        drop(rows);
        let rows = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY id"))
            .fetch_all(self.conn())
            .await?;
        let teams = rows
            .iter()
            .map(team_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        drop(rows);
        let memberships = self.all_memberships_in_tx().await?;
        Ok((users, teams, memberships))
    }

    /// All memberships, streamed so that a million rows never sit in memory twice.
    async fn all_memberships_in_tx(&mut self) -> StoreResult<Vec<Membership>> {
        use futures::TryStreamExt;
        let mut out = Vec::new();
        // Sources repeat for nearly every row; parse each distinct one once.
        let mut sources: Vec<(String, Source)> = Vec::new();
        let mut stream =
            sqlx::query("SELECT team_id, user_id, source FROM memberships").fetch(self.conn());
        while let Some(row) = stream.try_next().await? {
            let team_id: &str = row.try_get("team_id")?;
            let user_id: &str = row.try_get("user_id")?;
            let source: &str = row.try_get("source")?;
            let source = match sources.iter().find(|(raw, _)| raw == source) {
                Some((_, s)) => s.clone(),
                None => {
                    let parsed = parse_source("memberships", source)?;
                    sources.push((source.to_owned(), parsed.clone()));
                    parsed
                }
            };
            out.push(Membership {
                team_id: uuid("memberships", team_id)?,
                user_id: uuid("memberships", user_id)?,
                source,
            });
        }
        Ok(out)
    }

    /// Users whose `key` column is one of `values`.
    pub async fn users_where(&mut self, key: UserKey, values: &[String]) -> StoreResult<Vec<User>> {
        let style = params_of(self.conn());
        let mut out = Vec::new();
        for chunk in values.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE {} IN ({})",
                key.column(),
                placeholders(style, 1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for v in chunk {
                q = q.bind(v.clone());
            }
            for row in q.fetch_all(self.conn()).await? {
                out.push(user_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Teams whose `key` column is one of `values`.
    pub async fn teams_where(&mut self, key: TeamKey, values: &[String]) -> StoreResult<Vec<Team>> {
        let style = params_of(self.conn());
        let mut out = Vec::new();
        for chunk in values.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {TEAM_COLUMNS} FROM teams WHERE {} IN ({})",
                key.column(),
                placeholders(style, 1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for v in chunk {
                q = q.bind(v.clone());
            }
            for row in q.fetch_all(self.conn()).await? {
                out.push(team_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// The whole roster of a team.
    pub async fn team_roster(&mut self, team: Uuid) -> StoreResult<Vec<Membership>> {
        let rows =
            sqlx::query("SELECT team_id, user_id, source FROM memberships WHERE team_id = $1")
                .bind(team.to_string())
                .fetch_all(self.conn())
                .await?;
        rows.iter().map(membership_from_row).collect()
    }

    /// Every membership of the given users.
    pub async fn memberships_of_users(&mut self, users: &[Uuid]) -> StoreResult<Vec<Membership>> {
        let style = params_of(self.conn());
        let mut out = Vec::new();
        for chunk in users.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT team_id, user_id, source FROM memberships WHERE user_id IN ({})",
                placeholders(style, 1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for u in chunk {
                q = q.bind(u.to_string());
            }
            for row in q.fetch_all(self.conn()).await? {
                out.push(membership_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// The memberships of `team` among `users` only: the primary key answers each pair,
    /// so the cost does not depend on the size of the team.
    pub async fn membership_pairs(
        &mut self,
        team: Uuid,
        users: &[Uuid],
    ) -> StoreResult<Vec<Membership>> {
        let style = params_of(self.conn());
        let mut out = Vec::new();
        for chunk in users.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT team_id, user_id, source FROM memberships WHERE team_id = {} AND user_id IN ({})",
                placeholders(style, 1, 1),
                placeholders(style, 2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(team.to_string());
            for u in chunk {
                q = q.bind(u.to_string());
            }
            for row in q.fetch_all(self.conn()).await? {
                out.push(membership_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Inserts users that do not exist yet (by id). Returns the ids inserted; a user
    /// left out either existed already or collided on userName, which the caller tells apart.
    pub async fn insert_users_if_absent(&mut self, users: &[User]) -> StoreResult<Vec<Uuid>> {
        let style = params_of(self.conn());
        const WIDTH: usize = 15;
        let mut inserted = Vec::with_capacity(users.len());
        for chunk in users.chunks(IN_CHUNK) {
            let sql = format!(
                "INSERT INTO users (id, user_name, user_name_folded, external_id, email, display_name, \
                 given_name, family_name, role, active, attributes, source, created, modified, version) \
                 VALUES {} ON CONFLICT DO NOTHING RETURNING id",
                value_rows(style, chunk.len(), WIDTH)
            );
            let mut q = sqlx::query(&sql);
            for user in chunk {
                q = q
                    .bind(user.id.to_string())
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
                    .bind(format_ts(user.created))
                    .bind(format_ts(user.modified))
                    .bind(user.version);
            }
            for row in q.fetch_all(self.conn()).await? {
                let id: String = row.try_get("id")?;
                inserted.push(uuid("users", &id)?);
            }
        }
        Ok(inserted)
    }

    /// Inserts teams that do not exist yet (by id). Returns the ids inserted.
    pub async fn insert_teams_if_absent(&mut self, teams: &[Team]) -> StoreResult<Vec<Uuid>> {
        let style = params_of(self.conn());
        const WIDTH: usize = 9;
        let mut inserted = Vec::with_capacity(teams.len());
        for chunk in teams.chunks(IN_CHUNK) {
            let sql = format!(
                "INSERT INTO teams (id, display_name, display_name_folded, external_id, metadata, \
                 source, created, modified, version) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                value_rows(style, chunk.len(), WIDTH)
            );
            let mut q = sqlx::query(&sql);
            for team in chunk {
                q = q
                    .bind(team.id.to_string())
                    .bind(team.display_name.as_str().to_owned())
                    .bind(team.display_name.as_str().to_lowercase())
                    .bind(team.external_id.clone())
                    .bind(serde_json::Value::Object(team.metadata.clone()).to_string())
                    .bind(team.source.to_string())
                    .bind(format_ts(team.created))
                    .bind(format_ts(team.modified))
                    .bind(team.version);
            }
            for row in q.fetch_all(self.conn()).await? {
                let id: String = row.try_get("id")?;
                inserted.push(uuid("teams", &id)?);
            }
        }
        Ok(inserted)
    }

    /// Adds memberships that are absent. Returns the (team, user) pairs actually added.
    pub async fn add_members_if_absent(
        &mut self,
        pairs: &[(Uuid, Uuid)],
        source: &Source,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<(Uuid, Uuid)>> {
        let style = params_of(self.conn());
        const WIDTH: usize = 4;
        let source = source.to_string();
        let at = format_ts(at);
        let mut added = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(IN_CHUNK * 2) {
            let sql = format!(
                "INSERT INTO memberships (team_id, user_id, source, created) VALUES {} \
                 ON CONFLICT (team_id, user_id) DO NOTHING RETURNING team_id, user_id",
                value_rows(style, chunk.len(), WIDTH)
            );
            let mut q = sqlx::query(&sql);
            for (team, user) in chunk {
                q = q
                    .bind(team.to_string())
                    .bind(user.to_string())
                    .bind(source.clone())
                    .bind(at.clone());
            }
            let rows = q.fetch_all(self.conn()).await.map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict("a membership".into())
                } else {
                    e.into()
                }
            })?;
            for row in rows {
                let team: String = row.try_get("team_id")?;
                let user: String = row.try_get("user_id")?;
                added.push((uuid("memberships", &team)?, uuid("memberships", &user)?));
            }
        }
        Ok(added)
    }

    /// Bumps the version and modification time of several teams at once.
    pub async fn touch_teams(&mut self, teams: &[Uuid], at: DateTime<Utc>) -> StoreResult<()> {
        let style = params_of(self.conn());
        for chunk in teams.chunks(IN_CHUNK) {
            let sql = format!(
                "UPDATE teams SET version = version + 1, modified = {} WHERE id IN ({})",
                placeholders(style, 1, 1),
                placeholders(style, 2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(format_ts(at));
            for t in chunk {
                q = q.bind(t.to_string());
            }
            q.execute(self.conn()).await?;
        }
        Ok(())
    }

    /// Prepares the connection for a large batch of writes: on SQLite, a page cache big
    /// enough for the indexes a first pull fills (the default 2 MB makes SQLite re-read
    /// spilled pages from the WAL over and over). Undone by [`WriteTx::end_bulk`].
    pub async fn begin_bulk(&mut self) -> StoreResult<()> {
        if params_of(self.conn()) == Params::Anonymous {
            sqlx::query(&format!("PRAGMA cache_size = -{BULK_CACHE_KIB}"))
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// Returns the connection to SQLite's default page cache.
    pub async fn end_bulk(&mut self) -> StoreResult<()> {
        if params_of(self.conn()) == Params::Anonymous {
            sqlx::query("PRAGMA cache_size = -2000")
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// Writes many audit_log rows with one timestamp, trigger and actor.
    pub async fn audit_batch(
        &mut self,
        trigger: crate::domain::Trigger,
        actor: &str,
        at: DateTime<Utc>,
        records: &[AuditRecord],
    ) -> StoreResult<()> {
        let style = params_of(self.conn());
        const WIDTH: usize = 6;
        let at = format_ts(at);
        for chunk in records.chunks(IN_CHUNK) {
            let sql = format!(
                "INSERT INTO audit_log (at, trigger, actor, operation, target, detail) VALUES {}",
                value_rows(style, chunk.len(), WIDTH)
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(at.clone())
                    .bind(trigger.as_str())
                    .bind(actor.to_owned())
                    .bind(r.operation)
                    .bind(r.target.clone())
                    .bind(r.detail.to_string());
            }
            q.execute(self.conn()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_ascending_order_or_anonymous_on_sqlite() {
        assert_eq!(
            value_rows(Params::Numbered, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(value_rows(Params::Anonymous, 1, 2), "(?, ?)");
        assert_eq!(placeholders(Params::Numbered, 2, 2), "$2, $3");
    }
}
