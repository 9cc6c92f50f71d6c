//! The store's own query language: a predicate over users or teams, a sort order and
//! a page, compiled to parameterised SQL for SQLite and PostgreSQL. Protocol front
//! ends (the SCIM listener) lower their filters into it; nothing here knows their
//! syntax or their attribute names.
//!
//! Values are always bound, never spliced into the text. The only text that reaches
//! the SQL comes from the fixed column names below and from the `&'static` JSON keys
//! and literals a predicate names, which are refused if they could end a quoted
//! string.
//!
//! A user's JSON attributes column is reached by object keys ([`Field::Attribute`]),
//! and its lists by [`Collection::AttributeList`]. A user whose emails were never
//! given as a list (created by an operator or a pull) has the single email of the
//! `email` column, seen as `{"value": email, "type": "work", "primary": true}`
//! ([`Collection::Emails`]). Memberships are tested with an EXISTS on the
//! memberships primary key; a roster is never loaded.

use super::{format_ts, Backend, StoreError};
use chrono::{DateTime, Utc};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;
use std::fmt::Write as _;

/// What a predicate tests: a column of the table listed, a value inside the users'
/// JSON attributes column, or (inside [`Predicate::Any`]) a part of one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The row's id (text, compared exactly).
    Id,
    /// The row's external id (compared exactly).
    ExternalId,
    Created,
    Modified,
    /// users.user_name_folded: the value is folded the way userNames are stored, so a
    /// decomposed or fullwidth spelling finds the user on the unique index.
    UserName,
    /// users.display_name, compared case-insensitively.
    UserDisplayName,
    GivenName,
    FamilyName,
    /// users.email, the user's primary email, compared case-insensitively.
    Email,
    Active,
    /// teams.display_name_folded: the value is lowercased the way team names are
    /// stored, so the index is used.
    TeamName,
    /// A value inside users.attributes, reached by object keys.
    Attribute {
        keys: Vec<&'static str>,
        case: Case,
    },
    /// A part of the element an enclosing [`Predicate::Any`] or [`Predicate::NoneOf`]
    /// is testing.
    Element(Element),
    /// A fixed text that every row shares, compared case-insensitively.
    Literal(&'static str),
}

/// How a text field compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Exact,
    Insensitive,
}

/// A part of one element of a [`Collection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// Text under this key of an element object; `"value"` is also the element
    /// itself when the element is a bare string. Compared case-insensitively.
    Text(&'static str),
    /// A boolean under this key of an element object.
    Bool(&'static str),
    /// The id of the other side of a membership: the member's user id, or the team id.
    RelatedId,
    /// The name of the other side of a membership: the member's userName, or the
    /// team's display name. Compared case-insensitively.
    RelatedName,
}

/// A set of elements that belong to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// A JSON list in users.attributes under this key.
    AttributeList(&'static str),
    /// A user's emails: the `emails` list in users.attributes, or the `email` column
    /// as one work email for a user who has no list.
    Emails,
    /// The teams a user is a member of.
    TeamsOfUser,
    /// The users who are members of a team.
    MembersOfTeam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    NotEqual,
    Contains,
    StartsWith,
    EndsWith,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// What a field's values are, and so which [`Value`] it compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    Bool,
    Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Bool(bool),
    Timestamp(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    /// True when the inner predicate is false or unknown: a NULL from an unassigned
    /// field counts as "not matched", so `Not` keeps those rows.
    Not(Box<Predicate>),
    /// The field has a value; for text, a non-empty one.
    Present(Field),
    IsNull(Field),
    IsNotNull(Field),
    Compare {
        field: Field,
        op: Comparison,
        value: Value,
    },
    /// Some element of the collection passes the inner predicate, whose fields are
    /// [`Field::Element`]s and [`Field::Literal`]s.
    Any(Collection, Box<Predicate>),
    /// No element of the collection passes the inner predicate.
    NoneOf(Collection, Box<Predicate>),
}

/// The order of a list: by a field (unassigned values last when ascending), then by
/// creation order and id so that pages are stable.
#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    pub field: Field,
    pub descending: bool,
}

/// One page of a list. `offset` is 0-based.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// `None` lists every row (and is counted from the kept row counts).
    pub filter: Option<Predicate>,
    pub sort: Option<Sort>,
    pub offset: u64,
    pub limit: u64,
}

