//! Builds the HTTP application and its background work from a `Config`.

use crate::auth::{ApiKeyAuth, AuthenticatedMark};
use crate::config::Config;
use crate::domain::TokenScope;
use crate::error::ApiError;
use crate::keys;
pub use crate::state::AppState;
use crate::store::{self, Store};
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower_http::normalize_path::NormalizePath;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

/// What the listener serves: the router behind a trailing-slash trim.
///
/// Microsoft's SCIM validator and reference test collection send `/scim/v2/Users/?filter=…`,
/// `/Groups/` and `/ServiceProviderConfig/`; a trailing slash names the same resource.
/// The trim must run before routing, and `Router::layer` wraps only what a route has
/// already matched, so the router is wrapped as a service instead. Query strings are
/// kept; repeated leading slashes collapse as well.
pub type HttpService = NormalizePath<Router>;

pub fn service(state: AppState) -> HttpService {
    NormalizePath::trim_trailing_slash(router(state))
}

pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs.max(1));
    let max_body = state.config.server.max_body_bytes;
    let mut routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // Also an nginx `auth_request` and Envoy `ext_authz` service: Envoy appends the
        // original path to its path_prefix and keeps the original method.
        .route("/v1/whoami", any(whoami))
        .route("/v1/whoami/{*original}", any(whoami))
        .merge(crate::sso::routes())
        .route("/metrics", get(metrics_exposition))
        .merge(crate::scim::router());
    if crate::ui::enabled(&state) {
        routes = routes.nest(crate::ui::BASE, crate::ui::router(&state));
    }
    routes
        .route_layer(middleware::from_fn(log_request))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

/// One span per request with method, route and, on completion, status and latency.
/// Headers are never logged: they carry bearer credentials. The events use the target
/// `scimsync::http`, so `level = "info,scimsync::http=warn"` keeps only failed requests.
///
/// Also counts SCIM operations (`scim::routes::operation_of`) whose token was
/// accepted: one middleware for both, since each layer costs every request a boxed
/// future and a clone of the service behind it.
async fn log_request(mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // A clone of the router's own template (a reference count), not a copy of it.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("<unmatched>", MatchedPath::as_str);
    let operation = crate::scim::routes::operation_of(route, method.as_str());
    let authenticated = operation.map(|_| {
        let mark = AuthenticatedMark::default();
        request.extensions_mut().insert(mark.clone());
        mark
    });
    let span = tracing::info_span!("request", %method, route);
    let started = Instant::now();
    async move {
        // Cached reads may share a freshness check made after this moment (PostgreSQL).
        let response = crate::store::as_of(started, next.run(request)).await;
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        crate::metrics::http_request(method.as_str(), route, status, elapsed);
        if let (Some((resource, kind)), Some(mark)) = (operation, &authenticated) {
            if mark.is_set() {
                crate::metrics::scim_operation(resource, kind);
            }
        }
        let latency_ms = elapsed.as_micros() as f64 / 1000.0;
        // One INFO line per successful request cost ~5% of throughput under load, and
        // an IdP's steady traffic is what /metrics counts; refusals and failures are
        // what an operator reads logs for.
        if response.status().is_server_error() {
            tracing::warn!(target: "scimsync::http", status, latency_ms, "request failed");
        } else if response.status().is_client_error() {
            tracing::info!(target: "scimsync::http", status, latency_ms, "request refused");
        } else {
            tracing::debug!(target: "scimsync::http", status, latency_ms, "request completed");
        }
        response
    }
    .instrument(span)
    .await
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.ping().await {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "database unreachable"})),
        )
            .into_response()
    }
}

