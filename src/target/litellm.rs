//! LiteLLM's management API, as its source (litellm/proxy/management_endpoints/)
//! answers it, and the mapping of our users and teams onto its users and teams.
//!
//! "Already done" answers are success, never retried: `/user/new` 409 (duplicate id or
//! email), `/team/new` 400 "already exists", `/team/member_add` 400
//! `team_member_already_in_team`, `/team/member_delete` 400 (not in the team, or no
//! such team), `/user/delete` and `/team/delete` 404 (we delete one id per call, so
//! their all-or-nothing 404 is about that id). Server errors, timeouts and refused
//! connections are retried with backoff, 429 after its `Retry-After`; other refusals
//! are reported at once.
//!
//! The master key is sent as `Authorization: Bearer` and never appears in an error,
//! a log line or a metric.

use super::{MasterKey, TargetError};
use crate::domain::{Role, User};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Lists are paged; LiteLLM caps a page at 100.
pub const PAGE_SIZE: u32 = 100;

/// The metadata key marking objects scimsync created (`{"id": …, "source": …}`).
pub const OWNER_KEY: &str = "scimsync";
/// The metadata key LiteLLM checks to refuse a deactivated user's keys.
pub const ACTIVE_KEY: &str = "scim_active";

/// A LiteLLM user, as much of it as scimsync reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiteUser {
    pub user_id: String,
    #[serde(default)]
    pub user_email: Option<String>,
    #[serde(default)]
    pub user_alias: Option<String>,
    #[serde(default)]
    pub user_role: Option<String>,
    #[serde(default)]
    pub sso_user_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: Map<String, Value>,
}

/// A LiteLLM team member (`members_with_roles`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiteMember {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub user_email: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
}

/// A LiteLLM team, as much of it as scimsync reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LiteTeam {
    pub team_id: String,
    #[serde(default)]
    pub team_alias: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty_vec")]
    pub members_with_roles: Vec<LiteMember>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: Map<String, Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default())
}

fn null_as_empty_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<LiteMember>, D::Error> {
    Ok(Option::<Vec<LiteMember>>::deserialize(d)?.unwrap_or_default())
}

impl LiteUser {
    /// The scimsync id this user was created for, if scimsync created it.
    pub fn owner_id(&self) -> Option<&str> {
        owner_id(&self.metadata)
    }
}

impl LiteTeam {
    pub fn owner_id(&self) -> Option<&str> {
        owner_id(&self.metadata)
    }

    /// The members scimsync manages: role `user`. LiteLLM adds `default_user_id` as an
    /// admin of a team the master key creates, and admins are an enterprise feature
    /// scimsync never grants, so admins are not part of the roster it compares.
    pub fn user_members(&self) -> impl Iterator<Item = &str> {
        self.members_with_roles
            .iter()
            .filter(|m| m.role.as_deref().unwrap_or("user") == "user")
            .filter_map(|m| m.user_id.as_deref())
    }
}

fn owner_id(metadata: &Map<String, Value>) -> Option<&str> {
    metadata.get(OWNER_KEY)?.get("id")?.as_str()
}

/// LiteLLM's role for ours: `viewer` → `internal_user_viewer`, `admin` →
/// `proxy_admin`, every other role → `internal_user`.
pub fn litellm_role(role: &Role) -> &'static str {
    match role.as_str() {
        "viewer" => "internal_user_viewer",
        "admin" => "proxy_admin",
        _ => "internal_user",
    }
}

/// The email LiteLLM matches sign-ins on: the user's email, else a userName that is one.
pub fn email_of(user: &User) -> Option<String> {
    user.email.clone().or_else(|| {
        let name = user.user_name.as_str();
        name.contains('@').then(|| name.to_owned())
    })
}

