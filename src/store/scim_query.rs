//! SCIM list queries: a filter AST (src/scim/filter.rs) translated to parameterised
//! SQL, with sorting, paging and counting done by the database, and the two
//! relations SCIM renders (a user's `groups`, a group's `members`) fetched for a
//! whole page at once.
//!
//! Values are always bound, never spliced into the text; the only text that
//! reaches the SQL comes from the fixed attribute tables below.
//!
//! What can be filtered on:
//!
//! - Users: `id`, `externalId` (case-exact), `userName` (case-insensitive, on the
//!   folded unique index), `displayName`, `name.givenName`, `name.familyName`,
//!   `active`, `meta.created`, `meta.lastModified`, the other core simple
//!   attributes (`nickName`, `title`, `userType`, `locale`, ..., `name.formatted`),
//!   the enterprise extension's simple attributes and `manager.value`, the
//!   multi-valued `emails`, `phoneNumbers`, `addresses`, `entitlements`, `roles`,
//!   `ims`, `photos`, `x509Certificates` (by sub-attribute or value filter, e.g.
//!   `emails[type eq "work" and value co "@example.com"]`) and `groups.value`.
//!   A user whose emails were never given as a list (created by an operator or a
//!   pull) has the single email of the `email` column, seen as
//!   `{"value": email, "type": "work", "primary": true}`.
//! - Groups: `id`, `externalId`, `displayName` (case-insensitive, on the folded
//!   index), `meta.created`, `meta.lastModified`, `members` / `members.value`
//!   (an EXISTS on the memberships primary key; the roster is never loaded).
//!
//! Anything else is an unsupported attribute, which the caller answers with 400
//! invalidFilter rather than ignoring the filter.

use super::rows::{team_from_row, user_from_row, uuid, TEAM_COLUMNS, USER_COLUMNS};
use super::{format_ts, Backend, Store, StoreError, StoreResult};
use crate::domain::{Team, TeamName, User};
use crate::scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
use std::collections::HashMap;
use std::fmt::Write as _;
use uuid::Uuid;

const CORE_USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const CORE_GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Why a list query could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ScimQueryError {
    /// The filter (or sortBy) names something this server cannot evaluate; the
    /// message is safe to show to the client.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ScimQueryError {
    fn from(e: sqlx::Error) -> Self {
        ScimQueryError::Store(e.into())
    }
}

/// One page of a list request. `offset` is 0-based (SCIM's startIndex - 1).
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    pub filter: Option<&'a Filter>,
    pub sort_by: Option<&'a AttrPath>,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listed<T> {
    /// How many resources match the filter, on all pages.
    pub total: u64,
    pub items: Vec<T>,
}

/// A team as a user's `groups` attribute shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRef {
    pub id: Uuid,
    pub display_name: TeamName,
}

/// A user as a group's `members` attribute shows it: by id only, so that a roster
/// is read from the memberships primary key without touching the users table.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRef {
    pub id: Uuid,
}

type ScimResult<T> = Result<T, ScimQueryError>;

fn unsupported<T>(message: impl Into<String>) -> ScimResult<T> {
    Err(ScimQueryError::Unsupported(message.into()))
}

// ---------------------------------------------------------------------------
// SQL building

#[derive(Debug, Clone)]
enum Param {
    Text(String),
    Bool(bool),
    Int(i64),
}

/// SQL text and its parameters, numbered `$1, $2, ...` in the order they appear
/// (SQLite through sqlx Any binds positionally, so order of appearance matters).
struct Sql {
    text: String,
    params: Vec<Param>,
    backend: Backend,
}

impl Sql {
    fn new(backend: Backend) -> Self {
        Self {
            text: String::new(),
            params: Vec::new(),
            backend,
        }
    }

    fn push(&mut self, fragment: &str) {
        self.text.push_str(fragment);
    }

    fn bind(&mut self, param: Param) {
        self.params.push(param);
        let _ = write!(self.text, "${}", self.params.len());
    }

    fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut query = sqlx::query(&self.text);
        for param in &self.params {
            query = match param {
                Param::Text(s) => query.bind(s.clone()),
                Param::Bool(b) => query.bind(*b),
                Param::Int(i) => query.bind(*i),
            };
        }
        query
    }
}

/// How values of an attribute compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// caseExact text (ids).
    Exact,
    /// A column that already holds the Rust-lowercased text (display_name_folded): the
    /// value is lowercased the same way, so the index is used.
    Folded,
    /// users.user_name_folded, which holds `fold_identifier` of the userName: the value
    /// is folded the same way, so a decomposed or fullwidth spelling finds the user.
    UserNameFolded,
    /// Case-insensitive text: `lower()` on both sides.
    Ci,
    /// A BOOLEAN column.
    Bool,
    /// A boolean inside a JSON document (SQLite yields 1/0, PostgreSQL 'true'/'false').
    JsonBool,
    /// A fixed-width RFC 3339 timestamp column.
    Time,
}

/// A SQL expression (fixed text only) and how it compares.
#[derive(Debug, Clone)]
struct Expr {
    sql: String,
    kind: Kind,
}

