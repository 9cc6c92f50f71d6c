//! Downstream targets: gateways whose users, teams and memberships follow the store.
//!
//! Two ways a change gets there. The engine leaves an outbox row per changed object in
//! the transaction that applies a plan (src/reconcile/outbox.rs); the [`worker`]
//! delivers them, in order per object, at least once: a delivery reads the object as
//! the store has it *now* and makes the target agree, so a repeated or late delivery
//! does no harm. And a drift repair ([`drift`]: `plan --target`, `apply --target`, the
//! optional schedule and the daemon's start) compares everything and repairs it.
//!
//! Ownership: what scimsync creates carries `metadata.scimsync`; anything else in the
//! target is never modified or deleted. A target user with the email of one of ours is
//! adopted: stamped with `metadata.scimsync` (`adopted: true`) and from then on managed
//! like one scimsync created, so that deprovisioning in the IdP reaches its keys.

pub mod drift;
pub mod litellm;
pub mod worker;

use crate::config::{Config, TargetConfig};
use crate::domain::User;
use crate::store::targets::TargetLink;
use crate::store::{Store, StoreError};
use litellm::{Client, Done, LiteUser, UserSpec};
use serde_json::json;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// Everything talking to a target can end in. No variant holds the master key.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the target: {0}")]
    Unreachable(String),
    #[error("the target failed (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("the target refused the master key (HTTP {status})")]
    Unauthorized { status: u16 },
    #[error("the target refused the call (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("{0}")]
    Protocol(String),
    /// The target has an object in the way that scimsync does not own.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A store failure shared by several deliveries (one batch): its text.
    #[error("{0}")]
    StoreFailed(String),
}

impl TargetError {
    /// A bounded label for `scimsync_target_failures_total{cause}`.
    pub fn cause(&self) -> &'static str {
        match self {
            TargetError::Config(_) => "config",
            TargetError::Unreachable(_) => "unreachable",
            TargetError::Server { .. } => "server_error",
            TargetError::Unauthorized { .. } => "unauthorized",
            TargetError::Rejected { .. } => "rejected",
            TargetError::Protocol(_) => "protocol",
            TargetError::Conflict(_) => "conflict",
            TargetError::Store(_) | TargetError::StoreFailed(_) => "store",
        }
    }

    /// Whether trying again later cannot help: the target refused the call itself, or
    /// answered something scimsync does not understand. (An outage, a timeout or a
    /// wrong master key can be over by the next try.)
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            TargetError::Rejected { .. } | TargetError::Conflict(_) | TargetError::Protocol(_)
        )
    }

    /// The same failure again, for each delivery of a batch it ended.
    pub fn again(&self) -> TargetError {
        match self {
            TargetError::Config(m) => TargetError::Config(m.clone()),
            TargetError::Unreachable(m) => TargetError::Unreachable(m.clone()),
            TargetError::Server { status, message } => TargetError::Server {
                status: *status,
                message: message.clone(),
            },
            TargetError::Unauthorized { status } => TargetError::Unauthorized { status: *status },
            TargetError::Rejected { status, message } => TargetError::Rejected {
                status: *status,
                message: message.clone(),
            },
            TargetError::Protocol(m) => TargetError::Protocol(m.clone()),
            TargetError::Conflict(m) => TargetError::Conflict(m.clone()),
            TargetError::Store(e) => TargetError::StoreFailed(e.to_string()),
            TargetError::StoreFailed(m) => TargetError::StoreFailed(m.clone()),
        }
    }
}

/// The master key. Only [`MasterKey::expose`] reveals it, at the point of use.
#[derive(Clone)]
pub struct MasterKey(std::sync::Arc<str>);

impl MasterKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads the master key: `master_key_file`, `master_key_env`,
/// `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`), then `master_key`.
fn read_master_key(
    config: &TargetConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<MasterKey, TargetError> {
    let what = format!("[[target]] {:?} master key", config.name);
    let from_file = |path: &Path| -> Result<MasterKey, TargetError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            TargetError::Config(format!("{what}: cannot read {}: {e}", path.display()))
        })?;
        let value = text.trim();
        if value.is_empty() {
            return Err(TargetError::Config(format!(
                "{what}: {} is empty",
                path.display()
            )));
        }
        Ok(MasterKey(value.into()))
    };
    if let Some(path) = &config.master_key_file {
        return from_file(path);
    }
    if let Some(name) = &config.master_key_env {
        return match env(name) {
            Some(v) if !v.trim().is_empty() => Ok(MasterKey(v.trim().into())),
            _ => Err(TargetError::Config(format!(
                "{what}: environment variable {name} is not set or empty"
            ))),
        };
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
        let path = PathBuf::from(dir).join(&config.name);
        if path.is_file() {
            return from_file(&path);
        }
    }
    match &config.master_key {
        Some(key) if !key.trim().is_empty() => Ok(MasterKey(key.trim().into())),
        _ => Err(TargetError::Config(format!(
            "{what}: set master_key_file, master_key_env or master_key"
        ))),
    }
}

