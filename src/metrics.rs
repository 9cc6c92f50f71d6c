//! Prometheus metrics. Labels take only bounded values (route templates, operation
//! kinds, IdP connection names from the config): never user names, ids or secrets.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SYNC_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

/// Installs the process-wide recorder on first use; later calls share it.
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("scimsync_sync_duration_seconds".into()),
                        SYNC_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("scimsync_target_delivery_delay_seconds".into()),
                        LATENCY_BUCKETS,
                    )
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => {
                    describe();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are unavailable");
                    None
                }
            }
        })
        .as_ref()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The exporter keeps every histogram sample until it is folded into the buckets, which
/// it does only when scraped or on upkeep: a daemon nobody scrapes grew by about 16
/// bytes a request, without bound (heaptrack: the request-latency samples were the
/// largest live allocation, 1.55 of 3.55 MB after 95,000 requests). A thread of its
/// own, since the recorder outlives any one runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "histograms are folded only when /metrics is scraped");
    }
}

/// Makes sure the recorder exists before anything is counted.
pub fn init() {
    let _ = handle();
}

/// The exposition in the Prometheus text format.
pub fn render() -> String {
    let Some(handle) = handle() else {
        return String::new();
    };
    // Process figures are read when scraped, not on a timer of our own.
    process().collect();
    handle.render()
}

/// `process_*` series (CPU, memory, open and maximum file descriptors, start time)
/// under their conventional names, so stock dashboards and alerts apply.
fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The commit the binary was built from (build.rs), or "unknown" outside a git checkout.
pub const COMMIT: &str = match option_env!("SCIMSYNC_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Every metric's HELP (and unit) once, when the recorder is installed: the exporter
/// prints HELP lines only for described metrics. Also sets `scimsync_build_info`, so
/// /metrics on a fresh daemon is never empty.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "scimsync_build_info",
        "Always 1; the version and git commit of the running binary are its labels."
    );
    describe_gauge!(
        "scimsync_target_outbox_depth",
        "Changes waiting in the outbox for a downstream target, by target."
    );
    describe_gauge!(
        "scimsync_target_outbox_dead",
        "Changes a downstream target kept refusing and that are no longer retried (dead \
         letters), by target; a drift repair that succeeds clears them."
    );
    describe_gauge!(
        "scimsync_target_outbox_lag_seconds",
        Unit::Seconds,
        "Age of the oldest change waiting for a downstream target (0 when none wait)."
    );
    describe_histogram!(
        "scimsync_target_delivery_delay_seconds",
        Unit::Seconds,
        "Time from a change's commit to its delivery to a downstream target, by target."
    );
    describe_counter!(
        "scimsync_target_failures_total",
        "Failed deliveries and drift repairs of a downstream target, by target and cause \
         (unreachable, server_error, unauthorized, rejected, conflict, protocol, store, config, guard)."
    );
    describe_counter!(
        "scimsync_target_retries_total",
        "Calls to a downstream target retried after a server error or timeout."
    );
    describe_counter!(
        "scimsync_http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        "scimsync_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by method and route template."
    );
    describe_counter!(
        "scimsync_scim_operations_total",
        "SCIM operations, by resource (User, Group, Bulk, Any, Discovery) and kind."
    );
    describe_histogram!(
        "scimsync_scim_create_batch_size",
        Unit::Count,
        "SCIM creates committed by one transaction (group commit)."
    );
    describe_histogram!(
        "scimsync_scim_change_batch_size",
        Unit::Count,
        "SCIM PUTs and PATCHes committed by one transaction (group commit, one savepoint each)."
    );
    describe_histogram!(
        "scimsync_scim_write_batch_seconds",
        Unit::Seconds,
        "How long one group-commit transaction of SCIM writes held the writer, from BEGIN \
         to the end of its COMMIT (every write waiting meanwhile joins the next)."
    );
    describe_counter!(
        "scimsync_plan_operations_applied_total",
        "Plan operations applied to the store, by kind and trigger."
    );
    describe_counter!(
        "scimsync_sync_runs_total",
        "IdP sync runs, by IdP and outcome (success, partial, failed, quarantined: removals held back while a plan refused by a guard awaits a decision)."
    );
    describe_counter!(
        "scimsync_sync_pulls_total",
        "IdP pulls of sync runs, by IdP and kind: full, delta (only the changes since the stored base), or resync (full, after the IdP refused the stored delta cursor)."
    );
    describe_histogram!(
        "scimsync_sync_duration_seconds",
        Unit::Seconds,
        "How long each IdP sync run took."
    );
    describe_gauge!(
        "scimsync_last_successful_sync_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last successful sync of each IdP (any replica); 0 if it never synced."
    );
    describe_gauge!(
        "scimsync_quarantined_plans",
        "Plans of each IdP refused by a guard and awaiting an operator's decision (scimsync plans); while there is one, the IdP's syncs apply no removals."
    );
    describe_counter!(
        "scimsync_guard_refusals_total",
        "Sync plans refused by a guard and kept in quarantine, by IdP and guard (deletions, membership_removals)."
    );
    describe_gauge!(
        "scimsync_sync_backoff_seconds",
        Unit::Seconds,
        "How long scheduled syncs of each IdP are held back after repeated failures; 0 when not backing off."
    );
    describe_counter!(
        "scimsync_idp_api_calls_total",
        "Calls to IdP APIs, by IdP and outcome (ok, throttled, error, malformed)."
    );
    describe_counter!(
        "scimsync_idp_throttles_total",
        "Times an IdP asked us to slow down (429, 503 with Retry-After, quota errors)."
    );
    describe_counter!(
        "scimsync_idp_retries_total",
        "IdP API calls retried after a transient failure."
    );
    describe_gauge!("scimsync_connections_open", "Client connections open now.");
    describe_counter!(
        "scimsync_connections_shed_total",
        "Connections closed near [server] max_connections: idle without a request (no_request), idle between requests (idle_keepalive), or refused at the cap (refused)."
    );
    describe_counter!(
        "scimsync_audit_rows_pruned_total",
        "Rows deleted for being older than [audit] retain, by table (audit_log, deleted_api_keys)."
    );
    process().describe();
    // Present from start, so a rate() over them has a baseline.
    for reason in SHED_REASONS {
        metrics::counter!("scimsync_connections_shed_total", "reason" => reason).increment(0);
    }
    metrics::gauge!("scimsync_connections_open").set(0.0);
    for table in PRUNED_TABLES {
        metrics::counter!("scimsync_audit_rows_pruned_total", "table" => table).increment(0);
    }
    metrics::gauge!(
        "scimsync_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => COMMIT
    )
    .set(1.0);
}

