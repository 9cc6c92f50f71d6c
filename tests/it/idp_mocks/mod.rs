//! Mock IdP servers for the connector and sign-in tests: axum apps on port 0 that
//! answer like the real APIs (token endpoint, paging, throttling, expiring tokens,
//! server errors), with knobs to make them misbehave and counters to check on.

pub mod auth0;
pub mod faults;
pub mod google;
pub mod graph;
pub mod jwt;
pub mod keycloak;
pub mod okta;
pub mod onelogin;

pub use crate::common::teams_of;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Serves `router` on 127.0.0.1:0 in the background; returns its base URL.
pub async fn serve(router: axum::Router) -> (SocketAddr, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("mock address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, format!("http://{addr}"))
}

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// Ways to make a mock misbehave, and counters of what it served. Call numbers count
/// authenticated API calls from 1; each fault fires once.
#[derive(Default)]
pub struct Faults {
    pub api_calls: AtomicUsize,
    pub tokens_issued: AtomicUsize,
    pub throttled: AtomicUsize,
    pub unauthorized: AtomicUsize,
    pub server_errors: AtomicUsize,
    /// Which IdP's error shapes and rate-limit headers to answer with.
    pub flavor: Mutex<Flavor>,
    /// Answer this call 429, throttled the way the flavor's IdP throttles (a
    /// `Retry-After: 1`, or a rate-limit reset one second away).
    pub throttle_at: Mutex<Option<usize>>,
    /// Answer this call 403 `userRateLimitExceeded` (Google's per-user quota).
    pub quota_at: Mutex<Option<usize>>,
    /// Answer this call normally but say the rate-limit budget is spent (remaining 0,
    /// reset in a second).
    pub budget_spent_at: Mutex<Option<usize>>,
    spend_now: std::sync::atomic::AtomicBool,
    /// Answer this call 500.
    pub fail_at: Mutex<Option<usize>>,
    /// From this call on the current token is expired (401) until a new one is fetched.
    pub expire_token_at: Mutex<Option<usize>>,
    /// Requests whose path contains this always fail with 500.
    pub failing_path: Mutex<Option<String>>,
    /// Every API call waits this long first (an IdP that hangs).
    pub delay: Mutex<Duration>,
    /// Every API call answers 503 (an IdP that is down).
    pub down: std::sync::atomic::AtomicBool,
    /// The only token the API accepts right now.
    pub valid_token: Mutex<Option<String>>,
    /// Paths (with query) of every API call, in order.
    pub log: Mutex<Vec<String>>,
}

/// The IdP a mock imitates: it decides the error bodies and the rate-limit headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flavor {
    #[default]
    Graph,
    Okta,
    Google,
    Keycloak,
    OneLogin,
    Auth0,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Flavor {
    fn unauthorized(self) -> Value {
        match self {
            Flavor::Graph => json!({"error": {"code": "InvalidAuthenticationToken",
                "message": "Access token has expired or is not yet valid."}}),
            Flavor::Okta => {
                json!({"errorCode": "E0000011", "errorSummary": "Invalid token provided",
                "errorLink": "E0000011", "errorId": "oae1", "errorCauses": []})
            }
            Flavor::Google => json!({"error": {"code": 401, "message":
                "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED",
                "errors": [{"reason": "authError", "message": "Invalid Credentials"}]}}),
            Flavor::Keycloak => json!({"error": "HTTP 401 Unauthorized"}),
            Flavor::OneLogin => json!({"statusCode": 401, "name": "Unauthorized",
                "message": "Authentication Failure"}),
            Flavor::Auth0 => json!({"statusCode": 401, "error": "Unauthorized",
                "message": "Expired token received for JSON Web Token validation",
                "attributes": {"error": "Expired token received for JSON Web Token validation"}}),
        }
    }

    fn throttled(self) -> Response {
        let body = match self {
            Flavor::Okta => json!({"errorCode": "E0000047",
                "errorSummary": "API call exceeded rate limit due to too many requests."}),
            Flavor::Google => json!({"error": {"code": 429, "message": "Too many requests",
                "status": "RESOURCE_EXHAUSTED", "errors": [{"reason": "rateLimitExceeded"}]}}),
            Flavor::OneLogin => json!({"statusCode": 429, "name": "TooManyRequests",
                "message": "Rate limit exceeded"}),
            Flavor::Auth0 => json!({"statusCode": 429, "error": "Too Many Requests",
                "message": "Global limit has been reached"}),
            Flavor::Graph | Flavor::Keycloak => {
                json!({"error": {"code": "TooManyRequests", "message": "Too many requests"}})
            }
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            // Okta and Auth0 say when the window resets (a Unix time), not Retry-After.
            Flavor::Okta | Flavor::Auth0 => {
                let (remaining, reset) = if self == Flavor::Okta {
                    ("x-rate-limit-remaining", "x-rate-limit-reset")
                } else {
                    ("x-ratelimit-remaining", "x-ratelimit-reset")
                };
                headers.insert(remaining, HeaderValue::from_static("0"));
                headers.insert(reset, header_value(&(unix_now() + 1).to_string()));
            }
            // OneLogin's reset is a number of seconds.
            Flavor::OneLogin => {
                headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                headers.insert("x-ratelimit-reset", HeaderValue::from_static("1"));
            }
            Flavor::Graph | Flavor::Google | Flavor::Keycloak => {
                headers.insert("retry-after", HeaderValue::from_static("1"));
            }
        }
        response
    }

    /// The rate-limit headers the IdP puts on every answer.
    fn rate_limit_headers(self, spent: bool) -> Vec<(&'static str, String)> {
        let remaining = if spent { "0" } else { "599" }.to_owned();
        match self {
            Flavor::Okta => vec![
                ("x-rate-limit-limit", "600".into()),
                ("x-rate-limit-remaining", remaining),
                ("x-rate-limit-reset", (unix_now() + 1).to_string()),
            ],
            Flavor::Auth0 => vec![
                ("x-ratelimit-limit", "600".into()),
                ("x-ratelimit-remaining", remaining),
                ("x-ratelimit-reset", (unix_now() + 1).to_string()),
            ],
            Flavor::OneLogin => vec![
                ("x-ratelimit-limit", "5000".into()),
                ("x-ratelimit-remaining", remaining),
                ("x-ratelimit-reset", "1".into()),
            ],
            Flavor::Graph | Flavor::Google | Flavor::Keycloak => Vec::new(),
        }
    }
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("header value")
}

impl Faults {
    pub fn new(flavor: Flavor) -> Arc<Self> {
        let faults = Faults::default();
        *faults.flavor.lock().unwrap() = flavor;
        Arc::new(faults)
    }

    fn flavor(&self) -> Flavor {
        *self.flavor.lock().unwrap()
    }

    pub fn issue_token(&self) -> String {
        let n = self.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("mock-access-token-{n}");
        *self.valid_token.lock().unwrap() = Some(token.clone());
        token
    }

    /// Checks the bearer token and applies the faults; `Err` is the response to send.
    pub async fn check(&self, headers: &HeaderMap, path_and_query: &str) -> Result<(), Response> {
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.down.load(Ordering::SeqCst) {
            self.server_errors.fetch_add(1, Ordering::SeqCst);
            return Err((StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response());
        }
        let n = self.api_calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.lock().unwrap().push(path_and_query.to_owned());
        if *self.expire_token_at.lock().unwrap() == Some(n) {
            *self.valid_token.lock().unwrap() = None;
        }
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("SSWS "))
            })
            .map(str::to_owned);
        let valid = self.valid_token.lock().unwrap().clone();
        if presented.is_none() || presented != valid {
            self.unauthorized.fetch_add(1, Ordering::SeqCst);
            return Err(
                (StatusCode::UNAUTHORIZED, Json(self.flavor().unauthorized())).into_response(),
            );
        }
        if *self.throttle_at.lock().unwrap() == Some(n) {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err(self.flavor().throttled());
        }
        if *self.quota_at.lock().unwrap() == Some(n) {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err((
                StatusCode::FORBIDDEN,
                Json(
                    json!({"error": {"code": 403, "message": "Quota exceeded for quota metric",
                    "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded",
                        "message": "User Rate Limit Exceeded"}]}}),
                ),
            )
                .into_response());
        }
        let failing = self.failing_path.lock().unwrap().clone();
        if *self.fail_at.lock().unwrap() == Some(n)
            || failing.is_some_and(|p| path_and_query.contains(&p))
        {
            self.server_errors.fetch_add(1, Ordering::SeqCst);
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response());
        }
        if *self.budget_spent_at.lock().unwrap() == Some(n) {
            self.spend_now.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    pub fn calls(&self) -> usize {
        self.api_calls.load(Ordering::SeqCst)
    }

    pub fn tokens(&self) -> usize {
        self.tokens_issued.load(Ordering::SeqCst)
    }

    pub fn count(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }

    pub fn calls_to(&self, fragment: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(fragment))
            .count()
    }
}

