//! Keeping the database in shape over months: pruning what `[audit] retain` lets go,
//! SQLite's periodic `PRAGMA optimize` and WAL checkpoints, PostgreSQL's statistics
//! after a bulk apply. The daemon's schedule for these is in `crate::maintenance`.

use super::{format_ts, Backend, Store, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::AnyPool;

/// A table that `[audit] retain` prunes, and the column that dates its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pruned {
    /// `audit_log`, by `at`.
    AuditLog,
    /// `deleted_api_keys` (the audit copies of purged keys), by `deleted`.
    DeletedApiKeys,
}

impl Pruned {
    pub const ALL: [Pruned; 2] = [Pruned::AuditLog, Pruned::DeletedApiKeys];

    pub fn table(self) -> &'static str {
        match self {
            Pruned::AuditLog => "audit_log",
            Pruned::DeletedApiKeys => "deleted_api_keys",
        }
    }

    /// The oldest `$2` rows dated before `$1`. The subquery is portable: SQLite
    /// has no `DELETE ... LIMIT` unless built with it, PostgreSQL none at all. Oldest
    /// first through the date's index (audit_log_at, deleted_api_keys_deleted), so
    /// a batch reads only the rows it deletes.
    fn delete_sql(self) -> &'static str {
        match self {
            Pruned::AuditLog => {
                "DELETE FROM audit_log WHERE id IN \
                 (SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2)"
            }
            Pruned::DeletedApiKeys => {
                "DELETE FROM deleted_api_keys WHERE id IN \
                 (SELECT id FROM deleted_api_keys WHERE deleted < $1 ORDER BY deleted LIMIT $2)"
            }
        }
    }
}

impl Store {
    /// Deletes at most `limit` rows of `table` dated before `before`, in one write
    /// transaction of its own, and says how many went. Fewer than `limit` means none
    /// older are left (as of this transaction).
    pub async fn prune_batch(
        &self,
        table: Pruned,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(table.delete_sql())
            .bind(format_ts(before))
            .bind(i64::from(limit))
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    /// SQLite: `PRAGMA optimize` (which analyses only tables whose statistics have
    /// gone stale, with SQLite's own limit on the rows it reads) and a WAL checkpoint.
    /// PASSIVE copies what it can without waiting for anyone; TRUNCATE (at shutdown,
    /// when nobody else should be reading) also empties the -wal file. Nothing on
    /// PostgreSQL, whose autovacuum does both jobs.
    ///
    /// Both run on the writer's connection, under the writer lock: `optimize` may
    /// write statistics, and there it never meets our own writer as a second one and
    /// waits out busy_timeout.
    ///
    /// Why a checkpoint cannot make the read cache (see [`super::read_cache`]) serve a
    /// stale answer: the cache trusts an entry while the wal-index header is
    /// byte-for-byte what it was when the entry was read, so the danger is a *change of
    /// data* that leaves the header as it was. A checkpoint changes no data: it copies
    /// pages already committed from the WAL into the database file, so whatever was
    /// cached is still what a fresh read would return. A PASSIVE checkpoint records its
    /// progress in the checkpoint-info block that follows the two header copies, which
    /// the cache does not read, so entries stay valid (correctly). When a writer then
    /// starts the WAL over from its first frame, or a TRUNCATE checkpoint resets it,
    /// the header gets new salts and a new checkpoint sequence number, so no later
    /// header can equal one from before the reset even if its frame count does: the
    /// cache sees a new watermark and starts empty, a miss and never a stale hit. The
    /// sentinel connection keeps the -shm file, where that header lives, from being
    /// reinitialised meanwhile (a checkpoint never removes it).
    pub async fn sqlite_maintenance(&self, checkpoint: Checkpoint) -> StoreResult<()> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        let mut writer = self.sqlite_writer().await?;
        let Some(conn) = writer.as_mut() else {
            return Ok(());
        };
        sqlx::query("PRAGMA optimize").execute(&mut *conn).await?;
        let sql = match checkpoint {
            Checkpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Checkpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        // The checkpoint answers (busy, log frames, frames checkpointed); a busy one
        // simply copies less, and the next one continues.
        sqlx::query(sql).fetch_all(&mut *conn).await?;
        Ok(())
    }
}

/// How much a SQLite checkpoint does (see [`Store::sqlite_maintenance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    Passive,
    Truncate,
}

/// The tables a bulk apply fills or empties by the thousands.
const BULK_TABLES: &str = "users, teams, memberships, api_keys";

/// PostgreSQL, after a bulk apply has committed: fresh planner statistics for the
/// tables it changed. Best effort: the apply has committed either way, and autovacuum
/// gets there eventually.
pub(crate) async fn analyze_after_bulk(pool: &AnyPool) {
    let started = std::time::Instant::now();
    match sqlx::query(&format!("ANALYZE {BULK_TABLES}"))
        .execute(pool)
        .await
    {
        Ok(_) => tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "statistics refreshed after a bulk apply"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot refresh statistics after a bulk apply"),
    }
}
