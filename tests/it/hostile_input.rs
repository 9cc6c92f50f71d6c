//! Malformed and hostile requests, table-driven: each gets its precise status and
//! scimType in the RFC 7644 error envelope, and the database is exactly as it was
//! afterwards (a logical dump of every row of every table, compared after each case).

use crate::common;

use common::{TestApp, SCIM_JSON};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{AnyPool, Row};

const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

// ---------------------------------------------------------------------------
// The logical dump

/// Every row of every table, each column as text, rows in a total order; the only
/// column left out is scim_tokens.last_used, which every authenticated request sets.
async fn dump(pool: &AnyPool) -> Vec<String> {
    let postgres = common::postgres_server().is_some();
    let list_tables = if postgres {
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY 1"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' ORDER BY 1"
    };
    let tables: Vec<String> = sqlx::query(list_tables)
        .fetch_all(pool)
        .await
        .expect("tables listed")
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    assert!(tables.iter().any(|t| t == "users"), "tables: {tables:?}");

    let mut out = Vec::new();
    for table in tables {
        let list_columns = if postgres {
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position"
        } else {
            "SELECT name FROM pragma_table_info($1) ORDER BY cid"
        };
        let columns: Vec<String> = sqlx::query(list_columns)
            .bind(table.clone())
            .fetch_all(pool)
            .await
            .expect("columns listed")
            .iter()
            .map(|row| row.get::<String, _>(0))
            .filter(|c| !(table == "scim_tokens" && c == "last_used"))
            .collect();
        let select = columns
            .iter()
            .map(|c| {
                if postgres {
                    format!("CAST(\"{c}\" AS TEXT)")
                } else {
                    // quote() is exact for every storage class, blobs included.
                    format!("quote(\"{c}\")")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let order = (1..=columns.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {select} FROM \"{table}\" ORDER BY {order}"
        ))
        .fetch_all(pool)
        .await
        .expect("rows read");
        for row in rows {
            let values: Vec<String> = (0..columns.len())
                .map(|i| match row.get::<Option<String>, _>(i) {
                    Some(v) => format!("{v:?}"),
                    None => "NULL".into(),
                })
                .collect();
            out.push(format!("{table}: {}", values.join(" | ")));
        }
    }
    out
}

async fn dump_pool(app: &TestApp) -> AnyPool {
    sqlx::any::install_default_drivers();
    let url = &app.config.database.url;
    let url = match url.strip_prefix("sqlite://") {
        Some(path) => format!("sqlite://{path}?mode=ro"),
        None => url.clone(),
    };
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("dump connection")
}

// ---------------------------------------------------------------------------
// The table

enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

struct Case {
    name: String,
    method: Method,
    /// Relative to /scim/v2, query string already encoded.
    path: String,
    body: Body,
    content_type: Option<&'static str>,
    if_match: Option<String>,
    token: Option<String>,
    status: u16,
    scim_type: Option<&'static str>,
    /// For 200 list responses: the expected totalResults.
    total: Option<u64>,
    /// For 200 list responses: the expected number of Resources.
    page: Option<usize>,
}

fn case(name: &str, method: Method, path: impl Into<String>) -> Case {
    Case {
        name: name.into(),
        method,
        path: path.into(),
        body: Body::None,
        content_type: None,
        if_match: None,
        token: None,
        status: 0,
        scim_type: None,
        total: None,
        page: None,
    }
}

impl Case {
    fn json(mut self, body: Value) -> Self {
        self.body = Body::Json(body);
        self.content_type = Some(SCIM_JSON);
        self
    }
    fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Raw(body.into());
        self.content_type = Some(SCIM_JSON);
        self
    }
    fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }
    fn if_match(mut self, tag: &str) -> Self {
        self.if_match = Some(tag.into());
        self
    }
    fn token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }
    /// An error answer: status and scimType (None: the envelope has no scimType).
    fn fails(mut self, status: u16, scim_type: Option<&'static str>) -> Self {
        self.status = status;
        self.scim_type = scim_type;
        self
    }
    /// A list answer: 200 with this many matches in total and on the page.
    fn lists(mut self, total: u64, page: usize) -> Self {
        self.status = 200;
        self.total = Some(total);
        self.page = Some(page);
        self
    }
}

