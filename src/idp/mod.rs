//! Reading the IdPs: one [`Connector`] trait, one file per provider.
//!
//! Connectors only read. A pull turns what the IdP says about the managed groups into a
//! [`Snapshot`] (desired state); applying it is the reconcile engine's job. A pull that
//! could not read everything is marked `complete: false`, which the engine treats as
//! "add and update, never delete".

pub mod auth0;
pub mod glob;
pub mod google;
pub mod graph;
pub mod http;
pub mod keycloak;
pub mod okta;
pub mod onelogin;
mod progress;
mod secret;

pub use glob::GroupSelector;
pub use http::{ApiClient, PullStats};
pub use progress::Progress;
pub use secret::Secret;

use crate::config::{Config, IdpConfig, IdpKind};
use crate::domain::{TeamName, UserName};
use crate::reconcile::snapshot::{Snapshot, SnapshotGroup, SnapshotUser};
use futures::future::BoxFuture;
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Why talking to an IdP failed. Messages name URLs, statuses and the IdP's own error
/// text, never a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdpError {
    #[error("IdP {idp:?}: {message}")]
    Config { idp: String, message: String },
    #[error("no [[idp]] named {0:?} in the configuration")]
    UnknownIdp(String),
    /// A credential could not be read; the message names where it was looked for.
    #[error("{0}")]
    Secret(String),
    /// The token endpoint refused us (wrong client id or secret, missing consent...).
    #[error("token request to {url} failed: {message}")]
    Token { url: String, message: String },
    #[error("GET {url} answered {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("GET {url}: {message}")]
    Transport { url: String, message: String },
    /// Still throttled after every retry.
    #[error("GET {url}: still rate limited after {attempts} attempts")]
    RateLimited { url: String, attempts: u32 },
    /// HTTP 410: a delta link expired; the caller falls back to a full pull.
    #[error("GET {url}: 410 Gone")]
    Gone { url: String },
    #[error("GET {url}: unexpected response: {message}")]
    Decode { url: String, message: String },
    #[error("user {0:?} not found in the IdP")]
    UserNotFound(String),
}

impl IdpError {
    /// Whether trying again later may succeed (IdP down or throttling), as opposed to a
    /// configuration or credential problem that needs an operator.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            IdpError::Transport { .. } | IdpError::RateLimited { .. }
        ) || matches!(self, IdpError::Http { status, .. } if *status >= 500)
    }
}

/// A group as the IdP names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpGroup {
    pub id: String,
    pub name: String,
    /// Other names the selector may match (Keycloak's group path).
    pub aliases: Vec<String>,
    /// Ids of groups nested inside this one whose members count as members here
    /// (Keycloak subgroups). Connectors that resolve nesting server-side leave it empty.
    pub nested: Vec<String>,
}

impl IdpGroup {
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            aliases: Vec::new(),
            nested: Vec::new(),
        }
    }
}

/// A user as the IdP describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpUser {
    pub id: String,
    pub user_name: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub active: bool,
}

/// What every provider can answer. Implementations page, retry and refresh tokens
/// through [`ApiClient`]; the pull itself ([`pull`]) is the same for all of them.
///
/// The methods return boxed futures so that connectors can be chosen at run time
/// (`Box<dyn Connector>`) from `[[idp]] kind`.
pub trait Connector: Send + Sync {
    /// Every group the IdP has (the selector is applied by the caller).
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<IdpGroup>, IdpError>>;
    /// The users in a group, including those in nested groups. `all` is the full group
    /// list, for connectors that resolve nesting themselves.
    fn group_members<'a>(
        &'a self,
        group: &'a IdpGroup,
        all: &'a [IdpGroup],
    ) -> BoxFuture<'a, Result<Vec<IdpUser>, IdpError>>;
    /// Looks a user up by id, userName or email.
    fn find_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<IdpUser, IdpError>>;
    /// The groups a user is in, directly or through nesting.
    fn user_groups<'a>(
        &'a self,
        user: &'a IdpUser,
    ) -> BoxFuture<'a, Result<Vec<IdpGroup>, IdpError>>;
    /// Request, page, retry and wait counters of this connector's client.
    fn stats(&self) -> Arc<PullStats>;
    /// The authenticated client, for credential checks.
    fn client(&self) -> &http::ApiClient;
}

