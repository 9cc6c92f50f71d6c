//! The outbox worker: one per target, in the daemon. Each round takes the rows due now
//! in two shares (never-tried rows in commit order, and rows tried before, longest
//! waiting first), so rows that keep failing cannot hold back newer changes. It merges
//! the rows of each object (a delivery reads the object as it is now, so one delivery
//! covers them all, and a newer row of an object that is waiting for its retry may
//! deliver it sooner: harmless, the call is idempotent), delivers users and teams, then
//! memberships batched per team, deletes what was delivered, and puts a failed object
//! back with exponential backoff and jitter. An object the target keeps refusing
//! (not an outage: a 4xx, a conflict) is given up after [`DEAD_AFTER`] tries: a dead
//! letter, counted in `scimsync_target_outbox_dead` and shown by `plan --target`,
//! until a drift repair that succeeds clears it.

use super::{Target, TargetError};
use crate::store::targets::OutboxRow;
use chrono::Utc;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// Never-tried rows read per round.
const FRESH: i64 = 2_000;
/// Rows tried before read per round: their own share, however many there are.
const RETRIES: i64 = 500;
/// Members added per `/team/member_add` call.
const MEMBER_BATCH: usize = 100;
/// How often an idle worker looks for new rows: the delay a change may wait.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Backoff of a failed object: 1 s, doubled per attempt, at most 5 minutes.
const MAX_BACKOFF_SECS: f64 = 300.0;
/// Refusals after which an object is a dead letter (about 25 minutes of retries).
/// Outages and timeouts never make one: they are retried every 5 minutes until the
/// target is back.
pub const DEAD_AFTER: i64 = crate::store::targets::OUTBOX_DEAD_AFTER;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub failed: usize,
}

/// When a failed object is tried again, after `attempts` earlier tries: 2^attempts
/// seconds, at most [`MAX_BACKOFF_SECS`], times `jitter` (0.8–1.2, so that objects
/// that failed together do not come back together).
pub fn backoff(attempts: i64, jitter: f64) -> chrono::Duration {
    let base = 2f64
        .powi(attempts.clamp(0, 16) as i32)
        .min(MAX_BACKOFF_SECS);
    chrono::Duration::milliseconds((base * jitter.clamp(0.8, 1.2) * 1000.0) as i64)
}

/// Whether the failure of an object tried `attempts` times before makes it a dead
/// letter.
pub fn is_dead(attempts: i64, error: &TargetError) -> bool {
    error.is_refusal() && attempts + 1 >= DEAD_AFTER
}

/// The rows of one object in this round, and how its delivery ended.
type Outcome = (Vec<OutboxRow>, Result<(), TargetError>);

/// Delivers what is due now. Returns how many objects were delivered and failed.
pub async fn deliver_due(target: &Target) -> Result<Round, TargetError> {
    let now = Utc::now();
    let rows = target
        .store
        .outbox_due(&target.name, now, FRESH, RETRIES)
        .await?;
    // object → its rows in this round, in the order objects first appear.
    let mut objects: Vec<(String, Vec<OutboxRow>)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        match index.get(&row.object) {
            Some(&i) => objects[i].1.push(row),
            None => {
                index.insert(row.object.clone(), objects.len());
                objects.push((row.object.clone(), vec![row]));
            }
        }
    }
    let (first, members): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|(o, _)| !o.starts_with("member:"));

    let mut round = Round::default();
    // Users and teams first: the memberships after them find their links.
    let deliveries = first.into_iter().map(|(object, rows)| async move {
        let result = target.deliver(&object).await;
        vec![(rows, result)]
    });
    let outcomes: Vec<Vec<Outcome>> = futures::stream::iter(deliveries)
        .buffer_unordered(target.concurrency)
        .collect()
        .await;
    settle(target, outcomes.into_iter().flatten(), now, &mut round).await?;

    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut by_team: BTreeMap<Uuid, Vec<(Uuid, Vec<OutboxRow>)>> = BTreeMap::new();
    for (object, rows) in members {
        match parse_member(&object) {
            Some((team, user)) => by_team.entry(team).or_default().push((user, rows)),
            None => outcomes.push((
                rows,
                Err(TargetError::Protocol(format!(
                    "malformed outbox object {object:?}"
                ))),
            )),
        }
    }
    let batches = by_team.into_iter().flat_map(|(team, users)| {
        let mut chunks = Vec::new();
        let mut users = users.into_iter().peekable();
        while users.peek().is_some() {
            let chunk: Vec<(Uuid, Vec<OutboxRow>)> = users.by_ref().take(MEMBER_BATCH).collect();
            chunks.push((team, chunk));
        }
        chunks
    });
    let deliveries = batches.map(|(team, chunk)| async move {
        let ids: Vec<Uuid> = chunk.iter().map(|(u, _)| *u).collect();
        let mut results: BTreeMap<Uuid, Result<(), TargetError>> =
            target.sync_members(team, &ids).await.into_iter().collect();
        chunk
            .into_iter()
            .map(|(user, rows)| {
                let result = results.remove(&user).unwrap_or_else(|| {
                    Err(TargetError::Protocol("membership not delivered".into()))
                });
                (rows, result)
            })
            .collect::<Vec<Outcome>>()
    });
    let batched: Vec<Vec<Outcome>> = futures::stream::iter(deliveries)
        .buffer_unordered(target.concurrency)
        .collect()
        .await;
    outcomes.extend(batched.into_iter().flatten());
    settle(target, outcomes.into_iter(), now, &mut round).await?;
    Ok(round)
}

