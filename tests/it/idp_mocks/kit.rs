//! The IdP mock kit: what every mock IdP shares, so that each mock file holds only its
//! provider's wire format (routes, JSON, ids, its own quirks).
//!
//! - **Serving** ([`serve_idp`]): token routes open; every API route behind
//!   [`Faults::check`] (the bearer token, then the fault switches); the flavor's
//!   rate-limit headers on every successful answer.
//! - **Tokens** ([`Faults::grant`]): a new access token per grant, the only one the
//!   API accepts, valid for the `expires_in` the answer states (or
//!   [`Faults::token_lifetime`] when a test shortens it); the shared refusals and
//!   form/assertion checks the token endpoints use.
//! - **Fault switches** ([`Faults`]): 429 throttling as the flavor throttles, Google's
//!   403 quota, a spent rate-limit budget, 5xx at a call or on a path, an IdP that is
//!   down or slow (latency, timeouts), a token that expires mid-listing. Truncated or
//!   malformed bodies and hangs mid-body come from the proxy in
//!   [`super::faults`], and the per-style loop faults below build on it.
//! - **Paging** ([`paging`]): each provider's own paging style, faithfully, and the
//!   faults that make its next-page cursor loop or its offset be ignored.

use super::faults::Fault;
use super::jwt;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    spend_now: AtomicBool,
    /// Answer this call 500.
    pub fail_at: Mutex<Option<usize>>,
    /// From this call on the current token is expired (401) until a new one is fetched.
    pub expire_token_at: Mutex<Option<usize>>,
    /// Requests whose path contains this always fail with 500.
    pub failing_path: Mutex<Option<String>>,
    /// Every API call waits this long first (an IdP that hangs).
    pub delay: Mutex<Duration>,
    /// Every API call answers 503 (an IdP that is down).
    pub down: AtomicBool,
    /// The only token the API accepts right now.
    pub valid_token: Mutex<Option<String>>,
    /// When the token in `valid_token` expires (none: an API token such as Okta's
    /// SSWS, which does not).
    valid_until: Mutex<Option<Instant>>,
    /// Tokens granted from now on live this many seconds (and say so in
    /// `expires_in`) instead of the IdP's usual lifetime.
    pub token_lifetime: Mutex<Option<u64>>,
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
        let mut response = answer(StatusCode::TOO_MANY_REQUESTS, body);
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

    /// The rate-limit headers the IdP puts on every answer (none for Graph, Google and
    /// Keycloak).
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

pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("header value")
}

/// A JSON answer with `status`.
pub fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
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

    /// Accepts `token` from now on, for good (an API token that does not expire).
    pub fn accept_api_token(&self, token: &str) {
        *self.valid_token.lock().unwrap() = Some(token.to_owned());
        *self.valid_until.lock().unwrap() = None;
    }

    /// A token endpoint's success: a new access token (the only one the API accepts
    /// from now on) valid for `expires_in` seconds, or for [`Faults::token_lifetime`]
    /// when a test set one; the answer is `fields` with `access_token` and
    /// `expires_in` added, as the IdP words the rest.
    pub fn grant(&self, expires_in: u64, mut fields: Value) -> Response {
        let n = self.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("mock-access-token-{n}");
        let lifetime = self.token_lifetime.lock().unwrap().unwrap_or(expires_in);
        *self.valid_token.lock().unwrap() = Some(token.clone());
        *self.valid_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(lifetime));
        fields["access_token"] = json!(token);
        fields["expires_in"] = json!(lifetime);
        Json(fields).into_response()
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
        let expired = self
            .valid_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() >= until);
        if *self.expire_token_at.lock().unwrap() == Some(n) || expired {
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
            return Err(answer(
                StatusCode::UNAUTHORIZED,
                self.flavor().unauthorized(),
            ));
        }
        if *self.throttle_at.lock().unwrap() == Some(n) {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err(self.flavor().throttled());
        }
        if *self.quota_at.lock().unwrap() == Some(n) {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err(answer(
                StatusCode::FORBIDDEN,
                json!({"error": {"code": 403, "message": "Quota exceeded for quota metric",
                    "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded",
                        "message": "User Rate Limit Exceeded"}]}}),
            ));
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

    /// The number the next API call will have, plus `n - 1`: "the `n`th call from
    /// now", for switches set after earlier calls.
    pub fn call_from_now(&self, n: usize) -> usize {
        self.calls() + n
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

/// Serves a mock IdP on port 0; returns its base URL. `token` holds the token
/// endpoint (open to all); every route of `api` answers only after [`Faults::check`]
/// (the bearer token, then the fault switches); every successful answer carries the
/// flavor's rate-limit headers.
pub async fn serve_idp(token: Router, api: Router, faults: &Arc<Faults>) -> String {
    let guard = faults.clone();
    let api = api.route_layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let faults = guard.clone();
            async move {
                let path_and_query = request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                if let Err(refused) = faults.check(request.headers(), &path_and_query).await {
                    return refused;
                }
                next.run(request).await
            }
        },
    ));
    let counter = faults.clone();
    let router = token.merge(api).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let faults = counter.clone();
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
    ));
    super::serve(router).await.1
}

