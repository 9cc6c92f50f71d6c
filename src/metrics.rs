//! Prometheus metrics. Labels take only bounded values (route templates, operation
//! kinds, IdP connection names from the config): never user names, ids or secrets.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are unavailable");
                    None
                }
            }
        })
        .as_ref()
}

/// Makes sure the recorder exists before anything is counted.
pub fn init() {
    let _ = handle();
}

/// The exposition in the Prometheus text format.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

pub fn http_request(method: &str, route: &str, status: u16, latency: Duration) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("scimsync_http_requests_total", &labels).increment(1);
    metrics::histogram!(
        "scimsync_http_request_duration_seconds",
        "method" => method.to_owned(),
        "route" => route.to_owned()
    )
    .record(latency.as_secs_f64());
}

/// A SCIM operation, by resource and kind (create, replace, patch, delete, get, list, bulk).
pub fn scim_operation(resource: &'static str, kind: &'static str) {
    metrics::counter!("scimsync_scim_operations_total", "resource" => resource, "kind" => kind)
        .increment(1);
}

/// How many SCIM creates one transaction committed (see `reconcile::batch`).
pub fn create_batch(size: usize) {
    metrics::histogram!("scimsync_scim_create_batch_size").record(size as f64);
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