/// The sync outcomes `sync_run` counts, each present from start for every IdP.
const SYNC_OUTCOMES: [&str; 4] = ["success", "partial", "failed", "quarantined"];

/// The guards `guard_refusal` counts, each present from start for every IdP.
const GUARDS: [&str; 2] = ["deletions", "membership_removals"];

/// The pull kinds `sync_pull` counts, each present from start for every IdP.
const PULL_KINDS: [&str; 3] = ["full", "delta", "resync"];

/// Registers every configured IdP's series, at start and after a reload, so that an
/// IdP that never synced shows `scimsync_last_successful_sync_timestamp_seconds 0`
/// (and "last sync too old" alerts fire for it) instead of no series at all.
/// `last_success` is what the store recorded (any replica's run); series already
/// present keep their values, since adding zero changes nothing.
pub fn register_idps<'a>(idps: impl IntoIterator<Item = (&'a str, Option<f64>)>) {
    for (idp, last_success) in idps {
        for outcome in SYNC_OUTCOMES {
            metrics::counter!("scimsync_sync_runs_total", "idp" => idp.to_owned(), "outcome" => outcome)
                .increment(0);
        }
        for kind in PULL_KINDS {
            metrics::counter!("scimsync_sync_pulls_total", "idp" => idp.to_owned(), "kind" => kind)
                .increment(0);
        }
        let last = metrics::gauge!(
            "scimsync_last_successful_sync_timestamp_seconds",
            "idp" => idp.to_owned()
        );
        match last_success {
            Some(at) => last.set(at),
            None => last.increment(0.0),
        }
        metrics::counter!("scimsync_idp_throttles_total", "idp" => idp.to_owned()).increment(0);
        metrics::counter!("scimsync_idp_retries_total", "idp" => idp.to_owned()).increment(0);
        for guard in GUARDS {
            metrics::counter!("scimsync_guard_refusals_total", "idp" => idp.to_owned(), "guard" => guard)
                .increment(0);
        }
        metrics::gauge!("scimsync_quarantined_plans", "idp" => idp.to_owned()).increment(0.0);
    }
}