/// Emails as LiteLLM compares them (its duplicate check and `user_email` filter are
/// case-insensitive in the database, Unicode included). No other folding: a look-alike
/// address (a Cyrillic "а") is another address and is never adopted.
pub fn same_email(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// Whether `have` (a `metadata.scimsync` value) marks the object as ours: the same id
/// and source. Other keys (`adopted`) do not count.
pub fn owner_matches(have: Option<&Value>, ours: &Value) -> bool {
    have.is_some_and(|h| h.get("id") == ours.get("id") && h.get("source") == ours.get("source"))
}

/// The fields scimsync keeps in line on a user it manages, as LiteLLM should show them.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSpec {
    pub user_email: Option<String>,
    pub user_alias: Option<String>,
    pub sso_user_id: Option<String>,
    pub user_role: &'static str,
    pub active: bool,
    pub owner: Value,
}

impl UserSpec {
    pub fn of(user: &User) -> Self {
        UserSpec {
            user_email: email_of(user),
            user_alias: user.display_name.clone(),
            sso_user_id: user.external_id.clone(),
            user_role: litellm_role(&user.role),
            active: user.active,
            owner: json!({"id": user.id.to_string(), "source": user.source.to_string()}),
        }
    }

    /// What differs on `have`: (field, LiteLLM's value, ours). Emails compare
    /// case-insensitively, as LiteLLM's sign-in matches them. A field we have no value
    /// for is not compared: `/user/update` ignores nulls, so it could never agree.
    pub fn diff(&self, have: &LiteUser) -> Vec<(&'static str, Value, Value)> {
        let mut changes = Vec::new();
        if let Some(ours) = &self.user_email {
            if !have
                .user_email
                .as_deref()
                .is_some_and(|theirs| same_email(theirs, ours))
            {
                changes.push(("user_email", json!(have.user_email), json!(ours)));
            }
        }
        if self.user_alias.is_some() && self.user_alias != have.user_alias {
            changes.push(("user_alias", json!(have.user_alias), json!(self.user_alias)));
        }
        if self.sso_user_id.is_some() && self.sso_user_id != have.sso_user_id {
            changes.push((
                "sso_user_id",
                json!(have.sso_user_id),
                json!(self.sso_user_id),
            ));
        }
        if have.user_role.as_deref() != Some(self.user_role) {
            changes.push(("user_role", json!(have.user_role), json!(self.user_role)));
        }
        let active = have.metadata.get(ACTIVE_KEY).and_then(Value::as_bool);
        if active != Some(self.active) {
            changes.push((
                "metadata.scim_active",
                json!(active),
                Value::Bool(self.active),
            ));
        }
        if !owner_matches(have.metadata.get(OWNER_KEY), &self.owner) {
            changes.push((
                "metadata.scimsync",
                have.metadata.get(OWNER_KEY).cloned().unwrap_or(Value::Null),
                self.owner_for(have),
            ));
        }
        changes
    }

    /// The ownership mark to write on `have`: ours, with `adopted: true` on a user
    /// scimsync did not create (no mark of ours yet), kept once it is there.
    pub fn owner_for(&self, have: &LiteUser) -> Value {
        let mut owner = self.owner.clone();
        let current = have.metadata.get(OWNER_KEY);
        let adopted = !owner_matches(current, &self.owner)
            || current.and_then(|o| o.get("adopted")) == Some(&Value::Bool(true));
        if let (true, Some(map)) = (adopted, owner.as_object_mut()) {
            map.insert("adopted".into(), Value::Bool(true));
        }
        owner
    }

    /// The `/user/new` body: `user_id` is the userName, never re-keyed afterwards.
    pub fn new_body(&self, user_id: &str) -> Value {
        json!({
            "user_id": user_id,
            "user_email": self.user_email,
            "user_alias": self.user_alias,
            "sso_user_id": self.sso_user_id,
            "user_role": self.user_role,
            "metadata": {ACTIVE_KEY: self.active, OWNER_KEY: self.owner},
            "auto_create_key": false,
        })
    }

