//! Configuration: built-in defaults < config.toml < `SCIMSYNC_*` environment < flags.
//!
//! Every table denies unknown keys, so a typo is an error naming the file, the line
//! and the key instead of a setting that silently does nothing. Secrets are never
//! part of `Debug` output.

use crate::domain::Role;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    ParseNoLocation { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal (and journald).
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownMembers {
    /// A PATCH naming a member that does not exist fails as a whole.
    #[default]
    Reject,
    /// Unknown members are skipped; the rest of the request applies.
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub provisioning: ProvisioningConfig,
    pub safety: SafetyConfig,
    pub teams: TeamsConfig,
    pub sso: SsoConfig,
    pub ownership: OwnershipConfig,
    pub audit: AuditConfig,
    pub ui: UiConfig,
    pub idp: Vec<IdpConfig>,
    /// Downstream gateways kept in line with the store (`[[target]]`, src/target/).
    pub target: Vec<TargetConfig>,
}

/// The admin console at `/ui` (src/ui).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the console. Unset: served when `[server] listen` is a loopback address
    /// (only someone on the host can reach it), not served otherwise.
    pub enabled: Option<bool>,
    /// A console session that sees no request for this many minutes is signed out.
    pub session_idle_minutes: u64,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            session_idle_minutes: 30,
        }
    }
}

impl UiConfig {
    /// Whether the console is served on a listener bound to `listen`.
    pub fn is_enabled(&self, listen: SocketAddr) -> bool {
        self.enabled.unwrap_or_else(|| listen.ip().is_loopback())
    }
}

/// Default `[audit] retain`: a yearly review still finds the whole of last year, with a
/// month to spare for a late one.
pub const DEFAULT_AUDIT_RETAIN: std::time::Duration =
    std::time::Duration::from_secs(400 * DAY_SECS);

