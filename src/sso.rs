//! The sign-in hook: `POST /v1/sso/sign-in`, called by the gateway from its SSO
//! callback, makes one user's team memberships match their IdP groups.
//!
//! The body names the user (`{"idp", "user"}`) or carries their id_token
//! (`{"idp", "id_token"}`). A token is verified against the IdP's JWKS (RS256 or ES256
//! only; issuer, audience, expiry, not-before) and its groups claim used; when the claim
//! is missing, signals an Entra overage (`_claim_names`), or holds Entra object ids that
//! need names, the connector asks the IdP. The result is a desired state of scope
//! "this user's memberships": the user is created if new (default role), a team is
//! created for each managed group they are in, memberships are added and removed to
//! match, and no other user is touched.
//!
//! An IdP that is slow must not hold a sign-in: after `[sso] timeout_secs` the answer
//! is 200 `{"status": "deferred"}` and the work goes on in the background, retried a
//! few times with backoff.

use crate::auth::{Authorized, SsoScope};
use crate::config::{Config, IdpConfig, IdpKind};
use crate::domain::{Source, TeamName, Trigger, UserName};
use crate::error::{ApiError, ScimType};
use crate::idp::{self, Idp, IdpError, IdpUser};
use crate::reconcile::{
    self, Actor, Desired, DesiredTeam, DesiredUser, Engine, EngineError, Plan, Policy, Request,
    Scope,
};
use crate::state::AppState;
use crate::store::{Store, StoreError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Signing keys are re-read this often, so a rotated key is picked up.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// A token naming an unknown key id re-reads the JWKS at most this often, so forged
/// key ids cannot make us hammer the IdP.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Clock skew tolerated on exp and nbf.
const LEEWAY_SECS: u64 = 60;
/// Background attempts of a deferred sign-in, and the first wait between them.
const BACKGROUND_ATTEMPTS: u32 = 6;
const BACKGROUND_FIRST_WAIT: Duration = Duration::from_secs(1);

/// The sign-in route, with the connector and JWKS caches it keeps for the app's life.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sso/sign-in", post(sign_in))
        .layer(Extension(Arc::new(SsoRuntime::default())))
}

/// Connectors (with their cached access tokens) and signing keys, per IdP.
#[derive(Default)]
pub struct SsoRuntime {
    /// Each with the `[[idp]]` table it was built from.
    idps: tokio::sync::Mutex<HashMap<String, (IdpConfig, Arc<Idp>)>>,
    jwks: tokio::sync::Mutex<HashMap<String, CachedJwks>>,
    /// The configuration's reload notifications, from the first sign-in on. A reload
    /// (SIGHUP) may change an IdP's issuer, JWKS URL or credentials, or come right
    /// after a key rotation at the IdP: nothing cached before it is used after it.
    reloads: tokio::sync::Mutex<Option<tokio::sync::watch::Receiver<Arc<Config>>>>,
}

