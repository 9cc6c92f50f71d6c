//! Reads and batched writes for the reconcile engine.
//!
//! The reads are scoped: a SCIM write loads only the rows it touches (by id, external
//! id, folded name, or exact membership pairs), so its cost does not grow with the
//! store. A full pull loads everything once. The writes are multi-row statements so
//! that applying a million memberships is a few thousand statements in one transaction.

use super::rows::{json_object, team_from_row, user_from_row, uuid, TEAM_COLUMNS, USER_COLUMNS};
use super::{
    execute_text, format_ts, parse_ts, StoreError, StoreResult, WriteTx, DEFAULT_CACHE_SIZE,
};
use crate::domain::{Membership, Role, Source, Team, User, UserName};
use chrono::{DateTime, Utc};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::Any;
use sqlx::Row;
use uuid::Uuid;

/// SQLite page cache during bulk writes, in KiB (128 MiB).
const BULK_CACHE_KIB: u32 = 131_072;

/// Inserts of fewer rows go straight to `INSERT ... RETURNING`: for the single row of a
/// SCIM write, a savepoint's two extra statements would cost more than they save.
const SAVEPOINT_MIN_ROWS: usize = 32;

/// A query with its arguments bound.
type AnyQuery<'q> = sqlx::query::Query<'q, Any, AnyArguments<'q>>;

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
    value_rows_from(style, 1, rows, width)
}

/// Like [`value_rows`], numbering from `first`.
fn value_rows_from(style: Params, first: usize, rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(&placeholders(style, first + r * width, width));
        out.push(')');
    }
    out
}

/// A users row as SQLite's `json_array` of [`USER_COLUMNS`] gives it.
type UserTuple = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    serde_json::Value,
    String,
    String,
    String,
    String,
    i64,
);

/// The same checks as `user_from_row`, for a row read as JSON.
fn user_from_tuple(t: UserTuple) -> StoreResult<User> {
    const T: &str = "users";
    let corrupt = |detail: String| StoreError::Corrupt { table: T, detail };
    let (
        id,
        user_name,
        external_id,
        email,
        display_name,
        given_name,
        family_name,
        role,
        active,
        attributes,
        source,
        created,
        modified,
        version,
    ) = t;
    Ok(User {
        id: uuid(T, &id)?,
        user_name: UserName::parse(&user_name).map_err(|e| corrupt(e.to_string()))?,
        external_id,
        email,
        display_name,
        given_name,
        family_name,
        role: Role::parse(&role).map_err(|e| corrupt(e.to_string()))?,
        active: match active {
            serde_json::Value::Bool(b) => b,
            serde_json::Value::Number(n) => n.as_i64() != Some(0),
            other => return Err(corrupt(format!("active {other}"))),
        },
        attributes: json_object(T, &attributes)?,
        source: parse_source(T, &source)?,
        created: parse_ts(T, &created)?,
        modified: parse_ts(T, &modified)?,
        version,
    })
}