/// A token endpoint's `invalid_client` refusal (401).
pub fn invalid_client(description: &str) -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_client", "error_description": description}),
    )
}

/// A form field, or "" when it is missing.
pub fn form_value<'a>(form: &'a HashMap<String, String>, key: &str) -> &'a str {
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

/// The error an API answers for an unknown resource.
pub fn not_found(body: Value) -> Response {
    answer(StatusCode::NOT_FOUND, body)
}

/// Each provider's paging, as its API pages, and the faults that break it.
pub mod paging {
    use super::{header_value, json, Fault, HashMap, IntoResponse, Json, Mutex, Response, Value};

    /// A numeric query parameter.
    pub fn number(q: &HashMap<String, String>, name: &str) -> Option<usize> {
        q.get(name).and_then(|v| v.parse().ok())
    }

    /// `items[offset..offset + size]`, and whether more follow.
    pub fn slice<T: Clone>(items: &[T], offset: usize, size: usize) -> (Vec<T>, bool) {
        let start = offset.min(items.len());
        let end = (start + size).min(items.len());
        (items[start..end].to_vec(), end < items.len())
    }

    /// Microsoft Graph: `{"value": [...]}` with an `@odata.nextLink` (`$top`,
    /// `$skiptoken`) when more follow; `$top` is honoured up to `page_size`.
    pub fn odata(
        base: &str,
        path: &str,
        items: Vec<Value>,
        q: &HashMap<String, String>,
        page_size: usize,
    ) -> Response {
        let skip = number(q, "$skiptoken").unwrap_or(0);
        let top = number(q, "$top").unwrap_or(100).min(page_size);
        let (page, more) = slice(&items, skip, top);
        let mut body = json!({"value": page});
        if more {
            body["@odata.nextLink"] = json!(format!(
                "{base}{path}?$top={}&$skiptoken={}",
                q.get("$top").cloned().unwrap_or_default(),
                (skip + top).min(items.len())
            ));
        }
        Json(body).into_response()
    }

    /// Okta: a bare array with `Link` headers for `self` and, when more follow, `next`
    /// (`after` = the last id of the page); `limit` honoured up to `page_size`.
    pub fn link_header(
        base: &str,
        path: &str,
        items: Vec<Value>,
        q: &HashMap<String, String>,
        page_size: usize,
    ) -> Response {
        let limit = number(q, "limit").unwrap_or(200);
        let size = limit.min(page_size).max(1);
        let offset = match q.get("after") {
            Some(after) => items
                .iter()
                .position(|i| i["id"].as_str() == Some(after))
                .map_or(items.len(), |p| p + 1),
            None => 0,
        };
        let (page, more) = slice(&items, offset, size);
        let mut response = Json(&page).into_response();
        let headers = response.headers_mut();
        headers.append(
            "link",
            header_value(&format!("<{base}{path}?limit={limit}>; rel=\"self\"")),
        );
        if more {
            let last = page
                .last()
                .and_then(|i| i["id"].as_str())
                .unwrap_or_default();
            headers.append(
                "link",
                header_value(&format!(
                    "<{base}{path}?after={last}&limit={limit}>; rel=\"next\""
                )),
            );
        }
        response
    }

