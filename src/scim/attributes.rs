//! The one table of the SCIM User attributes that have no column of their own and
//! live in the store's JSON attributes column, under their canonical spelling.
//! Parsing (resources.rs) keeps exactly these, and filtering (lower.rs) reaches
//! exactly these, so an attribute a client can write is one it can filter on.
//!
//! userName, externalId, displayName, name.givenName, name.familyName, active and the
//! primary email have columns; the store's query language names those directly.

/// Simple core attributes, at the top level of the JSON.
pub const USER_JSON_SIMPLE: &[&str] = &[
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
];

/// Sub-attributes of `name` kept under the JSON's `name` object; givenName and
/// familyName have columns.
pub const NAME_JSON_PARTS: &[&str] = &[
    "formatted",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
];

/// Multi-valued core attributes, as lists at the top level of the JSON. The primary
/// email also has a column, which stands in for a list never given.
pub const USER_JSON_MULTI: &[&str] = &[
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
];

/// Simple attributes of the enterprise extension, under the extension's URN. Its
/// `manager` is kept there too, as `{"value", "displayName", "$ref"}`.
pub const ENTERPRISE_JSON_SIMPLE: &[&str] = &[
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
];

/// Sub-attributes of an element of a multi-valued attribute that a filter can test.
pub const ELEMENT_SUB_ATTRS: &[&str] = &[
    "value",
    "type",
    "primary",
    "display",
    "formatted",
    "streetAddress",
    "locality",
    "region",
    "postalCode",
    "country",
];

/// The canonical spelling of `name` in `list`: SCIM attribute names are
/// case-insensitive.
pub fn canonical<'a>(list: &[&'a str], name: &str) -> Option<&'a str> {
    list.iter().copied().find(|c| c.eq_ignore_ascii_case(name))
}
