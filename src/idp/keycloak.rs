//! Keycloak Admin REST: client credentials on
//! `/realms/{realm}/protocol/openid-connect/token` (a service-account client with the
//! realm-management `view-users` role); groups with subgroups (inline before Keycloak
//! 23, through `/groups/{id}/children` from 23 on); members with `first`/`max` paging.
//! A member of a subgroup counts as a member of every group above it.

use super::http::{ApiClient, Auth, ClientAuth, PageTrail, TokenRequest};
use super::{
    api_url, base_url, client_secret, non_empty, required, retry_policy, Connector, IdpError,
    IdpGroup, IdpUser, PullStats,
};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

const PAGE_SIZE: usize = 100;

pub struct Keycloak {
    name: String,
    client: ApiClient,
    /// `{server}/admin/realms/{realm}`
    admin: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KcGroup {
    id: String,
    name: String,
    path: Option<String>,
    sub_group_count: Option<u64>,
    #[serde(default)]
    sub_groups: Vec<KcGroup>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KcUser {
    id: String,
    username: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    enabled: Option<bool>,
}

/// What identifies an item of a paged list.
trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for KcGroup {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for KcUser {
    fn key(&self) -> &str {
        &self.id
    }
}

impl KcUser {
    fn into_user(self) -> Option<IdpUser> {
        let user_name =
            non_empty(self.username.as_deref()).or_else(|| non_empty(self.email.as_deref()))?;
        let given_name = non_empty(self.first_name.as_deref());
        let family_name = non_empty(self.last_name.as_deref());
        // Keycloak has no full-name attribute; a user with one name is shown by it.
        let display_name = match (&given_name, &family_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (one, other) => one.clone().or_else(|| other.clone()),
        };
        Some(IdpUser {
            id: self.id,
            email: non_empty(self.email.as_deref()),
            display_name,
            given_name,
            family_name,
            // The brief representation that member listings use carries `enabled`
            // (ModelToRepresentation.toBriefRepresentation); a disabled account cannot
            // sign in.
            active: self.enabled.unwrap_or(true),
            user_name,
        })
    }
}

impl Keycloak {
    pub fn new(config: &IdpConfig) -> Result<Self, IdpError> {
        let realm = required(config, &config.realm, "realm")?.to_owned();
        let server = base_url(&config.server_url, String::new);
        let admin = base_url(&config.api_base_url, || {
            format!("{server}/admin/realms/{realm}")
        });
        let token_url = config
            .token_url
            .clone()
            .unwrap_or_else(|| format!("{server}/realms/{realm}/protocol/openid-connect/token"));
        let mut form = Vec::new();
        if let Some(scopes) = &config.scopes {
            form.push(("scope", scopes.join(" ")));
        }
        let auth = Auth::OAuth(TokenRequest {
            token_url,
            form,
            client: ClientAuth::SecretPost {
                client_id: required(config, &config.client_id, "client_id")?.to_owned(),
                secret: client_secret(config)?,
            },
        });
        Ok(Self {
            name: config.name.clone(),
            client: ApiClient::new(&config.name, auth, retry_policy(config))?,
            admin,
        })
    }

    /// Every item of a `first`/`max` paged list: a page shorter than `max` is the last.
    async fn all_pages<T: DeserializeOwned + Keyed>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, IdpError> {
        let mut out = Vec::new();
        let max = PAGE_SIZE.to_string();
        let mut first = 0usize;
        let mut trail = PageTrail::new();
        loop {
            let first_text = first.to_string();
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("first", &first_text));
            q.push(("max", &max));
            let url = api_url(&self.name, &self.admin, segments, &q)?;
            trail.visit(&url)?;
            let page: Vec<T> = self.client.get_json(&url).await?.body;
            let n = page.len();
            // The URL changes with `first` on every page, so only the answers show a
            // server (or a proxy dropping the query) that ignores `first`.
            if n > 0 {
                trail.check_items(&url, page.iter().map(Keyed::key))?;
            }
            out.extend(page);
            if n < PAGE_SIZE {
                return Ok(out);
            }
            first += n;
        }
    }

    /// The group tree, flattened; each group lists every group below it.
    async fn tree(&self) -> Result<Vec<IdpGroup>, IdpError> {
        let top: Vec<KcGroup> = self
            .all_pages(&["groups"], &[("briefRepresentation", "true")])
            .await?;
        let mut out = Vec::new();
        for group in top {
            self.flatten(group, "", &mut out).await?;
        }
        Ok(out)
    }

    /// Adds `group` and its descendants to `out`; returns the ids of all of them.
    fn flatten<'a>(
        &'a self,
        group: KcGroup,
        parent_path: &'a str,
        out: &'a mut Vec<IdpGroup>,
    ) -> BoxFuture<'a, Result<Vec<String>, IdpError>> {
        Box::pin(async move {
            let path = group
                .path
                .clone()
                .unwrap_or_else(|| format!("{parent_path}/{}", group.name));
            let children = if !group.sub_groups.is_empty() {
                group.sub_groups
            } else if group.sub_group_count.unwrap_or(0) > 0 {
                self.all_pages(
                    &["groups", &group.id, "children"],
                    &[("briefRepresentation", "true")],
                )
                .await?
            } else {
                Vec::new()
            };
            let index = out.len();
            let mut entry = IdpGroup::new(group.id.clone(), group.name);
            entry.aliases.push(path.clone());
            out.push(entry);
            let mut below = Vec::new();
            for child in children {
                below.extend(self.flatten(child, &path, out).await?);
            }
            out[index].nested = below.clone();
            below.push(group.id);
            Ok(below)
        })
    }

