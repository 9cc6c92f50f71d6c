//! SCIM filters and sortBy (RFC 7644 §3.4.2.2, §3.4.2.3) lowered into the store's own
//! query language ([`crate::store::query`]), which the store turns into SQL.
//!
//! What can be filtered on:
//!
//! - Users: `id`, `externalId` (case-exact), `userName` (case-insensitive, on the
//!   folded unique index), `displayName`, `name.givenName`, `name.familyName`,
//!   `active`, `meta.created`, `meta.lastModified`, the other core simple
//!   attributes (`nickName`, `title`, `userType`, `locale`, ..., `name.formatted`),
//!   the enterprise extension's simple attributes and `manager.value`, the
//!   multi-valued `emails`, `phoneNumbers`, `addresses`, `entitlements`, `roles`,
//!   `ims`, `photos`, `x509Certificates` (by sub-attribute or value filter, e.g.
//!   `emails[type eq "work" and value co "@example.com"]`) and `groups.value`.
//!   A user whose emails were never given as a list (created by an operator or a
//!   pull) has the single email of the `email` column, seen as
//!   `{"value": email, "type": "work", "primary": true}`.
//! - Groups: `id`, `externalId`, `displayName` (case-insensitive, on the folded
//!   index), `meta.created`, `meta.lastModified`, `members` / `members.value`
//!   (an EXISTS on the memberships primary key; the roster is never loaded).
//!
//! Anything else is an unsupported attribute, which the client is told with 400
//! invalidFilter rather than having the filter ignored.

use super::attributes::{
    canonical, ELEMENT_SUB_ATTRS, ENTERPRISE_JSON_SIMPLE, NAME_JSON_PARTS, USER_JSON_MULTI,
    USER_JSON_SIMPLE,
};
use super::filter::{AttrPath, CompValue, CompareOp, Filter};
use super::resources::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
use crate::store::query::{
    Case, Collection, Comparison, Element, Field, Predicate, Sort, Value, ValueKind,
};

/// The sub-attributes the `email` column answers for a user with no `emails` list.
const EMAIL_COLUMN_SUB_ATTRS: &[&str] = &["value", "type", "primary", "display"];

/// A filter or sortBy this server cannot evaluate; the message is shown to the client
/// as the detail of a 400 invalidFilter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

type LowerResult<T> = Result<T, Unsupported>;

fn unsupported<T>(message: impl Into<String>) -> LowerResult<T> {
    Err(Unsupported(message.into()))
}

/// Which resource type a filter is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    User,
    Group,
}

impl Resource {
    fn core_urn(self) -> &'static str {
        match self {
            Resource::User => USER_SCHEMA,
            Resource::Group => GROUP_SCHEMA,
        }
    }
}

/// The filter as a store predicate.
pub fn lower_filter(filter: &Filter, resource: Resource) -> LowerResult<Predicate> {
    Lowering { resource }.filter(filter)
}

/// sortBy as a store sort order. Sorting by a multi-valued attribute uses its primary
/// value (RFC 7644 §3.4.2.3), which only `emails` has a column for.
pub fn lower_sort(path: &AttrPath, resource: Resource, descending: bool) -> LowerResult<Sort> {
    let field = match (Lowering { resource }).resolve(path)? {
        Resolved::Scalar(field) => field,
        Resolved::Multi(Collection::Emails, sub) if sub.eq_ignore_ascii_case("value") => {
            Field::Email
        }
        Resolved::Multi(..) => return unsupported(format!("sorting by {path} is not supported")),
    };
    Ok(Sort { field, descending })
}

/// What an attribute path names.
enum Resolved {
    Scalar(Field),
    /// A multi-valued attribute, and the sub-attribute compared when the path names
    /// the attribute itself or `attr.sub`.
    Multi(Collection, String),
}

/// Where the element a sub-attribute is read from comes from. The email column stands
/// in for a missing `emails` list and answers fewer sub-attributes, so a test of
/// `emails` is lowered once for each and must pass both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementSource {
    List,
    EmailColumn,
}

struct Lowering {
    resource: Resource,
}