/// Why a list query could not be run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The predicate asks something the store cannot answer: a field of the other
    /// table, a value of the wrong kind, an element outside a collection. The front
    /// end that built it should have refused the request first; the message is fixed
    /// text, safe to show to a client.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Store(e.into())
    }
}

pub type QueryResult<T> = Result<T, QueryError>;

fn invalid<T>(message: impl Into<String>) -> QueryResult<T> {
    Err(QueryError::Invalid(message.into()))
}

impl Field {
    /// Which kind of value the field compares with.
    pub fn value_kind(&self) -> ValueKind {
        match self {
            Field::Created | Field::Modified => ValueKind::Timestamp,
            Field::Active | Field::Element(Element::Bool(_)) => ValueKind::Bool,
            _ => ValueKind::Text,
        }
    }
}

// ---------------------------------------------------------------------------
// SQL building

#[derive(Debug, Clone)]
pub(super) enum Param {
    Text(String),
    Bool(bool),
    Int(i64),
}

/// SQL text and its parameters, numbered `$1, $2, ...` in the order they appear
/// (SQLite through sqlx Any binds positionally, so order of appearance matters).
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) params: Vec<Param>,
    backend: Backend,
}

impl Sql {
    pub(super) fn new(backend: Backend) -> Self {
        Self {
            text: String::new(),
            params: Vec::new(),
            backend,
        }
    }

    pub(super) fn push(&mut self, fragment: &str) {
        self.text.push_str(fragment);
    }

    pub(super) fn bind(&mut self, param: Param) {
        self.params.push(param);
        let _ = write!(self.text, "${}", self.params.len());
    }

    pub(super) fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
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

/// How values of an expression compare.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Users,
    Teams,
}

impl Table {
    pub(super) fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Teams => "teams",
        }
    }
}

/// Where the element under test comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementSource {
    /// An element of a JSON array, `e.value`.
    Json,
    /// The user's `email` column seen as one work email.
    EmailColumn,
    /// A memberships row `m`.
    Membership,
}

