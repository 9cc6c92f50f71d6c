//! What SCIM handlers answer with, and the ETag preconditions they pass to the engine:
//! shared by the routes, the users and groups handlers and /Bulk, none of which needs
//! another's module for them.

use super::list::Projection;
use crate::error::{ApiError, SCIM_CONTENT_TYPE};
use crate::reconcile::Expect;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The versions an If-Match header value accepts, for the engine to check inside its
/// transaction: `*` (or no header) accepts any; otherwise the versions the tags name
/// (weak and strong forms alike). Tags naming no version of ours accept none.
pub fn expect_version(if_match: Option<&str>) -> Expect {
    let Some(header_value) = if_match else {
        return Expect::AnyVersion;
    };
    let tags: Vec<&str> = header_value.split(',').map(str::trim).collect();
    if tags.contains(&"*") {
        return Expect::AnyVersion;
    }
    Expect::OneOf(
        tags.iter()
            .filter_map(|tag| {
                let text = tag.trim_start_matches("W/").trim_matches('"');
                // Only the exact text a version renders as, as a string comparison would.
                text.parse::<i64>().ok().filter(|v| v.to_string() == text)
            })
            .collect(),
    )
}

/// A 404 from the engine, reworded to name what the client asked for.
pub fn with_not_found(e: ApiError, not_found: impl FnOnce() -> ApiError) -> ApiError {
    if e.status == StatusCode::NOT_FOUND {
        not_found()
    } else {
        e
    }
}

/// Whether an If-Match / If-None-Match header value names `version`
/// (`*` names any; weak and strong forms compare equal).
pub fn etag_matches(header_value: &str, version: i64) -> bool {
    let current = version.to_string();
    header_value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == current)
}

/// The result of a read or write, before projection and headers.
#[derive(Debug, Clone)]
pub struct Written {
    pub status: StatusCode,
    /// The full rendered resource; `None` for 204.
    pub resource: Option<Value>,
    pub version: Option<i64>,
    pub location: Option<String>,
}

impl Written {
    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            resource: None,
            version: None,
            location: None,
        }
    }

    pub fn into_response(self, projection: &Projection) -> Response {
        let mut response = match self.resource {
            Some(mut resource) => {
                projection.apply(&mut resource);
                scim_json(self.status, &resource)
            }
            None => self.status.into_response(),
        };
        let headers = response.headers_mut();
        if let Some(version) = self.version {
            if let Ok(value) = HeaderValue::from_str(&super::resources::etag(version)) {
                headers.insert(header::ETAG, value);
            }
        }
        if let Some(location) = self.location {
            if let Ok(value) = HeaderValue::from_str(&location) {
                headers.insert(header::LOCATION, value);
            }
        }
        response
    }
}

pub fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    response
}
