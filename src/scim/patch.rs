//! SCIM PATCH (RFC 7644 §3.5.2) applied to a resource rendered as JSON.
//!
//! The RFC is read the way real IdPs (Entra ID, Okta, OneLogin) need it to be
//! read: op names in any case, booleans sent as strings, path-less values
//! whose keys are themselves paths (`name.givenName`, URN-qualified
//! attributes), and "add a sub-attribute to the element the filter selects"
//! creating that element when it does not exist yet.
//!
//! There is no schema here, so whether an attribute is multi-valued is read
//! off the resource (an array is multi-valued) or the incoming value, with a
//! short list of the standard multi-valued attributes for when neither tells.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::filter::{self, AttrPath, CompValue, CompareOp, Filter, PatchPath};

/// The `schemas` value of a PATCH request body.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const CORE_SCHEMA_PREFIX: &str = "urn:ietf:params:scim:schemas:core:";
const CORE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// Multi-valued attributes of the core User and Group schemas (RFC 7643 §4),
/// used when the resource does not hold the attribute yet and a single object
/// is added to it.
const MULTI_VALUED: [&str; 10] = [
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "groups",
    "entitlements",
    "roles",
    "x509Certificates",
    "members",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    pub path: Option<PatchPath>,
    /// `None` when the request had no `value` member; `Some(Value::Null)` for
    /// an explicit null, which unassigns the target.
    pub value: Option<Value>,
}

/// A rejected PATCH. Each variant is the SCIM `scimType` of the same name
/// (see [`PatchError::scim_type`]); messages name the operation and the
/// offending part and are safe to return to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("{0}")]
    InvalidSyntax(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0}")]
    NoTarget(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("{0}")]
    Mutability(String),
}

impl PatchError {
    /// The `scimType` for the SCIM error response (RFC 7644 §3.12); all of
    /// these go with HTTP 400.
    pub fn scim_type(&self) -> &'static str {
        match self {
            PatchError::InvalidSyntax(_) => "invalidSyntax",
            PatchError::InvalidPath(_) => "invalidPath",
            PatchError::NoTarget(_) => "noTarget",
            PatchError::InvalidValue(_) => "invalidValue",
            PatchError::Mutability(_) => "mutability",
        }
    }

    fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            PatchError::InvalidSyntax(m) => PatchError::InvalidSyntax(f(m)),
            PatchError::InvalidPath(m) => PatchError::InvalidPath(f(m)),
            PatchError::NoTarget(m) => PatchError::NoTarget(f(m)),
            PatchError::InvalidValue(m) => PatchError::InvalidValue(f(m)),
            PatchError::Mutability(m) => PatchError::Mutability(f(m)),
        }
    }

    fn in_operation(self, index: usize) -> Self {
        self.map_message(|m| format!("Operations[{index}]: {m}"))
    }
}

impl PatchOpKind {
    fn as_str(self) -> &'static str {
        match self {
            PatchOpKind::Add => "add",
            PatchOpKind::Remove => "remove",
            PatchOpKind::Replace => "replace",
        }
    }
}

// ---------------------------------------------------------------------------
// Request parsing

/// Reads the operations of a PATCH request body.
///
/// `schemas` is not checked: several IdPs omit it or send a non-standard
/// value, and `Operations` alone says unambiguously what to do, so refusing
/// those requests would only break provisioning. `Operations` is required,
/// may be spelled `operations`, and may be empty (Entra sends that).
pub fn parse_patch_request(body: &Value) -> Result<Vec<PatchOperation>, PatchError> {
    let Value::Object(body) = body else {
        return Err(PatchError::InvalidSyntax(
            "a PATCH request body must be a JSON object".into(),
        ));
    };
    let operations = get_ci(body, "Operations").ok_or_else(|| {
        PatchError::InvalidSyntax("the PATCH request has no \"Operations\" array".into())
    })?;
    let Value::Array(operations) = operations else {
        return Err(PatchError::InvalidSyntax(format!(
            "\"Operations\" must be an array, got {}",
            describe(operations)
        )));
    };
    operations
        .iter()
        .enumerate()
        .map(|(index, operation)| parse_operation(operation).map_err(|e| e.in_operation(index)))
        .collect()
}

fn parse_operation(operation: &Value) -> Result<PatchOperation, PatchError> {
    let Value::Object(fields) = operation else {
        return Err(PatchError::InvalidSyntax(format!(
            "an operation must be a JSON object, got {}",
            describe(operation)
        )));
    };
    let op = match get_ci(fields, "op") {
        Some(Value::String(name)) => match name.trim().to_ascii_lowercase().as_str() {
            "add" => PatchOpKind::Add,
            "remove" => PatchOpKind::Remove,
            "replace" => PatchOpKind::Replace,
            _ => {
                return Err(PatchError::InvalidSyntax(format!(
                    "unknown op {}; expected \"add\", \"remove\" or \"replace\"",
                    describe(&Value::String(name.clone()))
                )))
            }
        },
        Some(other) => {
            return Err(PatchError::InvalidSyntax(format!(
                "\"op\" must be a string, got {}",
                describe(other)
            )))
        }
        None => {
            return Err(PatchError::InvalidSyntax(
                "the operation has no \"op\"".into(),
            ))
        }
    };
    let path = match get_ci(fields, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(filter::parse_patch_path(text).map_err(|e| {
            PatchError::InvalidPath(format!(
                "invalid path {}: {e}",
                describe(&Value::String(text.clone()))
            ))
        })?),
        Some(other) => {
            return Err(PatchError::InvalidPath(format!(
                "\"path\" must be a string, got {}",
                describe(other)
            )))
        }
    };
    let operation = PatchOperation {
        op,
        path,
        value: get_ci(fields, "value").cloned(),
    };
    check_shape(&operation)?;
    Ok(operation)
}

