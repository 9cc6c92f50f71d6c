//! Okta: an SSWS API token, or OAuth 2.0 client credentials with private_key_jwt
//! (scopes `okta.groups.read okta.users.read`).
//!
//! `/api/v1/groups`, `/api/v1/groups/{id}/users`, `/api/v1/users/{id}/groups`, paged by
//! `Link: <...>; rel="next"`; the client honours `X-Rate-Limit-Remaining` and
//! `X-Rate-Limit-Reset`. DEPROVISIONED and SUSPENDED users are inactive.

use super::http::{checked_next_link, ApiClient, Auth, ClientAuth, PageTrail, TokenRequest};
use super::secret::SecretSources;
use super::{
    api_url, base_url, non_empty, retry_policy, Connector, IdpError, IdpGroup, IdpUser, PullStats,
    Secret,
};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;

const PAGE_SIZE: &str = "200";
const DEFAULT_SCOPES: &str = "okta.groups.read okta.users.read";

pub struct Okta {
    name: String,
    client: ApiClient,
    base: String,
}

#[derive(Deserialize)]
struct OktaGroup {
    id: String,
    profile: GroupProfile,
}

#[derive(Deserialize)]
struct GroupProfile {
    name: String,
}

#[derive(Deserialize)]
struct OktaUser {
    id: String,
    status: Option<String>,
    profile: UserProfile,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserProfile {
    login: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    display_name: Option<String>,
}

impl OktaUser {
    fn into_user(self) -> Option<IdpUser> {
        let p = self.profile;
        let user_name = non_empty(p.login.as_deref()).or_else(|| non_empty(p.email.as_deref()))?;
        let active = !matches!(
            self.status.as_deref(),
            Some("DEPROVISIONED") | Some("SUSPENDED")
        );
        let display_name = non_empty(p.display_name.as_deref()).or_else(|| {
            match (p.first_name.as_deref(), p.last_name.as_deref()) {
                (Some(f), Some(l)) => Some(format!("{f} {l}")),
                _ => None,
            }
        });
        Some(IdpUser {
            id: self.id,
            email: non_empty(p.email.as_deref()),
            display_name,
            given_name: non_empty(p.first_name.as_deref()),
            family_name: non_empty(p.last_name.as_deref()),
            active,
            user_name,
        })
    }
}

/// The `rel="next"` URL of a `Link` header, if any.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (url, params) = part.split_once(';')?;
            let is_next = params
                .split(';')
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
            let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| url.to_owned())
        })
}

impl Okta {
    pub fn new(config: &IdpConfig) -> Result<Self, IdpError> {
        let base = base_url(&config.api_base_url, || {
            format!("https://{}", config.domain.as_deref().unwrap_or_default())
        });
        let token = SecretSources {
            what: format!("API token of IdP {:?}", config.name),
            file: config.api_token_file.as_deref(),
            env: config.api_token_env.as_deref(),
            credential: None,
            inline: config.api_token.as_deref(),
        }
        .read()?;
        let auth = match (token, &config.private_key_file, &config.client_id) {
            (Some(token), _, _) => Auth::Static(Secret::new(format!("SSWS {}", token.expose()))),
            (None, Some(key_file), Some(client_id)) => {
                let pem = SecretSources {
                    what: format!("private key of IdP {:?}", config.name),
                    file: Some(key_file),
                    env: None,
                    credential: None,
                    inline: None,
                }
                .read()?
                .ok_or_else(|| IdpError::Secret("no private key".into()))?;
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose().as_bytes())
                    .map_err(|e| IdpError::Config {
                        idp: config.name.clone(),
                        message: format!(
                            "private_key_file {} is not an RSA PEM key: {e}",
                            key_file.display()
                        ),
                    })?;
                Auth::OAuth(TokenRequest {
                    token_url: config
                        .token_url
                        .clone()
                        .unwrap_or_else(|| format!("{base}/oauth2/v1/token")),
                    form: vec![(
                        "scope",
                        config
                            .scopes
                            .as_ref()
                            .map(|s| s.join(" "))
                            .unwrap_or_else(|| DEFAULT_SCOPES.to_owned()),
                    )],
                    client: ClientAuth::PrivateKeyJwt {
                        client_id: client_id.clone(),
                        key,
                        key_id: config.private_key_id.clone(),
                    },
                })
            }
            _ => {
                return Err(IdpError::Config {
                    idp: config.name.clone(),
                    message: "set api_token_file (or api_token_env / api_token), or client_id \
                              with private_key_file"
                        .into(),
                })
            }
        };
        Ok(Self {
            name: config.name.clone(),
            client: ApiClient::new(&config.name, auth, retry_policy(config))?,
            base,
        })
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<String, IdpError> {
        let mut all = vec!["api", "v1"];
        all.extend_from_slice(segments);
        api_url(&self.name, &self.base, &all, query)
    }