struct CachedJwks {
    keys: JwkSet,
    fetched: Instant,
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no [[idp]] named {0:?}")]
    UnknownIdp(String),
    /// The id_token is not acceptable; the message says why without repeating it.
    #[error("{0}")]
    InvalidToken(String),
    #[error("cannot read the IdP's signing keys: {0}")]
    JwksUnavailable(String),
    #[error(transparent)]
    Idp(#[from] IdpError),
    #[error(transparent)]
    Reconcile(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SsoError {
    fn is_transient(&self) -> bool {
        match self {
            SsoError::Idp(e) => e.is_transient(),
            SsoError::JwksUnavailable(_) => true,
            _ => false,
        }
    }
}

impl From<SsoError> for ApiError {
    fn from(e: SsoError) -> Self {
        match e {
            SsoError::BadRequest(m) => ApiError::bad_request(ScimType::InvalidValue, m),
            SsoError::UnknownIdp(_) => ApiError::not_found(e.to_string()),
            SsoError::InvalidToken(m) => ApiError::unauthorized(m),
            SsoError::Idp(IdpError::UserNotFound(_)) => ApiError::not_found(e.to_string()),
            SsoError::JwksUnavailable(_) => {
                tracing::warn!(error = %e, "sign-in refused: signing keys unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the IdP's signing keys cannot be read right now; try again",
                )
                .with_retry_after(5)
            }
            SsoError::Idp(ref inner) => {
                // The IdP's answer may name internal URLs; the log has it, the client
                // gets the gist.
                tracing::error!(error = %inner, "sign-in failed at the IdP");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "the IdP refused or failed the lookup; the server log has the details",
                )
            }
            SsoError::Reconcile(e) => e.into(),
            SsoError::Store(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInRequest {
    idp: String,
    user: Option<String>,
    id_token: Option<String>,
    /// Plan only: answer with what would change and change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Who signs in, and how much of their state is already known.
#[derive(Debug, Clone)]
enum Subject {
    /// Ask the IdP for the user (by id, userName or email) and their groups.
    Lookup(String),
    /// The verified token said everything.
    Known {
        user: IdpUser,
        groups: Vec<SignInGroup>,
    },
}

/// A managed group the user is in. Groups named only by a token claim have no
/// external id; the team is then found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignInGroup {
    external_id: Option<String>,
    name: String,
}

/// What a sign-in did (or, dry, would do).
#[derive(Debug, Clone)]
pub struct SignInOutcome {
    pub idp: String,
    pub user_name: String,
    pub teams: Vec<String>,
    pub plan: Plan,
    pub applied: bool,
}

impl SignInOutcome {
    pub fn to_json(&self) -> Value {
        let plan: Value = serde_json::from_str(&reconcile::render::render_json(&self.plan))
            .unwrap_or(Value::Null);
        json!({
            "status": if self.applied { "applied" } else { "planned" },
            "idp": self.idp,
            "user": self.user_name,
            "teams": self.teams,
            "plan": plan,
        })
    }
}

async fn sign_in(
    State(state): State<AppState>,
    Extension(runtime): Extension<Arc<SsoRuntime>>,
    auth: Authorized<SsoScope>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: SignInRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            ScimType::InvalidSyntax,
            format!(r#"the body must be {{"idp": NAME, "user": USER}} or {{"idp": NAME, "id_token": JWT}}: {e}"#),
        )
    })?;
    runtime.forget_caches_after_reload(&state).await;
    let config = state.current_config();
    let idp_config = idp::idp_config(&config, &request.idp)
        .map_err(|_| SsoError::UnknownIdp(request.idp.clone()))?
        .clone();
    let timeout = Duration::from_secs(config.sso.timeout_secs.max(1));
    let subject = match (request.user, request.id_token) {
        (Some(user), None) if !user.trim().is_empty() => Subject::Lookup(user.trim().to_owned()),
        (None, Some(token)) => {
            let claims = tokio::time::timeout(timeout, runtime.verify(&idp_config, &token))
                .await
                .map_err(|_| SsoError::JwksUnavailable("timed out".into()))??;
            subject_from_claims(&idp_config, &claims)?
        }
        _ => {
            return Err(SsoError::BadRequest(
                "give either \"user\" or \"id_token\", not both".into(),
            )
            .into())
        }
    };
    let job = SignInJob {
        runtime,
        store: state.store.clone(),
        config,
        idp: request.idp.clone(),
        subject,
        actor: Actor::new(Trigger::Sso, auth.token.name.clone()),
        dry_run: request.dry_run,
    };
    let mut handle = tokio::spawn(job.run_with_retries());
    match tokio::time::timeout(timeout, &mut handle).await {
        Ok(Ok(Ok(outcome))) => Ok(Json(outcome.to_json()).into_response()),
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(join)) => {
            tracing::error!(error = %join, "sign-in task failed");
            Err(ApiError::internal())
        }
        Err(_) if request.dry_run => {
            handle.abort();
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the IdP did not answer within [sso] timeout_secs",
            )
            .with_retry_after(5))
        }
        Err(_) => {
            tracing::warn!(idp = %request.idp, timeout_secs = timeout.as_secs(),
                "the IdP is slow; sign-in deferred, finishing in the background");
            Ok(Json(json!({
                "status": "deferred",
                "idp": request.idp,
                "detail": "the IdP did not answer in time; memberships will be updated in the background",
            }))
            .into_response())
        }
    }
}

/// One sign-in's work, owned so that it can outlive the request.
struct SignInJob {
    runtime: Arc<SsoRuntime>,
    store: Store,
    config: Arc<Config>,
    idp: String,
    subject: Subject,
    actor: Actor,
    dry_run: bool,
}

impl SignInJob {
    /// Runs the sign-in; an unreachable or throttling IdP is tried again with backoff.
    async fn run_with_retries(self) -> Result<SignInOutcome, SsoError> {
        let mut wait = BACKGROUND_FIRST_WAIT;
        let mut attempt = 1;
        loop {
            match self.run_once().await {
                Err(e) if e.is_transient() && attempt < BACKGROUND_ATTEMPTS => {
                    tracing::warn!(idp = %self.idp, error = %e, attempt,
                        "sign-in could not reach the IdP; trying again");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(idp = %self.idp, error = %e, "sign-in sync failed");
                    return Err(e);
                }
                Ok(outcome) => {
                    tracing::info!(idp = %self.idp, user = %outcome.user_name,
                        teams = outcome.teams.len(), operations = outcome.plan.ops.len(),
                        applied = outcome.applied, "sign-in synced");
                    return Ok(outcome);
                }
            }
        }
    }