/// The checks that need no resource; repeated by [`apply_operations`] because
/// callers may build operations by hand.
fn check_shape(operation: &PatchOperation) -> Result<(), PatchError> {
    let op = operation.op.as_str();
    match (operation.op, &operation.path, &operation.value) {
        (PatchOpKind::Remove, None, _) => Err(PatchError::NoTarget(
            "remove needs a \"path\" naming what to remove".into(),
        )),
        (PatchOpKind::Add | PatchOpKind::Replace, _, None) => {
            Err(PatchError::InvalidValue(format!("{op} needs a \"value\"")))
        }
        (PatchOpKind::Add | PatchOpKind::Replace, None, Some(value)) if !value.is_object() => {
            Err(PatchError::InvalidValue(format!(
                "{op} without a \"path\" needs a \"value\" object of attributes, got {}",
                describe(value)
            )))
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Applying operations

/// Applies `ops` in order to `resource`, a JSON object as the resource would
/// be rendered. All or nothing: on error `resource` is left unchanged.
///
/// `read_only` lists top-level attribute names (any case, e.g. `["id",
/// "meta"]`) that must not change. Setting one to the value it already has is
/// accepted, because Okta Group Push echoes the group's own `id` back in
/// path-less replaces. `schemas` and `meta` keys in path-less values are
/// ignored: clients echo them from earlier responses and they are the
/// server's to manage.
pub fn apply_operations(
    resource: &mut Value,
    ops: &[PatchOperation],
    read_only: &[&str],
) -> Result<(), PatchError> {
    let Value::Object(current) = resource else {
        return Err(PatchError::InvalidSyntax(
            "the resource to patch is not a JSON object".into(),
        ));
    };
    let mut patched = current.clone();
    for (index, op) in ops.iter().enumerate() {
        apply_operation(&mut patched, op, read_only).map_err(|e| e.in_operation(index))?;
    }
    *current = patched;
    Ok(())
}

fn apply_operation(
    resource: &mut Map<String, Value>,
    op: &PatchOperation,
    read_only: &[&str],
) -> Result<(), PatchError> {
    check_shape(op)?;
    match (&op.path, &op.value) {
        (Some(path), value) => apply_path(resource, op.op, path, value.as_ref(), read_only),
        (None, Some(Value::Object(values))) => apply_values(resource, op.op, values, read_only),
        // `check_shape` rejects every other combination.
        (None, _) => Ok(()),
    }
}

/// A path-less add or replace: every key of the value is itself a path
/// (Entra sends `name.givenName` and URN-qualified names as keys) or an
/// extension schema URN holding that extension's attributes.
fn apply_values(
    resource: &mut Map<String, Value>,
    kind: PatchOpKind,
    values: &Map<String, Value>,
    read_only: &[&str],
) -> Result<(), PatchError> {
    for (key, value) in values {
        if key.eq_ignore_ascii_case("schemas") || key.eq_ignore_ascii_case("meta") {
            continue;
        }
        if is_schema_urn(resource, key) {
            apply_schema_values(resource, kind, key, value, read_only)?;
            continue;
        }
        let path = filter::parse_patch_path(key).map_err(|e| {
            PatchError::InvalidPath(format!(
                "value key {} is not an attribute path: {e}",
                describe(&Value::String(key.clone()))
            ))
        })?;
        apply_path(resource, kind, &path, Some(value), read_only)?;
    }
    Ok(())
}

/// `{"urn:...:enterprise:2.0:User": {"department": "Sales"}}` in a path-less
/// value, or a path naming a schema URN itself.
fn apply_schema_values(
    resource: &mut Map<String, Value>,
    kind: PatchOpKind,
    urn: &str,
    value: &Value,
    read_only: &[&str],
) -> Result<(), PatchError> {
    let core = starts_with_ci(urn, CORE_SCHEMA_PREFIX);
    match value {
        Value::Object(attributes) if core => apply_values(resource, kind, attributes, read_only),
        Value::Object(attributes) => {
            for (key, value) in attributes {
                let mut path = filter::parse_patch_path(key).map_err(|e| {
                    PatchError::InvalidPath(format!(
                        "attribute {} of {urn} is not an attribute path: {e}",
                        describe(&Value::String(key.clone()))
                    ))
                })?;
                if path.attr.urn.is_none() {
                    path.attr.urn = Some(urn.to_string());
                }
                apply_path(resource, kind, &path, Some(value), read_only)?;
            }
            Ok(())
        }
        Value::Null if !core => {
            if let Some(key) = find_key(resource, urn) {
                resource.shift_remove(&key);
            }
            Ok(())
        }
        other => Err(PatchError::InvalidValue(format!(
            "{urn} must be given an object of attributes, got {}",
            describe(other)
        ))),
    }
}

/// Where normalisation rules apply: `active` is a core top-level attribute,
/// `manager` lives in the enterprise extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Top,
    Extension,
    Nested,
}

fn apply_path(
    resource: &mut Map<String, Value>,
    kind: PatchOpKind,
    path: &PatchPath,
    value: Option<&Value>,
    read_only: &[&str],
) -> Result<(), PatchError> {
    let qualified;
    let path = match manager_in_extension(resource, path) {
        Some(rerouted) => {
            qualified = rerouted;
            &qualified
        }
        None => path,
    };
    let attr = &path.attr;
    if path.filter.is_some() && attr.sub_attr.is_some() {
        return Err(PatchError::InvalidPath(format!(
            "path {path} puts a filter on a sub-attribute"
        )));
    }
    if path.filter.is_none() && path.sub_attr.is_some() {
        return Err(PatchError::InvalidPath(format!(
            "path {path} has a trailing sub-attribute without a filter"
        )));
    }

    let mut location = Location::Top;
    let mut name = attr.attr.clone();
    if let Some(urn) = &attr.urn {
        let full = format!("{urn}:{}", attr.attr);
        if is_schema_urn(resource, &full) {
            // The path names a whole schema, e.g. the enterprise extension.
            let whole = path.filter.is_none() && attr.sub_attr.is_none();
            match (kind, value) {
                (PatchOpKind::Add | PatchOpKind::Replace, Some(value)) if whole => {
                    return apply_schema_values(resource, kind, &full, value, read_only);
                }
                _ if starts_with_ci(&full, CORE_SCHEMA_PREFIX) => {
                    return Err(PatchError::InvalidPath(format!(
                        "path {path} names the core schema; omit the path to patch the resource"
                    )));
                }
                _ => name = full,
            }
        } else if !starts_with_ci(urn, CORE_SCHEMA_PREFIX) {
            location = Location::Extension(urn.clone());
        }
    }

    if location == Location::Top {
        check_read_only(resource, kind, path, &name, value, read_only)?;
    }

    let creates = kind != PatchOpKind::Remove && value.is_some_and(|v| !v.is_null());
    let (container, scope) = match &location {
        Location::Top => (resource, Scope::Top),
        Location::Extension(urn) => match extension_mut(resource, urn, creates)? {
            Some(container) => (container, Scope::Extension),
            // Nothing to remove from an extension the resource does not have.
            None => return Ok(()),
        },
    };

    match (&path.filter, &attr.sub_attr) {
        (Some(filter), _) => apply_filtered(
            container,
            kind,
            &name,
            filter,
            path.sub_attr.as_deref(),
            value,
        ),
        (None, Some(sub)) => apply_sub_attr(container, kind, &name, sub, value, scope),
        (None, None) => set_attr(container, kind, &name, value, scope),
    }
}

/// A User's `manager` without a schema URN, qualified with the enterprise extension.
///
/// Microsoft documents Entra sending `{"op": "Add", "path": "manager", "value":
/// [{"$ref": …, "value": id}]}` (and path-less `{"manager": …}` keys): the core User
/// schema has no `manager`, so the only one it can mean is the enterprise extension's.
/// Left unqualified it would land in a top-level attribute nothing reads, and the
/// PATCH would answer 200 while changing nothing.
fn manager_in_extension(resource: &Map<String, Value>, path: &PatchPath) -> Option<PatchPath> {
    let attr = &path.attr;
    if attr.urn.is_some() || !attr.attr.eq_ignore_ascii_case("manager") || !is_user(resource) {
        return None;
    }
    let mut qualified = path.clone();
    qualified.attr.urn = Some(ENTERPRISE_USER_SCHEMA.to_string());
    qualified.attr.attr = "manager".to_string();
    Some(qualified)
}

/// Whether the resource is a User, by its schemas or `meta.resourceType`.
fn is_user(resource: &Map<String, Value>) -> bool {
    let by_schema = match get_ci(resource, "schemas") {
        Some(Value::Array(schemas)) => schemas.iter().any(|s| {
            s.as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(CORE_USER_SCHEMA))
        }),
        _ => false,
    };
    let by_meta = match get_ci(resource, "meta") {
        Some(Value::Object(meta)) => get_ci(meta, "resourceType")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("User")),
        _ => false,
    };
    by_schema || by_meta
}

#[derive(Debug, PartialEq, Eq)]
enum Location {
    Top,
    Extension(String),
}

fn check_read_only(
    resource: &Map<String, Value>,
    kind: PatchOpKind,
    path: &PatchPath,
    name: &str,
    value: Option<&Value>,
    read_only: &[&str],
) -> Result<(), PatchError> {
    if !read_only.iter().any(|ro| ro.eq_ignore_ascii_case(name)) {
        return Ok(());
    }
    let whole = path.filter.is_none() && path.attr.sub_attr.is_none();
    let current = get_ci(resource, name).unwrap_or(&Value::Null);
    let unchanged =
        kind != PatchOpKind::Remove && whole && value.unwrap_or(&Value::Null) == current;
    if unchanged {
        return Ok(());
    }
    Err(PatchError::Mutability(format!(
        "attribute {} is read-only",
        describe(&Value::String(name.to_string()))
    )))
}

/// The object holding extension `urn`'s attributes, created (and listed in
/// `schemas`) when `create` is set and the resource has none yet.
fn extension_mut<'r>(
    resource: &'r mut Map<String, Value>,
    urn: &str,
    create: bool,
) -> Result<Option<&'r mut Map<String, Value>>, PatchError> {
    let key = match find_key(resource, urn) {
        Some(key) => key,
        None if create => {
            if let Some(Value::Array(schemas)) = get_ci_mut(resource, "schemas") {
                let listed = schemas
                    .iter()
                    .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)));
                if !listed {
                    schemas.push(Value::String(urn.to_string()));
                }
            }
            resource.insert(urn.to_string(), Value::Object(Map::new()));
            urn.to_string()
        }
        None => return Ok(None),
    };
    if create && resource.get(&key).is_some_and(Value::is_null) {
        resource.insert(key.clone(), Value::Object(Map::new()));
    }
    match resource.get_mut(&key) {
        Some(Value::Object(container)) => Ok(Some(container)),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(PatchError::InvalidPath(format!(
            "{urn} holds {} rather than an object of extension attributes",
            describe(other)
        ))),
    }
}

/// add / replace / remove of a whole attribute `name` of `container`.
fn set_attr(
    container: &mut Map<String, Value>,
    kind: PatchOpKind,
    name: &str,
    value: Option<&Value>,
    scope: Scope,
) -> Result<(), PatchError> {
    let existing = find_key(container, name);
    if kind == PatchOpKind::Remove {
        let Some(key) = existing else {
            return Ok(());
        };
        match (value, container.get_mut(&key)) {
            // Entra removes members by listing them: {"path":"members","value":[{"value":"id"}]}.
            (Some(selection), Some(Value::Array(items))) if !selection.is_null() => {
                let targets = elements_of(selection.clone());
                items.retain(|item| !targets.iter().any(|target| selects(target, item)));
                if items.is_empty() {
                    container.shift_remove(&key);
                }
            }
            _ => {
                container.shift_remove(&key);
            }
        }
        return Ok(());
    }

    let value = normalise(scope, name, value.cloned().unwrap_or(Value::Null))?;
    if value.is_null() {
        if let Some(key) = existing {
            container.shift_remove(&key);
        }
        return Ok(());
    }
    let key = existing.unwrap_or_else(|| name.to_string());
    let is_reference = scope == Scope::Extension && name.eq_ignore_ascii_case("manager");
    match container.get_mut(&key) {
        Some(Value::Array(items)) => {
            let changed = if kind == PatchOpKind::Add {
                append(items, value)
            } else {
                *items = elements_of(value);
                (0..items.len()).collect()
            };
            enforce_single_primary(items, &changed);
            if items.is_empty() {
                container.shift_remove(&key);
            }
        }
        // RFC 7644 §3.5.2.1/3: a complex value names the sub-attributes to
        // set; those it does not name are left alone.
        Some(Value::Object(fields)) if value.is_object() && !is_reference => {
            if let Value::Object(incoming) = value {
                let inner = if scope == Scope::Top && starts_with_ci(&key, "urn:") {
                    Scope::Extension
                } else {
                    Scope::Nested
                };
                for (sub, sub_value) in incoming {
                    set_attr(fields, kind, &sub, Some(&sub_value), inner)?;
                }
            }
        }
        _ => {
            let multi_valued = value.is_array()
                || (value.is_object() && MULTI_VALUED.iter().any(|m| m.eq_ignore_ascii_case(name)));
            if multi_valued {
                let mut items = Vec::new();
                let changed = append(&mut items, value);
                enforce_single_primary(&mut items, &changed);
                if items.is_empty() {
                    container.shift_remove(&key);
                } else {
                    container.insert(key, Value::Array(items));
                }
            } else {
                container.insert(key, value);
            }
        }
    }
    Ok(())
}

