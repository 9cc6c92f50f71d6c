//! The HTTP client every connector shares: OAuth tokens cached until shortly before
//! they expire and refreshed when the API answers 401; throttling (429, 503, Google's
//! 403 rate-limit reasons) waited out as `Retry-After` or the rate-limit reset header
//! says, else with exponential backoff; other 5xx and network errors retried a bounded
//! number of times; and, when a response says the rate-limit budget is spent, a pause
//! until it resets before the next request.
//!
//! Credentials go into request headers and form bodies only; no error, log line or
//! `Debug` output contains them.

use super::{IdpError, Secret};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A token this close to its expiry is renewed before use, so a request never starts
/// with a token that dies on the way.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// When the token endpoint does not say how long a token lives.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// The longest single wait for a rate limit to reset; longer hints are distrusted.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// The longest exponential backoff step.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long to wait for a TCP (and TLS) connection; `request_timeout` bounds the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most pages one listing may take: 10 to 100 million items at the page sizes the
/// connectors ask for, far beyond any directory, yet a bound on an IdP that hands out
/// a fresh cursor forever.
pub const MAX_PAGES: u64 = 100_000;

/// How persistent the client is. Tests lower the numbers to stay fast.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt for throttling, 5xx and network errors.
    pub max_retries: u32,
    /// First backoff step; each further retry doubles it.
    pub base_backoff: Duration,
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_backoff: Duration::from_millis(500),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of one client's work: what a progress bar shows and tests assert on.
#[derive(Debug, Default)]
pub struct PullStats {
    pub requests: AtomicU64,
    /// Successful API responses (each page of a paged list counts one).
    pub pages: AtomicU64,
    pub retries: AtomicU64,
    /// Times the client waited because the IdP throttled it or its budget ran out.
    pub throttled: AtomicU64,
    pub waited_ms: AtomicU64,
    pub token_fetches: AtomicU64,
    /// Tokens thrown away because the API answered 401 with them.
    pub token_rejections: AtomicU64,
    pub users: AtomicU64,
    pub groups: AtomicU64,
}