    async fn members_of(&self, id: &str) -> Result<Vec<KcUser>, IdpError> {
        self.all_pages(
            &["groups", id, "members"],
            &[("briefRepresentation", "true")],
        )
        .await
    }
}

impl Connector for Keycloak {
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(self.tree())
    }

    fn group_members<'a>(
        &'a self,
        group: &'a IdpGroup,
        _all: &'a [IdpGroup],
    ) -> BoxFuture<'a, Result<Vec<IdpUser>, IdpError>> {
        Box::pin(async move {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for id in std::iter::once(&group.id).chain(group.nested.iter()) {
                for user in self.members_of(id).await? {
                    if seen.insert(user.id.clone()) {
                        out.extend(user.into_user());
                    }
                }
            }
            Ok(out)
        })
    }

    fn find_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<IdpUser, IdpError>> {
        Box::pin(async move {
            if uuid::Uuid::parse_str(user).is_ok() {
                let url = api_url(&self.name, &self.admin, &["users", user], &[])?;
                match self.client.get_json::<KcUser>(&url).await {
                    Ok(reply) => {
                        return reply
                            .body
                            .into_user()
                            .ok_or_else(|| IdpError::UserNotFound(user.to_owned()))
                    }
                    Err(IdpError::Http { status: 404, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let key = if user.contains('@') {
                "email"
            } else {
                "username"
            };
            let url = api_url(
                &self.name,
                &self.admin,
                &["users"],
                &[(key, user), ("exact", "true")],
            )?;
            let found: Vec<KcUser> = self.client.get_json(&url).await?.body;
            found
                .into_iter()
                .next()
                .and_then(KcUser::into_user)
                .ok_or_else(|| IdpError::UserNotFound(user.to_owned()))
        })
    }

    fn user_groups<'a>(
        &'a self,
        user: &'a IdpUser,
    ) -> BoxFuture<'a, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async move {
            let direct: Vec<KcGroup> = self
                .all_pages(
                    &["users", &user.id, "groups"],
                    &[("briefRepresentation", "true")],
                )
                .await?;
            let direct: HashSet<String> = direct.into_iter().map(|g| g.id).collect();
            // Membership of a subgroup is membership of its ancestors too.
            let all = self.tree().await?;
            Ok(all
                .into_iter()
                .filter(|g| direct.contains(&g.id) || g.nested.iter().any(|n| direct.contains(n)))
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