/// JSON keys and literals are spliced into SQL string literals and JSON paths; none of
/// the fixed names a front end uses holds a quote, and one that did would be a bug.
fn checked_name(name: &'static str) -> QueryResult<&'static str> {
    if name.contains(['\'', '"', '\\']) {
        return invalid(format!("{name:?} cannot be used as a name in a query"));
    }
    Ok(name)
}

pub(super) struct Compiler {
    table: Table,
    pub(super) sql: Sql,
    /// The collection and element source while compiling the inside of an `Any`.
    element: Option<(Collection, ElementSource)>,
}

impl Compiler {
    pub(super) fn new(table: Table, backend: Backend) -> Self {
        Self {
            table,
            sql: Sql::new(backend),
            element: None,
        }
    }

    fn backend(&self) -> Backend {
        self.sql.backend
    }

    /// `users.attributes` parsed as JSON, for PostgreSQL's operators.
    fn pg_attributes(&self) -> String {
        format!("CAST({}.attributes AS jsonb)", self.table.name())
    }

    /// A scalar inside users.attributes, reached by fixed keys.
    fn json_scalar(&self, keys: &[&'static str], kind: Kind) -> QueryResult<Expr> {
        for key in keys {
            checked_name(key)?;
        }
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
        Ok(Expr::new(sql, kind))
    }

    fn field(&self, field: &Field) -> QueryResult<Expr> {
        let table = self.table.name();
        let column = |sql: &str, kind: Kind| Ok(Expr::new(sql, kind));
        match (field, self.table) {
            (Field::Id, _) => column(&format!("{table}.id"), Kind::Exact),
            (Field::ExternalId, _) => column(&format!("{table}.external_id"), Kind::Exact),
            (Field::Created, _) => column(&format!("{table}.created"), Kind::Time),
            (Field::Modified, _) => column(&format!("{table}.modified"), Kind::Time),
            (Field::UserName, Table::Users) => {
                column("users.user_name_folded", Kind::UserNameFolded)
            }
            (Field::UserDisplayName, Table::Users) => column("users.display_name", Kind::Ci),
            (Field::GivenName, Table::Users) => column("users.given_name", Kind::Ci),
            (Field::FamilyName, Table::Users) => column("users.family_name", Kind::Ci),
            (Field::Email, Table::Users) => column("users.email", Kind::Ci),
            (Field::Active, Table::Users) => column("users.active", Kind::Bool),
            (Field::Attribute { keys, case }, Table::Users) => {
                let kind = match case {
                    Case::Exact => Kind::Exact,
                    Case::Insensitive => Kind::Ci,
                };
                self.json_scalar(keys, kind)
            }
            (Field::TeamName, Table::Teams) => column("teams.display_name_folded", Kind::Folded),
            (Field::Literal(text), _) => column(&format!("'{}'", checked_name(text)?), Kind::Ci),
            (Field::Element(element), _) => match self.element {
                Some((collection, source)) => self.element(collection, source, *element),
                None => invalid(format!(
                    "{element:?} names a part of an element outside a test of a collection"
                )),
            },
            (field, table) => invalid(format!("{field:?} is not a field of {}", table.name())),
        }
    }

    /// The expression for one part of the element under test.
    fn element(
        &self,
        collection: Collection,
        source: ElementSource,
        element: Element,
    ) -> QueryResult<Expr> {
        let expr = match (collection, source, element) {
            (Collection::MembersOfTeam, _, Element::RelatedId) => {
                Expr::new("m.user_id", Kind::Exact)
            }
            (Collection::MembersOfTeam, _, Element::RelatedName) => Expr::new(
                "(SELECT u.user_name FROM users u WHERE u.id = m.user_id)",
                Kind::Ci,
            ),
            (Collection::TeamsOfUser, _, Element::RelatedId) => Expr::new("m.team_id", Kind::Exact),
            (Collection::TeamsOfUser, _, Element::RelatedName) => Expr::new(
                "(SELECT t.display_name FROM teams t WHERE t.id = m.team_id)",
                Kind::Ci,
            ),
            (
                Collection::Emails,
                ElementSource::EmailColumn,
                Element::Text(key) | Element::Bool(key),
            ) => self.email_column_part(key)?,
            (
                Collection::Emails | Collection::AttributeList(_),
                ElementSource::Json,
                Element::Text(key) | Element::Bool(key),
            ) => {
                let key = checked_name(key)?;
                let kind = match element {
                    Element::Bool(_) => Kind::JsonBool,
                    _ => Kind::Ci,
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
            (collection, _, element) => {
                return invalid(format!("{collection:?} has no {element:?}"));
            }
        };
        Ok(expr)
    }

    /// The `email` column seen as the one element `{"value": email, "type": "work",
    /// "primary": true}` of a user who has no `emails` list.
    fn email_column_part(&self, key: &str) -> QueryResult<Expr> {
        let expr = match key {
            "value" => Expr::new("users.email", Kind::Ci),
            "type" => Expr::new("'work'", Kind::Ci),
            "primary" => match self.backend() {
                Backend::Sqlite => Expr::new("1", Kind::JsonBool),
                Backend::Postgres => Expr::new("'true'", Kind::JsonBool),
            },
            "display" => Expr::new("NULL", Kind::Ci),
            _ => {
                return invalid(format!(
                    "the email column has no {key:?}, only value, type, primary and display"
                ))
            }
        };
        Ok(expr)
    }

    pub(super) fn compile(&mut self, predicate: &Predicate) -> QueryResult<()> {
        match predicate {
            Predicate::And(a, b) | Predicate::Or(a, b) => {
                let joiner = if matches!(predicate, Predicate::And(..)) {
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
            Predicate::Not(inner) => {
                // IS NOT TRUE keeps rows where the inner test is NULL (field unassigned).
                self.sql.push("((");
                self.compile(inner)?;
                self.sql.push(") IS NOT TRUE)");
            }
            Predicate::Present(field) => {
                let expr = self.field(field)?;
                self.present(&expr);
            }
            Predicate::IsNull(field) => {
                let expr = self.field(field)?;
                self.sql.push(&format!("({} IS NULL)", expr.sql));
            }
            Predicate::IsNotNull(field) => {
                let expr = self.field(field)?;
                self.sql.push(&format!("({} IS NOT NULL)", expr.sql));
            }
            Predicate::Compare { field, op, value } => {
                let expr = self.field(field)?;
                self.compare(&expr, *op, value)?;
            }
            Predicate::Any(collection, test) => self.exists(*collection, test)?,
            Predicate::NoneOf(collection, test) => {
                self.sql.push("(NOT ");
                self.exists(*collection, test)?;
                self.sql.push(")");
            }
        }
        Ok(())
    }

    /// `EXISTS (elements of collection WHERE test)`, plus the `email` column for
    /// users whose emails were never given as a list.
    fn exists(&mut self, collection: Collection, test: &Predicate) -> QueryResult<()> {
        if self.element.is_some() {
            return invalid("a test of a collection cannot be nested inside another");
        }
        let table = self.table;
        let result = match (collection, table) {
            (Collection::MembersOfTeam, Table::Teams) => {
                self.sql
                    .push("EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = teams.id AND ");
                self.element_test(collection, ElementSource::Membership, test)
                    .map(|()| self.sql.push(")"))
            }
            (Collection::TeamsOfUser, Table::Users) => {
                self.sql
                    .push("EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id AND ");
                self.element_test(collection, ElementSource::Membership, test)
                    .map(|()| self.sql.push(")"))
            }
            (Collection::AttributeList(key), Table::Users) => {
                self.json_exists(collection, key, test)
            }
            (Collection::Emails, Table::Users) => self.emails_exist(test),
            (collection, table) => invalid(format!(
                "{collection:?} is not a collection of {}",
                table.name()
            )),
        };
        self.element = None;
        result
    }

    fn emails_exist(&mut self, test: &Predicate) -> QueryResult<()> {
        self.sql.push("(");
        self.json_exists(Collection::Emails, "emails", test)?;
        let no_list = match self.backend() {
            Backend::Sqlite => "json_type(users.attributes, '$.emails') IS NULL".to_owned(),
            Backend::Postgres => format!("({} -> 'emails') IS NULL", self.pg_attributes()),
        };
        self.sql.push(" OR (");
        self.sql.push(&no_list);
        self.sql.push(" AND users.email IS NOT NULL AND ");
        self.element_test(Collection::Emails, ElementSource::EmailColumn, test)?;
        self.sql.push("))");
        Ok(())
    }

    fn json_exists(
        &mut self,
        collection: Collection,
        key: &'static str,
        test: &Predicate,
    ) -> QueryResult<()> {
        let key = checked_name(key)?;
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
        self.element_test(collection, ElementSource::Json, test)?;
        self.sql.push(")");
        Ok(())
    }

    fn element_test(
        &mut self,
        collection: Collection,
        source: ElementSource,
        test: &Predicate,
    ) -> QueryResult<()> {
        self.element = Some((collection, source));
        self.compile(test)
    }

    fn present(&mut self, expr: &Expr) {
        let sql = &expr.sql;
        let text = match expr.kind {
            Kind::Bool | Kind::JsonBool | Kind::Time => format!("({sql} IS NOT NULL)"),
            _ => format!("({sql} IS NOT NULL AND {sql} <> '')"),
        };
        self.sql.push(&text);
    }

    fn compare(&mut self, expr: &Expr, op: Comparison, value: &Value) -> QueryResult<()> {
        let sql = expr.sql.clone();
        match (expr.kind, value) {
            (Kind::Bool | Kind::JsonBool, Value::Bool(flag)) => {
                let sql_op = match op {
                    Comparison::Equal => "=",
                    Comparison::NotEqual => "<>",
                    _ => return invalid(format!("{op:?} does not apply to a boolean")),
                };
                let param = match (expr.kind, self.backend()) {
                    (Kind::JsonBool, Backend::Postgres) => Param::Text(flag.to_string()),
                    _ => Param::Bool(*flag),
                };
                if op == Comparison::NotEqual {
                    self.sql.push(&format!("({sql} IS NULL OR {sql} {sql_op} "));
                } else {
                    self.sql.push(&format!("({sql} {sql_op} "));
                }
                self.sql.bind(param);
                self.sql.push(")");
                Ok(())
            }
            (Kind::Time, Value::Timestamp(at)) => {
                let sql_op = match order_operator(op) {
                    Some(sql_op) => sql_op,
                    None => return invalid(format!("{op:?} does not apply to a timestamp")),
                };
                self.sql.push(&format!("({sql} {sql_op} "));
                self.sql.bind(Param::Text(format_ts(*at)));
                self.sql.push(")");
                Ok(())
            }
            (Kind::Exact | Kind::Folded | Kind::UserNameFolded | Kind::Ci, Value::Text(raw)) => {
                self.compare_text(expr, op, raw.clone());
                Ok(())
            }
            (kind, value) => invalid(format!(
                "a {kind:?} field cannot be compared with {value:?}"
            )),
        }
    }

    fn compare_text(&mut self, expr: &Expr, op: Comparison, raw: String) {
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
            Comparison::NotEqual => {
                self.sql
                    .push(&format!("({} IS NULL OR {lhs} <> ", expr.sql));
                bind_rhs(self, value);
                self.sql.push(")");
            }
            Comparison::Contains | Comparison::StartsWith | Comparison::EndsWith
                if expr.kind == Kind::Exact =>
            {
                self.compare_exact_substring(&expr.sql, op, value)
            }
            Comparison::Contains | Comparison::StartsWith | Comparison::EndsWith => {
                let escaped = escape_like(&value);
                let pattern = match op {
                    Comparison::Contains => format!("%{escaped}%"),
                    Comparison::StartsWith => format!("{escaped}%"),
                    _ => format!("%{escaped}"),
                };
                self.sql.push(&format!("({lhs} LIKE "));
                bind_rhs(self, pattern);
                self.sql.push(" ESCAPE '\\')");
            }
            Comparison::Equal
            | Comparison::Greater
            | Comparison::GreaterOrEqual
            | Comparison::Less
            | Comparison::LessOrEqual => {
                let sql_op = match op {
                    Comparison::Equal => "=",
                    Comparison::Greater => ">",
                    Comparison::GreaterOrEqual => ">=",
                    Comparison::Less => "<",
                    _ => "<=",
                };
                self.sql.push(&format!("({lhs} {sql_op} "));
                bind_rhs(self, value);
                self.sql.push(")");
            }
        }
    }

    /// Contains, StartsWith, EndsWith on a case-exact field. LIKE is
    /// case-insensitive on SQLite, so substring functions are used instead.
    fn compare_exact_substring(&mut self, sql: &str, op: Comparison, value: String) {
        if value.is_empty() {
            self.sql.push(&format!("({sql} IS NOT NULL)"));
            return;
        }
        match (op, self.backend()) {
            (Comparison::Contains, Backend::Sqlite) => {
                self.sql.push(&format!("(instr({sql}, "));
                self.sql.bind(Param::Text(value));
                self.sql.push(") > 0)");
            }
            (Comparison::Contains, Backend::Postgres) => {
                self.sql.push(&format!("(strpos({sql}, "));
                self.sql.bind(Param::Text(value));
                self.sql.push(") > 0)");
            }
            (Comparison::StartsWith, _) => {
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

    /// The ORDER BY clause: the sort field (unassigned values last when ascending, as
    /// RFC 7644 §3.4.2.3 asks), then creation order and id so that pages are stable.
    pub(super) fn order_by(&self, sort: Option<&Sort>) -> QueryResult<String> {
        let table = self.table.name();
        let stable = format!("{table}.created, {table}.id");
        let Some(sort) = sort else {
            return Ok(stable);
        };
        if matches!(sort.field, Field::Element(_)) {
            return invalid(format!("{:?} cannot be sorted by", sort.field));
        }
        let expr = self.field(&sort.field)?;
        let key = match expr.kind {
            Kind::Ci => format!("lower({})", expr.sql),
            _ => expr.sql.clone(),
        };
        let direction = if sort.descending { "DESC" } else { "ASC" };
        // A NOT NULL column needs no "unassigned last" term, and without it an index on
        // (column, created, id) hands the rows over in order: a deep page of a list
        // sorted by userName is then a walk of that index, not a sort of the table.
        if matches!(
            sort.field,
            Field::Id | Field::Created | Field::Modified | Field::UserName | Field::TeamName
        ) {
            return Ok(format!("{key} {direction}, {stable}"));
        }
        // (x IS NULL) sorts false before true on both backends, so unassigned values
        // come last ascending and first descending, whatever the backend's NULL order.
        Ok(format!(
            "({} IS NULL) {direction}, {key} {direction}, {stable}",
            expr.sql
        ))
    }
}

/// The SQL operator of an ordering comparison, or of equality.
fn order_operator(op: Comparison) -> Option<&'static str> {
    match op {
        Comparison::Equal => Some("="),
        Comparison::NotEqual => Some("<>"),
        Comparison::Greater => Some(">"),
        Comparison::GreaterOrEqual => Some(">="),
        Comparison::Less => Some("<"),
        Comparison::LessOrEqual => Some("<="),
        Comparison::Contains | Comparison::StartsWith | Comparison::EndsWith => None,
    }
}

/// The form `UserName::folded` stores; equality trims like `UserName::parse` does, so
/// " Alice " finds "alice". A value `UserName::parse` would refuse (a format character)
/// folds anyway and simply matches nothing, since no stored name holds one.
fn fold_user_name(raw: &str, op: Comparison) -> String {
    let folded = crate::domain::fold_identifier(raw);
    match op {
        Comparison::Equal | Comparison::NotEqual => folded.trim().to_owned(),
        _ => folded,
    }
}

/// The lowercased form team display names are stored in; equality trims like
/// `TeamName::parse` does.
fn fold(raw: &str, op: Comparison) -> String {
    let lowered = raw.to_lowercase();
    match op {
        Comparison::Equal | Comparison::NotEqual => lowered.trim().to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(field: Field, op: Comparison, value: &str) -> Predicate {
        Predicate::Compare {
            field,
            op,
            value: Value::Text(value.to_owned()),
        }
    }

    fn compiled(table: Table, backend: Backend, predicate: &Predicate) -> (String, Vec<Param>) {
        let mut c = Compiler::new(table, backend);
        c.compile(predicate).expect("predicate compiles");
        (c.sql.text, c.sql.params)
    }

    fn sql_for(table: Table, backend: Backend, predicate: &Predicate) -> String {
        compiled(table, backend, predicate).0
    }

    fn refusal(table: Table, predicate: &Predicate) -> String {
        let mut c = Compiler::new(table, Backend::Sqlite);
        match c.compile(predicate) {
            Err(QueryError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?} and {:?}", c.sql.text),
        }
    }

    const BOTH: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

    #[test]
    fn user_name_filters_use_the_folded_index_and_bind_the_folded_value() {
        for backend in BOTH {
            let (sql, params) = compiled(
                Table::Users,
                backend,
                &text(Field::UserName, Comparison::Equal, " Alice@Example.com "),
            );
            assert_eq!(sql, "(users.user_name_folded = $1)");
            assert_eq!(format!("{params:?}"), r#"[Text("alice@example.com")]"#);
        }
    }

    #[test]
    fn team_names_compare_lowercased_against_the_folded_column() {
        let (sql, params) = compiled(
            Table::Teams,
            Backend::Postgres,
            &text(Field::TeamName, Comparison::StartsWith, "ENG"),
        );
        assert_eq!(sql, r"(teams.display_name_folded LIKE $1 ESCAPE '\')");
        assert_eq!(format!("{params:?}"), r#"[Text("eng%")]"#);
    }

    #[test]
    fn placeholders_are_numbered_in_order_of_appearance() {
        let predicate = Predicate::And(
            Box::new(text(Field::UserName, Comparison::StartsWith, "a")),
            Box::new(Predicate::Or(
                Box::new(text(Field::ExternalId, Comparison::Equal, "x")),
                Box::new(Predicate::Not(Box::new(text(
                    Field::UserDisplayName,
                    Comparison::Contains,
                    "b",
                )))),
            )),
        );
        for backend in BOTH {
            let (sql, params) = compiled(Table::Users, backend, &predicate);
            assert_eq!(
                sql,
                "((users.user_name_folded LIKE $1 ESCAPE '\\') AND ((users.external_id = $2) OR \
                 (((lower(users.display_name) LIKE lower($3) ESCAPE '\\')) IS NOT TRUE)))"
            );
            assert_eq!(params.len(), 3);
        }
    }

    #[test]
    fn like_wildcards_in_values_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }

    #[test]
    fn case_exact_substrings_use_each_dialects_string_functions() {
        let contains = text(Field::ExternalId, Comparison::Contains, "ab");
        let ends = text(Field::Id, Comparison::EndsWith, "ab");
        assert_eq!(
            sql_for(Table::Users, Backend::Sqlite, &contains),
            "(instr(users.external_id, $1) > 0)"
        );
        assert_eq!(
            sql_for(Table::Users, Backend::Postgres, &contains),
            "(strpos(users.external_id, $1) > 0)"
        );
        assert_eq!(
            sql_for(Table::Teams, Backend::Sqlite, &ends),
            "(substr(teams.id, -length($1)) = $2)"
        );
        assert_eq!(
            sql_for(Table::Teams, Backend::Postgres, &ends),
            "(right(teams.id, length($1)) = $2)"
        );
        let empty = text(Field::ExternalId, Comparison::StartsWith, "");
        assert_eq!(
            sql_for(Table::Users, Backend::Sqlite, &empty),
            "(users.external_id IS NOT NULL)"
        );
    }

    #[test]
    fn attribute_paths_are_json_extract_on_sqlite_and_arrows_on_postgres() {
        let manager = text(
            Field::Attribute {
                keys: vec!["urn:x:ext", "manager", "value"],
                case: Case::Exact,
            },
            Comparison::Equal,
            "m-1",
        );
        assert_eq!(
            sql_for(Table::Users, Backend::Sqlite, &manager),
            r#"(json_extract(users.attributes, '$."urn:x:ext"."manager"."value"') = $1)"#
        );
        assert_eq!(
            sql_for(Table::Users, Backend::Postgres, &manager),
            "((CAST(users.attributes AS jsonb) -> 'urn:x:ext' -> 'manager' ->> 'value') = $1)"
        );
        let title = Predicate::Present(Field::Attribute {
            keys: vec!["title"],
            case: Case::Insensitive,
        });
        assert_eq!(
            sql_for(Table::Users, Backend::Sqlite, &title),
            r#"(json_extract(users.attributes, '$."title"') IS NOT NULL AND json_extract(users.attributes, '$."title"') <> '')"#
        );
    }

    #[test]
    fn booleans_bind_as_booleans_except_json_ones_on_postgres() {
        let active = Predicate::Compare {
            field: Field::Active,
            op: Comparison::NotEqual,
            value: Value::Bool(true),
        };
        for backend in BOTH {
            let (sql, params) = compiled(Table::Users, backend, &active);
            assert_eq!(sql, "(users.active IS NULL OR users.active <> $1)");
            assert_eq!(format!("{params:?}"), "[Bool(true)]");
        }
        let primary = Predicate::Any(
            Collection::AttributeList("roles"),
            Box::new(Predicate::Compare {
                field: Field::Element(Element::Bool("primary")),
                op: Comparison::Equal,
                value: Value::Bool(true),
            }),
        );
        let (_, params) = compiled(Table::Users, Backend::Sqlite, &primary);
        assert_eq!(format!("{params:?}"), "[Bool(true)]");
        let (sql, params) = compiled(Table::Users, Backend::Postgres, &primary);
        assert_eq!(
            sql,
            "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(CAST(users.attributes AS jsonb) -> 'roles') = 'array' \
             THEN CAST(users.attributes AS jsonb) -> 'roles' ELSE '[]'::jsonb END) AS e(value) WHERE \
             ((CASE WHEN jsonb_typeof(e.value) = 'object' THEN e.value ->> 'primary' WHEN 'primary' = 'value' THEN e.value #>> '{}' END) = $1))"
        );
        assert_eq!(format!("{params:?}"), r#"[Text("true")]"#);
    }

    #[test]
    fn timestamps_bind_in_the_stored_fixed_width_form() {
        let at = chrono::DateTime::parse_from_rfc3339("2020-01-01T02:00:00+02:00")
            .expect("a fixed timestamp")
            .with_timezone(&Utc);
        let created = Predicate::Compare {
            field: Field::Created,
            op: Comparison::Greater,
            value: Value::Timestamp(at),
        };
        let (sql, params) = compiled(Table::Teams, Backend::Postgres, &created);
        assert_eq!(sql, "(teams.created > $1)");
        assert_eq!(
            format!("{params:?}"),
            r#"[Text("2020-01-01T00:00:00.000000Z")]"#
        );
    }

    #[test]
    fn group_member_tests_are_an_exists_on_memberships() {
        let predicate = Predicate::Any(
            Collection::MembersOfTeam,
            Box::new(text(
                Field::Element(Element::RelatedId),
                Comparison::Equal,
                "u1",
            )),
        );
        for backend in BOTH {
            assert_eq!(
                sql_for(Table::Teams, backend, &predicate),
                "EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = teams.id AND (m.user_id = $1))"
            );
        }
        let none = Predicate::NoneOf(
            Collection::TeamsOfUser,
            Box::new(text(Field::Literal("direct"), Comparison::Equal, "x")),
        );
        assert_eq!(
            sql_for(Table::Users, Backend::Sqlite, &none),
            "(NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id AND (lower('direct') = lower($1))))"
        );
    }

    #[test]
    fn emails_are_the_list_or_else_the_email_column() {
        let work = Predicate::Any(
            Collection::Emails,
            Box::new(text(
                Field::Element(Element::Text("type")),
                Comparison::Equal,
                "work",
            )),
        );
        assert_eq!(
            sql_for(Table::Users, Backend::Sqlite, &work),
            "(EXISTS (SELECT 1 FROM json_each(users.attributes, '$.emails') AS e WHERE \
             (lower((CASE WHEN e.type = 'object' THEN json_extract(e.value, '$.type') WHEN 'type' = 'value' THEN e.value END)) = lower($1))) \
             OR (json_type(users.attributes, '$.emails') IS NULL AND users.email IS NOT NULL AND (lower('work') = lower($2))))"
        );
        assert!(sql_for(Table::Users, Backend::Postgres, &work)
            .contains(" OR ((CAST(users.attributes AS jsonb) -> 'emails') IS NULL AND users.email IS NOT NULL AND (lower('work') = lower($2))))"));
        let formatted = Predicate::Any(
            Collection::Emails,
            Box::new(Predicate::Present(Field::Element(Element::Text(
                "formatted",
            )))),
        );
        assert!(refusal(Table::Users, &formatted).contains("email column"));
    }

    #[test]
    fn sorting_puts_unassigned_values_last_and_ends_on_the_stable_order() {
        let c = Compiler::new(Table::Users, Backend::Sqlite);
        let sort = |field, descending| Sort { field, descending };
        assert_eq!(
            c.order_by(Some(&sort(Field::Email, false))).expect("sorts"),
            "(users.email IS NULL) ASC, lower(users.email) ASC, users.created, users.id"
        );
        assert_eq!(
            c.order_by(Some(&sort(Field::UserName, true)))
                .expect("sorts"),
            "users.user_name_folded DESC, users.created, users.id",
            "userName is never NULL"
        );
        assert_eq!(c.order_by(None).expect("sorts"), "users.created, users.id");
        assert!(c
            .order_by(Some(&sort(Field::Element(Element::RelatedId), false)))
            .is_err());
    }

    #[test]
    fn predicates_the_store_cannot_answer_are_refused() {
        let on_teams = Predicate::Present(Field::Active);
        assert!(refusal(Table::Teams, &on_teams).contains("not a field of teams"));
        let loose_element = Predicate::Present(Field::Element(Element::RelatedId));
        assert!(refusal(Table::Users, &loose_element).contains("outside"));
        let nested = Predicate::Any(
            Collection::AttributeList("roles"),
            Box::new(Predicate::Any(
                Collection::AttributeList("ims"),
                Box::new(Predicate::Present(Field::Element(Element::Text("value")))),
            )),
        );
        assert!(refusal(Table::Users, &nested).contains("nested"));
        let quoted = Predicate::Present(Field::Attribute {
            keys: vec!["x') OR 1=1 --"],
            case: Case::Exact,
        });
        assert!(refusal(Table::Users, &quoted).contains("cannot be used as a name"));
        let mismatched = Predicate::Compare {
            field: Field::Created,
            op: Comparison::Equal,
            value: Value::Bool(true),
        };
        refusal(Table::Users, &mismatched);
        let members_of_a_user = Predicate::Any(
            Collection::MembersOfTeam,
            Box::new(Predicate::Present(Field::Element(Element::RelatedId))),
        );
        assert!(refusal(Table::Users, &members_of_a_user).contains("not a collection of users"));
    }
}
