//! WAL checkpoints, made by a connection of their own rather than by the writer.
//!
//! SQLite copies the WAL back into the database file (a *checkpoint*) when a commit
//! takes the WAL past `wal_autocheckpoint` frames, inside that commit, on the
//! committing connection: the writer. With the group commit (`reconcile::batch`) that
//! meant every fortieth batch or so paid for a checkpoint (a few megabytes copied, two
//! `fsync`s) while every other writer queued behind it; under a load of membership
//! PATCHes the COMMIT statement averaged 1.3 ms, most of it checkpoints.
//!
//! Here the writer tells the [`Checkpointer`] how long the WAL has grown after each
//! commit; past [`CHECKPOINT_FRAMES`] a task on another connection runs a PASSIVE
//! checkpoint, which never blocks the writer nor readers (SQLite's own advice for busy
//! writers, <https://www.sqlite.org/wal.html#application_initiated_checkpoints>). It
//! also runs every few seconds, for the commits of other processes. The writer keeps
//! an automatic checkpoint of its own at [`WRITER_BACKSTOP_FRAMES`], so that the WAL
//! stays bounded even if this task could not keep up or its connection failed.

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How far the WAL grows before the checkpointer is woken: SQLite's own default for
/// `wal_autocheckpoint`, so the WAL stays about as small as it always was.
pub const CHECKPOINT_FRAMES: u32 = 1_000;

/// The writer's own automatic checkpoint, only reached if the checkpointer falls far
/// behind (ten times its threshold: about 40 MB of WAL at 4 KB pages).
pub const WRITER_BACKSTOP_FRAMES: u32 = 10 * CHECKPOINT_FRAMES;

/// How often the checkpointer looks without being woken.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// The task that checkpoints one SQLite database; stopped when dropped.
pub struct Checkpointer {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database `options` opens, on a connection of its own.
    pub fn start(options: AnyConnectOptions) -> Self {
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(options, wake.clone()));
        Checkpointer { wake, task }
    }

    /// A commit left the WAL holding `frames` frames.
    pub fn committed(&self, frames: u32) {
        if frames >= CHECKPOINT_FRAMES {
            self.wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(options: AnyConnectOptions, wake: Arc<Notify>) {
    let mut conn: Option<AnyConnection> = None;
    // Said once when checkpoints start failing and once when they work again: the
    // writer's backstop keeps the WAL bounded meanwhile, so it is no emergency.
    let mut failing = false;
    loop {
        let _ = tokio::time::timeout(IDLE_CHECK, wake.notified()).await;
        let checkpointed = match conn.as_mut() {
            Some(open) => checkpoint(open).await,
            None => match open(&options).await {
                Ok(mut opened) => {
                    let result = checkpoint(&mut opened).await;
                    conn = Some(opened);
                    result
                }
                Err(e) => Err(e),
            },
        };
        match checkpointed {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        error = %e,
                        backstop_frames = WRITER_BACKSTOP_FRAMES,
                        "WAL checkpoint failed; retrying, and the writer checkpoints by itself past the backstop"
                    );
                }
                failing = true;
                conn = None;
            }
        }
    }
}

/// PASSIVE: copies what no reader still needs and waits for nobody; a busy database
/// only means the next round copies more.
async fn checkpoint(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(conn)
        .await
        .map(|_| ())
}

async fn open(options: &AnyConnectOptions) -> Result<AnyConnection, sqlx::Error> {
    let mut conn = AnyConnection::connect_with(options).await?;
    // The checkpoint syncs the WAL and the database file as the writer's settings ask.
    super::prepare_session(&mut conn, super::Backend::Sqlite).await?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use sqlx::Row;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = Store::open(&url, 2).await.expect("store");
        (dir, store)
    }

    async fn write(store: &Store, sql: &str) {
        let mut tx = store.begin_write().await.expect("write lock");
        sqlx::query(sql).execute(tx.conn()).await.expect(sql);
        tx.commit().await.expect("commit");
    }

    fn wal_frames(store: &Store) -> u32 {
        store
            .cache
            .watermark()
            .expect("a consistent wal-index header")
            .wal_frames()
    }

    #[tokio::test]
    async fn the_writer_checkpoints_the_wal_itself_only_as_a_backstop() {
        let (_dir, store) = store().await;
        let mut tx = store.begin_write().await.expect("write lock");
        let row = sqlx::query("PRAGMA wal_autocheckpoint")
            .fetch_one(tx.conn())
            .await
            .expect("pragma");
        assert_eq!(
            row.try_get::<i64, _>(0).expect("a number"),
            i64::from(WRITER_BACKSTOP_FRAMES)
        );
    }

    #[tokio::test]
    async fn a_wal_grown_past_the_threshold_is_checkpointed_off_the_writer_and_restarts() {
        let (_dir, store) = store().await;
        write(&store, "CREATE TABLE filler (x BLOB)").await;
        // About 1,600 pages in one commit: past the threshold, short of the backstop.
        write(
            &store,
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1600) \
             INSERT INTO filler SELECT randomblob(4000) FROM n",
        )
        .await;
        let grown = wal_frames(&store);
        assert!(grown > CHECKPOINT_FRAMES, "{grown} frames");
        // Once the checkpoint has copied everything, the next commit starts the WAL
        // over; without the checkpointer the writer would not checkpoint before 10,000.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            write(&store, "INSERT INTO filler VALUES (x'00')").await;
            let frames = wal_frames(&store);
            if frames < CHECKPOINT_FRAMES {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL still holds {frames} frames"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
