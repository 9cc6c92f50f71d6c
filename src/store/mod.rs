//! The only module that speaks SQL.
//!
//! One `Store` serves both backends through sqlx's `Any` driver, so every query is
//! written once in portable SQL: `$n` placeholders in ascending order, text UUIDs and
//! timestamps, `BOOLEAN` columns. Reads go straight to the pool; every write runs in a
//! [`WriteTx`], which holds the process-wide writer lock so that concurrent requests
//! queue in memory instead of failing with `database is locked` (SQLite) or tying up
//! pooled connections while they wait. On SQLite the writer has a connection of its
//! own; on PostgreSQL a write takes a pooled one and the cross-replica writer lock
//! (see [`locks`]).

pub mod actual;
mod audit;
mod backup;
mod checkpoint;
pub mod console;
mod generations;
mod keys;
pub mod locks;
pub mod quarantine;
mod read_cache;
mod refold;
pub mod retention;
mod rows;
mod tokens;
pub use tokens::TokenPrincipal;
pub mod lists;
pub mod query;
pub mod sync_state;
pub mod targets;
mod teams;
mod users;
mod watermark;

pub use audit::{AuditEntry, AuditNames, ExportedEntry, KeyOwner};
pub use backup::{backup_sqlite, BackupError};
pub use generations::as_of;
pub use keys::{DeletedKey, KeyPrincipal, NamedKey};
pub use locks::SyncLock;
pub use read_cache::{Answer, CacheStats, Ticket, TokenCheck};

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Connection, Transaction};
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
    /// A team-scoped key for a user who is not in that team: the key would speak for
    /// a team the IdP did not put them in.
    #[error("the key's user is not a member of its team")]
    NotAMember,
    /// A row that cannot be turned back into a domain value (hand-edited database?).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The start-up re-fold of userNames found names it cannot fold; the text names
    /// the users and says what the operator must do.
    #[error("{0}")]
    UserNamesNeedRenaming(String),
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

/// The page cache of a pooled SQLite connection, which reads (the writer has its own
/// connection, with SQLite's default 2 MB). Each connection's cache is resident memory
/// that a busy daemon fills; most reads are answered from the read cache, and a page
/// this cache misses is one `pread` from the operating system's, so 1 MB a reader keeps
/// the daemon's memory lower (issue #16, BENCHMARKS.md) at no measurable cost.
const READER_CACHE_SIZE: &str = "PRAGMA cache_size = -1024";

/// The writer's connection keeps its statement journals in memory. A savepoint, and
/// any statement that may fail half-way inside a transaction, journals the pages it
/// changes so that it can be undone alone; past 64 KB SQLite spills that journal to a
/// temporary file, created and deleted again by every group commit of the SCIM writes
/// (`reconcile::batch`), whose savepoints routinely touch more. The journal is never
/// larger than the pages one statement or one batch changes, and readers keep the
/// default, so that a large sort still goes to disk.
const SQLITE_WRITER_PRAGMAS: &[&str] = &["PRAGMA temp_store = MEMORY"];

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
    ///
    /// On SQLite the mutex also holds the writer's own connection (opened on first
    /// use, and again after a failure): a writer never waits inside the lock for a
    /// pooled connection that readers hold, nor pays the ping sqlx makes on every
    /// return to the pool, and the pool is left to readers.
    writer: Arc<Mutex<Option<sqlx::AnyConnection>>>,
    /// How to open the writer's connection.
    options: Arc<AnyConnectOptions>,
    /// Hot read results, valid until the next commit by anyone (see [`read_cache`]).
    cache: Arc<read_cache::ReadCache>,
    /// SQLite in a file: checkpoints the WAL so that the writer need not.
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