impl Expr {
    fn new(sql: impl Into<String>, kind: Kind) -> Self {
        Self {
            sql: sql.into(),
            kind,
        }
    }
}

/// Where the elements of a multi-valued attribute come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multi {
    /// A JSON array in users.attributes under this key.
    Json(&'static str),
    /// `emails`: the JSON array, or the `email` column when there is no array.
    Emails,
    /// A user's `groups`: the memberships table.
    UserGroups,
    /// A group's `members`: the memberships table.
    TeamMembers,
}

/// What an attribute path resolves to.
enum Resolved {
    Scalar(Expr),
    /// A multi-valued attribute; the sub-attribute compared when the path names
    /// the attribute itself or `attr.sub`.
    Multi(Multi, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    User,
    Group,
}

impl Resource {
    fn table(self) -> &'static str {
        match self {
            Resource::User => "users",
            Resource::Group => "teams",
        }
    }

    fn core_urn(self) -> &'static str {
        match self {
            Resource::User => CORE_USER_URN,
            Resource::Group => CORE_GROUP_URN,
        }
    }
}

/// Core User attributes kept in the JSON attributes column, by their canonical spelling.
const USER_JSON_SCALARS: &[&str] = &[
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
];
const USER_NAME_JSON_SCALARS: &[&str] = &[
    "formatted",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
];
const ENTERPRISE_SCALARS: &[&str] = &[
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
];
const USER_JSON_MULTI: &[&str] = &[
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
];
/// Sub-attributes of multi-valued attributes that can be filtered on.
const ELEMENT_SUB_ATTRS: &[&str] = &[
    "value",
    "type",
    "primary",
    "display",
    "formatted",
    "streetAddress",
    "locality",
    "region",
    "postalCode",
    "country",
];

fn canonical<'a>(list: &[&'a str], name: &str) -> Option<&'a str> {
    list.iter().copied().find(|c| c.eq_ignore_ascii_case(name))
}

struct Compiler {
    resource: Resource,
    sql: Sql,
}

impl Compiler {
    fn new(resource: Resource, backend: Backend) -> Self {
        Self {
            resource,
            sql: Sql::new(backend),
        }
    }

    fn backend(&self) -> Backend {
        self.sql.backend
    }

    /// `users.attributes` parsed as JSON, for PostgreSQL's operators.
    fn pg_attributes(&self) -> String {
        format!("CAST({}.attributes AS jsonb)", self.resource.table())
    }

    /// A scalar inside users.attributes, reached by fixed keys.
    fn json_scalar(&self, keys: &[&str], kind: Kind) -> Expr {
        let sql = match self.backend() {
            Backend::Sqlite => {
                let path: String = keys.iter().map(|k| format!(".\"{k}\"")).collect();
                format!("json_extract(users.attributes, '${path}')")
            }
            Backend::Postgres => {
                let mut sql = self.pg_attributes();
                for (i, key) in keys.iter().enumerate() {
                    let op = if i + 1 == keys.len() { "->>" } else { "->" };
                    let _ = write!(sql, " {op} '{key}'");
                }
                format!("({sql})")
            }
        };
        Expr::new(sql, kind)
    }

    fn resolve(&self, path: &AttrPath) -> ScimResult<Resolved> {
        let core = self.resource.core_urn();
        let urn = path.urn.as_deref();
        let sub = path.sub_attr.as_deref();
        let is_core = urn.map_or(true, |u| u.eq_ignore_ascii_case(core));
        if let Some(urn) = urn {
            if self.resource == Resource::User && urn.eq_ignore_ascii_case(ENTERPRISE_USER_URN) {
                return self.resolve_enterprise(path);
            }
            if !is_core {
                return unsupported(format!("filtering on {path} is not supported"));
            }
        }
        let attr = path.attr.as_str();
        let is = |name: &str| attr.eq_ignore_ascii_case(name);
        let no_sub = sub.is_none();
        let column = |sql: &str, kind: Kind| Ok(Resolved::Scalar(Expr::new(sql, kind)));
        let table = self.resource.table();
        if is("id") && no_sub {
            return column(&format!("{table}.id"), Kind::Exact);
        }
        if is("externalId") && no_sub {
            return column(&format!("{table}.external_id"), Kind::Exact);
        }
        if is("meta") {
            match sub {
                Some(s) if s.eq_ignore_ascii_case("created") => {
                    return column(&format!("{table}.created"), Kind::Time)
                }
                Some(s) if s.eq_ignore_ascii_case("lastModified") => {
                    return column(&format!("{table}.modified"), Kind::Time)
                }
                _ => {}
            }
        }
        match self.resource {
            Resource::Group => {
                if is("displayName") && no_sub {
                    return column("teams.display_name_folded", Kind::Folded);
                }
                if is("members") {
                    return Ok(Resolved::Multi(
                        Multi::TeamMembers,
                        sub.unwrap_or("value").to_owned(),
                    ));
                }
            }
            Resource::User => {
                if is("userName") && no_sub {
                    return column("users.user_name_folded", Kind::UserNameFolded);
                }
                if is("displayName") && no_sub {
                    return column("users.display_name", Kind::Ci);
                }
                if is("active") && no_sub {
                    return column("users.active", Kind::Bool);
                }
                if is("name") {
                    match sub {
                        Some(s) if s.eq_ignore_ascii_case("givenName") => {
                            return column("users.given_name", Kind::Ci)
                        }
                        Some(s) if s.eq_ignore_ascii_case("familyName") => {
                            return column("users.family_name", Kind::Ci)
                        }
                        Some(s) => {
                            if let Some(key) = canonical(USER_NAME_JSON_SCALARS, s) {
                                return Ok(Resolved::Scalar(
                                    self.json_scalar(&["name", key], Kind::Ci),
                                ));
                            }
                        }
                        None => {}
                    }
                }
                if no_sub {
                    if let Some(key) = canonical(USER_JSON_SCALARS, attr) {
                        return Ok(Resolved::Scalar(self.json_scalar(&[key], Kind::Ci)));
                    }
                }
                if is("emails") {
                    return Ok(Resolved::Multi(
                        Multi::Emails,
                        sub.unwrap_or("value").to_owned(),
                    ));
                }
                if is("groups") {
                    return Ok(Resolved::Multi(
                        Multi::UserGroups,
                        sub.unwrap_or("value").to_owned(),
                    ));
                }
                if let Some(key) = canonical(USER_JSON_MULTI, attr) {
                    return Ok(Resolved::Multi(
                        Multi::Json(key),
                        sub.unwrap_or("value").to_owned(),
                    ));
                }
            }
        }
        unsupported(format!("filtering on {path} is not supported"))
    }

