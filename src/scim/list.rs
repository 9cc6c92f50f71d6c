//! List and search parameters (RFC 7644 §3.4.2, §3.4.3) and the attribute
//! projection of §3.4.2.5 (`attributes` / `excludedAttributes`), which applies to
//! every response that carries a resource.

use super::filter::{parse_filter, AttrPath, Filter};
use super::lower::{lower_filter, lower_sort, Resource, Unsupported};
use super::resources::{LIST_RESPONSE_SCHEMA, SEARCH_REQUEST_SCHEMA};
use crate::error::ApiError;
use crate::store::query::ListQuery;
use serde_json::{json, Map, Value};

/// Page size when the client does not ask for one (Keycloak's plugin sends none).
pub const DEFAULT_COUNT: u64 = 100;
/// Largest page served; advertised as filter.maxResults.
pub const MAX_COUNT: u64 = 1000;

/// A parsed list or search request.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub filter: Option<Filter>,
    pub sort_by: Option<AttrPath>,
    pub descending: bool,
    /// 1-based, at least 1.
    pub start_index: u64,
    /// At most [`MAX_COUNT`].
    pub count: u64,
    pub projection: Projection,
}

impl ListParams {
    /// From a GET query string, already split into (name, value) pairs with `+`
    /// decoded as a space. Parameter names are matched case-insensitively.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let get = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        Self::build(
            get("filter").map(str::to_owned),
            get("sortBy").map(str::to_owned),
            get("sortOrder").map(str::to_owned),
            get("startIndex").map(parse_int).transpose()?,
            get("count").map(parse_int).transpose()?,
            Projection::from_query(pairs)?,
        )
    }

    /// From a POST /.search body (a SearchRequest).
    pub fn from_search(body: &Value) -> Result<Self, ApiError> {
        let Value::Object(fields) = body else {
            return Err(ApiError::invalid_syntax(
                "a SearchRequest must be a JSON object",
            ));
        };
        if let Some(schemas) = get_ci(fields, "schemas") {
            let ok = schemas
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(SEARCH_REQUEST_SCHEMA)));
            if !ok {
                return Err(ApiError::invalid_value(format!(
                    "a SearchRequest's schemas must contain {SEARCH_REQUEST_SCHEMA}"
                )));
            }
        }
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            match get_ci(fields, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ApiError::invalid_value(format!("{name} must be a string"))),
            }
        };
        let int = |name: &str| -> Result<Option<i128>, ApiError> {
            match get_ci(fields, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(Some(
                    n.as_i64()
                        .map(i128::from)
                        .or_else(|| n.as_u64().map(i128::from))
                        .or_else(|| n.as_f64().map(|f| f as i128))
                        .unwrap_or(0),
                )),
                Some(Value::String(s)) => parse_int(s).map(Some),
                Some(_) => Err(ApiError::invalid_value(format!(
                    "{name} must be an integer"
                ))),
            }
        };
        let list = |name: &str| -> Result<Vec<String>, ApiError> {
            match get_ci(fields, name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            ApiError::invalid_value(format!("{name} must list strings"))
                        })
                    })
                    .collect(),
                Some(Value::String(s)) => Ok(split_list(s)),
                Some(_) => Err(ApiError::invalid_value(format!(
                    "{name} must be a list of attribute names"
                ))),
            }
        };
        let projection = Projection::new(&list("attributes")?, &list("excludedAttributes")?)?;
        Self::build(
            text("filter")?,
            text("sortBy")?,
            text("sortOrder")?,
            int("startIndex")?,
            int("count")?,
            projection,
        )
    }

    fn build(
        filter: Option<String>,
        sort_by: Option<String>,
        sort_order: Option<String>,
        start_index: Option<i128>,
        count: Option<i128>,
        projection: Projection,
    ) -> Result<Self, ApiError> {
        let filter = match filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_filter(text)?),
        };
        let sort_by = match sort_by.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_attr_path(text).ok_or_else(|| {
                ApiError::invalid_value(format!("sortBy {text:?} is not an attribute path"))
            })?),
        };
        let descending = match sort_order.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(o) if o.eq_ignore_ascii_case("ascending") => false,
            Some(o) if o.eq_ignore_ascii_case("descending") => true,
            Some(o) => {
                return Err(ApiError::invalid_value(format!(
                    "sortOrder {o:?} must be \"ascending\" or \"descending\""
                )))
            }
        };
        // RFC 7644 §3.4.2.4: a startIndex below 1 is taken as 1, a negative count as 0.
        let start_index = start_index.map_or(1, |s| s.clamp(1, i128::from(u64::MAX)) as u64);
        let count = count.map_or(DEFAULT_COUNT, |c| c.clamp(0, i128::from(MAX_COUNT)) as u64);
        Ok(Self {
            filter,
            sort_by,
            descending,
            start_index,
            count,
            projection,
        })
    }

    /// The store query for one page of `resource`s: the filter first, then sortBy,
    /// so that a request wrong in both is told about its filter.
    pub fn query(&self, resource: Resource) -> Result<ListQuery, Unsupported> {
        let filter = self
            .filter
            .as_ref()
            .map(|filter| lower_filter(filter, resource))
            .transpose()?;
        let sort = self
            .sort_by
            .as_ref()
            .map(|path| lower_sort(path, resource, self.descending))
            .transpose()?;
        Ok(ListQuery {
            filter,
            sort,
            offset: self.start_index - 1,
            limit: self.count,
        })
    }
}