    async fn run_once(&self) -> Result<SignInOutcome, SsoError> {
        let (user, groups) = match &self.subject {
            Subject::Known { user, groups } => (user.clone(), groups.clone()),
            Subject::Lookup(key) => {
                let idp = self.runtime.idp(&self.config, &self.idp).await?;
                let (user, groups) = idp.user_with_groups(key).await?;
                let groups = groups
                    .into_iter()
                    .map(|g| SignInGroup {
                        external_id: Some(g.id),
                        name: g.name,
                    })
                    .collect();
                (user, groups)
            }
        };
        let desired = desired_for(&self.idp, &user, &groups)?;
        let policy = Policy::from_config(&self.config, crate::store::now());
        let engine = Engine::new(self.store.clone());
        let request = Request::new(&desired, &policy, &self.actor);
        let plan = if self.dry_run {
            engine.plan(request).await?
        } else {
            engine.apply(request).await?.plan
        };
        Ok(SignInOutcome {
            idp: self.idp.clone(),
            user_name: desired.users[0].user_name.as_str().to_owned(),
            teams: desired
                .teams
                .iter()
                .map(|t| t.display_name.as_str().to_owned())
                .collect(),
            plan,
            applied: !self.dry_run,
        })
    }
}

/// The desired state of one sign-in: this user, in exactly these of the IdP's teams.
fn desired_for(idp: &str, user: &IdpUser, groups: &[SignInGroup]) -> Result<Desired, SsoError> {
    let user_name = UserName::parse(&user.user_name).map_err(|e| {
        SsoError::BadRequest(format!(
            "the IdP's userName {:?} is not usable: {e}",
            user.user_name
        ))
    })?;
    let desired_user = DesiredUser {
        external_id: (!user.id.is_empty()).then(|| user.id.clone()),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        given_name: user.given_name.clone(),
        family_name: user.family_name.clone(),
        active: user.active,
        ..DesiredUser::new(user_name)
    };
    let mut teams: Vec<DesiredTeam> = Vec::new();
    for g in groups {
        match TeamName::parse(&g.name) {
            Ok(name) => {
                if teams.iter().any(|t| t.display_name == name) {
                    continue;
                }
                teams.push(DesiredTeam {
                    external_id: g.external_id.clone(),
                    ..DesiredTeam::new(name)
                })
            }
            Err(e) => tracing::warn!(idp, group = %g.name, error = %e,
                "a group's name cannot be a team name; skipped"),
        }
    }
    teams.sort_by(|a, b| a.display_name.as_str().cmp(b.display_name.as_str()));
    Ok(Desired {
        users: vec![desired_user],
        teams,
        ..Desired::new(Source::Sso(idp.to_owned()), Scope::UserMemberships)
    })
}

/// Reads the user and, when the token holds them as names, the groups from verified
/// claims.
fn subject_from_claims(
    config: &IdpConfig,
    claims: &Map<String, Value>,
) -> Result<Subject, SsoError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let user_claims = config.user_claims.clone().unwrap_or_else(|| {
        vec![
            "preferred_username".to_owned(),
            "upn".to_owned(),
            "email".to_owned(),
        ]
    });
    let user_name = user_claims
        .iter()
        .find_map(|c| text(c).filter(|v| !v.trim().is_empty()))
        .ok_or_else(|| {
            SsoError::InvalidToken(format!(
                "the id_token has none of the user claims {}",
                user_claims.join(", ")
            ))
        })?;
    // Entra's stable object id is `oid`; everywhere else it is `sub`.
    let id = text("oid").or_else(|| text("sub")).unwrap_or_default();
    let groups_claim = config.groups_claim.as_deref().unwrap_or("groups");
    let overage = claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(groups_claim));
    let listed: Option<Vec<String>> = claims.get(groups_claim).and_then(|v| match v {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Value::String(one) => Some(vec![one.clone()]),
        _ => None,
    });
    match listed {
        // Entra puts object ids in the claim; names (and the selector's view of them)
        // come from Graph, as they do on an overage or when the claim is absent.
        Some(groups) if !overage && config.kind != IdpKind::Entra => {
            let selector = idp::GroupSelector::new(&config.groups);
            let groups = groups
                .into_iter()
                .filter_map(|value| {
                    // Keycloak's claim holds paths ("/parent/child"); the team is the leaf.
                    let name = value.rsplit('/').next().unwrap_or(&value).to_owned();
                    (selector.matches_name(&value) || selector.matches_name(&name))
                        .then_some(SignInGroup {
                            external_id: None,
                            name,
                        })
                        .filter(|g| !g.name.is_empty())
                })
                .collect();
            Ok(Subject::Known {
                user: IdpUser {
                    id,
                    email: text("email"),
                    display_name: text("name"),
                    given_name: text("given_name"),
                    family_name: text("family_name"),
                    active: true,
                    user_name,
                },
                groups,
            })
        }
        _ => Ok(Subject::Lookup(if id.is_empty() { user_name } else { id })),
    }
}