/// A query string value, percent-encoded.
fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn filter(expression: &str) -> String {
    format!("/Users?filter={}", q(expression))
}

fn patch(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

fn deep_json(levels: usize) -> String {
    format!(
        "{{\"userName\":\"deep\",\"x\":{}{}}}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

struct Seeded {
    alice: String,
    bob: String,
    group: String,
    users: u64,
}

/// Three users, a group with two members and an API key, created as an IdP would.
async fn seed(app: &TestApp) -> Seeded {
    let mut ids = Vec::new();
    for name in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        let (status, user) = app
            .scim_json(
                Method::POST,
                "/Users",
                Some(
                    json!({"userName": name, "externalId": format!("ext-{name}"),
                            "emails": [{"value": name, "type": "work", "primary": true}]}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        ids.push(user["id"].as_str().expect("id").to_owned());
    }
    let (status, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "LLM Users",
                        "members": [{"value": ids[0]}, {"value": ids[1]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let alice = uuid::Uuid::parse_str(&ids[0]).expect("uuid");
    app.new_api_key(alice, None).await;
    Seeded {
        alice: ids[0].clone(),
        bob: ids[1].clone(),
        group: group["id"].as_str().expect("id").to_owned(),
        users: 3,
    }
}

fn cases(s: &Seeded, sso_token: &str) -> Vec<Case> {
    let alice = format!("/Users/{}", s.alice);
    let group = format!("/Groups/{}", s.group);
    let unknown = uuid::Uuid::new_v4().to_string();
    let stale = "W/\"999\"";
    let n = s.users;
    let huge_string = "x".repeat(300_000);
    let oversized = format!(
        "{{\"userName\":\"big\",\"title\":\"{}\"}}",
        "a".repeat(1024 * 1024 + 10)
    );
    let many_members: Vec<Value> = (0..2_000)
        .map(|i| json!({"value": format!("x{i}")}))
        .collect();
    let many_emails: Vec<Value> = (0..20_000)
        .map(|i| json!({"value": format!("e{i}@example.com")}))
        .collect();
    let many_ops: Vec<Value> = (0..5_000)
        .map(|i| json!({"op": "add", "path": "title", "value": format!("t{i}")}))
        .chain([json!({"op": "replace", "path": "id", "value": "mine"})])
        .collect();
    let sql = "'; DROP TABLE users; --";

    vec![
        // Broken and wrongly typed bodies
        case("truncated JSON", Method::POST, "/Users")
            .raw(r#"{"userName": "x""#)
            .fails(400, Some("invalidSyntax")),
        case("empty body", Method::POST, "/Users")
            .raw("")
            .fails(400, Some("invalidSyntax")),
        case("whitespace body", Method::POST, "/Users")
            .raw("  \n ")
            .fails(400, Some("invalidSyntax")),
        case("trailing garbage after JSON", Method::POST, "/Users")
            .raw(r#"{"userName": "x"} {"#)
            .fails(400, Some("invalidSyntax")),
        case("body is a JSON array", Method::POST, "/Users")
            .json(json!([{"userName": "x"}]))
            .fails(400, Some("invalidSyntax")),
        case("body is a JSON string", Method::POST, "/Users")
            .json(json!("userName"))
            .fails(400, Some("invalidSyntax")),
        case("body is JSON null", Method::POST, "/Users")
            .json(Value::Null)
            .fails(400, Some("invalidSyntax")),
        case("userName is a number", Method::POST, "/Users")
            .json(json!({"userName": 42}))
            .fails(400, Some("invalidValue")),
        case("userName is an object", Method::POST, "/Users")
            .json(json!({"userName": {"$gt": ""}}))
            .fails(400, Some("invalidValue")),
        case("userName is missing", Method::POST, "/Users")
            .json(json!({"displayName": "No Name"}))
            .fails(400, Some("invalidValue")),
        case("userName is blank", Method::POST, "/Users")
            .json(json!({"userName": "   "}))
            .fails(400, Some("invalidValue")),
        case("userName of 300,000 characters", Method::POST, "/Users")
            .json(json!({"userName": huge_string}))
            .fails(400, Some("invalidValue")),
        case("active is neither true nor false", Method::POST, "/Users")
            .json(json!({"userName": "maybe@example.com", "active": "maybe"}))
            .fails(400, Some("invalidValue")),
        case("emails is a string", Method::POST, "/Users")
            .json(json!({"userName": "e@example.com", "emails": "e@example.com"}))
            .fails(400, Some("invalidValue")),
        case("name is an array", Method::POST, "/Users")
            .json(json!({"userName": "n@example.com", "name": ["a"]}))
            .fails(400, Some("invalidValue")),
        case("an email element is a nested array", Method::POST, "/Users")
            .json(json!({"userName": "n@example.com", "emails": [[{"value": "a"}]]}))
            .fails(400, Some("invalidValue")),
        case("unknown schema and no userName", Method::POST, "/Users")
            .json(json!({"schemas": ["urn:evil:2.0:User"], "externalId": "e"}))
            .fails(400, Some("invalidValue")),
        case("JSON nested 10,000 levels deep", Method::POST, "/Users")
            .raw(deep_json(10_000))
            .fails(400, Some("invalidSyntax")),
        case("invalid UTF-8 in a string", Method::POST, "/Users")
            .raw(b"{\"userName\": \"\xff\xfe\"}".to_vec())
            .fails(400, Some("invalidSyntax")),
        case("lone surrogate escape", Method::POST, "/Users")
            .raw(r#"{"userName": "\ud800"}"#)
            .fails(400, Some("invalidSyntax")),
        case("body over the 1 MiB limit", Method::POST, "/Users")
            .raw(oversized)
            .fails(413, None),
        case("20,000 emails and a taken userName", Method::POST, "/Users")
            .json(json!({"userName": "ALICE@example.com", "emails": many_emails}))
            .fails(409, Some("uniqueness")),
        case("userName taken, differing in case", Method::POST, "/Users")
            .json(json!({"userName": "Bob@Example.COM"}))
            .fails(409, Some("uniqueness")),
        // Content types
        case("text/plain body", Method::POST, "/Users")
            .raw(r#"{"userName": "t@example.com"}"#)
            .content_type("text/plain")
            .fails(415, None),
        case("XML body", Method::POST, "/Users")
            .raw("<user><userName>x</userName></user>")
            .content_type("application/xml")
            .fails(415, None),
        case("form-encoded body", Method::POST, "/Groups")
            .raw("displayName=x")
            .content_type("application/x-www-form-urlencoded")
            .fails(415, None),
        // Ids: traversal, injection, garbage
        case("path traversal in a user id", Method::GET, "/Users/..%2F..%2Fetc%2Fpasswd")
            .fails(404, None),
        case("path traversal in a PUT", Method::PUT, "/Users/..%2F..%2Fetc")
            .json(json!({"userName": "t@example.com"}))
            .fails(404, None),
        case("SQL in a user id", Method::DELETE, format!("/Users/{}", q(sql)))
            .fails(404, None),
        case("SQL in a group id", Method::PATCH, format!("/Groups/{}", q("1 OR 1=1")))
            .json(patch(json!([{"op": "add", "path": "members", "value": [{"value": s.bob}]}])))
            .fails(404, None),
        case("NUL byte in an id", Method::GET, "/Users/%00").fails(404, None),
        case("unknown user id", Method::PUT, format!("/Users/{unknown}"))
            .json(json!({"userName": "ghost@example.com"}))
            .fails(404, None),
        case("unknown group id", Method::DELETE, format!("/Groups/{unknown}"))
            .fails(404, None),
        case("a user id used as a group id", Method::GET, format!("/Groups/{}", s.alice))
            .fails(404, None),
        // PATCH
        case("PATCH without Operations", Method::PATCH, alice.clone())
            .json(json!({"schemas": [PATCH_OP]}))
            .fails(400, Some("invalidSyntax")),
        case("Operations is an object", Method::PATCH, alice.clone())
            .json(json!({"Operations": {"op": "add"}}))
            .fails(400, Some("invalidSyntax")),
        case("op is unknown", Method::PATCH, alice.clone())
            .json(patch(json!([{"op": "delete", "path": "title"}])))
            .fails(400, Some("invalidSyntax")),
        case("remove without a path", Method::PATCH, alice.clone())
            .json(patch(json!([{"op": "remove"}])))
            .fails(400, Some("noTarget")),
        case("add without a value", Method::PATCH, alice.clone())
            .json(patch(json!([{"op": "add", "path": "title"}])))
            .fails(400, Some("invalidValue")),
        case("unparseable path", Method::PATCH, alice.clone())
            .json(patch(json!([{"op": "replace", "path": "emails[type eq", "value": "x"}])))
            .fails(400, Some("invalidPath")),
        case("path is a number", Method::PATCH, alice.clone())
            .json(patch(json!([{"op": "replace", "path": 7, "value": "x"}])))
            .fails(400, Some("invalidPath")),
        case("replacing the id", Method::PATCH, alice.clone())
            .json(patch(json!([{"op": "replace", "path": "id", "value": unknown}])))
            .fails(400, Some("mutability")),
        case("5,000 good operations then a bad one", Method::PATCH, alice.clone())
            .json(patch(Value::Array(many_ops)))
            .fails(400, Some("mutability")),
        case("renaming onto a taken userName", Method::PATCH, alice.clone())
            .json(patch(json!([{"op": "replace", "path": "userName", "value": "BOB@example.com"}])))
            .fails(409, Some("uniqueness")),
        case("adding a member that is not an id", Method::PATCH, group.clone())
            .json(patch(json!([{"op": "add", "path": "members", "value": [{"value": "nobody"}]}])))
            .fails(400, Some("invalidValue")),
        case("adding a member that does not exist", Method::PATCH, group.clone())
            .json(patch(json!([{"op": "add", "path": "members", "value": [{"value": unknown}]}])))
            .fails(400, Some("invalidValue")),
        case("a rename plus an unknown member", Method::PATCH, group.clone())
            .json(patch(json!([
                {"op": "replace", "value": {"displayName": "Renamed"}},
                {"op": "add", "path": "members", "value": [{"value": unknown}]}
            ])))
            .fails(400, Some("invalidValue")),
        // If-Match
        case("PATCH with a stale ETag", Method::PATCH, alice.clone())
            .json(patch(json!([{"op": "replace", "path": "displayName", "value": "X"}])))
            .if_match(stale)
            .fails(412, None),
        case("PUT with a stale ETag", Method::PUT, group.clone())
            .json(json!({"displayName": "Other"}))
            .if_match(stale)
            .fails(412, None),
        case("DELETE with a stale ETag", Method::DELETE, alice.clone())
            .if_match(stale)
            .fails(412, None),
        // Groups
        case("group without displayName", Method::POST, "/Groups")
            .json(json!({"members": []}))
            .fails(400, Some("invalidValue")),
        case("members is a number", Method::POST, "/Groups")
            .json(json!({"displayName": "G", "members": 3}))
            .fails(400, Some("invalidValue")),
        case("a member without a value", Method::POST, "/Groups")
            .json(json!({"displayName": "G", "members": [{"display": "x"}]}))
            .fails(400, Some("invalidValue")),
        case("2,000 members that are not ids", Method::POST, "/Groups")
            .json(json!({"displayName": "Huge", "members": many_members}))
            .fails(400, Some("invalidValue")),
        case("PUT replacing members with an unknown id", Method::PUT, group.clone())
            .json(json!({"displayName": "LLM Users", "members": [{"value": unknown}]}))
            .fails(400, Some("invalidValue")),
        // Filters: injection attempts match nothing, malformed ones are refused
        case("quote-escape injection in a filter", Method::GET, filter(r#"userName eq "x\" or 1 eq 1""#))
            .lists(0, 0),
        case("SQL injection in a filter value", Method::GET, filter(&format!("userName eq \"{sql}\"")))
            .lists(0, 0),
        case("OR-true injection in a filter value", Method::GET, filter(r#"userName eq "' OR '1'='1""#))
            .lists(0, 0),
        case("LIKE wildcard % is literal", Method::GET, filter(r#"userName co "%""#))
            .lists(0, 0),
        case("LIKE wildcard _ is literal", Method::GET, filter(r#"userName sw "_""#))
            .lists(0, 0),
        case("backslash in a filter value", Method::GET, filter(r#"displayName co "\\""#))
            .lists(0, 0),
        case("SQL as an attribute name", Method::GET, filter("userName;DROP eq \"x\""))
            .fails(400, Some("invalidFilter")),
        case("unterminated string in a filter", Method::GET, filter(r#"userName eq "abc"#))
            .fails(400, Some("invalidFilter")),
        case("unbalanced parentheses", Method::GET, filter(r#"((userName eq "a")"#))
            .fails(400, Some("invalidFilter")),
        case("unknown operator", Method::GET, filter(r#"userName like "a%""#))
            .fails(400, Some("invalidFilter")),
        case("filter over 16 KiB", Method::GET, filter(&format!("userName eq \"{}\"", "a".repeat(17_000))))
            .fails(400, Some("invalidFilter")),
        case("parentheses nested 200 deep", Method::GET, filter(&format!("{}userName pr{}", "(".repeat(200), ")".repeat(200))))
            .fails(400, Some("invalidFilter")),
        case("a filter on a Group attribute", Method::GET, format!("/Groups?filter={}", q("members.value eq 1 or 1")))
            .fails(400, Some("invalidFilter")),
        case("SearchRequest with a malformed filter", Method::POST, "/Users/.search")
            .json(json!({"schemas": [SEARCH], "filter": "userName eq"}))
            .fails(400, Some("invalidFilter")),
        // Paging
        case("negative startIndex is taken as 1", Method::GET, "/Users?startIndex=-5")
            .lists(n, n as usize),
        case("startIndex beyond any integer", Method::GET, "/Users?startIndex=999999999999999999999999999999")
            .lists(n, 0),
        case("negative count is taken as 0", Method::GET, "/Users?count=-1")
            .lists(n, 0),
        case("enormous count is capped", Method::GET, "/Users?count=99999999999999999999")
            .lists(n, n as usize),
        case("count is not a number", Method::GET, "/Users?count=ten")
            .fails(400, Some("invalidValue")),
        case("startIndex is a float", Method::GET, "/Users?startIndex=1.5")
            .fails(400, Some("invalidValue")),
        case("sortOrder is neither", Method::GET, "/Users?sortOrder=sideways")
            .fails(400, Some("invalidValue")),
        case("SQL in sortBy", Method::GET, format!("/Users?sortBy={}", q("userName; DROP TABLE users")))
            .fails(400, Some("invalidValue")),
        case("SearchRequest with a string count", Method::POST, "/Users/.search")
            .json(json!({"schemas": [SEARCH], "count": [1]}))
            .fails(400, Some("invalidValue")),
        case("SearchRequest with a foreign schema", Method::POST, "/Users/.search")
            .json(json!({"schemas": ["urn:evil"], "filter": "userName pr"}))
            .fails(400, Some("invalidValue")),
        // Bulk
        case("Bulk with broken JSON", Method::POST, "/Bulk")
            .raw(r#"{"Operations": ["#)
            .fails(400, Some("invalidSyntax")),
        case("Bulk over maxOperations", Method::POST, "/Bulk")
            .json(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": (0..1001).map(|i| json!({"method": "POST", "path": "/Users",
                    "bulkId": format!("b{i}"), "data": {"userName": format!("bulk{i}@example.com")}}))
                    .collect::<Vec<_>>()
            }))
            .fails(413, None),
        // Methods, authentication, scope
        case("PUT on ServiceProviderConfig", Method::PUT, "/ServiceProviderConfig")
            .json(json!({}))
            .fails(405, None),
        case("DELETE on the Users collection", Method::DELETE, "/Users").fails(405, None),
        case("unknown schema URI", Method::GET, format!("/Schemas/{}", q("urn:evil:schema")))
            .fails(404, None),
        case("no bearer token", Method::POST, "/Users")
            .json(json!({"userName": "anon@example.com"}))
            .token("")
            .fails(401, None),
        case("a made-up token", Method::DELETE, alice.clone())
            .token("scimsync_0000000000000000000000000000000000000000000")
            .fails(401, None),
        case("SQL as the token", Method::DELETE, alice.clone())
            .token(sql)
            .fails(401, None),
        case("an sso-scope token on SCIM", Method::DELETE, alice.clone())
            .token(sso_token)
            .fails(403, None),
    ]
}

async fn send(app: &TestApp, case: &Case) -> (StatusCode, Value) {
    let mut request = app
        .http
        .request(
            case.method.clone(),
            app.url(&format!("/scim/v2{}", case.path)),
        )
        .header("accept", SCIM_JSON);
    match &case.token {
        None => request = request.bearer_auth(&app.scim_token),
        Some(t) if t.is_empty() => {}
        Some(t) => request = request.bearer_auth(t),
    }
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(tag) = &case.if_match {
        request = request.header("if-match", tag);
    }
    request = match &case.body {
        Body::None => request,
        Body::Json(v) => request.body(v.to_string()),
        Body::Raw(bytes) => request.body(bytes.clone()),
    };
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn check(case: &Case, status: StatusCode, body: &Value) -> Result<(), String> {
    if status.as_u16() != case.status {
        return Err(format!("status {status}, expected {}: {body}", case.status));
    }
    if status.is_success() {
        if let Some(total) = case.total {
            if body["totalResults"] != json!(total) {
                return Err(format!("totalResults, expected {total}: {body}"));
            }
        }
        if let Some(page) = case.page {
            let got = body["Resources"].as_array().map_or(0, Vec::len);
            if got != page {
                return Err(format!("{got} resources, expected {page}: {body}"));
            }
        }
        return Ok(());
    }
    if body["schemas"] != json!([ERROR_SCHEMA]) || body["status"] != json!(case.status.to_string())
    {
        return Err(format!("not the SCIM error envelope: {body}"));
    }
    if body.get("scimType").and_then(Value::as_str) != case.scim_type {
        return Err(format!("scimType, expected {:?}: {body}", case.scim_type));
    }
    Ok(())
}

#[tokio::test]
async fn every_hostile_request_gets_its_precise_error_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let seeded = seed(&app).await;
    let sso = app
        .new_token("sso-hook", scimsync::domain::TokenScope::Sso)
        .await;
    let pool = dump_pool(&app).await;
    let before = dump(&pool).await;
    assert!(before.iter().filter(|r| r.starts_with("users:")).count() == 3);

    let cases = cases(&seeded, &sso);
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let (status, body) = send(&app, case).await;
        if let Err(why) = check(case, status, &body) {
            let mut why = why;
            why.truncate(600);
            failures.push(format!("{}: {why}", case.name));
        }
        let after = dump(&pool).await;
        if after != before {
            let added: Vec<_> = after.iter().filter(|r| !before.contains(r)).collect();
            let removed: Vec<_> = before.iter().filter(|r| !after.contains(r)).collect();
            panic!(
                "{:?} changed the database:\n+ {added:#?}\n- {removed:#?}",
                case.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases answered differently:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Still serving, and the seeded state intact.
    let (status, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["totalResults"], 3);
}

#[tokio::test]
async fn sql_metacharacters_in_every_field_are_stored_and_returned_verbatim() {
    let app = TestApp::spawn().await;
    let nasty = [
        "'; DROP TABLE users; --",
        "\" OR \"\"=\"",
        "%_\\%",
        "Robert'); DELETE FROM memberships;--",
        "1; UPDATE scim_tokens SET revoked = NULL",
    ];
    let mut ids = Vec::new();
    for (i, text) in nasty.iter().enumerate() {
        let body = json!({
            "userName": format!("{text}{i}"),
            "externalId": text,
            "displayName": text,
            "title": text,
            "name": {"givenName": text, "familyName": text},
            "emails": [{"value": text, "type": text, "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
                {"department": text, "manager": {"value": text}}
        });
        let (status, created) = app.scim_json(Method::POST, "/Users", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().expect("id").to_owned();
        let (status, read) = app
            .scim_json(Method::GET, &format!("/Users/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["userName"], format!("{text}{i}"));
        assert_eq!(read["externalId"], *text);
        assert_eq!(read["displayName"], *text);
        assert_eq!(read["title"], *text);
        assert_eq!(read["name"]["familyName"], *text);
        assert_eq!(read["emails"][0]["value"], *text);
        assert_eq!(
            read["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            *text
        );
        // And each is found by an exact filter on it, and only it.
        let response = app
            .scim(Method::GET, "/Users")
            .query(&[(
                "filter",
                format!("externalId eq {}", serde_json::to_string(text).unwrap()),
            )])
            .send()
            .await
            .expect("sent");
        let list: Value = response.json().await.expect("json");
        assert_eq!(list["totalResults"], 1, "{text}: {list}");
        assert_eq!(list["Resources"][0]["id"], id.as_str());
        ids.push(id);
    }
    let (status, group) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": nasty[0], "externalId": nasty[1],
                        "members": ids.iter().map(|id| json!({"value": id})).collect::<Vec<_>>()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["displayName"], nasty[0]);
    assert_eq!(group["members"].as_array().map(Vec::len), Some(nasty.len()));
    let (_, list) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], nasty.len());
    // The SCIM token still works: nothing was revoked or dropped.
    let (status, _) = app.scim_json(Method::GET, "/Groups", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A filter of 1,600 `or`-ed terms is 14 KB, within MAX_FILTER_LEN, and nests no
/// parentheses, so MAX_FILTER_DEPTH does not apply; but the AST is 1,600 levels deep.
/// It must be answered or refused with 400 invalidFilter: never a 500, never a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_of_fifteen_hundred_ored_terms_is_answered_or_refused_never_a_crash() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    for (joiner, term, n) in [(" or ", "id pr", 1_500), (" and ", "userName pr", 1_200)] {
        let expression = vec![term; n].join(joiner);
        let response = app
            .scim(Method::GET, "/Users")
            .query(&[("filter", &expression)])
            .send()
            .await
            .expect("the server answers");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        match status {
            StatusCode::OK => assert_eq!(body["totalResults"], 3, "{body}"),
            StatusCode::BAD_REQUEST => assert_eq!(body["scimType"], "invalidFilter", "{body}"),
            other => panic!("{n} terms joined by {joiner:?}: {other} {body}"),
        }
    }
}

/// A /Groups body at the 1 MiB limit carries tens of thousands of members; reading
/// them must take linear time, or one request pins a worker for minutes.
#[tokio::test]
async fn twenty_thousand_members_in_one_body_are_read_in_linear_time() {
    let app = TestApp::spawn().await;
    // As many as fit under the 1 MiB body limit.
    let members: Vec<Value> = (0..20_000)
        .map(|_| json!({"value": uuid::Uuid::new_v4().to_string()}))
        .collect();
    let started = std::time::Instant::now();
    let (status, body) = app
        .scim_json(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "Big", "members": members})),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["scimType"], "invalidValue");
    // Quadratic de-duplication took minutes here; linear takes milliseconds. The bound
    // is far above any machine's noise.
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
}