/// Adds the flavor's rate-limit headers to every successful answer of `router`.
pub fn with_rate_limit_headers(router: Router, faults: Arc<Faults>) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let faults = faults.clone();
            async move {
                let mut response = next.run(request).await;
                if response.status().is_success() {
                    let spent = faults.spend_now.swap(false, Ordering::SeqCst);
                    for (name, value) in faults.flavor().rate_limit_headers(spent) {
                        response.headers_mut().insert(name, header_value(&value));
                    }
                }
                response
            }
        },
    ))
}

/// `items[offset..offset + size]`, and whether more follow.
pub fn slice<T: Clone>(items: &[T], offset: usize, size: usize) -> (Vec<T>, bool) {
    let start = offset.min(items.len());
    let end = (start + size).min(items.len());
    (items[start..end].to_vec(), end < items.len())
}

/// The error an API answers for an unknown resource.
pub fn not_found(body: Value) -> Response {
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// A token endpoint's refusal.
pub fn invalid_client(description: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "invalid_client", "error_description": description})),
    )
        .into_response()
}

/// The people every mock directory starts with: (key, given name, family name, active).
/// Dave's account is disabled (deprovisioned, suspended, blocked: each IdP's word).
pub const PEOPLE: [(&str, &str, &str, bool); 5] = [
    ("alice", "Alice", "Ng", true),
    ("bob", "Bob", "Stone", true),
    ("carol", "Carol", "Diaz", true),
    ("dave", "Dave", "Kim", false),
    ("eve", "Eve", "Moss", true),
];