/// One configured target, ready to talk to.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub client: Client,
    pub store: Store,
    /// `[teams.defaults]`: models and max_budget for the teams scimsync creates.
    pub team_defaults: serde_json::Map<String, serde_json::Value>,
    pub concurrency: usize,
}

impl Target {
    pub fn from_config(
        config: &Config,
        target: &TargetConfig,
        store: Store,
    ) -> Result<Self, TargetError> {
        let key = read_master_key(target, &|name| std::env::var(name).ok())?;
        let timeout = Duration::from_secs(target.request_timeout_secs.unwrap_or(10).max(1));
        let client = Client::new(&target.url, key, timeout, target.max_retries.unwrap_or(3))?;
        Ok(Target {
            name: target.name.clone(),
            client,
            store,
            team_defaults: config.teams.defaults.clone(),
            concurrency: target.concurrency.unwrap_or(8).max(1),
        })
    }

    /// The target named `name` in `config`.
    pub fn named(config: &Config, name: &str, store: Store) -> Result<Self, TargetError> {
        let target = config
            .target
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| {
                TargetError::Config(format!("no [[target]] named {name:?} in the configuration"))
            })?;
        Target::from_config(config, target, store)
    }

    async fn link(&self, kind: &str, id: Uuid) -> Result<Option<TargetLink>, TargetError> {
        Ok(self
            .store
            .target_link(&self.name, kind, &id.to_string())
            .await?)
    }

    async fn set_link(
        &self,
        kind: &str,
        id: Uuid,
        remote: &str,
        managed: bool,
    ) -> Result<(), TargetError> {
        let link = TargetLink {
            kind: kind.into(),
            local_id: id.to_string(),
            remote_id: remote.to_owned(),
            managed,
        };
        Ok(self.store.set_target_link(&self.name, &link).await?)
    }

    /// Makes the target's user agree with ours as the store has it now (or be gone).
    /// Returns the target's user id when the user exists.
    pub async fn sync_user(&self, id: Uuid) -> Result<Option<String>, TargetError> {
        let user = self.store.user(id).await?;
        let link = self.link("user", id).await?;
        let Some(user) = user else {
            // Created or adopted, a linked user is ours: deleting it is what purges
            // their keys. (A link written before adoption stamped users, managed=false,
            // is an adoption all the same.)
            if let Some(link) = link {
                self.client.user_delete(&link.remote_id).await?;
                self.store
                    .remove_target_link(&self.name, "user", &link.local_id)
                    .await?;
            }
            return Ok(None);
        };
        let spec = UserSpec::of(&user);
        if let Some(link) = &link {
            if let Some(have) = self.client.user_info(&link.remote_id).await? {
                self.claim(&user, &have).await?;
                self.update_user(&spec, &have).await?;
                if !link.managed {
                    self.set_link("user", user.id, &have.user_id, true).await?;
                }
                return Ok(Some(have.user_id));
            }
            // Deleted in the target behind our back: created again below. (/user/update
            // would create it silently, without our metadata.)
        }
        self.create_or_adopt(&user, &spec).await.map(Some)
    }

    /// Refuses a target user that another of our users owns (its mark names a user
    /// the store still has): taking it over would move someone else's keys.
    async fn claim(&self, user: &User, have: &LiteUser) -> Result<(), TargetError> {
        let Some(owner) = have.owner_id() else {
            return Ok(());
        };
        if owner == user.id.to_string() {
            return Ok(());
        }
        let other = Uuid::parse_str(owner).ok();
        match other {
            Some(other) if self.store.user(other).await?.is_some() => {
                Err(TargetError::Conflict(format!(
                    "LiteLLM user {:?} belongs to another scimsync user ({other})",
                    have.user_id
                )))
            }
            _ => Ok(()),
        }
    }

    async fn update_user(&self, spec: &UserSpec, have: &LiteUser) -> Result<(), TargetError> {
        if !spec.diff(have).is_empty() {
            self.client.user_update(&spec.update_body(have)).await?;
        }
        Ok(())
    }

    /// Takes over an existing target user with the same email (adopted: stamped with
    /// our mark and managed from now on, or ours from a delivery whose link was never
    /// written), else creates one.
    async fn create_or_adopt(&self, user: &User, spec: &UserSpec) -> Result<String, TargetError> {
        if let Some(email) = &spec.user_email {
            if let Some(found) = self.client.user_by_email(email).await? {
                self.claim(user, &found).await?;
                let adopting = found.owner_id() != Some(user.id.to_string().as_str());
                self.update_user(spec, &found).await?;
                self.set_link("user", user.id, &found.user_id, true).await?;
                if adopting {
                    tracing::info!(target = %self.name, user = %user.user_name, litellm_user = %found.user_id, "adopted an existing LiteLLM user with the same email; scimsync manages it from now on");
                }
                return Ok(found.user_id);
            }
        }
        let remote = user.user_name.as_str().to_owned();
        if self.client.user_new(&spec.new_body(&remote)).await? == Done::AlreadyDone {
            // The id is taken: ours from an earlier delivery, or someone else's.
            match self.client.user_info(&remote).await? {
                Some(have) if have.owner_id() == Some(user.id.to_string().as_str()) => {
                    self.set_link("user", user.id, &remote, true).await?;
                    self.update_user(spec, &have).await?;
                    return Ok(remote);
                }
                _ => {
                    return Err(TargetError::Conflict(format!(
                        "LiteLLM already has a user {remote:?} that scimsync did not create"
                    )))
                }
            }
        }
        self.set_link("user", user.id, &remote, true).await?;
        Ok(remote)
    }

    /// Makes the target's team agree with ours (or be gone). Returns its id if it exists.
    pub async fn sync_team(&self, id: Uuid) -> Result<Option<String>, TargetError> {
        let team = self.store.team(id).await?;
        let link = self.link("team", id).await?;
        let Some(team) = team else {
            if let Some(link) = link {
                if link.managed {
                    self.client.team_delete(&link.remote_id).await?;
                }
                self.store
                    .remove_target_link(&self.name, "team", &link.local_id)
                    .await?;
            }
            return Ok(None);
        };
        let owner = json!({"id": team.id.to_string(), "source": team.source.to_string()});
        let alias = team.display_name.as_str();
        let remote = link.map_or_else(|| team.id.to_string(), |l| l.remote_id);
        match self.client.team_info(&remote).await? {
            Some(have) => {
                if have.owner_id().is_some_and(|o| o != team.id.to_string()) {
                    return Err(TargetError::Conflict(format!(
                        "LiteLLM team {remote:?} belongs to another object"
                    )));
                }
                if !litellm::team_diff(alias, &owner, &have).is_empty() {
                    self.client
                        .team_update(&json!({"team_id": remote, "team_alias": alias, "metadata": merged(&have.metadata, &owner)}))
                        .await?;
                }
            }
            None => {
                let body = litellm::new_team_body(&remote, alias, &owner, &self.team_defaults);
                if self.client.team_new(&body).await? == Done::Changed {
                    self.note_alias_taken(&remote, alias).await;
                }
            }
        }
        self.set_link("team", id, &remote, true).await?;
        Ok(Some(remote))
    }

    /// Teams are never adopted by alias: a LiteLLM team made by hand with the same
    /// name may be another group of people, and taking it over would hand its keys
    /// and budget to the IdP's group. A separate team is created; this says so.
    async fn note_alias_taken(&self, created: &str, alias: &str) {
        match self.client.teams_with_alias(alias).await {
            Ok(teams) => {
                let others: Vec<&str> = teams
                    .iter()
                    .filter(|t| t.team_id != created && t.owner_id().is_none())
                    .map(|t| t.team_id.as_str())
                    .collect();
                if !others.is_empty() {
                    tracing::warn!(target = %self.name, team = %alias, litellm_teams = ?others, "LiteLLM already had a team with this alias that scimsync did not make; it is left alone and a separate team was created");
                }
            }
            Err(e) => {
                tracing::debug!(target = %self.name, error = %e, "cannot look for teams with the same alias")
            }
        }
    }

    /// Makes the membership in the target agree with the store.
    pub async fn sync_member(&self, team: Uuid, user: Uuid) -> Result<(), TargetError> {
        if self.store.is_member(team, user).await? {
            let remote_team = match self.link("team", team).await? {
                Some(l) => l.remote_id,
                None => match self.sync_team(team).await? {
                    Some(t) => t,
                    None => return Ok(()),
                },
            };
            let remote_user = match self.link("user", user).await? {
                Some(l) => l.remote_id,
                None => match self.sync_user(user).await? {
                    Some(u) => u,
                    None => return Ok(()),
                },
            };
            self.client.member_add(&remote_team, &remote_user).await?;
        } else {
            // Without both links there is nothing of ours to remove: a deleted user or
            // team took its memberships with it.
            let (Some(t), Some(u)) = (
                self.link("team", team).await?,
                self.link("user", user).await?,
            ) else {
                return Ok(());
            };
            if t.managed {
                self.client
                    .member_delete(&t.remote_id, &u.remote_id)
                    .await?;
            }
        }
        Ok(())
    }

    /// Makes the memberships of `users` in `team` agree with the store: the members
    /// to add in one `/team/member_add` call (LiteLLM takes a list), each removal in
    /// its own call (`/team/member_delete` takes one). One result per user.
    pub async fn sync_members(
        &self,
        team: Uuid,
        users: &[Uuid],
    ) -> Vec<(Uuid, Result<(), TargetError>)> {
        let mut results = Vec::with_capacity(users.len());
        if let Err(e) = self.try_sync_members(team, users, &mut results).await {
            let done: std::collections::HashSet<Uuid> = results.iter().map(|(u, _)| *u).collect();
            for user in users.iter().filter(|u| !done.contains(u)) {
                results.push((*user, Err(e.again())));
            }
        }
        results
    }

    async fn try_sync_members(
        &self,
        team: Uuid,
        users: &[Uuid],
        results: &mut Vec<(Uuid, Result<(), TargetError>)>,
    ) -> Result<(), TargetError> {
        let members: std::collections::HashSet<Uuid> = self
            .store
            .members_among(team, users)
            .await?
            .into_iter()
            .collect();
        let (adds, removals): (Vec<Uuid>, Vec<Uuid>) =
            users.iter().copied().partition(|u| members.contains(u));
        for user in removals {
            results.push((user, self.sync_member(team, user).await));
        }
        if adds.is_empty() {
            return Ok(());
        }
        let remote_team = match self.link("team", team).await? {
            Some(l) => l.remote_id,
            None => match self.sync_team(team).await? {
                Some(t) => t,
                None => {
                    results.extend(adds.into_iter().map(|u| (u, Ok(()))));
                    return Ok(());
                }
            },
        };
        let ids: Vec<String> = adds.iter().map(Uuid::to_string).collect();
        let linked: std::collections::HashMap<String, String> = self
            .store
            .target_links_among(&self.name, "user", &ids)
            .await?
            .into_iter()
            .map(|l| (l.local_id, l.remote_id))
            .collect();
        let mut remote_users: Vec<(Uuid, String)> = Vec::with_capacity(adds.len());
        for user in adds {
            match linked.get(&user.to_string()) {
                Some(remote) => remote_users.push((user, remote.clone())),
                None => match self.sync_user(user).await {
                    Ok(Some(remote)) => remote_users.push((user, remote)),
                    Ok(None) => results.push((user, Ok(()))),
                    Err(e) => results.push((user, Err(e))),
                },
            }
        }
        if remote_users.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = remote_users.iter().map(|(_, r)| r.as_str()).collect();
        match self.client.member_add_many(&remote_team, &names).await {
            Ok(Done::Changed) => results.extend(remote_users.iter().map(|(u, _)| (*u, Ok(())))),
            // One was in the team already, so none was added: one at a time.
            Ok(Done::AlreadyDone) => {
                for (user, remote) in &remote_users {
                    let added = self.client.member_add(&remote_team, remote).await;
                    results.push((*user, added.map(drop)));
                }
            }
            Err(e) => {
                results.extend(remote_users.iter().map(|(u, _)| (*u, Err(e.again()))));
            }
        }
        Ok(())
    }

    /// Delivers one outbox object (`user:ID`, `team:ID`, `member:TEAM:USER`).
    pub async fn deliver(&self, object: &str) -> Result<(), TargetError> {
        let bad = || TargetError::Protocol(format!("malformed outbox object {object:?}"));
        let parse = |s: &str| Uuid::parse_str(s).map_err(|_| bad());
        match object.split(':').collect::<Vec<_>>().as_slice() {
            ["user", id] => self.sync_user(parse(id)?).await.map(drop),
            ["team", id] => self.sync_team(parse(id)?).await.map(drop),
            ["member", team, user] => self.sync_member(parse(team)?, parse(user)?).await,
            _ => Err(bad()),
        }
    }
}