/// A sync plan a guard refused (and kept in quarantine).
pub fn guard_refusal(idp: &str, guard: &'static str) {
    metrics::counter!("scimsync_guard_refusals_total", "idp" => idp.to_owned(), "guard" => guard)
        .increment(1);
}

/// Sets `idp`'s count of plans awaiting a decision from the store's `pending` counts
/// (IdPs without any are not in them).
pub fn quarantined_plans(idp: &str, pending: &[(String, i64)]) {
    let count = pending
        .iter()
        .find(|(name, _)| name == idp)
        .map_or(0, |(_, n)| *n);
    metrics::gauge!("scimsync_quarantined_plans", "idp" => idp.to_owned()).set(count as f64);
}

pub fn http_request(method: &str, route: &str, status: u16, latency: Duration) {
    let method = method_label(method);
    if handle().is_none() {
        // No recorder of ours: nothing to count into, and no handle worth keeping.
        return;
    }
    HTTP_SERIES.with(|series| {
        let Ok(mut series) = series.try_borrow_mut() else {
            return;
        };
        let route_series = match series.get_mut(route) {
            Some(found) => found,
            None => series.entry(route.into()).or_default(),
        };
        route_series
            .requests
            .entry((method, status))
            .or_insert_with(|| {
                metrics::counter!(
                    "scimsync_http_requests_total",
                    "method" => method,
                    "route" => route.to_owned(),
                    "status" => status.to_string()
                )
            })
            .increment(1);
        route_series
            .durations
            .entry(method)
            .or_insert_with(|| {
                metrics::histogram!(
                    "scimsync_http_request_duration_seconds",
                    "method" => method,
                    "route" => route.to_owned()
                )
            })
            .record(latency.as_secs_f64());
    });
}

/// The handles of one route's request series.
#[derive(Default)]
struct RouteSeries {
    requests: HashMap<(&'static str, u16), metrics::Counter>,
    durations: HashMap<&'static str, metrics::Histogram>,
}

thread_local! {
    /// The request series' handles, by route, kept per thread: finding a series in
    /// the registry means building its three labels and hashing them, which on a cached
    /// read was a measurable share of the request (BENCHMARKS.md, session 7). Bounded:
    /// routes are the router's templates, methods are [`method_label`]'s and statuses
    /// are three digits.
    static HTTP_SERIES: RefCell<HashMap<Box<str>, RouteSeries>> = RefCell::new(HashMap::new());
    /// The same for the SCIM operations' counters, by resource and kind.
    static SCIM_OPERATIONS: RefCell<HashMap<(&'static str, &'static str), metrics::Counter>> =
        RefCell::new(HashMap::new());
}

/// The method as a label: the standard ones by name, any other as `OTHER`, so that a
/// client inventing methods (`/v1/whoami` accepts any) cannot make new series.
fn method_label(method: &str) -> &'static str {
    const STANDARD: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .iter()
        .find(|standard| **standard == method)
        .copied()
        .unwrap_or("OTHER")
}

/// A SCIM operation, by resource and kind (create, replace, patch, delete, get, list, bulk).
pub fn scim_operation(resource: &'static str, kind: &'static str) {
    if handle().is_none() {
        return;
    }
    SCIM_OPERATIONS.with(|operations| {
        if let Ok(mut operations) = operations.try_borrow_mut() {
            operations
                .entry((resource, kind))
                .or_insert_with(|| {
                    metrics::counter!(
                        "scimsync_scim_operations_total",
                        "resource" => resource,
                        "kind" => kind
                    )
                })
                .increment(1);
        }
    });
}

/// How many SCIM creates one transaction committed (see `reconcile::batch`).
pub fn create_batch(size: usize) {
    metrics::histogram!("scimsync_scim_create_batch_size").record(size as f64);
}

