//! A mock Google Workspace: the OAuth token endpoint (JWT-bearer grant of a service
//! account with domain-wide delegation) and the Admin SDK Directory API
//! (`/admin/directory/v1/groups`, `groups/{key}/members` with
//! `includeDerivedMembership` (id, email, type, status: no names), `users` (the
//! account's users, `maxResults` up to 500, `fields` partial responses), `users/{key}`),
//! paged with `nextPageToken`.

use super::kit::{self, answer, paging, serve_idp};
use super::{jwt, Dir, Faults, Flavor, Group};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

pub const CLIENT_EMAIL: &str = "scimsync@acme-project.iam.gserviceaccount.com";
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
pub const ADMIN: &str = "admin@example.com";
pub const SCOPES: &str = "https://www.googleapis.com/auth/admin.directory.group.readonly \
                          https://www.googleapis.com/auth/admin.directory.user.readonly";
pub const API_PATH: &str = "/admin/directory/v1";

/// The service account's key pair.
pub fn service_account_key() -> &'static jwt::TestKey {
    static KEY: OnceLock<jwt::TestKey> = OnceLock::new();
    KEY.get_or_init(|| jwt::generate(KEY_ID))
}

pub fn user_id(key: &str) -> String {
    format!("1000{key}")
}

pub fn group_id(key: &str) -> String {
    format!("03{key}")
}

pub fn user(id: &str, key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({
        "kind": "admin#directory#user", "id": id, "etag": "\"e\"",
        "primaryEmail": format!("{key}@example.com"),
        "name": {"givenName": given, "familyName": family, "fullName": format!("{given} {family}")},
        "isAdmin": false, "suspended": !active, "archived": false,
        "orgUnitPath": "/", "customerId": "C01abcde",
    })
}

pub struct GoogleMock {
    pub base_url: String,
    pub dir: Arc<Mutex<Dir>>,
    pub faults: Arc<Faults>,
    /// Users who are members of groups here but belong to another Google account: the
    /// users API of this one does not know them.
    pub outsiders: Arc<Mutex<HashSet<String>>>,
}

#[derive(Clone)]
struct AppState {
    dir: Arc<Mutex<Dir>>,
    faults: Arc<Faults>,
    page_size: usize,
    base: Arc<Mutex<String>>,
    outsiders: Arc<Mutex<HashSet<String>>>,
}

impl GoogleMock {
    /// The standard directory, plus a group "LLM Contractors" nested in "LLM Users"
    /// holding Eve (a member of LLM Users only through it); two items a page.
    pub async fn start() -> Self {
        let mut dir = Dir::standard(user_id, group_id, user);
        dir.groups.push(Group {
            id: group_id("contractors"),
            name: "LLM Contractors".into(),
            members: vec![user_id("eve")],
            parent: Some(group_id("users")),
        });
        Self::start_with(dir, 2).await
    }

    pub async fn start_with(dir: Dir, page_size: usize) -> Self {
        let dir = Arc::new(Mutex::new(dir));
        let faults = Faults::new(Flavor::Google);
        let base = Arc::new(Mutex::new(String::new()));
        let outsiders = Arc::new(Mutex::new(HashSet::new()));
        let state = AppState {
            dir: dir.clone(),
            faults: faults.clone(),
            page_size,
            base: base.clone(),
            outsiders: outsiders.clone(),
        };
        let token_route = Router::new()
            .route("/token", post(token))
            .with_state(state.clone());
        let api = Router::new()
            .route(&format!("{API_PATH}/groups"), get(list_groups))
            .route(&format!("{API_PATH}/groups/{{key}}/members"), get(members))
            .route(&format!("{API_PATH}/users"), get(list_users))
            .route(&format!("{API_PATH}/users/{{key}}"), get(get_user))
            .with_state(state);
        let base_url = serve_idp(token_route, api, &faults).await;
        *base.lock().unwrap() = base_url.clone();
        Self {
            base_url,
            dir,
            faults,
            outsiders,
        }
    }

    /// The service account's JSON key file, as the Cloud console downloads it (its
    /// `token_uri` points at the mock).
    pub fn key_file_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": "acme-project",
            "private_key_id": KEY_ID,
            "private_key": service_account_key().pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "110000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("{}/token", self.base_url),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/scimsync",
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }

    /// An `[[idp]]` for this mock; `key_file` holds [`GoogleMock::key_file_json`].
    pub fn config(
        &self,
        name: &str,
        groups: &[&str],
        key_file: &std::path::Path,
    ) -> scimsync::config::IdpConfig {
        let mut c = scimsync::config::IdpConfig::new(name, scimsync::config::IdpKind::Google);
        c.domain = Some("example.com".into());
        c.admin_subject = Some(ADMIN.into());
        c.service_account_file = Some(key_file.to_owned());
        c.api_base_url = Some(format!("{}{API_PATH}", self.base_url));
        c.groups = groups.iter().map(|g| g.to_string()).collect();
        c.max_retries = Some(3);
        c.retry_backoff_ms = Some(50);
        c
    }
}

async fn token(State(s): State<AppState>, Form(form): Form<HashMap<String, String>>) -> Response {
    let audience = format!("{}/token", s.base.lock().unwrap());
    let f = |k: &str| kit::form_value(&form, k);
    let claims = kit::verify_assertion(service_account_key(), f("assertion"), &audience);
    let ok = f("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        && claims
            .as_ref()
            .is_some_and(|c| c["iss"] == CLIENT_EMAIL && c["sub"] == ADMIN && c["scope"] == SCOPES);
    if !ok {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
        );
    }
    s.faults.grant(3599, json!({"token_type": "Bearer"}))
}

