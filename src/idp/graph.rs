//! Microsoft Entra ID through Microsoft Graph.
//!
//! - token: client credentials at `{login}/{tenant}/oauth2/v2.0/token`, scope
//!   `https://graph.microsoft.com/.default`;
//! - groups: `/groups?$select=id,displayName&$top=999`, paged by `@odata.nextLink`;
//! - members: `/groups/{id}/transitiveMembers/microsoft.graph.user` (the OData cast
//!   keeps devices, service principals and nested groups out; nested groups' users are
//!   in, since membership is transitive);
//! - a user's groups: `/users/{id}/transitiveMemberOf/microsoft.graph.group` (directory
//!   roles are not groups);
//! - changes, for scheduled runs: `/groups/delta?$select=id,displayName,members` (direct
//!   members as `members@delta`, removals marked `@removed`) and
//!   `/users/delta?$select=<user fields>` (users whose details changed), each paged by
//!   `@odata.nextLink` and ending with an `@odata.deltaLink` to resume from. The
//!   cursor is both links, started with `$deltatoken=latest` ("changes from now on")
//!   just before a full pull. An expired link answers 410 Gone or 400
//!   `syncStateNotFound`; either way it is [`IdpError::Gone`] and the caller resyncs.

use super::http::{ApiClient, Auth, ClientAuth, PageTrail, TokenRequest};
use super::{
    api_url, base_url, checked_next_link, client_secret, non_empty, required, retry_policy,
    Connector, DeltaChanges, IdpError, IdpGroup, IdpUser, PullStats,
};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_API_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
pub const DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Graph's largest page for directory objects.
const PAGE_SIZE: &str = "999";
const USER_FIELDS: &str = "id,userPrincipalName,mail,displayName,givenName,surname,accountEnabled";
const GROUP_DELTA_FIELDS: &str = "id,displayName,members";

pub struct Graph {
    name: String,
    client: ApiClient,
    base: String,
}

/// `value` is required: Graph always sends it, and a 200 without it (a proxy's `{}`)
/// read as an empty page would empty a group and remove its memberships.
#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// One page of a delta round: either more pages follow or the round is over.
#[derive(Deserialize)]
struct DeltaPage<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// A group in a delta: only what changed is guaranteed to be there, and one group may
/// come several times in a round, each time with some of its member changes.
#[derive(Deserialize)]
struct DeltaGroup {
    id: String,
    #[serde(rename = "displayName")]
    display_name: Option<String>,
    #[serde(rename = "members@delta", default)]
    members: Vec<DeltaObject>,
    #[serde(rename = "@removed")]
    removed: Option<serde_json::Value>,
}

/// A directory object in a delta (a member, or a user): its id, type and whether it
/// was removed.
#[derive(Deserialize)]
struct DeltaObject {
    id: String,
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
    #[serde(rename = "@removed")]
    removed: Option<serde_json::Value>,
}