impl PullStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add_users(&self, n: u64) {
        self.users.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_groups(&self, n: u64) {
        self.groups.fetch_add(n, Ordering::Relaxed);
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How the client proves who it is.
pub enum Auth {
    /// A fixed `Authorization` header value (Okta's `SSWS <token>`).
    Static(Secret),
    /// An OAuth 2.0 token endpoint.
    OAuth(TokenRequest),
}

/// How to get an access token.
pub struct TokenRequest {
    pub token_url: String,
    /// Extra form fields: `scope`, `audience`, ...
    pub form: Vec<(&'static str, String)>,
    pub client: ClientAuth,
}

/// How the client authenticates at the token endpoint.
pub enum ClientAuth {
    /// Client credentials grant, secret in the form body (Entra, Keycloak, Auth0).
    SecretPost { client_id: String, secret: Secret },
    /// Client credentials grant, secret as HTTP Basic, form body (RFC 6749 §2.3.1).
    SecretBasic { client_id: String, secret: Secret },
    /// Client credentials grant, secret as HTTP Basic, and the grant as a JSON body
    /// (`{"grant_type": "client_credentials"}`): what OneLogin's API v2 token endpoint
    /// documents, with `Content-Type: application/json`.
    SecretBasicJson { client_id: String, secret: Secret },
    /// Client credentials grant with a signed JWT instead of a secret (Okta's
    /// private_key_jwt, RFC 7523 §2.2).
    PrivateKeyJwt {
        client_id: String,
        key: EncodingKey,
        key_id: Option<String>,
    },
    /// JWT bearer grant (RFC 7523 §2.1): a service account asserting a subject it may
    /// impersonate (Google domain-wide delegation).
    JwtBearer {
        issuer: String,
        subject: Option<String>,
        scope: String,
        key: EncodingKey,
        key_id: Option<String>,
    },
}

struct CachedToken {
    value: Secret,
    renew_at: Instant,
    /// Which fetch produced it, so that a 401 discards only the token it was sent with.
    generation: u64,
}

/// An authenticated, retrying, rate-limit-aware JSON client for one IdP.
pub struct ApiClient {
    http: reqwest::Client,
    auth: Auth,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    token_generation: AtomicU64,
    policy: RetryPolicy,
    stats: Arc<PullStats>,
    idp: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("idp", &self.idp)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What a successful GET returned.
pub struct Reply<T> {
    pub body: T,
    pub headers: HeaderMap,
}

enum Failure {
    /// Try again after this long (throttling, 5xx, network).
    Retry(Duration, IdpError),
    /// The token was refused: fetch a new one and try again once.
    Unauthorized(IdpError),
    Fatal(IdpError),
}

impl ApiClient {
    pub fn new(idp: &str, auth: Auth, policy: RetryPolicy) -> Result<Self, IdpError> {
        let http = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(policy.request_timeout))
            .user_agent(concat!("scimsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| IdpError::Config {
                idp: idp.to_owned(),
                message: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            auth,
            token: tokio::sync::Mutex::new(None),
            token_generation: AtomicU64::new(0),
            policy,
            stats: Arc::default(),
            idp: idp.to_owned(),
        })
    }

    pub fn stats(&self) -> Arc<PullStats> {
        self.stats.clone()
    }

    /// GETs `url` and parses the JSON body.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<Reply<T>, IdpError> {
        self.get_json_with(url, &[]).await
    }

    /// GETs `url` with extra headers and parses the JSON body.
    pub async fn get_json_with<T: DeserializeOwned>(
        &self,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Reply<T>, IdpError> {
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            let (authorization, generation) = self.authorization().await?;
            let mut request = self
                .http
                .get(url)
                .header(AUTHORIZATION, authorization)
                .header(reqwest::header::ACCEPT, "application/json");
            for (name, value) in headers {
                request = request.header(name, value);
            }
            PullStats::bump(&self.stats.requests);
            let failure = match request.send().await {
                Ok(response) => match self.classify(url, response, attempt).await {
                    Ok((bytes, headers)) => {
                        // A 200 that is not the JSON asked for (an HTML error page, a
                        // body cut short, the wrong shape) is an error, never an empty
                        // list: what it would leave out must not be deleted.
                        let body = match serde_json::from_slice(&bytes) {
                            Ok(body) => body,
                            Err(e) => {
                                crate::metrics::idp_call(&self.idp, "malformed");
                                return Err(IdpError::Decode {
                                    url: url.to_owned(),
                                    message: decode_message(&bytes, &headers, &e),
                                });
                            }
                        };
                        crate::metrics::idp_call(&self.idp, "ok");
                        PullStats::bump(&self.stats.pages);
                        self.pause_if_budget_spent(&headers).await;
                        return Ok(Reply { body, headers });
                    }
                    Err(failure) => failure,
                },
                Err(e) => {
                    crate::metrics::idp_call(&self.idp, "error");
                    Failure::Retry(
                        self.backoff(attempt),
                        IdpError::Transport {
                            url: url.to_owned(),
                            message: transport_message(e, &self.policy),
                        },
                    )
                }
            };
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Unauthorized(e) => {
                    if refreshed || matches!(self.auth, Auth::Static(_)) {
                        return Err(e);
                    }
                    // The cached token expired early or was revoked: one fresh token,
                    // one more try. A second 401 means the credentials lack access.
                    refreshed = true;
                    let mut cached = self.token.lock().await;
                    // Requests running side by side all see the 401; only the first
                    // discards the token, the others use the one it fetched.
                    if cached.as_ref().map(|t| t.generation) == generation {
                        PullStats::bump(&self.stats.token_rejections);
                        *cached = None;
                    }
                    drop(cached);
                    tracing::debug!(idp = %self.idp, %url, "access token refused; fetching a new one");
                }
                Failure::Retry(wait, e) => {
                    if attempt >= self.policy.max_retries {
                        return Err(match e {
                            IdpError::Http { status: 429, .. } => IdpError::RateLimited {
                                url: url.to_owned(),
                                attempts: attempt + 1,
                            },
                            other => other,
                        });
                    }
                    attempt += 1;
                    PullStats::bump(&self.stats.retries);
                    crate::metrics::idp_retry(&self.idp);
                    tracing::info!(idp = %self.idp, %url, error = %e, wait_ms = wait.as_millis() as u64,
                        attempt, "retrying an IdP request");
                    self.sleep(wait).await;
                }
            }
        }
    }

    /// Sorts a response into success, retry, re-authenticate or give up.
    async fn classify(
        &self,
        url: &str,
        response: reqwest::Response,
        attempt: u32,
    ) -> Result<(Vec<u8>, HeaderMap), Failure> {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match response.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => {
                // Headers came, the body did not (in time, or in full).
                crate::metrics::idp_call(&self.idp, "error");
                return Err(Failure::Retry(
                    self.backoff(attempt),
                    IdpError::Transport {
                        url: url.to_owned(),
                        message: format!(
                            "{status} but the body could not be read: {}",
                            transport_message(e, &self.policy)
                        ),
                    },
                ));
            }
        };
        if status.is_success() {
            return Ok((bytes, headers));
        }
        let error = IdpError::Http {
            url: url.to_owned(),
            status: status.as_u16(),
            message: error_message(&bytes),
        };
        let throttled = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
            || (status == StatusCode::FORBIDDEN && is_google_rate_limit(&bytes));
        if throttled {
            PullStats::bump(&self.stats.throttled);
            crate::metrics::idp_call(&self.idp, "throttled");
            crate::metrics::idp_throttled(&self.idp);
            let wait = retry_after(&headers)
                .or_else(|| rate_limit_reset(&headers))
                .unwrap_or_else(|| self.backoff(attempt));
            return Err(Failure::Retry(wait.min(MAX_WAIT), error));
        }
        crate::metrics::idp_call(&self.idp, "error");
        match status {
            StatusCode::UNAUTHORIZED => Err(Failure::Unauthorized(error)),
            StatusCode::GONE => Err(Failure::Fatal(IdpError::Gone {
                url: url.to_owned(),
            })),
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                Err(Failure::Retry(self.backoff(attempt), error))
            }
            _ => Err(Failure::Fatal(error)),
        }
    }

    /// Exponential backoff with jitter, so that many clients do not retry in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .policy
            .base_backoff
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(MAX_BACKOFF);
        let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.75..1.25);
        step.mul_f64(jitter)
    }

    async fn sleep(&self, wait: Duration) {
        self.stats.waited_ms.fetch_add(
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tokio::time::sleep(wait).await;
    }

    /// When a response says no requests are left in the window, waits for the reset
    /// instead of spending the next request on a 429.
    async fn pause_if_budget_spent(&self, headers: &HeaderMap) {
        let remaining = ["x-rate-limit-remaining", "x-ratelimit-remaining"]
            .iter()
            .find_map(|h| header_u64(headers, h));
        if remaining == Some(0) {
            if let Some(wait) = rate_limit_reset(headers) {
                PullStats::bump(&self.stats.throttled);
                crate::metrics::idp_throttled(&self.idp);
                tracing::info!(idp = %self.idp, wait_ms = wait.as_millis() as u64,
                    "rate-limit budget spent; waiting for it to reset");
                self.sleep(wait.min(MAX_WAIT)).await;
            }
        }
    }

    /// Fetches an access token now (bypassing the cache) to prove the credentials work.
    pub async fn check_credentials(&self) -> Result<bool, IdpError> {
        match &self.auth {
            Auth::Static(_) => Ok(false),
            Auth::OAuth(request) => self.fetch_token(request).await.map(|_| true),
        }
    }

    /// The `Authorization` header value, fetching a token when none is cached or the
    /// cached one is about to expire; with the token's generation (None: static).
    async fn authorization(&self) -> Result<(HeaderValue, Option<u64>), IdpError> {
        let mut generation = None;
        let value = match &self.auth {
            Auth::Static(secret) => secret.expose().to_owned(),
            Auth::OAuth(request) => {
                // Holding the lock while fetching makes concurrent requests wait for one
                // token instead of each fetching their own.
                let mut cached = self.token.lock().await;
                match &*cached {
                    Some(t) if Instant::now() < t.renew_at => {
                        generation = Some(t.generation);
                        format!("Bearer {}", t.value.expose())
                    }
                    _ => {
                        let mut token = self.fetch_token(request).await?;
                        token.generation = self.token_generation.fetch_add(1, Ordering::Relaxed);
                        generation = Some(token.generation);
                        let value = format!("Bearer {}", token.value.expose());
                        *cached = Some(token);
                        value
                    }
                }
            }
        };
        let mut header = HeaderValue::from_str(&value).map_err(|_| IdpError::Token {
            url: self.token_url().to_owned(),
            message: "the credential contains characters not allowed in a header".into(),
        })?;
        header.set_sensitive(true);
        Ok((header, generation))
    }

    fn token_url(&self) -> &str {
        match &self.auth {
            Auth::OAuth(r) => &r.token_url,
            Auth::Static(_) => "(static token)",
        }
    }

    async fn fetch_token(&self, request: &TokenRequest) -> Result<CachedToken, IdpError> {
        let url = &request.token_url;
        let token_error = |message: String| IdpError::Token {
            url: url.clone(),
            message,
        };
        let mut attempt = 0;
        loop {
            let mut form: Vec<(&str, String)> =
                request.form.iter().map(|(k, v)| (*k, v.clone())).collect();
            let mut builder = self.http.post(url);
            let mut json_body = false;
            match &request.client {
                ClientAuth::SecretPost { client_id, secret } => {
                    form.push(("grant_type", "client_credentials".into()));
                    form.push(("client_id", client_id.clone()));
                    form.push(("client_secret", secret.expose().to_owned()));
                }
                ClientAuth::SecretBasic { client_id, secret } => {
                    form.push(("grant_type", "client_credentials".into()));
                    builder = builder.basic_auth(client_id, Some(secret.expose()));
                }
                ClientAuth::SecretBasicJson { client_id, secret } => {
                    form.push(("grant_type", "client_credentials".into()));
                    builder = builder.basic_auth(client_id, Some(secret.expose()));
                    json_body = true;
                }
                ClientAuth::PrivateKeyJwt {
                    client_id,
                    key,
                    key_id,
                } => {
                    let assertion =
                        sign_assertion(key, key_id, client_id, Some(client_id), url, None)
                            .map_err(token_error)?;
                    form.push(("grant_type", "client_credentials".into()));
                    form.push((
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                    ));
                    form.push(("client_assertion", assertion));
                }
                ClientAuth::JwtBearer {
                    issuer,
                    subject,
                    scope,
                    key,
                    key_id,
                } => {
                    let assertion =
                        sign_assertion(key, key_id, issuer, subject.as_deref(), url, Some(scope))
                            .map_err(token_error)?;
                    form.push((
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                    ));
                    form.push(("assertion", assertion));
                }
            }
            PullStats::bump(&self.stats.token_fetches);
            let builder = builder.header(reqwest::header::ACCEPT, "application/json");
            let builder = if json_body {
                let body: serde_json::Map<String, Value> = form
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
                    .collect();
                builder.json(&body)
            } else {
                builder.form(&form)
            };
            let result = builder.send().await;
            let retry = match result {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let bytes = match response.bytes().await {
                        Ok(b) => Ok(b.to_vec()),
                        Err(e) => Err(format!(
                            "{status} but the body could not be read: {}",
                            transport_message(e, &self.policy)
                        )),
                    };
                    let bytes = match bytes {
                        Ok(b) => b,
                        Err(message) => {
                            if attempt >= self.policy.max_retries {
                                return Err(token_error(message));
                            }
                            let wait = self.backoff(attempt);
                            attempt += 1;
                            PullStats::bump(&self.stats.retries);
                            self.sleep(wait).await;
                            continue;
                        }
                    };
                    if status.is_success() {
                        return parse_token(&bytes).map_err(token_error);
                    }
                    let message = format!("{status}: {}", error_message(&bytes));
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        (
                            retry_after(&headers).unwrap_or_else(|| self.backoff(attempt)),
                            message,
                        )
                    } else {
                        return Err(token_error(message));
                    }
                }
                Err(e) => (self.backoff(attempt), transport_message(e, &self.policy)),
            };
            if attempt >= self.policy.max_retries {
                return Err(token_error(retry.1));
            }
            attempt += 1;
            PullStats::bump(&self.stats.retries);
            self.sleep(retry.0.min(MAX_WAIT)).await;
        }
    }
}