/// An integer parameter; a number too large for any page is clamped, not refused.
fn parse_int(text: &str) -> Result<i128, ApiError> {
    let text = text.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid_value(format!(
            "{text:?} is not an integer"
        )));
    }
    let negative = text.starts_with('-');
    Ok(match digits.parse::<i128>() {
        Ok(n) if negative => -n,
        Ok(n) => n,
        Err(_) if negative => i128::MIN,
        Err(_) => i128::MAX,
    })
}

fn get_ci<'v>(fields: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `[urn:]attr[.sub]` as used by attributes, excludedAttributes and sortBy.
/// A URN prefix is split off at the last colon.
fn parse_attr_path(text: &str) -> Option<AttrPath> {
    let text = text.trim();
    let (urn, rest) = match text.rfind(':') {
        Some(i) if text[..i].to_ascii_lowercase().starts_with("urn:") => {
            (Some(text[..i].to_owned()), &text[i + 1..])
        }
        Some(_) => return None,
        None => (None, text),
    };
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s.to_owned())),
        None => (rest, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    };
    if !valid(attr) || sub.as_deref().is_some_and(|s| !valid(s)) {
        return None;
    }
    Some(AttrPath {
        urn,
        attr: attr.to_owned(),
        sub_attr: sub,
    })
}

/// One requested or excluded attribute: the top-level key of the rendered resource
/// (an extension's URN for extension attributes) and the optional name below it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    top: String,
    below: Option<String>,
}

impl Selector {
    fn parse(text: &str) -> Result<Self, ApiError> {
        let text = text.trim();
        // A whole extension: "urn:...:enterprise:2.0:User".
        if text.to_ascii_lowercase().starts_with("urn:") && is_extension_urn(text) {
            return Ok(Selector {
                top: text.to_owned(),
                below: None,
            });
        }
        let path = parse_attr_path(text)
            .ok_or_else(|| ApiError::invalid_value(format!("{text:?} is not an attribute path")))?;
        match path.urn {
            Some(urn)
                if !urn
                    .to_ascii_lowercase()
                    .starts_with("urn:ietf:params:scim:schemas:core:") =>
            {
                // An extension attribute: the extension URN is the top-level key.
                Ok(Selector {
                    top: urn,
                    below: Some(path.attr),
                })
            }
            _ => Ok(Selector {
                top: path.attr,
                below: path.sub_attr,
            }),
        }
    }
}

fn is_extension_urn(text: &str) -> bool {
    text.eq_ignore_ascii_case(super::resources::ENTERPRISE_USER_SCHEMA)
}

/// Which attributes a response carries (RFC 7644 §3.4.2.5). `id` and `schemas`
/// are always returned.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    include: Vec<Selector>,
    exclude: Vec<Selector>,
}

const ALWAYS: &[&str] = &["id", "schemas"];