async fn metrics_exposition(State(state): State<AppState>) -> impl IntoResponse {
    // Plans are approved and rejected from the shell, in another process: the count
    // is read from the store when scraped rather than kept by this one.
    match state.store.pending_quarantine_counts().await {
        Ok(pending) => {
            for idp in &state.current_config().idp {
                crate::metrics::quarantined_plans(&idp.name, &pending);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the quarantined plans for /metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

/// The key's identity as JSON for direct callers, and as `X-Scimsync-*` headers for a
/// proxy's auth subrequest, which reads only the status and headers. A refusal is 401
/// (its JSON body is ignored by nginx and passed through by Envoy).
async fn whoami(ApiKeyAuth(principal): ApiKeyAuth) -> impl IntoResponse {
    let team = principal.team_id.map(|t| t.to_string()).unwrap_or_default();
    let headers = [
        ("x-scimsync-user-id", principal.user_id.to_string()),
        (
            "x-scimsync-user-name",
            header_safe(principal.user_name.as_str()),
        ),
        ("x-scimsync-team-id", team),
        ("x-scimsync-role", header_safe(principal.role.as_str())),
        ("x-scimsync-key-id", principal.key_id.to_string()),
    ];
    let mut response = Json(json!({
        "user_id": principal.user_id,
        "user_name": principal.user_name.as_str(),
        "role": principal.role.as_str(),
        "team_id": principal.team_id,
        "key_id": principal.key_id,
    }))
    .into_response();
    for (name, value) in headers {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A header value proxies pass on unchanged: printable ASCII as is, every other byte
/// (and `%`) percent-encoded as UTF-8, so a userName such as `zoë` arrives as `zo%C3%AB`.
fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' || byte == b' ' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// A bound, ready-to-serve daemon. Binding happens before serving so tests (and
/// systemd readiness) know the port accepts connections.
pub struct App {
    state: AppState,
    listener: TcpListener,
    reloader: Option<ConfigLoader>,
}

/// Reads the configuration again from where it first came from (file, environment, flags).
pub type ConfigLoader = Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

impl App {
    /// Opens the database (applying migrations), makes sure a first token exists, and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = Store::open(&config.database.url, config.database.max_connections)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open database: {e}"))?;
        ensure_initial_token(&store, &config).await?;
        crate::listener::raise_open_file_limit();
        crate::metrics::init();
        register_idp_metrics(&store, &config).await;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
        Ok(Self {
            state: AppState::new(store, Arc::new(config)),
            listener,
            reloader: None,
        })
    }

    /// Makes SIGHUP reload the configuration through `loader`. An invalid new
    /// configuration is refused with a log line and the running one stays in force.
    pub fn reload_with(mut self, loader: ConfigLoader) -> Self {
        self.reloader = Some(loader);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "listening");
        let store = self.state.store.clone();
        // Scheduled IdP syncs (src/sync.rs); a malformed schedule stops startup.
        let scheduler = Arc::new(tokio::sync::Mutex::new(
            crate::sync::start(&self.state, &self.state.current_config()).await?,
        ));
        // [[target]]: outbox delivery and drift repair (src/target/); a reload that
        // changes the targets restarts them.
        let targets: SharedTargets = Arc::new(tokio::sync::Mutex::new(Some(
            crate::target::start(&self.state.current_config(), &store).await?,
        )));
        let reloads = match self.reloader.clone() {
            Some(loader) => Some(spawn_reload_on_hangup(
                self.state.clone(),
                loader,
                scheduler.clone(),
                targets.clone(),
            )?),
            None => None,
        };
        // Migrations are applied and the port is bound: only now is the service ready.
        systemd::notify_ready(&format!("serving SCIM on {addr}"));
        let watchdog = systemd::spawn_watchdog(store.clone());
        // Pruning to [audit] retain; SQLite's optimize and checkpoints.
        let maintenance = crate::maintenance::start(&self.state);
        let header_read_timeout =
            Duration::from_secs(self.state.current_config().server.header_read_timeout_secs);
        let max_connections = {
            let config = self.state.current_config();
            crate::listener::connection_cap(
                config.server.max_connections,
                config.database.max_connections,
            )
        };
        crate::listener::serve(
            self.listener,
            service(self.state),
            header_read_timeout,
            max_connections,
            async move {
                shutdown.await;
                systemd::notify_stopping();
            },
        )
        .await;
        for task in [watchdog, reloads].into_iter().flatten() {
            task.abort();
        }
        if let Some(scheduler) = scheduler.lock().await.take() {
            scheduler.shutdown().await;
        }
        maintenance.shutdown().await;
        if let Some(targets) = targets.lock().await.take() {
            targets.shutdown().await;
        }
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every configured IdP's sync series, with the last success the store knows of. An
/// unreadable store leaves them at 0, which errs towards a "sync too old" alert.
async fn register_idp_metrics(store: &Store, config: &Config) {
    let recorded = match store.sync_states().await {
        Ok(states) => states,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the last syncs for /metrics");
            Vec::new()
        }
    };
    crate::metrics::register_idps(config.idp.iter().map(|idp| {
        let last_success = recorded
            .iter()
            .find(|state| state.idp == idp.name)
            .and_then(|state| state.last_success)
            .map(|at| at.timestamp() as f64);
        (idp.name.as_str(), last_success)
    }));
}

type SharedScheduler = Arc<tokio::sync::Mutex<Option<crate::sync::Scheduler>>>;
type SharedTargets = Arc<tokio::sync::Mutex<Option<crate::target::Running>>>;

/// Listens for SIGHUP (installed before READY=1, so an early reload is not fatal).
fn spawn_reload_on_hangup(
    state: AppState,
    loader: ConfigLoader,
    scheduler: SharedScheduler,
    targets: SharedTargets,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGHUP: {e}"))?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            match loader() {
                Ok(config) => {
                    if let Err(e) = reschedule(&state, &scheduler, &config).await {
                        tracing::error!(
                            error = %e,
                            "refusing the new configuration; the previous one stays in force"
                        );
                        continue;
                    }
                    if let Err(e) = retarget(&state, &targets, &config).await {
                        tracing::error!(
                            error = %e,
                            "refusing the new configuration; the previous one stays in force"
                        );
                        continue;
                    }
                    register_idp_metrics(&state.store, &config).await;
                    state.replace_config(config);
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "refusing the new configuration; the previous one stays in force"
                ),
            }
        }
    }))
}

