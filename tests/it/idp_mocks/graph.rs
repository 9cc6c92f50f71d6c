//! A mock Microsoft Graph (v1.0) and Entra token endpoint.

use super::kit::{self, paging, serve_idp};
use super::Faults;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub const TENANT: &str = "contoso.onmicrosoft.com";
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_SECRET: &str = "graph-client-secret-for-tests";

#[derive(Default)]
pub struct Directory {
    /// id → (displayName)
    pub groups: BTreeMap<String, String>,
    /// group id → member ids (users, and other object ids that are not users)
    pub members: HashMap<String, Vec<String>>,
    /// id → Graph user JSON
    pub users: BTreeMap<String, Value>,
    /// ids of members that are devices, not users
    pub devices: Vec<String>,
    /// Every change since the tenant was set up, in order: what delta tokens count.
    pub changes: Vec<Change>,
    /// Delta tokens of an earlier generation are refused, as Graph refuses links
    /// older than their lifetime.
    pub delta_generation: u64,
    /// How an expired delta token is refused: 410 Gone, or (Graph's answer for
    /// directory objects) 400 `syncStateNotFound`.
    pub expired_with_400: bool,
}

/// One change to the directory, as delta queries report it (the final state of what
/// changed is read from the directory when the delta is asked for).
#[derive(Debug, Clone)]
pub enum Change {
    /// `member` joined or left `group`.
    Member { group: String, member: String },
    /// A group was created, renamed or deleted.
    Group(String),
    /// A user's details changed, or the user was deleted.
    User(String),
}

pub struct GraphMock {
    pub base_url: String,
    pub dir: Arc<Mutex<Directory>>,
    pub faults: Arc<Faults>,
}

#[derive(Clone)]
struct AppState {
    dir: Arc<Mutex<Directory>>,
    faults: Arc<Faults>,
    /// Items per page (Graph's $top is honoured up to this).
    page_size: usize,
    base: Arc<Mutex<String>>,
}

impl GraphMock {
    /// A tenant with five users and five groups:
    /// LLM Users (alice, bob, carol, dave [disabled], a device), LLM Admins (alice),
    /// Sales (bob, eve), Production LLM Evals Group (carol, eve), Finance (nobody).
    pub async fn start() -> Self {
        Self::start_with(standard_directory(), 2).await
    }

    pub async fn start_with(dir: Directory, page_size: usize) -> Self {
        let dir = Arc::new(Mutex::new(dir));
        let faults = Faults::new(super::Flavor::Graph);
        let base = Arc::new(Mutex::new(String::new()));
        let state = AppState {
            dir: dir.clone(),
            faults: faults.clone(),
            page_size,
            base: base.clone(),
        };
        let token_route = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(state.clone());
        let api = Router::new()
            .route("/v1.0/groups", get(list_groups))
            .route(
                "/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user",
                get(group_members),
            )
            .route("/v1.0/groups/delta", get(groups_delta))
            .route("/v1.0/users/delta", get(users_delta))
            .route(
                "/v1.0/groups/{id}/members/microsoft.graph.group",
                get(group_groups),
            )
            .route("/v1.0/users", get(filter_users))
            .route("/v1.0/users/{id}", get(get_user))
            .route(
                "/v1.0/users/{id}/transitiveMemberOf/microsoft.graph.group",
                get(user_groups),
            )
            .with_state(state);
        let base_url = serve_idp(token_route, api, &faults).await;
        *base.lock().unwrap() = base_url.clone();
        Self {
            base_url,
            dir,
            faults,
        }
    }

    /// An `[[idp]]` for this mock managing `groups`.
    pub fn config(&self, name: &str, groups: &[&str]) -> scimsync::config::IdpConfig {
        let mut c = scimsync::config::IdpConfig::new(name, scimsync::config::IdpKind::Entra);
        c.tenant_id = Some(TENANT.into());
        c.client_id = Some(CLIENT_ID.into());
        c.client_secret = Some(CLIENT_SECRET.into());
        c.login_url = Some(self.base_url.clone());
        c.api_base_url = Some(format!("{}/v1.0", self.base_url));
        c.groups = groups.iter().map(|g| g.to_string()).collect();
        c.max_retries = Some(3);
        c.retry_backoff_ms = Some(50);
        c
    }

