//! Auth0 Management API: client credentials with audience `https://{tenant}/api/v2/`;
//! roles are the groups; a role's users with checkpoint paging (`from` / `take`,
//! `next` in the answer); the client honours `X-RateLimit-Remaining` / `-Reset`.
//!
//! A role's user listing carries only `user_id`, `email`, `name` and `picture`: not
//! `blocked`, `given_name` or `family_name`. Each page of members is therefore looked
//! up with one user search (`/api/v2/users?q=user_id:("…" OR "…")&search_engine=v3`,
//! `SEARCH_BATCH` ids a query), which costs a request or two per hundred members
//! where a `GET /users/{id}` each would cost a hundred against the same rate limit.
//! Search is eventually consistent (auth0.com/docs/manage-users/user-search): a user
//! it does not know yet is read with `GET /api/v2/users/{id}`, which is immediate.
//!
//! `blocked: true` (set from the dashboard or the Management API) makes a user
//! inactive; Auth0 leaves `blocked` out for users never blocked, which are active.

use super::http::{ApiClient, Auth, ClientAuth, PageTrail, TokenRequest};
use super::{
    api_url, base_url, client_secret, non_empty, required, retry_policy, Connector, IdpError,
    IdpGroup, IdpUser, PullStats,
};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

const PAGE_SIZE: usize = 100;
/// User ids per search query: fifty keep the URL near 3 KB, below the length at which
/// Auth0 answers 414.
const SEARCH_BATCH: usize = 50;
/// The user fields a pull needs.
const USER_FIELDS: &str = "user_id,email,name,given_name,family_name,username,blocked";

pub struct Auth0 {
    name: String,
    client: ApiClient,
    base: String,
}