impl SsoRuntime {
    /// Drops the cached connectors and signing keys when the configuration has been
    /// reloaded since they were cached.
    async fn forget_caches_after_reload(&self, state: &AppState) {
        let mut reloads = self.reloads.lock().await;
        let Some(receiver) = reloads.as_mut() else {
            // Nothing is cached before the first sign-in; watch from here on.
            *reloads = Some(state.subscribe_config());
            return;
        };
        // An error means the sender is gone, and with it any further reload.
        if receiver.has_changed().unwrap_or(false) {
            receiver.mark_unchanged();
            // Taking each lock waits for a fetch in flight, so its result is dropped
            // too rather than cached after the clearing.
            self.idps.lock().await.clear();
            self.jwks.lock().await.clear();
            tracing::info!(
                "configuration reloaded: sign-in connectors and signing keys will be fetched again"
            );
        }
    }

    /// The connector for `name`, built on first use and kept (with its token cache)
    /// while it is built from the configuration in force.
    async fn idp(&self, config: &Config, name: &str) -> Result<Arc<Idp>, SsoError> {
        let wanted = idp::idp_config(config, name)?;
        let mut idps = self.idps.lock().await;
        // A sign-in begun before a reload still holds the old table; what it built
        // must not serve sign-ins begun after, nor the other way round.
        if let Some((built_from, idp)) = idps.get(name) {
            if built_from == wanted {
                return Ok(idp.clone());
            }
        }
        let idp = Arc::new(Idp::from_config(wanted)?);
        idps.insert(name.to_owned(), (wanted.clone(), idp.clone()));
        Ok(idp)
    }

