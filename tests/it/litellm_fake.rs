//! A fake LiteLLM proxy: the management endpoints scimsync calls, answering as
//! LiteLLM's source (litellm/proxy/management_endpoints/) does, quirks included:
//!
//! - lists are paged, at most 100 a page (more answers 422, as FastAPI's `le=100`),
//!   newest first unless `sort_by`/`sort_order` say otherwise; default page sizes 25
//!   (`/user/list`) and 10 (`/v2/team/list`); `user_email` and `team_alias` filter by
//!   substring without case (internal_user_endpoints.py `get_users`, team_endpoints.py
//!   `list_team_v2`);
//! - `/user/new` answers 409 on a duplicate id or email, and mints a key unless
//!   `auto_create_key` is false;
//! - `/user/update` silently creates a user it cannot find; it ignores null, empty list
//!   and empty dict values (`_update_internal_user_params`), and replaces a metadata
//!   dict whole;
//! - `/team/new` answers 400 "already exists" and adds `default_user_id` as an admin;
//! - `/team/member_add` takes one member or a list; it checks every listed member
//!   before adding any (400 `team_member_already_in_team` for one already in, 400 for
//!   role admin, a premium feature), and creates an unknown user by id;
//! - `/team/member_delete` answers 400 for a member not in the team and a missing team;
//! - `/user/delete` and `/team/delete` fail whole with 404 if one id is missing;
//! - a user with `metadata.scim_active == false` has every key refused.
//!
//! A fault switch answers 503 or adds latency, another fails the users whose id starts
//! with a prefix, another answers 429 with Retry-After; every write call is counted,
//! and calls by path.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const MASTER_KEY: &str = "sk-fake-master-key-1234";

#[derive(Default)]
struct Inner {
    users: BTreeMap<String, Map<String, Value>>,
    teams: BTreeMap<String, Map<String, Value>>,
    /// key → (user_id, team_id)
    keys: BTreeMap<String, (String, Option<String>)>,
    writes: u64,
    fail: bool,
    latency_ms: u64,
    next_key: u64,
    /// Users whose id starts with this fail to be created (500).
    failing_prefix: Option<String>,
    /// The next this many calls answer 429 with `Retry-After: 1`.
    rate_limited: u64,
    /// Calls by path.
    calls: BTreeMap<String, u64>,
    /// Creation order, for `created_at` (lists are newest first by default).
    seq: u64,
}

#[derive(Clone, Default)]
pub struct FakeLiteLlm {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

type Answer = Response;

fn error(status: StatusCode, message: &str, kind: &str, param: Option<&str>) -> Answer {
    (
        status,
        Json(json!({"error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": status.as_u16().to_string(),
        }})),
    )
        .into_response()
}