/// `name.givenName`-style paths.
fn apply_sub_attr(
    container: &mut Map<String, Value>,
    kind: PatchOpKind,
    name: &str,
    sub: &str,
    value: Option<&Value>,
    scope: Scope,
) -> Result<(), PatchError> {
    let inner = if scope == Scope::Top && starts_with_ci(name, "urn:") {
        Scope::Extension
    } else {
        Scope::Nested
    };
    let key = find_key(container, name);
    match key.as_ref().and_then(|k| container.get_mut(k)) {
        Some(Value::Object(fields)) => set_attr(fields, kind, sub, value, inner),
        Some(Value::Array(_)) => Err(PatchError::InvalidPath(format!(
            "{name} is multi-valued; select elements with a filter, e.g. {name}[type eq \"work\"].{sub}"
        ))),
        None | Some(Value::Null) => {
            let unassigns = kind == PatchOpKind::Remove || value.map_or(true, Value::is_null);
            if unassigns {
                return Ok(());
            }
            let mut fields = Map::new();
            set_attr(&mut fields, kind, sub, value, inner)?;
            container.insert(key.unwrap_or_else(|| name.to_string()), Value::Object(fields));
            Ok(())
        }
        Some(other) => Err(PatchError::InvalidPath(format!(
            "{name} holds {}, which has no sub-attribute {sub}",
            describe(other)
        ))),
    }
}

/// `emails[type eq "work"]` and `emails[type eq "work"].value` paths.
fn apply_filtered(
    container: &mut Map<String, Value>,
    kind: PatchOpKind,
    name: &str,
    filter: &Filter,
    sub: Option<&str>,
    value: Option<&Value>,
) -> Result<(), PatchError> {
    let value = value.cloned().unwrap_or(Value::Null);
    let key = find_key(container, name);
    let items = match key.as_ref().and_then(|k| container.get_mut(k)) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            if kind == PatchOpKind::Remove || value.is_null() {
                return Ok(());
            }
            let element = new_element(kind, name, filter, sub, value)?;
            container.insert(
                key.unwrap_or_else(|| name.to_string()),
                Value::Array(vec![element]),
            );
            return Ok(());
        }
        Some(other) => {
            return Err(PatchError::InvalidPath(format!(
                "{name} holds {}, not a list, so the filter [{filter}] cannot select from it",
                describe(other)
            )))
        }
    };

    let matching: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| filter.matches(item))
        .map(|(index, _)| index)
        .collect();

    let mut changed = Vec::new();
    match (kind, sub) {
        (PatchOpKind::Remove, None) => remove_indices(items, &matching),
        (PatchOpKind::Remove, Some(sub)) => {
            for &index in &matching {
                if let Some(Value::Object(fields)) = items.get_mut(index) {
                    if let Some(k) = find_key(fields, sub) {
                        fields.shift_remove(&k);
                    }
                }
            }
        }
        _ if matching.is_empty() => {
            if !value.is_null() {
                items.push(new_element(kind, name, filter, sub, value)?);
                changed.push(items.len() - 1);
            }
        }
        (_, Some(sub)) => {
            for &index in &matching {
                let Some(Value::Object(fields)) = items.get_mut(index) else {
                    return Err(PatchError::InvalidPath(format!(
                        "the elements of {name} are not objects, so they have no sub-attribute {sub}"
                    )));
                };
                set_attr(fields, kind, sub, Some(&value), Scope::Nested)?;
                changed.push(index);
            }
        }
        (PatchOpKind::Replace, None) if value.is_null() => remove_indices(items, &matching),
        (PatchOpKind::Replace, None) => {
            for &index in &matching {
                if let Some(item) = items.get_mut(index) {
                    *item = value.clone();
                    changed.push(index);
                }
            }
        }
        (_, None) => {
            let Value::Object(incoming) = &value else {
                return Err(PatchError::InvalidValue(format!(
                    "adding to the elements of {name} selected by [{filter}] needs an object, got {}",
                    describe(&value)
                )));
            };
            for &index in &matching {
                let Some(Value::Object(fields)) = items.get_mut(index) else {
                    return Err(PatchError::InvalidPath(format!(
                        "the elements of {name} are not objects"
                    )));
                };
                for (k, v) in incoming {
                    set_attr(fields, kind, k, Some(v), Scope::Nested)?;
                }
                changed.push(index);
            }
        }
    }
    enforce_single_primary(items, &changed);
    if items.is_empty() {
        if let Some(key) = key {
            container.shift_remove(&key);
        }
    }
    Ok(())
}

/// The element that a filtered add (or Entra's filtered replace of a
/// sub-attribute) creates when nothing matches: the filter's equalities plus
/// the value, so `emails[type eq "work"].value` = X yields
/// `{"type": "work", "value": X}`.
fn new_element(
    kind: PatchOpKind,
    name: &str,
    filter: &Filter,
    sub: Option<&str>,
    value: Value,
) -> Result<Value, PatchError> {
    if kind == PatchOpKind::Replace && sub.is_none() {
        return Err(PatchError::NoTarget(format!(
            "no element of {name} matches [{filter}]"
        )));
    }
    let mut element = Map::new();
    if !seed_from_equalities(filter, &mut element) {
        return Err(PatchError::NoTarget(format!(
            "no element of {name} matches [{filter}], and a new one can only be made from \
             'eq' comparisons joined by 'and'"
        )));
    }
    match (sub, value) {
        (Some(sub), value) => set_attr(
            &mut element,
            PatchOpKind::Add,
            sub,
            Some(&value),
            Scope::Nested,
        )?,
        (None, Value::Object(fields)) => {
            for (k, v) in fields {
                set_attr(&mut element, PatchOpKind::Add, &k, Some(&v), Scope::Nested)?;
            }
        }
        (None, other) => {
            return Err(PatchError::InvalidValue(format!(
                "adding an element to {name} needs an object, got {}",
                describe(&other)
            )))
        }
    }
    Ok(Value::Object(element))
}

fn seed_from_equalities(filter: &Filter, element: &mut Map<String, Value>) -> bool {
    match filter {
        Filter::And(a, b) => seed_from_equalities(a, element) && seed_from_equalities(b, element),
        Filter::Compare {
            path:
                AttrPath {
                    urn: None,
                    attr,
                    sub_attr: None,
                },
            op: CompareOp::Eq,
            value,
        } if *value != CompValue::Null => {
            let value = value.to_json();
            match element.get(attr) {
                // `type eq "a" and type eq "b"` describes nothing.
                Some(existing) => *existing == value,
                None => {
                    element.insert(attr.clone(), value);
                    true
                }
            }
        }
        _ => false,
    }
}

fn remove_indices(items: &mut Vec<Value>, indices: &[usize]) {
    let doomed: HashSet<usize> = indices.iter().copied().collect();
    let mut index = 0;
    items.retain(|_| {
        let keep = !doomed.contains(&index);
        index += 1;
        keep
    });
}

/// Appends elements, merging one that is already there (same JSON, or same
/// `value` and `type`) instead of duplicating it. Returns the indices touched.
fn append(items: &mut Vec<Value>, value: Value) -> Vec<usize> {
    let mut changed = Vec::new();
    for element in elements_of(value) {
        match items.iter().position(|item| same_element(item, &element)) {
            Some(index) => {
                if let (Some(Value::Object(existing)), Value::Object(incoming)) =
                    (items.get_mut(index), element)
                {
                    for (k, v) in incoming {
                        let key = find_key(existing, &k).unwrap_or(k);
                        if v.is_null() {
                            existing.shift_remove(&key);
                        } else {
                            existing.insert(key, v);
                        }
                    }
                }
                changed.push(index);
            }
            None => {
                items.push(element);
                changed.push(items.len() - 1);
            }
        }
    }
    changed
}

fn elements_of(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.into_iter().filter(|v| !v.is_null()).collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn same_element(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let value_a = get_ci(a, "value").filter(|v| !v.is_null());
            let value_b = get_ci(b, "value").filter(|v| !v.is_null());
            value_a.is_some() && value_a == value_b && same_type(a, b)
        }
        _ => false,
    }
}

fn same_type(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    match (get_ci(a, "type"), get_ci(b, "type")) {
        (Some(Value::String(x)), Some(Value::String(y))) => x.eq_ignore_ascii_case(y),
        (x, y) => x.unwrap_or(&Value::Null) == y.unwrap_or(&Value::Null),
    }
}

