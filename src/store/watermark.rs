//! Knowing, without asking the database, whether anything was committed since a moment.
//!
//! In WAL mode every SQLite connection — of this process, of another replica's CLI, of
//! an operator's `scimsync token revoke` — publishes each commit by rewriting the
//! *wal-index header* at the start of the `-shm` file: the number of the last valid
//! WAL frame, the WAL salts (new on every WAL reset) and a change counter
//! (<https://www.sqlite.org/walformat.html>, "The WAL-Index Header"). SQLite's own
//! readers decide whether their page cache is still good by comparing that header with
//! the copy they kept; [`ReadCache`](super::read_cache::ReadCache) does the same for
//! whole query results. Reading it is one `pread` of 96 bytes, where a query is two
//! thread hand-offs to sqlx's SQLite worker.
//!
//! The header exists twice; a writer updates the second copy and then the first, so
//! two equal copies are a consistent header and two different ones mean a commit is
//! being published (answered as "unknown", which never serves from cache).
//!
//! The `-shm` file is reinitialised in place when the first connection to a database
//! opens it. [`Sentinel`] keeps one connection of ours open for the life of the store,
//! so that cannot happen while a cache depends on the header.

use sqlx::AnyConnection;
use sqlx::Connection;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// `sizeof(WalIndexHdr)`: the header, of which the `-shm` file begins with two copies.
const HEADER_LEN: usize = 48;
/// Offset of `isInit` in the header: zero until a connection has initialised it.
const IS_INIT: usize = 12;
/// Offset of `iChange`, a counter every commit increments (in native byte order, as
/// the header lives in shared memory).
const I_CHANGE: usize = 8;
/// Offset of `mxFrame`, the number of valid frames in the WAL: how far it has grown
/// since the last checkpoint that restarted it.
const MX_FRAME: usize = 16;

/// The state of the database as of one commit. Equal watermarks, read at two moments,
/// mean nothing was committed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark([u8; HEADER_LEN]);

impl Watermark {
    fn field(&self, offset: usize) -> u32 {
        let mut value = [0u8; 4];
        value.copy_from_slice(&self.0[offset..offset + 4]);
        u32::from_ne_bytes(value)
    }

    fn changes(&self) -> u32 {
        self.field(I_CHANGE)
    }

    /// How many frames the WAL holds (see [`super::checkpoint`]).
    pub fn wal_frames(&self) -> u32 {
        self.field(MX_FRAME)
    }

    /// Whether exactly one commit lies between `before` and `self`. A writer that read
    /// `before` while holding SQLite's write lock, and `self` after its COMMIT, knows
    /// then that the commit was its own and nobody else's. (A checkpoint that restarts
    /// the WAL rewrites the header without counting, but changes no data.)
    pub fn is_one_commit_after(&self, before: &Watermark) -> bool {
        self.changes() == before.changes().wrapping_add(1)
    }
}

/// Reads the wal-index header of one SQLite database.
#[derive(Debug)]
pub struct WalIndex {
    shm: File,
}

impl WalIndex {
    /// The `-shm` file of the database at `db_path`, which must already be open in WAL
    /// mode (the sentinel connection makes sure of that).
    pub fn open(db_path: &Path) -> std::io::Result<Self> {
        let mut shm = db_path.as_os_str().to_owned();
        shm.push("-shm");
        Ok(WalIndex {
            shm: File::open(PathBuf::from(shm))?,
        })
    }

    /// The current watermark, or `None` when it cannot be known right now (a commit
    /// being published, an uninitialised or unreadable header).
    pub fn read(&self) -> Option<Watermark> {
        let mut both = [0u8; 2 * HEADER_LEN];
        self.shm.read_exact_at(&mut both, 0).ok()?;
        let (first, second) = both.split_at(HEADER_LEN);
        if first != second || first[IS_INIT] == 0 {
            return None;
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(first);
        Some(Watermark(header))
    }
}

/// A connection held open and never used, so that this process always has the
/// database open and the `-shm` file is never reinitialised under a [`WalIndex`].
pub struct Sentinel {
    // Behind a mutex only because a connection is `Send` but not `Sync`; never locked.
    _conn: std::sync::Mutex<AnyConnection>,
}

impl Sentinel {
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let mut conn = AnyConnection::connect(url).await?;
        sqlx::query("PRAGMA busy_timeout = 10000")
            .execute(&mut conn)
            .await?;
        // Reading the schema makes SQLite open the WAL and map the -shm file now.
        sqlx::query("SELECT count(*) FROM sqlite_master")
            .execute(&mut conn)
            .await?;
        Ok(Sentinel {
            _conn: std::sync::Mutex::new(conn),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn the_watermark_moves_with_every_commit_from_any_connection_and_only_then() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("w.db");
        let url = format!("sqlite://{}", path.display());
        let ours = Store::open(&url, 1).await.expect("store");
        let index = WalIndex::open(&path).expect("wal index");

        let before = index.read().expect("a consistent header");
        ours.ping().await;
        assert_eq!(index.read(), Some(before), "a read commits nothing");

        // Another process's store, as `scimsync token revoke` would open it.
        let theirs = Store::open(&url, 1).await.expect("second store");
        theirs
            .issue_token("first", crate::domain::TokenScope::Scim, "default")
            .await
            .expect("token");
        let after = index.read().expect("a consistent header");
        assert_ne!(after, before, "their commit is visible in our header");

        assert!(theirs.revoke_token("first").await.expect("revoked"));
        let revoked = index.read().expect("a consistent header");
        assert_ne!(revoked, after, "so is a revocation");
        assert!(revoked.is_one_commit_after(&after));
        assert!(!revoked.is_one_commit_after(&before), "two commits since");
    }
}