    /// A config file in `dir` for the real binary: a SQLite database there and an
    /// `[[idp]] name = "entra"` for this mock, the client secret in a file of its own.
    pub fn write_cli_config(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let secret = dir.join("entra-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[database]
url = "sqlite://{db}"

[[idp]]
name = "entra"
kind = "entra"
tenant_id = "{TENANT}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
login_url = "{base}"
api_base_url = "{base}/v1.0"
groups = ["LLM *"]
"#,
                db = dir.join("scimsync.db").display(),
                secret = secret.display(),
                base = self.base_url,
            ),
        )
        .unwrap();
        config
    }

    /// Puts a user (or a group, nesting it) into a group.
    pub fn add_member(&self, group: &str, user: &str) {
        let mut dir = self.dir.lock().unwrap();
        dir.members
            .entry(group.into())
            .or_default()
            .push(user.into());
        dir.changes.push(Change::Member {
            group: group.into(),
            member: user.into(),
        });
    }

    /// Takes a user out of a group.
    pub fn remove_member(&self, group: &str, user: &str) {
        let mut dir = self.dir.lock().unwrap();
        if let Some(m) = dir.members.get_mut(group) {
            m.retain(|u| u != user);
        }
        dir.changes.push(Change::Member {
            group: group.into(),
            member: user.into(),
        });
    }

    /// Changes one property of a user's Graph JSON.
    pub fn set_user_field(&self, user: &str, field: &str, value: Value) {
        let mut dir = self.dir.lock().unwrap();
        if let Some(u) = dir.users.get_mut(user) {
            u[field] = value;
        }
        dir.changes.push(Change::User(user.into()));
    }

    /// Creates or renames a group.
    pub fn put_group(&self, id: &str, name: &str) {
        let mut dir = self.dir.lock().unwrap();
        dir.groups.insert(id.into(), name.into());
        dir.changes.push(Change::Group(id.into()));
    }

    /// Makes every delta token issued so far unusable.
    pub fn expire_delta_tokens(&self) {
        self.dir.lock().unwrap().delta_generation += 1;
    }
}

pub fn user(id: &str, upn: &str, given: &str, surname: &str, enabled: bool) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.user",
        "id": id, "userPrincipalName": upn, "mail": upn,
        "displayName": format!("{given} {surname}"), "givenName": given, "surname": surname,
        "accountEnabled": enabled,
    })
}

pub fn standard_directory() -> Directory {
    let mut d = Directory::default();
    for (id, upn, g, s, on) in [
        ("u-alice", "alice@contoso.com", "Alice", "Ng", true),
        ("u-bob", "bob@contoso.com", "Bob", "Stone", true),
        ("u-carol", "carol@contoso.com", "Carol", "Diaz", true),
        ("u-dave", "dave@contoso.com", "Dave", "Kim", false),
        ("u-eve", "eve@contoso.com", "Eve", "Moss", true),
    ] {
        d.users.insert(id.into(), user(id, upn, g, s, on));
    }
    for (id, name) in [
        ("g-users", "LLM Users"),
        ("g-admins", "LLM Admins"),
        ("g-sales", "Sales"),
        ("g-evals", "Production LLM Evals Group"),
        ("g-finance", "Finance"),
    ] {
        d.groups.insert(id.into(), name.into());
    }
    d.devices.push("d-printer".into());
    d.members.insert(
        "g-users".into(),
        vec!["u-alice", "u-bob", "u-carol", "u-dave", "d-printer"]
            .into_iter()
            .map(String::from)
            .collect(),
    );
    d.members.insert("g-admins".into(), vec!["u-alice".into()]);
    d.members
        .insert("g-sales".into(), vec!["u-bob".into(), "u-eve".into()]);
    d.members
        .insert("g-evals".into(), vec!["u-carol".into(), "u-eve".into()]);
    d
}

async fn token(
    State(s): State<AppState>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let ok = tenant == TENANT
        && form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        && form.get("scope").map(String::as_str) == Some("https://graph.microsoft.com/.default");
    if !ok {
        return kit::invalid_client("AADSTS7000215: Invalid client secret provided.");
    }
    s.faults.grant(
        3599,
        json!({"token_type": "Bearer", "ext_expires_in": 3599}),
    )
}

/// One page of `items`, Graph's way: an `@odata.nextLink` when more follow.
fn page(s: &AppState, path: &str, items: Vec<Value>, query: &HashMap<String, String>) -> Response {
    let base = s.base.lock().unwrap().clone();
    paging::odata(&base, path, items, query, s.page_size)
}

fn group_json(id: &str, name: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.group", "id": id, "displayName": name})
}

async fn list_groups(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items = {
        let dir = s.dir.lock().unwrap();
        dir.groups.iter().map(|(id, n)| group_json(id, n)).collect()
    };
    page(&s, uri.path(), items, &q)
}