fn google_not_found(what: &str) -> Response {
    kit::not_found(
        json!({"error": {"code": 404, "message": format!("Resource Not Found: {what}"),
        "errors": [{"message": format!("Resource Not Found: {what}"), "domain": "global",
            "reason": "notFound"}]}}),
    )
}

fn group_json(g: &Group) -> Value {
    json!({"kind": "admin#directory#group", "id": g.id, "etag": "\"g\"",
        "email": format!("{}@example.com", g.name.to_lowercase().replace(' ', "-")),
        "name": g.name, "directMembersCount": g.members.len().to_string(),
        "description": "", "adminCreated": true})
}

async fn list_groups(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        match (q.get("customer"), q.get("userKey")) {
            (Some(_), None) => dir.groups.iter().map(group_json).collect(),
            // A user's groups: direct memberships only, as the real API answers.
            (None, Some(key)) => match find(&dir, key) {
                Some(u) => {
                    let id = u["id"].as_str().unwrap_or_default().to_owned();
                    dir.groups_of(&id).iter().map(group_json).collect()
                }
                None => return google_not_found("userKey"),
            },
            _ => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"code": 400, "message": "Bad Request",
                        "errors": [{"reason": "badRequest"}]}}),
                )
            }
        }
    };
    paging::page_token("admin#directory#groups", "groups", items, &q, s.page_size)
}

/// Direct members, or with `includeDerivedMembership=true` the users of nested groups
/// too (each once); the nested group itself is listed as a GROUP member.
fn member_entries(dir: &Dir, group: &Group, derived: bool) -> Vec<Value> {
    let member = |id: &str, email: String, kind: &str, status: &str| {
        json!({"kind": "admin#directory#member", "etag": "\"m\"", "id": id, "email": email,
            "role": "MEMBER", "type": kind, "status": status})
    };
    let user_entry = |id: &str| {
        dir.users.get(id).map(|u| {
            let status = if u["suspended"] == true {
                "SUSPENDED"
            } else {
                "ACTIVE"
            };
            member(
                id,
                u["primaryEmail"].as_str().unwrap_or_default().to_owned(),
                "USER",
                status,
            )
        })
    };
    let mut out: Vec<Value> = group.members.iter().filter_map(|m| user_entry(m)).collect();
    let mut seen: HashSet<String> = group.members.iter().cloned().collect();
    for child in dir
        .groups
        .iter()
        .filter(|g| g.parent.as_deref() == Some(&group.id))
    {
        out.push(member(
            &child.id,
            format!(
                "{}@example.com",
                child.name.to_lowercase().replace(' ', "-")
            ),
            "GROUP",
            "ACTIVE",
        ));
        if derived {
            for m in &child.members {
                if seen.insert(m.clone()) {
                    out.extend(user_entry(m));
                }
            }
        }
    }
    out
}

async fn members(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let derived = q.get("includeDerivedMembership").map(String::as_str) == Some("true");
    let items = {
        let dir = s.dir.lock().unwrap();
        match dir.group(&key) {
            Some(g) => member_entries(&dir, g, derived),
            None => return google_not_found("groupKey"),
        }
    };
    paging::page_token("admin#directory#members", "members", items, &q, s.page_size)
}

fn bad_request(message: &str) -> Response {
    answer(
        StatusCode::BAD_REQUEST,
        json!({"error": {"code": 400, "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "invalid"}]}}),
    )
}

/// The sub-fields `fields=nextPageToken,users(a,b(c))` asks of each user, or `None`
/// for the whole resource.
fn user_fields(fields: &str) -> Option<Vec<String>> {
    let start = fields.find("users(")? + "users(".len();
    let mut depth = 0usize;
    let mut out = vec![String::new()];
    for c in fields[start..].chars() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => break,
            ')' => depth -= 1,
            ',' if depth == 0 => out.push(String::new()),
            c if depth == 0 => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
            _ => {}
        }
    }
    Some(
        out.into_iter()
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect(),
    )
}

/// `users.list`: the account's users (never outsiders), `maxResults` 1 to 500.
async fn list_users(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !q.contains_key("customer") && !q.contains_key("domain") {
        return bad_request("Bad Request");
    }
    let max = paging::number(&q, "maxResults").unwrap_or(100);
    if !(1..=500).contains(&max) {
        return bad_request("Invalid value '501'. Values must be within the range: [1, 500]");
    }
    let wanted = q.get("fields").and_then(|f| user_fields(f));
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        let outsiders = s.outsiders.lock().unwrap();
        dir.users
            .iter()
            .filter(|(id, _)| !outsiders.contains(*id))
            .map(|(_, u)| match &wanted {
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
    paging::page_token("admin#directory#users", "users", items, &q, s.page_size)
}

fn find(dir: &Dir, key: &str) -> Option<Value> {
    dir.users.get(key).cloned().or_else(|| {
        dir.users
            .values()
            .find(|u| {
                u["primaryEmail"]
                    .as_str()
                    .is_some_and(|e| e.eq_ignore_ascii_case(key))
            })
            .cloned()
    })
}

async fn get_user(State(s): State<AppState>, Path(key): Path<String>) -> Response {
    let found = find(&s.dir.lock().unwrap(), &key);
    match found {
        Some(u)
            if !s
                .outsiders
                .lock()
                .unwrap()
                .contains(u["id"].as_str().unwrap_or("")) =>
        {
            Json(u).into_response()
        }
        _ => google_not_found("userKey"),
    }
}