/// Whether `target`, an element listed in a remove's value, designates `item`:
/// `{"value": "id"}` designates any element with that `value`.
fn selects(target: &Value, item: &Value) -> bool {
    match (target, item) {
        (Value::Object(t), Value::Object(i)) => match get_ci(t, "value") {
            Some(wanted) if !wanted.is_null() => {
                let type_agrees = match get_ci(t, "type") {
                    Some(Value::String(ty)) => get_ci(i, "type")
                        .and_then(Value::as_str)
                        .map_or(true, |it| it.eq_ignore_ascii_case(ty)),
                    _ => true,
                };
                get_ci(i, "value") == Some(wanted) && type_agrees
            }
            _ => target == item,
        },
        _ => target == item,
    }
}

/// RFC 7643 §2.4: at most one element may be primary, so a newly set
/// `primary: true` clears it elsewhere.
fn enforce_single_primary(items: &mut [Value], changed: &[usize]) {
    let is_primary = |item: &Value| {
        item.as_object()
            .and_then(|fields| get_ci(fields, "primary"))
            .is_some_and(|p| *p == Value::Bool(true))
    };
    let Some(&keep) = changed
        .iter()
        .rev()
        .find(|&&index| items.get(index).is_some_and(is_primary))
    else {
        return;
    };
    for (index, item) in items.iter_mut().enumerate() {
        if index == keep || !is_primary(item) {
            continue;
        }
        if let Value::Object(fields) = item {
            if let Some(key) = find_key(fields, "primary") {
                fields.insert(key, Value::Bool(false));
            }
        }
    }
}

fn normalise(scope: Scope, name: &str, value: Value) -> Result<Value, PatchError> {
    match scope {
        Scope::Top if name.eq_ignore_ascii_case("active") => normalise_active(value),
        Scope::Extension if name.eq_ignore_ascii_case("manager") => normalise_manager(value),
        _ => Ok(value),
    }
}

/// Entra and OneLogin send `active` as "True"/"False"/"true".
fn normalise_active(value: Value) -> Result<Value, PatchError> {
    match value {
        Value::Bool(_) | Value::Null => Ok(value),
        Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(PatchError::InvalidValue(format!(
                "\"active\" must be true or false, got {}",
                describe(&Value::String(text.clone()))
            ))),
        },
        other => Err(PatchError::InvalidValue(format!(
            "\"active\" must be true or false, got {}",
            describe(&other)
        ))),
    }
}

/// The enterprise `manager` is `{"value": id, ...}`, but Entra sends a bare
/// id string or `[{"$ref": null, "value": id}]`. An empty id unassigns it,
/// which is how some IdPs clear the manager.
fn normalise_manager(value: Value) -> Result<Value, PatchError> {
    match value {
        Value::Null => Ok(Value::Null),
        Value::String(id) if id.trim().is_empty() => Ok(Value::Null),
        Value::String(id) => {
            let mut manager = Map::new();
            manager.insert("value".into(), Value::String(id));
            Ok(Value::Object(manager))
        }
        Value::Array(mut items) => match items.len() {
            0 => Ok(Value::Null),
            1 => match items.swap_remove(0) {
                nested @ (Value::String(_) | Value::Object(_) | Value::Null) => {
                    normalise_manager(nested)
                }
                other => Err(manager_error(&other)),
            },
            n => Err(PatchError::InvalidValue(format!(
                "manager takes a single value, got a list of {n}"
            ))),
        },
        Value::Object(fields) => {
            let fields: Map<String, Value> =
                fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
            let id_missing = match get_ci(&fields, "value") {
                Some(Value::String(id)) => id.trim().is_empty(),
                Some(other) => return Err(manager_error(other)),
                None => fields.is_empty(),
            };
            Ok(if id_missing {
                Value::Null
            } else {
                Value::Object(fields)
            })
        }
        other => Err(manager_error(&other)),
    }
}

fn manager_error(value: &Value) -> PatchError {
    PatchError::InvalidValue(format!(
        "manager must be an id string or an object with a string \"value\", got {}",
        describe(value)
    ))
}

/// Whether `key` names a whole schema (whose value holds that schema's
/// attributes) rather than a URN-qualified attribute. Without schema
/// definitions this goes by what the resource declares and, failing that, by
/// shape: schema URNs end in a version and a resource type
/// (`...:2.0:User`), attribute paths in a camelCase name.
fn is_schema_urn(resource: &Map<String, Value>, key: &str) -> bool {
    if !starts_with_ci(key, "urn:") {
        return false;
    }
    if key.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
        return true;
    }
    let declared = match get_ci(resource, "schemas") {
        Some(Value::Array(schemas)) => schemas
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(key))),
        _ => false,
    };
    if declared || get_ci(resource, key).is_some_and(Value::is_object) {
        return true;
    }
    let mut segments = key.rsplit(':');
    let last = segments.next().unwrap_or_default();
    let before = segments.next().unwrap_or_default();
    last.starts_with(|c: char| c.is_ascii_uppercase())
        && before.contains(|c: char| c.is_ascii_digit())
}

// ---------------------------------------------------------------------------
// Group membership

/// A change to a group's `members`, as user ids (the `value` of each member
/// element). Elements with `"type": "Group"` are dropped: nested groups are
/// not supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Add(Vec<String>),
    Remove(Vec<String>),
    RemoveAll,
    ReplaceAll(Vec<String>),
}

/// An operation split into its effect on `members` and everything else.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSplit {
    /// What the operation does to `members`, if anything.
    pub members: Option<MemberChange>,
    /// The rest of the operation, for [`apply_operations`]: the operation
    /// itself when it does not touch `members`, a path-less add/replace with
    /// the `members` key taken out of its value, or `None` when nothing is
    /// left.
    pub rest: Option<PatchOperation>,
}

/// Splits off what `op` does to `members` so that the caller can turn it into
/// membership deltas without loading the group's roster.
///
/// Filtered removes are supported for filters of the form
/// `value eq "id" [or value eq "id2" ...]`; other member filters would need
/// the roster and are rejected with `InvalidPath`. A remove whose value is
/// an empty list removes nothing (never everything).
pub fn member_changes(op: &PatchOperation) -> Result<MemberSplit, PatchError> {
    let untouched = || MemberSplit {
        members: None,
        rest: Some(op.clone()),
    };
    match (&op.path, &op.value) {
        (Some(path), value) if names_members(&path.attr) => Ok(MemberSplit {
            members: Some(path_member_change(op.op, path, value.as_ref())?),
            rest: None,
        }),
        (Some(_), _) => Ok(untouched()),
        (None, Some(Value::Object(values))) => {
            let mut members = None;
            let mut rest = Map::new();
            for (key, value) in values {
                let is_members = key.eq_ignore_ascii_case("members")
                    || filter::parse_patch_path(key).is_ok_and(|p| {
                        p.filter.is_none() && p.sub_attr.is_none() && names_members(&p.attr)
                    });
                if !is_members {
                    rest.insert(key.clone(), value.clone());
                    continue;
                }
                if members.is_some() {
                    return Err(PatchError::InvalidValue(
                        "the value names \"members\" more than once".into(),
                    ));
                }
                let ids = member_ids(value)?;
                members = Some(match op.op {
                    PatchOpKind::Add => MemberChange::Add(ids),
                    PatchOpKind::Replace => MemberChange::ReplaceAll(ids),
                    PatchOpKind::Remove => MemberChange::Remove(ids),
                });
            }
            if members.is_none() {
                return Ok(untouched());
            }
            let rest = (!rest.is_empty()).then(|| PatchOperation {
                op: op.op,
                path: None,
                value: Some(Value::Object(rest)),
            });
            Ok(MemberSplit { members, rest })
        }
        // Malformed; apply_operations reports it.
        (None, _) => Ok(untouched()),
    }
}

fn names_members(attr: &AttrPath) -> bool {
    attr.is("members")
        && attr
            .urn
            .as_deref()
            .map_or(true, |urn| starts_with_ci(urn, CORE_SCHEMA_PREFIX))
}

fn path_member_change(
    kind: PatchOpKind,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<MemberChange, PatchError> {
    if path.attr.sub_attr.is_some() || path.sub_attr.is_some() {
        return Err(PatchError::InvalidPath(format!(
            "path {path} is not supported; use \"members\" or members[value eq \"id\"]"
        )));
    }
    if let Some(filter) = &path.filter {
        let ids = (kind == PatchOpKind::Remove)
            .then(|| filtered_member_ids(filter))
            .flatten()
            .ok_or_else(|| {
                PatchError::InvalidPath(format!(
                    "path {path} is not supported; members can be selected only by \
                     value eq \"id\" (joined by or), and only to remove them"
                ))
            })?;
        return Ok(MemberChange::Remove(dedupe(ids)));
    }
    match (kind, value) {
        (PatchOpKind::Add, Some(value)) => Ok(MemberChange::Add(member_ids(value)?)),
        (PatchOpKind::Add, None) => Err(PatchError::InvalidValue("add needs a \"value\"".into())),
        (PatchOpKind::Remove, None | Some(Value::Null)) => Ok(MemberChange::RemoveAll),
        (PatchOpKind::Remove, Some(value)) => Ok(MemberChange::Remove(member_ids(value)?)),
        (PatchOpKind::Replace, value) => Ok(MemberChange::ReplaceAll(member_ids(
            value.unwrap_or(&Value::Null),
        )?)),
    }
}

fn filtered_member_ids(filter: &Filter) -> Option<Vec<String>> {
    match filter {
        Filter::Or(a, b) => {
            let mut ids = filtered_member_ids(a)?;
            ids.extend(filtered_member_ids(b)?);
            Some(ids)
        }
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: CompValue::Str(id),
        } if path.is("value") && path.urn.is_none() && path.sub_attr.is_none() => {
            Some(vec![id.clone()])
        }
        _ => None,
    }
}