/// The shortest `[audit] retain`: a slip such as `retain = "0d"` must not empty the log.
const MIN_AUDIT_RETAIN_SECS: u64 = DAY_SECS;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How long audit entries, and the audit copies of purged API keys, are kept before
    /// the daemon deletes them: a duration of at least 1d (default 400d), or "never".
    /// `None` is "never".
    #[serde(deserialize_with = "audit_retain")]
    pub retain: Option<std::time::Duration>,
    /// How often the daemon looks for entries older than `retain` (default 1h).
    #[serde(deserialize_with = "prune_every")]
    pub prune_every: std::time::Duration,
    /// Rows deleted per write transaction (default 1000): each batch holds the single
    /// writer only briefly, and other writes go between batches.
    pub prune_batch: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OwnershipConfig {
    /// IdP name → the owners (IdP names, or "manual") whose users, teams and memberships
    /// that IdP may take over, by pull or SCIM push alike. Without an entry an IdP
    /// adopts only hand-made users, and only by pull.
    pub adopt: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP listener binds.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Requests taking longer than this are answered 408 and abandoned.
    pub request_timeout_secs: u64,
    /// A connection must deliver each request head (request line and headers) within
    /// this long, or it is closed: a client trickling its headers cannot hold it.
    pub header_read_timeout_secs: u64,
    /// Base URL clients reach us at, for Location headers and meta.location
    /// (default: derived from the request's Host header).
    pub public_url: Option<String>,
    /// Where first-start files (the initial token) are written. Default: beside a
    /// SQLite database, else $STATE_DIRECTORY, else the working directory.
    pub state_directory: Option<PathBuf>,
    /// Requests per second each bearer token may make (a burst of one second's worth
    /// is allowed); beyond it, 429 with Retry-After. 0 turns the limit off.
    pub rate_limit: u32,
    /// Most client connections open at once (further capped by the open-file limit).
    /// Near it, idle connections are closed oldest first (see src/listener.rs).
    pub max_connections: usize,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (the embedded default) or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `scimsync=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// Role of a user created by provisioning.
    pub default_role: Role,
    /// Group display name or id → role given to its members.
    pub role_groups: BTreeMap<String, Role>,
    pub unknown_members: UnknownMembers,
    /// Whether leaving a team purges the keys the user held for that team.
    pub purge_team_keys_on_removal: bool,
    /// How long a user missing from the IdP stays deactivated before deletion,
    /// e.g. "30d" (at most 100 years); absent means never delete, only deactivate.
    /// Parsed while the file is read, so a bad value is reported with its line.
    #[serde(deserialize_with = "delete_after")]
    pub delete_after: Option<std::time::Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    /// A plan with more deletions plus deactivations than this is refused.
    pub max_deletions: u64,
    /// ... or with more than this share of the managed users.
    pub max_deletion_ratio: f64,
    /// A plan removing more team memberships than this is refused (default:
    /// `max_deletions`).
    pub max_membership_removals: Option<u64>,
    /// ... or more than this share of the memberships the IdP manages (default:
    /// `max_deletion_ratio`).
    pub max_membership_removal_ratio: Option<f64>,
}

impl SafetyConfig {
    /// The membership guard's count limit: its own key, else the deletion guard's.
    pub fn membership_removals(&self) -> u64 {
        self.max_membership_removals.unwrap_or(self.max_deletions)
    }

    /// The membership guard's ratio: its own key, else the deletion guard's.
    pub fn membership_removal_ratio(&self) -> f64 {
        self.max_membership_removal_ratio
            .unwrap_or(self.max_deletion_ratio)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TeamsConfig {
    /// Applied to every auto-created team: metadata and default limits.
    pub defaults: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsoConfig {
    /// How long a sign-in waits for the IdP before answering "deferred".
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdpKind {
    Entra,
    Okta,
    Google,
    Keycloak,
    Onelogin,
    Auth0,
}

/// One `[[idp]]` table: how to reach an IdP, which of its groups scimsync manages, and
/// how to check its sign-in tokens. Each kind reads the keys it needs (see
/// config.toml.example); `IdpConfig::validate` names the ones that are missing.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// What `--idp` and the sign-in hook call this connection; owns `sync:<name>`.
    pub name: String,
    pub kind: IdpKind,
    /// Entra: the directory (tenant) id or primary domain.
    pub tenant_id: Option<String>,
    /// Okta org host (`example.okta.com`), Auth0 tenant host (`example.eu.auth0.com`),
    /// OneLogin API host (`api.us.onelogin.com`), Google Workspace primary domain.
    pub domain: Option<String>,
    /// Keycloak: the server's base URL (`https://sso.example.com`).
    pub server_url: Option<String>,
    /// Keycloak realm.
    pub realm: Option<String>,
    pub client_id: Option<String>,
    /// Inline secrets are accepted for trying things out; prefer the file or the
    /// environment (or `$CREDENTIALS_DIRECTORY/<name>` under systemd).
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    /// Okta: an SSWS API token (instead of OAuth with `private_key_file`).
    pub api_token: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub api_token_env: Option<String>,
    /// Okta private_key_jwt: the PEM private key registered for the service app.
    pub private_key_file: Option<PathBuf>,
    /// Okta private_key_jwt: the key id (`kid`) registered with the key.
    pub private_key_id: Option<String>,
    /// Google: the service account's JSON key file.
    pub service_account_file: Option<PathBuf>,
    /// Google: the admin user the service account acts as (domain-wide delegation).
    pub admin_subject: Option<String>,
    /// Google: the customer id (default `my_customer`, the admin's own).
    pub customer: Option<String>,
    /// OAuth scopes to request instead of the kind's defaults.
    pub scopes: Option<Vec<String>>,
    pub token_url: Option<String>,
    pub api_base_url: Option<String>,
    /// Entra: the login host (default `https://login.microsoftonline.com`; sovereign
    /// clouds use their own).
    pub login_url: Option<String>,
    /// The groups this connection manages: exact names, ids, or patterns such as
    /// `"LLM *"`. Required; `["*"]` manages every group.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Cron expression with seconds, e.g. `"0 */30 * * * *"`; absent: no scheduled sync.
    pub schedule: Option<String>,
    /// Parallel member fetches during a pull (default 4).
    pub concurrency: Option<usize>,
    /// Retries of a throttled or failed request (default 5).
    pub max_retries: Option<u32>,
    /// First backoff step in milliseconds, doubled on each retry (default 500).
    pub retry_backoff_ms: Option<u64>,
    /// Timeout of one HTTP request to the IdP (default 30).
    pub request_timeout_secs: Option<u64>,
    /// Sign-in tokens: the expected `iss`. Default: the kind's issuer for the tenant.
    pub issuer: Option<String>,
    /// Sign-in tokens: the expected `aud` (default `client_id`).
    pub audience: Option<String>,
    /// Sign-in tokens: where the signing keys are. Default: the kind's JWKS endpoint.
    pub jwks_url: Option<String>,
    /// Sign-in tokens: the claim with the user's groups (default `groups`).
    pub groups_claim: Option<String>,
    /// Sign-in tokens: the claims tried, in order, for the userName (default
    /// `preferred_username`, `upn`, `email`).
    pub user_claims: Option<Vec<String>>,
}

