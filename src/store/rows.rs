//! Turning rows back into domain values. A row that does not parse is reported as
//! corrupt rather than silently skipped or defaulted.

use super::{parse_ts, StoreError, StoreResult};
use crate::domain::{Role, Source, Team, TeamName, User, UserName};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

pub(crate) const USER_COLUMNS: &str =
    "id, user_name, external_id, email, display_name, given_name, \
     family_name, role, active, attributes, source, created, modified, version";

pub(crate) const TEAM_COLUMNS: &str =
    "id, display_name, external_id, metadata, source, created, modified, version";

fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

pub(crate) fn uuid(table: &'static str, raw: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(raw).map_err(|e| corrupt(table, format_args!("id {raw:?}: {e}")))
}

pub(crate) fn json_object(table: &'static str, raw: &str) -> StoreResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(corrupt(table, "JSON column is not an object")),
        Err(e) => Err(corrupt(table, format_args!("JSON column: {e}"))),
    }
}

/// Booleans are BOOLEAN on PostgreSQL and INTEGER 0/1 on SQLite.
pub(crate) fn get_bool(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    match row.try_get::<bool, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => row.try_get::<i64, _>(column).map(|v| v != 0),
    }
}

pub(crate) fn user_from_row(row: &AnyRow) -> StoreResult<User> {
    const T: &str = "users";
    let id: String = row.try_get("id")?;
    let user_name: String = row.try_get("user_name")?;
    let role: String = row.try_get("role")?;
    let attributes: String = row.try_get("attributes")?;
    let source: String = row.try_get("source")?;
    let created: String = row.try_get("created")?;
    let modified: String = row.try_get("modified")?;
    Ok(User {
        id: uuid(T, &id)?,
        user_name: UserName::parse(&user_name).map_err(|e| corrupt(T, e))?,
        external_id: row.try_get("external_id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        given_name: row.try_get("given_name")?,
        family_name: row.try_get("family_name")?,
        role: Role::parse(&role).map_err(|e| corrupt(T, e))?,
        active: get_bool(row, "active")?,
        attributes: json_object(T, &attributes)?,
        source: Source::parse(&source).map_err(|e| corrupt(T, e))?,
        created: parse_ts(T, &created)?,
        modified: parse_ts(T, &modified)?,
        version: row.try_get("version")?,
    })
}

pub(crate) fn team_from_row(row: &AnyRow) -> StoreResult<Team> {
    const T: &str = "teams";
    let id: String = row.try_get("id")?;
    let display_name: String = row.try_get("display_name")?;
    let metadata: String = row.try_get("metadata")?;
    let source: String = row.try_get("source")?;
    let created: String = row.try_get("created")?;
    let modified: String = row.try_get("modified")?;
    Ok(Team {
        id: uuid(T, &id)?,
        display_name: TeamName::parse(&display_name).map_err(|e| corrupt(T, e))?,
        external_id: row.try_get("external_id")?,
        metadata: json_object(T, &metadata)?,
        source: Source::parse(&source).map_err(|e| corrupt(T, e))?,
        created: parse_ts(T, &created)?,
        modified: parse_ts(T, &modified)?,
        version: row.try_get("version")?,
    })
}
