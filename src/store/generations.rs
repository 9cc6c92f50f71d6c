//! PostgreSQL: the read cache's stamps, read from the database once per request at most.
//!
//! Triggers (migration 0011) bump `cache_generations.tokens` in the transaction of every
//! write to the tokens table and `cache_generations.data` in that of every write to
//! users, teams and memberships, on whichever replica it runs. A read of that row which
//! *began* after a request arrived sees every commit that finished before the request
//! arrived (READ COMMITTED takes its snapshot when the statement starts), so its
//! generations are a valid [`Ticket`] for that request; a cache entry read under them
//! is never older than such a commit.
//!
//! One read serves many requests: a read that began after a request arrived serves it
//! as well as the request that started it ([`as_of`] tells when the request arrived),
//! and while one read is under way the requests that arrive queue for the next one
//! rather than each sending its own. The reads run on a connection of their own, so
//! they never wait for the pool nor pay its ping.

use super::read_cache::{Stamp, Ticket};
use futures::future::{BoxFuture, FutureExt, Shared};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection, Row};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

tokio::task_local! {
    static REQUEST_ARRIVED: Instant;
}

/// Runs `request` (one HTTP request's handling) knowing when it arrived, so that the
/// cached reads it makes can share a generations read that began after that moment.
/// Reads made outside such a scope (the CLI, scheduled pulls) each want a read that
/// begins after they ask.
pub async fn as_of<F: Future>(arrived: Instant, request: F) -> F::Output {
    REQUEST_ARRIVED.scope(arrived, request).await
}

type Flight = Shared<BoxFuture<'static, Option<(Instant, Ticket)>>>;

#[derive(Default)]
struct Flights {
    /// The newest completed read: when it began and what it found.
    last: Option<(Instant, Ticket)>,
    /// A read not yet begun, which any request may join.
    queued: Option<(u64, Flight)>,
    /// The read under way, and when it began: a request that arrived before that may
    /// join it too.
    running: Option<(Instant, Flight)>,
    next_id: u64,
    /// When the last commit of this process finished: a ticket must be read after it.
    committed: Option<Instant>,
}

struct Inner {
    options: Arc<AnyConnectOptions>,
    /// The connection the reads run on, one at a time; reopened after a failure.
    conn: tokio::sync::Mutex<Option<AnyConnection>>,
    flights: Mutex<Flights>,
}

#[derive(Clone)]
pub struct Generations(Arc<Inner>);

impl Generations {
    pub fn new(options: Arc<AnyConnectOptions>) -> Self {
        Generations(Arc::new(Inner {
            options,
            conn: tokio::sync::Mutex::new(None),
            flights: Mutex::new(Flights::default()),
        }))
    }

    pub fn committed(&self) {
        if let Ok(mut flights) = self.0.flights.lock() {
            flights.committed = Some(Instant::now());
        }
    }

    /// Generations read after the current request arrived and after this process's
    /// last commit; an empty ticket (no caching) if they cannot be read.
    pub async fn ticket(&self) -> Ticket {
        let now = Instant::now();
        let arrived = REQUEST_ARRIVED.try_with(|at| *at).unwrap_or(now).min(now);
        let flight = {
            let Ok(mut flights) = self.0.flights.lock() else {
                return Ticket::default();
            };
            let not_before = match flights.committed {
                Some(committed) if committed > arrived => committed,
                _ => arrived,
            };
            if let Some((began, ticket)) = &flights.last {
                if *began >= not_before {
                    return *ticket;
                }
            }
            match (&flights.running, &flights.queued) {
                (Some((began, running)), _) if *began >= not_before => running.clone(),
                (_, Some((_, queued))) => queued.clone(),
                _ => {
                    let id = flights.next_id;
                    flights.next_id += 1;
                    // A task of its own: a read must finish even when every request
                    // waiting for it is cancelled (a client gone), or it would keep
                    // the connection from the reads queued behind it.
                    let flight = tokio::spawn(self.clone().fly(id))
                        .map(|done| done.ok().flatten())
                        .boxed()
                        .shared();
                    flights.queued = Some((id, flight.clone()));
                    flight
                }
            }
        };
        flight.await.map(|(_, ticket)| ticket).unwrap_or_default()
    }

    /// One read: waits for the connection (the read before it), then stops taking
    /// riders, notes when it began and reads the row.
    async fn fly(self, id: u64) -> Option<(Instant, Ticket)> {
        let mut conn = self.0.conn.lock().await;
        let began = {
            let mut flights = self.0.flights.lock().ok()?;
            // Taken once no more riders can join as "queued", so it is after every
            // one of them arrived.
            let began = Instant::now();
            if flights
                .queued
                .as_ref()
                .is_some_and(|(queued, _)| *queued == id)
            {
                flights.running = flights.queued.take().map(|(_, me)| (began, me));
            }
            began
        };
        let read = read(&self.0.options, &mut conn).await;
        if read.is_err() {
            *conn = None;
        }
        if let Ok(mut flights) = self.0.flights.lock() {
            if flights.running.as_ref().is_some_and(|(at, _)| *at == began) {
                flights.running = None;
            }
            if let Ok(ticket) = &read {
                if !flights.last.is_some_and(|(last, _)| last >= began) {
                    flights.last = Some((began, *ticket));
                }
            }
        }
        let ticket = read
            .map_err(|e| tracing::warn!(error = %e, "cannot read the cache generations; reading through"))
            .ok()?;
        Some((began, ticket))
    }
}

async fn read(
    options: &AnyConnectOptions,
    conn: &mut Option<AnyConnection>,
) -> Result<Ticket, sqlx::Error> {
    if conn.is_none() {
        let mut fresh = AnyConnection::connect_with(options).await?;
        super::prepare_session(&mut fresh, super::Backend::Postgres).await?;
        *conn = Some(fresh);
    }
    let Some(conn) = conn.as_mut() else {
        return Err(sqlx::Error::PoolClosed);
    };
    let row = sqlx::query("SELECT tokens, data FROM cache_generations WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok(Ticket {
        tokens: Some(Stamp::Generation(row.try_get("tokens")?)),
        data: Some(Stamp::Generation(row.try_get("data")?)),
    })
}