fn parse_token(bytes: &[u8]) -> Result<CachedToken, String> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the token response is not JSON: {e}"))?;
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the token response has no access_token")?;
    // Some endpoints (Azure AD v1, proxies) send expires_in as a string.
    let lifetime = match body.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs),
        Some(Value::String(s)) => s.parse().ok().map(Duration::from_secs),
        _ => None,
    }
    .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    let usable = lifetime
        .checked_sub(TOKEN_EXPIRY_MARGIN)
        .unwrap_or(lifetime / 2);
    Ok(CachedToken {
        value: Secret::new(token),
        renew_at: Instant::now() + usable,
        generation: 0,
    })
}

#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// Signs a short-lived RS256 assertion for a token endpoint.
fn sign_assertion(
    key: &EncodingKey,
    key_id: &Option<String>,
    issuer: &str,
    subject: Option<&str>,
    audience: &str,
    scope: Option<&str>,
) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = AssertionClaims {
        iss: issuer,
        sub: subject,
        aud: audience,
        iat: now,
        // Google accepts at most an hour; Okta at most an hour too. Five minutes is
        // plenty for one token request.
        exp: now + 300,
        jti: uuid::Uuid::new_v4().to_string(),
        scope,
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = key_id.clone();
    jsonwebtoken::encode(&header, &claims, key)
        .map_err(|e| format!("cannot sign the client assertion: {e}"))
}

