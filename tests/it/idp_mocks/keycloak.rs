//! A mock Keycloak: `/realms/{realm}/protocol/openid-connect/token` (client credentials)
//! and the Admin REST API under `/admin/realms/{realm}`: `groups` (subgroups inline as
//! before Keycloak 23, or counted with `subGroupCount` and read from
//! `groups/{id}/children` as from 23 on), `groups/{id}/members`, `users`,
//! `users/{id}`, `users/{id}/groups`, all paged with `first`/`max` like the real server
//! (a page holds up to `max`; there is no next link).

use super::kit::{self, answer, paging, serve_idp};
use super::{Dir, Faults, Flavor, Group};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const REALM: &str = "acme";
pub const CLIENT_ID: &str = "scimsync";
pub const CLIENT_SECRET: &str = "keycloak-client-secret-for-tests";

pub fn user_id(key: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("user:{key}").as_bytes()).to_string()
}

pub fn group_id(key: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("group:{key}").as_bytes(),
    )
    .to_string()
}

pub fn user(id: &str, key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({"id": id, "username": key, "firstName": given, "lastName": family,
        "email": format!("{key}@example.com"), "emailVerified": true, "enabled": active,
        "createdTimestamp": 1_704_880_800_000_i64, "totp": false})
}

/// How the server presents subgroups.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Keycloak 22 and earlier: `subGroups` filled in, no `/children`.
    Legacy,
    /// Keycloak 23 and later: `subGroupCount`, empty `subGroups`, `/children`.
    Modern,
}

pub struct KeycloakMock {
    pub base_url: String,
    pub dir: Arc<Mutex<Dir>>,
    pub faults: Arc<Faults>,
}

#[derive(Clone)]
struct AppState {
    dir: Arc<Mutex<Dir>>,
    faults: Arc<Faults>,
    version: Version,
}

impl KeycloakMock {
    /// The standard directory plus "LLM Contractors", a subgroup of "LLM Users" holding
    /// Eve, and "Load Test" with 205 generated users (three pages of 100).
    pub async fn start(version: Version) -> Self {
        let mut dir = Dir::standard(user_id, group_id, user);
        dir.groups.push(Group {
            id: group_id("contractors"),
            name: "LLM Contractors".into(),
            members: vec![user_id("eve")],
            parent: Some(group_id("users")),
        });
        let mut load = Vec::new();
        for n in 0..205 {
            let key = format!("load{n:03}");
            let id = user_id(&key);
            dir.users.insert(
                id.clone(),
                user(&id, &key, "Load", &format!("User {n}"), true),
            );
            load.push(id);
        }
        dir.groups.push(Group {
            id: group_id("load"),
            name: "Load Test".into(),
            members: load,
            parent: None,
        });
        Self::start_with(dir, version).await
    }

    pub async fn start_with(dir: Dir, version: Version) -> Self {
        let dir = Arc::new(Mutex::new(dir));
        let faults = Faults::new(Flavor::Keycloak);
        let state = AppState {
            dir: dir.clone(),
            faults: faults.clone(),
            version,
        };
        let admin = "/admin/realms/{realm}";
        let token_route = Router::new()
            .route("/realms/{realm}/protocol/openid-connect/token", post(token))
            .with_state(state.clone());
        let api = Router::new()
            .route(&format!("{admin}/groups"), get(top_groups))
            .route(&format!("{admin}/groups/{{id}}/children"), get(children))
            .route(&format!("{admin}/groups/{{id}}/members"), get(members))
            .route(&format!("{admin}/users"), get(search_users))
            .route(&format!("{admin}/users/{{id}}"), get(get_user))
            .route(&format!("{admin}/users/{{id}}/groups"), get(user_groups))
            .with_state(state);
        let base_url = serve_idp(token_route, api, &faults).await;
        Self {
            base_url,
            dir,
            faults,
        }
    }

    pub fn config(&self, name: &str, groups: &[&str]) -> scimsync::config::IdpConfig {
        let mut c = scimsync::config::IdpConfig::new(name, scimsync::config::IdpKind::Keycloak);
        c.server_url = Some(self.base_url.clone());
        c.realm = Some(REALM.into());
        c.client_id = Some(CLIENT_ID.into());
        c.client_secret = Some(CLIENT_SECRET.into());
        c.groups = groups.iter().map(|g| g.to_string()).collect();
        c.max_retries = Some(3);
        c.retry_backoff_ms = Some(50);
        c
    }
}