/// Metadata as the target has it, with our ownership mark set (LiteLLM replaces the
/// whole dict on update).
fn merged(
    have: &serde_json::Map<String, serde_json::Value>,
    owner: &serde_json::Value,
) -> serde_json::Value {
    let mut metadata = have.clone();
    metadata.insert(litellm::OWNER_KEY.into(), owner.clone());
    serde_json::Value::Object(metadata)
}

/// Every configured target, built; one that cannot be built is logged and left out
/// (its outbox rows wait for a configuration that works).
pub fn configured(config: &Config, store: &Store) -> Vec<Target> {
    config
        .target
        .iter()
        .filter_map(|t| match Target::from_config(config, t, store.clone()) {
            Ok(target) => Some(target),
            Err(e) => {
                tracing::error!(target = %t.name, error = %e, "target not started");
                None
            }
        })
        .collect()
}

/// The daemon's target work: an outbox worker per target, a drift repair at start, and
/// one on each target's schedule.
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    scheduler: Option<tokio_cron_scheduler::JobScheduler>,
}

/// Starts the target work. A malformed schedule is an error, so a typo does not
/// silently turn drift repair off.
pub async fn start(config: &Config, store: &Store) -> anyhow::Result<Running> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut scheduler = None;
    for target in configured(config, store) {
        tasks.push(worker::spawn(target.clone(), stopped.clone()));
        let safety = config.safety.clone();
        let at_start = target.clone();
        let start_safety = safety.clone();
        tasks.push(tokio::spawn(async move {
            drift::repair(&at_start, &start_safety).await;
        }));
        let Some(schedule) = config
            .target
            .iter()
            .find(|t| t.name == target.name)
            .and_then(|t| t.schedule.clone())
        else {
            continue;
        };
        let running = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let job =
            tokio_cron_scheduler::Job::new_async(schedule.as_str(), move |_id, _scheduler| {
                let target = target.clone();
                let safety = safety.clone();
                let running = running.clone();
                Box::pin(async move {
                    // A repair still running when the next is due: skip this one.
                    let Ok(_guard) = running.try_lock() else {
                        return;
                    };
                    drift::repair(&target, &safety).await;
                })
            })
            .map_err(|e| {
                anyhow::anyhow!(
                    "[[target]] schedule {schedule:?} is not a cron expression with seconds \
                 (e.g. \"0 */10 * * * *\"): {e}"
                )
            })?;
        if scheduler.is_none() {
            scheduler = Some(tokio_cron_scheduler::JobScheduler::new().await?);
        }
        if let Some(s) = &scheduler {
            s.add(job).await?;
        }
    }
    if let Some(s) = &scheduler {
        s.start().await?;
    }
    Ok(Running {
        stop,
        tasks,
        scheduler,
    })
}