impl FakeLiteLlm {
    pub async fn start() -> Self {
        let mut fake = FakeLiteLlm::default();
        let app = Router::new()
            .route("/user/info", get(user_info))
            .route("/user/list", get(user_list))
            .route("/user/new", post(user_new))
            .route("/user/update", post(user_update))
            .route("/user/delete", post(user_delete))
            .route("/team/info", get(team_info))
            .route("/v2/team/list", get(team_list))
            .route("/team/new", post(team_new))
            .route("/team/update", post(team_update))
            .route("/team/delete", post(team_delete))
            .route("/team/member_add", post(member_add))
            .route("/team/member_delete", post(member_delete))
            .route("/key/generate", post(key_generate))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        fake.url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub fn set_failing(&self, fail: bool) {
        self.lock().fail = fail;
    }

    pub fn set_latency(&self, ms: u64) {
        self.lock().latency_ms = ms;
    }

    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Users whose id starts with `prefix` cannot be created (LiteLLM answers 500).
    pub fn fail_users_starting_with(&self, prefix: &str) {
        self.lock().failing_prefix = Some(prefix.to_owned());
    }

    /// The next `calls` calls answer 429 Too Many Requests with `Retry-After: 1`.
    pub fn rate_limit_next(&self, calls: u64) {
        self.lock().rate_limited = calls;
    }

    /// How many calls `path` has answered (whatever the answer).
    pub fn calls(&self, path: &str) -> u64 {
        self.lock().calls.get(path).copied().unwrap_or(0)
    }

    pub fn user(&self, id: &str) -> Option<Value> {
        self.lock().users.get(id).cloned().map(Value::Object)
    }

    pub fn users(&self) -> Vec<Value> {
        self.lock()
            .users
            .values()
            .cloned()
            .map(Value::Object)
            .collect()
    }

    pub fn team(&self, id: &str) -> Option<Value> {
        self.lock().teams.get(id).cloned().map(Value::Object)
    }

    pub fn teams_snapshot(&self) -> Vec<Value> {
        self.lock()
            .teams
            .values()
            .cloned()
            .map(Value::Object)
            .collect()
    }

    pub fn key_count(&self) -> usize {
        self.lock().keys.len()
    }

    /// Puts an object in as an operator would through LiteLLM's UI.
    pub fn insert_user(&self, user: Value) {
        let user = user.as_object().unwrap().clone();
        let id = user["user_id"].as_str().unwrap().to_owned();
        let mut inner = self.lock();
        let user = inner.created(with_user_defaults(user));
        inner.users.insert(id, user);
    }

    pub fn insert_team(&self, team: Value) {
        let team = team.as_object().unwrap().clone();
        let id = team["team_id"].as_str().unwrap().to_owned();
        let mut inner = self.lock();
        let team = inner.created(with_team_defaults(team));
        inner.teams.insert(id, team);
    }

    pub fn edit_team(&self, id: &str, edit: impl FnOnce(&mut Map<String, Value>)) {
        edit(self.lock().teams.get_mut(id).unwrap());
    }

    pub fn edit_user(&self, id: &str, edit: impl FnOnce(&mut Map<String, Value>)) {
        edit(self.lock().users.get_mut(id).unwrap());
    }

    /// A key for a user (and team), as `/key/generate` mints it.
    pub fn generate_key(&self, user_id: &str, team_id: Option<&str>) -> String {
        let mut inner = self.lock();
        inner.next_key += 1;
        let key = format!("sk-user-{}", inner.next_key);
        inner.keys.insert(
            key.clone(),
            (user_id.to_owned(), team_id.map(str::to_owned)),
        );
        key
    }

    /// Whether LiteLLM would accept the key on a request: it exists, its user exists
    /// and is not marked `scim_active: false`, and a team key's team still has them.
    pub fn key_works(&self, key: &str) -> bool {
        let inner = self.lock();
        let Some((user_id, team_id)) = inner.keys.get(key) else {
            return false;
        };
        let Some(user) = inner.users.get(user_id) else {
            return false;
        };
        if user.get("metadata").and_then(|m| m.get("scim_active")) == Some(&Value::Bool(false)) {
            return false;
        }
        match team_id {
            Some(t) => inner
                .teams
                .get(t)
                .is_some_and(|team| members(team).iter().any(|m| m["user_id"] == json!(user_id))),
            None => true,
        }
    }

    /// The gate every call passes: the master key, then the fault switches.
    async fn gate(&self, path: &str, headers: &HeaderMap, write: bool) -> Result<(), Answer> {
        *self.lock().calls.entry(path.to_owned()).or_default() += 1;
        let latency = self.lock().latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {MASTER_KEY}")) {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "Authentication Error, Invalid proxy server token passed.",
                "auth_error",
                Some("None"),
            ));
        }
        let mut inner = self.lock();
        if inner.rate_limited > 0 {
            inner.rate_limited -= 1;
            let mut answer = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                "rate_limit_error",
                None,
            );
            answer
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return Err(answer);
        }
        if inner.fail {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable",
                "internal_server_error",
                None,
            ));
        }
        if write {
            inner.writes += 1;
        }
        Ok(())
    }
}

