//! A mock Okta org: `/oauth2/v1/token` (client credentials with private_key_jwt), an
//! SSWS API token, `/api/v1/groups`, `/api/v1/groups/{id}/users`, `/api/v1/users/{id}`
//! and `/api/v1/users/{id}/groups`, paged with `Link: <...>; rel="next"` (`after` is the
//! last id of the page) and carrying `X-Rate-Limit-*` headers.

use super::kit::{self, paging, serve_idp};
use super::{jwt, Dir, Faults, Flavor};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub const CLIENT_ID: &str = "0oa-scimsync-service";
pub const KEY_ID: &str = "okta-client-key-1";
pub const API_TOKEN: &str = "00-okta-ssws-token-for-tests";
pub const SCOPES: &str = "okta.groups.read okta.users.read";

/// The key pair of the service app (its public half is what Okta has registered).
pub fn client_key() -> &'static jwt::TestKey {
    static KEY: OnceLock<jwt::TestKey> = OnceLock::new();
    KEY.get_or_init(|| jwt::generate(KEY_ID))
}

pub fn user_id(key: &str) -> String {
    format!("00u{key}")
}

pub fn group_id(key: &str) -> String {
    format!("00g{key}")
}

pub fn user(id: &str, key: &str, given: &str, family: &str, active: bool) -> Value {
    json!({
        "id": id,
        "status": if active { "ACTIVE" } else { "DEPROVISIONED" },
        "created": "2024-01-10T10:00:00.000Z",
        "activated": "2024-01-10T10:00:00.000Z",
        "statusChanged": "2024-02-01T10:00:00.000Z",
        "lastLogin": null,
        "lastUpdated": "2024-02-01T10:00:00.000Z",
        "type": {"id": "oty1"},
        "profile": {
            "firstName": given, "lastName": family, "mobilePhone": null, "secondEmail": null,
            "login": format!("{key}@example.com"), "email": format!("{key}@example.com"),
        },
        "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
        "_links": {"self": {"href": format!("https://example.okta.com/api/v1/users/{id}")}},
    })
}

pub struct OktaMock {
    pub base_url: String,
    pub dir: Arc<Mutex<Dir>>,
    pub faults: Arc<Faults>,
}

#[derive(Clone)]
struct AppState {
    dir: Arc<Mutex<Dir>>,
    faults: Arc<Faults>,
    page_size: usize,
    base: Arc<Mutex<String>>,
}

impl OktaMock {
    /// The standard directory plus Okta's built-in Everyone group, two items a page.
    pub async fn start() -> Self {
        let mut dir = Dir::standard(user_id, group_id, user);
        dir.groups.insert(
            0,
            super::Group {
                id: "00geveryone".into(),
                name: "Everyone".into(),
                members: dir.users.keys().cloned().collect(),
                parent: None,
            },
        );
        Self::start_with(dir, 2).await
    }

    pub async fn start_with(dir: Dir, page_size: usize) -> Self {
        let dir = Arc::new(Mutex::new(dir));
        let faults = Faults::new(Flavor::Okta);
        let base = Arc::new(Mutex::new(String::new()));
        let state = AppState {
            dir: dir.clone(),
            faults: faults.clone(),
            page_size,
            base: base.clone(),
        };
        let token_route = Router::new()
            .route("/oauth2/v1/token", post(token))
            .with_state(state.clone());
        let api = Router::new()
            .route("/api/v1/groups", get(list_groups))
            .route("/api/v1/groups/{id}/users", get(group_users))
            .route("/api/v1/users/{id}", get(get_user))
            .route("/api/v1/users/{id}/groups", get(user_groups))
            .with_state(state);
        let base_url = serve_idp(token_route, api, &faults).await;
        *base.lock().unwrap() = base_url.clone();
        Self {
            base_url,
            dir,
            faults,
        }
    }

    /// An `[[idp]]` using OAuth 2.0 with private_key_jwt; `key_file` holds the PEM.
    pub fn oauth_config(
        &self,
        name: &str,
        groups: &[&str],
        key_file: &std::path::Path,
    ) -> scimsync::config::IdpConfig {
        let mut c = self.base_config(name, groups);
        c.client_id = Some(CLIENT_ID.into());
        c.private_key_file = Some(key_file.to_owned());
        c.private_key_id = Some(KEY_ID.into());
        c
    }

