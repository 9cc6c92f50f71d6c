//! Console sessions: an admin token pasted once opens a server-side session (the
//! `ui_sessions` table keeps only a hash of its id) held in a cookie that is HttpOnly,
//! SameSite=Strict, scoped to /ui, and Secure when `[server] public_url` is https. A
//! session ends on sign-out, when idle past `[ui] session_idle_minutes`, or when its
//! token is revoked.
//!
//! Every form carries a CSRF token derived from the session id (a hash, so it never
//! reveals the id), checked by [`guard`] on every POST before any handler runs. The
//! sign-in form, which has no session yet, is protected the double-submit way: a
//! random value in a cookie and in the form must agree.

use super::layout;
use super::{UiError, BASE};
use crate::domain::TokenScope;
use crate::keys::{self, TOKEN_PREFIX};
use crate::state::AppState;
use crate::store::console::{ui_actor, NoSession};
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

const SESSION_COOKIE: &str = "scimsync_ui";
const SIGN_IN_COOKIE: &str = "scimsync_ui_sign_in";
/// Largest form a console POST may send (a token name, a search, a plan id).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The signed-in admin, put in the request's extensions by [`guard`].
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin token's name.
    pub token_name: String,
    /// This session's CSRF token, for the forms a page renders.
    pub csrf: String,
    /// Plans awaiting a decision, for the navigation's Plans entry: every page shows
    /// that something waits for an admin.
    pub pending_plans: u64,
}

impl Admin {
    /// How the audit log names this admin (`ui:<token name>`).
    pub fn actor_name(&self) -> String {
        ui_actor(&self.token_name)
    }

    pub fn actor(&self) -> crate::reconcile::Actor {
        crate::reconcile::Actor::new(crate::domain::Trigger::Ui, self.actor_name())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Response> {
        parts
            .extensions
            .get::<Admin>()
            .cloned()
            .ok_or_else(|| Redirect::to(&format!("{BASE}/sign-in")).into_response())
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn session_hash(id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("scimsync-ui-session\0{id}").as_bytes(),
    ))
}

fn csrf_of(id: &str) -> String {
    hex::encode(Sha256::digest(format!("scimsync-ui-csrf\0{id}").as_bytes()))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn idle(state: &AppState) -> Duration {
    Duration::from_secs(
        state
            .current_config()
            .ui
            .session_idle_minutes
            .saturating_mul(60),
    )
}

/// `Set-Cookie` for the console's cookies; `None` clears the cookie.
fn set_cookie(state: &AppState, name: &str, value: Option<&str>) -> HeaderValue {
    let secure = state
        .current_config()
        .server
        .public_url
        .as_deref()
        .is_some_and(|url| url.to_ascii_lowercase().starts_with("https://"));
    let mut text = match value {
        Some(value) => format!("{name}={value}"),
        None => format!("{name}=; Max-Age=0"),
    };
    text.push_str(&format!("; Path={BASE}; HttpOnly; SameSite=Strict"));
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Constant-time equality of two tokens of ours.
fn same(a: &str, b: &str) -> bool {
    keys::hashes_match(a, b)
}

/// The field `name` of a urlencoded form.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Lets a request through only with a live session (else to the sign-in page), and
/// a POST only with the session's CSRF token in its form.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(id) = cookie(request.headers(), SESSION_COOKIE) else {
        return to_sign_in(&request, None);
    };
    let session = match state
        .store
        .ui_session(&session_hash(&id), idle(&state))
        .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(NoSession::Expired)) => return to_sign_in(&request, Some("expired")),
        Ok(Err(NoSession::Unknown)) => return to_sign_in(&request, None),
        Err(e) => return UiError::from(e).into_response(),
    };
    let pending_plans = match state.store.pending_quarantine_counts().await {
        Ok(counts) => counts
            .iter()
            .map(|(_, n)| u64::try_from(*n).unwrap_or(0))
            .sum(),
        Err(e) => return UiError::from(e).into_response(),
    };
    let admin = Admin {
        token_name: session.token_name,
        csrf: csrf_of(&id),
        pending_plans,
    };
    let (mut parts, body) = request.into_parts();
    let body = if parts.method == Method::POST {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return UiError::BadRequest("the form is too large".into()).into_response();
        };
        match form_field(&bytes, "csrf") {
            Some(token) if same(&token, &admin.csrf) => {}
            _ => {
                tracing::warn!(admin = %admin.token_name, path = %parts.uri.path(),
                    "console: a form without this session's CSRF token was refused");
                return UiError::Csrf.into_response();
            }
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(admin);
    next.run(Request::from_parts(parts, body)).await
}

