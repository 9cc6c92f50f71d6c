//! What SCIM handlers answer with, and the ETag preconditions they pass to the engine:
//! shared by the routes, the users and groups handlers and /Bulk, none of which needs
//! another's module for them.

use super::list::Projection;
use crate::error::{ApiError, SCIM_CONTENT_TYPE};
use crate::reconcile::Expect;
use crate::store::Answer;
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode, Uri};
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

    /// A 200 answer with a body, projected and serialised once, for the read cache.
    pub fn into_answer(mut self, projection: &Projection) -> Answer {
        let body = match self.resource.as_mut() {
            Some(resource) => {
                projection.apply(resource);
                to_body(resource)
            }
            None => Bytes::new(),
        };
        Answer {
            body,
            version: self.version,
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
    scim_bytes(status, to_body(body))
}

/// A resource as the bytes of its JSON text: written straight into one buffer.
pub fn to_body(value: &Value) -> Bytes {
    // Serialising a `Value` cannot fail: its keys are strings and it holds no floats
    // that JSON cannot spell (serde_json refuses NaN when the Value is built).
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn scim_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    response
}

/// What a GET's cached answer is kept under: everything the answer depends on, which is
/// the resource kind, the URL clients reach us at (`meta.location`, `$ref`) and the path
/// with its query (the id, filter, paging and attribute projection). Not the token: no
/// read answers differently to different tokens of the SCIM scope. Bytes joined by NULs,
/// which none of the parts can contain (a URI cannot).
pub fn answer_key(kind: &[u8], base: &str, uri: &Uri) -> Vec<u8> {
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    let mut key = Vec::with_capacity(kind.len() + base.len() + path.len() + 2);
    key.extend_from_slice(kind);
    key.push(0);
    key.extend_from_slice(base.as_bytes());
    key.push(0);
    key.extend_from_slice(path.as_bytes());
    key
}

/// The `If-None-Match` header of a GET, the one header a read looks at: taken alone
/// rather than through a copy of the whole `HeaderMap`, on the hottest path there is.
#[derive(Debug, Clone, Default)]
pub struct IfNoneMatch(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch(
            parts.headers.get(header::IF_NONE_MATCH).cloned(),
        ))
    }
}

/// A cached (or just rendered) answer to a GET: 200 with its body and ETag, or 304
/// when If-None-Match names its version.
pub fn answered(answer: Answer, if_none_match: &IfNoneMatch) -> Response {
    let unchanged = match (&if_none_match.0, answer.version) {
        (Some(tag), Some(version)) => tag.to_str().is_ok_and(|t| etag_matches(t, version)),
        _ => false,
    };
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        scim_bytes(StatusCode::OK, answer.body)
    };
    if let Some(version) = answer.version {
        if let Ok(value) = HeaderValue::from_str(&super::resources::etag(version)) {
            response.headers_mut().insert(header::ETAG, value);
        }
    }
    response
}
