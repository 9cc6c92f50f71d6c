//! Locks that hold across replicas on PostgreSQL.
//!
//! Several `scimsync serve` processes may share one PostgreSQL database. Two kinds of
//! advisory lock keep them from stepping on each other:
//!
//! - the **writer lock**, a transaction-scoped `pg_advisory_xact_lock` taken at the
//!   start of every [`WriteTx`](super::WriteTx): writers on all replicas queue one
//!   behind the other, exactly as SQLite's single writer does within one process. The
//!   server releases it at commit or rollback, and when the connection drops (a replica
//!   that dies mid-transaction cannot leave it held);
//! - a **sync lock** per IdP, a session-scoped `pg_try_advisory_lock` held on a
//!   connection set aside for the length of one scheduled run: only the replica that
//!   gets it runs the sync, the others skip that tick. If the replica dies, its
//!   connection closes and the server releases the lock.
//!
//! On SQLite the writer lock is an in-process matter (the writer mutex in [`Store`];
//! SQLite itself serialises writers across processes). The sync lock is not: `scimsync
//! apply --idp` runs in its own process beside the daemon. There it is an exclusive
//! transaction held open on a small lock file beside the database, one per IdP: SQLite
//! locks files across processes, and the operating system drops the lock with the
//! process, so a CLI run that is killed cannot leave it held either.

use super::{Backend, Store, StoreResult};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Any, Connection, Row};

/// A stable 64-bit key for an advisory lock name (FNV-1a). Every replica, whatever
/// its build, must compute the same key for the same name, which rules out std's
/// hasher (its algorithm is unspecified).
pub fn lock_key(name: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The advisory lock every write transaction takes on PostgreSQL.
pub fn writer_lock_key() -> i64 {
    lock_key("scimsync:write")
}

/// The advisory lock a scheduled sync of `idp` holds on PostgreSQL.
pub fn sync_lock_key(idp: &str) -> i64 {
    lock_key(&format!("sync:{idp}"))
}

/// Blocks until this transaction holds the writer lock (PostgreSQL only).
///
/// `pg_advisory_xact_lock` returns `void`, which the `Any` driver cannot decode, so
/// the call sits in a FROM clause and the query returns a plain integer.
pub(crate) async fn lock_writers(conn: &mut sqlx::AnyConnection) -> StoreResult<()> {
    sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
        .bind(writer_lock_key())
        .execute(conn)
        .await?;
    Ok(())
}

/// Proof that this replica may run an IdP's scheduled sync; release it when the run
/// is over. Dropping it without [`SyncLock::release`] (a cancelled run) closes the
/// connection that holds the lock, which releases it on the server too.
pub struct SyncLock {
    idp: String,
    key: i64,
    /// The session holding the lock on PostgreSQL; `None` on SQLite.
    conn: Option<PoolConnection<Any>>,
    /// On SQLite, the connection holding the lock file's exclusive transaction;
    /// `None` for an in-memory database (which no other process can open).
    file: Option<SqliteConnection>,
}

impl SyncLock {
    pub fn idp(&self) -> &str {
        &self.idp
    }

    /// Gives the lock back so that the next tick may run on any replica.
    pub async fn release(mut self) {
        if let Some(file) = self.file.take() {
            // Closing ends the transaction, and with it the file lock.
            if let Err(e) = file.close().await {
                tracing::warn!(idp = %self.idp, error = %e, "closing the sync lock file failed");
            }
        }
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1) AS unlocked")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get::<bool, _>("unlocked"));
        match unlocked {
            // Back to the pool: the session no longer holds anything.
            Ok(true) => drop(conn),
            other => {
                // The lock may still be held by this session; a pooled connection
                // must never carry it, so close the connection instead.
                tracing::warn!(idp = %self.idp, outcome = ?other,
                    "could not release the sync lock cleanly; closing its connection");
                drop(conn.detach());
            }
        }
    }
}

impl Drop for SyncLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not released (the run was cancelled): closing the session is the only
            // synchronous way to make sure the server lets go of the lock.
            drop(conn.detach());
        }
    }
}

impl Store {
    /// Tries to become the one process running a sync of `idp` (a scheduled run, or
    /// `scimsync apply --idp`). `None` means another replica or process holds it
    /// right now.
    pub async fn try_sync_lock(&self, idp: &str) -> StoreResult<Option<SyncLock>> {
        let key = sync_lock_key(idp);
        if self.backend() == Backend::Sqlite {
            return self.try_sqlite_sync_lock(idp, key).await;
        }
        let mut conn = self.pool().acquire().await?;
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        let locked: bool = row.try_get("locked")?;
        Ok(locked.then(|| SyncLock {
            idp: idp.to_owned(),
            key,
            conn: Some(conn),
            file: None,
        }))
    }

    async fn try_sqlite_sync_lock(&self, idp: &str, key: i64) -> StoreResult<Option<SyncLock>> {
        let row = sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_optional(self.pool())
            .await?;
        let database: Option<String> = row.map(|r| r.try_get("file")).transpose()?;
        let mut lock = SyncLock {
            idp: idp.to_owned(),
            key,
            conn: None,
            file: None,
        };
        let Some(database) = database.filter(|f| !f.is_empty()) else {
            return Ok(Some(lock));
        };
        // Named by the key, not the IdP name, which may hold any character.
        let path = format!(
            "{database}.sync-{:016x}.lock",
            u64::from_ne_bytes(key.to_ne_bytes())
        );
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            // Ask once: a held lock is an answer, not something to wait for.
            .busy_timeout(std::time::Duration::ZERO);
        // Connecting may already meet the lock (setting up the connection reads the file).
        let attempt = async {
            let mut conn = SqliteConnection::connect_with(&options).await?;
            sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await?;
            Ok::<_, sqlx::Error>(conn)
        };
        match attempt.await {
            Ok(conn) => {
                lock.file = Some(conn);
                Ok(Some(lock))
            }
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("5") || e.message().contains("locked") =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        // FNV-1a of the empty string is its offset basis: the function is the standard one.
        assert_eq!(lock_key(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(sync_lock_key("entra"), sync_lock_key("entra"));
        assert_ne!(sync_lock_key("entra"), sync_lock_key("okta"));
        assert_ne!(sync_lock_key("write"), writer_lock_key());
    }
}