fn parse_member(object: &str) -> Option<(Uuid, Uuid)> {
    match object.split(':').collect::<Vec<_>>().as_slice() {
        ["member", team, user] => Some((Uuid::parse_str(team).ok()?, Uuid::parse_str(user).ok()?)),
        _ => None,
    }
}

/// Deletes the delivered rows and puts the failed objects back.
async fn settle(
    target: &Target,
    outcomes: impl Iterator<Item = Outcome>,
    now: chrono::DateTime<Utc>,
    round: &mut Round,
) -> Result<(), TargetError> {
    let mut delivered = Vec::new();
    for (rows, result) in outcomes {
        match result {
            Ok(()) => {
                let done = Utc::now();
                for row in &rows {
                    delivered.push(row.id);
                    crate::metrics::target_delivered(&target.name, done - row.created);
                }
                round.delivered += 1;
            }
            Err(e) => {
                let Some(first) = rows.first() else { continue };
                let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                crate::metrics::target_failure(&target.name, e.cause());
                if is_dead(attempts, &e) {
                    tracing::error!(target = %target.name, object = %first.object, attempts = attempts + 1, error = %e, "delivery refused again; given up (a dead letter) until a drift repair");
                    target
                        .store
                        .outbox_failed(&ids, now, true, &e.to_string())
                        .await?;
                } else {
                    let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..1.2);
                    let next = now + backoff(attempts, jitter);
                    tracing::warn!(target = %target.name, object = %first.object, attempts = attempts + 1, error = %e, "delivery failed; will retry");
                    target
                        .store
                        .outbox_failed(&ids, next, false, &e.to_string())
                        .await?;
                }
                round.failed += 1;
            }
        }
    }
    target.store.outbox_delivered(&delivered).await?;
    Ok(())
}

/// Refreshes the depth, dead-letter and lag gauges.
pub async fn report_depth(target: &Target) {
    let dead = target.store.outbox_dead(&target.name).await.unwrap_or(0);
    if let Ok((depth, oldest)) = target.store.outbox_depth(&target.name).await {
        let lag = oldest.map_or(0.0, |at| {
            (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        crate::metrics::target_outbox(&target.name, depth as f64, dead as f64, lag);
    }
}

/// Runs the worker until `stop` flips to true.
pub fn spawn(
    target: Target,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let round = match deliver_due(&target).await {
                Ok(round) => round,
                Err(e) => {
                    tracing::warn!(target = %target.name, error = %e, "cannot read the outbox");
                    Round::default()
                }
            };
            report_depth(&target).await;
            if round.delivered > 0 && !*stop.borrow() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        assert_eq!(backoff(0, 1.0), chrono::Duration::seconds(1));
        assert_eq!(backoff(3, 1.0), chrono::Duration::seconds(8));
        assert_eq!(backoff(9, 1.0), chrono::Duration::seconds(300));
        assert_eq!(backoff(i64::MAX, 1.0), chrono::Duration::seconds(300));
        assert_eq!(backoff(-5, 1.0), chrono::Duration::seconds(1));
    }

    #[test]
    fn jitter_spreads_the_backoff_by_a_fifth_at_most() {
        assert_eq!(backoff(2, 0.8), chrono::Duration::milliseconds(3_200));
        assert_eq!(backoff(2, 1.2), chrono::Duration::milliseconds(4_800));
        assert_eq!(backoff(2, 7.0), chrono::Duration::milliseconds(4_800));
    }

    #[test]
    fn only_repeated_refusals_make_a_dead_letter_never_an_outage() {
        let refused = TargetError::Rejected {
            status: 400,
            message: "bad".into(),
        };
        let down = TargetError::Server {
            status: 503,
            message: "down".into(),
        };
        assert!(!is_dead(DEAD_AFTER - 2, &refused));
        assert!(is_dead(DEAD_AFTER - 1, &refused));
        assert!(!is_dead(1_000, &down));
        assert!(!is_dead(
            1_000,
            &TargetError::Unreachable("timed out".into())
        ));
    }
}
