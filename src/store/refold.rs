//! Brings `users.user_name_folded` up to the current [`FOLD_VERSION`] at start.
//!
//! The column is what the unique index and every lookup by userName use, so rows folded
//! by an older rule (version 1 was lowercase only) would let a decomposed or fullwidth
//! twin of an existing user in as a second account. The version the column was computed
//! with is kept in `fold_versions`: an ordinary start reads that one row, and only an
//! upgrade reads and re-folds the users.

use super::{Store, StoreError, StoreResult};
use crate::domain::{NameError, UserName, FOLD_VERSION};
use sqlx::Row;
use std::collections::HashMap;

const COLUMN: &str = "user_name_folded";

/// A stored user as the re-fold sees it.
struct StoredName {
    id: String,
    user_name: String,
    folded: String,
}

async fn recorded_version(conn: &mut sqlx::AnyConnection) -> StoreResult<i64> {
    let row = sqlx::query("SELECT version FROM fold_versions WHERE name = $1")
        .bind(COLUMN)
        .fetch_optional(conn)
        .await?;
    // No row: a hand-made database; treat it as folded by the oldest rule.
    Ok(match row {
        Some(row) => row.try_get("version")?,
        None => 1,
    })
}

impl Store {
    /// Re-folds every stored userName when the database was folded by another version
    /// of the rules, in one write transaction. Refuses (changing nothing) when two users
    /// become one name or a stored name is no longer a valid userName, naming them.
    pub(super) async fn refold_user_names(&self) -> StoreResult<()> {
        {
            let mut conn = self.pool().acquire().await?;
            if recorded_version(&mut conn).await? == FOLD_VERSION {
                return Ok(());
            }
        }
        let mut tx = self.begin_write().await?;
        // Another replica may have done it while this one waited for the writer lock.
        let from = recorded_version(tx.conn()).await?;
        if from == FOLD_VERSION {
            return Ok(());
        }
        let rows = sqlx::query(&format!(
            "SELECT id, user_name, {COLUMN} FROM users ORDER BY created, id"
        ))
        .fetch_all(tx.conn())
        .await?;
        let mut stored = Vec::with_capacity(rows.len());
        for row in &rows {
            stored.push(StoredName {
                id: row.try_get("id")?,
                user_name: row.try_get("user_name")?,
                folded: row.try_get(COLUMN)?,
            });
        }
        let changes = plan_refold(&stored).map_err(StoreError::UserNamesNeedRenaming)?;
        // Through a placeholder first: a row may take the folded name another row still
        // holds until its own update. No folded userName holds a control character.
        for (id, _) in &changes {
            sqlx::query(&format!("UPDATE users SET {COLUMN} = $1 WHERE id = $2"))
                .bind(format!("\u{1}{id}"))
                .bind(id.clone())
                .execute(tx.conn())
                .await?;
        }
        for (id, folded) in &changes {
            sqlx::query(&format!("UPDATE users SET {COLUMN} = $1 WHERE id = $2"))
                .bind(folded.clone())
                .bind(id.clone())
                .execute(tx.conn())
                .await?;
        }
        // An upsert, portable across both backends: the row exists after migration 0004
        // unless someone removed it.
        sqlx::query("DELETE FROM fold_versions WHERE name = $1")
            .bind(COLUMN)
            .execute(tx.conn())
            .await?;
        sqlx::query("INSERT INTO fold_versions (name, version) VALUES ($1, $2)")
            .bind(COLUMN)
            .bind(FOLD_VERSION)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        tracing::info!(
            from_version = from,
            to_version = FOLD_VERSION,
            users = stored.len(),
            refolded = changes.len(),
            "userNames re-folded to the current normalisation"
        );
        Ok(())
    }
}

/// The (id, new folded name) of every row whose folded name changes, or the operator's
/// instructions when the new rule makes two rows one name or refuses a stored name.
fn plan_refold(stored: &[StoredName]) -> Result<Vec<(String, String)>, String> {
    let mut problems = Vec::new();
    let mut holders: HashMap<String, &StoredName> = HashMap::with_capacity(stored.len());
    let mut changes = Vec::new();
    for row in stored {
        let name = match UserName::parse(&row.user_name) {
            Ok(name) => name,
            Err(e @ NameError::FormatCharacter { .. }) => {
                problems.push(format!("user {} ({:?}): {e}", row.id, row.user_name));
                continue;
            }
            Err(e) => {
                problems.push(format!(
                    "user {} ({:?}) is not a valid userName: {e}",
                    row.id, row.user_name
                ));
                continue;
            }
        };
        if let Some(first) = holders.get(name.folded()) {
            problems.push(format!(
                "users {} ({:?}) and {} ({:?}) are one userName once folded ({:?}); they may be \
                 one person with two accounts",
                first.id,
                first.user_name,
                row.id,
                row.user_name,
                name.folded()
            ));
            continue;
        }
        holders.insert(name.folded().to_owned(), row);
        if name.folded() != row.folded {
            changes.push((row.id.clone(), name.folded().to_owned()));
        }
    }
    if problems.is_empty() {
        return Ok(changes);
    }
    Err(format!(
        "the stored userNames cannot be brought to the current normalisation (width, NFC and \
         Unicode case folding; invisible format characters refused), so scimsync will not \
         start and has changed nothing:\n  - {}\nDecide which account is the person's. Rename \
         the other (or the name holding the format character) in the database, e.g. \
         `UPDATE users SET user_name = 'NEW NAME' WHERE id = 'ID';` (the folded form is \
         recomputed at the next start), then start scimsync and delete the renamed account \
         with SCIM (DELETE /scim/v2/Users/ID), which also revokes its API keys.",
        problems.join("\n  - ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, user_name: &str, folded: &str) -> StoredName {
        StoredName {
            id: id.to_owned(),
            user_name: user_name.to_owned(),
            folded: folded.to_owned(),
        }
    }

    #[test]
    fn only_rows_whose_fold_changes_are_rewritten() {
        let stored = [
            row("1", "Alice@example.com", "alice@example.com"),
            row("2", "JOSE\u{301}@example.com", "jose\u{301}@example.com"),
        ];
        let changes = plan_refold(&stored).unwrap_or_default();
        assert_eq!(
            changes,
            vec![("2".to_owned(), "jos\u{e9}@example.com".to_owned())]
        );
    }

    #[test]
    fn twins_and_format_characters_are_refused_naming_every_row() {
        let stored = [
            row("1", "jos\u{e9}@example.com", "jos\u{e9}@example.com"),
            row("2", "jose\u{301}@example.com", "jose\u{301}@example.com"),
            row("3", "bob\u{200B}@example.com", "bob\u{200B}@example.com"),
        ];
        let message = plan_refold(&stored).err().unwrap_or_default();
        assert!(
            message.contains("users 1 (\"jos\u{e9}@example.com\") and 2"),
            "{message}"
        );
        assert!(message.contains("user 3"), "{message}");
        assert!(message.contains("U+200B"), "{message}");
    }
}