/// Rebuilds the IdP schedules when the [[idp]] tables changed. The new scheduler is
/// built before the old one stops, so a bad schedule refuses the whole reload.
async fn reschedule(
    state: &AppState,
    scheduler: &SharedScheduler,
    new: &Config,
) -> anyhow::Result<()> {
    if new.idp == state.current_config().idp {
        return Ok(());
    }
    let replacement = crate::sync::start(state, &Arc::new(new.clone())).await?;
    let previous = std::mem::replace(&mut *scheduler.lock().await, replacement);
    if let Some(previous) = previous {
        previous.shutdown().await;
    }
    tracing::info!(idps = new.idp.len(), "IdP schedules rebuilt");
    Ok(())
}

/// Restarts the target workers when the [[target]] tables (or the team defaults they
/// create teams with) changed: a new target's worker and drift repair start, a removed
/// one's stop. A new configuration whose targets cannot start is refused and the
/// previous targets are started again.
async fn retarget(state: &AppState, targets: &SharedTargets, new: &Config) -> anyhow::Result<()> {
    let old = state.current_config();
    if new.target == old.target && new.teams.defaults == old.teams.defaults {
        return Ok(());
    }
    let mut slot = targets.lock().await;
    if let Some(running) = slot.take() {
        running.shutdown().await;
    }
    match crate::target::start(new, &state.store).await {
        Ok(running) => *slot = Some(running),
        Err(e) => {
            *slot = Some(crate::target::start(&old, &state.store).await?);
            return Err(e);
        }
    }
    let names = |c: &Config| -> Vec<String> { c.target.iter().map(|t| t.name.clone()).collect() };
    let (before, after) = (names(&old), names(new));
    for removed in before.iter().filter(|n| !after.contains(n)) {
        tracing::warn!(target = %removed, "target removed: its worker stopped; changes not yet delivered stay in the outbox until a target of that name is configured again");
    }
    tracing::info!(targets = ?after, "targets restarted after the reload");
    Ok(())
}

/// The sd_notify(3) protocol: a no-op when not started by systemd (no $NOTIFY_SOCKET).
mod systemd {
    use crate::store::Store;
    use sd_notify::NotifyState;

    pub fn notify_ready(status: &str) {
        notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn notify_stopping() {
        notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    }

    fn notify(states: &[NotifyState<'_>]) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// When WatchdogSec= is set, pings at half the interval, but only while the
    /// database answers: a daemon that cannot reach its store should be restarted.
    pub fn spawn_watchdog(store: Store) -> Option<tokio::task::JoinHandle<()>> {
        let interval = sd_notify::watchdog_enabled()?;
        if interval.is_zero() {
            return None;
        }
        let period = interval / 2;
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                if store.ping().await {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::warn!("database unreachable; withholding the watchdog ping");
                }
            }
        }))
    }
}

/// Name of the token created on first start.
pub const INITIAL_TOKEN_NAME: &str = "initial";
/// File the first token is written to, beside the database.
pub const INITIAL_TOKEN_FILE: &str = "initial-scim-token";

/// Where first-start files go: beside a SQLite database, else the state directory or cwd.
pub fn state_directory(config: &Config) -> PathBuf {
    config
        .server
        .state_directory
        .clone()
        .or_else(|| store::sqlite_directory(&config.database.url))
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// On a database without any token, creates one named `initial` and writes it to a
/// file only its owner can read. The token itself is never logged.
async fn ensure_initial_token(store: &Store, config: &Config) -> anyhow::Result<()> {
    if store.token_count().await? > 0 {
        return Ok(());
    }
    let secret = keys::mint_token();
    let path = state_directory(config).join(INITIAL_TOKEN_FILE);
    write_secret_file(&path, secret.expose())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    if let Err(e) = store
        .create_token(
            INITIAL_TOKEN_NAME,
            TokenScope::Scim,
            crate::domain::DEFAULT_SCIM_IDP,
            &keys::hash_secret(secret.expose()),
        )
        .await
    {
        let _ = std::fs::remove_file(&path);
        if matches!(e, store::StoreError::Conflict(_)) {
            // Another replica starting on the same fresh database created it first;
            // its token (in its own state directory) is the one to use.
            tracing::info!("another replica created the first SCIM token");
            return Ok(());
        }
        return Err(e.into());
    }
    tracing::info!(
        path = %path.display(),
        "created the first SCIM token; give it to your IdP, then delete the file"
    );
    Ok(())
}

/// Writes a secret to a new file with mode 0600 (created with that mode, never widened).
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed before this
/// returns, so a signal that arrives right after READY=1 is not lost (nor fatal).
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGTERM: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down; letting in-flight requests finish");
    })
}
