//! Domain values ↔ SCIM JSON (RFC 7643 User, enterprise extension, Group).
//!
//! Rendering is exact: what the store holds, in the schema's spelling. Parsing is
//! tolerant the way real IdPs need: attribute names in any case, `null` meaning
//! "not given" (Entra), booleans as strings (Entra, OneLogin), `id`/`meta`/`groups`
//! echoed back (Okta), a password (accepted, never kept), non-RFC schema URIs and
//! unknown keys (OneLogin) ignored.

use super::attributes::{
    canonical, ENTERPRISE_JSON_SIMPLE, NAME_JSON_PARTS, USER_JSON_MULTI, USER_JSON_SIMPLE,
};
use crate::domain::{Team, TeamName, User, UserName};
use crate::error::ApiError;
use crate::store::format_ts;
use crate::store::lists::{GroupRef, MemberRef};
use serde_json::{json, Map, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// Attributes a client may send but the server owns or never keeps.
const USER_IGNORED: &[&str] = &["id", "meta", "schemas", "groups", "password"];

/// The weak ETag of a resource version, also its meta.version.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn meta(
    resource_type: &str,
    location: String,
    created: &str,
    modified: &str,
    version: i64,
) -> Value {
    json!({
        "resourceType": resource_type,
        "created": created,
        "lastModified": modified,
        "location": location,
        "version": etag(version),
    })
}

/// A user as SCIM JSON. `groups` is `None` when the caller did not load them
/// (the client excluded the attribute).
pub fn render_user(user: &User, groups: Option<&[GroupRef]>, base: &str) -> Value {
    let mut out = Map::new();
    let mut schemas = vec![json!(USER_SCHEMA)];
    if user.attributes.contains_key(ENTERPRISE_USER_SCHEMA) {
        schemas.push(json!(ENTERPRISE_USER_SCHEMA));
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), json!(user.id));
    if let Some(external_id) = &user.external_id {
        out.insert("externalId".into(), json!(external_id));
    }
    out.insert("userName".into(), json!(user.user_name.as_str()));
    let mut name = match user.attributes.get("name") {
        Some(Value::Object(extra)) => extra.clone(),
        _ => Map::new(),
    };
    if let Some(given) = &user.given_name {
        name.insert("givenName".into(), json!(given));
    }
    if let Some(family) = &user.family_name {
        name.insert("familyName".into(), json!(family));
    }
    if !name.is_empty() {
        out.insert("name".into(), Value::Object(name));
    }
    if let Some(display_name) = &user.display_name {
        out.insert("displayName".into(), json!(display_name));
    }
    if let Some(emails) = render_emails(user) {
        out.insert("emails".into(), emails);
    }
    out.insert("active".into(), json!(user.active));
    for (key, value) in &user.attributes {
        if key == "name" || key == "emails" || out.contains_key(key) {
            continue;
        }
        out.insert(key.clone(), value.clone());
    }
    if let Some(groups) = groups.filter(|g| !g.is_empty()) {
        let groups: Vec<Value> = groups
            .iter()
            .map(|g| {
                json!({
                    "value": g.id,
                    "display": g.display_name.as_str(),
                    "$ref": format!("{base}/Groups/{}", g.id),
                    "type": "direct",
                })
            })
            .collect();
        out.insert("groups".into(), Value::Array(groups));
    }
    out.insert(
        "meta".into(),
        meta(
            "User",
            format!("{base}/Users/{}", user.id),
            &format_ts(user.created),
            &format_ts(user.modified),
            user.version,
        ),
    );
    Value::Object(out)
}

/// The `emails` list as given, with the primary element's value kept in step with
/// the `email` column (which a pull or an operator may have changed); a user with
/// only the column gets it as one primary work email.
fn render_emails(user: &User) -> Option<Value> {
    match (user.attributes.get("emails"), &user.email) {
        (Some(Value::Array(list)), email) if !list.is_empty() => {
            let mut list = list.clone();
            if let (Some(email), Some(index)) = (email, primary_email_index(&list)) {
                if let Some(Value::Object(element)) = list.get_mut(index) {
                    element.insert("value".into(), json!(email));
                }
            }
            Some(Value::Array(list))
        }
        (_, Some(email)) => Some(json!([{"value": email, "type": "work", "primary": true}])),
        _ => None,
    }
}