impl IdpConfig {
    /// A minimal connection of `kind` named `name`; tests and examples fill in the rest.
    pub fn new(name: &str, kind: IdpKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            tenant_id: None,
            domain: None,
            server_url: None,
            realm: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            client_secret_env: None,
            api_token: None,
            api_token_file: None,
            api_token_env: None,
            private_key_file: None,
            private_key_id: None,
            service_account_file: None,
            admin_subject: None,
            customer: None,
            scopes: None,
            token_url: None,
            api_base_url: None,
            login_url: None,
            groups: Vec::new(),
            schedule: None,
            concurrency: None,
            max_retries: None,
            retry_backoff_ms: None,
            request_timeout_secs: None,
            issuer: None,
            audience: None,
            jwks_url: None,
            groups_claim: None,
            user_claims: None,
        }
    }

    /// Checks what one table needs, naming the missing key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        let missing = |key: &str| {
            Err(ConfigError::Invalid(format!(
                "[[idp]] {name:?} (kind {:?}) needs {key}",
                self.kind
            )))
        };
        if self.groups.iter().all(|g| g.trim().is_empty()) {
            return Err(ConfigError::Invalid(format!(
                "[[idp]] {name:?} has no groups: list the groups it manages \
                 (names, ids or patterns such as \"LLM *\"; [\"*\"] for all)"
            )));
        }
        if self.concurrency == Some(0) {
            return Err(ConfigError::Invalid(format!(
                "[[idp]] {name:?}: concurrency must be at least 1"
            )));
        }
        // Secrets are not checked here: they may come from $CREDENTIALS_DIRECTORY, which
        // exists only when systemd starts the service. The connector reports them missing.
        match self.kind {
            IdpKind::Entra if self.tenant_id.is_none() && self.token_url.is_none() => {
                missing("tenant_id")
            }
            IdpKind::Entra | IdpKind::Keycloak | IdpKind::Onelogin | IdpKind::Auth0
                if self.client_id.is_none() =>
            {
                missing("client_id")
            }
            IdpKind::Okta if self.domain.is_none() && self.api_base_url.is_none() => {
                missing("domain (or api_base_url)")
            }
            IdpKind::Auth0 | IdpKind::Onelogin
                if self.domain.is_none() && self.api_base_url.is_none() =>
            {
                missing("domain (or api_base_url)")
            }
            IdpKind::Keycloak
                if self.realm.is_none()
                    || (self.server_url.is_none() && self.api_base_url.is_none()) =>
            {
                missing("server_url and realm")
            }
            IdpKind::Google if self.admin_subject.is_none() => missing("admin_subject"),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for IdpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("IdpConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("tenant_id", &self.tenant_id)
            .field("domain", &self.domain)
            .field("server_url", &self.server_url)
            .field("realm", &self.realm)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("client_secret_file", &self.client_secret_file)
            .field("client_secret_env", &self.client_secret_env)
            .field("api_token", &redacted(&self.api_token))
            .field("api_token_file", &self.api_token_file)
            .field("api_token_env", &self.api_token_env)
            .field("private_key_file", &self.private_key_file)
            .field("service_account_file", &self.service_account_file)
            .field("admin_subject", &self.admin_subject)
            .field("token_url", &self.token_url)
            .field("api_base_url", &self.api_base_url)
            .field("groups", &self.groups)
            .field("schedule", &self.schedule)
            .field("concurrency", &self.concurrency)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Litellm,
}

/// One `[[target]]` table: a downstream gateway whose users, teams and memberships
/// follow the store (see the README's LiteLLM section).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// What `plan --target` and the metrics call it.
    pub name: String,
    pub kind: TargetKind,
    /// The proxy's base URL, e.g. `http://127.0.0.1:4000`.
    pub url: String,
    /// The master key: from a file (systemd credentials), the environment, or inline
    /// for trying things out (or `$CREDENTIALS_DIRECTORY/<name>` under systemd).
    pub master_key_file: Option<PathBuf>,
    pub master_key_env: Option<String>,
    pub master_key: Option<String>,
    /// Cron expression with seconds for a full drift repair; absent: only at start.
    pub schedule: Option<String>,
    /// Timeout of one HTTP request to the target (default 10).
    pub request_timeout_secs: Option<u64>,
    /// Retries of a failed or timed-out request before the delivery is put back (default 3).
    pub max_retries: Option<u32>,
    /// Calls in flight to the target, from the outbox worker and from a drift repair
    /// (default 8).
    pub concurrency: Option<usize>,
}

