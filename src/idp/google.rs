//! Google Workspace Directory API: a service account with domain-wide delegation
//! (a JWT-bearer grant asserting `admin_subject`); groups, members with
//! `includeDerivedMembership=true` (nested groups resolved server-side), a user's
//! groups; `nextPageToken` paging. 403 `userRateLimitExceeded` / `quotaExceeded` and 429
//! are retried with exponential backoff by the shared client.
//!
//! A member listing carries a member's id, email, type and `status` but no name. Names
//! (and `suspended` / `archived`) come from the users API, read once per pull as a list
//! of the whole account (`users?customer=…&projection=basic&maxResults=500`, trimmed
//! with `fields`) and shared by every group of that pull. The Directory API's quota
//! counts requests, not users: the list costs one request per 500 users of the account,
//! where a `users.get` per member would cost one per member of every managed group
//! (and again for each group a person is in). Only for an account much larger than its
//! managed groups (more than ~500 users per member) would the gets be cheaper.
//!
//! A user is inactive when their member entry says `"status": "SUSPENDED"` or their
//! user record says `suspended` or `archived` (an archived user cannot sign in). A
//! member from outside the account (no user record) keeps what the member entry says.

use super::http::{ApiClient, Auth, ClientAuth, PageTrail, TokenRequest};
use super::secret::SecretSources;
use super::{
    api_url, base_url, non_empty, required, retry_policy, Connector, IdpError, IdpGroup, IdpUser,
    PullStats,
};
use crate::config::IdpConfig;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::OnceCell;

pub const DEFAULT_API_BASE_URL: &str = "https://admin.googleapis.com/admin/directory/v1";
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const SCOPES: &str = "https://www.googleapis.com/auth/admin.directory.group.readonly \
                      https://www.googleapis.com/auth/admin.directory.user.readonly";
const PAGE_SIZE: &str = "200";
/// The most `users.list` returns a page.
const USERS_PAGE_SIZE: &str = "500";
/// Partial response: only what a snapshot needs of each user.
const USER_FIELDS: &str = "nextPageToken,users(id,primaryEmail,name,suspended,archived)";

/// The account's users by id.
type Directory = Arc<HashMap<String, GUser>>;

pub struct Google {
    name: String,
    client: ApiClient,
    base: String,
    customer: String,
    /// The account's users, read at most once per pull. Every pull starts with
    /// `list_groups`, which puts a fresh cell here, so a pull never sees the names or
    /// suspensions of an earlier one.
    directory: std::sync::Mutex<Arc<OnceCell<Directory>>>,
}