fn member_ids(value: &Value) -> Result<Vec<String>, PatchError> {
    let elements: Vec<&Value> = match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut ids = Vec::new();
    for element in elements {
        match element {
            Value::String(id) if !id.is_empty() => ids.push(id.clone()),
            Value::Object(fields) => {
                let nested_group = get_ci(fields, "type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("group"));
                if nested_group {
                    continue;
                }
                match get_ci(fields, "value") {
                    Some(Value::String(id)) if !id.is_empty() => ids.push(id.clone()),
                    _ => {
                        return Err(PatchError::InvalidValue(format!(
                            "each member needs a non-empty string \"value\", got {}",
                            describe(element)
                        )))
                    }
                }
            }
            other => {
                return Err(PatchError::InvalidValue(format!(
                    "members must be objects such as {{\"value\": \"id\"}}, got {}",
                    describe(other)
                )))
            }
        }
    }
    Ok(dedupe(ids))
}

fn dedupe(ids: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

// ---------------------------------------------------------------------------
// Helpers

fn find_key(object: &Map<String, Value>, name: &str) -> Option<String> {
    if object.contains_key(name) {
        return Some(name.to_string());
    }
    object
        .keys()
        .find(|key| key.eq_ignore_ascii_case(name))
        .cloned()
}

fn get_ci<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    find_key(object, name).and_then(|key| object.get(&key))
}

fn get_ci_mut<'v>(object: &'v mut Map<String, Value>, name: &str) -> Option<&'v mut Value> {
    find_key(object, name).and_then(|key| object.get_mut(&key))
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// A short rendering of client-supplied JSON for error messages.
fn describe(value: &Value) -> String {
    const LIMIT: usize = 60;
    let text = value.to_string();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    const READ_ONLY: &[&str] = &["id", "meta"];

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"type": "home", "value": "babs@home.example", "primary": true}],
            "active": true,
            "meta": {"resourceType": "User", "version": "W/\"1\""}
        })
    }

    fn group() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
            "displayName": "Tour Guides",
            "members": [
                {"value": "2819c223", "display": "Babs Jensen"},
                {"value": "902c246b", "display": "Mandy Pepperidge"}
            ]
        })
    }

    fn parse(body: Value) -> Vec<PatchOperation> {
        match parse_patch_request(&body) {
            Ok(ops) => ops,
            Err(err) => panic!("{body} should parse, got {err:?}"),
        }
    }

    fn patch(resource: &mut Value, body: Value) -> Result<(), PatchError> {
        let ops = parse_patch_request(&body)?;
        apply_operations(resource, &ops, READ_ONLY)
    }

    fn patched(mut resource: Value, body: Value) -> Value {
        if let Err(err) = patch(&mut resource, body.clone()) {
            panic!("{body} should apply, got {err:?}");
        }
        resource
    }

    fn body(operations: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})
    }

    // --- request parsing ---------------------------------------------------

    #[test]
    fn entra_capitalised_ops_are_accepted() {
        let ops = parse(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                {"op": "Add", "path": "name.familyName", "value": "updatedFamilyName"},
                {"op": "Remove", "path": "title"}
            ]
        }));
        let kinds: Vec<PatchOpKind> = ops.iter().map(|op| op.op).collect();
        assert_eq!(
            kinds,
            [PatchOpKind::Replace, PatchOpKind::Add, PatchOpKind::Remove]
        );
        let path = ops[0].path.as_ref().expect("path");
        assert!(path.attr.is("emails"));
        assert_eq!(path.sub_attr.as_deref(), Some("value"));
    }

    #[test]
    fn empty_operations_are_valid_and_change_nothing() {
        let ops = parse(json!({"schemas": [PATCH_OP_SCHEMA], "Operations": []}));
        assert!(ops.is_empty());
        assert_eq!(patched(user(), body(json!([]))), user());
    }

    #[test]
    fn lowercase_operations_key_and_missing_schemas_are_tolerated() {
        let ops = parse(json!({"operations": [{"op": "remove", "path": "title"}]}));
        assert_eq!(ops.len(), 1);
        let ops = parse(json!({"schemas": ["urn:example:Nonstandard"], "Operations": []}));
        assert!(ops.is_empty());
    }

    #[test]
    fn a_body_without_an_operations_array_is_invalid_syntax() {
        for body in [
            json!({"schemas": [PATCH_OP_SCHEMA]}),
            json!({"Operations": {"op": "add"}}),
            json!([]),
            json!("Operations"),
        ] {
            let err = parse_patch_request(&body).expect_err("invalid body");
            assert_eq!(err.scim_type(), "invalidSyntax", "{body}: {err}");
        }
    }

    #[test]
    fn unknown_or_malformed_operations_are_invalid_syntax_naming_the_index() {
        let err = parse_patch_request(&body(json!([
            {"op": "add", "path": "title", "value": "x"},
            {"op": "merge", "path": "title", "value": "x"}
        ])))
        .expect_err("unknown op");
        assert!(matches!(err, PatchError::InvalidSyntax(_)));
        assert_eq!(
            err.to_string(),
            "Operations[1]: unknown op \"merge\"; expected \"add\", \"remove\" or \"replace\""
        );

        let err = parse_patch_request(&body(json!(["replace"]))).expect_err("not an object");
        assert!(matches!(err, PatchError::InvalidSyntax(ref m) if m.starts_with("Operations[0]")));
        let err = parse_patch_request(&body(json!([{"path": "title"}]))).expect_err("no op");
        assert!(matches!(err, PatchError::InvalidSyntax(_)));
        let err = parse_patch_request(&body(json!([{"op": 1}]))).expect_err("op not a string");
        assert!(matches!(err, PatchError::InvalidSyntax(_)));
    }

    #[test]
    fn an_unparseable_path_is_invalid_path() {
        for path in [
            json!("emails[type eq work]"),
            json!(""),
            json!(7),
            json!("a b"),
        ] {
            let err = parse_patch_request(&body(json!([{"op": "remove", "path": path}])))
                .expect_err("bad path");
            assert_eq!(err.scim_type(), "invalidPath", "{path}: {err}");
        }
    }

    #[test]
    fn remove_without_a_path_is_no_target() {
        let err = parse_patch_request(&body(json!([{"op": "remove"}]))).expect_err("no path");
        assert_eq!(err.scim_type(), "noTarget");
    }

    #[test]
    fn add_or_replace_without_a_value_is_invalid_value() {
        for op in [
            json!({"op": "add", "path": "title"}),
            json!({"op": "replace"}),
            json!({"op": "replace", "value": "x"}),
            json!({"op": "add", "value": [1]}),
        ] {
            let err = parse_patch_request(&body(json!([op]))).expect_err("no value");
            assert_eq!(err.scim_type(), "invalidValue", "{err}");
        }
    }

    #[test]
    fn errors_map_to_scim_types() {
        let cases = [
            (PatchError::InvalidSyntax(String::new()), "invalidSyntax"),
            (PatchError::InvalidPath(String::new()), "invalidPath"),
            (PatchError::NoTarget(String::new()), "noTarget"),
            (PatchError::InvalidValue(String::new()), "invalidValue"),
            (PatchError::Mutability(String::new()), "mutability"),
        ];
        for (err, scim_type) in cases {
            assert_eq!(err.scim_type(), scim_type);
        }
    }

    // --- real IdP requests -------------------------------------------------

    #[test]
    fn entra_disables_a_user_with_a_string_boolean() {
        let result = patched(
            user(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Replace", "path": "active", "value": "False"}]
            }),
        );
        assert_eq!(result["active"], json!(false));
    }

    #[test]
    fn entra_replaces_the_work_email_and_family_name() {
        let mut resource = user();
        resource["emails"] = json!([
            {"type": "work", "value": "old@corp.example", "primary": true},
            {"type": "home", "value": "babs@home.example"}
        ]);
        let result = patched(
            resource,
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                    {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
                ]
            }),
        );
        assert_eq!(
            result["emails"],
            json!([
                {"type": "work", "value": "updatedEmail@microsoft.com", "primary": true},
                {"type": "home", "value": "babs@home.example"}
            ])
        );
        assert_eq!(
            result["name"],
            json!({"givenName": "Barbara", "familyName": "updatedFamilyName"})
        );
    }

    #[test]
    fn entra_add_of_a_work_email_creates_the_element_when_none_matches() {
        let result = patched(
            user(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "bjensen@corp.example"}
                ]
            }),
        );
        assert_eq!(
            result["emails"],
            json!([
                {"type": "home", "value": "babs@home.example", "primary": true},
                {"type": "work", "value": "bjensen@corp.example"}
            ])
        );

        let mut resource = user();
        resource.as_object_mut().map(|u| u.remove("emails"));
        let result = patched(
            resource,
            body(json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "bjensen@corp.example"}
            ])),
        );
        assert_eq!(
            result["emails"],
            json!([{"type": "work", "value": "bjensen@corp.example"}])
        );
    }

    #[test]
    fn entra_path_less_replace_routes_dotted_and_urn_keys() {
        let result = patched(
            user(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "replace",
                    "value": {
                        "displayName": "Babs",
                        "name.givenName": "Barbie",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
                        "urn:ietf:params:scim:schemas:core:2.0:User:userName": "babs@example.com",
                        "active": "True"
                    }
                }]
            }),
        );
        assert_eq!(result["displayName"], json!("Babs"));
        assert_eq!(
            result["name"],
            json!({"givenName": "Barbie", "familyName": "Jensen"})
        );
        assert_eq!(result[ENTERPRISE], json!({"department": "Sales"}));
        assert_eq!(result["userName"], json!("babs@example.com"));
        assert_eq!(result["active"], json!(true));
        assert_eq!(
            result["schemas"],
            json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE])
        );
        assert!(result.get("name.givenName").is_none());
    }

    #[test]
    fn entra_removes_members_by_listing_them() {
        let result = patched(
            group(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "Remove",
                    "path": "members",
                    "value": [{"value": "2819c223"}, {"value": "not-a-member"}]
                }]
            }),
        );
        assert_eq!(
            result["members"],
            json!([{"value": "902c246b", "display": "Mandy Pepperidge"}])
        );
    }

    #[test]
    fn entra_sets_the_manager_from_a_bare_id() {
        let result = patched(
            user(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "Add",
                    "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                    "value": "some-id"
                }]
            }),
        );
        assert_eq!(result[ENTERPRISE], json!({"manager": {"value": "some-id"}}));
    }

    #[test]
    fn entra_sets_the_manager_from_a_list_of_one_reference() {
        let mut resource = user();
        resource[ENTERPRISE] = json!({"manager": {"value": "old", "displayName": "Old Boss"}});
        let result = patched(
            resource,
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "Replace",
                    "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                    "value": [{"$ref": null, "value": "new-id"}]
                }]
            }),
        );
        assert_eq!(result[ENTERPRISE], json!({"manager": {"value": "new-id"}}));
    }

    #[test]
    fn manager_can_be_cleared_or_addressed_by_its_value() {
        let mut resource = user();
        resource[ENTERPRISE] = json!({"manager": {"value": "old"}, "department": "Sales"});
        let result = patched(
            resource.clone(),
            body(json!([{"op": "Remove", "path": format!("{ENTERPRISE}:manager")}])),
        );
        assert_eq!(result[ENTERPRISE], json!({"department": "Sales"}));
        let result = patched(
            resource.clone(),
            body(json!([{"op": "Replace", "path": format!("{ENTERPRISE}:manager"), "value": ""}])),
        );
        assert_eq!(result[ENTERPRISE], json!({"department": "Sales"}));
        let result = patched(
            resource,
            body(
                json!([{"op": "Replace", "path": format!("{ENTERPRISE}:manager.value"), "value": "x"}]),
            ),
        );
        assert_eq!(result[ENTERPRISE]["manager"], json!({"value": "x"}));
        let err = patch(
            &mut user(),
            body(json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": ["a", "b"]}])),
        )
        .expect_err("two managers");
        assert_eq!(err.scim_type(), "invalidValue");
    }

    /// Every shape Microsoft documents for Entra's `manager` (and the ones other IdPs
    /// send) sets or clears the same enterprise attribute.
    #[test]
    fn every_documented_manager_shape_sets_or_clears_the_enterprise_manager() {
        let urn_manager = format!("{ENTERPRISE}:manager");
        let reference = json!([{"$ref": null, "value": "new-id"}]);
        let with_url =
            json!([{"$ref": "https://example.com/scim/v2/Users/new-id", "value": "new-id"}]);
        let sets = [
            json!({"op": "Add", "path": "manager", "value": reference}),
            json!({"op": "Add", "path": "manager", "value": with_url}),
            json!({"op": "Add", "path": urn_manager, "value": reference}),
            json!({"op": "Add", "path": "manager", "value": "new-id"}),
            json!({"op": "Add", "path": urn_manager, "value": "new-id"}),
            json!({"op": "replace", "path": "manager", "value": {"value": "new-id"}}),
            json!({"op": "Replace", "path": urn_manager, "value": {"value": "new-id"}}),
            json!({"op": "Replace", "path": "Manager", "value": "new-id"}),
            json!({"op": "replace", "path": "manager.value", "value": "new-id"}),
            json!({"op": "replace", "value": {urn_manager.clone(): "new-id"}}),
            json!({"op": "replace", "value": {urn_manager.clone(): {"value": "new-id"}}}),
            json!({"op": "replace", "value": {"manager": "new-id"}}),
            json!({"op": "add", "value": {ENTERPRISE: {"manager": {"value": "new-id"}}}}),
        ];
        for op in sets {
            let mut resource = user();
            resource[ENTERPRISE] = json!({"manager": {"value": "old"}, "department": "Sales"});
            let result = patched(resource, body(json!([op.clone()])));
            assert_eq!(result[ENTERPRISE]["manager"]["value"], "new-id", "{op}");
            assert_eq!(result[ENTERPRISE]["department"], "Sales", "{op}");
            assert!(result.get("manager").is_none(), "{op}: {result}");
            // From a user with no extension yet, too.
            let fresh = patched(user(), body(json!([op.clone()])));
            assert_eq!(fresh[ENTERPRISE]["manager"]["value"], "new-id", "{op}");
            assert!(fresh["schemas"]
                .as_array()
                .is_some_and(|s| s.contains(&json!(ENTERPRISE))));
        }
        // An empty value unassigns: Entra sends it when the source manager was cleared.
        let clears = [
            json!({"op": "remove", "path": "manager"}),
            json!({"op": "Remove", "path": urn_manager}),
            json!({"op": "Replace", "path": "manager", "value": null}),
            json!({"op": "Replace", "path": urn_manager, "value": ""}),
            json!({"op": "Replace", "path": "manager", "value": {"value": ""}}),
            json!({"op": "Replace", "path": "manager", "value": []}),
            json!({"op": "replace", "value": {urn_manager.clone(): null}}),
        ];
        for op in clears {
            let mut resource = user();
            resource[ENTERPRISE] = json!({"manager": {"value": "old"}, "department": "Sales"});
            let result = patched(resource, body(json!([op.clone()])));
            assert_eq!(result[ENTERPRISE], json!({"department": "Sales"}), "{op}");
            assert!(result.get("manager").is_none(), "{op}: {result}");
        }
    }

    #[test]
    fn an_unqualified_manager_on_a_group_is_not_moved_into_the_user_extension() {
        let result = patched(
            group(),
            body(json!([{"op": "add", "path": "manager", "value": "x"}])),
        );
        assert!(result.get(ENTERPRISE).is_none(), "{result}");
    }

    #[test]
    fn okta_deprovisions_with_a_path_less_replace() {
        let result = patched(
            user(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": false}}]
            }),
        );
        assert_eq!(result["active"], json!(false));
    }

    #[test]
    fn okta_group_push_rename_echoes_the_group_id() {
        let result = patched(
            group(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "replace",
                    "value": {"id": "e9e30dba-f08f-4109-8486-d5c6a331660a", "displayName": "Tour Guides EMEA"}
                }]
            }),
        );
        assert_eq!(result["displayName"], json!("Tour Guides EMEA"));
        assert_eq!(result["id"], json!("e9e30dba-f08f-4109-8486-d5c6a331660a"));
    }

    #[test]
    fn changing_a_read_only_attribute_is_a_mutability_error() {
        let mut resource = group();
        let err = patch(
            &mut resource,
            body(json!([{"op": "replace", "value": {"id": "another-id", "displayName": "New"}}])),
        )
        .expect_err("id change");
        assert_eq!(err.scim_type(), "mutability");
        assert_eq!(resource, group());
        for op in [
            json!({"op": "replace", "path": "id", "value": "x"}),
            json!({"op": "remove", "path": "ID"}),
            json!({"op": "add", "path": "meta.version", "value": "x"}),
        ] {
            let err = patch(&mut resource, body(json!([op]))).expect_err("read-only");
            assert_eq!(err.scim_type(), "mutability", "{err}");
        }
    }

    #[test]
    fn path_less_meta_and_schemas_are_ignored() {
        let result = patched(
            user(),
            body(json!([{
                "op": "replace",
                "value": {"schemas": ["urn:x"], "meta": {"version": "W/\"9\""}, "title": "Boss"}
            }])),
        );
        assert_eq!(result["schemas"], user()["schemas"]);
        assert_eq!(result["meta"], user()["meta"]);
        assert_eq!(result["title"], json!("Boss"));
    }

    #[test]
    fn okta_replaces_one_member_by_filter_then_adds_another() {
        let result = patched(
            group(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "remove", "path": "members[value eq \"2819c223\"]"},
                    {"op": "add", "path": "members", "value": [
                        {"value": "19a6f8ac", "display": "test.user@okta.local"}
                    ]}
                ]
            }),
        );
        assert_eq!(
            result["members"],
            json!([
                {"value": "902c246b", "display": "Mandy Pepperidge"},
                {"value": "19a6f8ac", "display": "test.user@okta.local"}
            ])
        );
    }

    #[test]
    fn onelogin_string_booleans_are_normalised() {
        let mut resource = user();
        resource["active"] = json!(false);
        let result = patched(
            resource.clone(),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": "true"}}]
            }),
        );
        assert_eq!(result["active"], json!(true));
        let result = patched(
            resource,
            body(json!([{"op": "add", "path": "active", "value": " TRUE "}])),
        );
        assert_eq!(result["active"], json!(true));
        let err = patch(
            &mut user(),
            body(json!([{"op": "replace", "path": "active", "value": "yes"}])),
        )
        .expect_err("not a boolean");
        assert_eq!(err.scim_type(), "invalidValue");
    }

    // --- semantics ---------------------------------------------------------

    #[test]
    fn a_failing_operation_leaves_the_resource_unchanged() {
        let mut resource = user();
        let err = patch(
            &mut resource,
            body(json!([
                {"op": "replace", "path": "displayName", "value": "Changed"},
                {"op": "replace", "path": "userName.first", "value": "x"}
            ])),
        )
        .expect_err("second op fails");
        assert!(err.to_string().starts_with("Operations[1]: "), "{err}");
        assert_eq!(err.scim_type(), "invalidPath");
        assert_eq!(resource, user());
    }

    #[test]
    fn path_less_add_merges_each_attribute() {
        let result = patched(
            user(),
            body(json!([{
                "op": "add",
                "value": {
                    "emails": [
                        {"type": "home", "value": "babs@home.example", "primary": true},
                        {"type": "work", "value": "b@corp.example"}
                    ],
                    "name": {"middleName": "Jane"},
                    "nickName": "Babs",
                    "userName": "barbara"
                }
            }])),
        );
        assert_eq!(
            result["emails"],
            json!([
                {"type": "home", "value": "babs@home.example", "primary": true},
                {"type": "work", "value": "b@corp.example"}
            ])
        );
        assert_eq!(
            result["name"],
            json!({"givenName": "Barbara", "familyName": "Jensen", "middleName": "Jane"})
        );
        assert_eq!(result["nickName"], json!("Babs"));
        assert_eq!(result["userName"], json!("barbara"));
    }

    #[test]
    fn path_less_values_may_hold_a_whole_extension() {
        let mut resource = user();
        resource[ENTERPRISE] = json!({"department": "Sales", "costCenter": "4130"});
        let result = patched(
            resource,
            body(json!([{
                "op": "replace",
                "value": {ENTERPRISE: {"department": "Marketing", "manager": "boss-id"}}
            }])),
        );
        assert_eq!(
            result[ENTERPRISE],
            json!({"department": "Marketing", "costCenter": "4130", "manager": {"value": "boss-id"}})
        );
    }

    #[test]
    fn add_to_a_multi_valued_attribute_appends_without_duplicates() {
        let result = patched(
            group(),
            body(json!([{"op": "add", "path": "members", "value": [
                {"value": "2819c223"},
                {"value": "new-user"},
                {"value": "new-user"}
            ]}])),
        );
        assert_eq!(
            result["members"],
            json!([
                {"value": "2819c223", "display": "Babs Jensen"},
                {"value": "902c246b", "display": "Mandy Pepperidge"},
                {"value": "new-user"}
            ])
        );
        let result = patched(
            user(),
            body(
                json!([{"op": "add", "path": "phoneNumbers", "value": {"type": "work", "value": "555"}}]),
            ),
        );
        assert_eq!(
            result["phoneNumbers"],
            json!([{"type": "work", "value": "555"}])
        );
    }

    #[test]
    fn a_new_primary_element_clears_the_old_primary() {
        let result = patched(
            user(),
            body(json!([{"op": "add", "path": "emails", "value": [
                {"type": "work", "value": "b@corp.example", "primary": true}
            ]}])),
        );
        assert_eq!(
            result["emails"],
            json!([
                {"type": "home", "value": "babs@home.example", "primary": false},
                {"type": "work", "value": "b@corp.example", "primary": true}
            ])
        );
    }

    #[test]
    fn replace_of_a_complex_attribute_sets_only_the_given_sub_attributes() {
        let result = patched(
            user(),
            body(
                json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs", "familyName": null}}]),
            ),
        );
        assert_eq!(result["name"], json!({"givenName": "Babs"}));
    }

    #[test]
    fn replace_of_a_multi_valued_attribute_replaces_every_element() {
        let result = patched(
            group(),
            body(json!([{"op": "replace", "path": "members", "value": [{"value": "only"}]}])),
        );
        assert_eq!(result["members"], json!([{"value": "only"}]));
    }

    #[test]
    fn replace_with_a_filter_replaces_the_matching_elements() {
        let result = patched(
            user(),
            body(json!([{
                "op": "replace",
                "path": "emails[type eq \"home\"]",
                "value": {"type": "home", "value": "new@home.example"}
            }])),
        );
        assert_eq!(
            result["emails"],
            json!([{"type": "home", "value": "new@home.example"}])
        );
    }

    #[test]
    fn replace_with_a_filter_that_matches_nothing_is_no_target() {
        let mut resource = user();
        let err = patch(
            &mut resource,
            body(json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": {"value": "x"}}])),
        )
        .expect_err("no match");
        assert_eq!(err.scim_type(), "noTarget");
        let err = patch(
            &mut resource,
            body(json!([{"op": "add", "path": "emails[type ne \"home\"].value", "value": "x"}])),
        )
        .expect_err("cannot seed");
        assert_eq!(err.scim_type(), "noTarget");
        assert_eq!(resource, user());
    }

    #[test]
    fn add_with_a_filter_and_no_sub_attribute_merges_or_creates() {
        let result = patched(
            user(),
            body(json!([
                {"op": "add", "path": "emails[type eq \"home\"]", "value": {"display": "Home"}},
                {"op": "add", "path": "emails[type eq \"work\"]", "value": {"value": "w@corp.example"}}
            ])),
        );
        assert_eq!(
            result["emails"],
            json!([
                {"type": "home", "value": "babs@home.example", "primary": true, "display": "Home"},
                {"type": "work", "value": "w@corp.example"}
            ])
        );
    }

    #[test]
    fn setting_an_attribute_to_null_removes_it() {
        let result = patched(
            user(),
            body(json!([
                {"op": "replace", "path": "userName", "value": null},
                {"op": "replace", "value": {"emails": null, "name.givenName": null}}
            ])),
        );
        assert!(result.get("userName").is_none());
        assert!(result.get("emails").is_none());
        assert_eq!(result["name"], json!({"familyName": "Jensen"}));
    }

    #[test]
    fn remove_deletes_attributes_sub_attributes_and_selected_elements() {
        let result = patched(
            user(),
            body(json!([
                {"op": "remove", "path": "name.familyName"},
                {"op": "remove", "path": "emails[type eq \"home\"]"},
                {"op": "remove", "path": "active"}
            ])),
        );
        assert_eq!(result["name"], json!({"givenName": "Barbara"}));
        assert!(
            result.get("emails").is_none(),
            "an emptied list is unassigned"
        );
        assert!(result.get("active").is_none());
        let result = patched(
            user(),
            body(json!([{"op": "remove", "path": "emails[type eq \"home\"].primary"}])),
        );
        assert_eq!(
            result["emails"],
            json!([{"type": "home", "value": "babs@home.example"}])
        );
    }

    #[test]
    fn removing_something_absent_is_not_an_error() {
        let result = patched(
            user(),
            body(json!([
                {"op": "remove", "path": "title"},
                {"op": "remove", "path": "addresses[type eq \"work\"]"},
                {"op": "remove", "path": "emails[type eq \"work\"]"},
                {"op": "remove", "path": "x509Certificates.value"},
                {"op": "remove", "path": format!("{ENTERPRISE}:manager")}
            ])),
        );
        assert_eq!(result, user());
    }

    #[test]
    fn a_filter_on_a_single_valued_attribute_is_invalid_path() {
        for op in [
            json!({"op": "remove", "path": "userName[value eq \"x\"]"}),
            json!({"op": "replace", "path": "name[givenName eq \"Barbara\"].givenName", "value": "x"}),
        ] {
            let err = patch(&mut user(), body(json!([op]))).expect_err("not multi-valued");
            assert_eq!(err.scim_type(), "invalidPath", "{err}");
        }
        let err = patch(
            &mut user(),
            body(json!([{"op": "replace", "path": "emails.value", "value": "x"}])),
        )
        .expect_err("multi-valued without filter");
        assert_eq!(err.scim_type(), "invalidPath");
    }

    #[test]
    fn attribute_names_match_case_insensitively_and_keep_their_spelling() {
        let result = patched(
            user(),
            body(json!([
                {"op": "replace", "path": "USERNAME", "value": "b"},
                {"op": "replace", "path": "Name.GivenName", "value": "B"},
                {"op": "add", "path": "EMAILS[TYPE eq \"HOME\"].Display", "value": "Home"},
                {"op": "add", "path": "nickName", "value": "Babs"}
            ])),
        );
        let keys: Vec<&String> = result
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            ["schemas", "id", "userName", "name", "emails", "active", "meta", "nickName"]
        );
        assert_eq!(result["userName"], json!("b"));
        assert_eq!(result["name"]["givenName"], json!("B"));
        assert_eq!(result["emails"][0]["Display"], json!("Home"));
    }

    #[test]
    fn path_less_value_keys_may_carry_a_filter() {
        let result = patched(
            user(),
            body(json!([{
                "op": "Replace",
                "value": {"emails[type eq \"work\"].value": "b@corp.example"}
            }])),
        );
        assert_eq!(
            result["emails"][1],
            json!({"type": "work", "value": "b@corp.example"})
        );
        let err = patch(
            &mut user(),
            body(json!([{"op": "replace", "value": {"bad key!": 1}}])),
        )
        .expect_err("not a path");
        assert_eq!(err.scim_type(), "invalidPath");
    }

    #[test]
    fn setting_primary_through_a_filter_clears_it_elsewhere() {
        let mut resource = user();
        resource["emails"] = json!([
            {"type": "home", "value": "h@home.example", "primary": true},
            {"type": "work", "value": "w@corp.example"}
        ]);
        let result = patched(
            resource,
            body(
                json!([{"op": "replace", "path": "emails[type eq \"work\"].primary", "value": true}]),
            ),
        );
        assert_eq!(result["emails"][0]["primary"], json!(false));
        assert_eq!(result["emails"][1]["primary"], json!(true));
    }

    #[test]
    fn a_path_may_name_the_whole_enterprise_extension() {
        let result = patched(
            user(),
            body(
                json!([{"op": "add", "path": ENTERPRISE, "value": {"employeeNumber": "701984", "manager": "m"}}]),
            ),
        );
        assert_eq!(
            result[ENTERPRISE],
            json!({"employeeNumber": "701984", "manager": {"value": "m"}})
        );
        let result = patched(result, body(json!([{"op": "remove", "path": ENTERPRISE}])));
        assert!(result.get(ENTERPRISE).is_none());
    }

    #[test]
    fn apply_refuses_a_resource_that_is_not_an_object() {
        let mut resource = json!([1, 2]);
        let err = apply_operations(&mut resource, &[], READ_ONLY).expect_err("not an object");
        assert_eq!(err.scim_type(), "invalidSyntax");
    }

    // --- member changes ----------------------------------------------------

    fn split(op: Value) -> MemberSplit {
        let ops = parse(body(json!([op])));
        match member_changes(&ops[0]) {
            Ok(split) => split,
            Err(err) => panic!("member_changes failed: {err:?}"),
        }
    }

    fn members_only(change: MemberChange) -> MemberSplit {
        MemberSplit {
            members: Some(change),
            rest: None,
        }
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn member_add_lists_the_user_ids_and_drops_nested_groups() {
        assert_eq!(
            split(json!({"op": "add", "path": "members", "value": [
                {"value": "u1", "display": "One"},
                {"value": "g1", "type": "Group"},
                {"value": "u2", "type": "User"},
                {"value": "u1"}
            ]})),
            members_only(MemberChange::Add(ids(&["u1", "u2"])))
        );
    }

    #[test]
    fn member_remove_by_filter_lists_the_ids() {
        assert_eq!(
            split(json!({"op": "remove", "path": "members[value eq \"x\"]"})),
            members_only(MemberChange::Remove(ids(&["x"])))
        );
        assert_eq!(
            split(json!({"op": "remove", "path": "members[value eq \"x\" or value eq \"y\"]"})),
            members_only(MemberChange::Remove(ids(&["x", "y"])))
        );
    }

    #[test]
    fn member_remove_with_a_value_list_lists_the_ids() {
        assert_eq!(
            split(
                json!({"op": "Remove", "path": "members", "value": [{"value": "id1"}, {"value": "id2"}]})
            ),
            members_only(MemberChange::Remove(ids(&["id1", "id2"])))
        );
        assert_eq!(
            split(json!({"op": "Remove", "path": "members", "value": []})),
            members_only(MemberChange::Remove(Vec::new()))
        );
    }

    #[test]
    fn member_remove_without_a_value_removes_everyone() {
        assert_eq!(
            split(json!({"op": "remove", "path": "members"})),
            members_only(MemberChange::RemoveAll)
        );
    }

    #[test]
    fn member_replace_sets_the_whole_roster() {
        assert_eq!(
            split(json!({"op": "replace", "path": "members", "value": [{"value": "a"}]})),
            members_only(MemberChange::ReplaceAll(ids(&["a"])))
        );
        assert_eq!(
            split(
                json!({"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:members", "value": []})
            ),
            members_only(MemberChange::ReplaceAll(Vec::new()))
        );
    }

    #[test]
    fn path_less_members_are_split_from_the_other_attributes() {
        assert_eq!(
            split(json!({"op": "add", "value": {"members": [{"value": "a"}], "displayName": "X"}})),
            MemberSplit {
                members: Some(MemberChange::Add(ids(&["a"]))),
                rest: Some(PatchOperation {
                    op: PatchOpKind::Add,
                    path: None,
                    value: Some(json!({"displayName": "X"})),
                }),
            }
        );
        assert_eq!(
            split(json!({"op": "replace", "value": {"Members": [{"value": "b"}]}})),
            members_only(MemberChange::ReplaceAll(ids(&["b"])))
        );
    }

    #[test]
    fn operations_that_do_not_touch_members_are_returned_whole() {
        let op = json!({"op": "replace", "value": {"displayName": "X"}});
        let ops = parse(body(json!([op.clone()])));
        assert_eq!(
            split(op),
            MemberSplit {
                members: None,
                rest: Some(ops[0].clone()),
            }
        );
        let split = split(json!({"op": "replace", "path": "displayName", "value": "X"}));
        assert!(split.members.is_none() && split.rest.is_some());
    }

    #[test]
    fn member_changes_the_roster_cannot_resolve_are_rejected() {
        for op in [
            json!({"op": "remove", "path": "members[display co \"x\"]"}),
            json!({"op": "replace", "path": "members[value eq \"x\"]", "value": {"value": "y"}}),
            json!({"op": "replace", "path": "members[value eq \"x\"].display", "value": "y"}),
        ] {
            let ops = parse(body(json!([op])));
            let err = member_changes(&ops[0]).expect_err("unsupported");
            assert_eq!(err.scim_type(), "invalidPath", "{err}");
        }
        for value in [json!([{"display": "no id"}]), json!([42])] {
            let ops = parse(body(
                json!([{"op": "add", "path": "members", "value": value}]),
            ));
            let err = member_changes(&ops[0]).expect_err("no id");
            assert_eq!(err.scim_type(), "invalidValue", "{err}");
        }
    }

    // --- properties --------------------------------------------------------

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(Value::from),
            prop_oneof![
                Just("work"),
                Just("home"),
                Just("x"),
                Just("True"),
                Just(""),
                Just("u1")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((arb_key(), inner), 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("value"),
            Just("type"),
            Just("primary"),
            Just("emails"),
            Just("name"),
            Just("givenName"),
            Just("active"),
            Just("manager"),
            Just("members"),
            Just("id"),
            Just("meta"),
            Just(ENTERPRISE),
            Just("name.givenName"),
            Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"),
            Just("emails[type eq \"work\"].value"),
            Just("bad key!"),
        ]
        .prop_map(String::from)
    }

    fn arb_path() -> impl Strategy<Value = Option<PatchPath>> {
        prop_oneof![
            Just(None),
            arb_key().prop_map(|key| filter::parse_patch_path(&key).ok()),
            prop_oneof![
                Just("members[value eq \"u1\"]"),
                Just("emails[type eq \"work\" or primary eq true]"),
                Just("emails[not (type eq \"work\")].display"),
                Just("name.familyName"),
                Just("urn:ietf:params:scim:schemas:core:2.0:User"),
                Just("urn:ietf:params:scim:schemas:core:2.0:User:emails[value pr].type"),
                Just("urn:example:Ext:1.0:Thing:attr.sub"),
            ]
            .prop_map(|path| filter::parse_patch_path(path).ok()),
        ]
    }

    fn arb_op() -> impl Strategy<Value = PatchOperation> {
        let kind = prop_oneof![
            Just(PatchOpKind::Add),
            Just(PatchOpKind::Remove),
            Just(PatchOpKind::Replace)
        ];
        (kind, arb_path(), proptest::option::of(arb_json()))
            .prop_map(|(op, path, value)| PatchOperation { op, path, value })
    }

    proptest! {
        #[test]
        fn applying_arbitrary_operations_never_panics_and_is_atomic(
            resource in prop_oneof![Just(user()), Just(group()), arb_json()],
            ops in prop::collection::vec(arb_op(), 0..6),
        ) {
            let mut patched = resource.clone();
            if apply_operations(&mut patched, &ops, READ_ONLY).is_err() {
                prop_assert_eq!(patched, resource);
            }
            for op in &ops {
                let _ = member_changes(op);
            }
        }

        #[test]
        fn parsing_arbitrary_bodies_never_panics(ops in prop::collection::vec(arb_json(), 0..4)) {
            let _ = parse_patch_request(&json!({"Operations": ops}));
        }
    }
}