/// What the store keeps as the delta cursor: where each of the two rounds resumes.
#[derive(Serialize, Deserialize)]
struct Cursor {
    groups: String,
    users: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphGroup {
    id: String,
    display_name: Option<String>,
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: String,
    user_principal_name: Option<String>,
    mail: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
    account_enabled: Option<bool>,
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
}

impl GraphUser {
    fn into_user(self) -> Option<IdpUser> {
        let user_name = non_empty(self.user_principal_name.as_deref())
            .or_else(|| non_empty(self.mail.as_deref()))?;
        Some(IdpUser {
            email: non_empty(self.mail.as_deref()).or_else(|| Some(user_name.clone())),
            id: self.id,
            user_name,
            display_name: non_empty(self.display_name.as_deref()),
            given_name: non_empty(self.given_name.as_deref()),
            family_name: non_empty(self.surname.as_deref()),
            // Graph omits accountEnabled when not selected; absent means enabled.
            active: self.account_enabled.unwrap_or(true),
        })
    }
}

/// Keeps an item when its `@odata.type` is absent or the expected one, so a proxy or
/// API version that ignores the cast still yields only users (or only groups).
fn is_type(odata_type: &Option<String>, expected: &str) -> bool {
    match odata_type.as_deref() {
        Some(t) => t == expected,
        None => true,
    }
}

impl Graph {
    pub fn new(config: &IdpConfig) -> Result<Self, IdpError> {
        let client_id = required(config, &config.client_id, "client_id")?.to_owned();
        let token_url = match &config.token_url {
            Some(url) => {
                let tenant = config.tenant_id.as_deref().unwrap_or_default();
                url.replace("{tenant}", tenant)
            }
            None => {
                let tenant = required(config, &config.tenant_id, "tenant_id")?;
                let login = base_url(&config.login_url, || DEFAULT_LOGIN_URL.to_owned());
                format!("{login}/{tenant}/oauth2/v2.0/token")
            }
        };
        let scope = config
            .scopes
            .as_ref()
            .map(|s| s.join(" "))
            .unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
        let auth = Auth::OAuth(TokenRequest {
            token_url,
            form: vec![("scope", scope)],
            client: ClientAuth::SecretPost {
                client_id,
                secret: client_secret(config)?,
            },
        });
        Ok(Self {
            name: config.name.clone(),
            client: ApiClient::new(&config.name, auth, retry_policy(config))?,
            base: base_url(&config.api_base_url, || DEFAULT_API_BASE_URL.to_owned()),
        })
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<String, IdpError> {
        api_url(&self.name, &self.base, segments, query)
    }

    /// Follows `@odata.nextLink` to the last page.
    async fn all_pages<T: DeserializeOwned>(&self, first: String) -> Result<Vec<T>, IdpError> {
        let mut out = Vec::new();
        let mut url = first;
        let mut trail = PageTrail::new();
        loop {
            trail.visit(&url)?;
            let page: Page<T> = self.client.get_json(&url).await?.body;
            out.extend(page.value);
            let Some(next) = page.next_link else {
                return Ok(out);
            };
            url = checked_next_link(&self.base, &next)?;
        }
    }

    /// Follows one delta round from `first` to its deltaLink, handing each item to
    /// `each`. When `first` is a stored link, every URL of the round came from Graph
    /// itself, so a 400 can only mean the state token is no longer usable (Graph's
    /// `syncStateNotFound` for a link older than its lifetime): a resync, like 410.
    async fn delta_round<T: DeserializeOwned>(
        &self,
        first: &str,
        stored: bool,
        mut each: impl FnMut(T),
    ) -> Result<String, IdpError> {
        let mut url = checked_next_link(&self.base, first)?;
        let mut trail = PageTrail::new();
        loop {
            trail.visit(&url)?;
            let page: DeltaPage<T> = match self.client.get_json(&url).await {
                Ok(reply) => reply.body,
                Err(IdpError::Http {
                    url, status: 400, ..
                }) if stored => return Err(IdpError::Gone { url }),
                Err(e) => return Err(e),
            };
            page.value.into_iter().for_each(&mut each);
            match (page.next_link, page.delta_link) {
                (Some(next), _) => url = checked_next_link(&self.base, &next)?,
                (None, Some(delta)) => return checked_next_link(&self.base, &delta),
                (None, None) => {
                    return Err(IdpError::Decode {
                        url,
                        message: "a delta page with neither @odata.nextLink nor @odata.deltaLink"
                            .into(),
                    })
                }
            }
        }
    }

    /// The deltaLink of "no changes yet" for a collection.
    async fn latest_link(&self, collection: &str, select: &str) -> Result<String, IdpError> {
        let url = self.url(
            &[collection, "delta"],
            &[("$select", select), ("$deltatoken", "latest")],
        )?;
        self.delta_round::<serde_json::Value>(&url, false, |_| {})
            .await
    }

    async fn start_delta(&self) -> Result<Option<String>, IdpError> {
        let cursor = Cursor {
            groups: self.latest_link("groups", GROUP_DELTA_FIELDS).await?,
            users: self.latest_link("users", USER_FIELDS).await?,
        };
        serde_json::to_string(&cursor)
            .map(Some)
            .map_err(|e| IdpError::Decode {
                url: self.base.clone(),
                message: format!("cannot encode the delta cursor: {e}"),
            })
    }

    async fn changes(&self, cursor: &str) -> Result<DeltaChanges, IdpError> {
        // Not written by this version, or damaged: only a full pull can start over.
        let Ok(cursor) = serde_json::from_str::<Cursor>(cursor) else {
            return Err(IdpError::Gone {
                url: self.base.clone(),
            });
        };
        let mut changes = DeltaChanges::default();
        let groups = self
            .delta_round(&cursor.groups, true, |g: DeltaGroup| {
                let change = changes.groups.entry(g.id).or_default();
                // Later entries of a round are newer: a restored group is no longer deleted.
                change.deleted = g.removed.is_some();
                if change.deleted {
                    return;
                }
                if g.display_name.is_some() {
                    change.name = g.display_name;
                }
                for m in g.members {
                    if m.odata_type.as_deref() == Some("#microsoft.graph.group") {
                        change.nested = true;
                    } else if m.removed.is_some() {
                        change.added.remove(&m.id);
                        change.removed.insert(m.id);
                    } else if is_type(&m.odata_type, "#microsoft.graph.user") {
                        change.removed.remove(&m.id);
                        change.added.insert(m.id);
                    }
                }
            })
            .await?;
        let users = self
            .delta_round(&cursor.users, true, |u: DeltaObject| {
                if u.removed.is_some() {
                    changes.users_changed.remove(&u.id);
                    changes.users_removed.insert(u.id);
                } else {
                    changes.users_removed.remove(&u.id);
                    changes.users_changed.insert(u.id);
                }
            })
            .await?;
        changes.cursor =
            serde_json::to_string(&Cursor { groups, users }).map_err(|e| IdpError::Decode {
                url: self.base.clone(),
                message: format!("cannot encode the delta cursor: {e}"),
            })?;
        Ok(changes)
    }

    async fn get_user(&self, key: &str) -> Result<Option<GraphUser>, IdpError> {
        let url = self.url(&["users", key], &[("$select", USER_FIELDS)])?;
        match self.client.get_json::<GraphUser>(&url).await {
            Ok(reply) => Ok(Some(reply.body)),
            Err(IdpError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find(&self, user: &str) -> Result<IdpUser, IdpError> {
        let found = match self.get_user(user).await? {
            Some(u) => Some(u),
            // A sign-in may name the user by email where it differs from the UPN.
            None if user.contains('@') => {
                let filter = format!("mail eq '{}'", user.replace('\'', "''"));
                let url = self.url(
                    &["users"],
                    &[("$filter", &filter), ("$select", USER_FIELDS)],
                )?;
                self.client
                    .get_json::<Page<GraphUser>>(&url)
                    .await?
                    .body
                    .value
                    .into_iter()
                    .next()
            }
            None => None,
        };
        found
            .and_then(GraphUser::into_user)
            .ok_or_else(|| IdpError::UserNotFound(user.to_owned()))
    }
}

fn groups_from(items: Vec<GraphGroup>) -> Vec<IdpGroup> {
    items
        .into_iter()
        .filter(|g| is_type(&g.odata_type, "#microsoft.graph.group"))
        .map(|g| {
            let name = g.display_name.unwrap_or_else(|| g.id.clone());
            IdpGroup::new(g.id, name)
        })
        .collect()
}

impl Connector for Graph {
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async move {
            let url = self.url(
                &["groups"],
                &[("$select", "id,displayName"), ("$top", PAGE_SIZE)],
            )?;
            Ok(groups_from(self.all_pages(url).await?))
        })
    }

    fn group_members<'a>(
        &'a self,
        group: &'a IdpGroup,
        _all: &'a [IdpGroup],
    ) -> BoxFuture<'a, Result<Vec<IdpUser>, IdpError>> {
        Box::pin(async move {
            let url = self.url(
                &[
                    "groups",
                    &group.id,
                    "transitiveMembers",
                    "microsoft.graph.user",
                ],
                &[("$select", USER_FIELDS), ("$top", PAGE_SIZE)],
            )?;
            let users: Vec<GraphUser> = self.all_pages(url).await?;
            Ok(users
                .into_iter()
                .filter(|u| is_type(&u.odata_type, "#microsoft.graph.user"))
                .filter_map(GraphUser::into_user)
                .collect())
        })
    }

