//! How the SCIM layer's own errors become `ApiError` (and so the RFC 7644 error
//! envelope). `ApiError`'s `IntoResponse` in src/error.rs stays the one place that
//! writes an HTTP error; these are the conversions into it.

use super::filter::FilterError;
use super::lower::Unsupported;
use super::patch::PatchError;
use crate::error::{ApiError, ScimType};
use crate::store::query::QueryError;

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        ApiError::bad_request(ScimType::InvalidFilter, format!("invalid filter: {e}"))
    }
}

impl From<Unsupported> for ApiError {
    fn from(Unsupported(message): Unsupported) -> Self {
        ApiError::bad_request(ScimType::InvalidFilter, message)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            // The lowering refuses what the store cannot answer; should a predicate slip
            // through, the client still gets the invalidFilter it got before the split.
            QueryError::Invalid(message) => ApiError::bad_request(ScimType::InvalidFilter, message),
            QueryError::Store(e) => e.into(),
        }
    }
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> Self {
        let scim_type = match e {
            PatchError::InvalidSyntax(_) => ScimType::InvalidSyntax,
            PatchError::InvalidPath(_) => ScimType::InvalidPath,
            PatchError::NoTarget(_) => ScimType::NoTarget,
            PatchError::InvalidValue(_) => ScimType::InvalidValue,
            PatchError::Mutability(_) => ScimType::Mutability,
        };
        ApiError::bad_request(scim_type, e.to_string())
    }
}