impl TargetConfig {
    /// A target of `kind` named `name` at `url`; tests and examples fill in the rest.
    pub fn new(name: &str, kind: TargetKind, url: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            url: url.to_owned(),
            master_key_file: None,
            master_key_env: None,
            master_key: None,
            schedule: None,
            request_timeout_secs: None,
            max_retries: None,
            concurrency: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        if name.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "a [[target]] has an empty name".into(),
            ));
        }
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&self.url).is_err() {
            return Err(ConfigError::Invalid(format!(
                "[[target]] {name:?}: url {:?} is not an http:// or https:// URL",
                self.url
            )));
        }
        let sources = [
            self.master_key_file.is_some(),
            self.master_key_env.is_some(),
            self.master_key.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(ConfigError::Invalid(format!(
                "[[target]] {name:?}: give one of master_key_file, master_key_env, master_key"
            )));
        }
        if self.concurrency == Some(0) {
            return Err(ConfigError::Invalid(format!(
                "[[target]] {name:?}: concurrency must be at least 1"
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("master_key_file", &self.master_key_file)
            .field("master_key_env", &self.master_key_env)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Hides a password in a database URL (`postgres://user:secret@host` → `postgres://user:***@host`).
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7643)),
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 30,
            public_url: None,
            state_directory: None,
            rate_limit: 0,
            max_connections: 4096,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_database_url(std::env::var_os("STATE_DIRECTORY").as_deref()),
            max_connections: 8,
        }
    }
}