/// `a IN ($1, $2) OR b IN ($3)` over the non-empty lists, and the values in order.
fn any_of<'v>(
    style: Params,
    lists: impl Iterator<Item = (&'static str, &'v Vec<String>)>,
) -> (String, Vec<&'v String>) {
    let mut parts = Vec::new();
    let mut values = Vec::new();
    for (column, list) in lists {
        if list.is_empty() {
            continue;
        }
        parts.push(format!(
            "{column} IN ({})",
            placeholders(style, values.len() + 1, list.len())
        ));
        values.extend(list.iter());
    }
    (parts.join(" OR "), values)
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
        let started = std::time::Instant::now();
        let users = self.all_users_in_tx().await?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "read users"
        );
        let rows = sqlx::query(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY id"))
            .fetch_all(self.conn())
            .await?;
        let teams = rows
            .iter()
            .map(team_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        drop(rows);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "read teams"
        );
        let memberships = self.all_memberships_in_tx().await?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "read memberships"
        );
        Ok((users, teams, memberships))
    }

    /// How many API keys are scoped to each team that has any.
    pub async fn key_counts_by_team(&mut self) -> StoreResult<Vec<(Uuid, u64)>> {
        let rows = sqlx::query(
            "SELECT team_id, COUNT(*) AS n FROM api_keys WHERE team_id IS NOT NULL GROUP BY team_id",
        )
        .fetch_all(self.conn())
        .await?;
        rows.iter()
            .map(|row| {
                let team: String = row.try_get("team_id")?;
                let n: i64 = row.try_get("n")?;
                let team = Uuid::parse_str(&team).map_err(|e| StoreError::Corrupt {
                    table: "api_keys",
                    detail: format!("team_id {team:?}: {e}"),
                })?;
                Ok((team, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    /// All users. On SQLite they are read as one JSON array: sqlx's SQLite driver hands
    /// rows over one at a time between threads, which for 100,000 users costs more than
    /// reading and parsing them as a single value.
    async fn all_users_in_tx(&mut self) -> StoreResult<Vec<User>> {
        if params_of(self.conn()) == Params::Numbered {
            let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
                .fetch_all(self.conn())
                .await?;
            return rows.iter().map(user_from_row).collect();
        }
        let row = sqlx::query(&format!(
            "SELECT json_group_array(json_array({USER_COLUMNS})) AS users \
             FROM (SELECT {USER_COLUMNS} FROM users ORDER BY id)"
        ))
        .fetch_one(self.conn())
        .await?;
        let json: String = row.try_get("users")?;
        let tuples: Vec<UserTuple> =
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                table: "users",
                detail: format!("reading users as JSON: {e}"),
            })?;
        drop(json);
        tuples.into_iter().map(user_from_tuple).collect()
    }

    /// All memberships. Read as one row per team with "source user" pairs joined into
    /// one string (in the primary key's order, so without sorting): a million rows
    /// through the driver cost seconds, ten thousand rows a fraction of that.
    async fn all_memberships_in_tx(&mut self) -> StoreResult<Vec<Membership>> {
        use futures::TryStreamExt;
        let sql = match params_of(self.conn()) {
            Params::Anonymous => {
                "SELECT team_id, group_concat(source || ' ' || user_id, ',') AS members \
                 FROM memberships GROUP BY team_id"
            }
            Params::Numbered => {
                "SELECT team_id, string_agg(source || ' ' || user_id, ',') AS members \
                 FROM memberships GROUP BY team_id"
            }
        };
        let mut out = Vec::new();
        // Nearly every membership has the same source: parse each distinct one once.
        let mut last: Option<(String, Source)> = None;
        let mut stream = sqlx::query(sql).fetch(self.conn());
        while let Some(row) = stream.try_next().await? {
            let team_id: String = row.try_get("team_id")?;
            let members: String = row.try_get("members")?;
            let team_id = uuid("memberships", &team_id)?;
            // Sources have no spaces and ids no commas (both are checked on the way in).
            for pair in members.split(',') {
                let (source, user) = pair.rsplit_once(' ').ok_or_else(|| StoreError::Corrupt {
                    table: "memberships",
                    detail: format!("membership {pair:?}"),
                })?;
                let source = match &last {
                    Some((raw, parsed)) if raw == source => parsed.clone(),
                    _ => {
                        let parsed = parse_source("memberships", source)?;
                        last = Some((source.to_owned(), parsed.clone()));
                        parsed
                    }
                };
                out.push(Membership {
                    team_id,
                    user_id: uuid("memberships", user)?,
                    source,
                });
            }
        }
        Ok(out)
    }

    /// Users matching any of several keys, in one statement when the lists are short
    /// (a SCIM write looks a user up by id, external id and userName at once).
    pub async fn users_matching(
        &mut self,
        keys: &[(UserKey, Vec<String>)],
    ) -> StoreResult<Vec<User>> {
        let total: usize = keys.iter().map(|(_, v)| v.len()).sum();
        if total > IN_CHUNK {
            let mut out = Vec::new();
            for (key, values) in keys {
                out.extend(self.users_where(*key, values).await?);
            }
            return Ok(out);
        }
        let style = params_of(self.conn());
        let (condition, values) = any_of(style, keys.iter().map(|(k, v)| (k.column(), v)));
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {condition}");
        let mut q = sqlx::query(&sql);
        for v in values {
            q = q.bind(v.clone());
        }
        let rows = q.fetch_all(self.conn()).await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Teams matching any of several keys, in one statement when the lists are short.
    pub async fn teams_matching(
        &mut self,
        keys: &[(TeamKey, Vec<String>)],
    ) -> StoreResult<Vec<Team>> {
        let total: usize = keys.iter().map(|(_, v)| v.len()).sum();
        if total > IN_CHUNK {
            let mut out = Vec::new();
            for (key, values) in keys {
                out.extend(self.teams_where(*key, values).await?);
            }
            return Ok(out);
        }
        let style = params_of(self.conn());
        let (condition, values) = any_of(style, keys.iter().map(|(k, v)| (k.column(), v)));
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {TEAM_COLUMNS} FROM teams WHERE {condition}");
        let mut q = sqlx::query(&sql);
        for v in values {
            q = q.bind(v.clone());
        }
        let rows = q.fetch_all(self.conn()).await?;
        rows.iter().map(team_from_row).collect()
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

    /// Users by id, each with their membership of `team` if they have one: what a
    /// change to that team's members needs to know of them, in one statement.
    pub async fn users_with_membership_of(
        &mut self,
        team: Uuid,
        users: &[String],
    ) -> StoreResult<Vec<(User, Option<Membership>)>> {
        let style = params_of(self.conn());
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {USER_COLUMNS}, (SELECT source FROM memberships \
                 WHERE team_id = {} AND user_id = users.id) AS membership_source \
                 FROM users WHERE id IN ({})",
                placeholders(style, 1, 1),
                placeholders(style, 2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(team.to_string());
            for u in chunk {
                q = q.bind(u.clone());
            }
            for row in q.fetch_all(self.conn()).await? {
                let user = user_from_row(&row)?;
                let source: Option<String> = row.try_get("membership_source")?;
                let membership = match source {
                    Some(source) => Some(Membership {
                        team_id: team,
                        user_id: user.id,
                        source: parse_source("memberships", &source)?,
                    }),
                    None => None,
                };
                out.push((user, membership));
            }
        }
        Ok(out)
    }

    /// Inserts users that do not exist yet (by id). Returns the ids inserted; a user
    /// left out either existed already or collided on userName, which the caller tells apart.
    pub async fn insert_users_if_absent(&mut self, users: &[User]) -> StoreResult<Vec<Uuid>> {
        fn bind<'q>(sql: &'q str, chunk: &[User]) -> AnyQuery<'q> {
            let mut q = sqlx::query(sql);
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
            q
        }
        let style = params_of(self.conn());
        const WIDTH: usize = 15;
        let mut inserted = Vec::with_capacity(users.len());
        for chunk in users.chunks(IN_CHUNK) {
            let insert = format!(
                "INSERT INTO users (id, user_name, user_name_folded, external_id, email, display_name, \
                 given_name, family_name, role, active, attributes, source, created, modified, version) \
                 VALUES {} ON CONFLICT DO NOTHING",
                value_rows(style, chunk.len(), WIDTH)
            );
            if chunk.len() >= SAVEPOINT_MIN_ROWS
                && self.all_inserted(bind(&insert, chunk), chunk.len()).await?
            {
                inserted.extend(chunk.iter().map(|u| u.id));
                continue;
            }
            let returning = format!("{insert} RETURNING id");
            for row in bind(&returning, chunk).fetch_all(self.conn()).await? {
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
        fn bind<'q>(sql: &'q str, chunk: &[(Uuid, Uuid)], source: &str, at: &str) -> AnyQuery<'q> {
            let mut q = sqlx::query(sql);
            for (team, user) in chunk {
                q = q
                    .bind(team.to_string())
                    .bind(user.to_string())
                    .bind(source.to_owned())
                    .bind(at.to_owned());
            }
            q
        }
        let style = params_of(self.conn());
        const WIDTH: usize = 4;
        let source = source.to_string();
        let at = format_ts(at);
        let mut added = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(IN_CHUNK * 2) {
            let insert = format!(
                "INSERT INTO memberships (team_id, user_id, source, created) VALUES {} \
                 ON CONFLICT (team_id, user_id) DO NOTHING",
                value_rows(style, chunk.len(), WIDTH)
            );
            if chunk.len() >= SAVEPOINT_MIN_ROWS
                && self
                    .all_inserted(bind(&insert, chunk, &source, &at), chunk.len())
                    .await?
            {
                added.extend_from_slice(chunk);
                continue;
            }
            let returning = format!("{insert} RETURNING team_id, user_id");
            for row in bind(&returning, chunk, &source, &at)
                .fetch_all(self.conn())
                .await?
            {
                let team: String = row.try_get("team_id")?;
                let user: String = row.try_get("user_id")?;
                added.push((uuid("memberships", &team)?, uuid("memberships", &user)?));
            }
        }
        Ok(added)
    }

    /// Runs an `INSERT ... ON CONFLICT DO NOTHING` of `rows` rows inside a savepoint and
    /// keeps it if every row went in, which is the common case and needs no RETURNING
    /// (returning a million rows costs seconds). Otherwise it is undone and false is
    /// returned, for the caller to redo it with RETURNING and learn which rows went in.
    async fn all_inserted(&mut self, insert: AnyQuery<'_>, rows: usize) -> StoreResult<bool> {
        sqlx::query("SAVEPOINT scimsync_bulk")
            .execute(self.conn())
            .await?;
        let done = insert.execute(self.conn()).await?;
        if done.rows_affected() as usize == rows {
            sqlx::query("RELEASE SAVEPOINT scimsync_bulk")
                .execute(self.conn())
                .await?;
            return Ok(true);
        }
        sqlx::query("ROLLBACK TO SAVEPOINT scimsync_bulk")
            .execute(self.conn())
            .await?;
        sqlx::query("RELEASE SAVEPOINT scimsync_bulk")
            .execute(self.conn())
            .await?;
        Ok(false)
    }

    /// Bumps the version and modification time of several teams at once.
    pub async fn touch_teams(&mut self, teams: &[Uuid], at: DateTime<Utc>) -> StoreResult<()> {
        self.touch("teams", teams, at).await
    }

    /// Bumps the version of users whose memberships changed: their SCIM `groups`, and
    /// so their ETag, changed with them.
    pub async fn touch_users(&mut self, users: &[Uuid], at: DateTime<Utc>) -> StoreResult<()> {
        self.touch("users", users, at).await
    }

    /// Bumps the version of every member of `team` in one statement (a rename or the
    /// deletion of a team changes what each member's `groups` shows).
    pub async fn touch_members_of(&mut self, team: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let style = params_of(self.conn());
        let sql = format!(
            "UPDATE users SET version = version + 1, modified = {} \
             WHERE id IN (SELECT user_id FROM memberships WHERE team_id = {})",
            placeholders(style, 1, 1),
            placeholders(style, 2, 1)
        );
        sqlx::query(&sql)
            .bind(format_ts(at))
            .bind(team.to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// [`WriteTx::touch_teams`] and [`WriteTx::touch_users`] in one round trip when
    /// both lists are short (a SCIM membership change: one team, a few users): a
    /// multi-statement on SQLite, a data-modifying WITH on PostgreSQL.
    pub async fn touch_teams_and_users(
        &mut self,
        teams: &[Uuid],
        users: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        if teams.is_empty() || users.is_empty() || teams.len() + users.len() > IN_CHUNK {
            self.touch("teams", teams, at).await?;
            return self.touch("users", users, at).await;
        }
        let sql = match params_of(self.conn()) {
            Params::Anonymous => format!(
                "UPDATE teams SET version = version + 1, modified = ? WHERE id IN ({}); \
                 UPDATE users SET version = version + 1, modified = ? WHERE id IN ({})",
                placeholders(Params::Anonymous, 1, teams.len()),
                placeholders(Params::Anonymous, 1, users.len()),
            ),
            Params::Numbered => format!(
                "WITH touched AS (UPDATE teams SET version = version + 1, modified = $1 \
                 WHERE id IN ({})) \
                 UPDATE users SET version = version + 1, modified = $1 WHERE id IN ({})",
                placeholders(Params::Numbered, 2, teams.len()),
                placeholders(Params::Numbered, 2 + teams.len(), users.len()),
            ),
        };
        let at = format_ts(at);
        let mut binds = Vec::with_capacity(teams.len() + users.len() + 2);
        binds.push(at.clone());
        binds.extend(teams.iter().map(Uuid::to_string));
        if params_of(self.conn()) == Params::Anonymous {
            binds.push(at);
        }
        binds.extend(users.iter().map(Uuid::to_string));
        super::execute_text(self.conn(), &sql, binds).await?;
        Ok(())
    }

    async fn touch(&mut self, table: &str, ids: &[Uuid], at: DateTime<Utc>) -> StoreResult<()> {
        let style = params_of(self.conn());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "UPDATE {table} SET version = version + 1, modified = {} WHERE id IN ({})",
                placeholders(style, 1, 1),
                placeholders(style, 2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(format_ts(at));
            for id in chunk {
                q = q.bind(id.to_string());
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
            // Set first: if the PRAGMA is cancelled half-way, the rollback still resets it.
            self.bulk = true;
            sqlx::query(&format!("PRAGMA cache_size = -{BULK_CACHE_KIB}"))
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// Returns the connection to SQLite's default page cache. On PostgreSQL, has the
    /// commit refresh the planner's statistics: a first pull takes a table from a few
    /// rows to many, and until autovacuum's next ANALYZE the planner would still plan
    /// for a few (sequential scans of what is now large).
    pub async fn end_bulk(&mut self) -> StoreResult<()> {
        if params_of(self.conn()) == Params::Anonymous {
            sqlx::query(DEFAULT_CACHE_SIZE).execute(self.conn()).await?;
            self.bulk = false;
        } else {
            self.analyze = true;
        }
        Ok(())
    }

    /// Writes many audit_log rows with one timestamp, trigger and actor (bound once
    /// per statement, not once per row).
    pub async fn audit_batch(
        &mut self,
        trigger: crate::domain::Trigger,
        actor: &str,
        at: DateTime<Utc>,
        records: &[AuditRecord],
    ) -> StoreResult<()> {
        let style = params_of(self.conn());
        for chunk in records.chunks(AUDIT_CHUNK) {
            let (sql, binds) = audit_statement(style, trigger, actor, at, chunk);
            execute_text(self.conn(), &sql, binds).await?;
        }
        Ok(())
    }

    /// [`WriteTx::audit_batch`] for the last rows of a write: they go in with the
    /// COMMIT (see [`WriteTx::at_commit`]).
    pub async fn audit_at_commit(
        &mut self,
        trigger: crate::domain::Trigger,
        actor: &str,
        at: DateTime<Utc>,
        records: &[AuditRecord],
    ) -> StoreResult<()> {
        let Some(last_start) = records.len().checked_sub(1).map(|l| l - l % AUDIT_CHUNK) else {
            return Ok(());
        };
        let (now, last) = records.split_at(last_start);
        self.audit_batch(trigger, actor, at, now).await?;
        let (sql, binds) = audit_statement(params_of(self.conn()), trigger, actor, at, last);
        self.at_commit(sql, binds);
        Ok(())
    }
}

/// Audit rows per INSERT.
const AUDIT_CHUNK: usize = IN_CHUNK * 2;

/// One INSERT of `records` into audit_log, with its parameters (all text).
fn audit_statement(
    style: Params,
    trigger: crate::domain::Trigger,
    actor: &str,
    at: DateTime<Utc>,
    records: &[AuditRecord],
) -> (String, Vec<String>) {
    const WIDTH: usize = 3;
    // VALUES columns are called column1, column2, ... in SQLite and PostgreSQL alike.
    let sql = format!(
        "INSERT INTO audit_log (at, trigger, actor, operation, target, detail) \
         SELECT {}, column1, column2, column3 FROM (VALUES {}) AS batch",
        placeholders(style, 1, 3),
        value_rows_from(style, 4, records.len(), WIDTH)
    );
    let mut binds = Vec::with_capacity(3 + records.len() * WIDTH);
    binds.extend([format_ts(at), trigger.as_str().to_owned(), actor.to_owned()]);
    for r in records {
        binds.extend([
            r.operation.to_owned(),
            r.target.clone(),
            r.detail.to_string(),
        ]);
    }
    (sql, binds)
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
