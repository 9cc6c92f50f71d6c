//! The test harness: the real application on port 0 with a fresh database, talked to
//! over HTTP the way an IdP or the gateway would.

pub mod daemon;

use reqwest::{Method, RequestBuilder, StatusCode};
use scimsync::app::{App, INITIAL_TOKEN_FILE};
use scimsync::config::Config;
use scimsync::domain::{Role, Source, Team, TeamName, TokenScope, User, UserName};
use scimsync::reconcile::{
    Desired, DesiredTeam, DesiredUser, Engine, Intent, MemberRef, MemberSpec, Policy, Request,
    Scope,
};
use scimsync::store::Store;
use serde_json::Value;
use std::net::SocketAddr;
use tempfile::TempDir;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const SCIM_JSON: &str = "application/scim+json";

/// An active user with the default role and nothing else set, as the store would
/// hold it; not stored.
pub fn new_user(user_name: &str, source: Source) -> User {
    let now = scimsync::store::now();
    User {
        id: Uuid::new_v4(),
        user_name: UserName::parse(user_name).expect("valid user name"),
        external_id: None,
        email: None,
        display_name: None,
        given_name: None,
        family_name: None,
        role: Role::viewer(),
        active: true,
        attributes: Default::default(),
        source,
        created: now,
        modified: now,
        version: 1,
    }
}

/// Applies `desired` through the engine's front door as an operator.
pub async fn apply_as_operator(store: &Store, desired: &Desired) {
    let policy = Policy::default();
    Engine::new(store.clone())
        .apply(Request::new(desired, &policy, &operator()))
        .await
        .expect("applied");
}

/// Adds one member to a team as an operator would (the membership is `manual`).
pub async fn add_member_as_operator(store: &Store, team_id: Uuid, user_id: Uuid) {
    let team = store
        .team(team_id)
        .await
        .expect("read")
        .expect("team exists");
    let mut desired = Desired::new(Source::Manual, Scope::Listed);
    desired.teams.push(DesiredTeam {
        id: Some(team_id),
        intent: Intent::Update,
        members: MemberSpec::Delta {
            add: vec![MemberRef::UserId(user_id)],
            remove: Vec::new(),
        },
        ..DesiredTeam::new(team.display_name)
    });
    apply_as_operator(store, &desired).await;
}