async fn token(
    State(s): State<AppState>,
    Path(realm): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let f = |k: &str| kit::form_value(&form, k);
    if realm != REALM {
        return kit::not_found(json!({"error": "Realm does not exist"}));
    }
    if f("grant_type") != "client_credentials"
        || f("client_id") != CLIENT_ID
        || f("client_secret") != CLIENT_SECRET
    {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized_client",
                "error_description": "Invalid client or Invalid client credentials"}),
        );
    }
    s.faults.grant(
        300,
        json!({"refresh_expires_in": 0, "token_type": "Bearer", "not-before-policy": 0,
            "scope": "profile email"}),
    )
}

fn path_of(dir: &Dir, g: &Group) -> String {
    match g.parent.as_deref().and_then(|p| dir.group(p)) {
        Some(parent) => format!("{}/{}", path_of(dir, parent), g.name),
        None => format!("/{}", g.name),
    }
}

fn group_json(dir: &Dir, g: &Group, version: Version) -> Value {
    let children: Vec<&Group> = dir
        .groups
        .iter()
        .filter(|c| c.parent.as_deref() == Some(&g.id))
        .collect();
    let mut v = json!({"id": g.id, "name": g.name, "path": path_of(dir, g),
        "attributes": {}, "realmRoles": [], "clientRoles": {}});
    match version {
        Version::Legacy => {
            v["subGroups"] = json!(children
                .iter()
                .map(|c| group_json(dir, c, version))
                .collect::<Vec<_>>());
        }
        Version::Modern => {
            v["subGroupCount"] = json!(children.len());
            v["subGroups"] = json!([]);
        }
    }
    v
}

/// A user as `briefRepresentation=true` renders them (Keycloak's
/// `ModelToRepresentation.toBriefRepresentation`): names, email and `enabled` stay;
/// attributes, required actions, totp and the like go. Keycloak leaves out what is
/// null, such as a missing last name.
fn brief_user(u: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for field in [
        "id",
        "username",
        "createdTimestamp",
        "lastName",
        "firstName",
        "email",
        "enabled",
        "emailVerified",
        "federationLink",
    ] {
        if let Some(v) = u.get(field).filter(|v| !v.is_null()) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn kc_not_found(what: &str) -> Response {
    kit::not_found(json!({"error": format!("{what} not found")}))
}

async fn top_groups(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        dir.groups
            .iter()
            .filter(|g| g.parent.is_none())
            .map(|g| group_json(&dir, g, s.version))
            .collect()
    };
    paging::first_max(&items, &q, 100)
}

async fn children(
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if s.version == Version::Legacy {
        return kit::not_found(json!({"error": "RESTEASY003210: Could not find resource"}));
    }
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        if dir.group(&id).is_none() {
            return kc_not_found("Could not find group by id");
        }
        dir.groups
            .iter()
            .filter(|g| g.parent.as_deref() == Some(&id))
            .map(|g| group_json(&dir, g, s.version))
            .collect()
    };
    paging::first_max(&items, &q, 10)
}

async fn members(
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let brief = q.get("briefRepresentation").map(String::as_str) == Some("true");
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        match dir.group(&id) {
            // Direct members only: Keycloak does not fold in subgroups' members.
            Some(g) => dir
                .members_json(g)
                .into_iter()
                .map(|u| if brief { brief_user(&u) } else { u })
                .collect(),
            None => return kc_not_found("Could not find group by id"),
        }
    };
    paging::first_max(&items, &q, 100)
}

async fn search_users(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let matches = |u: &Value, field: &str| match q.get(field) {
        Some(want) => u[field]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case(want)),
        None => true,
    };
    let items: Vec<Value> = s
        .dir
        .lock()
        .unwrap()
        .users
        .values()
        .filter(|u| matches(u, "username") && matches(u, "email"))
        .cloned()
        .collect();
    paging::first_max(&items, &q, 100)
}

async fn get_user(State(s): State<AppState>, Path((_, id)): Path<(String, String)>) -> Response {
    let found = s.dir.lock().unwrap().users.get(&id).cloned();
    match found {
        Some(u) => Json(u).into_response(),
        None => kc_not_found("User"),
    }
}

async fn user_groups(
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        if !dir.users.contains_key(&id) {
            return kc_not_found("User");
        }
        dir.groups_of(&id)
            .iter()
            .map(|g| json!({"id": g.id, "name": g.name, "path": path_of(&dir, g)}))
            .collect()
    };
    paging::first_max(&items, &q, 100)
}