/// The pages one paged listing has read. An IdP whose next-page cursor leads back to a
/// page already read, or that ignores the paging offset and answers the same page
/// again, would be followed forever: the pull would never end, and every later
/// scheduled run of that IdP would wait behind it. Such a listing is an error, never
/// its end, since the members not yet read would be deleted. One per listing.
#[derive(Debug)]
pub struct PageTrail {
    /// SHA-256 of each URL read: fixed size however long the cursors are.
    urls: HashSet<[u8; 32]>,
    /// SHA-256 of the ids of each page read of an offset-paged listing.
    pages: HashSet<[u8; 32]>,
    read: u64,
    limit: u64,
}

impl Default for PageTrail {
    fn default() -> Self {
        Self::with_limit(MAX_PAGES)
    }
}

impl PageTrail {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_limit(limit: u64) -> Self {
        Self {
            urls: HashSet::new(),
            pages: HashSet::new(),
            read: 0,
            limit,
        }
    }

    /// Call before reading each page, the first included, with the URL that reads it
    /// (cursor, token or offset in it): refuses a URL already read, and a page past
    /// [`MAX_PAGES`].
    pub fn visit(&mut self, url: &str) -> Result<(), IdpError> {
        if !self.urls.insert(digest([url.as_bytes()])) {
            return Err(IdpError::Decode {
                url: url.to_owned(),
                message: format!(
                    "after {} the next-page cursor points back at a page already read; \
                     following it would never end",
                    pages(self.read)
                ),
            });
        }
        if self.read >= self.limit {
            return Err(IdpError::Decode {
                url: url.to_owned(),
                message: format!(
                    "still more pages after {}; giving up rather than paging forever",
                    pages(self.read)
                ),
            });
        }
        self.read += 1;
        Ok(())
    }

