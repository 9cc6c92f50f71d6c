//! The daemon's housekeeping: pruning the audit log to `[audit] retain`, and SQLite's
//! hourly `PRAGMA optimize` and WAL checkpoint. The SQL is in `store::retention`.

use crate::config::Config;
use crate::state::AppState;
use crate::store::retention::{Checkpoint, Pruned};
use crate::store::{Store, StoreResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Between two batches of a prune: a write queued behind one batch goes before the
/// next, and a backlog of millions of rows (the first prune of an old database) is
/// worked off at about ten thousand rows a second without starving anyone.
pub const PRUNE_PAUSE: Duration = Duration::from_millis(100);

/// The first prune waits this long (or `prune_every`, if shorter), out of the way
/// of start-up.
const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(60);

/// How often SQLite gets `PRAGMA optimize` and a passive checkpoint.
const SQLITE_MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

/// What one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneSummary {
    pub audit_log: u64,
    pub deleted_api_keys: u64,
    /// Write transactions that deleted something.
    pub batches: u64,
}

/// Deletes the audit entries and the audit copies of purged keys dated before
/// `before`, at most `batch` rows per write transaction with `pause` between them,
/// so that the single writer is never held for long.
pub async fn prune(
    store: &Store,
    before: chrono::DateTime<chrono::Utc>,
    batch: u32,
    pause: Duration,
) -> StoreResult<PruneSummary> {
    let batch = batch.max(1);
    let mut summary = PruneSummary::default();
    for table in Pruned::ALL {
        loop {
            let deleted = store.prune_batch(table, before, batch).await?;
            if deleted > 0 {
                summary.batches += 1;
                crate::metrics::audit_rows_pruned(table.table(), deleted);
                match table {
                    Pruned::AuditLog => summary.audit_log += deleted,
                    Pruned::DeletedApiKeys => summary.deleted_api_keys += deleted,
                }
            }
            if deleted < u64::from(batch) {
                break;
            }
            tokio::time::sleep(pause).await;
        }
    }
    Ok(summary)
}

/// One prune as `config` says, if it keeps anything from being kept forever.
async fn prune_once(store: &Store, config: &Config) {
    let Some(retain) = config.audit.retain else {
        return;
    };
    // The config limit (100 years) keeps this far inside chrono's range.
    let Some(before) = chrono::Duration::from_std(retain)
        .ok()
        .and_then(|retain| crate::store::now().checked_sub_signed(retain))
    else {
        return;
    };
    match prune(store, before, config.audit.prune_batch, PRUNE_PAUSE).await {
        Ok(s) if s.batches > 0 => tracing::info!(
            audit_log = s.audit_log,
            deleted_api_keys = s.deleted_api_keys,
            before = %crate::store::format_ts(before),
            "pruned audit entries older than [audit] retain"
        ),
        Ok(_) => {}
        // The next round tries again; what is left is only kept a little longer.
        Err(e) => tracing::warn!(error = %e, "cannot prune the audit log"),
    }
}

/// The background tasks; [`Maintenance::shutdown`] stops them.
pub struct Maintenance {
    tasks: Vec<JoinHandle<()>>,
    store: Store,
}

/// Starts pruning (every `[audit] prune_every`, read again after each round so that a
/// reload applies) and, on SQLite, the hourly optimize and checkpoint.
pub fn start(state: &AppState) -> Maintenance {
    let mut tasks = Vec::new();
    let pruner = state.clone();
    tasks.push(tokio::spawn(async move {
        // Soon after start as well: a daemon restarted more often than prune_every
        // must still prune.
        let first = pruner
            .current_config()
            .audit
            .prune_every
            .min(FIRST_PRUNE_AFTER);
        tokio::time::sleep(first).await;
        loop {
            let config: Arc<Config> = pruner.current_config();
            prune_once(&pruner.store, &config).await;
            tokio::time::sleep(config.audit.prune_every).await;
        }
    }));
    if state.store.backend() == crate::store::Backend::Sqlite {
        let store = state.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SQLITE_MAINTENANCE_EVERY);
            // The first tick is immediate; the database was just opened.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = store.sqlite_maintenance(Checkpoint::Passive).await {
                    tracing::warn!(error = %e, "SQLite maintenance failed");
                }
            }
        }));
    }
    Maintenance {
        tasks,
        store: state.store.clone(),
    }
}

impl Maintenance {
    /// Stops the tasks (a prune batch under way rolls back; it is done again next
    /// time) and, on SQLite, optimizes and checkpoints once more, emptying the -wal
    /// file, so that a stopped daemon leaves one self-contained database file.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        if let Err(e) = self.store.sqlite_maintenance(Checkpoint::Truncate).await {
            tracing::warn!(error = %e, "SQLite maintenance at shutdown failed");
        }
    }
}
