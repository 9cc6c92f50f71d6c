//! Scheduled sync: each `[[idp]]` with a `schedule` is pulled, planned and applied on
//! that cron schedule (with seconds), within the safety policy.
//!
//! - One run at a time per IdP: a run still going when the next tick comes makes that
//!   tick a no-op, so a slow IdP is never pulled twice at once. Replicas sharing a
//!   PostgreSQL database agree through an advisory lock (`store::locks`): the one that
//!   holds it runs, the others skip the tick.
//! - A pull that failed is not applied; one that was cut short is applied as a partial
//!   snapshot (`complete: false`), which adds and updates but never deletes.
//! - Every run is recorded in `sync_state`: when, how long, the outcome, the counts,
//!   the error, and the delta cursor and base the next run resumes from.
//! - Scheduled runs of an IdP with incremental pulls (Entra) read only what changed
//!   since the last successful run and apply it to that run's state, the delta base
//!   ([`Idp::scheduled_pull`]); the plan is still made from the complete desired
//!   state, so a delta run deletes exactly what a full pull would. The base is stored
//!   in the transaction that applies the plan, so a restarted daemon or another
//!   replica continues from exactly what was applied. The first run, a base written
//!   for another configuration or format, a cursor the IdP no longer knows (410: the
//!   cursor is cleared and the run resyncs in full), and managed groups with nested
//!   groups mean a full pull. A delta run that fails applies nothing, and one whose
//!   plan is refused applies only its additions and updates: both keep the base and
//!   cursor.
//! - A plan refused by a guard is kept in quarantine for an operator (`scimsync
//!   plans`); until it is decided, the IdP's runs apply additions and updates and
//!   hold every removal back (`Engine::apply_or_quarantine`), and say so in
//!   `last_result` and /metrics.
//! - After [`BACKOFF_AFTER`] failures in a row the IdP is skipped for an exponentially
//!   growing while (a warning and the `scimsync_sync_backoff_seconds` gauge say so);
//!   the first success puts it back on its schedule.

use crate::config::Config;
use crate::domain::Trigger;
use crate::idp::{self, Idp, NextBase, PullKind, ScheduledPull};
use crate::reconcile::{self, Actor, Engine, EngineError, Policy, PullState, Quarantine, Request};
use crate::state::AppState;
use crate::store::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_cron_scheduler::{Job, JobScheduler};

/// Consecutive failures before runs are spaced out.
pub const BACKOFF_AFTER: i64 = 3;
const BACKOFF_BASE: Duration = Duration::from_secs(60);
const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);

/// What one run did; stored as `sync_state.last_result`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub idp: String,
    pub started: DateTime<Utc>,
    pub duration_ms: u64,
    /// `success`, `partial` (applied without deletions), `quarantined` (additions and
    /// updates applied, removals held back: a guard refused this run's plan, or an
    /// earlier one still awaits a decision; see `quarantined`), or `failed`.
    pub outcome: &'static str,
    /// How the IdP was read: `full`, `delta`, or `resync` (a full pull after the IdP
    /// refused the stored delta cursor).
    pub pull: PullKind,
    pub complete: bool,
    pub users: usize,
    pub groups: usize,
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The IdP's plan in quarantine, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<QuarantineNote>,
}

/// What a run says about the IdP's plan in quarantine.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineNote {
    /// Its id, for `scimsync plans show|approve|reject`.
    pub plan: i64,
    /// This run's own plan was refused (`reason` says why); false when an earlier
    /// refusal still awaits a decision.
    pub refused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The removals this run left out, as its plan's warning says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

impl SyncReport {
    pub fn succeeded(&self) -> bool {
        self.outcome == "success"
    }

    /// Whether the run applied its complete desired state as far as policy lets it:
    /// a success, or a run whose removals wait in quarantine. Such a run is no failure
    /// (no backoff): it applied what it safely could, and the operator has the rest.
    pub fn applied(&self) -> bool {
        matches!(self.outcome, "success" | "quarantined")
    }

    /// Whether the run's pull may be what the next delta applies to: not when a guard
    /// refused its plan (see `Engine::apply_or_quarantine`).
    fn moves_base_on(&self) -> bool {
        self.applied() && !self.quarantined.as_ref().is_some_and(|q| q.refused)
    }
}

