//! OneLogin API v2: client credentials with HTTP Basic on `/auth/oauth2/v2/token` (the
//! grant as a JSON body, as OneLogin documents it);
//! roles are the many-to-many groups (`/api/2/roles`, `/api/2/roles/{id}/users`);
//! cursor paging (`After-Cursor` header → `cursor=`); the client honours
//! `X-RateLimit-Remaining` / `X-RateLimit-Reset`.

use super::http::{ApiClient, Auth, ClientAuth, TokenRequest};
use super::{
    api_url, base_url, client_secret, non_empty, required, retry_policy, Connector, IdpError,
    IdpGroup, IdpUser, PullStats,
};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

const PAGE_SIZE: &str = "1000";
/// `status` of a suspended user.
const SUSPENDED: i64 = 2;

pub struct OneLogin {
    name: String,
    client: ApiClient,
    base: String,
}

#[derive(Deserialize)]
struct OlRole {
    id: Value,
    name: String,
}

#[derive(Deserialize)]
struct OlUser {
    id: Value,
    username: Option<String>,
    email: Option<String>,
    firstname: Option<String>,
    lastname: Option<String>,
    name: Option<String>,
    /// 0 unactivated, 1 active, 2 suspended, 3 locked, 4 password expired, 5 awaiting
    /// password reset, 7 password pending, 8 security questions required.
    status: Option<i64>,
}

/// OneLogin ids are numbers; we keep them as text.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl OlUser {
    fn into_user(self) -> Option<IdpUser> {
        let user_name =
            non_empty(self.email.as_deref()).or_else(|| non_empty(self.username.as_deref()))?;
        let display_name = non_empty(self.name.as_deref()).or_else(|| {
            match (self.firstname.as_deref(), self.lastname.as_deref()) {
                (Some(f), Some(l)) => Some(format!("{f} {l}")),
                _ => None,
            }
        });
        Some(IdpUser {
            id: id_text(&self.id),
            email: non_empty(self.email.as_deref()),
            display_name,
            given_name: non_empty(self.firstname.as_deref()),
            family_name: non_empty(self.lastname.as_deref()),
            // Only a suspension ends access; a lockout, an expired password or a
            // pending activation is the user's to resolve, and deactivating would block
            // their API keys. Role member listings carry no status: absent is active.
            active: self.status != Some(SUSPENDED),
            user_name,
        })
    }
}

impl OneLogin {
    pub fn new(config: &IdpConfig) -> Result<Self, IdpError> {
        let base = base_url(&config.api_base_url, || {
            format!("https://{}", config.domain.as_deref().unwrap_or_default())
        });
        let auth = Auth::OAuth(TokenRequest {
            token_url: config
                .token_url
                .clone()
                .unwrap_or_else(|| format!("{base}/auth/oauth2/v2/token")),
            form: Vec::new(),
            client: ClientAuth::SecretBasicJson {
                client_id: required(config, &config.client_id, "client_id")?.to_owned(),
                secret: client_secret(config)?,
            },
        });
        Ok(Self {
            name: config.name.clone(),
            client: ApiClient::new(&config.name, auth, retry_policy(config))?,
            base,
        })
    }

    /// Follows `After-Cursor` until it is absent or empty.
    async fn all_pages<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<Vec<T>, IdpError> {
        let mut path = vec!["api", "2"];
        path.extend_from_slice(segments);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", PAGE_SIZE)];
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let url = api_url(&self.name, &self.base, &path, &query)?;
            let reply = self.client.get_json::<Vec<T>>(&url).await?;
            out.extend(reply.body);
            cursor = reply
                .headers
                .get("after-cursor")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|c| !c.is_empty() && *c != "null")
                .map(str::to_owned);
            if cursor.is_none() {
                return Ok(out);
            }
        }
    }

    async fn roles(&self) -> Result<Vec<IdpGroup>, IdpError> {
        let roles: Vec<OlRole> = self.all_pages(&["roles"]).await?;
        Ok(roles
            .into_iter()
            .map(|r| IdpGroup::new(id_text(&r.id), r.name))
            .collect())
    }
}

impl Connector for OneLogin {
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(self.roles())
    }

    fn group_members<'a>(
        &'a self,
        group: &'a IdpGroup,
        _all: &'a [IdpGroup],
    ) -> BoxFuture<'a, Result<Vec<IdpUser>, IdpError>> {
        Box::pin(async move {
            let users: Vec<OlUser> = self.all_pages(&["roles", &group.id, "users"]).await?;
            Ok(users.into_iter().filter_map(OlUser::into_user).collect())
        })
    }

    fn find_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<IdpUser, IdpError>> {
        Box::pin(async move {
            let key = if user.chars().all(|c| c.is_ascii_digit()) {
                "id"
            } else if user.contains('@') {
                "email"
            } else {
                "username"
            };
            let url = api_url(
                &self.name,
                &self.base,
                &["api", "2", "users"],
                &[(key, user)],
            )?;
            let users: Vec<OlUser> = self.client.get_json(&url).await?.body;
            users
                .into_iter()
                .next()
                .and_then(OlUser::into_user)
                .ok_or_else(|| IdpError::UserNotFound(user.to_owned()))
        })
    }

    fn user_groups<'a>(
        &'a self,
        user: &'a IdpUser,
    ) -> BoxFuture<'a, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async move {
            // The user's roles come back as bare ids; names come from the role list.
            let url = api_url(
                &self.name,
                &self.base,
                &["api", "2", "users", &user.id, "roles"],
                &[],
            )?;
            let ids: Vec<Value> = self.client.get_json(&url).await?.body;
            let ids: Vec<String> = ids.iter().map(id_text).collect();
            Ok(self
                .roles()
                .await?
                .into_iter()
                .filter(|r| ids.contains(&r.id))
                .collect())
        })
    }

    fn stats(&self) -> Arc<PullStats> {
        self.client.stats()
    }

    fn client(&self) -> &ApiClient {
        &self.client
    }
}
