//! A mock Auth0 tenant: `/oauth/token` (client credentials with the Management API
//! audience) and the Management API v2: `/api/v2/roles` (page / per_page with totals),
//! `/api/v2/roles/{id}/users` (checkpoint paging: `take`, then `from` = the previous
//! answer's `next`; user_id, email, picture and name only, no `blocked`),
//! `/api/v2/users` (search engine v3: `q=user_id:"…"` or `user_id:("…" OR "…")`,
//! `fields` / `include_fields`, page / per_page), `/api/v2/users/{id}`,
//! `/api/v2/users-by-email`, `/api/v2/users/{id}/roles`, carrying `X-RateLimit-*`
//! headers (the reset a Unix time).

use super::kit::{self, answer, paging, serve_idp};
use super::{Dir, Faults, Flavor, Group};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub const DOMAIN: &str = "acme.eu.auth0.com";
pub const AUDIENCE: &str = "https://acme.eu.auth0.com/api/v2/";
pub const CLIENT_ID: &str = "AbCdEfGhIjKlMnOpQrStUvWxYz012345";
pub const CLIENT_SECRET: &str = "auth0-client-secret-for-tests";

pub fn user_id(key: &str) -> String {
    format!("auth0|{key}")
}

pub fn group_id(key: &str) -> String {
    format!("rol_{key}")
}

pub fn user(id: &str, key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({"user_id": id, "email": format!("{key}@example.com"), "email_verified": true,
        "name": format!("{given} {family}"), "given_name": given, "family_name": family,
        "nickname": key, "picture": "https://cdn.auth0.com/avatars/x.png",
        "blocked": !active, "created_at": "2024-01-10T10:00:00.000Z",
        "identities": [{"connection": "Username-Password-Authentication",
            "provider": "auth0", "user_id": key, "isSocial": false}]})
}

pub struct Auth0Mock {
    pub base_url: String,
    pub dir: Arc<Mutex<Dir>>,
    pub faults: Arc<Faults>,
    /// Users the search index does not hold yet (search is eventually consistent);
    /// `GET /api/v2/users/{id}` knows them.
    pub unindexed: Arc<Mutex<HashSet<String>>>,
    /// Users deleted after a role listing was read: roles still list them, search and
    /// `GET /api/v2/users/{id}` no longer know them.
    pub deleted_users: Arc<Mutex<HashSet<String>>>,
}

#[derive(Clone)]
struct AppState {
    dir: Arc<Mutex<Dir>>,
    faults: Arc<Faults>,
    page_size: usize,
    unindexed: Arc<Mutex<HashSet<String>>>,
    deleted_users: Arc<Mutex<HashSet<String>>>,
}

impl Auth0Mock {
    /// The standard directory plus 110 unrelated roles, so that the role list takes
    /// two pages of 100; role users come two a page.
    pub async fn start() -> Self {
        let mut dir = Dir::standard(user_id, group_id, user);
        for n in 0..110 {
            dir.groups.push(Group {
                id: format!("rol_support{n:03}"),
                name: format!("Support Tier {n:03}"),
                members: Vec::new(),
                parent: None,
            });
        }
        let dir = Arc::new(Mutex::new(dir));
        let faults = Faults::new(Flavor::Auth0);
        let unindexed = Arc::new(Mutex::new(HashSet::new()));
        let deleted_users = Arc::new(Mutex::new(HashSet::new()));
        let state = AppState {
            dir: dir.clone(),
            faults: faults.clone(),
            page_size: 2,
            unindexed: unindexed.clone(),
            deleted_users: deleted_users.clone(),
        };
        let token_route = Router::new()
            .route("/oauth/token", post(token))
            .with_state(state.clone());
        let api = Router::new()
            .route("/api/v2/roles", get(roles))
            .route("/api/v2/roles/{id}/users", get(role_users))
            .route("/api/v2/users", get(search_users))
            .route("/api/v2/users/{id}", get(get_user))
            .route("/api/v2/users/{id}/roles", get(user_roles))
            .route("/api/v2/users-by-email", get(users_by_email))
            .with_state(state);
        let base_url = serve_idp(token_route, api, &faults).await;
        Self {
            base_url,
            dir,
            faults,
            unindexed,
            deleted_users,
        }
    }

    pub fn config(&self, name: &str, groups: &[&str]) -> scimsync::config::IdpConfig {
        let mut c = scimsync::config::IdpConfig::new(name, scimsync::config::IdpKind::Auth0);
        c.domain = Some(DOMAIN.into());
        c.token_url = Some(format!("{}/oauth/token", self.base_url));
        c.api_base_url = Some(format!("{}/api/v2", self.base_url));
        c.client_id = Some(CLIENT_ID.into());
        c.client_secret = Some(CLIENT_SECRET.into());
        c.groups = groups.iter().map(|g| g.to_string()).collect();
        c.max_retries = Some(3);
        c.retry_backoff_ms = Some(50);
        c
    }
}

/// Auth0 takes the token request as a form or as JSON.
async fn token(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let form: HashMap<String, String> = if json_body {
        serde_json::from_slice(&body).unwrap_or_default()
    } else {
        serde_urlencoded_pairs(&body)
    };
    let f = |k: &str| kit::form_value(&form, k);
    if f("grant_type") != "client_credentials" {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type",
                "error_description": "Unsupported grant type"}),
        );
    }
    if f("audience") != AUDIENCE {
        return answer(
            StatusCode::FORBIDDEN,
            json!({"error": "access_denied", "error_description":
                format!("Service not found: {}", f("audience"))}),
        );
    }
    if f("client_id") != CLIENT_ID || f("client_secret") != CLIENT_SECRET {
        return kit::invalid_client("Unauthorized");
    }
    s.faults.grant(
        86400,
        json!({"scope": "read:users read:roles read:role_members", "token_type": "Bearer"}),
    )
}