/// A connector with its selection and settings, ready to pull.
pub struct Idp {
    pub name: String,
    pub selector: GroupSelector,
    pub concurrency: usize,
    pub connector: Box<dyn Connector>,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp")
            .field("name", &self.name)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

/// Default for `[[idp]] concurrency`: parallel member fetches per pull.
pub const DEFAULT_CONCURRENCY: usize = 4;

impl Idp {
    /// Builds the connector for one `[[idp]]` table, reading its credentials.
    pub fn from_config(config: &IdpConfig) -> Result<Self, IdpError> {
        let connector: Box<dyn Connector> = match config.kind {
            IdpKind::Entra => Box::new(graph::Graph::new(config)?),
            IdpKind::Okta => Box::new(okta::Okta::new(config)?),
            IdpKind::Google => Box::new(google::Google::new(config)?),
            IdpKind::Keycloak => Box::new(keycloak::Keycloak::new(config)?),
            IdpKind::Onelogin => Box::new(onelogin::OneLogin::new(config)?),
            IdpKind::Auth0 => Box::new(auth0::Auth0::new(config)?),
        };
        Ok(Self {
            name: config.name.clone(),
            selector: GroupSelector::new(&config.groups),
            concurrency: config.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
            connector,
        })
    }

    /// Reaches the token endpoint with the configured credentials (`check-config
    /// --connect`). True when a token was fetched; false for a static API token, which
    /// has no endpoint to check against.
    pub async fn check_credentials(&self) -> Result<bool, IdpError> {
        self.connector.client().check_credentials().await
    }

    /// Pulls every managed group and its members. Problems with single groups make the
    /// snapshot partial instead of failing the pull; only a pull that cannot even list
    /// the groups is an error.
    pub async fn pull(&self) -> Result<Pull, IdpError> {
        let all = self.connector.list_groups().await?;
        let managed: Vec<&IdpGroup> = all.iter().filter(|g| self.selector.matches(g)).collect();
        self.connector
            .stats()
            .add_groups(u64::try_from(managed.len()).unwrap_or(u64::MAX));
        let all_ref = &all;
        // Boxed one by one: a closure returning `async` blocks that borrow would not be
        // provably `Send`, and the scheduler spawns pulls.
        type Fetch<'f> = BoxFuture<'f, (&'f IdpGroup, Result<Vec<IdpUser>, IdpError>)>;
        let fetches: Vec<Fetch<'_>> = managed
            .into_iter()
            .map(|group| -> Fetch<'_> {
                Box::pin(async move { (group, self.connector.group_members(group, all_ref).await) })
            })
            .collect();
        let fetched: Vec<(&IdpGroup, Result<Vec<IdpUser>, IdpError>)> =
            futures::stream::iter(fetches)
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        let mut problems = Vec::new();
        let mut users: BTreeMap<String, IdpUser> = BTreeMap::new();
        let mut groups = Vec::new();
        for (group, result) in fetched {
            let members = match result {
                Ok(members) => members,
                Err(e) => {
                    tracing::warn!(idp = %self.name, group = %group.name, error = %e,
                        "could not read a group's members; the pull is partial");
                    problems.push(format!("group {:?}: {e}", group.name));
                    continue;
                }
            };
            let mut ids: Vec<String> = members.iter().map(|u| u.id.clone()).collect();
            ids.sort();
            ids.dedup();
            for member in members {
                users.entry(member.id.clone()).or_insert(member);
            }
            groups.push((group, ids));
        }
        let (snapshot_users, dropped) = snapshot_users(users.into_values(), &mut problems);
        let mut snapshot_groups = Vec::new();
        for (group, mut ids) in groups {
            ids.retain(|id| !dropped.contains(id));
            match TeamName::parse(&group.name) {
                Ok(display_name) => snapshot_groups.push(SnapshotGroup {
                    external_id: group.id.clone(),
                    display_name,
                    members: ids,
                    metadata: None,
                }),
                Err(e) => problems.push(format!("group {:?} skipped: {e}", group.name)),
            }
        }
        snapshot_groups.sort_by(|a, b| {
            (a.display_name.as_str(), &a.external_id)
                .cmp(&(b.display_name.as_str(), &b.external_id))
        });
        self.connector
            .stats()
            .add_users(u64::try_from(snapshot_users.len()).unwrap_or(u64::MAX));
        Ok(Pull {
            snapshot: Snapshot {
                idp: self.name.clone(),
                complete: problems.is_empty(),
                users: snapshot_users,
                groups: snapshot_groups,
            },
            problems,
        })
    }

