//! The identity store's vocabulary. Pure types: no axum, no sqlx.
//!
//! Types here parse rather than validate: a value of `UserName` or `Role` is known
//! to be well formed, so code that receives one never checks again.

mod names;
mod source;

pub use names::{
    first_format_character, fold_identifier, NameError, Role, TeamName, UserName, FOLD_VERSION,
};
pub use source::{check_idp_name, Source, SourceParseError, Trigger, DEFAULT_SCIM_IDP};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A gateway user, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub user_name: UserName,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub role: Role,
    pub active: bool,
    /// SCIM attributes not modelled as columns (emails, enterprise extension,
    /// entitlements, roles, ...), kept so that they are returned faithfully.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub source: Source,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    /// Bumped on every change; the SCIM ETag is derived from it.
    pub version: i64,
}

/// A gateway team: what an IdP calls a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Team {
    pub id: Uuid,
    pub display_name: TeamName,
    pub external_id: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub source: Source,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Membership {
    pub team_id: Uuid,
    pub user_id: Uuid,
    pub source: Source,
}

/// Why keys left the api_keys table: recorded with the audit copy in deleted_api_keys,
/// and named in a plan's key purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeReason {
    /// An operator revoked the key.
    Revoked,
    UserDeleted,
    RemovedFromTeam,
    TeamDeleted,
}

impl PurgeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeReason::Revoked => "revoked",
            PurgeReason::UserDeleted => "user_deleted",
            PurgeReason::RemovedFromTeam => "removed_from_team",
            PurgeReason::TeamDeleted => "team_deleted",
        }
    }
}

/// Why a key is blocked; reactivation unblocks only what provisioning blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockedBy {
    /// Blocked because the user was deactivated by provisioning (SCIM, sync, sso).
    Provisioning,
    /// Blocked by an operator; provisioning never unblocks it.
    Operator,
}

impl BlockedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedBy::Provisioning => "provisioning",
            BlockedBy::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provisioning" | "scim" => Some(BlockedBy::Provisioning),
            "operator" => Some(BlockedBy::Operator),
            _ => None,
        }
    }
}

/// An API key the gateway accepts. The secret itself is never kept, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub team_id: Option<Uuid>,
    pub name: Option<String>,
    /// The first characters of the key, shown so operators can tell keys apart.
    pub prefix: String,
    pub created: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    pub blocked_by: Option<BlockedBy>,
}

/// Scopes a bearer token may carry. Each HTTP surface accepts exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// The SCIM 2.0 endpoints under /scim/v2.
    Scim,
    /// The sign-in hook, POST /v1/sso/sign-in.
    Sso,
    /// Operator endpoints.
    Admin,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Scim => "scim",
            TokenScope::Sso => "sso",
            TokenScope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scim" => Some(TokenScope::Scim),
            "sso" => Some(TokenScope::Sso),
            "admin" => Some(TokenScope::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bearer token as listed to operators; the secret is never part of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub scope: TokenScope,
    /// The IdP whose objects the token's SCIM writes own.
    pub idp: String,
    pub created: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
    pub revoked: Option<DateTime<Utc>>,
}