    /// Google: `{"kind", "etag", field: [...], "nextPageToken"}`, the list left out
    /// when empty, the token only when more follow; `maxResults` up to `page_size`.
    pub fn page_token(
        kind: &str,
        field: &str,
        items: Vec<Value>,
        q: &HashMap<String, String>,
        page_size: usize,
    ) -> Response {
        let max = number(q, "maxResults").unwrap_or(200);
        let offset: usize = q
            .get("pageToken")
            .and_then(|t| t.strip_prefix("tok-"))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let (page, more) = slice(&items, offset, max.min(page_size).max(1));
        let mut body = json!({"kind": kind, "etag": "\"page\""});
        // Google leaves an empty list out altogether.
        if !page.is_empty() {
            body[field] = json!(page);
        }
        if more {
            body["nextPageToken"] = json!(format!("tok-{}", offset + page.len()));
        }
        Json(body).into_response()
    }

    /// Auth0 page-numbered listings: `page` × `per_page` (at most 100), with
    /// `include_totals=true` an object (`field`, start, limit, total), else a bare
    /// array.
    pub fn page_per_page(field: &str, items: Vec<Value>, q: &HashMap<String, String>) -> Response {
        let per_page = number(q, "per_page").unwrap_or(50).min(100);
        let page = number(q, "page").unwrap_or(0);
        let (found, _) = slice(&items, page * per_page, per_page);
        if q.get("include_totals").map(String::as_str) == Some("true") {
            Json(
                json!({field: found, "start": page * per_page, "limit": per_page,
                "total": items.len()}),
            )
            .into_response()
        } else {
            Json(found).into_response()
        }
    }

    /// Auth0 checkpoint paging: `take` (up to `page_size`), then `from` = the previous
    /// answer's `next`; `{field: [...], "next"}`. `None` for a checkpoint Auth0 would
    /// not know.
    pub fn checkpoint(
        field: &str,
        items: Vec<Value>,
        q: &HashMap<String, String>,
        page_size: usize,
    ) -> Option<Response> {
        let take = number(q, "take").unwrap_or(50);
        let offset = match q.get("from") {
            Some(from) => from.strip_prefix("cp-").and_then(|f| f.parse().ok())?,
            None => 0,
        };
        let (found, more) = slice(&items, offset, take.min(page_size).max(1));
        let mut body = json!({field: found});
        if more {
            body["next"] = json!(format!("cp-{}", offset + found.len()));
        }
        Some(Json(body).into_response())
    }

    /// OneLogin: a bare array with `Total-Count`, `Total-Pages`, `Current-Page`,
    /// `Page-Items`, `After-Cursor` when more follow and `Before-Cursor` after the
    /// first page (`cursor=`); `limit` up to `page_size`.
    pub fn after_cursor(
        items: Vec<Value>,
        q: &HashMap<String, String>,
        page_size: usize,
    ) -> Response {
        let limit = number(q, "limit").unwrap_or(50);
        let size = limit.min(page_size).max(1);
        let offset: usize = q
            .get("cursor")
            .and_then(|c| c.strip_prefix("cur-"))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let total = items.len();
        let (page, more) = slice(&items, offset, size);
        let mut response = Json(&page).into_response();
        let h = response.headers_mut();
        h.insert("total-count", header_value(&total.to_string()));
        h.insert(
            "total-pages",
            header_value(&total.div_ceil(size).max(1).to_string()),
        );
        h.insert(
            "current-page",
            header_value(&(offset / size + 1).to_string()),
        );
        h.insert("page-items", header_value(&page.len().to_string()));
        if more {
            h.insert(
                "after-cursor",
                header_value(&format!("cur-{}", offset + page.len())),
            );
        }
        if offset > 0 {
            h.insert(
                "before-cursor",
                header_value(&format!("cur-{}", offset.saturating_sub(size))),
            );
        }
        response
    }