/// The settings every connection starts with.
async fn prepare_session(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> Result<(), sqlx::Error> {
    let session = match backend {
        Backend::Sqlite => SQLITE_PRAGMAS,
        Backend::Postgres => POSTGRES_SESSION,
    };
    for statement in session {
        sqlx::Executor::execute(&mut *conn, *statement).await?;
    }
    Ok(())
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
                    prepare_session(conn, backend).await?;
                    if backend == Backend::Sqlite {
                        sqlx::Executor::execute(&mut *conn, READER_CACHE_SIZE).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        // Before anything writes, so that the writer's connection is opened knowing
        // whether it must checkpoint the WAL itself.
        let checkpointer = match backend {
            Backend::Sqlite if sqlite_file(&url).is_some() => {
                Some(Arc::new(checkpoint::Checkpointer::start(options.clone())))
            }
            _ => None,
        };
        let mut store = Store {
            pool,
            backend,
            writer: Arc::new(Mutex::new(None)),
            options: Arc::new(options),
            cache: Arc::new(read_cache::ReadCache::off()),
            checkpointer,
        };
        store.migrate().await?;
        // Before the read cache is on, so that nothing read before it is cached.
        store.refold_user_names().await?;
        store.cache = Arc::new(match backend {
            Backend::Sqlite => sqlite_read_cache(&url).await,
            Backend::Postgres => read_cache::ReadCache::generations(generations::Generations::new(
                store.options.clone(),
            )),
        });
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

    /// What the read cache has answered so far (for tests and diagnostics).
    pub fn read_cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        if let Some(writer) = self.writer.lock().await.take() {
            // Best effort: the database is consistent whether or not this succeeds.
            let _ = writer.close().await;
        }
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
        if self.backend == Backend::Postgres {
            let writer = self.writer.clone().lock_owned().await;
            let mut tx = self.pool.begin().await?;
            // Dropping `tx` on error rolls back, which also frees the lock if it was granted.
            locks::lock_writers(&mut tx).await?;
            return Ok(WriteTx {
                writer: Some(writer),
                postgres: Some(tx),
                open: true,
                at_commit: Vec::new(),
                bulk: false,
                pool: Some(self.pool.clone()),
                analyze: false,
                cache: self.cache.clone(),
                checkpointer: None,
                tokens_before: None,
            });
        }
        let writer = self.sqlite_writer().await?;
        // `open` before the BEGIN is sent: a request cancelled while it is under way
        // still rolls back (in `Drop`) rather than leave the writer mid-transaction.
        let mut tx = WriteTx {
            writer: Some(writer),
            postgres: None,
            open: true,
            at_commit: Vec::new(),
            bulk: false,
            pool: None,
            analyze: false,
            cache: self.cache.clone(),
            checkpointer: self.checkpointer.clone(),
            tokens_before: None,
        };
        // IMMEDIATE takes SQLite's write lock now, waiting out another process (the
        // CLI) under busy_timeout, instead of failing at the first write.
        if !self.cache.is_wal() {
            sqlx::query("BEGIN IMMEDIATE").execute(tx.conn()).await?;
            return Ok(tx);
        }
        // With the lock held nobody else can commit: the header read now is the state
        // this transaction starts from (see `WriteTx::commit`).
        let generation = sqlx::query(&format!("BEGIN IMMEDIATE; {TOKENS_GENERATION}"))
            .fetch_all(tx.conn())
            .await?;
        tx.tokens_before = tokens_generation(&generation).zip(self.cache.watermark());
        Ok(tx)
    }

    /// SQLite: the writer lock with the writer's connection, opened if need be.
    async fn sqlite_writer(&self) -> StoreResult<OwnedMutexGuard<Option<sqlx::AnyConnection>>> {
        let mut writer = self.writer.clone().lock_owned().await;
        if writer.is_none() {
            let mut conn = sqlx::AnyConnection::connect_with(&self.options).await?;
            prepare_session(&mut conn, self.backend).await?;
            for statement in SQLITE_WRITER_PRAGMAS {
                sqlx::Executor::execute(&mut conn, *statement).await?;
            }
            if self.checkpointer.is_some() {
                let backstop = checkpoint::WRITER_BACKSTOP_FRAMES;
                sqlx::Executor::execute(
                    &mut conn,
                    format!("PRAGMA wal_autocheckpoint = {backstop}").as_str(),
                )
                .await?;
            }
            *writer = Some(conn);
        }
        Ok(writer)
    }
}

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls it back.
///
/// On SQLite the transaction is ours rather than sqlx's: sqlx sends BEGIN and COMMIT
/// as commands of their own, each a round trip to the connection's worker thread,
/// and those hand-offs, made while every other writer waits on the writer lock,
/// are what bounds write throughput. Owning it lets the last statement of a write
/// (its audit rows, see [`WriteTx::at_commit`]) travel with the COMMIT.
pub struct WriteTx {
    /// The writer lock, and on SQLite the connection the transaction runs on. An
    /// `Option` so that a rollback on drop can hold it until done.
    writer: Option<OwnedMutexGuard<Option<sqlx::AnyConnection>>>,
    /// On PostgreSQL, a pooled connection's transaction (sqlx's, which rolls itself
    /// back when dropped).
    postgres: Option<Transaction<'static, Any>>,
    /// SQLite: a BEGIN was (or may have been) sent and no COMMIT has succeeded.
    open: bool,
    /// Statements to run just before COMMIT, in the same round trip on SQLite.
    at_commit: Vec<Deferred>,
    /// SQLite: the connection has the big page cache of `begin_bulk`, which a rollback
    /// must give back, since the writer's connection lives on.
    pub(crate) bulk: bool,
    /// PostgreSQL: the pool the transaction came from, and whether to refresh the
    /// planner's statistics on it once the transaction has committed (see
    /// [`WriteTx::end_bulk`]).
    pool: Option<AnyPool>,
    pub(crate) analyze: bool,
    /// The read cache, told about the commit (see [`WriteTx::commit`]).
    cache: Arc<read_cache::ReadCache>,
    /// SQLite: told how long the WAL has grown after the commit.
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
    /// SQLite: the tokens generation and the wal-index header when the transaction
    /// began, with the write lock held.
    tokens_before: Option<(i64, watermark::Watermark)>,
}

/// The tokens generation, which triggers bump on every change to `scim_tokens` that a
/// token check could see (migration 0011).
const TOKENS_GENERATION: &str = "SELECT tokens FROM cache_generations WHERE id = 1";

fn tokens_generation(rows: &[sqlx::any::AnyRow]) -> Option<i64> {
    use sqlx::Row;
    rows.first()?.try_get("tokens").ok()
}

/// A point inside a [`WriteTx`] (see [`WriteTx::savepoint`]).
#[derive(Debug)]
#[must_use = "a savepoint is kept unless rolled back to"]
pub struct Savepoint {
    name: &'static str,
    /// How many statements were kept for COMMIT when it was taken.
    at_commit: usize,
}

/// SQLite's default page cache (2 MB), which `end_bulk` and a rollback restore.
pub(crate) const DEFAULT_CACHE_SIZE: &str = "PRAGMA cache_size = -2000";

/// A statement whose parameters are all text, kept for [`WriteTx::commit`].
struct Deferred {
    sql: String,
    binds: Vec<String>,
}

/// Runs `sql` with text parameters bound in order.
pub(crate) async fn execute_text(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    binds: Vec<String>,
) -> Result<(), sqlx::Error> {
    let mut query = sqlx::query(sql);
    for value in binds {
        query = query.bind(value);
    }
    query.execute(conn).await?;
    Ok(())
}

impl WriteTx {
    pub async fn commit(mut self) -> StoreResult<()> {
        let deferred = std::mem::take(&mut self.at_commit);
        if let Some(mut tx) = self.postgres.take() {
            for d in deferred {
                execute_text(&mut tx, &d.sql, d.binds).await?;
            }
            tx.commit().await?;
            self.open = false;
            self.cache.committed();
            if let (true, Some(pool)) = (self.analyze, self.pool.take()) {
                // Other writers need not wait for the statistics.
                drop(self.writer.take());
                retention::analyze_after_bulk(&pool).await;
            }
            return Ok(());
        }
        // One multi-statement round trip; sqlx hands each statement its share of the
        // parameters in order, which is why these use anonymous `?` placeholders.
        let mut sql = String::new();
        let mut binds = Vec::new();
        for d in deferred {
            sql.push_str(&d.sql);
            sql.push_str("; ");
            binds.extend(d.binds);
        }
        let Some((generation, before)) = self.tokens_before else {
            sql.push_str("COMMIT");
            // On failure `open` stays set, and `Drop` rolls back.
            execute_text(self.conn(), &sql, binds).await?;
            self.open = false;
            return Ok(());
        };
        // The tokens generation travels with the COMMIT, so knowing whether this
        // transaction changed the tokens costs no round trip of its own.
        sql.push_str(TOKENS_GENERATION);
        sql.push_str("; COMMIT");
        let mut query = sqlx::query(&sql);
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(self.conn()).await?;
        self.open = false;
        if let Some(after) = self.cache.watermark() {
            if tokens_generation(&rows) == Some(generation) && after.is_one_commit_after(&before) {
                self.cache.tokens_survive(before, after);
            }
            if let Some(checkpointer) = &self.checkpointer {
                checkpointer.committed(after.wal_frames());
            }
        }
        Ok(())
    }

    /// Keeps `sql` (its parameters all text, anonymous `?` on SQLite) to run just
    /// before COMMIT: on SQLite in the same round trip, so that a write's final audit
    /// insert costs no hand-off of its own. Only for statements nothing later in the
    /// transaction depends on; a rollback discards them with everything else.
    pub(crate) fn at_commit(&mut self, sql: String, binds: Vec<String>) {
        self.at_commit.push(Deferred { sql, binds });
    }

    /// Marks a point that what follows can be undone to with [`WriteTx::rollback_to`],
    /// leaving what came before in the transaction (several changes that share one
    /// transaction, each to be refused alone). `name` must be a plain identifier.
    ///
    /// A savepoint that is kept needs no release: COMMIT releases every savepoint, and
    /// a RELEASE would cost a round trip per change.
    pub async fn savepoint(&mut self, name: &'static str) -> StoreResult<Savepoint> {
        sqlx::query(&format!("SAVEPOINT {name}"))
            .execute(self.conn())
            .await?;
        Ok(Savepoint {
            name,
            at_commit: self.at_commit.len(),
        })
    }

    /// [`WriteTx::savepoint`], then the row by id of `table` (`columns` of it), if any:
    /// the first read of a change that may have to be undone alone. On SQLite both go in
    /// one round trip. The savepoint is returned whenever it was taken, even if the read
    /// failed (a failed statement leaves a PostgreSQL transaction unusable until rolled
    /// back to it).
    pub(crate) async fn savepoint_then_row(
        &mut self,
        name: &'static str,
        table: &str,
        columns: &str,
        id: uuid::Uuid,
    ) -> (Option<Savepoint>, StoreResult<Option<sqlx::any::AnyRow>>) {
        if self.postgres.is_some() {
            let savepoint = match self.savepoint(name).await {
                Ok(savepoint) => savepoint,
                Err(e) => return (None, Err(e)),
            };
            let row = sqlx::query(&format!("SELECT {columns} FROM {table} WHERE id = $1"))
                .bind(id.to_string())
                .fetch_optional(self.conn())
                .await
                .map_err(StoreError::from);
            return (Some(savepoint), row);
        }
        let savepoint = Savepoint {
            name,
            at_commit: self.at_commit.len(),
        };
        let row = sqlx::query(&format!(
            "SAVEPOINT {name}; SELECT {columns} FROM {table} WHERE id = ?"
        ))
        .bind(id.to_string())
        // `fetch_optional` stops after the first statement, which returns no rows.
        .fetch_all(self.conn())
        .await
        .map(|rows| rows.into_iter().next());
        match row {
            Ok(row) => (Some(savepoint), Ok(row)),
            // Whether the SAVEPOINT ran is unknown; nothing was written after it either
            // way, and a savepoint left over is released by the COMMIT.
            Err(e) => (None, Err(e.into())),
        }
    }

    /// Undoes everything since `savepoint`, including the statements kept for COMMIT
    /// since then. An error means the transaction can no longer be trusted (SQLite
    /// rolls back a whole transaction on some errors, and the savepoint is gone with
    /// it): the caller must drop it.
    pub async fn rollback_to(&mut self, savepoint: Savepoint) -> StoreResult<()> {
        let name = savepoint.name;
        sqlx::query(&format!("ROLLBACK TO SAVEPOINT {name}"))
            .execute(self.conn())
            .await?;
        sqlx::query(&format!("RELEASE SAVEPOINT {name}"))
            .execute(self.conn())
            .await?;
        self.at_commit.truncate(savepoint.at_commit);
        // A large change undone half-way leaves the writer's connection with the big
        // page cache of `begin_bulk`, which outlives the transaction.
        if self.bulk {
            sqlx::query(DEFAULT_CACHE_SIZE).execute(self.conn()).await?;
            self.bulk = false;
        }
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        if let Some(tx) = self.postgres.as_mut() {
            return tx;
        }
        match self.writer.as_mut().and_then(|w| w.as_mut()) {
            Some(conn) => conn,
            None => unreachable!("begin_write opens the writer's connection; only drop takes it"),
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.postgres.is_some() || !self.open {
            return;
        }
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        let bulk = self.bulk;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // The writer lock is held until the rollback is done, so the next writer
                // finds the connection out of any transaction.
                runtime.spawn(async move {
                    let Some(conn) = writer.as_mut() else {
                        return;
                    };
                    let rolled_back = match sqlx::query("ROLLBACK").execute(&mut *conn).await {
                        Ok(_) => Ok(()),
                        // Cancelled during its BEGIN or COMMIT: nothing is open.
                        Err(e) if e.to_string().contains("no transaction is active") => Ok(()),
                        Err(e) => Err(e),
                    };
                    let reset = match (rolled_back, bulk) {
                        (Ok(()), true) => sqlx::query(DEFAULT_CACHE_SIZE)
                            .execute(conn)
                            .await
                            .map(|_| ()),
                        (result, _) => result,
                    };
                    if let Err(e) = reset {
                        tracing::warn!(error = %e, "rollback failed; reopening the writer's connection");
                        // Closing the connection rolls back whatever it held.
                        *writer = None;
                    }
                });
            }
            // No runtime to roll back on: closing the connection rolls back.
            Err(_) => *writer = None,
        }
    }
}