/// How long to wait after `failures` consecutive failures before trying again.
pub fn backoff_for(failures: i64) -> Option<Duration> {
    if failures < BACKOFF_AFTER {
        return None;
    }
    let exponent = u32::try_from(failures - BACKOFF_AFTER)
        .unwrap_or(u32::MAX)
        .min(16);
    Some(
        BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(BACKOFF_MAX),
    )
}

/// How a run reads the IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A scheduled run: incremental where the IdP allows it, with `idp` keeping the
    /// state the next run's delta applies to.
    Scheduled,
    /// A one-off run with a fresh connector: always a full pull; the cursor is left
    /// to the scheduled runs.
    Full,
}

/// A scheduled run: pulls one IdP (only the changes since the last successful run
/// when it can, see the module docs) and applies the result under the safety policy,
/// then records the run. Keep `idp` across runs for the deltas to apply.
///
/// Boxed so that callers can spawn it: the compiler cannot otherwise prove the nested
/// futures of the pull `Send` for every lifetime.
pub fn sync_once<'a>(
    store: &'a Store,
    config: &'a Config,
    idp: &'a Idp,
    actor: &'a Actor,
) -> futures::future::BoxFuture<'a, SyncReport> {
    Box::pin(sync_once_inner(store, config, idp, actor, Mode::Scheduled))
}

/// Reads the IdP as `mode` says; with whether a delta cursor was stored.
async fn pull(
    store: &Store,
    idp: &Idp,
    mode: Mode,
) -> (Result<ScheduledPull, idp::IdpError>, bool) {
    if mode == Mode::Full {
        let pull = idp.pull().await.map(|pull| ScheduledPull {
            pull,
            kind: PullKind::Full,
            next: None,
        });
        return (pull, false);
    }
    let (cursor, base) = match store.delta_base(&idp.name).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(idp = %idp.name, error = %e, "cannot read the delta base; pulling in full");
            (None, None)
        }
    };
    (
        idp.scheduled_pull(cursor.as_deref(), base.as_deref()).await,
        cursor.is_some(),
    )
}