impl Projection {
    pub fn new(attributes: &[String], excluded: &[String]) -> Result<Self, ApiError> {
        Ok(Self {
            include: attributes
                .iter()
                .map(|a| Selector::parse(a))
                .collect::<Result<_, _>>()?,
            exclude: excluded
                .iter()
                .map(|a| Selector::parse(a))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let all = |name: &str| -> Vec<String> {
            pairs
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| split_list(v))
                .collect()
        };
        Self::new(&all("attributes"), &all("excludedAttributes"))
    }

    /// Whether the response needs top-level attribute `name` at all, so that
    /// expensive ones (a group's members, a user's groups) are loaded only when shown.
    pub fn wants(&self, name: &str) -> bool {
        if !self.include.is_empty() {
            return self
                .include
                .iter()
                .any(|s| s.top.eq_ignore_ascii_case(name));
        }
        !self
            .exclude
            .iter()
            .any(|s| s.top.eq_ignore_ascii_case(name) && s.below.is_none())
    }

    /// Trims a rendered resource to what was asked for.
    pub fn apply(&self, resource: &mut Value) {
        let Value::Object(fields) = resource else {
            return;
        };
        if !self.include.is_empty() {
            let keys: Vec<String> = fields.keys().cloned().collect();
            for key in keys {
                if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(&key)) {
                    continue;
                }
                let selected: Vec<&Selector> = self
                    .include
                    .iter()
                    .filter(|s| s.top.eq_ignore_ascii_case(&key))
                    .collect();
                if selected.is_empty() {
                    fields.shift_remove(&key);
                } else if selected.iter().all(|s| s.below.is_some()) {
                    let keep: Vec<&str> =
                        selected.iter().filter_map(|s| s.below.as_deref()).collect();
                    if let Some(value) = fields.get_mut(&key) {
                        retain_below(value, &keep);
                        if is_empty(value) {
                            fields.shift_remove(&key);
                        }
                    }
                }
            }
        }
        for excluded in &self.exclude {
            if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(&excluded.top)) {
                continue;
            }
            let Some(key) = fields
                .keys()
                .find(|k| k.eq_ignore_ascii_case(&excluded.top))
                .cloned()
            else {
                continue;
            };
            match &excluded.below {
                None => {
                    fields.shift_remove(&key);
                }
                Some(below) => {
                    if let Some(value) = fields.get_mut(&key) {
                        remove_below(value, below);
                        if is_empty(value) {
                            fields.shift_remove(&key);
                        }
                    }
                }
            }
        }
        // An extension's schema URN is listed only while the resource carries it.
        let present: Vec<String> = fields.keys().cloned().collect();
        if let Some(Value::Array(schemas)) = fields.get_mut("schemas") {
            schemas.retain(|s| {
                s.as_str().is_some_and(|s| {
                    s.to_ascii_lowercase()
                        .starts_with("urn:ietf:params:scim:schemas:core:")
                        || present.iter().any(|p| p.eq_ignore_ascii_case(s))
                })
            });
        }
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty() || a.iter().all(is_empty),
        Value::Null => true,
        _ => false,
    }
}

fn retain_below(value: &mut Value, keep: &[&str]) {
    match value {
        Value::Object(o) => o.retain(|k, _| keep.iter().any(|s| s.eq_ignore_ascii_case(k))),
        Value::Array(items) => items.iter_mut().for_each(|i| retain_below(i, keep)),
        _ => {}
    }
}

fn remove_below(value: &mut Value, name: &str) {
    match value {
        Value::Object(o) => o.retain(|k, _| !k.eq_ignore_ascii_case(name)),
        Value::Array(items) => items.iter_mut().for_each(|i| remove_below(i, name)),
        _ => {}
    }
}

/// A ListResponse for one page.
pub fn list_response(total: u64, start_index: u64, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_paging_parameters_serve_the_default_page() {
        let p = ListParams::from_query(&[]).unwrap();
        assert_eq!((p.start_index, p.count), (1, DEFAULT_COUNT));
    }

    #[test]
    fn out_of_range_paging_is_clamped_as_the_rfc_says() {
        let p = ListParams::from_query(&pairs(&[("startIndex", "-5"), ("count", "-1")])).unwrap();
        assert_eq!((p.start_index, p.count), (1, 0));
        let p = ListParams::from_query(&pairs(&[
            ("startindex", "0"),
            ("COUNT", "99999999999999999999999"),
        ]))
        .unwrap();
        assert_eq!((p.start_index, p.count), (1, MAX_COUNT));
    }

    const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

    #[test]
    fn attributes_keep_id_and_the_named_sub_attributes_only() {
        let projection = Projection::new(&["name.givenName".into()], &[]).unwrap();
        let mut user = json!({"schemas": [USER], "id": "1", "userName": "a", "name": {"givenName": "A", "familyName": "B"}});
        projection.apply(&mut user);
        assert_eq!(
            user,
            json!({"schemas": [USER], "id": "1", "name": {"givenName": "A"}})
        );
    }

    #[test]
    fn excluding_members_means_they_are_not_wanted() {
        let projection = Projection::new(&[], &["members".into()]).unwrap();
        assert!(!projection.wants("members"));
        assert!(projection.wants("displayName"));
    }
}