/// The read cache of a SQLite database file: on, unless the database lives in memory
/// or its wal-index cannot be read (then every read simply goes to the database).
/// The file of a SQLite URL (as `normalise_url` spells it), unless the database lives
/// in memory.
fn sqlite_file(url: &str) -> Option<&str> {
    let path = url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .unwrap_or_default();
    let in_memory = path.is_empty() || path == ":memory:" || url.contains("mode=memory");
    (!in_memory).then_some(path)
}

async fn sqlite_read_cache(url: &str) -> read_cache::ReadCache {
    let Some(path) = sqlite_file(url) else {
        return read_cache::ReadCache::off();
    };
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

    #[tokio::test]
    async fn a_bulk_write_that_is_rolled_back_gives_the_writer_its_page_cache_back() {
        use sqlx::Row;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bulk.db").display());
        let store = Store::open(&url, 2).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        tx.begin_bulk().await.unwrap();
        drop(tx);

        let mut tx = store.begin_write().await.unwrap();
        let row = sqlx::query("PRAGMA cache_size")
            .fetch_one(tx.conn())
            .await
            .unwrap();
        assert_eq!(row.try_get::<i64, _>(0).unwrap(), -2000);
    }

    #[tokio::test]
    async fn pooled_readers_keep_a_smaller_page_cache_than_the_writer() {
        use sqlx::Row;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("readers.db").display());
        let store = Store::open(&url, 2).await.unwrap();
        let reader = sqlx::query("PRAGMA cache_size")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(reader.try_get::<i64, _>(0).unwrap(), -1024);
        let mut tx = store.begin_write().await.unwrap();
        let writer = sqlx::query("PRAGMA cache_size")
            .fetch_one(tx.conn())
            .await
            .unwrap();
        assert_eq!(writer.try_get::<i64, _>(0).unwrap(), -2000);
    }

    #[tokio::test]
    async fn the_writer_keeps_statement_journals_in_memory_and_readers_leave_sorts_on_disk() {
        use sqlx::Row;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("journals.db").display());
        let store = Store::open(&url, 2).await.unwrap();
        const DEFAULT: i64 = 0;
        const MEMORY: i64 = 2;
        let reader = sqlx::query("PRAGMA temp_store")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(reader.try_get::<i64, _>(0).unwrap(), DEFAULT);
        let mut tx = store.begin_write().await.unwrap();
        let writer = sqlx::query("PRAGMA temp_store")
            .fetch_one(tx.conn())
            .await
            .unwrap();
        assert_eq!(writer.try_get::<i64, _>(0).unwrap(), MEMORY);
    }

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let t = now();
        let text = format_ts(t);
        assert_eq!(text.len(), "2026-11-29T00:00:00.000000Z".len());
        assert_eq!(parse_ts("t", &text).unwrap(), t);
    }
}