    /// Verifies an id_token and returns its claims.
    async fn verify(
        &self,
        config: &IdpConfig,
        token: &str,
    ) -> Result<Map<String, Value>, SsoError> {
        let invalid = |m: &str| SsoError::InvalidToken(m.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("the id_token is not a well-formed signed JWT"))?;
        // Only the asymmetric algorithms IdPs sign with: `none` is not even parsed by
        // decode_header, and HS* would let anyone holding the client secret mint tokens.
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(SsoError::InvalidToken(format!(
                "id_token algorithm {:?} is not accepted (RS256 or ES256 only)",
                header.alg
            )));
        }
        let (issuer, audience, jwks_url) = token_settings(config)?;
        let jwk = self
            .signing_key(&jwks_url, header.kid.as_deref(), header.alg)
            .await?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| invalid("the IdP's signing key cannot be used"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                invalid(match e.kind() {
                    K::ExpiredSignature => "the id_token has expired",
                    K::ImmatureSignature => "the id_token is not valid yet",
                    K::InvalidAudience => "the id_token was issued for another audience",
                    K::InvalidIssuer => "the id_token was issued by another issuer",
                    K::InvalidSignature => "the id_token's signature does not verify",
                    K::MissingRequiredClaim(_) => "the id_token lacks exp, iss or aud",
                    _ => "the id_token is invalid",
                })
            })?;
        Ok(data.claims)
    }

    /// The JWK for `kid`, from the cache or the IdP. A key whose type does not fit the
    /// token's algorithm is never used (an RSA key cannot verify an ES256 token and
    /// vice versa).
    async fn signing_key(
        &self,
        jwks_url: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Jwk, SsoError> {
        let fits = |jwk: &Jwk| {
            let family = matches!(
                (&jwk.algorithm, alg),
                (AlgorithmParameters::RSA(_), Algorithm::RS256)
                    | (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256)
            );
            let id = match kid {
                Some(kid) => jwk.common.key_id.as_deref() == Some(kid),
                None => true,
            };
            family && id
        };
        let mut cache = self.jwks.lock().await;
        let stale = missing_or_older_than(cache.get(jwks_url), JWKS_MAX_AGE);
        if !stale {
            if let Some(found) = cache
                .get(jwks_url)
                .and_then(|c| c.keys.keys.iter().find(|k| fits(k)))
            {
                return Ok(found.clone());
            }
        }
        let may_refetch = missing_or_older_than(cache.get(jwks_url), JWKS_MIN_REFETCH);
        if stale || may_refetch {
            let keys = fetch_jwks(jwks_url).await?;
            cache.insert(
                jwks_url.to_owned(),
                CachedJwks {
                    keys,
                    fetched: Instant::now(),
                },
            );
        }
        cache
            .get(jwks_url)
            .and_then(|c| c.keys.keys.iter().find(|k| fits(k)).cloned())
            .ok_or_else(|| {
                SsoError::InvalidToken(
                    "the id_token was signed with a key the IdP does not publish".into(),
                )
            })
    }
}

fn missing_or_older_than(cached: Option<&CachedJwks>, age: Duration) -> bool {
    match cached {
        Some(c) => c.fetched.elapsed() >= age,
        None => true,
    }
}

async fn fetch_jwks(url: &str) -> Result<JwkSet, SsoError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| SsoError::JwksUnavailable(e.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| SsoError::JwksUnavailable(format!("GET {url}: {}", e.without_url())))?;
    if !response.status().is_success() {
        return Err(SsoError::JwksUnavailable(format!(
            "GET {url} answered {}",
            response.status()
        )));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| SsoError::JwksUnavailable(format!("GET {url}: {}", e.without_url())))?;
    // A JWKS may hold keys of kinds this library does not know (e.g. for encryption);
    // they are skipped rather than failing the whole set.
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| SsoError::JwksUnavailable(format!("GET {url}: not JSON: {e}")))?;
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .collect();
    Ok(JwkSet { keys })
}