/// The element whose value is the user's email: the primary one, else the work
/// one, else the first.
fn primary_email_index(list: &[Value]) -> Option<usize> {
    let position = |pred: &dyn Fn(&Map<String, Value>) -> bool| {
        list.iter().position(|v| {
            v.as_object()
                .is_some_and(|o| pred(o) && o.get("value").is_some_and(Value::is_string))
        })
    };
    position(&|o| o.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| {
            position(&|o| {
                o.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("work"))
            })
        })
        .or_else(|| position(&|_| true))
}

/// A group as SCIM JSON. `members` is `None` when not loaded (excluded by the client).
pub fn render_group(team: &Team, members: Option<&[MemberRef]>, base: &str) -> Value {
    let mut out = Map::new();
    out.insert("schemas".into(), json!([GROUP_SCHEMA]));
    out.insert("id".into(), json!(team.id));
    if let Some(external_id) = &team.external_id {
        out.insert("externalId".into(), json!(external_id));
    }
    out.insert("displayName".into(), json!(team.display_name.as_str()));
    if let Some(members) = members {
        let members: Vec<Value> = members
            .iter()
            .map(|m| {
                // No `display`: members are the memberships table, which keeps no
                // per-member text, and RFC 7643 §8.7.1 defines value, $ref and type only.
                json!({
                    "value": m.id,
                    "$ref": format!("{base}/Users/{}", m.id),
                    "type": "User",
                })
            })
            .collect();
        out.insert("members".into(), Value::Array(members));
    }
    out.insert(
        "meta".into(),
        meta(
            "Group",
            format!("{base}/Groups/{}", team.id),
            &format_ts(team.created),
            &format_ts(team.modified),
            team.version,
        ),
    );
    Value::Object(out)
}

/// A User resource as a client sent it, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct UserInput {
    pub user_name: UserName,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// `None` when the request did not say.
    pub active: Option<bool>,
    /// The SCIM attributes not modelled as columns, in canonical spelling.
    pub attributes: Map<String, Value>,
}

/// A Group resource as a client sent it, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInput {
    pub display_name: TeamName,
    pub external_id: Option<String>,
    /// Member user ids as given (not yet checked); `None` when `members` was absent.
    pub members: Option<Vec<String>>,
}

/// Drops `null` members of objects, at every depth: IdPs send `null` for "no value".
pub fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|v| !v.is_null())
                .map(strip_nulls)
                .collect(),
        ),
        other => other,
    }
}

fn as_object<'v>(body: &'v Value, what: &str) -> Result<&'v Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| ApiError::invalid_syntax(format!("{what} must be a JSON object")))
}

fn string_attr(name: &str, value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(ApiError::invalid_value(format!(
            "{name} must be a string, got {}",
            kind_of(other)
        ))),
    }
}

/// Identifiers are strings, but some IdPs send numeric ids unquoted.
fn id_attr(name: &str, value: &Value) -> Result<String, ApiError> {
    match value {
        Value::Number(n) => Ok(n.to_string()),
        other => string_attr(name, other),
    }
}

/// Entra and OneLogin send booleans as "True"/"false".
pub fn bool_attr(name: &str, value: &Value) -> Result<bool, ApiError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ApiError::invalid_value(format!(
            "{name} must be true or false, got {}",
            kind_of(other)
        ))),
    }
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", truncate(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(64).collect::<String>())
    } else {
        s.to_owned()
    }
}

