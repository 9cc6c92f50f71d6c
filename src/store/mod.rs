//! The only module that speaks SQL.
//!
//! One `Store` serves both backends through sqlx's `Any` driver, so every query is
//! written once in portable SQL: `$n` placeholders in ascending order, text UUIDs and
//! timestamps, `BOOLEAN` columns. Reads go straight to the pool; every write runs in a
//! [`WriteTx`], which holds the process-wide writer lock so that concurrent requests
//! queue in memory instead of failing with `database is locked` (SQLite) or tying up
//! pooled connections while they wait; on PostgreSQL it also takes the cross-replica
//! writer lock (see [`locks`]).

pub mod actual;
mod audit;
mod keys;
pub mod locks;
mod read_cache;
mod rows;
mod tokens;
pub use tokens::TokenPrincipal;
pub mod scim_query;
pub mod sync_state;
mod teams;
mod users;
mod watermark;

pub use audit::AuditEntry;
pub use keys::{DeletedKey, KeyPrincipal, PurgeReason};
pub use locks::SyncLock;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A unique constraint refused the write; the text names what collided.
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A row that cannot be turned back into a domain value (hand-edited database?).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// WAL lets readers proceed while a write commits; the busy timeout covers other
/// processes (the CLI) writing at the same moment; NORMAL sync is durable in WAL mode
/// except for the last transactions on power loss, never corrupting.
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
];

/// Session settings for PostgreSQL. A replica that vanishes without closing its
/// connections (power loss, network partition) must not keep its advisory locks (see
/// [`locks`]) for the kernel's default two hours: with these the server notices the
/// dead peer within about a minute, ends its sessions and so releases the locks.
const POSTGRES_SESSION: &[&str] = &[
    "SET tcp_keepalives_idle = 30",
    "SET tcp_keepalives_interval = 10",
    "SET tcp_keepalives_count = 3",
    "SET tcp_user_timeout = 60000",
];

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Writers of this process queue here. SQLite allows one writer at a time, so this
    /// avoids busy errors; on PostgreSQL it keeps waiters for the cross-replica lock to
    /// one per process, so a queue of writers never holds the whole pool.
    writer: Arc<Mutex<()>>,
    /// Hot read results, valid until the next commit by anyone (see [`read_cache`]).
    cache: Arc<read_cache::ReadCache>,
}

/// Timestamps are stored as fixed-width RFC 3339 text so they sort lexically.
pub fn format_ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(table: &'static str, raw: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            table,
            detail: format!("timestamp {raw:?}: {e}"),
        })
}

/// The current time truncated to what the database keeps, so values read back compare equal.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    parse_ts("clock", &format_ts(now)).unwrap_or(now)
}

impl Store {
    /// Connects, creating a SQLite file if needed, and applies pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalise_url(url)?;
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            // A SQLite connection cannot go stale, and the ping before every acquire
            // is one more hop to sqlx's worker thread on every request.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    let session = match backend {
                        Backend::Sqlite => SQLITE_PRAGMAS,
                        Backend::Postgres => POSTGRES_SESSION,
                    };
                    for statement in session {
                        sqlx::Executor::execute(&mut *conn, *statement).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let mut store = Store {
            pool,
            backend,
            writer: Arc::new(Mutex::new(())),
            cache: Arc::new(read_cache::ReadCache::off()),
        };
        store.migrate().await?;
        if backend == Backend::Sqlite {
            store.cache = Arc::new(sqlite_read_cache(&url).await);
        }
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("src/store/migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("src/store/migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction. Everything done through it commits together or not at all.
    ///
    /// Writers are serialised: within the process by a mutex taken before a connection
    /// is borrowed, and on PostgreSQL across every replica by a transaction-scoped
    /// advisory lock. Each write therefore reads the latest committed state (READ
    /// COMMITTED takes a fresh snapshot per statement) and no other write can slip in
    /// between its checks (If-Match, uniqueness) and its changes. Because nothing
    /// else writes concurrently, these transactions cannot hit serialization failures
    /// or deadlocks among themselves, so no retry loop is needed.
    pub async fn begin_write(&self) -> StoreResult<WriteTx> {
        let guard = self.writer.clone().lock_owned().await;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Dropping `tx` on error rolls back, which also frees the lock if it was granted.
            locks::lock_writers(&mut tx).await?;
        }
        Ok(WriteTx { tx, _guard: guard })
    }
}

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls it back.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _guard: OwnedMutexGuard<()>,
}

impl WriteTx {
    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

/// The read cache of a SQLite database file: on, unless the database lives in memory
/// or its wal-index cannot be read (then every read simply goes to the database).
async fn sqlite_read_cache(url: &str) -> read_cache::ReadCache {
    let path = url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return read_cache::ReadCache::off();
    }
    let sentinel = match watermark::Sentinel::open(url).await {
        Ok(sentinel) => sentinel,
        Err(e) => {
            tracing::warn!(error = %e, "read cache off: cannot hold the database open");
            return read_cache::ReadCache::off();
        }
    };
    match watermark::WalIndex::open(Path::new(path)) {
        Ok(index) => read_cache::ReadCache::on(index, sentinel),
        Err(e) => {
            tracing::warn!(error = %e, "read cache off: cannot read the WAL index");
            read_cache::ReadCache::off()
        }
    }
}

/// Accepts `sqlite://PATH`, `sqlite:PATH` and `postgres://...`; creates SQLite files on first use.
fn normalise_url(url: &str) -> StoreResult<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.trim_start_matches("//");
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut query: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if !query.iter().any(|p| p.starts_with("mode=")) && path != ":memory:" {
            query.push("mode=rwc".to_owned());
        }
        let joined = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        return Ok((Backend::Sqlite, format!("sqlite://{path}{joined}")));
    }
    Err(StoreError::UnsupportedUrl(url.to_owned()))
}

/// The directory a SQLite database lives in, which is where first-start files go.
pub fn sqlite_directory(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    let parent = Path::new(path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent
    })
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || db.message().contains("UNIQUE constraint failed")
                || db.code().as_deref() == Some("23505")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_gain_create_mode_and_keep_their_path() {
        assert_eq!(
            normalise_url("sqlite://scimsync.db").unwrap(),
            (Backend::Sqlite, "sqlite://scimsync.db?mode=rwc".to_owned())
        );
        assert_eq!(
            normalise_url("sqlite:/var/lib/scimsync/scimsync.db?mode=ro")
                .unwrap()
                .1,
            "sqlite:///var/lib/scimsync/scimsync.db?mode=ro"
        );
        assert!(normalise_url("mysql://x").is_err());
    }

    #[test]
    fn the_database_directory_is_where_first_start_files_go() {
        assert_eq!(
            sqlite_directory("sqlite://scimsync.db"),
            Some(PathBuf::from("."))
        );
        assert_eq!(
            sqlite_directory("sqlite:///var/lib/scimsync/scimsync.db"),
            Some(PathBuf::from("/var/lib/scimsync"))
        );
        assert_eq!(sqlite_directory("postgres://localhost/x"), None);
    }

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let t = now();
        let text = format_ts(t);
        assert_eq!(text.len(), "2026-11-29T00:00:00.000000Z".len());
        assert_eq!(parse_ts("t", &text).unwrap(), t);
    }
}
