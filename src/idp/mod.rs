//! Reading the IdPs: one [`Connector`] trait, one file per provider.
//!
//! Connectors only read. A pull turns what the IdP says about the managed groups into a
//! [`Snapshot`] (desired state); applying it is the reconcile engine's job. A pull that
//! could not read everything is marked `complete: false`, which the engine treats as
//! "add and update, never delete".

pub mod auth0;
mod delta_base;
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
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

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
    /// A cursor from which [`Connector::delta`] reports later changes, taken now;
    /// `None` for an IdP without incremental pulls (every scheduled run is then full).
    fn delta_cursor(&self) -> BoxFuture<'_, Result<Option<String>, IdpError>> {
        Box::pin(async { Ok(None) })
    }
    /// What changed since `cursor`, and the cursor to resume from next time.
    /// [`IdpError::Gone`] when the IdP no longer knows the cursor.
    fn delta<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<DeltaChanges, IdpError>> {
        let _ = cursor;
        Box::pin(async { Err(IdpError::Gone { url: String::new() }) })
    }
    /// Whether other groups are direct members of `group`. Only asked of connectors
    /// with incremental pulls: a delta of direct members says nothing about what
    /// changed inside a nested group.
    fn has_nested_groups<'a>(
        &'a self,
        group: &'a IdpGroup,
    ) -> BoxFuture<'a, Result<bool, IdpError>> {
        let _ = group;
        Box::pin(async { Ok(true) })
    }
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
    /// The last delta base this process decoded or produced, with the digest of its
    /// stored form: the store holds the base (`sync_state.delta_base`), and this spares
    /// decoding it again while no other replica has moved it on.
    base: Mutex<Option<CachedBase>>,
    /// What a stored base must have been written for ([`delta_base::scope_of`]).
    delta_scope: String,
}

struct CachedBase {
    digest: [u8; 32],
    base: Arc<DeltaBase>,
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

/// More users than this to look up one by one after a delta, and a full pull is the
/// cheaper (and simpler) way to the same state.
pub const MAX_DELTA_USER_FETCHES: usize = 500;

/// What an IdP reported as changed since a delta cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaChanges {
    /// Where the next delta starts.
    pub cursor: String,
    /// By group id; every group the IdP reported, managed or not.
    pub groups: BTreeMap<String, GroupDelta>,
    /// Users whose details (names, email, enabled) may have changed.
    pub users_changed: BTreeSet<String>,
    /// Users deleted from the directory.
    pub users_removed: BTreeSet<String>,
}

/// One group's changes in a delta.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDelta {
    pub deleted: bool,
    /// The new name, when it changed (or the group is new).
    pub name: Option<String>,
    /// Direct members added (users, or members of unknown type).
    pub added: BTreeSet<String>,
    /// Direct members removed.
    pub removed: BTreeSet<String>,
    /// A group was added to or removed from this group's direct members.
    pub nested: bool,
}

/// Every managed group with its members, and every member, as of `cursor`: a
/// complete pull that a delta can be applied to.
#[derive(Debug, Clone)]
pub struct DeltaBase {
    cursor: String,
    /// id → (name, member ids)
    groups: BTreeMap<String, (String, BTreeSet<String>)>,
    users: BTreeMap<String, IdpUser>,
}

impl DeltaBase {
    /// The cursor to store: where the next delta starts.
    pub fn cursor(&self) -> &str {
        &self.cursor
    }
}

/// A delta base a scheduled run produced, with the form the store keeps it in. Stored
/// in the transaction that applies the run's plan, so the stored base is always the
/// state the store was last brought to.
#[derive(Debug)]
pub struct NextBase {
    base: DeltaBase,
    encoded: Vec<u8>,
}

impl NextBase {
    /// The cursor to store: where the next delta starts.
    pub fn cursor(&self) -> &str {
        &self.base.cursor
    }