fn non_empty(s: String) -> Option<String> {
    let trimmed = s.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// Reads a User resource from a POST or PUT body (or a PATCH result).
pub fn parse_user(body: &Value) -> Result<UserInput, ApiError> {
    let body = strip_nulls(body.clone());
    let fields = as_object(&body, "a User")?;
    let mut user_name = None;
    let mut input = UserInput {
        user_name: UserName::parse("placeholder").map_err(|_| ApiError::internal())?,
        external_id: None,
        email: None,
        display_name: None,
        given_name: None,
        family_name: None,
        active: None,
        attributes: Map::new(),
    };
    for (key, value) in fields {
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        if is("userName") {
            let raw = string_attr("userName", value)?;
            user_name =
                Some(UserName::parse(&raw).map_err(|e| ApiError::invalid_value(e.to_string()))?);
        } else if is("externalId") {
            input.external_id = non_empty(id_attr("externalId", value)?);
        } else if is("displayName") {
            input.display_name = non_empty(string_attr("displayName", value)?);
        } else if is("active") {
            input.active = Some(bool_attr("active", value)?);
        } else if is("name") {
            let Value::Object(name) = value else {
                return Err(ApiError::invalid_value(format!(
                    "name must be an object, got {}",
                    kind_of(value)
                )));
            };
            let mut extra = Map::new();
            for (sub, v) in name {
                if sub.eq_ignore_ascii_case("givenName") {
                    input.given_name = non_empty(string_attr("name.givenName", v)?)
                } else if sub.eq_ignore_ascii_case("familyName") {
                    input.family_name = non_empty(string_attr("name.familyName", v)?)
                } else if let Some(canonical) = canonical(NAME_JSON_PARTS, sub) {
                    extra.insert(
                        canonical.to_owned(),
                        json!(string_attr(&format!("name.{canonical}"), v)?),
                    );
                }
            }
            if !extra.is_empty() {
                input.attributes.insert("name".into(), Value::Object(extra));
            }
        } else if let Some(canonical) = canonical(USER_JSON_SIMPLE, key) {
            input
                .attributes
                .insert(canonical.to_owned(), json!(string_attr(canonical, value)?));
        } else if let Some(canonical) = canonical(USER_JSON_MULTI, key) {
            let list = multi_valued(canonical, value)?;
            if !list.is_empty() {
                input
                    .attributes
                    .insert(canonical.to_owned(), Value::Array(list));
            }
        } else if is(ENTERPRISE_USER_SCHEMA) {
            let extension = parse_enterprise(value)?;
            if !extension.is_empty() {
                input
                    .attributes
                    .insert(ENTERPRISE_USER_SCHEMA.to_owned(), Value::Object(extension));
            }
        } else if canonical(USER_IGNORED, key).is_some() {
            // Server-owned or never kept (password): accepted and dropped.
        }
        // Anything else is not in the schemas this server advertises; tolerated, not kept.
    }
    input.user_name = user_name.ok_or_else(|| ApiError::invalid_value("userName is required"))?;
    if let Some(Value::Array(emails)) = input.attributes.get("emails") {
        input.email = primary_email_index(emails)
            .and_then(|i| emails[i].get("value"))
            .and_then(Value::as_str)
            .and_then(|s| non_empty(s.to_owned()));
    }
    Ok(input)
}

/// A multi-valued attribute: a list (a lone object is taken as a list of one),
/// with `primary` normalised to a boolean and sub-attribute names kept as given.
fn multi_valued(name: &str, value: &Value) -> Result<Vec<Value>, ApiError> {
    let items: Vec<Value> = match value {
        Value::Array(items) => items.clone(),
        Value::Object(_) => vec![value.clone()],
        other => {
            return Err(ApiError::invalid_value(format!(
                "{name} must be a list, got {}",
                kind_of(other)
            )))
        }
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(mut element) => {
                let primary_key = element
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case("primary"))
                    .cloned();
                if let Some(key) = primary_key {
                    let primary = element.shift_remove(&key).unwrap_or(Value::Null);
                    element.insert(
                        "primary".into(),
                        json!(bool_attr(&format!("{name}.primary"), &primary)?),
                    );
                }
                let value_key = element
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case("value"))
                    .cloned();
                if let Some(key) = value_key.filter(|k| k != "value") {
                    if let Some(v) = element.shift_remove(&key) {
                        element.insert("value".into(), v);
                    }
                }
                let type_key = element
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case("type"))
                    .cloned();
                if let Some(key) = type_key.filter(|k| k != "type") {
                    if let Some(v) = element.shift_remove(&key) {
                        element.insert("type".into(), v);
                    }
                }
                Ok(Value::Object(element))
            }
            // Multi-valued simple values (roles as plain strings) are kept as they are.
            simple @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => Ok(simple),
            other => Err(ApiError::invalid_value(format!(
                "each element of {name} must be an object, got {}",
                kind_of(&other)
            ))),
        })
        .collect()
}

fn parse_enterprise(value: &Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid_value(format!(
            "{ENTERPRISE_USER_SCHEMA} must be an object, got {}",
            kind_of(value)
        )));
    };
    let mut out = Map::new();
    for (key, value) in fields {
        if let Some(canonical) = canonical(ENTERPRISE_JSON_SIMPLE, key) {
            out.insert(canonical.to_owned(), json!(id_attr(canonical, value)?));
        } else if key.eq_ignore_ascii_case("manager") {
            if let Some(manager) = normalise_manager(value)? {
                out.insert("manager".into(), manager);
            }
        }
    }
    Ok(out)
}

