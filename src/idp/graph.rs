//! Microsoft Entra ID through Microsoft Graph.
//!
//! - token: client credentials at `{login}/{tenant}/oauth2/v2.0/token`, scope
//!   `https://graph.microsoft.com/.default`;
//! - groups: `/groups?$select=id,displayName&$top=999`, paged by `@odata.nextLink`;
//! - members: `/groups/{id}/transitiveMembers/microsoft.graph.user` (the OData cast
//!   keeps devices, service principals and nested groups out; nested groups' users are
//!   in, since membership is transitive);
//! - a user's groups: `/users/{id}/transitiveMemberOf/microsoft.graph.group` (directory
//!   roles are not groups).

use super::http::{ApiClient, Auth, ClientAuth, TokenRequest};
use super::{
    api_url, base_url, checked_next_link, client_secret, non_empty, required, retry_policy,
    Connector, IdpError, IdpGroup, IdpUser, PullStats,
};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;

pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_API_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
pub const DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Graph's largest page for directory objects.
const PAGE_SIZE: &str = "999";
const USER_FIELDS: &str = "id,userPrincipalName,mail,displayName,givenName,surname,accountEnabled";

pub struct Graph {
    name: String,
    client: ApiClient,
    base: String,
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
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
        loop {
            let page: Page<T> = self.client.get_json(&url).await?.body;
            out.extend(page.value);
            match page.next_link {
                Some(next) => url = checked_next_link(&self.base, &next)?,
                None => return Ok(out),
            }
        }
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

    fn stats(&self) -> Arc<PullStats> {
        self.client.stats()
    }

    fn client(&self) -> &ApiClient {
        &self.client
    }
}