async fn sync_once_inner(
    store: &Store,
    config: &Config,
    idp: &Idp,
    actor: &Actor,
    mode: Mode,
) -> SyncReport {
    let started = Utc::now();
    let clock = Instant::now();
    let mut report = SyncReport {
        idp: idp.name.clone(),
        started,
        duration_ms: 0,
        outcome: "failed",
        pull: PullKind::Full,
        complete: false,
        users: 0,
        groups: 0,
        add: 0,
        change: 0,
        destroy: 0,
        problems: Vec::new(),
        error: None,
        quarantined: None,
    };
    let mut next = None;
    let (pulled, had_cursor) = pull(store, idp, mode).await;
    match pulled {
        Err(e) => report.error = Some(e.to_string()),
        Ok(ScheduledPull {
            pull,
            kind,
            next: next_base,
        }) => {
            report.pull = kind;
            crate::metrics::sync_pull(&idp.name, kind.as_str());
            next = next_base;
            if kind == PullKind::Resync {
                // The stored link is dead whatever happens next; a run that fails from
                // here must not leave it looking usable.
                if let Err(e) = store.clear_delta_cursor(&idp.name).await {
                    tracing::warn!(idp = %idp.name, error = %e, "cannot clear the expired delta cursor");
                }
            }
            report.complete = pull.snapshot.complete;
            report.users = pull.snapshot.users.len();
            report.groups = pull.snapshot.groups.len();
            report.problems = pull.problems;
            let desired = pull.snapshot.into_desired();
            let policy = Policy::from_config(config, crate::store::now());
            let base = next.as_ref().map(|next| (idp.name.as_str(), next));
            match apply(store, &idp.name, &desired, &policy, actor, base).await {
                Ok(synced) => {
                    let counts = synced.applied.plan.counts();
                    report.add = counts.add;
                    report.change = counts.change;
                    report.destroy = counts.destroy;
                    report.outcome = if report.complete {
                        "success"
                    } else {
                        "partial"
                    };
                    if let Some(q) = synced.quarantined {
                        report.outcome = "quarantined";
                        if let Some(verdict) = &q.refusal {
                            crate::metrics::guard_refusal(&idp.name, verdict.guard.as_str());
                            report.error = Some(verdict.reason());
                        }
                        report.quarantined = Some(QuarantineNote {
                            plan: q.id,
                            refused: q.refusal.is_some(),
                            guard: q.refusal.as_ref().map(|v| v.guard.as_str()),
                            reason: q.refusal.as_ref().map(|v| v.reason()),
                            held: q.held,
                        });
                    }
                }
                Err(e) => report.error = Some(e.to_string()),
            }
        }
    }
    report.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    crate::metrics::sync_run(&idp.name, report.outcome, clock.elapsed());
    match store.pending_quarantine_counts().await {
        Ok(counts) => crate::metrics::quarantined_plans(&idp.name, &counts),
        Err(e) => tracing::warn!(idp = %idp.name, error = %e, "cannot count the quarantined plans"),
    }
    let result = serde_json::to_value(&report).unwrap_or_default();
    // Only a run that was applied, and not refused, moved the cursor and base on (in
    // `apply`): after any other the next run reads the same changes again.
    let next = next.filter(|_| report.moves_base_on());
    if had_cursor && report.moves_base_on() && next.is_none() {
        // No state to apply a delta to (nested groups, no change tracking): a cursor
        // left from earlier would only mislead.
        if let Err(e) = store.clear_delta_cursor(&idp.name).await {
            tracing::warn!(idp = %idp.name, error = %e, "cannot clear the delta cursor");
        }
    }
    match store
        .record_sync(&idp.name, started, report.applied(), &result, None)
        .await
    {
        Ok(state) => {
            if let Some(next) = next {
                idp.adopt(next);
            }
            match backoff_for(state.consecutive_failures) {
                Some(wait) => {
                    tracing::warn!(idp = %idp.name, failures = state.consecutive_failures,
                    backoff_secs = wait.as_secs(), error = report.error.as_deref().unwrap_or("partial pull"),
                    "IdP sync keeps failing; backing off before the next attempt");
                    metrics::gauge!("scimsync_sync_backoff_seconds", "idp" => idp.name.clone())
                        .set(wait.as_secs_f64());
                }
                None => {
                    metrics::gauge!("scimsync_sync_backoff_seconds", "idp" => idp.name.clone())
                        .set(0.0);
                }
            }
        }
        Err(e) => tracing::error!(idp = %idp.name, error = %e, "cannot record the sync run"),
    }
    if report.succeeded() {
        tracing::info!(idp = %report.idp, duration_ms = report.duration_ms, pull = ?report.pull,
            add = report.add, change = report.change, destroy = report.destroy, "IdP sync done");
    } else if let Some(q) = &report.quarantined {
        tracing::warn!(idp = %report.idp, plan = q.plan, refused_now = q.refused,
            reason = q.reason.as_deref().unwrap_or(""), add = report.add, change = report.change,
            "IdP sync applied additions and updates only: a plan of this IdP is in quarantine \
             (scimsync plans show {})", q.plan);
    } else {
        tracing::warn!(idp = %report.idp, outcome = report.outcome, duration_ms = report.duration_ms,
            error = report.error.as_deref().unwrap_or(""), problems = report.problems.len(),
            "IdP sync did not fully succeed");
    }
    report
}

/// Applies `desired`, a refused plan kept in quarantine (see
/// [`Engine::apply_or_quarantine`]); with `base` (the IdP's name and the run's delta
/// base), stores the base in the same transaction, so it is kept exactly when the
/// plan is.
async fn apply(
    store: &Store,
    idp: &str,
    desired: &reconcile::Desired,
    policy: &Policy,
    actor: &Actor,
    base: Option<(&str, &NextBase)>,
) -> Result<reconcile::Synced, EngineError> {
    let request = Request {
        pull_state: base.map(|(idp, base)| PullState {
            idp,
            cursor: base.cursor(),
            delta_base: base.encoded(),
        }),
        ..Request::new(desired, policy, actor)
    };
    Engine::new(store.clone())
        .apply_or_quarantine(request, Quarantine { idp })
        .await
}

/// One scheduled IdP: its connector (kept across runs, with its token) and the lock
/// that keeps runs from overlapping.
struct Runner {
    idp: Idp,
    store: Store,
    config: Arc<Config>,
    running: tokio::sync::Mutex<()>,
}