async fn group_members(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        if !dir.groups.contains_key(&id) {
            return kit::not_found(json!({"error": {"code": "Request_ResourceNotFound",
                "message": "Resource does not exist"}}));
        }
        transitive_members(&dir, &id)
            .iter()
            .map(|m| match dir.users.get(m) {
                Some(u) => u.clone(),
                // A device in the group: real Graph drops it because of the cast; the mock
                // keeps it to check that the connector filters by @odata.type too.
                None => json!({"@odata.type": "#microsoft.graph.device", "id": m}),
            })
            .collect()
    };
    page(&s, uri.path(), items, &q)
}

/// The members of a group and of the groups nested in it (not the groups themselves),
/// each once.
fn transitive_members(dir: &Directory, group: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen_groups = vec![group.to_owned()];
    let mut stack = vec![group.to_owned()];
    while let Some(g) = stack.pop() {
        for m in dir.members.get(&g).into_iter().flatten() {
            if dir.groups.contains_key(m) {
                if !seen_groups.contains(m) {
                    seen_groups.push(m.clone());
                    stack.push(m.clone());
                }
            } else if !out.contains(m) {
                out.push(m.clone());
            }
        }
    }
    out
}

fn find_user(dir: &Directory, key: &str) -> Option<Value> {
    dir.users.get(key).cloned().or_else(|| {
        dir.users
            .values()
            .find(|u| {
                u["userPrincipalName"].as_str().map(str::to_lowercase) == Some(key.to_lowercase())
            })
            .cloned()
    })
}

async fn get_user(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let found = find_user(&s.dir.lock().unwrap(), &id);
    match found {
        Some(u) => Json(u).into_response(),
        None => kit::not_found(json!({"error": {"code": "Request_ResourceNotFound",
            "message": format!("Resource '{id}' does not exist")}})),
    }
}

async fn filter_users(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mail = q
        .get("$filter")
        .and_then(|f| f.strip_prefix("mail eq '"))
        .and_then(|f| f.strip_suffix('\''))
        .map(str::to_lowercase);
    let items: Vec<Value> = s
        .dir
        .lock()
        .unwrap()
        .users
        .values()
        .filter(|u| u["mail"].as_str().map(str::to_lowercase) == mail)
        .cloned()
        .collect();
    Json(json!({"value": items})).into_response()
}

async fn user_groups(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        let Some(user) = find_user(&dir, &id) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let uid = user["id"].as_str().unwrap_or_default().to_owned();
        let mut items: Vec<Value> = dir
            .groups
            .iter()
            .filter(|(g, _)| dir.members.get(*g).is_some_and(|m| m.contains(&uid)))
            .map(|(g, n)| group_json(g, n))
            .collect();
        // A directory role the user holds: real Graph drops it because of the cast.
        items.push(
            json!({"@odata.type": "#microsoft.graph.directoryRole", "id": "r-1",
            "displayName": "LLM Global Reader"}),
        );
        items
    };
    page(&s, uri.path(), items, &q)
}

/// The Graph type of a directory object id.
fn type_of(dir: &Directory, id: &str) -> &'static str {
    if dir.users.contains_key(id) {
        "#microsoft.graph.user"
    } else if dir.groups.contains_key(id) {
        "#microsoft.graph.group"
    } else {
        "#microsoft.graph.device"
    }
}

/// A group in a delta, its member changes split over several entries of at most
/// `chunk` members, as Graph splits large member lists.
fn delta_group_items(
    dir: &Directory,
    id: &str,
    with_name: bool,
    members: &[String],
    chunk: usize,
) -> Vec<Value> {
    let Some(name) = dir.groups.get(id) else {
        return vec![json!({"id": id, "@removed": {"reason": "changed"}})];
    };
    let current = dir.members.get(id);
    let entries: Vec<Value> = members
        .iter()
        .map(|m| {
            let mut e = json!({"@odata.type": type_of(dir, m), "id": m});
            if !current.is_some_and(|c| c.contains(m)) {
                e["@removed"] = json!({"reason": "deleted"});
            }
            e
        })
        .collect();
    let mut items = Vec::new();
    let mut chunks: Vec<&[Value]> = entries.chunks(chunk.max(1)).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for part in chunks {
        let mut item = json!({"@odata.type": "#microsoft.graph.group", "id": id,
            "members@delta": part});
        if with_name {
            item["displayName"] = json!(name);
        }
        items.push(item);
    }
    items
}

