//! The SCIM 2.0 listener (RFC 7643, RFC 7644) at /scim/v2: wire types, filters and
//! PATCH, and the handlers that turn each request into a desired-state change for
//! the reconcile engine. Nothing here speaks SQL.

pub mod attributes;
pub mod bulk;
pub mod discovery;
pub mod error;
pub mod filter;
pub mod groups;
pub mod list;
pub mod lower;
pub mod patch;
pub mod resources;
pub mod response;
pub mod routes;
pub mod users;

pub use routes::router;
