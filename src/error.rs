//! The one place where errors become HTTP responses.
//!
//! Every error body is the RFC 7644 error envelope, also outside /scim/v2, so clients
//! parse one shape. Internal details are logged, never sent.

use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub const SCIM_ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// The `scimType` values of RFC 7644 §3.12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
}

impl ScimType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub scim_type: Option<ScimType>,
    /// Shown to the client: must be safe (no internal text, no secrets).
    pub detail: String,
    challenge: bool,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type: None,
            detail: detail.into(),
            challenge: false,
            retry_after: None,
        }
    }

    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail).with_scim_type(scim_type)
    }

    /// 400 invalidValue: a required attribute is missing or has the wrong type.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidValue, detail)
    }

    /// 400 invalidSyntax: the body is not the JSON the endpoint expects.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidSyntax, detail)
    }

    /// 413: a request body or bulk request over the advertised limits.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail).with_scim_type(ScimType::Uniqueness)
    }

    /// 401 with `WWW-Authenticate: Bearer`, as RFC 6750 asks.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, detail)
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log has the details",
        )
    }

    pub fn with_scim_type(mut self, scim_type: ScimType) -> Self {
        self.scim_type = Some(scim_type);
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({
            "schemas": [SCIM_ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t.as_str());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(SCIM_CONTENT_TYPE),
        );
        if self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => ApiError::conflict(format!("{what} already exists")),
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::NotAMember => ApiError::bad_request(
                ScimType::InvalidValue,
                "the key's user is not a member of its team",
            ),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::reconcile::EngineError> for ApiError {
    fn from(e: crate::reconcile::EngineError) -> Self {
        use crate::reconcile::{ApplyError, EngineError as E, PlanError as P};
        match e {
            E::Plan(P::UserNameTaken { .. }) | E::Apply(ApplyError::UserNameTaken { .. }) => {
                ApiError::conflict(e.to_string())
            }
            E::Plan(P::UnknownMember { .. } | P::Invalid(_))
            | E::Apply(ApplyError::InvalidPlan(_))
            | E::NotAMember { .. } => ApiError::bad_request(ScimType::InvalidValue, e.to_string()),
            E::Plan(P::NotFound { .. }) | E::NoSuchQuarantinedPlan(_) => {
                ApiError::not_found(e.to_string())
            }
            E::Plan(P::NotOwned { .. }) => ApiError::forbidden(e.to_string()),
            E::PreconditionFailed => ApiError::new(StatusCode::PRECONDITION_FAILED, e.to_string()),
            // SCIM writes delete only what they name, so the guards cannot trip there;
            // should one, the client sees a refusal, not a 500. Saved plans are the CLI's.
            E::Plan(P::DeletionGuard { .. } | P::MembershipGuard { .. })
            | E::StalePlan
            | E::UnfingerprintedPlan
            | E::AlreadyDecided { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            E::UnreadableQuarantinedPlan { .. } => {
                tracing::error!(error = %e, "a quarantined plan cannot be read");
                ApiError::internal()
            }
            E::NotCommitted(_) => {
                tracing::error!(error = %e, "a batch of writes failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the change was not applied: the database failed while committing it \
                     with others; it is safe to retry",
                )
                .with_retry_after(1)
            }
            E::Store(e) | E::Apply(ApplyError::Store(e)) => e.into(),
        }
    }
}