/// Under systemd, StateDirectory= sets $STATE_DIRECTORY (possibly a colon-separated
/// list, of which the first is ours); elsewhere the database lives in the working directory.
pub fn default_database_url(state_directory: Option<&std::ffi::OsStr>) -> String {
    match state_directory.and_then(|s| s.to_str()) {
        Some(dirs) if !dirs.is_empty() => {
            let first = dirs.split(':').next().unwrap_or(dirs);
            format!(
                "sqlite://{}",
                Path::new(first).join("scimsync.db").display()
            )
        }
        _ => "sqlite://scimsync.db".to_owned(),
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            default_role: Role::viewer(),
            role_groups: BTreeMap::new(),
            unknown_members: UnknownMembers::Reject,
            purge_team_keys_on_removal: true,
            delete_after: None,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retain: Some(DEFAULT_AUDIT_RETAIN),
            prune_every: std::time::Duration::from_secs(3600),
            prune_batch: 1000,
        }
    }
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            max_deletions: 500,
            max_deletion_ratio: 0.2,
            max_membership_removals: None,
            max_membership_removal_ratio: None,
        }
    }
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self { timeout_secs: 5 }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Parses a config file's text; `path` only labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            match e.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    ConfigError::Parse {
                        path: path.to_owned(),
                        line,
                        column,
                        message,
                    }
                }
                None => ConfigError::ParseNoLocation {
                    path: path.to_owned(),
                    message,
                },
            }
        })?;
        Ok(config)
    }

    /// Loads the whole layered configuration and checks it.
    /// `file` is `--config`; without it `$SCIMSYNC_CONFIG` is used; without both, defaults.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let env_file = env("SCIMSYNC_CONFIG")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let mut config = match file.map(Path::to_path_buf).or(env_file) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_toml(&text, &path)?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(url) = &overrides.database_url {
            config.database.url = url.clone();
        }
        if let Some(format) = overrides.log_format {
            config.log.format = format;
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(listen) = env("SCIMSYNC_LISTEN") {
            self.server.listen = listen.parse().map_err(|e| ConfigError::Env {
                name: "SCIMSYNC_LISTEN".into(),
                message: format!("{listen:?} is not a socket address such as 127.0.0.1:7643 ({e})"),
            })?;
        }
        if let Some(url) = env("SCIMSYNC_DATABASE_URL") {
            self.database.url = url;
        }
        if let Some(format) = env("SCIMSYNC_LOG_FORMAT") {
            self.log.format = match format.as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::Env {
                        name: "SCIMSYNC_LOG_FORMAT".into(),
                        message: format!("{other:?} is not one of human, json"),
                    })
                }
            };
        }
        if let Some(level) = env("SCIMSYNC_LOG_LEVEL") {
            self.log.level = level;
        }
        Ok(())
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return invalid(format!(
                "[database] url {:?} must start with sqlite: or postgres://",
                redact_url_password(&self.database.url)
            ));
        }
        if !(0.0..=1.0).contains(&self.safety.max_deletion_ratio) {
            return invalid(format!(
                "[safety] max_deletion_ratio is {}; it must be between 0 and 1",
                self.safety.max_deletion_ratio
            ));
        }
        if let Some(ratio) = self.safety.max_membership_removal_ratio {
            if !(0.0..=1.0).contains(&ratio) {
                return invalid(format!(
                    "[safety] max_membership_removal_ratio is {ratio}; it must be between 0 and 1"
                ));
            }
        }
        if self.ui.session_idle_minutes == 0 {
            return invalid("[ui] session_idle_minutes must be at least 1".to_owned());
        }
        if self.server.max_body_bytes < 1024 {
            return invalid("[server] max_body_bytes must be at least 1024".into());
        }
        if self.server.max_connections < 64 {
            return invalid("[server] max_connections must be at least 64".into());
        }
        if self.server.header_read_timeout_secs == 0 {
            return invalid("[server] header_read_timeout_secs must be at least 1".into());
        }
        if self.audit.prune_batch == 0 || self.audit.prune_batch > 100_000 {
            return invalid(format!(
                "[audit] prune_batch is {}; it must be between 1 and 100000",
                self.audit.prune_batch
            ));
        }
        if self.audit.prune_every.is_zero() {
            return invalid("[audit] prune_every must be at least 1s".into());
        }
        crate::telemetry::validate_level(&self.log.level)
            .map_err(|m| ConfigError::Invalid(format!("[log] level: {m}")))?;
        let mut names = std::collections::BTreeSet::new();
        for idp in &self.idp {
            if idp.name.trim().is_empty() {
                return invalid("an [[idp]] has an empty name".into());
            }
            if !names.insert(idp.name.as_str()) {
                return invalid(format!("two [[idp]] entries are named {:?}", idp.name));
            }
            idp.validate()?;
        }
        let mut targets = std::collections::BTreeSet::new();
        for target in &self.target {
            target.validate()?;
            if !targets.insert(target.name.as_str()) {
                return invalid(format!(
                    "two [[target]] entries are named {:?}",
                    target.name
                ));
            }
        }
        for (idp, owners) in &self.ownership.adopt {
            crate::domain::check_idp_name(idp)
                .map_err(|m| ConfigError::Invalid(format!("[ownership] adopt: {m}")))?;
            for owner in owners {
                if owner != "manual" {
                    crate::domain::check_idp_name(owner).map_err(|m| {
                        ConfigError::Invalid(format!("[ownership] adopt.{idp}: {m}"))
                    })?;
                }
                if owner == idp {
                    return invalid(format!(
                        "[ownership] adopt.{idp} names {idp:?} itself: an IdP always owns its own data"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The most a duration may say: what an operator can mean, far below where the
/// arithmetic on it (seconds in a u64, timestamps in chrono) would overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationLimit {
    pub max_secs: u64,
    /// The limit in words, for the error message.
    pub described: &'static str,
}

const DAY_SECS: u64 = 86_400;

/// Config durations (`[provisioning] delete_after`, `[audit] retain`): at most 100 years.
pub const CONFIG_DURATION_LIMIT: DurationLimit = DurationLimit {
    max_secs: 36_500 * DAY_SECS,
    described: "100 years, 36500d",
};

/// Why a duration such as `30d` was refused; the text follows the value it refuses,
/// as in `delete_after = "1.5d" has a fraction; ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is empty; write a whole number and a unit (s, m, h or d), such as 30d")]
    Empty,
    #[error("has no number; write a whole number before the unit, such as 30d")]
    NoNumber,
    #[error("is negative; a duration is a whole number of s, m, h or d")]
    Negative,
    #[error("has a sign; write the number alone, such as 30d")]
    Sign,
    #[error("has a fraction; use whole numbers of a smaller unit (90m, not 1.5h)")]
    Fraction,
    #[error("has a space inside; write the number and unit together, such as 30d")]
    Space,
    #[error("has no unit; add s, m, h or d, such as 30d")]
    NoUnit,
    #[error("has an unknown unit {0:?}; use s, m, h or d")]
    UnknownUnit(String),
    #[error("is too long (at most {0})")]
    TooLong(&'static str),
}

/// Parses durations such as `90s`, `15m`, `12h`, `30d` (or `1d12h`): whole numbers with
/// a unit each, surrounding whitespace ignored, no longer than `limit`.
///
/// humantime does the arithmetic (checked: an overflow is an error, never a wrap) once
/// [`check_duration_form`] has held the text to the narrower form scimsync documents.
pub fn parse_duration(
    text: &str,
    limit: DurationLimit,
) -> Result<std::time::Duration, DurationError> {
    let text = text.trim();
    check_duration_form(text)?;
    let too_long = DurationError::TooLong(limit.described);
    let parsed = humantime::parse_duration(text).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_long.clone(),
        humantime::DurationError::Empty => DurationError::Empty,
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            DurationError::NoUnit
        }
        humantime::DurationError::UnknownUnit { unit, .. } => DurationError::UnknownUnit(unit),
        // The form was checked above, so these cannot occur; refused all the same.
        humantime::DurationError::InvalidCharacter(_)
        | humantime::DurationError::NumberExpected(_) => DurationError::NoNumber,
    })?;
    if parsed.as_secs() > limit.max_secs {
        return Err(too_long);
    }
    Ok(parsed)
}

/// humantime also reads fractions (`1.5h`), spaces (`30 d`) and units from nanoseconds to
/// years, where `m` and `M` are minutes and months: a config that says `1M` meaning a
/// minute, or `1.5d`, is more likely a typo than a wish. Only digits and the units s, m,
/// h and d pass, each with the precise reason it did not.
fn check_duration_form(text: &str) -> Result<(), DurationError> {
    match text.chars().next() {
        None => return Err(DurationError::Empty),
        Some('-') => return Err(DurationError::Negative),
        Some('+') => return Err(DurationError::Sign),
        Some(c) if !c.is_ascii_digit() => return Err(DurationError::NoNumber),
        Some(_) => {}
    }
    for unit in text
        .split(|c: char| c.is_ascii_digit())
        .filter(|u| !u.is_empty())
    {
        if unit.starts_with(['.', ',']) {
            return Err(DurationError::Fraction);
        }
        if unit.contains(char::is_whitespace) {
            return Err(DurationError::Space);
        }
        if !matches!(unit, "s" | "m" | "h" | "d") {
            return Err(DurationError::UnknownUnit(unit.to_owned()));
        }
    }
    if text.ends_with(|c: char| c.is_ascii_digit()) {
        return Err(DurationError::NoUnit);
    }
    Ok(())
}

/// `[provisioning] delete_after`, parsed as the file is read so that toml names its line.
fn delete_after<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text, CONFIG_DURATION_LIMIT)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("delete_after = {text:?} {e}")))
}

