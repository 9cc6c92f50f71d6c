//! /Bulk (RFC 7644 §3.7): operations run in order, each committed on its own, with
//! `bulkId:` references resolved to the ids of resources created earlier in the
//! same request and `failOnErrors` stopping the run after that many errors.

use super::discovery::BULK_MAX_OPERATIONS;
use super::list::Projection;
use super::response::Written;
use super::{groups, users};
use crate::error::ApiError;
use crate::reconcile::Actor;
use crate::state::AppState;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
pub const BULK_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

fn get_ci<'v>(fields: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Runs a BulkRequest and returns the BulkResponse. Whole-request problems (not a
/// BulkRequest, too many operations) are errors; per-operation ones are reported
/// inside the response.
pub async fn run(
    state: &AppState,
    actor: &Actor,
    base: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::invalid_syntax(
            "a BulkRequest must be a JSON object",
        ));
    };
    let operations = match get_ci(fields, "Operations") {
        Some(Value::Array(ops)) => ops,
        _ => {
            return Err(ApiError::invalid_syntax(
                "a BulkRequest needs an \"Operations\" array",
            ))
        }
    };
    if operations.len() > BULK_MAX_OPERATIONS {
        return Err(ApiError::too_large(format!(
            "the BulkRequest has {} operations; the maximum is {BULK_MAX_OPERATIONS}",
            operations.len()
        )));
    }
    let fail_on_errors = match get_ci(fields, "failOnErrors") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().filter(|n| *n > 0),
        Some(_) => {
            return Err(ApiError::invalid_value(
                "failOnErrors must be a positive integer",
            ))
        }
    };
    let mut created: HashMap<String, String> = HashMap::new();
    let mut results = Vec::with_capacity(operations.len());
    let mut errors = 0u64;
    for operation in operations {
        if fail_on_errors.is_some_and(|limit| errors >= limit) {
            break;
        }
        let result = run_one(state, actor, base, operation, &mut created).await;
        if result.is_error {
            errors += 1;
        }
        results.push(result.response);
    }
    Ok(json!({"schemas": [BULK_RESPONSE_SCHEMA], "Operations": results}))
}

struct OpResult {
    response: Value,
    is_error: bool,
}