fn serde_urlencoded_pairs(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn role_json(g: &Group) -> Value {
    json!({"id": g.id, "name": g.name, "description": format!("{} role", g.name)})
}

async fn roles(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let items = s.dir.lock().unwrap().groups.iter().map(role_json).collect();
    paging::page_per_page("roles", items, &q)
}

async fn role_users(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        let Some(g) = dir.group(&id) else {
            return kit::not_found(json!({"statusCode": 404, "error": "Not Found",
                "message": "The role does not exist.", "errorCode": "inexistent_role"}));
        };
        // A role's users as Auth0 lists them: id, email, picture, name; no blocked flag.
        dir.members_json(g)
            .into_iter()
            .map(|u| {
                json!({"user_id": u["user_id"], "email": u["email"], "picture": u["picture"],
                "name": u["name"]})
            })
            .collect()
    };
    if q.contains_key("take") || q.contains_key("from") {
        paging::checkpoint("users", items, &q, s.page_size)
            .unwrap_or_else(|| bad_query("Invalid checkpoint"))
    } else {
        let (users, _) = paging::slice(&items, 0, 50);
        Json(users).into_response()
    }
}

fn bad_query(message: &str) -> Response {
    answer(
        StatusCode::BAD_REQUEST,
        json!({"statusCode": 400, "error": "Bad Request", "message": message,
            "errorCode": "invalid_query_string"}),
    )
}

/// The ids of a `user_id:"…"` or `user_id:("…" OR "…")` query, the only shapes the
/// connector sends; anything else is refused like a query Auth0 cannot parse.
fn user_ids_of(q: &str) -> Option<Vec<String>> {
    let rest = q.strip_prefix("user_id:")?;
    let inner = match rest.strip_prefix('(') {
        Some(r) => r.strip_suffix(')')?,
        None => rest,
    };
    let mut ids = Vec::new();
    let mut between = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            between.push(c);
            continue;
        }
        // What separates two phrases must be the OR operator (and spaces).
        let separator = between.trim();
        if !(separator.is_empty() && ids.is_empty() || separator == "OR" && !ids.is_empty()) {
            return None;
        }
        between.clear();
        let mut id = String::new();
        loop {
            match chars.next()? {
                '\\' => id.push(chars.next()?),
                '"' => break,
                c => id.push(c),
            }
        }
        ids.push(id);
    }
    (between.trim().is_empty() && !ids.is_empty()).then_some(ids)
}

async fn search_users(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("search_engine").map(String::as_str) != Some("v3") {
        return bad_query("search_engine must be v3");
    }
    let Some(ids) = q.get("q").and_then(|q| user_ids_of(q)) else {
        return bad_query("Invalid query string");
    };
    let per_page = paging::number(&q, "per_page").unwrap_or(50);
    if per_page > 100 {
        return bad_query("per_page must be at most 100");
    }
    let page = paging::number(&q, "page").unwrap_or(0);
    let fields: Option<Vec<String>> = q
        .get("fields")
        .filter(|_| q.get("include_fields").map(String::as_str) != Some("false"))
        .map(|f| f.split(',').map(|f| f.trim().to_owned()).collect());
    let matches: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        let unindexed = s.unindexed.lock().unwrap();
        let deleted = s.deleted_users.lock().unwrap();
        dir.users
            .values()
            .filter(|u| {
                let id = u["user_id"].as_str().unwrap_or_default();
                ids.iter().any(|want| want == id)
                    && !unindexed.contains(id)
                    && !deleted.contains(id)
            })
            .map(|u| match &fields {
                Some(fields) => {
                    let mut out = serde_json::Map::new();
                    for f in fields {
                        if let Some(v) = u.get(f) {
                            out.insert(f.clone(), v.clone());
                        }
                    }
                    Value::Object(out)
                }
                None => u.clone(),
            })
            .collect()
    };
    let (users, _) = paging::slice(&matches, page * per_page, per_page);
    Json(users).into_response()
}

fn auth0_not_found() -> Response {
    kit::not_found(json!({"statusCode": 404, "error": "Not Found",
        "message": "The user does not exist.", "errorCode": "inexistent_user"}))
}

async fn get_user(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let found = s.dir.lock().unwrap().users.get(&id).cloned();
    match found {
        Some(_) if s.deleted_users.lock().unwrap().contains(&id) => auth0_not_found(),
        Some(u) => Json(u).into_response(),
        None => auth0_not_found(),
    }
}

async fn users_by_email(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let email = q.get("email").cloned().unwrap_or_default();
    let found: Vec<Value> = s
        .dir
        .lock()
        .unwrap()
        .users
        .values()
        .filter(|u| {
            u["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(&email))
        })
        .cloned()
        .collect();
    Json(found).into_response()
}

async fn user_roles(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items = {
        let dir = s.dir.lock().unwrap();
        if !dir.users.contains_key(&id) {
            return auth0_not_found();
        }
        dir.groups_of(&id).iter().map(role_json).collect()
    };
    paging::page_per_page("roles", items, &q)
}