/// How many SCIM PUTs and PATCHes one transaction committed (see `reconcile::batch`).
pub fn change_batch(size: usize) {
    metrics::histogram!("scimsync_scim_change_batch_size").record(size as f64);
}

/// How long one group-commit transaction held the writer (see `reconcile::batch`).
pub fn write_batch_duration(seconds: f64) {
    metrics::histogram!("scimsync_scim_write_batch_seconds").record(seconds);
}

/// Plan operations applied, by kind and trigger.
pub fn plan_operations_applied(kind: &'static str, trigger: &'static str, count: u64) {
    metrics::counter!("scimsync_plan_operations_applied_total", "kind" => kind, "trigger" => trigger)
        .increment(count);
}

/// A sync run of one IdP connection, with its outcome (success, partial, failed, refused).
pub fn sync_run(idp: &str, outcome: &'static str, duration: Duration) {
    metrics::counter!("scimsync_sync_runs_total", "idp" => idp.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("scimsync_sync_duration_seconds", "idp" => idp.to_owned())
        .record(duration.as_secs_f64());
    if outcome == "success" {
        let now = chrono::Utc::now().timestamp() as f64;
        metrics::gauge!("scimsync_last_successful_sync_timestamp_seconds", "idp" => idp.to_owned())
            .set(now);
    }
}

/// A sync run's pull that read the IdP, by kind (full, delta, resync).
pub fn sync_pull(idp: &str, kind: &'static str) {
    metrics::counter!("scimsync_sync_pulls_total", "idp" => idp.to_owned(), "kind" => kind)
        .increment(1);
}

/// A call to an IdP API, with its class of outcome (ok, throttled, error, retry).
pub fn idp_call(idp: &str, outcome: &'static str) {
    metrics::counter!("scimsync_idp_api_calls_total", "idp" => idp.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The IdP told us to slow down (429, 503 with Retry-After, quota errors).
pub fn idp_throttled(idp: &str) {
    metrics::counter!("scimsync_idp_throttles_total", "idp" => idp.to_owned()).increment(1);
}

pub fn idp_retry(idp: &str) {
    metrics::counter!("scimsync_idp_retries_total", "idp" => idp.to_owned()).increment(1);
}

const SHED_REASONS: [&str; 3] = ["no_request", "idle_keepalive", "refused"];

pub fn connections_open(open: usize) {
    metrics::gauge!("scimsync_connections_open").set(open as f64);
}

/// A connection closed to stay under `[server] max_connections` (see src/listener.rs).
pub fn connection_shed(reason: &'static str) {
    metrics::counter!("scimsync_connections_shed_total", "reason" => reason).increment(1);
}

const PRUNED_TABLES: [&str; 2] = ["audit_log", "deleted_api_keys"];

/// Rows of `table` deleted by the `[audit] retain` prune.
pub fn audit_rows_pruned(table: &'static str, rows: u64) {
    metrics::counter!("scimsync_audit_rows_pruned_total", "table" => table).increment(rows);
}

/// The outbox of one target: how many changes wait, how many were given up, and how
/// old the oldest waiting is.
pub fn target_outbox(target: &str, depth: f64, dead: f64, lag_seconds: f64) {
    metrics::gauge!("scimsync_target_outbox_depth", "target" => target.to_owned()).set(depth);
    metrics::gauge!("scimsync_target_outbox_dead", "target" => target.to_owned()).set(dead);
    metrics::gauge!("scimsync_target_outbox_lag_seconds", "target" => target.to_owned())
        .set(lag_seconds);
}

/// A change delivered to a target, `delay` after it was committed.
pub fn target_delivered(target: &str, delay: chrono::Duration) {
    let seconds = delay.num_milliseconds().max(0) as f64 / 1000.0;
    metrics::histogram!("scimsync_target_delivery_delay_seconds", "target" => target.to_owned())
        .record(seconds);
}

/// A failed delivery or repair, by a bounded cause.
pub fn target_failure(target: &str, cause: &'static str) {
    metrics::counter!("scimsync_target_failures_total", "target" => target.to_owned(), "cause" => cause)
        .increment(1);
}

pub fn target_retry() {
    metrics::counter!("scimsync_target_retries_total").increment(1);
}