impl Lowering {
    fn resolve(&self, path: &AttrPath) -> LowerResult<Resolved> {
        let core = self.resource.core_urn();
        let urn = path.urn.as_deref();
        let sub = path.sub_attr.as_deref();
        let is_core = urn.map_or(true, |u| u.eq_ignore_ascii_case(core));
        if let Some(urn) = urn {
            if self.resource == Resource::User && urn.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
                return self.resolve_enterprise(path);
            }
            if !is_core {
                return unsupported(format!("filtering on {path} is not supported"));
            }
        }
        let attr = path.attr.as_str();
        let is = |name: &str| attr.eq_ignore_ascii_case(name);
        let no_sub = sub.is_none();
        let scalar = |field: Field| Ok(Resolved::Scalar(field));
        let multi = |collection: Collection| {
            Ok(Resolved::Multi(
                collection,
                sub.unwrap_or("value").to_owned(),
            ))
        };
        if is("id") && no_sub {
            return scalar(Field::Id);
        }
        if is("externalId") && no_sub {
            return scalar(Field::ExternalId);
        }
        if is("meta") {
            match sub {
                Some(s) if s.eq_ignore_ascii_case("created") => return scalar(Field::Created),
                Some(s) if s.eq_ignore_ascii_case("lastModified") => {
                    return scalar(Field::Modified)
                }
                _ => {}
            }
        }
        match self.resource {
            Resource::Group => {
                if is("displayName") && no_sub {
                    return scalar(Field::TeamName);
                }
                if is("members") {
                    return multi(Collection::MembersOfTeam);
                }
            }
            Resource::User => {
                if is("userName") && no_sub {
                    return scalar(Field::UserName);
                }
                if is("displayName") && no_sub {
                    return scalar(Field::UserDisplayName);
                }
                if is("active") && no_sub {
                    return scalar(Field::Active);
                }
                if is("name") {
                    match sub {
                        Some(s) if s.eq_ignore_ascii_case("givenName") => {
                            return scalar(Field::GivenName)
                        }
                        Some(s) if s.eq_ignore_ascii_case("familyName") => {
                            return scalar(Field::FamilyName)
                        }
                        Some(s) => {
                            if let Some(key) = canonical(NAME_JSON_PARTS, s) {
                                return scalar(attribute(vec!["name", key], Case::Insensitive));
                            }
                        }
                        None => {}
                    }
                }
                if no_sub {
                    if let Some(key) = canonical(USER_JSON_SIMPLE, attr) {
                        return scalar(attribute(vec![key], Case::Insensitive));
                    }
                }
                if is("emails") {
                    return multi(Collection::Emails);
                }
                if is("groups") {
                    return multi(Collection::TeamsOfUser);
                }
                if let Some(key) = canonical(USER_JSON_MULTI, attr) {
                    return multi(Collection::AttributeList(key));
                }
            }
        }
        unsupported(format!("filtering on {path} is not supported"))
    }

    fn resolve_enterprise(&self, path: &AttrPath) -> LowerResult<Resolved> {
        let attr = path.attr.as_str();
        let manager = |part: &'static str, case: Case| {
            Ok(Resolved::Scalar(attribute(
                vec![ENTERPRISE_USER_SCHEMA, "manager", part],
                case,
            )))
        };
        match path.sub_attr.as_deref() {
            None => {
                if let Some(key) = canonical(ENTERPRISE_JSON_SIMPLE, attr) {
                    return Ok(Resolved::Scalar(attribute(
                        vec![ENTERPRISE_USER_SCHEMA, key],
                        Case::Insensitive,
                    )));
                }
            }
            Some(sub) if attr.eq_ignore_ascii_case("manager") => {
                if sub.eq_ignore_ascii_case("value") {
                    return manager("value", Case::Exact);
                }
                if sub.eq_ignore_ascii_case("displayName") {
                    return manager("displayName", Case::Insensitive);
                }
            }
            Some(_) => {}
        }
        unsupported(format!("filtering on {path} is not supported"))
    }

    fn filter(&self, filter: &Filter) -> LowerResult<Predicate> {
        match filter {
            Filter::And(a, b) => Ok(Predicate::And(
                Box::new(self.filter(a)?),
                Box::new(self.filter(b)?),
            )),
            Filter::Or(a, b) => Ok(Predicate::Or(
                Box::new(self.filter(a)?),
                Box::new(self.filter(b)?),
            )),
            Filter::Not(inner) => Ok(Predicate::Not(Box::new(self.filter(inner)?))),
            Filter::Present(path) => match self.resolve(path)? {
                Resolved::Scalar(field) => Ok(Predicate::Present(field)),
                Resolved::Multi(collection, sub) => self.any(collection, |source| {
                    Ok(Predicate::Present(element(collection, source, &sub)?))
                }),
            },
            Filter::Compare { path, op, value } => match self.resolve(path)? {
                Resolved::Scalar(field) => compare(field, *op, value),
                Resolved::Multi(collection, sub) => {
                    // ne on a multi-valued attribute: no element equals the value.
                    if *op == CompareOp::Ne {
                        let test = self.test(collection, |source| {
                            compare(element(collection, source, &sub)?, CompareOp::Eq, value)
                        })?;
                        return Ok(Predicate::NoneOf(collection, Box::new(test)));
                    }
                    self.any(collection, |source| {
                        compare(element(collection, source, &sub)?, *op, value)
                    })
                }
            },
            Filter::ValuePath { path, filter } => {
                if path.sub_attr.is_some() {
                    return unsupported(format!("a value filter on {path} is not supported"));
                }
                match self.resolve(path)? {
                    Resolved::Multi(collection, _) => self.any(collection, |source| {
                        element_filter(collection, source, filter)
                    }),
                    Resolved::Scalar(_) => unsupported(format!(
                        "{path} is single-valued; a value filter needs a multi-valued attribute"
                    )),
                }
            }
        }
    }

    fn any(
        &self,
        collection: Collection,
        lower: impl Fn(ElementSource) -> LowerResult<Predicate>,
    ) -> LowerResult<Predicate> {
        Ok(Predicate::Any(
            collection,
            Box::new(self.test(collection, lower)?),
        ))
    }

    /// The test of one element; for `emails`, checked against the email column too.
    fn test(
        &self,
        collection: Collection,
        lower: impl Fn(ElementSource) -> LowerResult<Predicate>,
    ) -> LowerResult<Predicate> {
        let test = lower(ElementSource::List)?;
        if collection == Collection::Emails {
            lower(ElementSource::EmailColumn)?;
        }
        Ok(test)
    }
}

