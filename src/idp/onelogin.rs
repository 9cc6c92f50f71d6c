//! OneLogin API v2: client credentials with HTTP Basic on `/auth/oauth2/v2/token` (the
//! grant as a JSON body, as OneLogin documents it);
//! roles are the many-to-many groups (`/api/2/roles`, `/api/2/roles/{id}/users`);
//! cursor paging (`After-Cursor` header → `cursor=`); the client honours
//! `X-RateLimit-Remaining` / `X-RateLimit-Reset`.
//!
//! A role's user listing carries only id, name and username: no email, no first and
//! last name, no `status` or `state`. The members' records are therefore read from
//! `/api/2/users?user_ids=…&fields=…`, `ID_BATCH` ids a request, so that a pull costs
//! about one extra request per hundred members rather than one per member.
//!
//! Whether a user is active (`is_active`) follows OneLogin's user resource
//! (developers.onelogin.com/api-docs/1/users/user-resource and …/set-state):
//!
//! - `status` 1 (active) is active;
//! - `status` 4, 5 and 8 (password expired, awaiting password reset, security
//!   questions required) are active: a step the person completes at their next login;
//! - `status` 0, 2, 3 and 7 (unactivated, suspended, locked, password pending: never
//!   set one) are inactive, and so is a missing or unknown status;
//! - `state` 0, 2 and 3 (unapproved, rejected, unlicensed) are inactive whatever the
//!   status; `state` 1 (approved) or none leaves it to the status.
//!
//! Deactivation blocks the user's API keys and reactivation unblocks them, so a lock
//! that OneLogin lifts by itself costs the user nothing once the next pull sees it.

use super::http::{ApiClient, Auth, ClientAuth, PageTrail, TokenRequest};
use super::{
    api_url, base_url, client_secret, non_empty, required, retry_policy, Connector, IdpError,
    IdpGroup, IdpUser, PullStats,
};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

const PAGE_SIZE: &str = "1000";
/// Member ids per `/api/2/users?user_ids=` request: a hundred ids keep the URL near
/// 1 KB, far from what servers and proxies refuse.
const ID_BATCH: usize = 100;
/// The user fields a pull needs; asking for them alone keeps the answers small.
const USER_FIELDS: &str = "id,email,username,firstname,lastname,status,state";

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

/// A user as `/api/2/users` describes them.
#[derive(Deserialize)]
struct OlUser {
    id: Value,
    username: Option<String>,
    email: Option<String>,
    firstname: Option<String>,
    lastname: Option<String>,
    status: Option<i64>,
    state: Option<i64>,
}

/// An entry of `/api/2/roles/{id}/users`.
#[derive(Deserialize)]
struct RoleUser {
    id: Value,
    /// Only users currently assigned count; `include_unassigned` (which we never send)
    /// would list others with `false`.
    #[serde(default = "assigned_by_default")]
    assigned: bool,
}

fn assigned_by_default() -> bool {
    true
}

/// The mapping documented at the top of this file.
fn is_active(status: Option<i64>, state: Option<i64>) -> bool {
    let approved = matches!(state, None | Some(1));
    approved && matches!(status, Some(1 | 4 | 5 | 8))
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
        let given_name = non_empty(self.firstname.as_deref());
        let family_name = non_empty(self.lastname.as_deref());
        // The v2 user has no full-name field; the role listing's `name` is this join.
        let display_name = match (&given_name, &family_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (one, other) => one.clone().or_else(|| other.clone()),
        };
        Some(IdpUser {
            id: id_text(&self.id),
            email: non_empty(self.email.as_deref()),
            display_name,
            given_name,
            family_name,
            active: is_active(self.status, self.state),
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
    async fn all_pages<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        filter: &[(&str, &str)],
    ) -> Result<Vec<T>, IdpError> {
        let mut path = vec!["api", "2"];
        path.extend_from_slice(segments);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut trail = PageTrail::new();
        loop {
            let mut query = filter.to_vec();
            query.push(("limit", PAGE_SIZE));
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let url = api_url(&self.name, &self.base, &path, &query)?;
            trail.visit(&url)?;
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
        let roles: Vec<OlRole> = self.all_pages(&["roles"], &[]).await?;
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
            let listed: Vec<RoleUser> = self.all_pages(&["roles", &group.id, "users"], &[]).await?;
            let mut ids: Vec<String> = listed
                .iter()
                .filter(|u| u.assigned)
                .map(|u| id_text(&u.id))
                .collect();
            ids.sort();
            ids.dedup();
            let mut out = Vec::with_capacity(ids.len());
            for batch in ids.chunks(ID_BATCH) {
                let wanted = batch.join(",");
                let records: Vec<OlUser> = self
                    .all_pages(
                        &["users"],
                        &[("user_ids", wanted.as_str()), ("fields", USER_FIELDS)],
                    )
                    .await?;
                let mut found: HashMap<String, OlUser> =
                    records.into_iter().map(|u| (id_text(&u.id), u)).collect();
                for id in batch {
                    // A member without a record (deleted between the two reads) cannot
                    // be judged active or not; failing the group keeps the pull partial,
                    // so nothing is removed on a guess, and the next pull sees clearly.
                    let record = found.remove(id).ok_or_else(|| IdpError::Decode {
                        url: format!("{}/api/2/users", self.base),
                        message: format!(
                            "role {:?} lists user {id}, but the users API does not return them",
                            group.name
                        ),
                    })?;
                    out.extend(record.into_user());
                }
            }
            Ok(out)
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
