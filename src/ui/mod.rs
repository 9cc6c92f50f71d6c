//! The admin console at `/ui`: server-rendered HTML (maud) and plain forms, for a
//! signed-in admin token. Every page works without JavaScript; the one script
//! (static/console.js) only adds a copy button beside a newly created token.
//!
//! Security, in one place each: sessions and CSRF in [`session`] (every request under
//! /ui but the sign-in page and the static files passes its guard, and every POST's
//! CSRF token is checked there); response headers (a strict Content-Security-Policy,
//! no framing, no caching) in [`security_headers`].

mod audit;
mod directory;
mod layout;
mod overview;
mod plans;
mod scim_setup;
pub mod session;

use crate::state::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use session::Admin;

/// Where the console lives; links and redirects are built from it.
pub const BASE: &str = "/ui";

/// The console's routes, to nest under [`BASE`].
pub fn router(state: &AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/", get(overview::page))
        .route("/sync/{idp}/plan", post(overview::plan_sync))
        .route("/sync/{idp}/apply", post(overview::apply_sync))
        .route("/plans", get(plans::list))
        .route("/plans/{id}", get(plans::show))
        .route("/plans/{id}/approve", post(plans::approve))
        .route("/plans/{id}/reject", post(plans::reject))
        .route("/scim", get(scim_setup::page))
        .route("/scim/tokens", post(scim_setup::create_token))
        .route("/scim/tokens/revoke", post(scim_setup::revoke_token))
        .route("/users", get(directory::users))
        .route("/users/{id}", get(directory::user))
        .route("/users/{id}/dry-run", post(directory::dry_run_sign_in))
        .route("/teams", get(directory::teams))
        .route("/teams/{id}", get(directory::team))
        .route("/keys", get(directory::keys))
        .route("/keys/{id}/revoke", post(directory::revoke_key))
        .route("/audit", get(audit::page))
        .route("/audit/export", get(audit::export))
        .route("/sign-out", post(session::sign_out))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::guard,
        ));
    Router::new()
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/static/console.css", get(stylesheet))
        .route("/static/console.js", get(script))
        .merge(guarded)
        .layer(axum::Extension(overview::PendingPlans::default()))
        .layer(middleware::from_fn(security_headers))
}

/// Whether the console is served with this configuration.
pub fn enabled(state: &AppState) -> bool {
    let config = state.current_config();
    config.ui.is_enabled(config.server.listen)
}

/// No inline script or style anywhere: the only sources are our own static files.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Pages show tokens (once), users and keys: nothing is kept by the browser or a
    // proxy, so the back button after sign-out shows nothing either.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    static_file(
        include_str!("static/console.css"),
        "text/css; charset=utf-8",
    )
}

async fn script() -> Response {
    static_file(
        include_str!("static/console.js"),
        "text/javascript; charset=utf-8",
    )
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Everything a console page can fail with, shown as a page (never the SCIM JSON
/// envelope the API answers with).
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The form had no CSRF token, or not this session's.
    #[error("the form's security token is missing or does not belong to this session; reload the page and try again")]
    Csrf,
    /// → 500; the text is logged, not shown.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Engine(#[from] crate::reconcile::EngineError),
}

impl From<crate::store::query::QueryError> for UiError {
    fn from(e: crate::store::query::QueryError) -> Self {
        match e {
            crate::store::query::QueryError::Invalid(message) => UiError::BadRequest(message),
            crate::store::query::QueryError::Store(e) => UiError::Store(e),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            UiError::Csrf => (StatusCode::FORBIDDEN, self.to_string()),
            UiError::Store(e) => {
                tracing::error!(error = %e, "console: store error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the database could not answer; see the daemon's log".to_owned(),
                )
            }
            UiError::Engine(e) => {
                tracing::warn!(error = %e, "console: engine error");
                (StatusCode::CONFLICT, e.to_string())
            }
        };
        (status, layout::bare("Error", &message)).into_response()
    }
}

pub type UiResult<T> = Result<T, UiError>;