impl Inner {
    /// Stamps `created_at` (strictly increasing), as LiteLLM's tables have it.
    fn created(&mut self, mut object: Map<String, Value>) -> Map<String, Value> {
        self.seq += 1;
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
            + chrono::Duration::days(20_000)
            + chrono::Duration::milliseconds(self.seq as i64);
        object.insert(
            "created_at".into(),
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        object
    }
}

/// A list sorted as LiteLLM sorts it: by `sort_by` (one of `columns`) and
/// `sort_order`, else newest first.
fn sorted(mut items: Vec<Value>, q: &HashMap<String, String>, columns: &[&str]) -> Vec<Value> {
    let column = q
        .get("sort_by")
        .map(String::as_str)
        .filter(|c| columns.contains(c))
        .unwrap_or("created_at");
    let descending = match q.get("sort_by") {
        Some(c) if columns.contains(&c.as_str()) => {
            q.get("sort_order").map(|o| o.to_lowercase()) == Some("desc".into())
        }
        _ => true,
    };
    items.sort_by(|a, b| {
        let key = |v: &Value| {
            v.get(column)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        key(a).cmp(&key(b))
    });
    if descending {
        items.reverse();
    }
    items
}

fn contains_ignoring_case(value: Option<&Value>, needle: &str) -> bool {
    value
        .and_then(Value::as_str)
        .is_some_and(|have| have.to_lowercase().contains(&needle.to_lowercase()))
}

fn with_user_defaults(mut user: Map<String, Value>) -> Map<String, Value> {
    for key in ["user_email", "user_alias", "user_role", "sso_user_id"] {
        user.entry(key).or_insert(Value::Null);
    }
    user.entry("metadata").or_insert(json!({}));
    user.entry("teams").or_insert(json!([]));
    user
}

fn with_team_defaults(mut team: Map<String, Value>) -> Map<String, Value> {
    team.entry("team_alias").or_insert(Value::Null);
    team.entry("members_with_roles").or_insert(json!([]));
    team.entry("metadata").or_insert(json!({}));
    team
}

fn members(team: &Map<String, Value>) -> Vec<Value> {
    team.get("members_with_roles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn page_of<T: Clone>(items: &[T], page: usize, size: usize) -> (Vec<T>, usize) {
    let total_pages = items.len().div_ceil(size.max(1));
    let start = (page.max(1) - 1) * size;
    (
        items.iter().skip(start).take(size).cloned().collect(),
        total_pages,
    )
}

fn paging(
    q: &HashMap<String, String>,
    size_key: &str,
    default_size: usize,
) -> Result<(usize, usize), Box<Answer>> {
    let page = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1usize);
    let size = q
        .get(size_key)
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_size);
    if !(1..=100).contains(&size) || page < 1 {
        return Err(Box::new(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"detail": [{"msg": "Input should be less than or equal to 100"}]})),
            )
                .into_response(),
        ));
    }
    Ok((page, size))
}

async fn user_info(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    if let Err(e) = f.gate("/user/info", &headers, false).await {
        return e;
    }
    let id = q.get("user_id").cloned().unwrap_or_default();
    match f.lock().users.get(&id) {
        Some(user) => {
            Json(json!({"user_id": id, "user_info": user, "keys": [], "teams": []})).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            &format!("User id={id} not found"),
            "not_found_error",
            Some("user_id"),
        ),
    }
}

async fn user_list(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    if let Err(e) = f.gate("/user/list", &headers, false).await {
        return e;
    }
    let (page, size) = match paging(&q, "page_size", 25) {
        Ok(p) => p,
        Err(e) => return *e,
    };
    let inner = f.lock();
    let users: Vec<Value> = inner
        .users
        .values()
        .filter(|u| match q.get("user_email") {
            Some(e) => contains_ignoring_case(u.get("user_email"), e),
            None => true,
        })
        .cloned()
        .map(Value::Object)
        .collect();
    let users = sorted(
        users,
        &q,
        &[
            "user_id",
            "user_email",
            "created_at",
            "user_alias",
            "user_role",
        ],
    );
    let (items, total_pages) = page_of(&users, page, size);
    Json(json!({"users": items, "total": users.len(), "page": page, "page_size": size, "total_pages": total_pages})).into_response()
}

async fn user_new(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Map<String, Value>>,
) -> Answer {
    if let Err(e) = f.gate("/user/new", &headers, true).await {
        return e;
    }
    let mut inner = f.lock();
    let id = body
        .get("user_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("u-{}", inner.users.len()));
    let email = body
        .get("user_email")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let email_taken = email.as_ref().is_some_and(|e| {
        inner.users.values().any(|u| {
            u.get("user_email")
                .and_then(Value::as_str)
                .map(str::to_lowercase)
                .as_ref()
                == Some(e)
        })
    });
    if inner.users.contains_key(&id) {
        return error(
            StatusCode::CONFLICT,
            &format!("{{'error': 'User with id {id} already exists'}}"),
            "bad_request_error",
            Some("None"),
        );
    }
    if email_taken {
        return error(
            StatusCode::CONFLICT,
            "{'error': 'User with email already exists'}",
            "bad_request_error",
            Some("None"),
        );
    }
    if inner
        .failing_prefix
        .as_deref()
        .is_some_and(|p| id.starts_with(p))
    {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "internal_server_error",
            None,
        );
    }
    let mut user = Map::new();
    for key in [
        "user_id",
        "user_email",
        "user_alias",
        "user_role",
        "sso_user_id",
        "metadata",
    ] {
        if let Some(v) = body.get(key) {
            user.insert(key.into(), v.clone());
        }
    }
    user.insert("user_id".into(), json!(id));
    let user = inner.created(with_user_defaults(user));
    inner.users.insert(id.clone(), user);
    let mut answer = json!({"user_id": id});
    if body.get("auto_create_key") != Some(&Value::Bool(false)) {
        inner.next_key += 1;
        let key = format!("sk-auto-{}", inner.next_key);
        inner.keys.insert(key.clone(), (id.clone(), None));
        answer["key"] = json!(key);
    }
    Json(answer).into_response()
}

