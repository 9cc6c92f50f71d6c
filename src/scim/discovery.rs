//! /ServiceProviderConfig, /ResourceTypes and /Schemas (RFC 7644 §4): what this
//! server supports, exactly. Discovery needs no token (RFC 7644 §4 lets a service
//! provider serve it unauthenticated); it reveals nothing about the data.

use super::list::MAX_COUNT;
use super::resources::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, LIST_RESPONSE_SCHEMA, USER_SCHEMA};
use serde_json::{json, Value};

pub const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Most operations accepted in one /Bulk request.
pub const BULK_MAX_OPERATIONS: usize = 1000;

pub fn service_provider_config(base: &str, max_payload: usize) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/scimsync/scimsync",
        "patch": {"supported": true},
        "bulk": {"supported": true, "maxOperations": BULK_MAX_OPERATIONS, "maxPayloadSize": max_payload},
        "filter": {"supported": true, "maxResults": MAX_COUNT},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "A bearer token of scope scim, created with `scimsync token create --scope scim`.",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

pub fn resource_types(base: &str) -> Vec<Value> {
    vec![user_resource_type(base), group_resource_type(base)]
}

pub fn resource_type(base: &str, id: &str) -> Option<Value> {
    resource_types(base)
        .into_iter()
        .find(|r| r["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
}

fn user_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "A gateway user",
        "schema": USER_SCHEMA,
        "schemaExtensions": [{"schema": ENTERPRISE_USER_SCHEMA, "required": false}],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
    })
}

fn group_resource_type(base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "A gateway team",
        "schema": GROUP_SCHEMA,
        "schemaExtensions": [],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
    })
}

pub fn schemas(base: &str) -> Vec<Value> {
    vec![
        user_schema(base),
        enterprise_schema(base),
        group_schema(base),
    ]
}