    /// The `/user/update` body. LiteLLM replaces the whole metadata dict, so the
    /// metadata sent is what it has, with our two keys set; it ignores null fields,
    /// so ours that are unset are left out.
    pub fn update_body(&self, have: &LiteUser) -> Value {
        let mut metadata = have.metadata.clone();
        metadata.insert(ACTIVE_KEY.into(), Value::Bool(self.active));
        metadata.insert(OWNER_KEY.into(), self.owner_for(have));
        let mut body = Map::new();
        body.insert("user_id".into(), json!(have.user_id));
        body.insert("user_role".into(), json!(self.user_role));
        body.insert("metadata".into(), Value::Object(metadata));
        for (key, value) in [
            ("user_email", &self.user_email),
            ("user_alias", &self.user_alias),
            ("sso_user_id", &self.sso_user_id),
        ] {
            if let Some(value) = value {
                body.insert(key.into(), json!(value));
            }
        }
        Value::Object(body)
    }
}

/// What differs on a team scimsync manages: (field, LiteLLM's value, ours).
pub fn team_diff(alias: &str, owner: &Value, have: &LiteTeam) -> Vec<(&'static str, Value, Value)> {
    let mut changes = Vec::new();
    if have.team_alias.as_deref() != Some(alias) {
        changes.push(("team_alias", json!(have.team_alias), json!(alias)));
    }
    if !owner_matches(have.metadata.get(OWNER_KEY), owner) {
        changes.push((
            "metadata.scimsync",
            have.metadata.get(OWNER_KEY).cloned().unwrap_or(Value::Null),
            owner.clone(),
        ));
    }
    changes
}

/// The `/team/new` body: our team id is LiteLLM's, so a repeated create answers
/// "already exists"; `[teams.defaults]` models and max_budget apply at creation.
pub fn new_team_body(
    team_id: &str,
    alias: &str,
    owner: &Value,
    defaults: &Map<String, Value>,
) -> Value {
    let mut body = json!({
        "team_id": team_id,
        "team_alias": alias,
        "metadata": {OWNER_KEY: owner},
    });
    if let Some(map) = body.as_object_mut() {
        for key in ["models", "max_budget"] {
            if let Some(value) = defaults.get(key) {
                map.insert(key.into(), value.clone());
            }
        }
    }
    body
}