/// The parts of a service account key file we use.
#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GGroup {
    id: String,
    email: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupsPage {
    #[serde(default)]
    groups: Vec<GGroup>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GMember {
    id: Option<String>,
    email: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MembersPage {
    #[serde(default)]
    members: Vec<GMember>,
    next_page_token: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct GUser {
    id: String,
    primary_email: String,
    name: Option<GName>,
    suspended: Option<bool>,
    archived: Option<bool>,
}

impl GUser {
    fn active(&self) -> bool {
        !self.suspended.unwrap_or(false) && !self.archived.unwrap_or(false)
    }

    fn into_user(self) -> IdpUser {
        let active = self.active();
        let name = self.name.unwrap_or_default();
        IdpUser {
            id: self.id,
            email: Some(self.primary_email.clone()),
            display_name: non_empty(name.full_name.as_deref()),
            given_name: non_empty(name.given_name.as_deref()),
            family_name: non_empty(name.family_name.as_deref()),
            active,
            user_name: self.primary_email,
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct GName {
    given_name: Option<String>,
    family_name: Option<String>,
    full_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsersPage {
    #[serde(default)]
    users: Vec<GUser>,
    next_page_token: Option<String>,
}

fn group_from(g: GGroup) -> IdpGroup {
    let name = g
        .name
        .clone()
        .or_else(|| g.email.clone())
        .unwrap_or_else(|| g.id.clone());
    let mut group = IdpGroup::new(g.id, name);
    // Groups are often known by their address; let the selection use it.
    group.aliases.extend(g.email);
    group
}

impl Google {
    pub fn new(config: &IdpConfig) -> Result<Self, IdpError> {
        let subject = required(config, &config.admin_subject, "admin_subject")?.to_owned();
        let key_json = SecretSources {
            what: format!("service account key of IdP {:?}", config.name),
            file: config.service_account_file.as_deref(),
            env: None,
            credential: Some(config.name.clone()),
            inline: None,
        }
        .read()?
        .ok_or_else(|| IdpError::Config {
            idp: config.name.clone(),
            message: "set service_account_file (the service account's JSON key)".into(),
        })?;
        let key: ServiceAccountKey =
            serde_json::from_str(key_json.expose()).map_err(|e| IdpError::Config {
                idp: config.name.clone(),
                // serde's message names the field, never the key material.
                message: format!("the service account key file is not a JSON key: {e}"),
            })?;
        let signing =
            jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes()).map_err(|e| {
                IdpError::Config {
                    idp: config.name.clone(),
                    message: format!("the service account's private_key is unusable: {e}"),
                }
            })?;
        let auth = Auth::OAuth(TokenRequest {
            token_url: config
                .token_url
                .clone()
                .or(key.token_uri)
                .unwrap_or_else(|| DEFAULT_TOKEN_URL.to_owned()),
            form: Vec::new(),
            client: ClientAuth::JwtBearer {
                issuer: key.client_email,
                subject: Some(subject),
                scope: config
                    .scopes
                    .as_ref()
                    .map(|s| s.join(" "))
                    .unwrap_or_else(|| SCOPES.to_owned()),
                key: signing,
                key_id: key.private_key_id,
            },
        });
        Ok(Self {
            name: config.name.clone(),
            client: ApiClient::new(&config.name, auth, retry_policy(config))?,
            base: base_url(&config.api_base_url, || DEFAULT_API_BASE_URL.to_owned()),
            customer: config
                .customer
                .clone()
                .unwrap_or_else(|| "my_customer".to_owned()),
            directory: std::sync::Mutex::new(Arc::new(OnceCell::new())),
        })
    }

    /// The cell of the pull under way.
    fn directory_cell(&self) -> Arc<OnceCell<Directory>> {
        self.directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts a new pull: the next directory read goes to the IdP.
    fn forget_directory(&self) {
        *self
            .directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(OnceCell::new());
    }

    /// The account's users, read once per pull however many groups ask.
    async fn directory(&self) -> Result<Directory, IdpError> {
        let cell = self.directory_cell();
        cell.get_or_try_init(|| self.list_users()).await.cloned()
    }

    async fn list_users(&self) -> Result<Directory, IdpError> {
        let mut out = HashMap::new();
        let mut token: Option<String> = None;
        let mut trail = PageTrail::new();
        loop {
            let mut query = vec![
                ("customer", self.customer.as_str()),
                ("projection", "basic"),
                ("maxResults", USERS_PAGE_SIZE),
                ("fields", USER_FIELDS),
            ];
            if let Some(t) = &token {
                query.push(("pageToken", t.as_str()));
            }
            let url = api_url(&self.name, &self.base, &["users"], &query)?;
            trail.visit(&url)?;
            let page: UsersPage = self.client.get_json(&url).await?.body;
            out.extend(page.users.into_iter().map(|u| (u.id.clone(), u)));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(Arc::new(out)),
            }
        }
    }

    async fn groups(&self, filter: (&str, &str)) -> Result<Vec<IdpGroup>, IdpError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut trail = PageTrail::new();
        loop {
            let mut query = vec![filter, ("maxResults", PAGE_SIZE)];
            if let Some(t) = &token {
                query.push(("pageToken", t.as_str()));
            }
            let url = api_url(&self.name, &self.base, &["groups"], &query)?;
            trail.visit(&url)?;
            let page: GroupsPage = self.client.get_json(&url).await?.body;
            out.extend(page.groups.into_iter().map(group_from));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }
}

impl Connector for Google {
    fn list_groups(&self) -> BoxFuture<'_, Result<Vec<IdpGroup>, IdpError>> {
        Box::pin(async move {
            self.forget_directory();
            self.groups(("customer", self.customer.as_str())).await
        })
    }

    fn group_members<'a>(
        &'a self,
        group: &'a IdpGroup,
        _all: &'a [IdpGroup],
    ) -> BoxFuture<'a, Result<Vec<IdpUser>, IdpError>> {
        Box::pin(async move {
            let mut members = Vec::new();
            let mut token: Option<String> = None;
            let mut trail = PageTrail::new();
            loop {
                let mut query = vec![
                    ("includeDerivedMembership", "true"),
                    ("maxResults", PAGE_SIZE),
                ];
                if let Some(t) = &token {
                    query.push(("pageToken", t.as_str()));
                }
                let url = api_url(
                    &self.name,
                    &self.base,
                    &["groups", &group.id, "members"],
                    &query,
                )?;
                trail.visit(&url)?;
                let page: MembersPage = self.client.get_json(&url).await?.body;
                for m in page.members {
                    // Nested groups are expanded by includeDerivedMembership; the group
                    // entries themselves (and CUSTOMER, "all users") are not users.
                    if m.kind.as_deref().is_some_and(|k| k != "USER") {
                        continue;
                    }
                    // Google always gives a USER member an id and an email; one without
                    // is a damaged answer, and skipping it would remove that person.
                    let (Some(id), Some(email)) = (m.id, non_empty(m.email.as_deref())) else {
                        return Err(IdpError::Decode {
                            url,
                            message: format!(
                                "a USER member of group {:?} has no id or no email",
                                group.name
                            ),
                        });
                    };
                    let suspended = m.status.as_deref() == Some("SUSPENDED");
                    members.push((id, email, suspended));
                }
                match page.next_page_token.filter(|t| !t.is_empty()) {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            if members.is_empty() {
                return Ok(Vec::new());
            }
            let directory = self.directory().await?;
            Ok(members
                .into_iter()
                .map(|(id, email, suspended)| match directory.get(&id) {
                    Some(record) => {
                        let mut user = record.clone().into_user();
                        user.active &= !suspended;
                        user
                    }
                    // Someone from outside the account: the member entry is all there is.
                    None => IdpUser {
                        id,
                        email: Some(email.clone()),
                        display_name: None,
                        given_name: None,
                        family_name: None,
                        active: !suspended,
                        user_name: email,
                    },
                })
                .collect())
        })
    }

    fn find_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<IdpUser, IdpError>> {
        Box::pin(async move {
            let url = api_url(&self.name, &self.base, &["users", user], &[])?;
            let u: GUser = match self.client.get_json(&url).await {
                Ok(reply) => reply.body,
                Err(IdpError::Http { status: 404, .. }) => {
                    return Err(IdpError::UserNotFound(user.to_owned()))
                }
                Err(e) => return Err(e),
            };
            Ok(u.into_user())
        })
    }

    fn user_groups<'a>(
        &'a self,
        user: &'a IdpUser,
    ) -> BoxFuture<'a, Result<Vec<IdpGroup>, IdpError>> {
        // `groups?userKey=` lists direct memberships; groups reached only through a
        // nested group are picked up by the scheduled pull (derived membership).
        Box::pin(self.groups(("userKey", user.id.as_str())))
    }

    fn stats(&self) -> Arc<PullStats> {
        self.client.stats()
    }

    fn client(&self) -> &ApiClient {
        &self.client
    }
}