    async fn all_pages<T: DeserializeOwned>(&self, first: String) -> Result<Vec<T>, IdpError> {
        let mut out = Vec::new();
        let mut url = first;
        let mut trail = PageTrail::new();
        loop {
            trail.visit(&url)?;
            let reply = self.client.get_json::<Vec<T>>(&url).await?;
            out.extend(reply.body);
            match next_link(&reply.headers) {
                Some(next) => url = checked_next_link(&self.base, &next)?,
                None => return Ok(out),
            }
        }
    }
}

fn groups_from(items: Vec<OktaGroup>) -> Vec<IdpGroup> {
    items
        .into_iter()
        .map(|g| IdpGroup::new(g.id, g.profile.name))
        .collect()
}

impl Connector for Okta {
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async move {
            let url = self.url(&["groups"], &[("limit", PAGE_SIZE)])?;
            Ok(groups_from(self.all_pages(url).await?))
        })
    }

    fn group_members<'a>(
        &'a self,
        group: &'a IdpGroup,
        _all: &'a [IdpGroup],
    ) -> BoxFuture<'a, Result<Vec<IdpUser>, IdpError>> {
        Box::pin(async move {
            let url = self.url(&["groups", &group.id, "users"], &[("limit", PAGE_SIZE)])?;
            let users: Vec<OktaUser> = self.all_pages(url).await?;
            Ok(users.into_iter().filter_map(OktaUser::into_user).collect())
        })
    }

    fn find_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<IdpUser, IdpError>> {
        Box::pin(async move {
            // Okta resolves /users/{id}, /users/{login} and /users/{login shortname}.
            let url = self.url(&["users", user], &[])?;
            match self.client.get_json::<OktaUser>(&url).await {
                Ok(reply) => reply
                    .body
                    .into_user()
                    .ok_or_else(|| IdpError::UserNotFound(user.to_owned())),
                Err(IdpError::Http { status: 404, .. }) => {
                    Err(IdpError::UserNotFound(user.to_owned()))
                }
                Err(e) => Err(e),
            }
        })
    }

    fn user_groups<'a>(
        &'a self,
        user: &'a IdpUser,
    ) -> BoxFuture<'a, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async move {
            let url = self.url(&["users", &user.id, "groups"], &[("limit", PAGE_SIZE)])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_next_link_is_found_among_several() {
        let mut h = HeaderMap::new();
        h.append(
            reqwest::header::LINK,
            HeaderValue::from_static(r#"<https://x.okta.com/api/v1/groups?limit=200>; rel="self""#),
        );
        h.append(
            reqwest::header::LINK,
            HeaderValue::from_static(
                r#"<https://x.okta.com/api/v1/groups?after=00g2&limit=200>; rel="next""#,
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://x.okta.com/api/v1/groups?after=00g2&limit=200")
        );
        h.clear();
        assert_eq!(next_link(&h), None);
    }
}
