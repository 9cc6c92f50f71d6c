//! A mock OneLogin (API v2): `/auth/oauth2/v2/token` (HTTP Basic client credentials,
//! the grant as a JSON body), `/api/2/roles`, `/api/2/roles/{id}/users` (id, name,
//! username, added_by, added_at, assigned: no email, no status, as documented),
//! `/api/2/users` filtered by `id`, `email`, `username` or `user_ids` (comma separated)
//! and trimmed to `fields`, `/api/2/users/{id}/roles`, cursor-paged (`After-Cursor`
//! header → `cursor=`) and carrying `X-RateLimit-*` headers (the reset in seconds).

use super::kit::{self, answer, paging, serve_idp};
use super::{Dir, Faults, Flavor};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub const CLIENT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
pub const CLIENT_SECRET: &str = "onelogin-client-secret-for-tests";

pub fn user_id(key: &str) -> String {
    let n = super::PEOPLE
        .iter()
        .position(|p| p.0 == key)
        .unwrap_or(super::PEOPLE.len());
    (1001 + n).to_string()
}

pub fn group_id(key: &str) -> String {
    let n = super::GROUPS
        .iter()
        .position(|g| g.0 == key)
        .unwrap_or(super::GROUPS.len());
    (501 + n).to_string()
}

/// A user as `/api/2/users` returns it (ids are numbers); an inactive one is
/// suspended (`status` 2).
pub fn user(id: &str, key: &str, given: &str, family: &str, active: bool) -> Value {
    user_with(id, key, given, family, if active { 1 } else { 2 }, 1)
}

/// A user with the given `status` and `state` codes.
pub fn user_with(id: &str, key: &str, given: &str, family: &str, status: i64, state: i64) -> Value {
    json!({"id": id.parse::<u64>().unwrap_or(0), "firstname": given, "lastname": family,
        "email": format!("{key}@example.com"), "username": key,
        "status": status, "state": state, "directory_id": null, "external_id": null,
        "distinguished_name": null, "samaccountname": null, "member_of": null,
        "phone": null, "group_id": null, "invalid_login_attempts": 0,
        "locked_until": null, "last_login": null, "activated_at": null,
        "invitation_sent_at": null, "password_changed_at": "2024-01-10T10:00:00.000Z",
        "created_at": "2024-01-10T10:00:00.000Z", "updated_at": "2024-02-01T10:00:00.000Z"})
}

pub struct OneLoginMock {
    pub base_url: String,
    pub dir: Arc<Mutex<Dir>>,
    pub faults: Arc<Faults>,
    /// Token requests that were not `{"grant_type": "client_credentials"}` as JSON.
    pub bad_token_requests: Arc<Mutex<Vec<String>>>,
    /// Ids `/api/2/users` no longer returns while roles still list them (a user
    /// deleted between the two reads).
    pub deleted_users: Arc<Mutex<HashSet<String>>>,
}

#[derive(Clone)]
struct AppState {
    dir: Arc<Mutex<Dir>>,
    faults: Arc<Faults>,
    page_size: usize,
    bad_token_requests: Arc<Mutex<Vec<String>>>,
    deleted_users: Arc<Mutex<HashSet<String>>>,
}

impl OneLoginMock {
    /// The standard directory, two items a page.
    pub async fn start() -> Self {
        Self::start_with(Dir::standard(user_id, group_id, user), 2).await
    }

    /// `dir`, at most `page_size` items a page.
    pub async fn start_with(dir: Dir, page_size: usize) -> Self {
        let dir = Arc::new(Mutex::new(dir));
        let faults = Faults::new(Flavor::OneLogin);
        let bad_token_requests = Arc::new(Mutex::new(Vec::new()));
        let deleted_users = Arc::new(Mutex::new(HashSet::new()));
        let state = AppState {
            dir: dir.clone(),
            faults: faults.clone(),
            page_size,
            bad_token_requests: bad_token_requests.clone(),
            deleted_users: deleted_users.clone(),
        };
        let token_route = Router::new()
            .route("/auth/oauth2/v2/token", post(token))
            .with_state(state.clone());
        let api = Router::new()
            .route("/api/2/roles", get(roles))
            .route("/api/2/roles/{id}/users", get(role_users))
            .route("/api/2/users", get(users))
            .route("/api/2/users/{id}/roles", get(user_roles))
            .with_state(state);
        let base_url = serve_idp(token_route, api, &faults).await;
        Self {
            base_url,
            dir,
            faults,
            bad_token_requests,
            deleted_users,
        }
    }

