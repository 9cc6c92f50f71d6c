//! Lists of users and teams: a [`ListQuery`] run as one page and a count, with
//! sorting, paging and counting done by the database, and the two relations a list
//! renders (a user's teams, a team's members) fetched for a whole page at once.

use super::query::{Compiler, ListQuery, Param, QueryError, QueryResult, Sql, Table};
use super::rows::{team_from_row, user_from_row, uuid, TEAM_COLUMNS, USER_COLUMNS};
use super::{Backend, Store, StoreError, StoreResult};
use crate::domain::{Team, TeamName, User};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct Listed<T> {
    /// How many rows match the filter, on all pages.
    pub total: u64,
    pub items: Vec<T>,
}

/// A team as one of a user's teams.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRef {
    pub id: Uuid,
    pub display_name: TeamName,
}

/// A member of a team, by id only, so that a roster is read from the memberships
/// primary key without touching the users table.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRef {
    pub id: Uuid,
}

impl Store {
    /// One page of users matching a query, and how many match in all.
    pub async fn list_users(&self, query: &ListQuery) -> QueryResult<Listed<User>> {
        // The Debug text holds every field of the query, the whole predicate included,
        // so equal keys mean equal SQL.
        let key = format!("{query:?}");
        let read = async {
            let rows = self.list_rows(Table::Users, USER_COLUMNS, query).await?;
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

    /// A whole rendered answer (an HTTP body), kept like the reads it was made from:
    /// served while nothing it could depend on has changed since. `key` must name
    /// everything the answer depends on. `ticket` is the request's token check's (see
    /// [`super::TokenCheck::ticket`]): taken before `render` is polled, so what it
    /// reads is at least as new as the entry's stamp.
    pub async fn answer<E>(
        &self,
        ticket: super::Ticket,
        key: &[u8],
        render: impl std::future::Future<Output = Result<super::Answer, E>>,
    ) -> Result<super::Answer, E> {
        self.cache
            .through_at(
                ticket,
                |cached| cached.answer(key).cloned(),
                render,
                |cached, answer| cached.put_answer(key, answer),
            )
            .await
    }

    /// One page of teams matching a query, and how many match in all.
    pub async fn list_teams(&self, query: &ListQuery) -> QueryResult<Listed<Team>> {
        let rows = self.list_rows(Table::Teams, TEAM_COLUMNS, query).await?;
        Ok(Listed {
            total: rows.total,
            items: rows
                .items
                .iter()
                .map(team_from_row)
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn list_rows(
        &self,
        table: Table,
        columns: &str,
        query: &ListQuery,
    ) -> QueryResult<Listed<AnyRow>> {
        let (count, page) = list_statements(table, columns, query, self.backend())?;
        // The count and the page are independent walks of the same index: run them on
        // two connections at once, so a list costs the longer of the two, not the sum.
        let rows = async {
            if query.limit == 0 {
                return Ok(Vec::new());
            }
            page.query()
                .fetch_all(self.pool())
                .await
                .map_err(QueryError::from)
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
    async fn count(&self, count: &Sql) -> QueryResult<u64> {
        let key = format!("{}\u{0}{:?}", count.text, count.params);
        let read = async {
            let total: i64 = count.query().fetch_one(self.pool()).await?.try_get("n")?;
            Ok::<_, QueryError>(u64::try_from(total).unwrap_or(0))
        };
        self.cache
            .through(
                |cached| cached.counts.get(&key).copied(),
                read,
                |cached, total| cached.put_count(key.clone(), *total),
            )
            .await
    }

    /// The teams of each of `users`, ordered by name.
    pub async fn groups_of_users(
        &self,
        users: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, Vec<GroupRef>>> {
        let mut out: HashMap<Uuid, Vec<GroupRef>> = HashMap::new();
        let ticket = self.cache.ticket().await;
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

    /// The members of each of `teams`, ordered by user id.
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

/// The count and the page of a list query.
fn list_statements(
    table: Table,
    columns: &str,
    query: &ListQuery,
    backend: Backend,
) -> QueryResult<(Sql, Sql)> {
    let name = table.name();
    let mut compiler = Compiler::new(table, backend);
    match &query.filter {
        Some(filter) => compiler.compile(filter)?,
        None => compiler.sql.push("1 = 1"),
    }
    let order = compiler.order_by(query.sort.as_ref())?;
    let mut count = Sql::new(backend);
    if query.filter.is_some() {
        count.text = format!(
            "SELECT COUNT(*) AS n FROM {name} WHERE {}",
            compiler.sql.text
        );
        count.params = compiler.sql.params.clone();
    } else {
        // Kept by triggers (migration 0002): one row instead of a walk of an index.
        count.text = format!("SELECT n FROM row_counts WHERE name = '{name}'");
    }
    // A late row lookup: the inner query pages over the index that serves the
    // order (`created, id`) without touching the rows it skips, and only the
    // page's rows are read from the table. A deep page of a large store costs a
    // walk of the index instead of reading every skipped row.
    let mut page = compiler.sql;
    page.text = format!(
        "SELECT {} FROM {name} WHERE {name}.id IN (SELECT {name}.id FROM {name} WHERE {} \
         ORDER BY {order} LIMIT ",
        qualify(name, columns),
        page.text
    );
    page.bind(Param::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)));
    page.push(" OFFSET ");
    page.bind(Param::Int(i64::try_from(query.offset).unwrap_or(i64::MAX)));
    page.push(&format!(") ORDER BY {order}"));
    Ok((count, page))
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
    use crate::store::query::{Comparison, Field, Predicate, Value};

    fn query(filter: Option<Predicate>) -> ListQuery {
        ListQuery {
            filter,
            sort: None,
            offset: 200,
            limit: 100,
        }
    }

    #[test]
    fn an_unfiltered_list_is_counted_from_the_kept_row_counts() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let (count, page) =
                list_statements(Table::Teams, "id, display_name", &query(None), backend)
                    .expect("compiles");
            assert_eq!(count.text, "SELECT n FROM row_counts WHERE name = 'teams'");
            assert!(count.params.is_empty());
            assert_eq!(
                page.text,
                "SELECT teams.id, teams.display_name FROM teams WHERE teams.id IN \
                 (SELECT teams.id FROM teams WHERE 1 = 1 ORDER BY teams.created, teams.id \
                 LIMIT $1 OFFSET $2) ORDER BY teams.created, teams.id"
            );
            assert_eq!(format!("{:?}", page.params), "[Int(100), Int(200)]");
        }
    }

    #[test]
    fn a_filtered_page_is_a_late_row_lookup_sharing_the_counts_parameters() {
        let filter = Predicate::Compare {
            field: Field::Active,
            op: Comparison::Equal,
            value: Value::Bool(false),
        };
        let (count, page) =
            list_statements(Table::Users, "id", &query(Some(filter)), Backend::Sqlite)
                .expect("compiles");
        assert_eq!(
            count.text,
            "SELECT COUNT(*) AS n FROM users WHERE (users.active = $1)"
        );
        assert_eq!(
            page.text,
            "SELECT users.id FROM users WHERE users.id IN (SELECT users.id FROM users WHERE \
             (users.active = $1) ORDER BY users.created, users.id LIMIT $2 OFFSET $3) \
             ORDER BY users.created, users.id"
        );
        assert_eq!(
            format!("{:?}", page.params),
            "[Bool(false), Int(100), Int(200)]"
        );
    }

    #[test]
    fn in_lists_use_anonymous_placeholders_on_sqlite_only() {
        assert_eq!(placeholders(Backend::Sqlite, 3), "?, ?, ?");
        assert_eq!(placeholders(Backend::Postgres, 3), "$1, $2, $3");
    }
}