pub fn schema(base: &str, id: &str) -> Option<Value> {
    schemas(base)
        .into_iter()
        .find(|s| s["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
}

pub fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// One attribute definition (RFC 7643 §7), with the RFC's defaults spelled out.
#[derive(Clone)]
struct Attr {
    value: Value,
}

impl Attr {
    fn new(name: &str, kind: &str, description: &str) -> Self {
        Self {
            value: json!({
                "name": name,
                "type": kind,
                "multiValued": false,
                "description": description,
                "required": false,
                "caseExact": false,
                "mutability": "readWrite",
                "returned": "default",
                "uniqueness": "none",
            }),
        }
    }
    fn string(name: &str, description: &str) -> Self {
        Self::new(name, "string", description)
    }
    fn set(mut self, key: &str, value: Value) -> Self {
        self.value[key] = value;
        self
    }
    fn multi(self) -> Self {
        self.set("multiValued", json!(true))
    }
    fn required(self) -> Self {
        self.set("required", json!(true))
    }
    fn case_exact(self) -> Self {
        self.set("caseExact", json!(true))
    }
    fn mutability(self, m: &str) -> Self {
        self.set("mutability", json!(m))
    }
    fn returned(self, r: &str) -> Self {
        self.set("returned", json!(r))
    }
    fn unique(self, u: &str) -> Self {
        self.set("uniqueness", json!(u))
    }
    fn canonical(self, values: &[&str]) -> Self {
        self.set("canonicalValues", json!(values))
    }
    fn references(self, types: &[&str]) -> Self {
        self.set("referenceTypes", json!(types))
    }
    fn sub(self, attrs: Vec<Attr>) -> Self {
        let subs: Vec<Value> = attrs.into_iter().map(|a| a.value).collect();
        self.set("subAttributes", Value::Array(subs))
    }
    fn complex(name: &str, description: &str, subs: Vec<Attr>) -> Self {
        Self::new(name, "complex", description).sub(subs)
    }
}

/// The sub-attributes shared by the RFC's multi-valued complex attributes.
fn multi_subs(types: &[&str], value_kind: &str) -> Vec<Attr> {
    vec![
        Attr::new("value", value_kind, "The value."),
        Attr::string(
            "display",
            "A human-readable name, primarily used for display purposes.",
        ),
        Attr::string("type", "A label indicating the attribute's function.").canonical(types),
        Attr::new("primary", "boolean", "Whether this is the primary value."),
    ]
}

fn schema_resource(
    base: &str,
    id: &str,
    name: &str,
    description: &str,
    attributes: Vec<Attr>,
) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attributes.into_iter().map(|a| a.value).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

fn user_schema(base: &str) -> Value {
    let attributes = vec![
        Attr::string(
            "userName",
            "Unique identifier for the User; case-insensitive.",
        )
        .required()
        .unique("server"),
        Attr::complex(
            "name",
            "The components of the user's real name.",
            vec![
                Attr::string("formatted", "The full name."),
                Attr::string("familyName", "The family name."),
                Attr::string("givenName", "The given name."),
                Attr::string("middleName", "The middle name(s)."),
                Attr::string("honorificPrefix", "The honorific prefix(es)."),
                Attr::string("honorificSuffix", "The honorific suffix(es)."),
            ],
        ),
        Attr::string("displayName", "The name of the User, suitable for display."),
        Attr::string("nickName", "The casual way to address the user."),
        Attr::new(
            "profileUrl",
            "reference",
            "A URI of the User's online profile.",
        )
        .references(&["external"]),
        Attr::string("title", "The user's title, such as \"Vice President\"."),
        Attr::string(
            "userType",
            "The relationship between the organization and the user.",
        ),
        Attr::string(
            "preferredLanguage",
            "The User's preferred written or spoken language.",
        ),
        Attr::string("locale", "The User's default location."),
        Attr::string(
            "timezone",
            "The User's time zone in the IANA Time Zone database format.",
        ),
        // Always assigned here (a user is active or not; a new user without it is active),
        // so it is declared required: it can be set to false but not removed.
        Attr::new(
            "active",
            "boolean",
            "The User's administrative status; false blocks their API keys.",
        )
        .required(),
        Attr::string(
            "password",
            "Accepted and discarded: scimsync never stores passwords.",
        )
        .mutability("writeOnly")
        .returned("never"),
        Attr::complex(
            "emails",
            "Email addresses for the user.",
            multi_subs(&["work", "home", "other"], "string"),
        )
        .multi(),
        Attr::complex(
            "phoneNumbers",
            "Phone numbers for the User.",
            multi_subs(
                &["work", "home", "mobile", "fax", "pager", "other"],
                "string",
            ),
        )
        .multi(),
        Attr::complex(
            "ims",
            "Instant messaging addresses for the User.",
            multi_subs(&[], "string"),
        )
        .multi(),
        Attr::complex(
            "photos",
            "URLs of photos of the User.",
            multi_subs(&["photo", "thumbnail"], "reference"),
        )
        .multi(),
        Attr::complex(
            "addresses",
            "A physical mailing address for this User.",
            vec![
                Attr::string("formatted", "The full mailing address."),
                Attr::string("streetAddress", "The full street address component."),
                Attr::string("locality", "The city or locality component."),
                Attr::string("region", "The state or region component."),
                Attr::string("postalCode", "The zip code or postal code component."),
                Attr::string("country", "The country name component."),
                Attr::string("type", "A label indicating the attribute's function.")
                    .canonical(&["work", "home", "other"]),
                Attr::new("primary", "boolean", "Whether this is the primary address."),
            ],
        )
        .multi(),
        Attr::complex(
            "groups",
            "The teams the user belongs to; change them through /Groups.",
            vec![
                Attr::string("value", "The identifier of the User's group.").mutability("readOnly"),
                Attr::new("$ref", "reference", "The URI of the Group.")
                    .references(&["Group"])
                    .mutability("readOnly"),
                Attr::string("display", "The group's display name.").mutability("readOnly"),
                Attr::string("type", "How the membership was derived.")
                    .canonical(&["direct", "indirect"])
                    .mutability("readOnly"),
            ],
        )
        .multi()
        .mutability("readOnly"),
        Attr::complex(
            "entitlements",
            "A list of entitlements for the User.",
            multi_subs(&[], "string"),
        )
        .multi(),
        Attr::complex(
            "roles",
            "A list of roles for the User.",
            multi_subs(&[], "string"),
        )
        .multi(),
        Attr::complex(
            "x509Certificates",
            "A list of certificates issued to the User.",
            multi_subs(&[], "binary"),
        )
        .multi(),
    ];
    schema_resource(base, USER_SCHEMA, "User", "User Account", attributes)
}

fn enterprise_schema(base: &str) -> Value {
    let attributes = vec![
        Attr::string(
            "employeeNumber",
            "Numeric or alphanumeric identifier assigned to a person.",
        ),
        Attr::string("costCenter", "Identifies the name of a cost center."),
        Attr::string("organization", "Identifies the name of an organization."),
        Attr::string("division", "Identifies the name of a division."),
        Attr::string("department", "Identifies the name of a department."),
        Attr::complex(
            "manager",
            "The User's manager.",
            vec![
                Attr::string(
                    "value",
                    "The id of the SCIM resource representing the User's manager.",
                ),
                Attr::new("$ref", "reference", "The URI of the manager.").references(&["User"]),
                Attr::string("displayName", "The displayName of the User's manager.")
                    .mutability("readOnly"),
            ],
        ),
    ];
    schema_resource(
        base,
        ENTERPRISE_USER_SCHEMA,
        "EnterpriseUser",
        "Enterprise User",
        attributes,
    )
}

fn group_schema(base: &str) -> Value {
    let attributes = vec![
        Attr::string("displayName", "A human-readable name for the Group.").required(),
        Attr::complex(
            "members",
            "The users in the team (nested groups are not supported).",
            vec![
                Attr::string("value", "Identifier of the member (a user id).")
                    .case_exact()
                    .mutability("immutable"),
                Attr::new("$ref", "reference", "The URI of the member.")
                    .references(&["User"])
                    .mutability("immutable"),
                Attr::string("type", "The type of member.")
                    .canonical(&["User"])
                    .mutability("immutable"),
            ],
        )
        .multi(),
    ];
    schema_resource(base, GROUP_SCHEMA, "Group", "Group", attributes)
}