fn attribute(keys: Vec<&'static str>, case: Case) -> Field {
    Field::Attribute { keys, case }
}

/// A filter inside `attr[...]`: its paths name sub-attributes of one element.
fn element_filter(
    collection: Collection,
    source: ElementSource,
    filter: &Filter,
) -> LowerResult<Predicate> {
    let lower = |f: &Filter| element_filter(collection, source, f).map(Box::new);
    match filter {
        Filter::And(a, b) => Ok(Predicate::And(lower(a)?, lower(b)?)),
        Filter::Or(a, b) => Ok(Predicate::Or(lower(a)?, lower(b)?)),
        Filter::Not(inner) => Ok(Predicate::Not(lower(inner)?)),
        Filter::Present(path) => Ok(Predicate::Present(element(
            collection,
            source,
            element_sub(path)?,
        )?)),
        Filter::Compare { path, op, value } => {
            let field = element(collection, source, element_sub(path)?)?;
            compare(field, *op, value)
        }
        Filter::ValuePath { path, .. } => unsupported(format!(
            "a value filter inside a value filter ({path}) is not supported"
        )),
    }
}

/// Inside `attr[...]` a path names a sub-attribute of the element, e.g. `type`.
fn element_sub(path: &AttrPath) -> LowerResult<&str> {
    if path.urn.is_some() || path.sub_attr.is_some() {
        return unsupported(format!("{path} is not a sub-attribute name"));
    }
    Ok(&path.attr)
}

/// Sub-attribute `sub` of one element of `collection`.
fn element(collection: Collection, source: ElementSource, sub: &str) -> LowerResult<Field> {
    let is = |name: &str| sub.eq_ignore_ascii_case(name);
    let field = match collection {
        Collection::MembersOfTeam | Collection::TeamsOfUser if is("value") => {
            Field::Element(Element::RelatedId)
        }
        Collection::MembersOfTeam | Collection::TeamsOfUser if is("display") => {
            Field::Element(Element::RelatedName)
        }
        Collection::MembersOfTeam if is("type") => Field::Literal("User"),
        Collection::TeamsOfUser if is("type") => Field::Literal("direct"),
        Collection::Emails | Collection::AttributeList(_) => {
            let known = match source {
                ElementSource::List => ELEMENT_SUB_ATTRS,
                ElementSource::EmailColumn => EMAIL_COLUMN_SUB_ATTRS,
            };
            let Some(key) = canonical(known, sub) else {
                return unsupported(format!(
                    "filtering on sub-attribute {sub:?} is not supported"
                ));
            };
            if key == "primary" {
                Field::Element(Element::Bool(key))
            } else {
                Field::Element(Element::Text(key))
            }
        }
        _ => {
            return unsupported(format!(
                "filtering on sub-attribute {sub:?} is not supported"
            ))
        }
    };
    Ok(field)
}