    /// The base as `sync_state.delta_base` keeps it.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

/// How a scheduled run read the IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullKind {
    /// Every managed group read in full.
    Full,
    /// Only the changes since the stored cursor, applied to the last run's state.
    Delta,
    /// A full pull because the IdP no longer knew the stored cursor (410 Gone).
    Resync,
}

impl PullKind {
    /// The label of `scimsync_sync_pulls_total` and the `pull` of `last_result`.
    pub fn as_str(self) -> &'static str {
        match self {
            PullKind::Full => "full",
            PullKind::Delta => "delta",
            PullKind::Resync => "resync",
        }
    }
}

/// The result of a scheduled pull: the snapshot, how it was read and, when the run
/// succeeds, the state the next run's delta applies to (to store, and [`Idp::adopt`]).
#[derive(Debug)]
pub struct ScheduledPull {
    pub pull: Pull,
    pub kind: PullKind,
    pub next: Option<NextBase>,
}

/// Members read in a full pull, before they become a snapshot.
struct Collected {
    /// (id, name, sorted member ids) of each managed group that could be read.
    groups: Vec<(String, String, Vec<String>)>,
    users: BTreeMap<String, IdpUser>,
    problems: Vec<String>,
    /// Whether every managed group is known to have no nested groups.
    flat: bool,
}

enum DeltaOutcome {
    Applied(Pull, DeltaBase),
    /// The delta cannot be applied safely; the reason, for the log.
    NeedsFullPull(String),
}

