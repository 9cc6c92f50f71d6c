//! The HTTP/1.1 accept loop.
//!
//! `axum::serve` builds its hyper connections without a timer, so hyper's
//! `header_read_timeout` never fires and a client that trickles its request head one
//! byte at a time holds a connection (and a task) for as long as it likes. This loop is
//! `axum::serve` with that one difference: every connection must deliver each request
//! head within `[server] header_read_timeout_secs`, or it is closed. The request
//! timeout (408) takes over once the head has arrived.
//!
//! It also caps open connections (`[server] max_connections`, itself kept below the
//! open-file limit). Idle connections cost a file descriptor each, and a flood of them
//! (a misbehaving client, a load balancer's pool, a slow-loris that stays under the
//! header timeout) must not starve the ones that matter: `/healthz` and `/readyz`
//! probes, and the IdP's and gateway's authenticated requests. Who a connection is
//! cannot be known before it sends a request, so the policy goes by what each
//! connection is doing:
//!
//! - Below `max - reserve` open connections, everything is accepted.
//! - From there on, each new connection is still accepted, and for it one idle
//!   connection is closed: first the oldest that has never sent a request (it has
//!   shown nothing and costs its client nothing to open again), else the oldest
//!   keep-alive connection between requests (its client reconnects on its next
//!   request). A connection with a request in flight is never closed this way.
//! - At `max`, with nothing idle to close, a new connection is closed at once.
//!
//! Accepting the newcomer and shedding the oldest idle connection, rather than
//! refusing newcomers, is what lets a probe through a flood: the probe sends its
//! request within milliseconds and is served, while the flood's connections are the
//! old, idle ones. The `reserve` slots between the shedding point and `max` absorb
//! bursts while shed connections are still closing.

use crate::app::HttpService;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// How long in-flight requests may take to finish once shutdown has begun.
const DRAIN: Duration = Duration::from_secs(30);

/// File descriptors kept for everything but client connections: the database pool,
/// the SQLite files and journal, IdP API calls, logs.
const FD_HEADROOM: u64 = 128;

/// How many connections may be open at once: `[server] max_connections`, but never so
/// many that accepting would run out of file descriptors (accept then fails with
/// EMFILE for everyone, probes included).
pub fn connection_cap(configured: usize, database_connections: u32) -> usize {
    let files = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => soft,
        Err(_) => return configured,
    };
    let usable = files.saturating_sub(FD_HEADROOM + u64::from(database_connections));
    let cap = configured.min(usize::try_from(usable).unwrap_or(usize::MAX));
    if cap < configured {
        tracing::warn!(
            max_connections = configured,
            open_file_limit = files,
            cap,
            "the open-file limit caps client connections below [server] max_connections"
        );
    }
    cap.max(16)
}

/// Raises the soft open-file limit to the hard limit, as systemd's LimitNOFILE= sets
/// it; the soft default (often 1,024) is far below what an idle-connection flood
/// needs. Failure is not fatal: the connection cap follows whatever limit is in force.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// One open connection, as the shedding policy sees it.
struct Tracked {
    /// Requests being answered on it now.
    in_flight: AtomicUsize,
    /// Whether it has ever sent a request head.
    requested: AtomicBool,
    /// Chosen to be closed; no longer counted or chosen again.
    closing: AtomicBool,
    close: Notify,
}

/// The open connections, oldest first (ids increase).
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Arc<Tracked>>>,
}

enum Admission {
    Accept(u64, Arc<Tracked>),
    Refuse,
}

impl Connections {
    fn admit(&self, id: u64, max: usize, reserve: usize) -> Admission {
        let Ok(mut open) = self.open.lock() else {
            return Admission::Refuse;
        };
        let counted = open
            .values()
            .filter(|c| !c.closing.load(Ordering::Relaxed))
            .count();
        if counted >= max.saturating_sub(reserve) {
            let idle = |c: &&Arc<Tracked>| {
                !c.closing.load(Ordering::Relaxed) && c.in_flight.load(Ordering::Relaxed) == 0
            };
            let victim = open
                .values()
                .filter(idle)
                .find(|c| !c.requested.load(Ordering::Relaxed))
                .or_else(|| open.values().find(idle))
                .cloned();
            match victim {
                Some(victim) => {
                    victim.closing.store(true, Ordering::Relaxed);
                    // notify_one stores a permit, so a connection that is not polling
                    // the signal yet still sees it.
                    victim.close.notify_one();
                    crate::metrics::connection_shed(if victim.requested.load(Ordering::Relaxed) {
                        "idle_keepalive"
                    } else {
                        "no_request"
                    });
                }
                None if counted >= max => {
                    crate::metrics::connection_shed("refused");
                    return Admission::Refuse;
                }
                None => {}
            }
        }
        let tracked = Arc::new(Tracked {
            in_flight: AtomicUsize::new(0),
            requested: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        open.insert(id, tracked.clone());
        crate::metrics::connections_open(open.len());
        Admission::Accept(id, tracked)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
            crate::metrics::connections_open(open.len());
        }
    }

    fn is_empty(&self) -> bool {
        self.open.lock().map(|open| open.is_empty()).unwrap_or(true)
    }
}

/// Counts a request in flight on its connection for as long as it runs, including
/// when the client goes away mid-request and the future is dropped.
struct InFlight(Arc<Tracked>);

impl InFlight {
    fn start(connection: &Arc<Tracked>) -> Self {
        connection.requested.store(true, Ordering::Relaxed);
        connection.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(connection.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish (idle keep-alive connections are closed at once).
pub async fn serve(
    listener: TcpListener,
    app: HttpService,
    header_read_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let reserve = (max_connections / 16).clamp(8, 256);
    let connections = Arc::new(Connections::default());
    let (stopping, stop) = watch::channel(false);
    let mut next_id: u64 = 0;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin, as
                    // axum::serve does.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        next_id += 1;
        let (id, tracked) = match connections.admit(next_id, max_connections, reserve) {
            Admission::Accept(id, tracked) => (id, tracked),
            Admission::Refuse => {
                tracing::debug!(%peer, "connection refused: max_connections reached");
                drop(stream);
                continue;
            }
        };
        // Small answers must not wait for Nagle's algorithm.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let per_request = tracked.clone();
        let service = hyper::service::service_fn(move |request| {
            let guard = InFlight::start(&per_request);
            let answer = app.clone().oneshot(request);
            async move {
                let response = answer.await;
                drop(guard);
                response
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connections = connections.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                () = tracked.close.notified() => None,
                _ = stop.wait_for(|stopping| *stopping) => None,
            };
            // Shed or shutting down: an idle connection closes now, a request in
            // flight (at shutdown) finishes first.
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            connections.remove(id);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    let drained = async {
        while !connections.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!("requests still running {DRAIN:?} after shutdown began; leaving them");
    }
}