    fn find_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<IdpUser, IdpError>> {
        Box::pin(self.find(user))
    }

    fn user_groups<'a>(
        &'a self,
        user: &'a IdpUser,
    ) -> BoxFuture<'a, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async move {
            let url = self.url(
                &[
                    "users",
                    &user.id,
                    "transitiveMemberOf",
                    "microsoft.graph.group",
                ],
                &[("$select", "id,displayName"), ("$top", PAGE_SIZE)],
            )?;
            Ok(groups_from(self.all_pages(url).await?))
        })
    }

    fn delta_cursor(&self) -> BoxFuture<'_, Result<Option<String>, IdpError>> {
        Box::pin(self.start_delta())
    }

    fn delta<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<DeltaChanges, IdpError>> {
        Box::pin(self.changes(cursor))
    }

    fn has_nested_groups<'a>(
        &'a self,
        group: &'a IdpGroup,
    ) -> BoxFuture<'a, Result<bool, IdpError>> {
        Box::pin(async move {
            let url = self.url(
                &["groups", &group.id, "members", "microsoft.graph.group"],
                &[("$select", "id"), ("$top", "1")],
            )?;
            let page: Page<serde_json::Value> = self.client.get_json(&url).await?.body;
            Ok(!page.value.is_empty())
        })
    }

    fn stats(&self) -> Arc<PullStats> {
        self.client.stats()
    }

    fn client(&self) -> &ApiClient {
        &self.client
    }
}
