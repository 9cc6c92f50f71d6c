//! `scimsync backup`: a consistent copy of a live SQLite database.
//!
//! `VACUUM INTO` reads the whole database inside one read transaction, so the copy is
//! the database as of one commit, whatever the daemon writes meanwhile (in WAL mode a
//! reader never blocks the writer, nor the writer it). It runs on a connection of its
//! own, opened without migrations: a backup must not change the database it copies,
//! even when this binary is newer than the daemon.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "`scimsync backup` copies a SQLite database; for PostgreSQL use its own tools, \
         e.g. `pg_dump --format=custom --file=scimsync.dump \"$DATABASE_URL\"` \
         (restore with pg_restore; see README.md, \"Backups and restore\")"
    )]
    Postgres,
    #[error("{0} is not a SQLite database URL (sqlite://PATH)")]
    NotSqlite(String),
    #[error("an in-memory database has nothing to back up")]
    InMemory,
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    #[error("{0} exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error("{0} is the database itself; write the backup to another file")]
    SameFile(PathBuf),
    #[error("{0}: the backup path must be valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies the SQLite database at `url` to `out` and returns the copy's size in bytes.
///
/// The copy is written to a temporary file beside `out` (mode 0600: it holds token and
/// key hashes), flushed to disk, then renamed over `out`, and the directory flushed,
/// so `out` is either the previous file or the whole new copy, never half of one.
/// An existing `out` is refused unless `force`.
pub async fn backup_sqlite(url: &str, out: &Path, force: bool) -> Result<u64, BackupError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::Postgres);
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(BackupError::NotSqlite(crate::config::redact_url_password(
            url,
        )));
    };
    let rest = rest.trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
        return Err(BackupError::InMemory);
    }
    let database = PathBuf::from(path);
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database));
    }
    if out.exists() {
        if !force {
            return Err(BackupError::Exists(out.to_owned()));
        }
        let same = std::fs::canonicalize(out).map_err(io(out))?
            == std::fs::canonicalize(&database).map_err(io(&database))?;
        if same {
            return Err(BackupError::SameFile(out.to_owned()));
        }
    }
    let directory = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".to_owned());
    // Dropped (and so removed) on every early return below.
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&directory)
        .map_err(io(&directory))?;
    let partial_path = partial
        .path()
        .to_str()
        .ok_or_else(|| BackupError::NotUtf8(partial.path().to_owned()))?
        .to_owned();

    let options = SqliteConnectOptions::new()
        .filename(&database)
        .create_if_missing(false)
        // The daemon may hold the write lock for a moment; a reader only needs it
        // while it opens the WAL.
        .busy_timeout(Duration::from_secs(10));
    let mut conn = SqliteConnection::connect_with(&options).await?;
    // VACUUM INTO accepts an empty file, which is what the temporary file is.
    let copied = sqlx::query("VACUUM INTO $1")
        .bind(&partial_path)
        .execute(&mut conn)
        .await;
    // Best effort: the copy is complete or failed either way.
    let _ = conn.close().await;
    copied?;

    // SQLite does not sync what VACUUM INTO writes; the rename must not reach the
    // disk before the data it names.
    partial
        .as_file()
        .sync_all()
        .map_err(io(Path::new(&partial_path)))?;
    if force {
        partial.persist(out).map_err(|e| BackupError::Io {
            path: out.to_owned(),
            source: e.error,
        })?;
    } else {
        // Refuses, atomically, a file that appeared since the check above.
        partial.persist_noclobber(out).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::Exists(out.to_owned())
            } else {
                BackupError::Io {
                    path: out.to_owned(),
                    source: e.error,
                }
            }
        })?;
    }
    std::fs::File::open(&directory)
        .and_then(|d| d.sync_all())
        .map_err(io(&directory))?;
    Ok(std::fs::metadata(out).map_err(io(out))?.len())
}