fn comparison(op: CompareOp) -> Comparison {
    match op {
        CompareOp::Eq => Comparison::Equal,
        CompareOp::Ne => Comparison::NotEqual,
        CompareOp::Co => Comparison::Contains,
        CompareOp::Sw => Comparison::StartsWith,
        CompareOp::Ew => Comparison::EndsWith,
        CompareOp::Gt => Comparison::Greater,
        CompareOp::Ge => Comparison::GreaterOrEqual,
        CompareOp::Lt => Comparison::Less,
        CompareOp::Le => Comparison::LessOrEqual,
    }
}

/// `field op value`, with the value read as the kind the field holds.
fn compare(field: Field, op: CompareOp, value: &CompValue) -> LowerResult<Predicate> {
    if *value == CompValue::Null {
        return match op {
            CompareOp::Eq => Ok(Predicate::IsNull(field)),
            CompareOp::Ne => Ok(Predicate::IsNotNull(field)),
            _ => unsupported(format!(
                "{} null is not a meaningful comparison",
                op.as_str()
            )),
        };
    }
    let value = match field.value_kind() {
        ValueKind::Bool => {
            let flag = match value {
                CompValue::Bool(b) => *b,
                // Entra and OneLogin write booleans as strings; accept them in filters too.
                CompValue::Str(s) if s.eq_ignore_ascii_case("true") => true,
                CompValue::Str(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return unsupported("a boolean attribute compares only with true or false"),
            };
            if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return unsupported(format!(
                    "{} does not apply to a boolean attribute",
                    op.as_str()
                ));
            }
            Value::Bool(flag)
        }
        ValueKind::Timestamp => {
            let CompValue::Str(text) = value else {
                return unsupported("a date-time attribute compares only with a quoted date-time");
            };
            let at = chrono::DateTime::parse_from_rfc3339(text.trim())
                .map_err(|_| Unsupported(format!("{text:?} is not an RFC 3339 date-time")))?;
            if matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) {
                return unsupported(format!(
                    "{} does not apply to a date-time attribute",
                    op.as_str()
                ));
            }
            Value::Timestamp(at.with_timezone(&chrono::Utc))
        }
        ValueKind::Text => Value::Text(match value {
            CompValue::Str(s) => s.clone(),
            // An unquoted number compared with a string attribute (externalId eq 12345).
            CompValue::Num(n) => n.to_string(),
            CompValue::Bool(b) => b.to_string(),
            CompValue::Null => String::new(),
        }),
    };
    Ok(Predicate::Compare {
        field,
        op: comparison(op),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse_filter;

    fn lowered(resource: Resource, filter: &str) -> LowerResult<Predicate> {
        lower_filter(&parse_filter(filter).expect("filter parses"), resource)
    }

    fn refusal(resource: Resource, filter: &str) -> String {
        match lowered(resource, filter) {
            Err(Unsupported(message)) => message,
            Ok(predicate) => panic!("{filter} lowered to {predicate:?}"),
        }
    }

    fn text(field: Field, op: Comparison, value: &str) -> Predicate {
        Predicate::Compare {
            field,
            op,
            value: Value::Text(value.to_owned()),
        }
    }

    #[test]
    fn user_name_lowers_to_the_store_field_with_the_value_as_sent() {
        // Folding is the store's business: it knows how its column was folded.
        assert_eq!(
            lowered(Resource::User, "USERNAME eq \"Alice@Example.com\""),
            Ok(text(
                Field::UserName,
                Comparison::Equal,
                "Alice@Example.com"
            ))
        );
        assert_eq!(
            lowered(Resource::User, "externalId eq 12345"),
            Ok(text(Field::ExternalId, Comparison::Equal, "12345"))
        );
    }

    #[test]
    fn json_kept_attributes_come_from_the_shared_table() {
        assert_eq!(
            lowered(Resource::User, "name.HONORIFICPREFIX pr"),
            Ok(Predicate::Present(Field::Attribute {
                keys: vec!["name", "honorificPrefix"],
                case: Case::Insensitive,
            }))
        );
        assert_eq!(
            lowered(
                Resource::User,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"m\""
            ),
            Ok(text(
                Field::Attribute {
                    keys: vec![ENTERPRISE_USER_SCHEMA, "manager", "value"],
                    case: Case::Exact,
                },
                Comparison::Equal,
                "m"
            ))
        );
        for attr in USER_JSON_SIMPLE {
            assert!(
                lowered(Resource::User, &format!("{attr} pr")).is_ok(),
                "{attr}"
            );
        }
        for attr in USER_JSON_MULTI {
            assert!(
                lowered(Resource::User, &format!("{attr}.value pr")).is_ok(),
                "{attr}"
            );
        }
    }

    #[test]
    fn ne_on_a_multi_valued_attribute_means_no_element_equals() {
        assert_eq!(
            lowered(Resource::Group, "members ne \"u1\""),
            Ok(Predicate::NoneOf(
                Collection::MembersOfTeam,
                Box::new(text(
                    Field::Element(Element::RelatedId),
                    Comparison::Equal,
                    "u1"
                ))
            ))
        );
        assert_eq!(
            lowered(Resource::User, "groups.type eq \"direct\""),
            Ok(Predicate::Any(
                Collection::TeamsOfUser,
                Box::new(text(Field::Literal("direct"), Comparison::Equal, "direct"))
            ))
        );
    }

    #[test]
    fn value_filters_lower_to_a_test_of_each_element() {
        assert_eq!(
            lowered(
                Resource::User,
                "emails[type eq \"work\" and primary eq \"True\"]"
            ),
            Ok(Predicate::Any(
                Collection::Emails,
                Box::new(Predicate::And(
                    Box::new(text(
                        Field::Element(Element::Text("type")),
                        Comparison::Equal,
                        "work"
                    )),
                    Box::new(Predicate::Compare {
                        field: Field::Element(Element::Bool("primary")),
                        op: Comparison::Equal,
                        value: Value::Bool(true),
                    }),
                ))
            ))
        );
    }

    #[test]
    fn unsupported_filters_keep_the_messages_clients_see() {
        let cases = [
            (
                Resource::User,
                "favoriteColor eq \"blue\"",
                "filtering on favoriteColor is not supported",
            ),
            (
                Resource::Group,
                "userName eq \"x\"",
                "filtering on userName is not supported",
            ),
            (
                Resource::User,
                "emails.formatted pr",
                "filtering on sub-attribute \"formatted\" is not supported",
            ),
            (
                Resource::User,
                "emails[formatted eq \"x\" and foo eq \"y\"]",
                "filtering on sub-attribute \"foo\" is not supported",
            ),
            (
                Resource::User,
                "roles.bogus eq \"x\"",
                "filtering on sub-attribute \"bogus\" is not supported",
            ),
            (
                Resource::User,
                "emails[value.x eq \"y\"]",
                "value.x is not a sub-attribute name",
            ),
            (
                Resource::User,
                "userName[value eq \"x\"]",
                "userName is single-valued; a value filter needs a multi-valued attribute",
            ),
            (
                Resource::User,
                "active eq \"maybe\"",
                "a boolean attribute compares only with true or false",
            ),
            (
                Resource::User,
                "meta.created eq 5",
                "a date-time attribute compares only with a quoted date-time",
            ),
            (
                Resource::User,
                "meta.created eq \"yesterday\"",
                "\"yesterday\" is not an RFC 3339 date-time",
            ),
            (
                Resource::User,
                "meta.created co \"2020\"",
                "\"2020\" is not an RFC 3339 date-time",
            ),
            (
                Resource::User,
                "meta.created sw \"2020-01-01T00:00:00Z\"",
                "sw does not apply to a date-time attribute",
            ),
        ];
        for (resource, filter, message) in cases {
            assert_eq!(refusal(resource, filter), message, "{filter}");
        }
    }

    #[test]
    fn sorting_by_emails_uses_the_primary_email_and_other_lists_are_refused() {
        let path = |attr: &str| AttrPath {
            urn: None,
            attr: attr.to_owned(),
            sub_attr: None,
        };
        assert_eq!(
            lower_sort(&path("emails"), Resource::User, true),
            Ok(Sort {
                field: Field::Email,
                descending: true
            })
        );
        assert_eq!(
            lower_sort(&path("groups"), Resource::User, false),
            Err(Unsupported("sorting by groups is not supported".into()))
        );
        assert_eq!(
            lower_sort(&path("favoriteColor"), Resource::User, false),
            Err(Unsupported(
                "filtering on favoriteColor is not supported".into()
            ))
        );
    }
}