/// The groups every mock directory starts with, and their members (keys of [`PEOPLE`]).
pub const GROUPS: [(&str, &str, &[&str]); 4] = [
    ("users", "LLM Users", &["alice", "bob", "carol", "dave"]),
    ("admins", "LLM Admins", &["alice"]),
    ("sales", "Sales", &["bob", "eve"]),
    ("finance", "Finance", &[]),
];

/// A mock IdP's groups and users, in the IdP's own JSON for users.
#[derive(Default)]
pub struct Dir {
    /// id → the IdP's JSON for the user
    pub users: BTreeMap<String, Value>,
    /// In the order the IdP lists them.
    pub groups: Vec<Group>,
}

#[derive(Clone)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// Direct members' ids.
    pub members: Vec<String>,
    /// The group this one is nested in (Keycloak subgroups).
    pub parent: Option<String>,
}

impl Dir {
    /// Builds the standard directory: `user_id(key)` and `group_id(key)` name the ids,
    /// `user_json(id, key, given, family, active)` renders a user as the IdP would.
    pub fn standard(
        user_id: impl Fn(&str) -> String,
        group_id: impl Fn(&str) -> String,
        user_json: impl Fn(&str, &str, &str, &str, bool) -> Value,
    ) -> Self {
        let mut dir = Dir::default();
        for (key, given, family, active) in PEOPLE {
            let id = user_id(key);
            dir.users
                .insert(id.clone(), user_json(&id, key, given, family, active));
        }
        for (key, name, members) in GROUPS {
            dir.groups.push(Group {
                id: group_id(key),
                name: name.to_owned(),
                members: members.iter().map(|m| user_id(m)).collect(),
                parent: None,
            });
        }
        dir
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub fn add_member(&mut self, group: &str, user: &str) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.id == group) {
            g.members.push(user.to_owned());
        }
    }

    pub fn remove_member(&mut self, group: &str, user: &str) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.id == group) {
            g.members.retain(|m| m != user);
        }
    }

    /// The groups `user` is directly in.
    pub fn groups_of(&self, user: &str) -> Vec<Group> {
        self.groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
            .cloned()
            .collect()
    }

    /// The JSON of a group's direct members, in order.
    pub fn members_json(&self, group: &Group) -> Vec<Value> {
        group
            .members
            .iter()
            .filter_map(|m| self.users.get(m).cloned())
            .collect()
    }
}