    /// For offset-paged listings (`first`/`max`, `page`), whose URLs never repeat:
    /// call with the ids of each non-empty page. A page holding exactly the items of a
    /// page already read means the server ignores the offset.
    pub fn check_items<'a>(
        &mut self,
        url: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), IdpError> {
        // Each id is followed by a NUL (which no id holds), so that ["ab"] and
        // ["a", "b"] differ.
        let fingerprint = digest(ids.into_iter().flat_map(|id| [id.as_bytes(), &b"\0"[..]]));
        if !self.pages.insert(fingerprint) {
            return Err(IdpError::Decode {
                url: url.to_owned(),
                message: format!(
                    "page {} holds the same items as a page already read (does the server \
                     ignore the paging offset?); reading on would never end",
                    self.read
                ),
            });
        }
        Ok(())
    }
}

fn pages(n: u64) -> String {
    match n {
        1 => "1 page".to_owned(),
        n => format!("{n} pages"),
    }
}

fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A next-page link must point at the same scheme, host and port as the API: the
/// client sends its bearer token there, and a link elsewhere would hand it away.
pub(crate) fn checked_next_link(base: &str, next: &str) -> Result<String, IdpError> {
    let refuse = |message: String| IdpError::Decode {
        url: base.to_owned(),
        message,
    };
    let link = url::Url::parse(next).map_err(|e| {
        refuse(format!(
            "the next-page link is not an absolute URL ({e}): {:?}",
            excerpt(next)
        ))
    })?;
    let api = url::Url::parse(base)
        .map_err(|e| refuse(format!("the API base URL is not a URL ({e})")))?;
    if link.origin() != api.origin() {
        return Err(refuse(format!(
            "refusing to follow a next-page link to another host: {}",
            excerpt(next)
        )));
    }
    Ok(next.to_owned())
}

