//! A local mock of Microsoft Graph for the pull benchmark (scripts/bench.sh): serves a
//! snapshot file (benches/gen_snapshot.py) the way Graph serves a directory.
//!
//! - POST /{tenant}/oauth2/v2.0/token: a client-credentials token;
//! - GET /v1.0/groups: the groups, `$top` (at most 999) per page, `@odata.nextLink` paging;
//! - GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user: the members, likewise;
//! - GET /v1.0/users/{id}/transitiveMemberOf/microsoft.graph.group: a user's groups.
//!
//! Pages are assembled from user JSON fragments rendered once at start, so the mock costs
//! little next to the client it serves. It counts requests and answers them at /stats.
//!
//! Usage: mock_graph SNAPSHOT.json ADDR

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Directory {
    base: String,
    /// Rendered `{"@odata.type":"#microsoft.graph.user",...}` per user index.
    users: Vec<String>,
    user_index: HashMap<String, usize>,
    /// (id, rendered group, member user indexes)
    groups: Vec<(String, String, Vec<usize>)>,
    group_index: HashMap<String, usize>,
    requests: AtomicU64,
    tokens: AtomicU64,
}

/// One page of `total` items, where `item(i)` renders the i-th: `$top` (at most 999)
/// from `$skiptoken` (an offset), with an `@odata.nextLink` when more follow.
fn page<'a>(
    total: usize,
    item: impl Fn(usize) -> &'a str,
    query: &HashMap<String, String>,
    next_base: &str,
) -> Response {
    let top: usize = query
        .get("$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(100)
        .clamp(1, 999);
    let skip: usize = query.get("$skiptoken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let skip = skip.min(total);
    let end = (skip + top).min(total);
    let mut body = String::with_capacity(256 + (end - skip) * 260);
    body.push_str("{\"@odata.context\":\"https://graph.microsoft.com/v1.0/$metadata#directoryObjects\",");
    if end < total {
        let mut kept: Vec<(&String, &String)> =
            query.iter().filter(|(k, _)| k.as_str() != "$skiptoken").collect();
        kept.sort();
        let mut url = url_encode_query(&kept);
        if !url.is_empty() {
            url.push('&');
        }
        url.push_str(&format!("$skiptoken={end}"));
        body.push_str(&format!("\"@odata.nextLink\":\"{next_base}?{url}\","));
    }
    body.push_str("\"value\":[");
    for i in skip..end {
        if i > skip {
            body.push(',');
        }
        body.push_str(item(i));
    }
    body.push_str("]}");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn url_encode_query(pairs: &[(&String, &String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'$' | b',' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn token(State(d): State<Arc<Directory>>) -> Response {
    d.tokens.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                      "access_token": "mock-graph-access-token"}))
    .into_response()
}

async fn list_groups(State(d): State<Arc<Directory>>, Query(q): Query<HashMap<String, String>>) -> Response {
    d.requests.fetch_add(1, Ordering::Relaxed);
    page(d.groups.len(), |i| d.groups[i].1.as_str(), &q, &format!("{}/groups", d.base))
}

async fn members(
    State(d): State<Arc<Directory>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    d.requests.fetch_add(1, Ordering::Relaxed);
    let Some(&g) = d.group_index.get(&id) else {
        return (StatusCode::NOT_FOUND, "{\"error\":{\"code\":\"Request_ResourceNotFound\"}}").into_response();
    };
    let all = &d.groups[g].2;
    let base = format!("{}/groups/{id}/transitiveMembers/microsoft.graph.user", d.base);
    page(all.len(), |i| d.users[all[i]].as_str(), &q, &base)
}

async fn member_of(State(d): State<Arc<Directory>>, Path(id): Path<String>) -> Response {
    d.requests.fetch_add(1, Ordering::Relaxed);
    let Some(&u) = d.user_index.get(&id) else {
        return (StatusCode::NOT_FOUND, "{}").into_response();
    };
    let groups: Vec<&str> = d
        .groups
        .iter()
        .filter(|g| g.2.contains(&u))
        .map(|g| g.1.as_str())
        .collect();
    let body = format!("{{\"value\":[{}]}}", groups.join(","));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn stats(State(d): State<Arc<Directory>>) -> Response {
    axum::Json(json!({"requests": d.requests.load(Ordering::Relaxed),
                      "tokens": d.tokens.load(Ordering::Relaxed)}))
    .into_response()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: mock_graph SNAPSHOT.json ADDR");
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7660".into());
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read snapshot")).expect("parse snapshot");
    let base = format!("http://{addr}/v1.0");
    let mut users = Vec::new();
    let mut user_index = HashMap::new();
    for u in snapshot["users"].as_array().expect("users") {
        let id = u["external_id"].as_str().unwrap().to_owned();
        let name = &u["user_name"];
        let rendered = json!({
            "@odata.type": "#microsoft.graph.user",
            "id": id,
            "userPrincipalName": name,
            "mail": u.get("email").unwrap_or(name),
            "displayName": u["display_name"],
            "givenName": u["given_name"],
            "surname": u["family_name"],
            "accountEnabled": u.get("active").and_then(Value::as_bool).unwrap_or(true),
        })
        .to_string();
        user_index.insert(id, users.len());
        users.push(rendered);
    }
    let mut groups = Vec::new();
    let mut group_index = HashMap::new();
    for g in snapshot["groups"].as_array().expect("groups") {
        let id = g["external_id"].as_str().unwrap().to_owned();
        let rendered = json!({"@odata.type": "#microsoft.graph.group", "id": id,
                              "displayName": g["display_name"]})
        .to_string();
        let members: Vec<usize> = g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().and_then(|m| user_index.get(m)).copied())
            .collect();
        group_index.insert(id.clone(), groups.len());
        groups.push((id, rendered, members));
    }
    let memberships: usize = groups.iter().map(|g| g.2.len()).sum();
    eprintln!(
        "mock Graph on {base}: {} users, {} groups, {memberships} memberships",
        users.len(),
        groups.len()
    );
    let dir = Arc::new(Directory {
        base,
        users,
        user_index,
        groups,
        group_index,
        requests: AtomicU64::new(0),
        tokens: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/groups", get(list_groups))
        .route("/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user", get(members))
        .route("/v1.0/users/{id}/transitiveMemberOf/microsoft.graph.group", get(member_of))
        .route("/stats", get(stats))
        .with_state(dir);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