    fn resolve_enterprise(&self, path: &AttrPath) -> ScimResult<Resolved> {
        let attr = path.attr.as_str();
        match path.sub_attr.as_deref() {
            None => {
                if let Some(key) = canonical(ENTERPRISE_SCALARS, attr) {
                    return Ok(Resolved::Scalar(
                        self.json_scalar(&[ENTERPRISE_USER_URN, key], Kind::Ci),
                    ));
                }
            }
            Some(sub) if attr.eq_ignore_ascii_case("manager") => {
                if sub.eq_ignore_ascii_case("value") {
                    return Ok(Resolved::Scalar(self.json_scalar(
                        &[ENTERPRISE_USER_URN, "manager", "value"],
                        Kind::Exact,
                    )));
                }
                if sub.eq_ignore_ascii_case("displayName") {
                    return Ok(Resolved::Scalar(self.json_scalar(
                        &[ENTERPRISE_USER_URN, "manager", "displayName"],
                        Kind::Ci,
                    )));
                }
            }
            Some(_) => {}
        }
        unsupported(format!("filtering on {path} is not supported"))
    }

    fn compile(&mut self, filter: &Filter) -> ScimResult<()> {
        match filter {
            Filter::And(a, b) | Filter::Or(a, b) => {
                let joiner = if matches!(filter, Filter::And(..)) {
                    " AND "
                } else {
                    " OR "
                };
                self.sql.push("(");
                self.compile(a)?;
                self.sql.push(joiner);
                self.compile(b)?;
                self.sql.push(")");
            }
            Filter::Not(inner) => {
                // IS NOT TRUE keeps rows where the inner test is NULL (attribute unassigned).
                self.sql.push("((");
                self.compile(inner)?;
                self.sql.push(") IS NOT TRUE)");
            }
            Filter::Present(path) => match self.resolve(path)? {
                Resolved::Scalar(expr) => self.present(&expr),
                Resolved::Multi(multi, sub) => self.exists(multi, &mut |c, elem| {
                    let expr = c.element(multi, elem, &sub)?;
                    c.present(&expr);
                    Ok(())
                })?,
            },
            Filter::Compare { path, op, value } => match self.resolve(path)? {
                Resolved::Scalar(expr) => self.compare(&expr, *op, value)?,
                Resolved::Multi(multi, sub) => {
                    // ne on a multi-valued attribute: no element equals the value.
                    let (negate, op) = match op {
                        CompareOp::Ne => (true, CompareOp::Eq),
                        other => (false, *other),
                    };
                    if negate {
                        self.sql.push("(NOT ");
                    }
                    self.exists(multi, &mut |c, elem| {
                        let expr = c.element(multi, elem, &sub)?;
                        c.compare(&expr, op, value)
                    })?;
                    if negate {
                        self.sql.push(")");
                    }
                }
            },
            Filter::ValuePath { path, filter } => {
                if path.sub_attr.is_some() {
                    return unsupported(format!("a value filter on {path} is not supported"));
                }
                match self.resolve(path)? {
                    Resolved::Multi(multi, _) => self.exists(multi, &mut |c, elem| {
                        c.compile_element_filter(multi, elem, filter)
                    })?,
                    Resolved::Scalar(_) => {
                        return unsupported(format!(
                            "{path} is single-valued; a value filter needs a multi-valued attribute"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// A filter inside `attr[...]`: its paths name sub-attributes of one element.
    fn compile_element_filter(
        &mut self,
        multi: Multi,
        elem: Elem,
        filter: &Filter,
    ) -> ScimResult<()> {
        match filter {
            Filter::And(a, b) | Filter::Or(a, b) => {
                let joiner = if matches!(filter, Filter::And(..)) {
                    " AND "
                } else {
                    " OR "
                };
                self.sql.push("(");
                self.compile_element_filter(multi, elem, a)?;
                self.sql.push(joiner);
                self.compile_element_filter(multi, elem, b)?;
                self.sql.push(")");
            }
            Filter::Not(inner) => {
                self.sql.push("((");
                self.compile_element_filter(multi, elem, inner)?;
                self.sql.push(") IS NOT TRUE)");
            }
            Filter::Present(path) => {
                let expr = self.element(multi, elem, element_sub(path)?)?;
                self.present(&expr);
            }
            Filter::Compare { path, op, value } => {
                let expr = self.element(multi, elem, element_sub(path)?)?;
                self.compare(&expr, *op, value)?;
            }
            Filter::ValuePath { path, .. } => {
                return unsupported(format!(
                    "a value filter inside a value filter ({path}) is not supported"
                ))
            }
        }
        Ok(())
    }

    /// `EXISTS (elements of multi WHERE body)`, plus the `email` column for users
    /// whose emails were never given as a list.
    fn exists(
        &mut self,
        multi: Multi,
        body: &mut dyn FnMut(&mut Self, Elem) -> ScimResult<()>,
    ) -> ScimResult<()> {
        match multi {
            Multi::TeamMembers => {
                self.sql
                    .push("EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = teams.id AND ");
                body(self, Elem::Row)?;
                self.sql.push(")");
            }
            Multi::UserGroups => {
                self.sql
                    .push("EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id AND ");
                body(self, Elem::Row)?;
                self.sql.push(")");
            }
            Multi::Json(key) => self.json_exists(key, body)?,
            Multi::Emails => {
                self.sql.push("(");
                self.json_exists("emails", body)?;
                let no_list = match self.backend() {
                    Backend::Sqlite => "json_type(users.attributes, '$.emails') IS NULL".to_owned(),
                    Backend::Postgres => format!("({} -> 'emails') IS NULL", self.pg_attributes()),
                };
                self.sql.push(" OR (");
                self.sql.push(&no_list);
                self.sql.push(" AND users.email IS NOT NULL AND ");
                body(self, Elem::EmailColumn)?;
                self.sql.push("))");
            }
        }
        Ok(())
    }

    fn json_exists(
        &mut self,
        key: &str,
        body: &mut dyn FnMut(&mut Self, Elem) -> ScimResult<()>,
    ) -> ScimResult<()> {
        let from = match self.backend() {
            Backend::Sqlite => format!("json_each(users.attributes, '$.{key}') AS e"),
            Backend::Postgres => {
                let attrs = self.pg_attributes();
                format!(
                    "jsonb_array_elements(CASE WHEN jsonb_typeof({attrs} -> '{key}') = 'array' \
                     THEN {attrs} -> '{key}' ELSE '[]'::jsonb END) AS e(value)"
                )
            }
        };
        self.sql.push("EXISTS (SELECT 1 FROM ");
        self.sql.push(&from);
        self.sql.push(" WHERE ");
        body(self, Elem::Json)?;
        self.sql.push(")");
        Ok(())
    }

    /// The expression for sub-attribute `sub` of one element.
    fn element(&self, multi: Multi, elem: Elem, sub: &str) -> ScimResult<Expr> {
        let is = |name: &str| sub.eq_ignore_ascii_case(name);
        let expr = match (multi, elem) {
            (Multi::TeamMembers, _) if is("value") => Expr::new("m.user_id", Kind::Exact),
            (Multi::TeamMembers, _) if is("display") => Expr::new(
                "(SELECT u.user_name FROM users u WHERE u.id = m.user_id)",
                Kind::Ci,
            ),
            (Multi::TeamMembers, _) if is("type") => Expr::new("'User'", Kind::Ci),
            (Multi::UserGroups, _) if is("value") => Expr::new("m.team_id", Kind::Exact),
            (Multi::UserGroups, _) if is("display") => Expr::new(
                "(SELECT t.display_name FROM teams t WHERE t.id = m.team_id)",
                Kind::Ci,
            ),
            (Multi::UserGroups, _) if is("type") => Expr::new("'direct'", Kind::Ci),
            (Multi::Emails, Elem::EmailColumn) if is("value") => Expr::new("users.email", Kind::Ci),
            (Multi::Emails, Elem::EmailColumn) if is("type") => Expr::new("'work'", Kind::Ci),
            (Multi::Emails, Elem::EmailColumn) if is("primary") => match self.backend() {
                Backend::Sqlite => Expr::new("1", Kind::JsonBool),
                Backend::Postgres => Expr::new("'true'", Kind::JsonBool),
            },
            (Multi::Emails, Elem::EmailColumn) if is("display") => Expr::new("NULL", Kind::Ci),
            (Multi::Emails | Multi::Json(_), Elem::Json) => {
                let Some(key) = canonical(ELEMENT_SUB_ATTRS, sub) else {
                    return unsupported(format!(
                        "filtering on sub-attribute {sub:?} is not supported"
                    ));
                };
                let kind = if key == "primary" {
                    Kind::JsonBool
                } else {
                    Kind::Ci
                };
                let sql = match self.backend() {
                    Backend::Sqlite => format!(
                        "(CASE WHEN e.type = 'object' THEN json_extract(e.value, '$.{key}') \
                         WHEN '{key}' = 'value' THEN e.value END)"
                    ),
                    Backend::Postgres => format!(
                        "(CASE WHEN jsonb_typeof(e.value) = 'object' THEN e.value ->> '{key}' \
                         WHEN '{key}' = 'value' THEN e.value #>> '{{}}' END)"
                    ),
                };
                Expr::new(sql, kind)
            }
            _ => {
                return unsupported(format!(
                    "filtering on sub-attribute {sub:?} is not supported"
                ))
            }
        };
        Ok(expr)
    }

    fn present(&mut self, expr: &Expr) {
        let sql = &expr.sql;
        let text = match expr.kind {
            Kind::Bool | Kind::JsonBool | Kind::Time => format!("({sql} IS NOT NULL)"),
            _ => format!("({sql} IS NOT NULL AND {sql} <> '')"),
        };
        self.sql.push(&text);
    }

    fn compare(&mut self, expr: &Expr, op: CompareOp, value: &CompValue) -> ScimResult<()> {
        let sql = expr.sql.clone();
        if *value == CompValue::Null {
            return match op {
                CompareOp::Eq => {
                    self.sql.push(&format!("({sql} IS NULL)"));
                    Ok(())
                }
                CompareOp::Ne => {
                    self.sql.push(&format!("({sql} IS NOT NULL)"));
                    Ok(())
                }
                _ => unsupported(format!(
                    "{} null is not a meaningful comparison",
                    op.as_str()
                )),
            };
        }
        match expr.kind {
            Kind::Bool | Kind::JsonBool => {
                let flag = match value {
                    CompValue::Bool(b) => *b,
                    // Entra and OneLogin write booleans as strings; accept them in filters too.
                    CompValue::Str(s) if s.eq_ignore_ascii_case("true") => true,
                    CompValue::Str(s) if s.eq_ignore_ascii_case("false") => false,
                    _ => {
                        return unsupported("a boolean attribute compares only with true or false")
                    }
                };
                let sql_op = match op {
                    CompareOp::Eq => "=",
                    CompareOp::Ne => "<>",
                    _ => {
                        return unsupported(format!(
                            "{} does not apply to a boolean attribute",
                            op.as_str()
                        ))
                    }
                };
                let param = match (expr.kind, self.backend()) {
                    (Kind::JsonBool, Backend::Postgres) => Param::Text(flag.to_string()),
                    _ => Param::Bool(flag),
                };
                if op == CompareOp::Ne {
                    self.sql.push(&format!("({sql} IS NULL OR {sql} {sql_op} "));
                } else {
                    self.sql.push(&format!("({sql} {sql_op} "));
                }
                self.sql.bind(param);
                self.sql.push(")");
                Ok(())
            }
            Kind::Time => {
                let text = match value {
                    CompValue::Str(s) => s,
                    _ => {
                        return unsupported(
                            "a date-time attribute compares only with a quoted date-time",
                        )
                    }
                };
                let at = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|_| {
                    ScimQueryError::Unsupported(format!("{text:?} is not an RFC 3339 date-time"))
                })?;
                let sql_op = match op {
                    CompareOp::Eq => "=",
                    CompareOp::Ne => "<>",
                    CompareOp::Gt => ">",
                    CompareOp::Ge => ">=",
                    CompareOp::Lt => "<",
                    CompareOp::Le => "<=",
                    _ => {
                        return unsupported(format!(
                            "{} does not apply to a date-time attribute",
                            op.as_str()
                        ))
                    }
                };
                self.sql.push(&format!("({sql} {sql_op} "));
                self.sql
                    .bind(Param::Text(format_ts(at.with_timezone(&chrono::Utc))));
                self.sql.push(")");
                Ok(())
            }
            Kind::Exact | Kind::Folded | Kind::UserNameFolded | Kind::Ci => {
                let raw = match value {
                    CompValue::Str(s) => s.clone(),
                    // An unquoted number compared with a string attribute (externalId eq 12345).
                    CompValue::Num(n) => n.to_string(),
                    CompValue::Bool(b) => b.to_string(),
                    CompValue::Null => String::new(),
                };
                self.compare_text(expr, op, raw);
                Ok(())
            }
        }
    }

    fn compare_text(&mut self, expr: &Expr, op: CompareOp, raw: String) {
        let (lhs, value, lower_rhs) = match expr.kind {
            Kind::Folded => (expr.sql.clone(), fold(&raw, op), false),
            Kind::UserNameFolded => (expr.sql.clone(), fold_user_name(&raw, op), false),
            Kind::Ci => (format!("lower({})", expr.sql), raw, true),
            _ => (expr.sql.clone(), raw, false),
        };
        let bind_rhs = |c: &mut Self, param: String| {
            if lower_rhs {
                c.sql.push("lower(");
                c.sql.bind(Param::Text(param));
                c.sql.push(")");
            } else {
                c.sql.bind(Param::Text(param));
            }
        };
        match op {
            CompareOp::Eq | CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => {
                let sql_op = match op {
                    CompareOp::Eq => "=",
                    CompareOp::Gt => ">",
                    CompareOp::Ge => ">=",
                    CompareOp::Lt => "<",
                    _ => "<=",
                };
                self.sql.push(&format!("({lhs} {sql_op} "));
                bind_rhs(self, value);
                self.sql.push(")");
            }
            CompareOp::Ne => {
                self.sql
                    .push(&format!("({} IS NULL OR {lhs} <> ", expr.sql));
                bind_rhs(self, value);
                self.sql.push(")");
            }
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew if expr.kind == Kind::Exact => {
                self.compare_exact_substring(&expr.sql, op, value)
            }
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
                let escaped = escape_like(&value);
                let pattern = match op {
                    CompareOp::Co => format!("%{escaped}%"),
                    CompareOp::Sw => format!("{escaped}%"),
                    _ => format!("%{escaped}"),
                };
                self.sql.push(&format!("({lhs} LIKE "));
                bind_rhs(self, pattern);
                self.sql.push(" ESCAPE '\\')");
            }
        }
    }

    /// co/sw/ew on a case-exact attribute. LIKE is case-insensitive on SQLite, so
    /// substring functions are used instead.
    fn compare_exact_substring(&mut self, sql: &str, op: CompareOp, value: String) {
        if value.is_empty() {
            self.sql.push(&format!("({sql} IS NOT NULL)"));
            return;
        }
        match (op, self.backend()) {
            (CompareOp::Co, Backend::Sqlite) => {
                self.sql.push(&format!("(instr({sql}, "));
                self.sql.bind(Param::Text(value));
                self.sql.push(") > 0)");
            }
            (CompareOp::Co, Backend::Postgres) => {
                self.sql.push(&format!("(strpos({sql}, "));
                self.sql.bind(Param::Text(value));
                self.sql.push(") > 0)");
            }
            (CompareOp::Sw, _) => {
                self.sql.push(&format!("(substr({sql}, 1, length("));
                self.sql.bind(Param::Text(value.clone()));
                self.sql.push(")) = ");
                self.sql.bind(Param::Text(value));
                self.sql.push(")");
            }
            (_, Backend::Sqlite) => {
                self.sql.push(&format!("(substr({sql}, -length("));
                self.sql.bind(Param::Text(value.clone()));
                self.sql.push(")) = ");
                self.sql.bind(Param::Text(value));
                self.sql.push(")");
            }
            (_, Backend::Postgres) => {
                self.sql.push(&format!("(right({sql}, length("));
                self.sql.bind(Param::Text(value.clone()));
                self.sql.push(")) = ");
                self.sql.bind(Param::Text(value));
                self.sql.push(")");
            }
        }
    }

    /// The ORDER BY clause: the requested attribute (unassigned values last when
    /// ascending, as RFC 7644 §3.4.2.3 asks), then creation order and id so that
    /// pages are stable.
    fn order_by(&self, sort_by: Option<&AttrPath>, descending: bool) -> ScimResult<String> {
        let table = self.resource.table();
        let stable = format!("{table}.created, {table}.id");
        let Some(path) = sort_by else {
            return Ok(stable);
        };
        let expr = match self.resolve(path)? {
            Resolved::Scalar(expr) => expr,
            // Sorting by a multi-valued attribute uses its primary value (RFC 7644 §3.4.2.3).
            Resolved::Multi(Multi::Emails, sub) if sub.eq_ignore_ascii_case("value") => {
                Expr::new("users.email", Kind::Ci)
            }
            Resolved::Multi(..) => {
                return unsupported(format!("sorting by {path} is not supported"))
            }
        };
        let key = match expr.kind {
            Kind::Ci => format!("lower({})", expr.sql),
            _ => expr.sql.clone(),
        };
        // (x IS NULL) sorts false before true on both backends, so unassigned values
        // come last ascending and first descending, whatever the backend's NULL order.
        let direction = if descending { "DESC" } else { "ASC" };
        Ok(format!(
            "({} IS NULL) {direction}, {key} {direction}, {stable}",
            expr.sql
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    /// An element of a JSON array, `e.value`.
    Json,
    /// The user's `email` column seen as one work email.
    EmailColumn,
    /// A memberships row `m`.
    Row,
}

/// Inside `attr[...]` a path names a sub-attribute of the element, e.g. `type`.
fn element_sub(path: &AttrPath) -> ScimResult<&str> {
    if path.urn.is_some() || path.sub_attr.is_some() {
        return unsupported(format!("{path} is not a sub-attribute name"));
    }
    Ok(&path.attr)
}

/// The form `UserName::folded` stores; eq trims like `UserName::parse` does, so
/// " Alice " finds "alice". A value `UserName::parse` would refuse (a format character)
/// folds anyway and simply matches nothing, since no stored name holds one.
fn fold_user_name(raw: &str, op: CompareOp) -> String {
    let folded = crate::domain::fold_identifier(raw);
    match op {
        CompareOp::Eq | CompareOp::Ne => folded.trim().to_owned(),
        _ => folded,
    }
}

/// The lowercased form team display names are stored in; eq trims like
/// `TeamName::parse` does.
fn fold(raw: &str, op: CompareOp) -> String {
    let lowered = raw.to_lowercase();
    match op {
        CompareOp::Eq | CompareOp::Ne => lowered.trim().to_owned(),
        _ => lowered,
    }
}

fn escape_like(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// Queries

impl Store {
    /// One page of users matching a SCIM filter, and how many match in all.
    pub async fn scim_users(&self, query: &ListQuery<'_>) -> ScimResult<Listed<User>> {
        // The Debug text holds every field of the query, the filter's whole AST
        // included, so equal keys mean equal SQL.
        let key = format!("{query:?}");
        let read = async {
            let rows = self.scim_list(Resource::User, USER_COLUMNS, query).await?;
            Ok(Listed {
                total: rows.total,
                items: rows
                    .items
                    .iter()
                    .map(user_from_row)
                    .collect::<StoreResult<_>>()?,
            })
        };
        self.cache
            .through(
                |cached| {
                    let page = cached.lists.get(&key)?;
                    Some(Listed {
                        total: page.total,
                        items: cached.users_of(&page.items)?,
                    })
                },
                read,
                |cached, page| cached.put_list(key.clone(), page),
            )
            .await
    }

    /// One page of teams matching a SCIM filter, and how many match in all.
    pub async fn scim_teams(&self, query: &ListQuery<'_>) -> ScimResult<Listed<Team>> {
        let rows = self.scim_list(Resource::Group, TEAM_COLUMNS, query).await?;
        Ok(Listed {
            total: rows.total,
            items: rows
                .items
                .iter()
                .map(team_from_row)
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn scim_list(
        &self,
        resource: Resource,
        columns: &str,
        query: &ListQuery<'_>,
    ) -> ScimResult<Listed<AnyRow>> {
        let table = resource.table();
        let mut compiler = Compiler::new(resource, self.backend());
        match query.filter {
            Some(filter) => compiler.compile(filter)?,
            None => compiler.sql.push("1 = 1"),
        }
        let order = compiler.order_by(query.sort_by, query.descending)?;
        let mut count = Sql::new(self.backend());
        if query.filter.is_some() {
            count.text = format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE {}",
                compiler.sql.text
            );
            count.params = compiler.sql.params.clone();
        } else {
            // Kept by triggers (migration 0002): one row instead of a walk of an index.
            count.text = format!("SELECT n FROM row_counts WHERE name = '{table}'");
        }
        // A late row lookup: the inner query pages over the index that serves the
        // order (`created, id`) without touching the rows it skips, and only the
        // page's rows are read from the table. A deep page of a large store costs a
        // walk of the index instead of reading every skipped row.
        let mut page = compiler.sql;
        page.text = format!(
            "SELECT {} FROM {table} WHERE {table}.id IN (SELECT {table}.id FROM {table} WHERE {} \
             ORDER BY {order} LIMIT ",
            qualify(table, columns),
            page.text
        );
        page.bind(Param::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        page.push(" OFFSET ");
        page.bind(Param::Int(i64::try_from(query.offset).unwrap_or(i64::MAX)));
        page.push(&format!(") ORDER BY {order}"));
        // The count and the page are independent walks of the same index: run them on
        // two connections at once, so a list costs the longer of the two, not the sum.
        let rows = async {
            if query.limit == 0 {
                return Ok(Vec::new());
            }
            page.query()
                .fetch_all(self.pool())
                .await
                .map_err(ScimQueryError::from)
        };
        let (total, items) = tokio::try_join!(self.count(&count), rows)?;
        let items = if query.offset >= total {
            Vec::new()
        } else {
            items
        };
        Ok(Listed { total, items })
    }

    /// How many rows a filter matches. Counting is a walk of a whole index, so the
    /// answer is kept until the next commit: paging through a large list counts once.
    async fn count(&self, count: &Sql) -> ScimResult<u64> {
        let key = format!("{}\u{0}{:?}", count.text, count.params);
        let read = async {
            let total: i64 = count.query().fetch_one(self.pool()).await?.try_get("n")?;
            Ok::<_, ScimQueryError>(u64::try_from(total).unwrap_or(0))
        };
        self.cache
            .through(
                |cached| cached.counts.get(&key).copied(),
                read,
                |cached, total| cached.put_count(key.clone(), *total),
            )
            .await
    }

    /// The teams of each of `users`, for their `groups` attribute; ordered by name.
    pub async fn groups_of_users(
        &self,
        users: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, Vec<GroupRef>>> {
        let mut out: HashMap<Uuid, Vec<GroupRef>> = HashMap::new();
        let ticket = self.cache.ticket();
        let users: Vec<Uuid> = match self.cache.lookup(ticket, |cached| {
            Some(
                users
                    .iter()
                    .filter(|id| match cached.groups.get(id) {
                        Some(groups) => {
                            out.insert(**id, groups.clone());
                            false
                        }
                        None => true,
                    })
                    .copied()
                    .collect(),
            )
        }) {
            Some(missing) => missing,
            None => users.to_vec(),
        };
        if users.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT m.user_id, t.id, t.display_name FROM memberships m JOIN teams t ON t.id = m.team_id \
             WHERE m.user_id IN ({}) ORDER BY t.display_name_folded, t.id",
            placeholders(self.backend(), users.len())
        );
        let mut query = sqlx::query(&sql);
        for id in &users {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(self.pool()).await? {
            let user_id: String = row.try_get("user_id")?;
            let id: String = row.try_get("id")?;
            let name: String = row.try_get("display_name")?;
            out.entry(uuid("memberships", &user_id)?)
                .or_default()
                .push(GroupRef {
                    id: uuid("teams", &id)?,
                    display_name: TeamName::parse(&name).map_err(|e| StoreError::Corrupt {
                        table: "teams",
                        detail: e.to_string(),
                    })?,
                });
        }
        self.cache.keep(ticket, |cached| {
            for id in &users {
                cached.put_groups(*id, out.get(id).map(Vec::as_slice).unwrap_or_default());
            }
        });
        Ok(out)
    }

    /// The members of each of `teams`, for their `members` attribute; ordered by user id.
    pub async fn members_of_teams(
        &self,
        teams: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, Vec<MemberRef>>> {
        let mut out: HashMap<Uuid, Vec<MemberRef>> = HashMap::new();
        if teams.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT team_id, user_id FROM memberships WHERE team_id IN ({}) ORDER BY team_id, user_id",
            placeholders(self.backend(), teams.len())
        );
        let mut query = sqlx::query(&sql);
        for id in teams {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(self.pool()).await? {
            let team_id: String = row.try_get("team_id")?;
            let user_id: String = row.try_get("user_id")?;
            out.entry(uuid("memberships", &team_id)?)
                .or_default()
                .push(MemberRef {
                    id: uuid("memberships", &user_id)?,
                });
        }
        Ok(out)
    }

    /// Whether a team has more than `limit` members, reading at most `limit + 1`
    /// index entries however large the roster is.
    pub async fn team_has_more_members_than(&self, team_id: Uuid, limit: u64) -> StoreResult<bool> {
        let row =
            sqlx::query("SELECT user_id FROM memberships WHERE team_id = $1 LIMIT 1 OFFSET $2")
                .bind(team_id.to_string())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_optional(self.pool())
                .await?;
        Ok(row.is_some())
    }
}

/// `n` parameters for an `IN (...)` list. SQLite gets anonymous `?`: sqlx resolves
/// numbered `$n` placeholders on SQLite in time quadratic in their count, which made a
/// page of 100 users spend milliseconds binding its group lookup.
fn placeholders(backend: Backend, n: usize) -> String {
    (1..=n)
        .map(|i| match backend {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prefixes each column with its table, since filters join other tables.
fn qualify(table: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse_filter;

    fn sql_for(resource: Resource, filter: &str) -> (String, usize) {
        let filter = parse_filter(filter).expect("filter parses");
        let mut c = Compiler::new(resource, Backend::Sqlite);
        c.compile(&filter).expect("filter compiles");
        (c.sql.text, c.sql.params.len())
    }

    #[test]
    fn user_name_filters_use_the_folded_index_and_bind_the_value() {
        let (sql, params) = sql_for(Resource::User, "userName eq \"Alice@Example.com\"");
        assert_eq!(sql, "(users.user_name_folded = $1)");
        assert_eq!(params, 1);
    }

    #[test]
    fn placeholders_are_numbered_in_order_of_appearance() {
        let (sql, params) = sql_for(
            Resource::User,
            "userName sw \"a\" and (externalId eq \"x\" or not (displayName co \"b\"))",
        );
        assert_eq!(params, 3);
        let first = sql.find("$1").unwrap();
        let second = sql.find("$2").unwrap();
        let third = sql.find("$3").unwrap();
        assert!(first < second && second < third, "{sql}");
    }

    #[test]
    fn like_wildcards_in_values_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }

    #[test]
    fn group_member_filters_are_an_exists_on_memberships() {
        let (sql, _) = sql_for(Resource::Group, "members[value eq \"u1\"]");
        assert!(
            sql.starts_with("EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = teams.id"),
            "{sql}"
        );
    }

    #[test]
    fn unknown_attributes_are_refused_rather_than_ignored() {
        let filter = parse_filter("favoriteColor eq \"blue\"").unwrap();
        let mut c = Compiler::new(Resource::User, Backend::Sqlite);
        assert!(matches!(
            c.compile(&filter),
            Err(ScimQueryError::Unsupported(_))
        ));
    }
}