/// Parses `Retry-After` as seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        // `from_secs_f64` panics past Duration::MAX (`Retry-After: 1e30`); so long a
        // wait is as good as the longest, which every caller caps at MAX_WAIT.
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// When the rate-limit window resets: Okta and Auth0 send a Unix time, OneLogin a
/// number of seconds; a value that large can only be a timestamp.
pub fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let value = ["x-rate-limit-reset", "x-ratelimit-reset"]
        .iter()
        .find_map(|h| header_u64(headers, h))?;
    if value > 1_000_000_000 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        // A second of slack: the IdP's clock and ours differ a little, and waking a
        // moment early just costs another 429.
        Some(Duration::from_secs(value.saturating_sub(now) + 1))
    } else {
        Some(Duration::from_secs(value))
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Google signals per-user and project quotas as 403 with these reasons.
fn is_google_rate_limit(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let reasons = value
        .pointer("/error/errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("reason").and_then(Value::as_str));
    reasons.into_iter().any(|r| {
        matches!(
            r,
            "userRateLimitExceeded" | "rateLimitExceeded" | "quotaExceeded"
        )
    })
}

/// What went wrong on the wire, in words. reqwest's own text ("error sending request")
/// hides the cause in its source chain; a timeout says which limit it hit. No URL (the
/// caller names it) and nothing from the request, so no credential.
fn transport_message(e: reqwest::Error, policy: &RetryPolicy) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        return if e.is_connect() {
            format!(
                "no connection within {}",
                seconds(CONNECT_TIMEOUT.min(policy.request_timeout))
            )
        } else {
            format!(
                "timed out: no complete answer within {} (request_timeout_secs)",
                seconds(policy.request_timeout)
            )
        };
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Why a successful answer is not the JSON that was asked for, for an operator: an
/// error page, an empty or truncated body, or JSON of the wrong shape. Quotes at most
/// the start of the body.
fn decode_message(bytes: &[u8], headers: &HeaderMap, e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no Content-Type");
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return format!(
            "the body is empty ({content_type}, {} bytes) where JSON was expected",
            bytes.len()
        );
    }
    match e.classify() {
        Category::Syntax if trimmed.starts_with('<') => format!(
            "the body is not JSON but {content_type} (an error or sign-in page?), beginning {:?}",
            excerpt(trimmed)
        ),
        Category::Eof => format!(
            "the JSON body stops after {} bytes, in the middle of a value (truncated): {e}",
            bytes.len()
        ),
        Category::Syntax => format!("the body is not valid JSON ({content_type}): {e}"),
        Category::Data => format!("the JSON does not have the expected shape: {e}"),
        Category::Io => e.to_string(),
    }
}

/// The first few words of a body, on one line.
fn excerpt(text: &str) -> String {
    let start: String = text.chars().take(400).collect();
    let one_line: String = start.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// The IdP's own error text, from whichever field its error format uses; short, so
/// that a log line stays a line.
fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(v) => [
            "/error/message",
            "/error_description",
            "/errorSummary",
            "/errorMessage",
            "/message",
            "/error",
            "/status/message",
        ]
        .iter()
        .find_map(|p| v.pointer(p).and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim();
    if text.is_empty() {
        return "(no details)".into();
    }
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        let past = retry_after(&headers(&[(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        )]));
        assert_eq!(past, Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
    }

    #[test]
    fn an_overflowing_retry_after_is_the_longest_wait_not_a_panic() {
        for huge in ["1e30", "18446744073709551616", "1e308"] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", huge)])),
                Some(Duration::MAX),
                "{huge}"
            );
        }
    }

    #[test]
    fn a_rate_limit_reset_is_a_unix_time_or_a_number_of_seconds() {
        assert_eq!(
            rate_limit_reset(&headers(&[("x-ratelimit-reset", "7")])),
            Some(Duration::from_secs(7))
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let wait =
            rate_limit_reset(&headers(&[("x-rate-limit-reset", &(now + 10).to_string())])).unwrap();
        assert!(wait >= Duration::from_secs(9) && wait <= Duration::from_secs(12));
    }

    #[test]
    fn google_quota_errors_are_recognised_as_throttling() {
        let body = br#"{"error":{"code":403,"errors":[{"reason":"userRateLimitExceeded"}]}}"#;
        assert!(is_google_rate_limit(body));
        let body = br#"{"error":{"code":403,"errors":[{"reason":"forbidden"}]}}"#;
        assert!(!is_google_rate_limit(body));
    }

    #[test]
    fn error_messages_come_from_the_idps_error_fields_and_are_short() {
        assert_eq!(
            error_message(br#"{"error":{"code":"Forbidden","message":"Insufficient privileges"}}"#),
            "Insufficient privileges"
        );
        assert_eq!(
            error_message(br#"{"errorSummary":"Not found"}"#),
            "Not found"
        );
        assert!(error_message(&[b'x'; 1000]).chars().count() <= 201);
    }

    #[test]
    fn a_successful_answer_that_is_not_the_json_asked_for_is_described_for_an_operator() {
        let describe = |body: &str, content_type: &str| {
            let h = headers(&[("content-type", content_type)]);
            let e = serde_json::from_slice::<Vec<u32>>(body.as_bytes()).unwrap_err();
            decode_message(body.as_bytes(), &h, &e)
        };
        let html = describe("<!DOCTYPE html>\n<html><title>Sign in</title>", "text/html");
        assert_eq!(
            html,
            "the body is not JSON but text/html (an error or sign-in page?), \
             beginning \"<!DOCTYPE html> <html><title>Sign in</title>\""
        );
        assert!(describe("[1, 2, 3", "application/json").contains("truncated"));
        assert!(describe("", "application/json").starts_with("the body is empty"));
        assert!(describe(r#"{"value": []}"#, "application/json").contains("expected shape"));
        assert!(describe("[1, 2] trailing", "application/json").contains("not valid JSON"));
        assert!(excerpt(&"word ".repeat(1000)).chars().count() <= 81);
    }

    #[test]
    fn a_page_trail_refuses_a_url_already_read_and_names_it() {
        let mut trail = PageTrail::new();
        trail
            .visit("https://idp.example/api/users?limit=2")
            .unwrap();
        trail
            .visit("https://idp.example/api/users?after=b&limit=2")
            .unwrap();
        let e = trail
            .visit("https://idp.example/api/users?limit=2")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "GET https://idp.example/api/users?limit=2: unexpected response: after 2 pages \
             the next-page cursor points back at a page already read; following it would \
             never end"
        );
    }

    #[test]
    fn a_page_trail_stops_a_listing_that_never_ends() {
        let mut trail = PageTrail::with_limit(3);
        for n in 0..3 {
            trail
                .visit(&format!("https://idp.example/p?cursor={n}"))
                .unwrap();
        }
        let e = trail
            .visit("https://idp.example/p?cursor=3")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("https://idp.example/p?cursor=3")
                && e.contains("still more pages after 3 pages"),
            "{e}"
        );
        assert!(
            PageTrail::new().limit >= 100_000,
            "the real bound is generous"
        );
    }

    #[test]
    fn a_page_trail_refuses_a_page_that_repeats_the_items_of_one_already_read() {
        let mut trail = PageTrail::new();
        trail.visit("https://kc.example/members?first=0").unwrap();
        trail
            .check_items("https://kc.example/members?first=0", ["u1", "u2"])
            .unwrap();
        trail.visit("https://kc.example/members?first=2").unwrap();
        // The same ids cut differently are other items.
        trail
            .check_items("https://kc.example/members?first=2", ["u", "1u2"])
            .unwrap();
        trail.visit("https://kc.example/members?first=4").unwrap();
        let e = trail
            .check_items("https://kc.example/members?first=4", ["u1", "u2"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("https://kc.example/members?first=4")
                && e.contains("page 3 holds the same items as a page already read"),
            "{e}"
        );
    }

    #[test]
    fn a_next_link_must_be_an_absolute_url_on_the_apis_own_host() {
        let base = "https://example.okta.com/api/v1";
        assert_eq!(
            checked_next_link(base, "https://example.okta.com/api/v1/groups?after=x").unwrap(),
            "https://example.okta.com/api/v1/groups?after=x"
        );
        let garbage = checked_next_link(base, "%%garbage%%")
            .unwrap_err()
            .to_string();
        assert!(
            garbage.contains("the next-page link is not an absolute URL")
                && garbage.contains("%%garbage%%")
                && !garbage.contains("another host"),
            "{garbage}"
        );
        let relative = checked_next_link(base, "/api/v1/groups?after=x")
            .unwrap_err()
            .to_string();
        assert!(relative.contains("not an absolute URL"), "{relative}");
        for elsewhere in [
            "https://attacker.example/api/v1/groups",
            "http://example.okta.com/api/v1/groups",
            "https://example.okta.com:8443/api/v1/groups",
        ] {
            let e = checked_next_link(base, elsewhere).unwrap_err().to_string();
            assert!(e.contains("to another host"), "{elsewhere}: {e}");
        }
    }

    #[test]
    fn token_lifetimes_may_be_numbers_or_strings() {
        assert!(parse_token(br#"{"access_token":"t","expires_in":"3599"}"#).is_ok());
        assert!(parse_token(br#"{"access_token":"t","expires_in":3599}"#).is_ok());
        assert!(parse_token(br#"{"expires_in":3599}"#).is_err());
    }
}