/// `[audit] retain`: "never", or a duration of at least a day.
fn audit_retain<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim() == "never" {
        return Ok(None);
    }
    let retain = parse_duration(&text, CONFIG_DURATION_LIMIT)
        .map_err(|e| serde::de::Error::custom(format!("retain = {text:?} {e}")))?;
    if retain.as_secs() < MIN_AUDIT_RETAIN_SECS {
        return Err(serde::de::Error::custom(format!(
            "retain = {text:?} is shorter than a day; write at least 1d, or \"never\""
        )));
    }
    Ok(Some(retain))
}

/// `[audit] prune_every`.
fn prune_every<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text, CONFIG_DURATION_LIMIT)
        .map_err(|e| serde::de::Error::custom(format!("prune_every = {text:?} {e}")))
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn with_nothing_configured_the_defaults_apply() {
        let config = Config::load(None, &no_env, &Overrides::default()).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:7643");
        assert_eq!(
            config.database.url,
            default_database_url(std::env::var_os("STATE_DIRECTORY").as_deref())
        );
        assert_eq!(config.provisioning.default_role.as_str(), "viewer");
        assert_eq!(config.safety.max_deletions, 500);
    }

    #[test]
    fn under_systemd_the_database_follows_the_state_directory() {
        assert_eq!(
            default_database_url(Some(std::ffi::OsStr::new("/var/lib/scimsync"))),
            "sqlite:///var/lib/scimsync/scimsync.db"
        );
        assert_eq!(default_database_url(None), "sqlite://scimsync.db");
    }

    #[test]
    fn an_unknown_key_is_reported_with_file_line_and_key() {
        let err = Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("c.toml:3:"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn malformed_toml_is_reported_with_its_line() {
        let err = Config::from_toml("[server\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:1:"), "{err}");
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url_password("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        let config = DatabaseConfig {
            url: "postgres://app:hunter2@db/x".into(),
            max_connections: 1,
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    const LIMIT: DurationLimit = CONFIG_DURATION_LIMIT;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30d", LIMIT).unwrap().as_secs(), 30 * 86_400);
        assert_eq!(parse_duration("30", LIMIT), Err(DurationError::NoUnit));
        assert_eq!(
            parse_duration("3w", LIMIT),
            Err(DurationError::UnknownUnit("w".into()))
        );
    }

    #[test]
    fn durations_accept_each_unit_zero_and_surrounding_whitespace() {
        assert_eq!(parse_duration("90s", LIMIT).unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m", LIMIT).unwrap().as_secs(), 900);
        assert_eq!(parse_duration("12h", LIMIT).unwrap().as_secs(), 43_200);
        assert_eq!(parse_duration("0s", LIMIT).unwrap().as_secs(), 0);
        assert_eq!(parse_duration("0d", LIMIT).unwrap().as_secs(), 0);
        assert_eq!(
            parse_duration(" \t30d\n", LIMIT).unwrap().as_secs(),
            30 * 86_400
        );
    }

    #[test]
    fn durations_that_overflow_are_too_long_at_every_unit() {
        let too_long = Err(DurationError::TooLong(LIMIT.described));
        // The value of issue #13: 2^57 days is 0 s once multiplied in a wrapping u64.
        assert_eq!(parse_duration("144115188075855872d", LIMIT), too_long);
        for unit in ["s", "m", "h", "d"] {
            let max = format!("{}{unit}", u64::MAX);
            assert_eq!(parse_duration(&max, LIMIT), too_long, "{max}");
            let beyond = format!("{}0{unit}", u64::MAX);
            assert_eq!(parse_duration(&beyond, LIMIT), too_long, "{beyond}");
        }
        // Just below a wrap of u64 for each multiplier.
        for (n, unit) in [
            (u64::MAX / 60 + 1, "m"),
            (u64::MAX / 3600 + 1, "h"),
            (u64::MAX / 86_400 + 1, "d"),
        ] {
            let text = format!("{n}{unit}");
            assert_eq!(parse_duration(&text, LIMIT), too_long, "{text}");
        }
    }

    #[test]
    fn durations_may_combine_units() {
        assert_eq!(parse_duration("1d12h", LIMIT).unwrap().as_secs(), 129_600);
        assert_eq!(parse_duration("1h30m", LIMIT).unwrap().as_secs(), 5_400);
        assert_eq!(parse_duration("30d5", LIMIT), Err(DurationError::NoUnit));
        assert_eq!(
            parse_duration("1h 30m", LIMIT),
            Err(DurationError::Space),
            "one form, without spaces"
        );
        // Each term is within the limit, their sum is not.
        assert_eq!(
            parse_duration("36500d1s", LIMIT),
            Err(DurationError::TooLong(LIMIT.described))
        );
        assert_eq!(
            parse_duration(
                &format!("{}d{}d", u64::MAX / 86_400, u64::MAX / 86_400),
                LIMIT
            ),
            Err(DurationError::TooLong(LIMIT.described))
        );
    }

    #[test]
    fn durations_stop_at_their_limit() {
        assert_eq!(
            parse_duration("36500d", LIMIT).unwrap().as_secs(),
            36_500 * 86_400
        );
        assert_eq!(
            parse_duration("36501d", LIMIT),
            Err(DurationError::TooLong("100 years, 36500d"))
        );
        assert_eq!(
            parse_duration(&format!("{}s", 36_500u64 * 86_400 + 1), LIMIT),
            Err(DurationError::TooLong("100 years, 36500d"))
        );
    }

    #[test]
    fn malformed_durations_get_a_specific_error() {
        for (text, expected) in [
            ("", DurationError::Empty),
            ("   ", DurationError::Empty),
            ("d", DurationError::NoNumber),
            ("-5d", DurationError::Negative),
            ("+5d", DurationError::Sign),
            ("1.5h", DurationError::Fraction),
            ("1,5h", DurationError::Fraction),
            ("30 d", DurationError::Space),
            ("30", DurationError::NoUnit),
            ("30w", DurationError::UnknownUnit("w".into())),
            ("30dd", DurationError::UnknownUnit("dd".into())),
            ("30D", DurationError::UnknownUnit("D".into())),
        ] {
            assert_eq!(parse_duration(text, LIMIT), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn an_overflowing_delete_after_is_reported_with_file_line_and_key() {
        let text =
            "[provisioning]\ndefault_role = \"viewer\"\ndelete_after = \"144115188075855872d\"\n";
        let err = Config::from_toml(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:3:"), "{err}");
        assert!(
            err.contains("delete_after = \"144115188075855872d\" is too long (at most 100 years"),
            "{err}"
        );
        let ok = Config::from_toml(
            "[provisioning]\ndelete_after = \"30d\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            ok.provisioning.delete_after,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
    }

    #[test]
    fn adopt_rules_name_idps_and_never_the_idp_itself() {
        let parse = |text: &str| {
            Config::from_toml(text, Path::new("c.toml")).and_then(|c| c.validate().map(|()| c))
        };
        let ok = parse("[ownership]\nadopt = { entra = [\"default\", \"okta\", \"manual\"] }\n")
            .unwrap();
        assert_eq!(
            ok.ownership.adopt["entra"],
            ["default", "okta", "manual"].map(str::to_owned)
        );
        for (text, expected) in [
            (
                "[ownership]\nadopt = { entra = [\"entra\"] }\n",
                "names \"entra\" itself",
            ),
            (
                "[ownership]\nadopt = { \"bad name\" = [\"okta\"] }\n",
                "must be 1 to 64 letters",
            ),
            (
                "[ownership]\nadopt = { entra = [\"okta prod\"] }\n",
                "must be 1 to 64 letters",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        assert!(
            Config::from_toml("[ownership]\nadopts = {}\n", Path::new("c.toml")).is_err(),
            "an unknown key is refused"
        );
    }

    #[test]
    fn audit_retention_defaults_to_400_days_and_accepts_never() {
        let parse = |text: &str| Config::from_toml(text, Path::new("c.toml"));
        let defaults = parse("").unwrap();
        assert_eq!(
            defaults.audit.retain,
            Some(std::time::Duration::from_secs(400 * 86_400))
        );
        assert_eq!(defaults.audit.prune_every.as_secs(), 3600);
        assert_eq!(defaults.audit.prune_batch, 1000);
        assert_eq!(
            parse("[audit]\nretain = \"90d\"\n").unwrap().audit.retain,
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
        assert_eq!(
            parse("[audit]\nretain = \"never\"\n").unwrap().audit.retain,
            None
        );
        for (text, expected) in [
            ("retain = \"0d\"", "shorter than a day"),
            ("retain = \"23h\"", "shorter than a day"),
            ("retain = \"36501d\"", "is too long (at most 100 years"),
            ("retain = \"1y\"", "unknown unit"),
            ("prune_every = \"1.5h\"", "has a fraction"),
        ] {
            let err = parse(&format!("[audit]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("c.toml:2:"), "{err}");
            assert!(err.contains(expected), "{text}: {err}");
        }
        let mut config = Config::default();
        config.audit.prune_batch = 0;
        assert!(config.validate().is_err());
    }
}