fn lock_base(idp: &Idp) -> std::sync::MutexGuard<'_, Option<CachedBase>> {
    // A panic elsewhere cannot leave the Option half-written.
    idp.base.lock().unwrap_or_else(|e| e.into_inner())
}

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
            base: Mutex::new(None),
            delta_scope: delta_base::scope_of(config),
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
        let c = self.collect(false).await?;
        Ok(self.assemble(c.groups, c.users.into_values(), c.problems))
    }

    /// Reads the managed groups' members. Each group is folded into the user map as
    /// its fetch completes, keeping one copy of each user and only ids per group, so
    /// that a pull of a million memberships never holds a million user records.
    async fn collect(&self, check_nesting: bool) -> Result<Collected, IdpError> {
        let all = self.connector.list_groups().await?;
        let managed: Vec<&IdpGroup> = all.iter().filter(|g| self.selector.matches(g)).collect();
        self.connector
            .stats()
            .add_groups(u64::try_from(managed.len()).unwrap_or(u64::MAX));
        let all_ref = &all;
        type Fetched = (
            Result<Vec<IdpUser>, IdpError>,
            Option<Result<bool, IdpError>>,
        );
        // Boxed one by one: a closure returning `async` blocks that borrow would not be
        // provably `Send`, and the scheduler spawns pulls.
        type Fetch<'f> = BoxFuture<'f, (&'f IdpGroup, Fetched)>;
        let fetches: Vec<Fetch<'_>> = managed
            .into_iter()
            .map(|group| -> Fetch<'_> {
                Box::pin(async move {
                    let members = self.connector.group_members(group, all_ref);
                    if !check_nesting {
                        return (group, (members.await, None));
                    }
                    let nested = self.connector.has_nested_groups(group);
                    let (members, nested) = futures::future::join(members, nested).await;
                    (group, (members, Some(nested)))
                })
            })
            .collect();
        let mut stream = futures::stream::iter(fetches).buffer_unordered(self.concurrency);
        let mut problems = Vec::new();
        let mut users: BTreeMap<String, IdpUser> = BTreeMap::new();
        let mut groups = Vec::new();
        let mut flat = check_nesting;
        while let Some((group, (result, nested))) = stream.next().await {
            let members = match result {
                Ok(members) => members,
                Err(e) => {
                    tracing::warn!(idp = %self.name, group = %group.name, error = %e,
                        "could not read a group's members; the pull is partial");
                    problems.push(format!("group {:?}: {e}", group.name));
                    continue;
                }
            };
            match nested {
                None | Some(Ok(false)) => {}
                Some(Ok(true)) => {
                    tracing::info!(idp = %self.name, group = %group.name,
                        "a managed group has nested groups; scheduled runs pull in full");
                    flat = false;
                }
                Some(Err(e)) => {
                    tracing::info!(idp = %self.name, group = %group.name, error = %e,
                        "cannot tell whether a managed group has nested groups; the next run pulls in full");
                    flat = false;
                }
            }
            let mut ids = Vec::with_capacity(members.len());
            for member in members {
                ids.push(member.id.clone());
                if !users.contains_key(&member.id) {
                    users.insert(member.id.clone(), member);
                }
            }
            ids.sort_unstable();
            ids.dedup();
            groups.push((group.id.clone(), group.name.clone(), ids));
        }
        Ok(Collected {
            groups,
            users,
            problems,
            flat,
        })
    }

    /// Turns groups (id, name, member ids) and their members into a snapshot: the one
    /// place that decides what a full pull and a delta run produce.
    fn assemble(
        &self,
        groups: Vec<(String, String, Vec<String>)>,
        users: impl Iterator<Item = IdpUser>,
        mut problems: Vec<String>,
    ) -> Pull {
        let (snapshot_users, dropped) = snapshot_users(users, &mut problems);
        let mut snapshot_groups = Vec::new();
        for (id, name, mut ids) in groups {
            if !dropped.is_empty() {
                ids.retain(|id| !dropped.contains(id));
            }
            match TeamName::parse(&name) {
                Ok(display_name) => snapshot_groups.push(SnapshotGroup {
                    external_id: id,
                    display_name,
                    members: ids,
                    metadata: None,
                }),
                Err(e) => problems.push(format!("group {name:?} skipped: {e}")),
            }
        }
        snapshot_groups.sort_by(|a, b| {
            (a.display_name.as_str(), &a.external_id)
                .cmp(&(b.display_name.as_str(), &b.external_id))
        });
        self.connector
            .stats()
            .add_users(u64::try_from(snapshot_users.len()).unwrap_or(u64::MAX));
        Pull {
            snapshot: Snapshot {
                idp: self.name.clone(),
                complete: problems.is_empty(),
                users: snapshot_users,
                groups: snapshot_groups,
            },
            problems,
        }
    }

    /// What a scheduled run pulls. With a stored base from an earlier run (by this
    /// replica or another) that belongs to `stored_cursor` (the cursor sync_state
    /// holds), only the changes since then are read and applied to it; otherwise, or
    /// when the delta cannot be applied safely, every managed group is read. A delta
    /// that fails leaves the base and cursor as they were, so the next run reads the
    /// same changes again.
    pub async fn scheduled_pull(
        &self,
        stored_cursor: Option<&str>,
        stored_base: Option<&[u8]>,
    ) -> Result<ScheduledPull, IdpError> {
        let base = self.stored_base(stored_base);
        let mut kind = PullKind::Full;
        match base {
            Some(base) if stored_cursor == Some(base.cursor.as_str()) => {
                match self.delta_pull(&base).await {
                    Ok(DeltaOutcome::Applied(pull, next)) => {
                        return Ok(ScheduledPull {
                            pull,
                            kind: PullKind::Delta,
                            next: self.encode_base(next),
                        })
                    }
                    Ok(DeltaOutcome::NeedsFullPull(reason)) => {
                        tracing::info!(idp = %self.name, %reason, "delta not applicable; pulling in full");
                    }
                    Err(IdpError::Gone { .. }) => {
                        tracing::warn!(idp = %self.name,
                            "the IdP no longer knows the delta cursor; resyncing in full");
                        *lock_base(self) = None;
                        kind = PullKind::Resync;
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {
                // The cursor was cleared (by an operator or a resync) or written without
                // this base (by an older version): the base is not the state the store
                // was last brought to.
                tracing::info!(idp = %self.name, "stored delta cursor differs from the base's; pulling in full");
                *lock_base(self) = None;
            }
            None => {}
        }
        let (pull, next) = self.full_pull_with_base().await?;
        let next = next.and_then(|next| self.encode_base(next));
        Ok(ScheduledPull { pull, kind, next })
    }

    /// The base the store holds, decoded (or the one in memory, when it is the same).
    /// `None` when nothing usable is stored: the run pulls in full.
    fn stored_base(&self, encoded: Option<&[u8]>) -> Option<Arc<DeltaBase>> {
        let Some(encoded) = encoded else {
            *lock_base(self) = None;
            return None;
        };
        let digest = delta_base::digest(encoded);
        if let Some(cached) = lock_base(self).as_ref().filter(|c| c.digest == digest) {
            return Some(cached.base.clone());
        }
        match delta_base::decode(encoded, &self.delta_scope) {
            Ok(base) => {
                let base = Arc::new(base);
                *lock_base(self) = Some(CachedBase {
                    digest,
                    base: base.clone(),
                });
                Some(base)
            }
            Err(reason) => {
                tracing::info!(idp = %self.name, %reason, "the stored delta base is not usable; pulling in full");
                *lock_base(self) = None;
                None
            }
        }
    }

    /// The base in its stored form; `None` (and a full pull next time) if it cannot be
    /// encoded, which only a broken invariant would cause.
    fn encode_base(&self, base: DeltaBase) -> Option<NextBase> {
        match delta_base::encode(&base, &self.delta_scope) {
            Ok(encoded) => Some(NextBase { base, encoded }),
            Err(e) => {
                tracing::warn!(idp = %self.name, error = %e, "cannot encode the delta base; the next run pulls in full");
                None
            }
        }
    }

    /// Keeps `next` in memory as the base the next scheduled run applies its delta to,
    /// once the run that produced it has been applied and `next` stored with it.
    pub fn adopt(&self, next: NextBase) {
        *lock_base(self) = Some(CachedBase {
            digest: delta_base::digest(&next.encoded),
            base: Arc::new(next.base),
        });
    }

    /// A full pull that also yields a [`DeltaBase`] when the connector has incremental
    /// pulls, the pull is complete, and no managed group has nested groups.
    async fn full_pull_with_base(&self) -> Result<(Pull, Option<DeltaBase>), IdpError> {
        // Taken before reading: changes made while the pull runs come again in the
        // next delta, and applying a change twice is harmless (each says the final state).
        let cursor = match self.connector.delta_cursor().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(idp = %self.name, error = %e,
                    "cannot start change tracking; the next run pulls in full too");
                None
            }
        };
        let c = self.collect(cursor.is_some()).await?;
        let base = match cursor {
            Some(cursor) if c.flat && c.problems.is_empty() => Some(DeltaBase {
                cursor,
                groups: c
                    .groups
                    .iter()
                    .map(|(id, name, ids)| {
                        (id.clone(), (name.clone(), ids.iter().cloned().collect()))
                    })
                    .collect(),
                users: c.users.clone(),
            }),
            _ => None,
        };
        let pull = self.assemble(c.groups, c.users.into_values(), c.problems);
        let complete = pull.snapshot.complete;
        Ok((pull, base.filter(|_| complete)))
    }

    /// Reads the changes since `base` and applies them to a copy of it.
    async fn delta_pull(&self, base: &DeltaBase) -> Result<DeltaOutcome, IdpError> {
        let changes = self.connector.delta(&base.cursor).await?;
        let mut next = base.clone();
        next.cursor = changes.cursor;
        let mut added: Vec<(String, String)> = Vec::new();
        for (id, change) in changes.groups {
            if change.deleted {
                next.groups.remove(&id);
                continue;
            }
            if let Some(name) = &change.name {
                let matches = self
                    .selector
                    .matches(&IdpGroup::new(id.clone(), name.clone()));
                match (next.groups.get_mut(&id), matches) {
                    (Some(group), true) => group.0.clone_from(name),
                    (Some(_), false) => {
                        next.groups.remove(&id);
                        continue;
                    }
                    (None, true) => {
                        return Ok(DeltaOutcome::NeedsFullPull(format!(
                            "group {name:?} is new to the managed groups"
                        )))
                    }
                    (None, false) => continue,
                }
            }
            let Some(group) = next.groups.get_mut(&id) else {
                continue;
            };
            if change.nested {
                return Ok(DeltaOutcome::NeedsFullPull(format!(
                    "group {:?} now has nested groups",
                    group.0
                )));
            }
            for member in &change.removed {
                group.1.remove(member);
            }
            added.extend(change.added.into_iter().map(|m| (id.clone(), m)));
        }

        // Users are looked up when they are new to the managed groups, or when their
        // details may have changed: a groups delta carries only ids.
        let mut wanted: BTreeSet<String> = added
            .iter()
            .filter(|(_, m)| !next.users.contains_key(m))
            .map(|(_, m)| m.clone())
            .collect();
        wanted.extend(
            changes
                .users_changed
                .iter()
                .filter(|u| next.users.contains_key(*u) && !changes.users_removed.contains(*u))
                .cloned(),
        );
        if wanted.len() > MAX_DELTA_USER_FETCHES {
            return Ok(DeltaOutcome::NeedsFullPull(format!(
                "{} users to look up",
                wanted.len()
            )));
        }
        let lookups: Vec<BoxFuture<'_, (String, Result<IdpUser, IdpError>)>> = wanted
            .into_iter()
            .map(|id| -> BoxFuture<'_, _> {
                Box::pin(async move {
                    let found = self.connector.find_user(&id).await;
                    (id, found)
                })
            })
            .collect();
        let mut stream = futures::stream::iter(lookups).buffer_unordered(self.concurrency);
        let mut gone: BTreeSet<String> = changes.users_removed;
        while let Some((id, found)) = stream.next().await {
            match found {
                // Looked up by id, so another object answering is not this member.
                Ok(user) if user.id == id => {
                    next.users.insert(id, user);
                }
                Ok(_) | Err(IdpError::UserNotFound(_)) => {
                    gone.insert(id);
                }
                Err(e) => return Err(e),
            }
        }
        drop(stream);
        for (group, member) in added {
            if next.users.contains_key(&member) {
                if let Some(g) = next.groups.get_mut(&group) {
                    g.1.insert(member);
                }
            }
        }
        // Deleted users, and members that are not users after all, are in no group.
        if !gone.is_empty() {
            for group in next.groups.values_mut() {
                group.1.retain(|m| !gone.contains(m));
            }
        }
        let members: HashSet<String> = next
            .groups
            .values()
            .flat_map(|g| g.1.iter().cloned())
            .collect();
        next.users.retain(|id, _| members.contains(id));
        let users: Vec<IdpUser> = next.users.values().cloned().collect();
        let groups = next
            .groups
            .iter()
            .map(|(id, (name, ids))| (id.clone(), name.clone(), ids.iter().cloned().collect()))
            .collect();
        let pull = self.assemble(groups, users.into_iter(), Vec::new());
        Ok(DeltaOutcome::Applied(pull, next))
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
    // Folded userName -> the IdP id and spelling of the user that has it.
    let mut names: std::collections::HashMap<String, (String, String)> =
        std::collections::HashMap::new();
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
        if let Some((other_id, other_name)) = names.get(user_name.folded()) {
            problems.push(format!(
                "user {:?} skipped: userName {:?} is the same name as user {other_id:?}'s \
                 {other_name:?} (userNames ignore case, width and Unicode normalisation)",
                u.id,
                user_name.as_str()
            ));
            dropped.insert(u.id);
            continue;
        }
        names.insert(
            user_name.folded().to_owned(),
            (u.id.clone(), user_name.as_str().to_owned()),
        );
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

pub(crate) use http::checked_next_link;
