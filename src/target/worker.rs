//! The outbox worker: one per target, in the daemon. It takes the oldest rows, merges
//! the rows of each object (a delivery reads the object as it is now, so one delivery
//! covers them all), delivers objects concurrently (users and teams before
//! memberships), deletes what was delivered, and puts a failed object back with
//! backoff. An object with a row that is not due yet holds back its later rows, so an
//! object's changes never overtake each other.

use super::Target;
use crate::store::targets::OutboxRow;
use chrono::Utc;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// Rows read per round.
const BATCH: i64 = 2_000;
/// How often an idle worker looks for new rows: the delay a change may wait.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Backoff of a failed object: 1 s, doubled per attempt, at most 5 minutes.
const MAX_BACKOFF_SECS: i64 = 300;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub failed: usize,
}

/// Delivers what is due now. Returns how many objects were delivered and failed.
pub async fn deliver_due(target: &Target) -> Result<Round, super::TargetError> {
    let rows = target.store.outbox_head(&target.name, BATCH).await?;
    let now = Utc::now();
    // object → its rows in this batch, in id order; None once a row is not due.
    let mut objects: BTreeMap<&str, Option<Vec<&OutboxRow>>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for row in &rows {
        let entry = objects.entry(row.object.as_str()).or_insert_with(|| {
            order.push(row.object.as_str());
            Some(Vec::new())
        });
        match entry {
            Some(list) if row.next_attempt <= now => list.push(row),
            _ => *entry = None,
        }
    }
    let due: Vec<(&str, Vec<&OutboxRow>)> = order
        .iter()
        .filter_map(|o| match objects.get(o) {
            Some(Some(rows)) if !rows.is_empty() => Some((*o, rows.clone())),
            _ => None,
        })
        .collect();
    let (first, members): (Vec<_>, Vec<_>) = due
        .into_iter()
        .partition(|(o, _)| !o.starts_with("member:"));
    let mut round = Round::default();
    let mut delivered = Vec::new();
    for phase in [first, members] {
        let deliveries: Vec<_> = phase
            .into_iter()
            .map(|(object, rows)| {
                let object = object.to_owned();
                let rows: Vec<OutboxRow> = rows.into_iter().cloned().collect();
                async move {
                    let result = target.deliver(&object).await;
                    (rows, result)
                }
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(deliveries)
            .buffer_unordered(target.concurrency)
            .collect()
            .await;
        for (rows, result) in results {
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
                    let backoff = (1i64 << first.attempts.clamp(0, 16)).min(MAX_BACKOFF_SECS);
                    let next = now + chrono::Duration::seconds(backoff);
                    tracing::warn!(target = %target.name, object = %first.object, attempts = first.attempts + 1, error = %e, "delivery failed; will retry");
                    crate::metrics::target_failure(&target.name, e.cause());
                    target
                        .store
                        .outbox_failed(first.id, next, &e.to_string())
                        .await?;
                    round.failed += 1;
                }
            }
        }
        target.store.outbox_delivered(&delivered).await?;
        delivered.clear();
    }
    Ok(round)
}

/// Refreshes the depth and lag gauges.
pub async fn report_depth(target: &Target) {
    if let Ok((depth, oldest)) = target.store.outbox_depth(&target.name).await {
        let lag = oldest.map_or(0.0, |at| {
            (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        crate::metrics::target_outbox(&target.name, depth as f64, lag);
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
            if round.delivered > 0 {
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