#[derive(Deserialize)]
struct Role {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct RolesPage {
    #[serde(default)]
    roles: Vec<Role>,
    total: Option<usize>,
}

#[derive(Deserialize)]
struct A0User {
    user_id: String,
    email: Option<String>,
    name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    username: Option<String>,
    blocked: Option<bool>,
}

/// A role's users: with `take`/`from` (checkpoint paging) an object with `next`; a
/// tenant or proxy that ignores them answers a bare array, which is then all there is.
#[derive(Deserialize)]
#[serde(untagged)]
enum UsersPage {
    Checkpoint {
        #[serde(default)]
        users: Vec<A0User>,
        next: Option<String>,
    },
    Plain(Vec<A0User>),
}

/// `value` as a quoted Lucene phrase: user ids hold `|` and other characters the query
/// syntax would otherwise read as operators.
fn lucene_phrase(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

impl A0User {
    fn into_user(self) -> Option<IdpUser> {
        let user_name =
            non_empty(self.email.as_deref()).or_else(|| non_empty(self.username.as_deref()))?;
        Some(IdpUser {
            id: self.user_id,
            email: non_empty(self.email.as_deref()),
            display_name: non_empty(self.name.as_deref()),
            given_name: non_empty(self.given_name.as_deref()),
            family_name: non_empty(self.family_name.as_deref()),
            active: !self.blocked.unwrap_or(false),
            user_name,
        })
    }
}

impl Auth0 {
    pub fn new(config: &IdpConfig) -> Result<Self, IdpError> {
        let domain = config.domain.clone().unwrap_or_default();
        let base = base_url(&config.api_base_url, || format!("https://{domain}/api/v2"));
        // The Management API's identifier is always the tenant's canonical
        // `https://{tenant}/api/v2/`, also when the API is reached through a custom
        // domain or a proxy (api_base_url).
        let audience = if domain.trim().is_empty() {
            format!("{base}/")
        } else {
            format!("https://{}/api/v2/", domain.trim().trim_end_matches('/'))
        };
        let auth = Auth::OAuth(TokenRequest {
            token_url: config
                .token_url
                .clone()
                .unwrap_or_else(|| format!("https://{domain}/oauth/token")),
            form: vec![("audience", audience)],
            client: ClientAuth::SecretPost {
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

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<String, IdpError> {
        api_url(&self.name, &self.base, segments, query)
    }

    /// One user by id, or `None` when Auth0 does not know them.
    async fn user_by_id(&self, id: &str) -> Result<Option<A0User>, IdpError> {
        let url = self.url(&["users", id], &[])?;
        match self.client.get_json::<A0User>(&url).await {
            Ok(reply) => Ok(Some(reply.body)),
            Err(IdpError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The full records of `ids` (role members), in their order.
    async fn records(&self, role: &str, ids: &[String]) -> Result<Vec<A0User>, IdpError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(SEARCH_BATCH) {
            let terms: Vec<String> = batch.iter().map(|id| lucene_phrase(id)).collect();
            let q = format!("user_id:({})", terms.join(" OR "));
            let per_page = SEARCH_BATCH.to_string();
            let url = self.url(
                &["users"],
                &[
                    ("q", q.as_str()),
                    ("search_engine", "v3"),
                    ("per_page", per_page.as_str()),
                    ("page", "0"),
                    ("fields", USER_FIELDS),
                    ("include_fields", "true"),
                ],
            )?;
            let found: Vec<A0User> = self.client.get_json(&url).await?.body;
            let mut found: HashMap<String, A0User> =
                found.into_iter().map(|u| (u.user_id.clone(), u)).collect();
            for id in batch {
                let record = match found.remove(id) {
                    Some(record) => record,
                    None => self.user_by_id(id).await?.ok_or_else(|| IdpError::Decode {
                        // A member Auth0 no longer knows (deleted between the two
                        // reads) cannot be judged; failing the role keeps the pull
                        // partial, so nothing is removed on a guess.
                        url: format!("{}/users/{id}", self.base),
                        message: format!("role {role:?} lists user {id}, who does not exist"),
                    })?,
                };
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Page-numbered lists (`/roles`, `/users/{id}/roles`) with totals.
    async fn roles(&self, segments: &[&str]) -> Result<Vec<IdpGroup>, IdpError> {
        let mut out = Vec::new();
        let per_page = PAGE_SIZE.to_string();
        let mut trail = PageTrail::new();
        for page in 0.. {
            let page_text = page.to_string();
            let url = self.url(
                segments,
                &[
                    ("per_page", &per_page),
                    ("page", &page_text),
                    ("include_totals", "true"),
                ],
            )?;
            trail.visit(&url)?;
            let body: RolesPage = self.client.get_json(&url).await?.body;
            let n = body.roles.len();
            // Also for the last page: a server that ignores `page` answers the first
            // page again, and its total would end the list with the rest missing.
            if n > 0 {
                trail.check_items(&url, body.roles.iter().map(|r| r.id.as_str()))?;
            }
            out.extend(body.roles.into_iter().map(|r| IdpGroup::new(r.id, r.name)));
            let done = match body.total {
                Some(total) => out.len() >= total,
                None => n < PAGE_SIZE,
            };
            if n == 0 || done {
                break;
            }
        }
        Ok(out)
    }
}

impl Connector for Auth0 {
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(self.roles(&["roles"]))
    }

    fn group_members<'a>(
        &'a self,
        group: &'a IdpGroup,
        _all: &'a [IdpGroup],
    ) -> BoxFuture<'a, Result<Vec<IdpUser>, IdpError>> {
        Box::pin(async move {
            let take = PAGE_SIZE.to_string();
            let mut from: Option<String> = None;
            let mut out = Vec::new();
            let mut trail = PageTrail::new();
            loop {
                let mut query = vec![("take", take.as_str())];
                if let Some(f) = &from {
                    query.push(("from", f.as_str()));
                }
                let url = self.url(&["roles", &group.id, "users"], &query)?;
                trail.visit(&url)?;
                let (users, next) = match self.client.get_json(&url).await?.body {
                    UsersPage::Checkpoint { users, next } => (users, next),
                    UsersPage::Plain(users) => (users, None),
                };
                let ids: Vec<String> = users.into_iter().map(|u| u.user_id).collect();
                let records = self.records(&group.name, &ids).await?;
                out.extend(records.into_iter().filter_map(A0User::into_user));
                match next.filter(|n| !n.is_empty()) {
                    Some(next) => from = Some(next),
                    None => return Ok(out),
                }
            }
        })
    }

    fn find_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<IdpUser, IdpError>> {
        Box::pin(async move {
            let found = if user.contains('|') {
                let url = self.url(&["users", user], &[])?;
                match self.client.get_json::<A0User>(&url).await {
                    Ok(reply) => Some(reply.body),
                    Err(IdpError::Http { status: 404, .. }) => None,
                    Err(e) => return Err(e),
                }
            } else {
                let url = self.url(&["users-by-email"], &[("email", user)])?;
                let users: Vec<A0User> = self.client.get_json(&url).await?.body;
                users.into_iter().next()
            };
            found
                .and_then(A0User::into_user)
                .ok_or_else(|| IdpError::UserNotFound(user.to_owned()))
        })
    }

    fn user_groups<'a>(
        &'a self,
        user: &'a IdpUser,
    ) -> BoxFuture<'a, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async move { self.roles(&["users", &user.id, "roles"]).await })
    }

    fn stats(&self) -> Arc<PullStats> {
        self.client.stats()
    }

    fn client(&self) -> &ApiClient {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::lucene_phrase;

    #[test]
    fn a_user_id_is_searched_as_one_quoted_phrase() {
        assert_eq!(lucene_phrase("auth0|abc"), r#""auth0|abc""#);
        assert_eq!(lucene_phrase(r#"odd"id\x"#), r#""odd\"id\\x""#);
    }
}
