//! The state every request handler shares: the store, the engine's front door, the
//! configuration in force (following reloads), and per-token bookkeeping. Its own
//! module, so that the handlers (auth, scim, sso, sync) depend on it and app.rs, which
//! wires them together, depends on them, with no circle.

use crate::config::Config;
use crate::reconcile::batch::WriteBatcher;
use crate::reconcile::{Engine, Policy};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a token's last_used column is refreshed; every request would be a write.
const TOKEN_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Cloned by axum for every extractor of every request, so a clone is one reference
/// count: as a struct of its fields' own handles it was a dozen atomic increments and
/// decrements on cache lines both cores share, ~10% of a cached GET's CPU (perf,
/// BENCHMARKS.md). Its fields are reached through [`SharedState`].
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

pub struct SharedState {
    pub store: Store,
    /// The front door for every write to users, teams, memberships and keys.
    pub engine: Engine,
    /// The configuration the process started with. Prefer [`AppState::current_config`],
    /// which follows reloads (SIGHUP).
    pub config: Arc<Config>,
    live: watch::Sender<Arc<Config>>,
    token_uses: Mutex<HashMap<String, Instant>>,
    token_buckets: Mutex<HashMap<String, Bucket>>,
    /// Group commit for SCIM creates, PUTs and PATCHes, started on first use.
    writes: std::sync::OnceLock<WriteBatcher>,
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// A token bucket: `tokens` requests may be made now; it refills at the configured rate.
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl AppState {
    pub fn new(store: Store, config: Arc<Config>) -> Self {
        let (live, _) = watch::channel(config.clone());
        Self(Arc::new(SharedState {
            engine: Engine::new(store.clone()),
            store,
            config,
            live,
            token_uses: Mutex::default(),
            token_buckets: Mutex::default(),
            writes: std::sync::OnceLock::default(),
        }))
    }

    /// The policy the configuration in force now sets, on the store's clock.
    pub fn policy(&self) -> Policy {
        Policy::from_config(&self.current_config(), crate::store::now())
    }

    /// Where SCIM creates, PUTs and PATCHes are applied, several to a transaction when
    /// they queue up.
    pub fn writes(&self) -> &WriteBatcher {
        self.writes
            .get_or_init(|| WriteBatcher::start(self.store.clone(), self.subscribe_config()))
    }

    /// Spends one request of a token's budget (`[server] rate_limit` per second, with a
    /// burst of one second's worth). `Err(seconds)` says when to retry.
    pub fn take_rate_limit(&self, token: &str) -> Result<(), u64> {
        // Read in place: a clone of the configuration's `Arc` is two more atomic
        // operations, on a line both cores share, for every request.
        let rate = f64::from(self.live.borrow().server.rate_limit);
        if rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.token_buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        // The name is copied only for a token's first request.
        let bucket = match buckets.get_mut(token) {
            Some(bucket) => bucket,
            None => buckets.entry(token.to_owned()).or_insert(Bucket {
                tokens: rate,
                refilled: now,
            }),
        };
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// The configuration in force now, including any reload since start.
    pub fn current_config(&self) -> Arc<Config> {
        self.live.borrow().clone()
    }

    /// Notifies on every accepted reload (the scheduler re-reads IdP schedules from it).
    pub fn subscribe_config(&self) -> watch::Receiver<Arc<Config>> {
        self.live.subscribe()
    }

    /// Installs a new configuration. Settings bound at start (listener, database, log
    /// format) keep their running values; a change to them is reported, not applied.
    pub fn replace_config(&self, mut new: Config) {
        let old = self.current_config();
        if new.server != old.server
            || new.database != old.database
            || new.log.format != old.log.format
        {
            tracing::warn!(
                "[server], [database] and [log] format changes take effect at the next restart"
            );
            new.server = old.server.clone();
            new.database = old.database.clone();
            new.log.format = old.log.format;
        }
        if let Err(e) = crate::telemetry::set_level(&new.log.level) {
            tracing::warn!(error = %e, "keeping the previous log level");
            new.log.level = old.log.level.clone();
        }
        self.live.send_replace(Arc::new(new));
        tracing::info!("configuration reloaded");
    }

    /// Records a token's use, at most once a minute per token, off the request path.
    pub fn note_token_use(&self, name: &str) {
        let due = match self.token_uses.lock() {
            Ok(mut uses) => {
                let now = Instant::now();
                match uses.get(name) {
                    Some(last) if now.duration_since(*last) < TOKEN_TOUCH_INTERVAL => false,
                    _ => {
                        uses.insert(name.to_owned(), now);
                        true
                    }
                }
            }
            Err(_) => false,
        };
        if due {
            let store = self.store.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(&name).await {
                    tracing::warn!(error = %e, "could not record token use");
                }
            });
        }
    }
}