/// How a write ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Changed,
    /// LiteLLM said it was already so.
    AlreadyDone,
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: MasterKey,
    retries: u32,
    backoff: Duration,
    /// Counts write calls (tests and `apply` report it: a second apply makes none).
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Client {
    pub fn new(
        base: &str,
        key: MasterKey,
        timeout: Duration,
        retries: u32,
    ) -> Result<Self, TargetError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| TargetError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            retries,
            backoff: Duration::from_millis(200),
            writes: Default::default(),
        })
    }

    /// Write calls made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One call with retries on 5xx, timeouts and connection failures. Returns the
    /// status and the body (JSON, or a string for a body that is not).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(u16, Value), TargetError> {
        if method == reqwest::Method::POST {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.key.expose())
                .query(query);
            if let Some(body) = body {
                request = request.json(body);
            }
            let mut wait = None;
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    wait = retry_after(response.headers());
                    let text = response.text().await.unwrap_or_default();
                    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    if status >= 500 || status == 429 {
                        Err(TargetError::Server {
                            status,
                            message: error_message(&body),
                        })
                    } else if status == 401 || status == 403 {
                        return Err(TargetError::Unauthorized { status });
                    } else {
                        return Ok((status, body));
                    }
                }
                // reqwest's error text names the URL, never the headers.
                Err(e) => Err(TargetError::Unreachable(without_url(&e))),
            };
            match outcome {
                Err(e) if attempt < self.retries => {
                    attempt += 1;
                    // A 429's Retry-After is honoured (up to a minute), never shortened.
                    let delay = (self.backoff * 2u32.saturating_pow(attempt - 1))
                        .max(wait.unwrap_or_default().min(Duration::from_secs(60)));
                    tracing::debug!(path, attempt, error = %e, "retrying a LiteLLM call");
                    crate::metrics::target_retry();
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<(u16, Value), TargetError> {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), TargetError> {
        self.call(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    /// One page of a list (`/user/list`, `/v2/team/list`): the items under `key`, and
    /// how many pages there are.
    async fn page<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        page: u64,
        filter: &[(&str, String)],
    ) -> Result<(Vec<T>, u64), TargetError> {
        let mut query = vec![
            ("page", page.to_string()),
            ("page_size", PAGE_SIZE.to_string()),
        ];
        query.extend(filter.iter().cloned());
        let (status, body) = self.get(path, &query).await?;
        if status != 200 {
            return Err(rejected(status, &body));
        }
        let items = parse(body.get(key).cloned().unwrap_or(json!([])), path)?;
        let total_pages = body.get("total_pages").and_then(Value::as_u64).unwrap_or(0);
        Ok((items, total_pages))
    }

    /// Every item of a list, page by page, in `order` (a column) ascending: LiteLLM's
    /// default, newest first, shifts the pages under a list that runs while objects
    /// are created.
    async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        order: &str,
    ) -> Result<Vec<T>, TargetError> {
        let sort = [("sort_by", order.to_owned()), ("sort_order", "asc".into())];
        let mut all = Vec::new();
        for page in 1.. {
            let (items, total_pages): (Vec<T>, u64) = self.page(path, key, page, &sort).await?;
            let last = items.is_empty() || page >= total_pages;
            all.extend(items);
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// `/user/info`: `None` for a user LiteLLM does not have.
    pub async fn user_info(&self, user_id: &str) -> Result<Option<LiteUser>, TargetError> {
        let (status, body) = self
            .get("/user/info", &[("user_id", user_id.to_owned())])
            .await?;
        match status {
            200 => match body.get("user_info") {
                Some(Value::Null) | None => Ok(None),
                Some(info) => parse(info.clone(), "/user/info").map(Some),
            },
            400 | 404 => Ok(None),
            _ => Err(rejected(status, &body)),
        }
    }

    /// Every LiteLLM user, a page of at most 100 at a time, in `user_id` order.
    pub async fn all_users(&self) -> Result<Vec<LiteUser>, TargetError> {
        self.all_pages("/user/list", "users", "user_id").await
    }

    /// The user with this email (case-insensitively), if LiteLLM has one.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<LiteUser>, TargetError> {
        // LiteLLM's filter matches substrings: keep only the exact address.
        let (users, _) = self
            .page::<LiteUser>(
                "/user/list",
                "users",
                1,
                &[("user_email", email.to_owned())],
            )
            .await?;
        Ok(users.into_iter().find(|u| {
            u.user_email
                .as_deref()
                .is_some_and(|e| same_email(e, email))
        }))
    }

    pub async fn user_new(&self, body: &Value) -> Result<Done, TargetError> {
        let (status, answer) = self.post("/user/new", body).await?;
        match status {
            200 | 201 => Ok(Done::Changed),
            409 => Ok(Done::AlreadyDone),
            _ => Err(rejected(status, &answer)),
        }
    }

    pub async fn user_update(&self, body: &Value) -> Result<(), TargetError> {
        let (status, answer) = self.post("/user/update", body).await?;
        match status {
            200 | 201 => Ok(()),
            _ => Err(rejected(status, &answer)),
        }
    }

    pub async fn user_delete(&self, user_id: &str) -> Result<Done, TargetError> {
        let (status, answer) = self
            .post("/user/delete", &json!({"user_ids": [user_id]}))
            .await?;
        match status {
            200 | 201 => Ok(Done::Changed),
            404 => Ok(Done::AlreadyDone),
            _ => Err(rejected(status, &answer)),
        }
    }

    /// `/team/info`: `None` for a team LiteLLM does not have.
    pub async fn team_info(&self, team_id: &str) -> Result<Option<LiteTeam>, TargetError> {
        let (status, body) = self
            .get("/team/info", &[("team_id", team_id.to_owned())])
            .await?;
        match status {
            200 => match body.get("team_info") {
                Some(Value::Null) | None => Ok(None),
                Some(info) => parse(info.clone(), "/team/info").map(Some),
            },
            400 | 404 => Ok(None),
            _ => Err(rejected(status, &body)),
        }
    }

    /// Every LiteLLM team (`/v2/team/list`), a page of at most 100 at a time, in
    /// `team_id` order.
    pub async fn all_teams(&self) -> Result<Vec<LiteTeam>, TargetError> {
        self.all_pages("/v2/team/list", "teams", "team_id").await
    }

    /// The teams whose alias is `alias` (LiteLLM's filter matches substrings without
    /// case; only the same alias, ignoring case, is kept).
    pub async fn teams_with_alias(&self, alias: &str) -> Result<Vec<LiteTeam>, TargetError> {
        let (teams, _) = self
            .page::<LiteTeam>(
                "/v2/team/list",
                "teams",
                1,
                &[("team_alias", alias.to_owned())],
            )
            .await?;
        Ok(teams
            .into_iter()
            .filter(|t| {
                t.team_alias
                    .as_deref()
                    .is_some_and(|a| a.to_lowercase() == alias.to_lowercase())
            })
            .collect())
    }

    pub async fn team_new(&self, body: &Value) -> Result<Done, TargetError> {
        let (status, answer) = self.post("/team/new", body).await?;
        match status {
            200 | 201 => Ok(Done::Changed),
            400 if error_message(&answer).contains("already exists") => Ok(Done::AlreadyDone),
            _ => Err(rejected(status, &answer)),
        }
    }

    pub async fn team_update(&self, body: &Value) -> Result<(), TargetError> {
        let (status, answer) = self.post("/team/update", body).await?;
        match status {
            200 | 201 => Ok(()),
            _ => Err(rejected(status, &answer)),
        }
    }

    pub async fn team_delete(&self, team_id: &str) -> Result<Done, TargetError> {
        let (status, answer) = self
            .post("/team/delete", &json!({"team_ids": [team_id]}))
            .await?;
        match status {
            200 | 201 => Ok(Done::Changed),
            404 => Ok(Done::AlreadyDone),
            _ => Err(rejected(status, &answer)),
        }
    }

    /// Adds a member with role `user` (role `admin` is an enterprise feature).
    pub async fn member_add(&self, team_id: &str, user_id: &str) -> Result<Done, TargetError> {
        self.member_add_many(team_id, &[user_id]).await
    }

    /// Adds members with role `user` in one call. LiteLLM checks every one before it
    /// adds any: `AlreadyDone` means one was in the team already and none was added.
    pub async fn member_add_many(
        &self,
        team_id: &str,
        user_ids: &[&str],
    ) -> Result<Done, TargetError> {
        let members: Vec<Value> = user_ids
            .iter()
            .map(|id| json!({"user_id": id, "role": "user"}))
            .collect();
        let body = json!({"team_id": team_id, "member": members});
        let (status, answer) = self.post("/team/member_add", &body).await?;
        match status {
            200 | 201 => Ok(Done::Changed),
            400 if error_type(&answer) == Some("team_member_already_in_team")
                || error_message(&answer).contains("already in team") =>
            {
                Ok(Done::AlreadyDone)
            }
            _ => Err(rejected(status, &answer)),
        }
    }

    /// LiteLLM answers 400 both for a member not in the team and for a missing team:
    /// either way the member is not there, which is what was asked.
    pub async fn member_delete(&self, team_id: &str, user_id: &str) -> Result<Done, TargetError> {
        let body = json!({"team_id": team_id, "user_id": user_id});
        let (status, answer) = self.post("/team/member_delete", &body).await?;
        match status {
            200 | 201 => Ok(Done::Changed),
            400 | 404 => Ok(Done::AlreadyDone),
            _ => Err(rejected(status, &answer)),
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not worth its parsing here).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

fn parse<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, TargetError> {
    serde_json::from_value(value)
        .map_err(|e| TargetError::Protocol(format!("{what}: unexpected answer: {e}")))
}

/// LiteLLM's error envelope: `{"error": {"message", "type", "param", "code"}}`, or
/// FastAPI's `{"detail": …}`.
fn error_message(body: &Value) -> String {
    let text = body
        .pointer("/error/message")
        .or_else(|| body.get("detail"))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    text.chars().take(300).collect()
}

fn error_type(body: &Value) -> Option<&str> {
    body.pointer("/error/type").and_then(Value::as_str)
}

fn rejected(status: u16, body: &Value) -> TargetError {
    TargetError::Rejected {
        status,
        message: error_message(body),
    }
}

/// reqwest's error without the URL's query (which may name a user).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_user(name: &str) -> User {
        let now = chrono::Utc::now();
        User {
            id: uuid::Uuid::new_v4(),
            user_name: crate::domain::UserName::parse(name).unwrap(),
            external_id: None,
            email: None,
            display_name: None,
            given_name: None,
            family_name: None,
            role: Role::parse("viewer").unwrap(),
            active: true,
            attributes: Default::default(),
            source: crate::domain::Source::Manual,
            created: now,
            modified: now,
            version: 1,
        }
    }

    fn lite_user(metadata: Value) -> LiteUser {
        serde_json::from_value(json!({
            "user_id": "alice@example.com",
            "user_email": "Alice@Example.com",
            "user_role": "internal_user_viewer",
            "metadata": metadata,
        }))
        .unwrap()
    }

    #[test]
    fn roles_map_to_litellm_roles() {
        assert_eq!(
            litellm_role(&Role::parse("viewer").unwrap()),
            "internal_user_viewer"
        );
        assert_eq!(litellm_role(&Role::parse("admin").unwrap()), "proxy_admin");
        assert_eq!(
            litellm_role(&Role::parse("editor").unwrap()),
            "internal_user"
        );
    }

    #[test]
    fn an_update_keeps_the_metadata_keys_litellm_has() {
        let mut user = test_user("alice@example.com");
        user.active = false;
        let spec = UserSpec::of(&user);
        let have = lite_user(json!({"cost_center": "42", "scim_active": true}));
        let body = spec.update_body(&have);
        assert_eq!(body["metadata"]["cost_center"], "42");
        assert_eq!(body["metadata"]["scim_active"], false);
        assert_eq!(body["metadata"]["scimsync"]["id"], user.id.to_string());
    }

    #[test]
    fn a_look_alike_email_is_another_address() {
        assert!(same_email("Éva@Example.com", "éva@example.com"));
        assert!(!same_email("dave@exаmple.com", "dave@example.com"));
    }

    #[test]
    fn emails_compare_without_case() {
        let user = test_user("alice@example.com");
        let spec = UserSpec::of(&user);
        let mut have = lite_user(json!({}));
        have.metadata.insert(ACTIVE_KEY.into(), json!(true));
        have.metadata.insert(OWNER_KEY.into(), spec.owner.clone());
        assert!(spec.diff(&have).is_empty(), "{:?}", spec.diff(&have));
    }

    #[test]
    fn a_new_user_never_gets_a_key() {
        let user = test_user("alice@example.com");
        let body = UserSpec::of(&user).new_body("alice@example.com");
        assert_eq!(body["auto_create_key"], false);
        assert_eq!(body["user_id"], "alice@example.com");
    }

    #[test]
    fn team_defaults_models_and_budget_apply_at_creation_only() {
        let mut defaults = Map::new();
        defaults.insert("models".into(), json!(["gpt-4o"]));
        defaults.insert("max_budget".into(), json!(10.0));
        defaults.insert("other".into(), json!(1));
        let body = new_team_body("t", "Evals", &json!({"id": "t"}), &defaults);
        assert_eq!(body["models"], json!(["gpt-4o"]));
        assert_eq!(body["max_budget"], json!(10.0));
        assert!(body.get("other").is_none());
    }

    #[test]
    fn the_default_admin_is_not_part_of_the_roster() {
        let team: LiteTeam = serde_json::from_value(json!({
            "team_id": "t",
            "members_with_roles": [
                {"user_id": "default_user_id", "role": "admin"},
                {"user_id": "alice", "role": "user"},
            ],
        }))
        .unwrap();
        assert_eq!(team.user_members().collect::<Vec<_>>(), vec!["alice"]);
    }

    #[test]
    fn error_messages_come_from_the_envelope() {
        let body = json!({"error": {"message": "Team already exists", "type": "bad_request_error", "code": "400"}});
        assert_eq!(error_message(&body), "Team already exists");
        assert_eq!(
            error_type(&json!({"error": {"type": "team_member_already_in_team"}})),
            Some("team_member_already_in_team")
        );
    }
}
