//! Mock IdP servers for the connector and sign-in tests: axum apps on port 0 that
//! answer like the real APIs (token endpoint, paging, throttling, expiring tokens,
//! server errors), with knobs to make them misbehave and counters to check on.
#![allow(dead_code)] // each test binary uses a different part of the mocks

pub mod graph;
pub mod jwt;

use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Serves `router` on 127.0.0.1:0 in the background; returns its base URL.
pub async fn serve(router: axum::Router) -> (SocketAddr, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("mock address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, format!("http://{addr}"))
}

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Ways to make a mock misbehave, and counters of what it served. Call numbers count
/// authenticated API calls from 1; each fault fires once.
#[derive(Default)]
pub struct Faults {
    pub api_calls: AtomicUsize,
    pub tokens_issued: AtomicUsize,
    pub throttled: AtomicUsize,
    pub unauthorized: AtomicUsize,
    pub server_errors: AtomicUsize,
    /// Answer this call 429 with `Retry-After: 1`.
    pub throttle_at: Mutex<Option<usize>>,
    /// Answer this call 500.
    pub fail_at: Mutex<Option<usize>>,
    /// From this call on the current token is expired (401) until a new one is fetched.
    pub expire_token_at: Mutex<Option<usize>>,
    /// Requests whose path contains this always fail with 500.
    pub failing_path: Mutex<Option<String>>,
    /// Every API call waits this long first (an IdP that hangs).
    pub delay: Mutex<Duration>,
    /// Every API call answers 503 (an IdP that is down).
    pub down: std::sync::atomic::AtomicBool,
    /// The only token the API accepts right now.
    pub valid_token: Mutex<Option<String>>,
    /// Paths (with query) of every API call, in order.
    pub log: Mutex<Vec<String>>,
}

impl Faults {
    pub fn issue_token(&self) -> String {
        let n = self.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("mock-access-token-{n}");
        *self.valid_token.lock().unwrap() = Some(token.clone());
        token
    }

    /// Checks the bearer token and applies the faults; `Err` is the response to send.
    pub async fn check(&self, headers: &HeaderMap, path_and_query: &str) -> Result<(), Response> {
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.down.load(Ordering::SeqCst) {
            self.server_errors.fetch_add(1, Ordering::SeqCst);
            return Err((StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response());
        }
        let n = self.api_calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.lock().unwrap().push(path_and_query.to_owned());
        if *self.expire_token_at.lock().unwrap() == Some(n) {
            *self.valid_token.lock().unwrap() = None;
        }
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("SSWS "))
            })
            .map(str::to_owned);
        let valid = self.valid_token.lock().unwrap().clone();
        if presented.is_none() || presented != valid {
            self.unauthorized.fetch_add(1, Ordering::SeqCst);
            return Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(
                    serde_json::json!({"error": {"code": "InvalidAuthenticationToken",
                    "message": "Access token has expired or is not yet valid."}}),
                ),
            )
                .into_response());
        }
        if *self.throttle_at.lock().unwrap() == Some(n) {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                axum::Json(serde_json::json!({"error": {"code": "TooManyRequests",
                    "message": "Too many requests"}})),
            )
                .into_response());
        }
        let failing = self.failing_path.lock().unwrap().clone();
        if *self.fail_at.lock().unwrap() == Some(n)
            || failing.is_some_and(|p| path_and_query.contains(&p))
        {
            self.server_errors.fetch_add(1, Ordering::SeqCst);
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response());
        }
        Ok(())
    }

    pub fn calls(&self) -> usize {
        self.api_calls.load(Ordering::SeqCst)
    }

    pub fn calls_to(&self, fragment: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(fragment))
            .count()
    }
}