    /// An `[[idp]]` using the SSWS API token (which the mock then accepts).
    pub fn ssws_config(&self, name: &str, groups: &[&str]) -> scimsync::config::IdpConfig {
        self.faults.accept_api_token(API_TOKEN);
        let mut c = self.base_config(name, groups);
        c.api_token = Some(API_TOKEN.into());
        c
    }

    fn base_config(&self, name: &str, groups: &[&str]) -> scimsync::config::IdpConfig {
        let mut c = scimsync::config::IdpConfig::new(name, scimsync::config::IdpKind::Okta);
        c.domain = Some("example.okta.com".into());
        c.api_base_url = Some(self.base_url.clone());
        c.groups = groups.iter().map(|g| g.to_string()).collect();
        c.max_retries = Some(3);
        c.retry_backoff_ms = Some(50);
        c
    }
}

async fn token(State(s): State<AppState>, Form(form): Form<HashMap<String, String>>) -> Response {
    let audience = format!("{}/oauth2/v1/token", s.base.lock().unwrap());
    let f = |k: &str| kit::form_value(&form, k);
    let claims = kit::verify_assertion(client_key(), f("client_assertion"), &audience);
    let ok = f("grant_type") == "client_credentials"
        && f("scope") == SCOPES
        && f("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        && claims.as_ref().is_some_and(|c| {
            c["iss"] == CLIENT_ID && c["sub"] == CLIENT_ID && c["jti"].is_string()
        });
    if !ok {
        return kit::invalid_client("The client_assertion signature is invalid.");
    }
    s.faults
        .grant(3600, json!({"token_type": "Bearer", "scope": SCOPES}))
}

/// One page of `items` (ids in `id`), Okta's way: `Link` headers for self and next.
fn page(s: &AppState, path: &str, items: Vec<Value>, q: &HashMap<String, String>) -> Response {
    let base = s.base.lock().unwrap().clone();
    paging::link_header(&base, path, items, q, s.page_size)
}

fn group_json(g: &super::Group) -> Value {
    json!({
        "id": g.id,
        "created": "2024-01-10T10:00:00.000Z",
        "lastUpdated": "2024-01-10T10:00:00.000Z",
        "lastMembershipUpdated": "2024-02-01T10:00:00.000Z",
        "objectClass": ["okta:user_group"],
        "type": if g.name == "Everyone" { "BUILT_IN" } else { "OKTA_GROUP" },
        "profile": {"name": g.name, "description": null},
        "_links": {},
    })
}

fn okta_not_found(what: &str) -> Response {
    kit::not_found(json!({"errorCode": "E0000007",
        "errorSummary": format!("Not found: Resource not found: {what} (User)"),
        "errorLink": "E0000007", "errorId": "oae2", "errorCauses": []}))
}

async fn list_groups(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items = s
        .dir
        .lock()
        .unwrap()
        .groups
        .iter()
        .map(group_json)
        .collect();
    page(&s, uri.path(), items, &q)
}

async fn group_users(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items = {
        let dir = s.dir.lock().unwrap();
        match dir.group(&id) {
            Some(g) => dir.members_json(g),
            None => return okta_not_found(&id),
        }
    };
    page(&s, uri.path(), items, &q)
}

fn find(dir: &Dir, key: &str) -> Option<Value> {
    dir.users.get(key).cloned().or_else(|| {
        dir.users
            .values()
            .find(|u| {
                u["profile"]["login"]
                    .as_str()
                    .is_some_and(|l| l.eq_ignore_ascii_case(key))
            })
            .cloned()
    })
}

async fn get_user(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let found = find(&s.dir.lock().unwrap(), &id);
    match found {
        Some(u) => Json(u).into_response(),
        None => okta_not_found(&id),
    }
}

async fn user_groups(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items = {
        let dir = s.dir.lock().unwrap();
        let Some(u) = find(&dir, &id) else {
            return okta_not_found(&id);
        };
        let uid = u["id"].as_str().unwrap_or_default().to_owned();
        dir.groups_of(&uid).iter().map(group_json).collect()
    };
    page(&s, uri.path(), items, &q)
}