/// Entra sends the manager as a bare id or `[{"$ref": null, "value": id}]`; the
/// schema says `{"value": id, "$ref": ..., "displayName": ...}`.
fn normalise_manager(value: &Value) -> Result<Option<Value>, ApiError> {
    match value {
        Value::String(id) => Ok(non_empty(id.clone()).map(|id| json!({"value": id}))),
        Value::Array(items) if items.is_empty() => Ok(None),
        Value::Array(items) if items.len() == 1 => normalise_manager(&items[0]),
        Value::Object(fields) => {
            let mut out = Map::new();
            for (key, v) in fields {
                if key.eq_ignore_ascii_case("value") {
                    match id_attr("manager.value", v).map(non_empty)? {
                        Some(id) => out.insert("value".into(), json!(id)),
                        None => return Ok(None),
                    };
                } else if key.eq_ignore_ascii_case("displayName") {
                    out.insert(
                        "displayName".into(),
                        json!(string_attr("manager.displayName", v)?),
                    );
                } else if key.eq_ignore_ascii_case("$ref") {
                    out.insert("$ref".into(), v.clone());
                }
            }
            Ok(out.contains_key("value").then_some(Value::Object(out)))
        }
        other => Err(ApiError::invalid_value(format!(
            "manager must be an id or {{\"value\": id}}, got {}",
            kind_of(other)
        ))),
    }
}

/// Reads a Group resource from a POST or PUT body (or a PATCH result).
pub fn parse_group(body: &Value) -> Result<GroupInput, ApiError> {
    let body = strip_nulls(body.clone());
    let fields = as_object(&body, "a Group")?;
    let mut display_name = None;
    let mut external_id = None;
    let mut members = None;
    for (key, value) in fields {
        let is = |name: &str| key.eq_ignore_ascii_case(name);
        if is("displayName") {
            let raw = string_attr("displayName", value)?;
            display_name =
                Some(TeamName::parse(&raw).map_err(|e| ApiError::invalid_value(e.to_string()))?);
        } else if is("externalId") {
            external_id = non_empty(id_attr("externalId", value)?);
        } else if is("members") {
            members = Some(member_ids(value)?);
        }
        // schemas (Entra adds a Microsoft URI), id, meta and unknown keys: not kept.
    }
    Ok(GroupInput {
        display_name: display_name
            .ok_or_else(|| ApiError::invalid_value("displayName is required"))?,
        external_id,
        members,
    })
}

/// Member ids from a `members` value. Members of type Group (nested groups) are
/// ignored: teams do not nest.
pub fn member_ids(value: &Value) -> Result<Vec<String>, ApiError> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![value],
        other => {
            return Err(ApiError::invalid_value(format!(
                "members must be a list, got {}",
                kind_of(other)
            )))
        }
    };
    let mut ids: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let id = match item {
            Value::Object(fields) => {
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v)
                };
                if get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("group"))
                {
                    continue;
                }
                match get("value") {
                    Some(v) => id_attr("members.value", v)?,
                    None => {
                        return Err(ApiError::invalid_value(
                            "each member needs a \"value\" (a user id)",
                        ))
                    }
                }
            }
            Value::String(id) => id.clone(),
            other => {
                return Err(ApiError::invalid_value(format!(
                    "each member must be an object such as {{\"value\": id}}, got {}",
                    kind_of(other)
                )))
            }
        };
        let id = id.trim().to_owned();
        // A set, not `ids.contains`: a body of 40,000 members must not cost 40,000².
        if !id.is_empty() && seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_nulls_string_booleans_and_a_bare_manager_are_normalised() {
        let input = parse_user(&json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "userName": "Alice@Example.com",
            "active": "False",
            "displayName": null,
            "emails": [{"primary": "true", "type": "work", "value": "alice@example.com"}],
            "password": "secret",
            ENTERPRISE_USER_SCHEMA: {"department": "R&D", "manager": "m-1"}
        }))
        .unwrap();
        assert_eq!(input.active, Some(false));
        assert_eq!(input.display_name, None);
        assert_eq!(input.email.as_deref(), Some("alice@example.com"));
        assert_eq!(
            input.attributes[ENTERPRISE_USER_SCHEMA]["manager"],
            json!({"value": "m-1"})
        );
        assert_eq!(input.attributes["emails"][0]["primary"], json!(true));
        assert!(!input.attributes.contains_key("password"));
    }

    #[test]
    fn a_user_without_user_name_is_invalid_value() {
        let err = parse_user(&json!({"displayName": "x"})).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(err.detail.contains("userName"));
    }

    #[test]
    fn nested_group_members_are_ignored() {
        let ids =
            member_ids(&json!([{"value": "u1"}, {"value": "g1", "type": "Group"}, "u2"])).unwrap();
        assert_eq!(ids, vec!["u1", "u2"]);
    }
}