/// Reads the bearer token's flavor-independent parts of a form.
pub fn form_value<'a>(form: &'a std::collections::HashMap<String, String>, key: &str) -> &'a str {
    form.get(key).map(String::as_str).unwrap_or_default()
}

/// Verifies an RS256 client assertion (private_key_jwt or a JWT-bearer grant) against
/// the test key's public half; returns its claims.
pub fn verify_assertion(key: &jwt::TestKey, assertion: &str, audience: &str) -> Option<Value> {
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(&key.n, &key.e).ok()?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(assertion, &decoding, &validation)
        .ok()
        .map(|d| d.claims)
}

/// A file holding `text`, in a directory that lives as long as the returned guard.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("temp file written");
    (dir, path)
}

/// The shared specification of a pull that fails part-way: a first sync applies the
/// IdP's groups; then `user` leaves `team` in the IdP (`remove`) while the members of
/// another group cannot be read (every request whose path contains `failing` fails).
/// The second sync must be partial (`complete: false`) and delete nothing, and a third,
/// complete one must catch up.
pub async fn a_partial_pull_deletes_nothing(
    store: &scimsync::store::Store,
    config: &scimsync::config::Config,
    idp: &str,
    faults: &Faults,
    failing: &str,
    remove: impl FnOnce(),
    (user, team): (&str, &str),
) {
    use scimsync::domain::Trigger;
    use scimsync::reconcile::Actor;
    let actor = Actor::new(Trigger::Sync, "test");
    let report = scimsync::sync::sync_now(store, config, idp, &actor)
        .await
        .expect("the IdP is configured");
    assert_eq!(report.outcome, "success", "{report:?}");
    assert!(teams_of(store, user).await.contains(&team.to_owned()));
    let memberships = store.all_memberships().await.expect("memberships").len();

    remove();
    *faults.failing_path.lock().unwrap() = Some(failing.to_owned());
    let report = scimsync::sync::sync_now(store, config, idp, &actor)
        .await
        .expect("the IdP is configured");
    assert_eq!(report.outcome, "partial", "{report:?}");
    assert!(!report.complete);
    assert_eq!(report.destroy, 0, "{report:?}");
    assert!(
        teams_of(store, user).await.contains(&team.to_owned()),
        "a partial pull removes no membership"
    );
    assert_eq!(
        store.all_memberships().await.expect("memberships").len(),
        memberships
    );

    *faults.failing_path.lock().unwrap() = None;
    let report = scimsync::sync::sync_now(store, config, idp, &actor)
        .await
        .expect("the IdP is configured");
    assert_eq!(report.outcome, "success", "{report:?}");
    assert!(
        !teams_of(store, user).await.contains(&team.to_owned()),
        "a complete pull removes what the IdP removed"
    );
}

/// The snapshot as the JSON `scimsync pull` writes.
pub fn snapshot_json(snapshot: &scimsync::reconcile::snapshot::Snapshot) -> Value {
    serde_json::to_value(snapshot).expect("a snapshot serialises")
}