impl Runner {
    async fn tick(&self) {
        let Ok(_running) = self.running.try_lock() else {
            tracing::info!(idp = %self.idp.name, "previous sync still running; skipping this tick");
            return;
        };
        // Across replicas sharing a PostgreSQL database, one runs the sync and the
        // others skip the tick; the lock goes away with the replica if it dies.
        let lock = match self.store.try_sync_lock(&self.idp.name).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::debug!(idp = %self.idp.name, "another replica is running this sync; skipping this tick");
                return;
            }
            Err(e) => {
                tracing::warn!(idp = %self.idp.name, error = %e, "cannot take the sync lock; skipping this tick");
                return;
            }
        };
        self.run_locked().await;
        lock.release().await;
    }

    /// The run itself, once this replica holds the IdP's sync lock.
    async fn run_locked(&self) {
        if let Ok(Some(state)) = self.store.sync_state(&self.idp.name).await {
            if let (Some(wait), Some(last)) =
                (backoff_for(state.consecutive_failures), state.last_pull)
            {
                let next = chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|wait| last.checked_add_signed(wait))
                    .unwrap_or(last);
                if Utc::now() < next {
                    tracing::debug!(idp = %self.idp.name, %next, "backing off; skipping this tick");
                    return;
                }
            }
        }
        tracing::info!(idp = %self.idp.name, "sync lock taken; starting the scheduled run");
        let actor = Actor::new(Trigger::Sync, "scheduler");
        sync_once(&self.store, &self.config, &self.idp, &actor).await;
    }
}

/// The running scheduler; [`Scheduler::shutdown`] stops it.
pub struct Scheduler {
    inner: JobScheduler,
}

impl Scheduler {
    pub async fn shutdown(mut self) {
        if let Err(e) = self.inner.shutdown().await {
            tracing::warn!(error = %e, "scheduler did not stop cleanly");
        }
    }
}

/// Starts a job per `[[idp]]` with a schedule. `None` when no IdP has one. An IdP whose
/// connector cannot be built (missing secret...) is logged and left out; a malformed
/// schedule is an error, so a typo does not silently disable syncing.
pub async fn start(state: &AppState, config: &Arc<Config>) -> anyhow::Result<Option<Scheduler>> {
    let scheduled: Vec<_> = config.idp.iter().filter(|i| i.schedule.is_some()).collect();
    if scheduled.is_empty() {
        return Ok(None);
    }
    let scheduler = JobScheduler::new().await?;
    for idp_config in scheduled {
        let schedule = idp_config.schedule.clone().unwrap_or_default();
        let idp = match Idp::from_config(idp_config) {
            Ok(idp) => idp,
            Err(e) => {
                tracing::error!(idp = %idp_config.name, error = %e, "IdP not scheduled: cannot build its connector");
                continue;
            }
        };
        let runner = Arc::new(Runner {
            idp,
            store: state.store.clone(),
            config: config.clone(),
            running: tokio::sync::Mutex::new(()),
        });
        let job = Job::new_async(schedule.as_str(), move |_id, _scheduler| {
            let runner = runner.clone();
            Box::pin(async move { runner.tick().await })
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "[[idp]] {:?}: schedule {schedule:?} is not a cron expression with seconds \
                 (e.g. \"0 */30 * * * *\"): {e}",
                idp_config.name
            )
        })?;
        scheduler.add(job).await?;
        tracing::info!(idp = %idp_config.name, %schedule, "IdP sync scheduled");
    }
    scheduler.start().await?;
    Ok(Some(Scheduler { inner: scheduler }))
}

/// Runs one IdP's sync now with a fresh connector: a full pull, applied and recorded
/// like a scheduled run (which may have read only a delta).
pub async fn sync_now(
    store: &Store,
    config: &Config,
    name: &str,
    actor: &Actor,
) -> Result<SyncReport, idp::IdpError> {
    let idp = Idp::from_config(idp::idp_config(config, name)?)?;
    Ok(sync_once_inner(store, config, &idp, actor, Mode::Full).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_three_failures_and_doubles_up_to_six_hours() {
        assert_eq!(backoff_for(0), None);
        assert_eq!(backoff_for(2), None);
        assert_eq!(backoff_for(3), Some(Duration::from_secs(60)));
        assert_eq!(backoff_for(4), Some(Duration::from_secs(120)));
        assert_eq!(backoff_for(5), Some(Duration::from_secs(240)));
        assert_eq!(backoff_for(100), Some(Duration::from_secs(6 * 3600)));
    }
}
