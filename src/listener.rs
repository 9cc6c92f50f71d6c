//! The HTTP/1.1 accept loop.
//!
//! `axum::serve` builds its hyper connections without a timer, so hyper's
//! `header_read_timeout` never fires and a client that trickles its request head one
//! byte at a time holds a connection (and a task) for as long as it likes. This loop is
//! `axum::serve` with that one difference: every connection must deliver each request
//! head within `[server] header_read_timeout_secs`, or it is closed. The request
//! timeout (408) takes over once the head has arrived.

use crate::app::HttpService;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight requests may take to finish once shutdown has begun.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish (idle keep-alive connections are closed at once).
pub async fn serve(
    listener: TcpListener,
    app: HttpService,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
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
        // Small answers must not wait for Nagle's algorithm.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let service = TowerToHyperService::new(app.clone());
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running {DRAIN:?} after shutdown began; leaving them");
    }
}