impl Running {
    /// Stops the workers between deliveries; what is not delivered stays in the outbox.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut s) = self.scheduler.take() {
            if let Err(e) = s.shutdown().await {
                tracing::warn!(error = %e, "target scheduler did not stop cleanly");
            }
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKind;

    #[test]
    fn the_master_key_never_shows_in_debug_output() {
        let key = MasterKey("sk-very-secret".into());
        assert_eq!(format!("{key:?}"), "<redacted>");
    }

    #[test]
    fn the_master_key_comes_from_a_file_before_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-from-file\n").unwrap();
        let mut config = TargetConfig::new("litellm", TargetKind::Litellm, "http://x");
        config.master_key_file = Some(path);
        config.master_key = Some("sk-inline".into());
        let key = read_master_key(&config, &|_| Some("sk-env".into())).unwrap();
        assert_eq!(key.expose(), "sk-from-file");
    }

    #[test]
    fn a_missing_key_variable_is_named_without_any_value() {
        let mut config = TargetConfig::new("litellm", TargetKind::Litellm, "http://x");
        config.master_key_env = Some("LITELLM_KEY".into());
        let err = read_master_key(&config, &|_| None).unwrap_err().to_string();
        assert!(err.contains("LITELLM_KEY"), "{err}");
    }
}