/// An operator at the shell, as the audit log names them.
pub fn operator() -> scimsync::reconcile::Actor {
    scimsync::reconcile::Actor::new(scimsync::domain::Trigger::Cli, "test")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    /// The store the server uses, for seeding and for checking what was written.
    pub store: Store,
    /// The server's shared state (its group commit's counters, for one).
    pub state: scimsync::state::AppState,
    pub config: Config,
    /// The `initial` SCIM token the server wrote on first start.
    pub scim_token: String,
    pub http: reqwest::Client,
    pub dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the app with a configuration adjusted by `configure` (listen address and
    /// database are set to port 0 and a fresh temporary SQLite file first).
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().expect("address");
        config.database.url = match postgres_server() {
            Some(server) => fresh_postgres_database(&server).await,
            None => format!("sqlite://{}", dir.path().join("scimsync.db").display()),
        };
        config.server.state_directory = Some(dir.path().to_owned());
        configure(&mut config);
        Self::start(dir, config, None).await
    }

    /// A second daemon on this app's database: another replica on PostgreSQL, another
    /// process on the same file on SQLite. It answers to the same `initial` token.
    pub async fn spawn_replica(&self) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = self.config.clone();
        config.server.state_directory = Some(dir.path().to_owned());
        Self::start(dir, config, Some(self.scim_token.clone())).await
    }

    async fn start(dir: TempDir, config: Config, scim_token: Option<String>) -> Self {
        let app = App::build(config.clone()).await.expect("app starts");
        let addr = app.local_addr().expect("bound address");
        let store = app.state().store.clone();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = app
                .serve(async {
                    let _ = rx.await;
                })
                .await;
        });
        let scim_token = scim_token.unwrap_or_else(|| {
            std::fs::read_to_string(dir.path().join(INITIAL_TOKEN_FILE))
                .expect("initial token file")
                .trim()
                .to_owned()
        });
        TestApp {
            addr,
            base_url: format!("http://{addr}"),
            store,
            state,
            config,
            scim_token,
            http: reqwest::Client::new(),
            dir,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A request to the SCIM API (`path` relative to /scim/v2) with the SCIM token.
    pub fn scim(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(&format!("/scim/v2{path}")))
            .bearer_auth(&self.scim_token)
            .header("accept", SCIM_JSON)
    }

    /// Sends a SCIM request with a JSON body and returns status and parsed body (Null if empty).
    pub async fn scim_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.scim(method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", SCIM_JSON)
                .body(body.to_string());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body read");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// Creates a bearer token of the given scope directly in the store (a SCIM token
    /// pushes for the IdP "default", as one made without `--idp` does).
    pub async fn new_token(&self, name: &str, scope: TokenScope) -> String {
        self.new_idp_token(name, scope, scimsync::domain::DEFAULT_SCIM_IDP)
            .await
    }

    /// Creates a SCIM token bound to `idp`: what it creates is owned by that IdP.
    pub async fn new_idp_token(&self, name: &str, scope: TokenScope, idp: &str) -> String {
        self.store
            .issue_token(name, scope, idp)
            .await
            .expect("token created")
            .expose()
            .to_owned()
    }

    /// Seeds an active user as an operator would create it by hand (owned by nobody's
    /// sync), through the engine.
    pub async fn seed_user(&self, user_name: &str) -> User {
        let id = Uuid::new_v4();
        let mut desired = Desired::new(Source::Manual, Scope::Listed);
        desired.users.push(DesiredUser {
            id: Some(id),
            intent: Intent::Create,
            email: Some(user_name.to_owned()),
            ..DesiredUser::new(UserName::parse(user_name).expect("valid user name"))
        });
        apply_as_operator(&self.store, &desired).await;
        self.store
            .user(id)
            .await
            .expect("read")
            .expect("user seeded")
    }

    /// Seeds a team as an operator would create it by hand, through the engine.
    pub async fn seed_team(&self, display_name: &str) -> Team {
        let id = Uuid::new_v4();
        let mut desired = Desired::new(Source::Manual, Scope::Listed);
        desired.teams.push(DesiredTeam {
            id: Some(id),
            intent: Intent::Create,
            ..DesiredTeam::new(TeamName::parse(display_name).expect("valid team name"))
        });
        apply_as_operator(&self.store, &desired).await;
        self.store
            .team(id)
            .await
            .expect("read")
            .expect("team seeded")
    }

    /// Makes a user a member of a team, as an operator would, through the engine.
    pub async fn seed_member(&self, team_id: Uuid, user_id: Uuid) {
        add_member_as_operator(&self.store, team_id, user_id).await;
    }

    /// Issues an API key for a user, optionally scoped to a team (of which the user must
    /// be a member); returns (key id, secret).
    pub async fn new_api_key(&self, user_id: Uuid, team_id: Option<Uuid>) -> (Uuid, String) {
        let new = scimsync::reconcile::NewKey {
            user_id,
            team_id,
            ..Default::default()
        };
        let (key, secret) = self
            .engine()
            .issue_key(new, &operator())
            .await
            .expect("key issued");
        (key.id, secret.expose().to_owned())
    }

    /// The engine's front door on this app's store.
    pub fn engine(&self) -> scimsync::reconcile::Engine {
        scimsync::reconcile::Engine::new(self.store.clone())
    }

    /// Asks /v1/whoami about a key, as the gateway does on every request.
    pub async fn whoami(&self, api_key: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url("/v1/whoami"))
            .bearer_auth(api_key)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

/// The PostgreSQL server to test against, if any (`SCIMSYNC_TEST_POSTGRES_URL`, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`). Without it every test uses SQLite.
pub fn postgres_server() -> Option<String> {
    std::env::var("SCIMSYNC_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Creates an empty database for one test on the server and returns its URL.
pub async fn fresh_postgres_database(server: &str) -> String {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let name = format!("scimsync_test_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(server)
        .await
        .expect("SCIMSYNC_TEST_POSTGRES_URL reachable");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("test database created");
    let _ = conn.close().await;
    let (base, _) = server
        .rsplit_once('/')
        .expect("SCIMSYNC_TEST_POSTGRES_URL ends in /DATABASE");
    format!("{base}/{name}")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Whether the user named `user` (who must exist) is active.
pub async fn is_active(store: &scimsync::store::Store, user: &str) -> bool {
    let name = scimsync::domain::UserName::parse(user).expect("a userName");
    store
        .user_by_name(&name)
        .await
        .expect("store answers")
        .expect("the user exists")
        .active
}

/// The display names of the teams `user` is in, sorted.
pub async fn teams_of(store: &scimsync::store::Store, user: &str) -> Vec<String> {
    let name = scimsync::domain::UserName::parse(user).expect("a userName");
    let Some(u) = store.user_by_name(&name).await.expect("store answers") else {
        return Vec::new();
    };
    let teams = store.all_teams().await.expect("teams");
    let mut names: Vec<String> = store
        .all_memberships()
        .await
        .expect("memberships")
        .into_iter()
        .filter(|m| m.user_id == u.id)
        .filter_map(|m| teams.iter().find(|t| t.id == m.team_id))
        .map(|t| t.display_name.as_str().to_owned())
        .collect();
    names.sort();
    names
}
