//! Bearer authentication: one extractor for tokens (with their scope) and one for
//! gateway API keys.

use crate::domain::TokenScope;
use crate::error::ApiError;
use crate::keys::{self, API_KEY_PREFIX, TOKEN_PREFIX};
use crate::state::AppState;
use crate::store::{KeyPrincipal, Ticket, TokenPrincipal};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Marks which scope a route needs.
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: TokenScope;
    /// What the route family is called in a 403 message.
    const SURFACE: &'static str;
}

pub struct ScimScope;
impl RequiredScope for ScimScope {
    const SCOPE: TokenScope = TokenScope::Scim;
    const SURFACE: &'static str = "the SCIM API";
}

pub struct SsoScope;
impl RequiredScope for SsoScope {
    const SCOPE: TokenScope = TokenScope::Sso;
    const SURFACE: &'static str = "the sign-in hook";
}

pub struct AdminScope;
impl RequiredScope for AdminScope {
    const SCOPE: TokenScope = TokenScope::Admin;
    const SURFACE: &'static str = "the admin API";
}

/// A request carrying a valid, unrevoked token of scope `S`.
pub struct Authorized<S> {
    pub token: TokenPrincipal,
    /// What the token was checked under: a read-only handler serves its cached reads
    /// under it too (one freshness check a request; see [`crate::store::TokenCheck`]).
    pub ticket: Ticket,
    _scope: PhantomData<S>,
}

/// Put in a request's extensions by a middleware that wants to know whether the
/// request's bearer token was accepted; [`Authorized`] sets it once it has been (valid,
/// of the route's scope, within its rate limit). Metrics use it so that clients
/// without a valid token cannot inflate the count of operations.
#[derive(Debug, Clone, Default)]
pub struct AuthenticatedMark(Arc<AtomicBool>);

impl AuthenticatedMark {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Takes the credential out of `Authorization: Bearer <credential>`.
///
/// Two Authorization headers are refused (400, as RFC 6750 §3.1 asks of a repeated
/// parameter) rather than one of them picked: a proxy that adds its own header in
/// front of the client's must not decide whose credential is checked.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let mut headers = parts.headers.get_all(AUTHORIZATION).iter();
    let header = headers
        .next()
        .ok_or_else(|| ApiError::unauthorized("an Authorization: Bearer header is required"))?;
    if headers.next().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "more than one Authorization header; send exactly one",
        ));
    }
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let (scheme, credential) = value.trim().split_once(' ').ok_or_else(|| {
        ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized(
            "the Authorization header must use the Bearer scheme",
        ));
    }
    Ok(credential.trim())
}

impl<S: RequiredScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = bearer(parts)?;
        if !keys::is_well_formed(credential, TOKEN_PREFIX) {
            return Err(ApiError::unauthorized("the bearer token is malformed"));
        }
        let check = state
            .store
            .authenticate_token(&keys::hash_secret(credential))
            .await?;
        let token = check
            .principal
            .ok_or_else(|| ApiError::unauthorized("the bearer token is unknown or revoked"))?;
        if token.scope != S::SCOPE {
            return Err(ApiError::forbidden(format!(
                "this token has scope {}; {} needs a token of scope {}",
                token.scope,
                S::SURFACE,
                S::SCOPE
            )));
        }
        if let Err(seconds) = state.take_rate_limit(&token.name) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("this token exceeded its rate limit; retry in {seconds} s"),
            )
            .with_retry_after(seconds));
        }
        state.note_token_use(&token.name);
        if let Some(mark) = parts.extensions.get::<AuthenticatedMark>() {
            mark.set();
        }
        Ok(Self {
            token,
            ticket: check.ticket,
            _scope: PhantomData,
        })
    }
}

/// A request carrying a valid gateway API key.
pub struct ApiKeyAuth(pub KeyPrincipal);

impl FromRequestParts<AppState> for ApiKeyAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = bearer(parts)?;
        if !keys::is_well_formed(credential, API_KEY_PREFIX) {
            return Err(ApiError::unauthorized("the API key is malformed"));
        }
        let principal = state
            .store
            .authenticate_key(&keys::hash_secret(credential), chrono::Utc::now())
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "the API key is unknown, revoked, blocked or expired, its user is inactive, \
                     or its user is not in the key's team",
                )
            })?;
        Ok(Self(principal))
    }
}