    /// One user and the managed groups they are in, for a sign-in.
    pub async fn user_with_groups(&self, user: &str) -> Result<(IdpUser, Vec<IdpGroup>), IdpError> {
        let found = self.connector.find_user(user).await?;
        let groups = self.connector.user_groups(&found).await?;
        let mut seen = HashSet::new();
        let managed = groups
            .into_iter()
            .filter(|g| self.selector.matches(g) && seen.insert(g.id.clone()))
            .collect();
        Ok((found, managed))
    }
}

/// Turns IdP users into snapshot users. A user whose name is not a valid userName, or
/// who collides with an earlier one, is left out (and the pull marked partial, so that
/// leaving them out deletes nothing). Returns the ids left out.
fn snapshot_users(
    users: impl Iterator<Item = IdpUser>,
    problems: &mut Vec<String>,
) -> (Vec<SnapshotUser>, HashSet<String>) {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut dropped = HashSet::new();
    for u in users {
        let user_name = match UserName::parse(&u.user_name) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!("user {:?} skipped: {e}", u.id));
                dropped.insert(u.id);
                continue;
            }
        };
        if !names.insert(user_name.folded().to_owned()) {
            problems.push(format!(
                "user {:?} skipped: userName {:?} is also used by another IdP user",
                u.id,
                user_name.as_str()
            ));
            dropped.insert(u.id);
            continue;
        }
        out.push(SnapshotUser {
            external_id: u.id,
            user_name,
            email: u.email,
            display_name: u.display_name,
            given_name: u.given_name,
            family_name: u.family_name,
            active: u.active,
            role: None,
            attributes: None,
        });
    }
    (out, dropped)
}

/// The result of a pull: the snapshot and, when it is partial, why.
#[derive(Debug, Clone)]
pub struct Pull {
    pub snapshot: Snapshot,
    pub problems: Vec<String>,
}

/// Finds an `[[idp]]` by name.
pub fn idp_config<'a>(config: &'a Config, name: &str) -> Result<&'a IdpConfig, IdpError> {
    config
        .idp
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| IdpError::UnknownIdp(name.to_owned()))
}

/// Pulls one IdP's managed groups into a snapshot (what `plan --idp` / `apply --idp`
/// use). A partial pull comes back as `complete: false`, never as deletions.
pub async fn pull_snapshot(config: &Config, name: &str) -> Result<Snapshot, IdpError> {
    let idp = Idp::from_config(idp_config(config, name)?)?;
    Ok(idp.pull().await?.snapshot)
}

/// Keeps only non-empty, trimmed text.
pub(crate) fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The retry settings of one `[[idp]]`.
pub(crate) fn retry_policy(config: &IdpConfig) -> http::RetryPolicy {
    let default = http::RetryPolicy::default();
    http::RetryPolicy {
        max_retries: config.max_retries.unwrap_or(default.max_retries),
        base_backoff: config
            .retry_backoff_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or(default.base_backoff),
        request_timeout: config
            .request_timeout_secs
            .map(std::time::Duration::from_secs)
            .unwrap_or(default.request_timeout),
    }
}

/// A key the connector cannot work without.
pub(crate) fn required<'a>(
    config: &IdpConfig,
    value: &'a Option<String>,
    key: &str,
) -> Result<&'a str, IdpError> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| IdpError::Config {
            idp: config.name.clone(),
            message: format!("{key} is not set"),
        })
}

/// The client secret, from wherever the config says it is.
pub(crate) fn client_secret(config: &IdpConfig) -> Result<Secret, IdpError> {
    secret::SecretSources {
        what: format!("client secret of IdP {:?}", config.name),
        file: config.client_secret_file.as_deref(),
        env: config.client_secret_env.as_deref(),
        credential: Some(config.name.clone()),
        inline: config.client_secret.as_deref(),
    }
    .read()?
    .ok_or_else(|| IdpError::Config {
        idp: config.name.clone(),
        message: "no client secret: set client_secret_file, client_secret_env or \
                  client_secret, or pass a systemd credential named after the IdP"
            .into(),
    })
}

/// A configured base URL without its trailing slash, or the kind's default.
pub(crate) fn base_url(configured: &Option<String>, default: impl FnOnce() -> String) -> String {
    configured
        .clone()
        .unwrap_or_else(default)
        .trim_end_matches('/')
        .to_owned()
}

/// Builds `base` + path segments (each percent-encoded) + query pairs.
pub(crate) fn api_url(
    idp: &str,
    base: &str,
    segments: &[&str],
    query: &[(&str, &str)],
) -> Result<String, IdpError> {
    let mut url = url::Url::parse(base).map_err(|e| IdpError::Config {
        idp: idp.to_owned(),
        message: format!("api_base_url {base:?} is not a URL: {e}"),
    })?;
    {
        let mut path = url.path_segments_mut().map_err(|_| IdpError::Config {
            idp: idp.to_owned(),
            message: format!("api_base_url {base:?} cannot have a path"),
        })?;
        path.pop_if_empty();
        path.extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url.into())
}

/// A next-page link must point at the same scheme, host and port as the API: the
/// client sends its bearer token there, and a link elsewhere would hand it away.
pub(crate) fn checked_next_link(base: &str, next: &str) -> Result<String, IdpError> {
    let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
    match (origin(base), origin(next)) {
        (Some(a), Some(b)) if a == b => Ok(next.to_owned()),
        _ => Err(IdpError::Decode {
            url: base.to_owned(),
            message: format!("refusing to follow a next-page link to another host: {next}"),
        }),
    }
}