async fn run_one(
    state: &AppState,
    actor: &Actor,
    base: &str,
    operation: &Value,
    created: &mut HashMap<String, String>,
) -> OpResult {
    let fields = operation.as_object();
    let text = |name: &str| {
        fields
            .and_then(|f| get_ci(f, name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let method = text("method").unwrap_or_default().to_ascii_uppercase();
    let bulk_id = text("bulkId");
    let path = text("path").unwrap_or_default();
    let mut response = Map::new();
    response.insert("method".into(), json!(method));
    if let Some(bulk_id) = &bulk_id {
        response.insert("bulkId".into(), json!(bulk_id));
    }
    let outcome = execute(state, actor, base, fields, &method, &path, created).await;
    let is_error = outcome.is_err();
    match outcome {
        Ok(written) => {
            let location = written.location.clone().or_else(|| {
                written
                    .resource
                    .as_ref()
                    .and_then(|r| r["meta"]["location"].as_str().map(str::to_owned))
            });
            if let (Some(bulk_id), "POST") = (&bulk_id, method.as_str()) {
                if let Some(id) = written.resource.as_ref().and_then(|r| r["id"].as_str()) {
                    created.insert(bulk_id.clone(), id.to_owned());
                }
            }
            if let Some(location) = location {
                response.insert("location".into(), json!(location));
            }
            if let Some(version) = written.version {
                response.insert("version".into(), json!(super::resources::etag(version)));
            }
            response.insert("status".into(), json!(written.status.as_u16().to_string()));
        }
        Err(error) => {
            response.insert("status".into(), json!(error.status.as_u16().to_string()));
            response.insert("response".into(), error.body());
        }
    }
    OpResult {
        response: Value::Object(response),
        is_error,
    }
}

async fn execute(
    state: &AppState,
    actor: &Actor,
    base: &str,
    fields: Option<&Map<String, Value>>,
    method: &str,
    path: &str,
    created: &HashMap<String, String>,
) -> Result<Written, ApiError> {
    let fields = fields
        .ok_or_else(|| ApiError::invalid_syntax("each bulk operation must be a JSON object"))?;
    let path = resolve_references(&Value::String(path.to_owned()), created)?;
    let path = path.as_str().unwrap_or_default();
    let data = match get_ci(fields, "data") {
        Some(data) => Some(resolve_references(data, created)?),
        None => None,
    };
    let version = get_ci(fields, "version").and_then(Value::as_str);
    let data = || {
        data.as_ref()
            .ok_or_else(|| ApiError::invalid_syntax(format!("{method} {path} needs \"data\"")))
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let everything = Projection::default();
    match (method, segments.as_slice()) {
        ("POST", ["Users"]) => users::create(state, actor, base, data()?).await,
        ("POST", ["Groups"]) => groups::create(state, actor, base, data()?, &everything).await,
        ("PUT", ["Users", id]) => users::replace(state, actor, base, id, data()?, version).await,
        ("PUT", ["Groups", id]) => {
            groups::replace(state, actor, base, id, data()?, version, &everything).await
        }
        ("PATCH", ["Users", id]) => users::patch(state, actor, base, id, data()?, version).await,
        ("PATCH", ["Groups", id]) => {
            groups::patch(state, actor, base, id, data()?, version, &everything).await
        }
        ("DELETE", ["Users", id]) => users::delete(state, actor, id, version).await,
        ("DELETE", ["Groups", id]) => groups::delete(state, actor, id, version).await,
        ("POST" | "PUT" | "PATCH" | "DELETE", _) => Err(ApiError::invalid_value(format!(
            "{method} {path:?} is not a bulk operation this server supports"
        ))),
        _ => Err(ApiError::invalid_value(format!(
            "method {method:?} must be one of POST, PUT, PATCH, DELETE"
        ))),
    }
}

/// Replaces every string `bulkId:<id>` with the id of the resource that operation
/// created. A reference to an operation that has not (successfully) run is an error.
fn resolve_references(value: &Value, created: &HashMap<String, String>) -> Result<Value, ApiError> {
    Ok(match value {
        Value::String(s) => match find_reference(s) {
            Some((start, end, bulk_id)) => {
                let id = created.get(bulk_id).ok_or_else(|| {
                    ApiError::new(
                        axum::http::StatusCode::CONFLICT,
                        format!("bulkId {bulk_id:?} does not name a resource created earlier in this request"),
                    )
                    .with_scim_type(crate::error::ScimType::InvalidValue)
                })?;
                Value::String(format!("{}{id}{}", &s[..start], &s[end..]))
            }
            None => value.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| resolve_references(i, created))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve_references(v, created)?)))
                .collect::<Result<_, ApiError>>()?,
        ),
        other => other.clone(),
    })
}

/// Finds `bulkId:<id>` in a string (a whole value, or a path segment such as
/// `/Groups/bulkId:g1`); returns its byte range and the id.
fn find_reference(s: &str) -> Option<(usize, usize, &str)> {
    let start = s.find("bulkId:")?;
    let id_start = start + "bulkId:".len();
    let end = s[id_start..]
        .find(['/', '"', ' '])
        .map_or(s.len(), |i| id_start + i);
    (end > id_start).then(|| (start, end, &s[id_start..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_id_references_are_found_in_values_and_paths() {
        assert_eq!(find_reference("bulkId:qwerty"), Some((0, 13, "qwerty")));
        assert_eq!(find_reference("/Groups/bulkId:g1"), Some((8, 17, "g1")));
        assert_eq!(find_reference("plain"), None);
    }

    #[test]
    fn an_unresolved_reference_is_an_error() {
        let created = HashMap::new();
        assert!(resolve_references(&json!({"value": "bulkId:x"}), &created).is_err());
        let created = HashMap::from([("x".to_owned(), "id-1".to_owned())]);
        assert_eq!(
            resolve_references(&json!([{"value": "bulkId:x"}]), &created).unwrap(),
            json!([{"value": "id-1"}])
        );
    }
}