    pub fn config(&self, name: &str, groups: &[&str]) -> scimsync::config::IdpConfig {
        let mut c = scimsync::config::IdpConfig::new(name, scimsync::config::IdpKind::Onelogin);
        c.domain = Some("acme.onelogin.com".into());
        c.api_base_url = Some(self.base_url.clone());
        c.client_id = Some(CLIENT_ID.into());
        c.client_secret = Some(CLIENT_SECRET.into());
        c.groups = groups.iter().map(|g| g.to_string()).collect();
        c.max_retries = Some(3);
        c.retry_backoff_ms = Some(50);
        c
    }
}

async fn token(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {basic}"));
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let grant: Option<Value> = serde_json::from_slice(&body).ok();
    let json_grant = content_type.starts_with("application/json")
        && grant
            .as_ref()
            .is_some_and(|g| g["grant_type"] == "client_credentials");
    if !json_grant {
        s.bad_token_requests.lock().unwrap().push(format!(
            "{content_type}: {}",
            String::from_utf8_lossy(&body)
        ));
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"statusCode": 400, "name": "BadRequest",
                "message": "Content Type is not supported"}),
        );
    }
    if !authorized {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"statusCode": 401, "name": "Unauthorized",
                "message": "Authentication Failure"}),
        );
    }
    s.faults.grant(
        36000,
        json!({"created_at": "2024-02-01T10:00:00.000Z", "refresh_token": "not-used",
            "token_type": "bearer", "account_id": 555555}),
    )
}

fn role_json(g: &super::Group) -> Value {
    json!({"id": g.id.parse::<u64>().unwrap_or(0), "name": g.name})
}

async fn roles(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let items = s.dir.lock().unwrap().groups.iter().map(role_json).collect();
    paging::after_cursor(items, &q, s.page_size)
}

async fn role_users(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        let Some(g) = dir.group(&id) else {
            return kit::not_found(json!({"statusCode": 404, "name": "NotFound",
                "message": "Role not found"}));
        };
        // The role's users as OneLogin lists them: no email, no first/last name, no
        // status or state.
        dir.members_json(g)
            .into_iter()
            .map(|u| {
                json!({"id": u["id"], "name": format!("{} {}",
                    u["firstname"].as_str().unwrap_or_default(),
                    u["lastname"].as_str().unwrap_or_default()),
                "username": u["username"],
                "added_by": {"id": 9001, "name": "Ada Admin"},
                "added_at": "2024-01-10T10:00:00.000Z", "assigned": true})
            })
            .collect()
    };
    paging::after_cursor(items, &q, s.page_size)
}

async fn users(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let keep = |u: &Value| {
        let by_field = ["id", "email", "username"].iter().all(|f| match q.get(*f) {
            Some(want) => text(&u[*f]).eq_ignore_ascii_case(want),
            None => true,
        });
        let by_ids = match q.get("user_ids") {
            Some(ids) => ids.split(',').any(|id| id.trim() == text(&u["id"])),
            None => true,
        };
        let deleted = s.deleted_users.lock().unwrap().contains(&text(&u["id"]));
        by_field && by_ids && !deleted
    };
    // `fields` trims each user to the named attributes; `id` always comes back.
    let trim = |u: &Value| match q.get("fields") {
        Some(fields) => {
            let mut out = serde_json::Map::new();
            out.insert("id".into(), u["id"].clone());
            for f in fields.split(',').map(str::trim) {
                if let Some(v) = u.get(f) {
                    out.insert(f.to_owned(), v.clone());
                }
            }
            Value::Object(out)
        }
        None => u.clone(),
    };
    let items: Vec<Value> = s
        .dir
        .lock()
        .unwrap()
        .users
        .values()
        .filter(|u| keep(u))
        .map(trim)
        .collect();
    paging::after_cursor(items, &q, s.page_size)
}

async fn user_roles(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let ids: Vec<Value> = s
        .dir
        .lock()
        .unwrap()
        .groups_of(&id)
        .iter()
        .map(|g| json!(g.id.parse::<u64>().unwrap_or(0)))
        .collect();
    Json(ids).into_response()
}