/// Issuer, audience and JWKS URL for an IdP's tokens: configured, or the kind's
/// well-known values.
fn token_settings(config: &IdpConfig) -> Result<(String, String, String), SsoError> {
    let missing = |key: &str| {
        SsoError::BadRequest(format!(
            "IdP {:?} cannot verify id_tokens: set {key} in its [[idp]] table",
            config.name
        ))
    };
    let audience = config
        .audience
        .clone()
        .or_else(|| config.client_id.clone())
        .ok_or_else(|| missing("audience (or client_id)"))?;
    let trimmed = |s: &Option<String>| s.as_deref().map(|s| s.trim_end_matches('/').to_owned());
    let (issuer, jwks) = match config.kind {
        IdpKind::Entra => {
            let login = trimmed(&config.login_url)
                .unwrap_or_else(|| crate::idp::graph::DEFAULT_LOGIN_URL.to_owned());
            let tenant = config.tenant_id.clone().unwrap_or_default();
            (
                format!("{login}/{tenant}/v2.0"),
                format!("{login}/{tenant}/discovery/v2.0/keys"),
            )
        }
        IdpKind::Okta => {
            let domain = config.domain.clone().unwrap_or_default();
            (
                format!("https://{domain}"),
                format!("https://{domain}/oauth2/v1/keys"),
            )
        }
        IdpKind::Google => (
            "https://accounts.google.com".to_owned(),
            "https://www.googleapis.com/oauth2/v3/certs".to_owned(),
        ),
        IdpKind::Keycloak => {
            let server = trimmed(&config.server_url).unwrap_or_default();
            let realm = config.realm.clone().unwrap_or_default();
            (
                format!("{server}/realms/{realm}"),
                format!("{server}/realms/{realm}/protocol/openid-connect/certs"),
            )
        }
        IdpKind::Auth0 => {
            let domain = config.domain.clone().unwrap_or_default();
            (
                format!("https://{domain}/"),
                format!("https://{domain}/.well-known/jwks.json"),
            )
        }
        IdpKind::Onelogin => (String::new(), String::new()),
    };
    let issuer = config.issuer.clone().unwrap_or(issuer);
    let jwks = config.jwks_url.clone().unwrap_or(jwks);
    if issuer.is_empty() {
        return Err(missing("issuer"));
    }
    if jwks.is_empty() {
        return Err(missing("jwks_url"));
    }
    Ok((issuer, audience, jwks))
}

/// `scimsync sso-sign-in`: the same sync as the hook, from a shell, without deferral.
pub async fn sign_in_from_cli(
    store: &Store,
    config: Arc<Config>,
    idp: &str,
    user: &str,
    dry_run: bool,
) -> Result<SignInOutcome, SsoError> {
    idp::idp_config(&config, idp).map_err(|_| SsoError::UnknownIdp(idp.to_owned()))?;
    SignInJob {
        runtime: Arc::new(SsoRuntime::default()),
        store: store.clone(),
        config,
        idp: idp.to_owned(),
        subject: Subject::Lookup(user.to_owned()),
        actor: Actor::new(Trigger::Sso, "cli"),
        dry_run,
    }
    .run_once()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keycloak() -> IdpConfig {
        let mut c = IdpConfig::new("kc", IdpKind::Keycloak);
        c.groups = vec!["LLM *".into()];
        c
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_groups_claim_of_names_is_filtered_by_the_selection() {
        let s = subject_from_claims(
            &keycloak(),
            &claims(
                json!({"sub": "u1", "preferred_username": "alice@example.com",
                "groups": ["/LLM Users", "/org/LLM Admins", "Sales"]}),
            ),
        )
        .unwrap();
        let Subject::Known { user, groups } = s else {
            panic!("the claim is enough");
        };
        assert_eq!(user.user_name, "alice@example.com");
        assert_eq!(user.id, "u1");
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["LLM Users", "LLM Admins"]);
    }

    #[test]
    fn an_entra_overage_sends_the_sign_in_to_graph() {
        let mut c = keycloak();
        c.kind = IdpKind::Entra;
        let s = subject_from_claims(
            &c,
            &claims(json!({"oid": "o-1", "preferred_username": "a@b.c",
                "_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {}}})),
        )
        .unwrap();
        assert!(matches!(s, Subject::Lookup(ref id) if id == "o-1"));
    }

    #[test]
    fn a_token_without_a_user_claim_is_refused() {
        let e = subject_from_claims(&keycloak(), &claims(json!({"sub": "u1"}))).unwrap_err();
        assert!(matches!(e, SsoError::InvalidToken(_)));
    }
}