/// Where a request without a session goes: a page view to the sign-in page, a form
/// post to a refusal (its content would be lost on the way).
fn to_sign_in(request: &Request, reason: Option<&str>) -> Response {
    let target = match reason {
        Some(reason) => format!("{BASE}/sign-in?reason={reason}"),
        None => format!("{BASE}/sign-in"),
    };
    if request.method() == Method::POST {
        let message = match reason {
            Some("expired") => "your console session expired; sign in again",
            _ => "you are not signed in to the console",
        };
        return (
            StatusCode::UNAUTHORIZED,
            layout::bare("Signed out", message),
        )
            .into_response();
    }
    Redirect::to(&target).into_response()
}

#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    reason: Option<String>,
}

/// The sign-in page, with a fresh double-submit value for its form.
pub async fn sign_in_page(State(state): State<AppState>, Query(q): Query<SignInQuery>) -> Response {
    let notice = match q.reason.as_deref() {
        Some("expired") => Some("Your session expired after a while without use. Sign in again."),
        Some("signed-out") => Some("You are signed out."),
        _ => None,
    };
    sign_in_form(&state, StatusCode::OK, notice, None)
}

fn sign_in_form(
    state: &AppState,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let nonce = random_hex();
    let page: Markup = layout::signed_out(
        "Sign in",
        html! {
            h1 { "Sign in to the scimsync console" }
            @if let Some(notice) = notice { p.notice role="status" { (notice) } }
            @if let Some(error) = error { p.error role="alert" id="sign-in-error" { (error) } }
            form method="post" action={(BASE) "/sign-in"} {
                input type="hidden" name="csrf" value=(nonce);
                label for="token" { "Admin token" }
                input type="password" id="token" name="token" required autocomplete="off"
                    spellcheck="false" aria-describedby="token-help";
                p.help id="token-help" {
                    "A token of scope admin, made with "
                    code { "scimsync token create NAME --scope admin" }
                    ". It is checked once; the console then keeps a session."
                }
                button type="submit" { "Sign in" }
            }
        },
    );
    let mut response = (status, page).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SIGN_IN_COOKIE, Some(&nonce)),
    );
    response
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
    csrf: String,
}

/// Checks the pasted token; an admin token opens a session.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let refuse = |message: &str| {
        tracing::info!("console: sign-in refused");
        sign_in_form(&state, StatusCode::UNAUTHORIZED, None, Some(message))
    };
    match cookie(&headers, SIGN_IN_COOKIE) {
        Some(nonce) if same(&nonce, form.csrf.trim()) => {}
        _ => {
            return sign_in_form(
                &state,
                StatusCode::FORBIDDEN,
                None,
                Some("The sign-in form had expired or came from elsewhere. Try again."),
            )
        }
    }
    let token = form.token.trim();
    if !keys::is_well_formed(token, TOKEN_PREFIX) {
        return refuse("That is not a scimsync token. Paste a token of scope admin.");
    }
    let principal = match state
        .store
        .authenticate_token(&keys::hash_secret(token))
        .await
        .map(|check| check.principal)
    {
        Ok(Some(principal)) => principal,
        Ok(None) => return refuse("That token is unknown or revoked."),
        Err(e) => return UiError::from(e).into_response(),
    };
    if principal.scope != TokenScope::Admin {
        return refuse(&format!(
            "That token has scope {}; the console needs a token of scope admin.",
            principal.scope
        ));
    }
    let id = random_hex();
    if let Err(e) = state
        .store
        .open_ui_session(&session_hash(&id), &principal.name, idle(&state))
        .await
    {
        return UiError::from(e).into_response();
    }
    tracing::info!(admin = %principal.name, "console: signed in");
    let mut response = Redirect::to(BASE).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, Some(&id)),
    );
    headers.append(header::SET_COOKIE, set_cookie(&state, SIGN_IN_COOKIE, None));
    response
}

/// Ends the session (the guard has checked its CSRF token).
pub async fn sign_out(State(state): State<AppState>, admin: Admin, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = state.store.end_ui_session(&session_hash(&id)).await {
            return UiError::from(e).into_response();
        }
    }
    if let Err(e) = state
        .store
        .audit_ui_action(
            &admin.token_name,
            "ui_sign_out",
            &format!("token:{}", admin.token_name),
            &serde_json::json!({}),
        )
        .await
    {
        return UiError::from(e).into_response();
    }
    let mut response = Redirect::to(&format!("{BASE}/sign-in?reason=signed-out")).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, None));
    response
}