    /// Keycloak: a bare array of up to `max` items from `first`, no next link (a short
    /// page is the end); `default_max` when `max` is not given.
    pub fn first_max(items: &[Value], q: &HashMap<String, String>, default_max: usize) -> Response {
        let first = number(q, "first").unwrap_or(0);
        let max = number(q, "max").unwrap_or(default_max);
        Json(slice(items, first, max).0).into_response()
    }

    /// The value of query parameter `name` in `url`.
    pub fn query_param(url: &str, name: &str) -> Option<String> {
        let url = url::Url::parse(url).ok()?;
        let value = url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned());
        value
    }

    /// `url` without query parameter `name`.
    fn without_param(url: &str, name: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != name)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(kept);
        url.into()
    }

    /// Okta's `Link: <...>; rel="next"` replaced by `<next>`, the other relations kept.
    fn set_next_link(headers: &mut axum::http::HeaderMap, next: &str) {
        let others: Vec<_> = headers
            .get_all("link")
            .iter()
            .filter(|v| !v.to_str().unwrap_or_default().contains("rel=\"next\""))
            .cloned()
            .collect();
        headers.remove("link");
        for value in others {
            headers.append("link", value);
        }
        headers.append("link", header_value(&format!("<{next}>; rel=\"next\"")));
    }

    /// Okta: from the second page on, `rel="next"` leads back to the first page.
    pub fn link_next_back_to_the_first_page() -> Fault {
        Fault::rewrite_headers(|headers, url| {
            if query_param(url, "after").is_some() {
                set_next_link(headers, &without_param(url, "after"));
            }
        })
    }

    /// Okta: a `rel="next"` that is `next`, whatever it is.
    pub fn link_next_to(next: &'static str) -> Fault {
        Fault::rewrite_headers(move |headers, _| set_next_link(headers, next))
    }

    /// OneLogin: a page read with `cursor=` answers that same cursor as `After-Cursor`.
    pub fn after_cursor_back_to_this_page() -> Fault {
        Fault::rewrite_headers(|headers, url| {
            if let Some(cursor) = query_param(url, "cursor") {
                headers.insert("after-cursor", header_value(&cursor));
            }
        })
    }

    /// A body cursor (Google's `nextPageToken` for `pageToken`, Auth0's `next` for
    /// `from`): a page read with `cursor_param` answers that same cursor as `field`.
    pub fn body_cursor_back_to_this_page(cursor_param: &'static str, field: &'static str) -> Fault {
        Fault::rewrite(move |page, url| {
            if let Some(cursor) = query_param(url, cursor_param) {
                page[field] = json!(cursor);
            }
        })
    }

    /// Graph: an `@odata.nextLink` that is the URL of the page it stands on.
    pub fn odata_next_link_to_this_page() -> Fault {
        Fault::rewrite(|page, url| page["@odata.nextLink"] = json!(url))
    }

    /// Graph: an `@odata.nextLink` that is `next`, whatever it is.
    pub fn odata_next_link_to(next: &'static str) -> Fault {
        Fault::rewrite(move |page, _| page["@odata.nextLink"] = json!(next))
    }

    /// Every page answers what the first page (offset `param` = 0, or none) answered: a
    /// server or proxy that drops the paging offset (Auth0's `page`, Keycloak's
    /// `first`).
    pub fn ignoring_offset(param: &'static str) -> Fault {
        let first_page = std::sync::Arc::new(Mutex::new(None::<Value>));
        Fault::rewrite(move |page, url| {
            let mut first = first_page.lock().unwrap();
            match query_param(url, param).as_deref() {
                None | Some("0") => *first = Some(page.clone()),
                Some(_) => {
                    if let Some(answer) = first.as_ref() {
                        *page = answer.clone();
                    }
                }
            }
        })
    }
}