async fn user_update(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Map<String, Value>>,
) -> Answer {
    if let Err(e) = f.gate("/user/update", &headers, true).await {
        return e;
    }
    let Some(id) = body
        .get("user_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "user_id or user_email is required",
            "bad_request_error",
            None,
        );
    };
    let mut inner = f.lock();
    // LiteLLM upserts: an unknown id is created.
    if !inner.users.contains_key(&id) {
        let user = inner.created(with_user_defaults(Map::from_iter([(
            "user_id".to_owned(),
            json!(id),
        )])));
        inner.users.insert(id.clone(), user);
    }
    let Some(user) = inner.users.get_mut(&id) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lost", "internal", None);
    };
    for (key, value) in &body {
        // None, [] and {} are "not set" to LiteLLM: they never clear a field.
        let unset = value.is_null()
            || value.as_array().is_some_and(Vec::is_empty)
            || value.as_object().is_some_and(Map::is_empty);
        if key != "user_id" && !unset {
            user.insert(key.clone(), value.clone());
        }
    }
    Json(json!({"user_id": id, "data": user})).into_response()
}

async fn user_delete(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    if let Err(e) = f.gate("/user/delete", &headers, true).await {
        return e;
    }
    let ids: Vec<String> = body["user_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut inner = f.lock();
    if let Some(missing) = ids.iter().find(|id| !inner.users.contains_key(*id)) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("User not found, passed user_id={missing}"),
            "not_found_error",
            Some("user_ids"),
        );
    }
    for id in &ids {
        inner.users.remove(id);
        inner.keys.retain(|_, (user, _)| user != id);
        for team in inner.teams.values_mut() {
            let kept: Vec<Value> = members(team)
                .into_iter()
                .filter(|m| m["user_id"] != json!(id))
                .collect();
            team.insert("members_with_roles".into(), json!(kept));
        }
    }
    Json(json!({"deleted_users": ids})).into_response()
}

async fn team_info(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    if let Err(e) = f.gate("/team/info", &headers, false).await {
        return e;
    }
    let id = q.get("team_id").cloned().unwrap_or_default();
    match f.lock().teams.get(&id) {
        Some(team) => {
            Json(json!({"team_id": id, "team_info": team, "keys": [], "team_memberships": []}))
                .into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            &format!("Team not found, passed team_id={id}"),
            "not_found_error",
            Some("team_id"),
        ),
    }
}

async fn team_list(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    if let Err(e) = f.gate("/v2/team/list", &headers, false).await {
        return e;
    }
    let (page, size) = match paging(&q, "page_size", 10) {
        Ok(p) => p,
        Err(e) => return *e,
    };
    let teams: Vec<Value> = f
        .lock()
        .teams
        .values()
        .filter(|t| match q.get("team_alias") {
            Some(a) => contains_ignoring_case(t.get("team_alias"), a),
            None => true,
        })
        .cloned()
        .map(Value::Object)
        .collect();
    let teams = sorted(teams, &q, &["team_id", "team_alias", "created_at"]);
    let (items, total_pages) = page_of(&teams, page, size);
    Json(json!({"teams": items, "total": teams.len(), "page": page, "page_size": size, "total_pages": total_pages})).into_response()
}

async fn team_new(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Map<String, Value>>,
) -> Answer {
    if let Err(e) = f.gate("/team/new", &headers, true).await {
        return e;
    }
    let mut inner = f.lock();
    let id = body
        .get("team_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("t-{}", inner.teams.len()));
    if inner.teams.contains_key(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Team id = {id} already exists. Please use a different team id."),
            "bad_request_error",
            Some("team_id"),
        );
    }
    let mut team = body.clone();
    team.insert("team_id".into(), json!(id));
    // With the master key, LiteLLM makes the caller (default_user_id) a team admin.
    team.insert(
        "members_with_roles".into(),
        json!([{"user_id": "default_user_id", "user_email": null, "role": "admin"}]),
    );
    let team = inner.created(with_team_defaults(team));
    inner.teams.insert(id.clone(), team.clone());
    Json(Value::Object(team)).into_response()
}