fn user_delta_item(dir: &Directory, id: &str) -> Value {
    match dir.users.get(id) {
        Some(u) => u.clone(),
        None => json!({"id": id, "@removed": {"reason": "changed"}}),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Collection {
    Groups,
    Users,
}

/// A delta round: `$deltatoken=latest` (no data, a link for "from now on"), no token
/// (the whole collection), or a token (what changed since it, each object once with
/// its final state), paged by `$skiptoken` and ending with an `@odata.deltaLink`.
fn delta(s: &AppState, path: &str, q: &HashMap<String, String>, kind: Collection) -> Response {
    let dir = s.dir.lock().unwrap();
    let generation = dir.delta_generation;
    let base = s.base.lock().unwrap().clone();
    let expired = || {
        if dir.expired_with_400 {
            (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "syncStateNotFound",
                "message": "The sync state generation is not found. The delta token is expired and data must be synchronized again."}})))
                .into_response()
        } else {
            (StatusCode::GONE, Json(json!({"error": {"code": "resyncRequired",
                "message": "Resync required. Replace any local cached data with a full delta round."}})))
                .into_response()
        }
    };
    let delta_link = |to: usize| json!(format!("{base}{path}?$deltatoken={generation}-{to}"));
    // (from: None for the whole collection, to, offset)
    let (from, to, offset): (Option<usize>, usize, usize) = if let Some(skip) = q.get("$skiptoken")
    {
        let parts: Vec<&str> = skip.split('-').collect();
        if parts.len() != 4 || parts[0] != generation.to_string() {
            return expired();
        }
        (
            parts[1].parse().ok(),
            parts[2].parse().unwrap_or(0),
            parts[3].parse().unwrap_or(0),
        )
    } else if let Some(token) = q.get("$deltatoken") {
        if token == "latest" {
            return Json(json!({"value": [], "@odata.deltaLink": delta_link(dir.changes.len())}))
                .into_response();
        }
        match token.split_once('-') {
            Some((g, pos)) if g == generation.to_string() => {
                (Some(pos.parse().unwrap_or(0)), dir.changes.len(), 0)
            }
            _ => return expired(),
        }
    } else {
        (None, dir.changes.len(), 0)
    };
    let chunk = s.page_size;
    let items: Vec<Value> = match (kind, from) {
        (Collection::Groups, None) => dir
            .groups
            .keys()
            .flat_map(|g| {
                let members = dir.members.get(g).cloned().unwrap_or_default();
                delta_group_items(&dir, g, true, &members, chunk)
            })
            .collect(),
        (Collection::Users, None) => dir.users.values().cloned().collect(),
        (Collection::Groups, Some(from)) => {
            // Each changed group once, in the order first changed, with its changed members.
            let mut order: Vec<String> = Vec::new();
            let mut touched: HashMap<String, (bool, Vec<String>)> = HashMap::new();
            for change in dir.changes.get(from..to).unwrap_or_default() {
                let (group, member) = match change {
                    Change::Member { group, member } => (group, Some(member)),
                    Change::Group(group) => (group, None),
                    Change::User(_) => continue,
                };
                let entry = touched.entry(group.clone()).or_insert_with(|| {
                    order.push(group.clone());
                    (false, Vec::new())
                });
                match member {
                    Some(m) if !entry.1.contains(m) => entry.1.push(m.clone()),
                    Some(_) => {}
                    None => entry.0 = true,
                }
            }
            order
                .iter()
                .flat_map(|g| {
                    let (renamed, members) = &touched[g];
                    delta_group_items(&dir, g, *renamed, members, chunk)
                })
                .collect()
        }
        (Collection::Users, Some(from)) => {
            let mut seen: Vec<&String> = Vec::new();
            for change in dir.changes.get(from..to).unwrap_or_default() {
                if let Change::User(u) = change {
                    if !seen.contains(&u) {
                        seen.push(u);
                    }
                }
            }
            seen.into_iter().map(|u| user_delta_item(&dir, u)).collect()
        }
    };
    let end = (offset + s.page_size).min(items.len());
    let mut body = json!({"value": items[offset.min(items.len())..end].to_vec()});
    if end < items.len() {
        let from = from.map(|f| f.to_string()).unwrap_or_else(|| "all".into());
        body["@odata.nextLink"] = json!(format!(
            "{base}{path}?$skiptoken={generation}-{from}-{to}-{end}"
        ));
    } else {
        body["@odata.deltaLink"] = delta_link(to);
    }
    Json(body).into_response()
}

async fn groups_delta(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    delta(&s, uri.path(), &q, Collection::Groups)
}

async fn users_delta(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    delta(&s, uri.path(), &q, Collection::Users)
}

/// The groups directly in a group (`/groups/{id}/members/microsoft.graph.group`).
async fn group_groups(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let items: Vec<Value> = {
        let dir = s.dir.lock().unwrap();
        dir.members
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|m| dir.groups.get(m).map(|n| group_json(m, n)))
            .collect()
    };
    page(&s, uri.path(), items, &q)
}
