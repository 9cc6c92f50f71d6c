//! The benchmark baseline: a minimal axum server that answers the SCIM requests of the
//! benchmark the cheapest way that is still honest. GETs answer fixed documents held in
//! memory; POST /Users and PATCH /Groups/{id} parse the JSON body and commit one SQLite
//! insert each (WAL, synchronous=NORMAL: the same durability settings as scimsync).
//! It stands for what "HTTP plus one durable write" costs on the machine at hand.
//!
//! Usage: scimsync-bench-baseline ADDR DATABASE_FILE

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, patch},
    Router,
};
use rusqlite::Connection;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

const SCIM_JSON: &str = "application/scim+json";

struct AppState {
    user: Bytes,
    list_one: Bytes,
    list_page: Bytes,
    db: Mutex<Connection>,
}

fn user_doc(i: usize) -> Value {
    let id = format!("2819c223-7f76-453a-919d-{i:012x}");
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": id,
        "externalId": format!("ext-{i}"),
        "userName": format!("user{i:06}@example.com"),
        "name": {"givenName": "Bench", "familyName": format!("User {i}"), "formatted": format!("Bench User {i}")},
        "displayName": format!("Bench User {i}"),
        "emails": [{"value": format!("user{i:06}@example.com"), "type": "work", "primary": true}],
        "active": true,
        "meta": {
            "resourceType": "User",
            "created": "2026-01-01T00:00:00Z",
            "lastModified": "2026-01-01T00:00:00Z",
            "location": format!("http://127.0.0.1/scim/v2/Users/{id}"),
            "version": "W/\"1\""
        }
    })
}

fn list(n: usize, total: usize, start: usize) -> Bytes {
    let resources: Vec<Value> = (0..n).map(|i| user_doc(start + i)).collect();
    Bytes::from(
        serde_json::to_vec(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": n,
            "Resources": resources
        }))
        .unwrap(),
    )
}

fn scim(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, SCIM_JSON)], body).into_response()
}

fn error(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.as_u16().to_string(),
        "detail": detail
    });
    scim(status, Bytes::from(body.to_string()))
}

async fn get_user(State(s): State<Arc<AppState>>, Path(_id): Path<String>) -> Response {
    scim(StatusCode::OK, s.user.clone())
}

/// A filter answers a one-resource ListResponse; a page (count > 1) a 100-resource one.
async fn list_users(State(s): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let paged = q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv.starts_with("count=") && kv != "count=1");
    scim(StatusCode::OK, if paged { s.list_page.clone() } else { s.list_one.clone() })
}

/// Parses the body, commits one row, answers the resource.
async fn post_user(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let mut doc: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return error(StatusCode::BAD_REQUEST, "invalid JSON"),
    };
    let Some(user_name) = doc.get("userName").and_then(Value::as_str).map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "userName is required");
    };
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("b5e1f0a0-0000-4000-8000-{n:012x}");
    let state = s.clone();
    let id2 = id.clone();
    let stored = doc.to_string();
    let result = tokio::task::spawn_blocking(move || {
        let db = state.db.lock().unwrap();
        db.execute(
            "INSERT INTO users (id, user_name, doc) VALUES (?1, lower(?2), ?3)",
            (&id2, &user_name, &stored),
        )
    })
    .await
    .unwrap();
    match result {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return error(StatusCode::CONFLICT, "userName is already taken")
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
    doc["id"] = Value::String(id.clone());
    doc["meta"] = json!({"resourceType": "User", "location": format!("/scim/v2/Users/{id}"), "version": "W/\"1\""});
    scim(StatusCode::CREATED, Bytes::from(serde_json::to_vec(&doc).unwrap()))
}

/// Parses the PatchOp, commits one membership row per member value, answers 204.
async fn patch_group(
    State(s): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Bytes,
) -> Response {
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return error(StatusCode::BAD_REQUEST, "invalid JSON"),
    };
    let mut members = Vec::new();
    for op in doc["Operations"].as_array().into_iter().flatten() {
        for m in op["value"].as_array().into_iter().flatten() {
            if let Some(v) = m["value"].as_str() {
                members.push(v.to_owned());
            }
        }
    }
    let state = s.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut db = state.db.lock().unwrap();
        let tx = db.transaction()?;
        for m in &members {
            tx.execute(
                "INSERT OR IGNORE INTO memberships (group_id, user_id) VALUES (?1, ?2)",
                (&group, m),
            )?;
        }
        tx.commit()
    })
    .await
    .unwrap();
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7650".into());
    let path = args.next().unwrap_or_else(|| "baseline.db".into());
    let db = Connection::open(&path).expect("open database");
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 10000;
         CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, user_name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS memberships (group_id TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (group_id, user_id));",
    )
    .expect("create schema");
    let state = Arc::new(AppState {
        user: Bytes::from(serde_json::to_vec(&user_doc(1)).unwrap()),
        list_one: list(1, 1, 1),
        list_page: list(100, 100_000, 50_001),
        db: Mutex::new(db),
    });
    let app = Router::new()
        .route("/scim/v2/Users", get(list_users).post(post_user))
        .route("/scim/v2/Users/{id}", get(get_user))
        .route("/scim/v2/Groups/{id}", patch(patch_group))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("baseline listening on {addr}");
    axum::serve(listener, app).await.expect("serve");
}
