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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub provisioning: ProvisioningConfig,
    pub safety: SafetyConfig,
    pub teams: TeamsConfig,
    pub sso: SsoConfig,
    pub idp: Vec<IdpConfig>,
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
    /// Base URL clients reach us at, for Location headers and meta.location
    /// (default: derived from the request's Host header).
    pub public_url: Option<String>,
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
    /// e.g. "30d"; absent means never delete, only deactivate.
    pub delete_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    /// A plan with more deletions plus deactivations than this is refused.
    pub max_deletions: u64,
    /// ... or with more than this share of the managed users.
    pub max_deletion_ratio: f64,
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

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    pub name: String,
    pub kind: IdpKind,
    pub tenant_id: Option<String>,
    pub domain: Option<String>,
    pub realm: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub api_token_env: Option<String>,
    pub service_account_file: Option<PathBuf>,
    pub admin_subject: Option<String>,
    pub token_url: Option<String>,
    pub api_base_url: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub schedule: Option<String>,
    pub concurrency: Option<usize>,
}

impl fmt::Debug for IdpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("client_secret_file", &self.client_secret_file)
            .field("client_secret_env", &self.client_secret_env)
            .field("token_url", &self.token_url)
            .field("api_base_url", &self.api_base_url)
            .field("groups", &self.groups)
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
            public_url: None,
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

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            max_deletions: 500,
            max_deletion_ratio: 0.2,
        }
    }
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self { timeout_secs: 5 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            provisioning: ProvisioningConfig::default(),
            safety: SafetyConfig::default(),
            teams: TeamsConfig::default(),
            sso: SsoConfig::default(),
            idp: Vec::new(),
        }
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
        if self.server.max_body_bytes < 1024 {
            return invalid("[server] max_body_bytes must be at least 1024".into());
        }
        if let Some(after) = &self.provisioning.delete_after {
            parse_duration(after).map_err(|m| {
                ConfigError::Invalid(format!("[provisioning] delete_after {after:?}: {m}"))
            })?;
        }
        let mut names = std::collections::BTreeSet::new();
        for idp in &self.idp {
            if idp.name.trim().is_empty() {
                return invalid("an [[idp]] has an empty name".into());
            }
            if !names.insert(idp.name.as_str()) {
                return invalid(format!("two [[idp]] entries are named {:?}", idp.name));
            }
        }
        Ok(())
    }
}

/// Parses durations such as `90s`, `15m`, `12h`, `30d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| "a unit is missing (use s, m, h or d)".to_owned())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| "expected a number followed by s, m, h or d".to_owned())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => return Err(format!("unknown unit {other:?} (use s, m, h or d)")),
    };
    Ok(std::time::Duration::from_secs(secs))
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

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("3w").is_err());
    }
}