async fn team_update(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Map<String, Value>>,
) -> Answer {
    if let Err(e) = f.gate("/team/update", &headers, true).await {
        return e;
    }
    let id = body
        .get("team_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut inner = f.lock();
    let Some(team) = inner.teams.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Team not found, passed team_id={id}"),
            "not_found_error",
            Some("team_id"),
        );
    };
    for (key, value) in &body {
        team.insert(key.clone(), value.clone());
    }
    Json(json!({"team_id": id, "data": team})).into_response()
}

async fn team_delete(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    if let Err(e) = f.gate("/team/delete", &headers, true).await {
        return e;
    }
    let ids: Vec<String> = body["team_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut inner = f.lock();
    if let Some(missing) = ids.iter().find(|id| !inner.teams.contains_key(*id)) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Team not found, passed team_id={missing}"),
            "not_found_error",
            Some("team_ids"),
        );
    }
    for id in &ids {
        inner.teams.remove(id);
        inner
            .keys
            .retain(|_, (_, team)| team.as_deref() != Some(id));
    }
    Json(json!({"deleted_teams": ids})).into_response()
}

async fn member_add(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    if let Err(e) = f.gate("/team/member_add", &headers, true).await {
        return e;
    }
    let id = body["team_id"].as_str().unwrap_or_default().to_owned();
    let new: Vec<Value> = match &body["member"] {
        Value::Array(list) => list.clone(),
        one => vec![one.clone()],
    };
    let mut inner = f.lock();
    let Some(team) = inner.teams.get(&id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Team not found for team_id={id}"),
            "not_found_error",
            Some("team_id"),
        );
    };
    let mut roster = members(&team);
    // Every member is checked before any is added (team_call_validation_checks, then
    // team_member_add_duplication_check).
    if new.iter().any(|m| m["role"] == json!("admin")) {
        return error(
            StatusCode::BAD_REQUEST,
            "Assigning team admins is a premium feature. You must be a LiteLLM Enterprise user to use this feature.",
            "bad_request_error",
            Some("None"),
        );
    }
    if let Some(user_id) = new
        .iter()
        .filter_map(|m| m["user_id"].as_str())
        .find(|id| roster.iter().any(|m| m["user_id"] == json!(id)))
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("User with user_id={user_id} already in team. Existing members={roster:?}"),
            "team_member_already_in_team",
            Some("user_id"),
        );
    }
    for member in &new {
        let user_id = member["user_id"].as_str().unwrap_or_default().to_owned();
        // LiteLLM creates a member it does not know.
        if !inner.users.contains_key(&user_id) {
            let user = inner.created(with_user_defaults(Map::from_iter([(
                "user_id".to_owned(),
                json!(user_id),
            )])));
            inner.users.insert(user_id.clone(), user);
        }
        roster.push(
            json!({"user_id": user_id, "user_email": member.get("user_email"), "role": "user"}),
        );
    }
    if let Some(team) = inner.teams.get_mut(&id) {
        team.insert("members_with_roles".into(), json!(roster));
    }
    Json(json!({"team_id": id})).into_response()
}

async fn member_delete(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    if let Err(e) = f.gate("/team/member_delete", &headers, true).await {
        return e;
    }
    let id = body["team_id"].as_str().unwrap_or_default().to_owned();
    let user_id = body["user_id"].as_str().unwrap_or_default().to_owned();
    let mut inner = f.lock();
    let Some(team) = inner.teams.get_mut(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Team id={id} does not exist in db"),
            "bad_request_error",
            Some("team_id"),
        );
    };
    let roster = members(team);
    if !roster.iter().any(|m| m["user_id"] == json!(user_id)) {
        return error(
            StatusCode::BAD_REQUEST,
            "{'error': 'User not found in team'}",
            "bad_request_error",
            Some("user_id"),
        );
    }
    let kept: Vec<Value> = roster
        .into_iter()
        .filter(|m| m["user_id"] != json!(user_id))
        .collect();
    team.insert("members_with_roles".into(), json!(kept));
    inner
        .keys
        .retain(|_, (user, team)| !(user == &user_id && team.as_deref() == Some(id.as_str())));
    Json(json!({"team_id": id})).into_response()
}

async fn key_generate(
    State(f): State<FakeLiteLlm>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    if let Err(e) = f.gate("/key/generate", &headers, true).await {
        return e;
    }
    let user = body["user_id"].as_str().unwrap_or_default();
    let key = f.generate_key(user, body["team_id"].as_str());
    Json(json!({"key": key})).into_response()
}
