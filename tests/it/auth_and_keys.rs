//! Bearer tokens, scopes, API keys and /v1/whoami, spoken to over HTTP.

use crate::common;

use common::TestApp;
use reqwest::StatusCode;
use scimsync::domain::TokenScope;
use serde_json::Value;

const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

async fn get_users_with(app: &TestApp, authorization: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(app.url("/scim/v2/Users"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.expect("request sent")
}

async fn assert_scim_error(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/scim+json"
    );
    let challenge = response.headers().get("www-authenticate").cloned();
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["schemas"][0], ERROR_SCHEMA);
    assert_eq!(body["status"], status.as_u16().to_string());
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(challenge.expect("WWW-Authenticate header"), "Bearer");
    }
    body
}

#[tokio::test]
async fn the_initial_token_opens_the_scim_api() {
    let app = TestApp::spawn().await;
    let response = get_users_with(&app, Some(&format!("Bearer {}", app.scim_token))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_without_a_token_is_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let body = assert_scim_error(get_users_with(&app, None).await, StatusCode::UNAUTHORIZED).await;
    assert!(body["detail"].as_str().unwrap().contains("Authorization"));
}

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let app = TestApp::spawn().await;
    for header in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-one-of-ours",
        "Bearer scimsync_has spaces",
        &format!("Token {}", app.scim_token),
    ] {
        assert_scim_error(
            get_users_with(&app, Some(header)).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
}

#[tokio::test]
async fn an_unknown_token_is_401() {
    let app = TestApp::spawn().await;
    let forged = format!("Bearer scimsync_{}", "A".repeat(43));
    assert_scim_error(
        get_users_with(&app, Some(&forged)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    let response = get_users_with(&app, Some(&format!("bearer {}", app.scim_token))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let token = app.new_token("okta", TokenScope::Scim).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get_users_with(&app, Some(&bearer)).await.status(),
        StatusCode::OK
    );
    assert!(app.store.revoke_token("okta").await.unwrap());
    assert_scim_error(
        get_users_with(&app, Some(&bearer)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn tokens_of_another_scope_are_403_on_the_scim_api() {
    let app = TestApp::spawn().await;
    for (name, scope) in [("gateway", TokenScope::Sso), ("ops", TokenScope::Admin)] {
        let token = app.new_token(name, scope).await;
        let body = assert_scim_error(
            get_users_with(&app, Some(&format!("Bearer {token}"))).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("scope scim"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn token_listings_never_contain_secrets() {
    let app = TestApp::spawn().await;
    let token = app.new_token("entra", TokenScope::Scim).await;
    let listed = format!("{:?}", app.store.list_tokens().await.unwrap());
    assert!(listed.contains("entra"));
    assert!(!listed.contains(&token));
    assert!(!listed.contains(&app.scim_token));
}

#[tokio::test]
async fn whoami_answers_who_owns_a_valid_key() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("Alice@Example.com").await;
    let team = app.seed_team("Research").await;
    app.seed_member(team.id, user.id).await;
    let (key_id, key) = app.new_api_key(user.id, Some(team.id)).await;
    let (status, body) = app.whoami(&key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user_id"], user.id.to_string());
    assert_eq!(body["user_name"], "Alice@Example.com");
    assert_eq!(body["role"], "viewer");
    assert_eq!(body["team_id"], team.id.to_string());
    assert_eq!(body["key_id"], key_id.to_string());
}

#[tokio::test]
async fn whoami_refuses_missing_malformed_and_unknown_keys() {
    let app = TestApp::spawn().await;
    let response = app.http.get(app.url("/v1/whoami")).send().await.unwrap();
    assert_scim_error(response, StatusCode::UNAUTHORIZED).await;
    for key in ["sk-", "not-a-key", &format!("sk-{}", "B".repeat(43))] {
        let (status, _) = app.whoami(key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key}");
    }
}

#[tokio::test]
async fn whoami_refuses_a_revoked_key() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("bob").await;
    let (key_id, key) = app.new_api_key(user.id, None).await;
    let operator = crate::common::operator();
    assert!(app.engine().revoke_key(key_id, &operator).await.unwrap());
    assert_eq!(app.whoami(&key).await.0, StatusCode::UNAUTHORIZED);
    assert!(
        !app.engine().revoke_key(key_id, &operator).await.unwrap(),
        "already gone"
    );
}

#[tokio::test]
async fn whoami_refuses_a_blocked_key_and_accepts_it_once_unblocked() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("carol").await;
    let (_, key) = app.new_api_key(user.id, None).await;
    let mut tx = app.store.begin_write().await.unwrap();
    assert_eq!(tx.block_user_keys(user.id).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(app.whoami(&key).await.0, StatusCode::UNAUTHORIZED);
    let mut tx = app.store.begin_write().await.unwrap();
    assert_eq!(tx.unblock_user_keys(user.id).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(app.whoami(&key).await.0, StatusCode::OK);
}

#[tokio::test]
async fn whoami_refuses_an_expired_key() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("dave").await;
    let past = scimsync::store::now() - chrono::Duration::seconds(1);
    let new = scimsync::reconcile::NewKey {
        user_id: user.id,
        expires: Some(past),
        ..Default::default()
    };
    let (_, secret) = app
        .engine()
        .issue_key(new, &crate::common::operator())
        .await
        .unwrap();
    assert_eq!(
        app.whoami(secret.expose()).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn whoami_refuses_the_key_of_an_inactive_user() {
    let app = TestApp::spawn().await;
    let mut user = app.seed_user("erin").await;
    let (_, key) = app.new_api_key(user.id, None).await;
    user.active = false;
    user.version += 1;
    let mut tx = app.store.begin_write().await.unwrap();
    tx.update_user(&user).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.whoami(&key).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_a_key_keeps_an_audit_copy_without_the_secret() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("frank").await;
    let (key_id, key) = app.new_api_key(user.id, None).await;
    app.engine()
        .revoke_key(key_id, &crate::common::operator())
        .await
        .unwrap();
    assert!(app.store.list_keys(Some(user.id)).await.unwrap().is_empty());
    let deleted = app.store.deleted_keys(user.id).await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].id, key_id);
    assert_eq!(deleted[0].reason, "revoked");
    assert!(key.starts_with(&deleted[0].prefix));
    let hash = scimsync::keys::hash_secret(&key);
    let still_there = app
        .store
        .authenticate_key(&hash, chrono::Utc::now())
        .await
        .unwrap();
    assert!(still_there.is_none());
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    app.store.close().await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the process is still up");
}

#[tokio::test]
async fn unknown_paths_get_a_scim_error_404() {
    let app = TestApp::spawn().await;
    let response = app.http.get(app.url("/nope")).send().await.unwrap();
    assert_scim_error(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_token_over_its_rate_limit_gets_429_with_retry_after_in_the_scim_envelope() {
    let app = TestApp::spawn_with(|config| config.server.rate_limit = 5).await;
    let bearer = format!("Bearer {}", app.scim_token);
    let mut limited = None;
    for _ in 0..20 {
        let response = get_users_with(&app, Some(&bearer)).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = limited.expect("the sixth quick request is over a limit of 5/s");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = assert_scim_error(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(body["detail"].as_str().unwrap().contains("rate limit"));

    // Another token has its own budget.
    let other = app.new_token("other", TokenScope::Scim).await;
    let response = get_users_with(&app, Some(&format!("Bearer {other}"))).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn issuing_and_revoking_a_key_are_audited_with_their_actor() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("grace@example.com").await;
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_scimsync"))
            .arg("--database-url")
            .arg(&app.config.database.url)
            .args(args)
            .env_remove("SCIMSYNC_CONFIG")
            .env_remove("SCIMSYNC_DATABASE_URL")
            .env("SCIMSYNC_LOG_LEVEL", "warn")
            .output()
            .expect("scimsync runs")
    };
    let created = cli(&[
        "key",
        "create",
        "--user",
        "grace@example.com",
        "--name",
        "laptop",
    ]);
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let key_id = app.store.list_keys(Some(user.id)).await.unwrap()[0].id;
    let revoked = cli(&["key", "revoke", &key_id.to_string()]);
    assert_eq!(revoked.status.code(), Some(0), "{revoked:?}");

    let audit = app.store.audit_since(None).await.unwrap();
    let key_target = format!("key:{key_id}");
    let issued = audit
        .iter()
        .find(|e| e.operation == "issue_key")
        .unwrap_or_else(|| panic!("issue_key audited: {audit:?}"));
    assert_eq!(
        (issued.trigger.as_str(), issued.actor.as_str()),
        ("cli", "cli")
    );
    assert_eq!(issued.target, key_target);
    assert_eq!(issued.detail["after"]["name"], "laptop");
    let gone = audit
        .iter()
        .find(|e| e.operation == "revoke_key")
        .unwrap_or_else(|| panic!("revoke_key audited: {audit:?}"));
    assert_eq!((gone.trigger.as_str(), gone.actor.as_str()), ("cli", "cli"));
    assert_eq!(gone.target, key_target);
    let text = String::from_utf8_lossy(&cli(&["audit"]).stdout).into_owned();
    assert!(
        text.contains("issue_key") && text.contains("revoke_key"),
        "{text}"
    );
    let secret = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(!text.contains(&secret), "no secret in the audit log");
}
