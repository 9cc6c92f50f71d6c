//! The sign-in hook end to end: the real app on port 0, a mock Entra (Graph) or a
//! JWKS endpoint, and the gateway's calls to POST /v1/sso/sign-in.

use crate::common;
use crate::idp_mocks;

use common::{teams_of, TestApp};
use idp_mocks::graph::{GraphMock, CLIENT_ID, TENANT};
use idp_mocks::jwt;
use reqwest::StatusCode;
use scimsync::config::{IdpConfig, IdpKind};
use scimsync::domain::{TokenScope, UserName};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn sign_in(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url("/v1/sso/sign-in"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The display names of the teams `user` is in, sorted.
async fn entra_app(mock: &GraphMock, groups: &[&str]) -> (TestApp, String) {
    let idp = mock.config("entra", groups);
    let app = TestApp::spawn_with(move |c| c.idp.push(idp)).await;
    let token = app.new_token("gateway", TokenScope::Sso).await;
    (app, token)
}

#[tokio::test]
async fn a_sign_in_for_a_user_in_two_groups_auto_creates_two_teams() {
    let mock = GraphMock::start().await;
    let (app, token) = entra_app(&mock, &["LLM *"]).await;
    let (status, body) = sign_in(
        &app,
        &token,
        json!({"idp": "entra", "user": "alice@contoso.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "applied");
    assert_eq!(body["teams"], json!(["LLM Admins", "LLM Users"]));
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
    let alice = app
        .store
        .user_by_name(&UserName::parse("alice@contoso.com").unwrap())
        .await
        .unwrap()
        .expect("alice was created just in time");
    assert_eq!(alice.role.as_str(), "viewer");
    assert_eq!(alice.external_id.as_deref(), Some("u-alice"));
    let teams = app.store.all_teams().await.unwrap();
    assert_eq!(teams.len(), 2);
    let admins = teams
        .iter()
        .find(|t| t.display_name.as_str() == "LLM Admins")
        .unwrap();
    assert_eq!(admins.external_id.as_deref(), Some("g-admins"));
    assert_eq!(admins.source.to_string(), "sso:entra");
}

#[tokio::test]
async fn after_the_idp_drops_a_group_the_next_sign_in_removes_that_membership_and_no_other() {
    let mock = GraphMock::start().await;
    let (app, token) = entra_app(&mock, &["LLM *"]).await;
    for user in ["alice@contoso.com", "bob@contoso.com"] {
        let (status, body) = sign_in(&app, &token, json!({"idp": "entra", "user": user})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(teams_of(&app.store, "bob@contoso.com").await, ["LLM Users"]);
    mock.remove_member("g-users", "u-alice");
    let (status, body) = sign_in(
        &app,
        &token,
        json!({"idp": "entra", "user": "alice@contoso.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["teams"], json!(["LLM Admins"]));
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Admins"]
    );
    assert_eq!(
        teams_of(&app.store, "bob@contoso.com").await,
        ["LLM Users"],
        "another user's membership is untouched"
    );
}

#[tokio::test]
async fn a_dry_run_sign_in_shows_the_plan_and_changes_nothing() {
    let mock = GraphMock::start().await;
    let (app, token) = entra_app(&mock, &["LLM *"]).await;
    let (status, body) = sign_in(
        &app,
        &token,
        json!({"idp": "entra", "user": "alice@contoso.com", "dry_run": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "planned");
    assert!(
        body["plan"]["summary"]["add"].as_u64().unwrap() >= 3,
        "{body}"
    );
    assert!(app.store.all_teams().await.unwrap().is_empty());
    assert!(teams_of(&app.store, "alice@contoso.com").await.is_empty());
}

#[tokio::test]
async fn unknown_users_and_unknown_idps_are_not_found_and_other_scopes_are_forbidden() {
    let mock = GraphMock::start().await;
    let (app, token) = entra_app(&mock, &["LLM *"]).await;
    let (status, _) = sign_in(
        &app,
        &token,
        json!({"idp": "entra", "user": "nobody@contoso.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sign_in(&app, &token, json!({"idp": "okta", "user": "a@b.c"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sign_in(&app, &token, json!({"idp": "entra"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let scim = app.scim_token.clone();
    let (status, _) = sign_in(
        &app,
        &scim,
        json!({"idp": "entra", "user": "alice@contoso.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_slow_idp_gets_a_deferred_answer_and_the_sign_in_finishes_in_the_background() {
    let mock = GraphMock::start().await;
    *mock.faults.delay.lock().unwrap() = Duration::from_millis(800);
    let idp = mock.config("entra", &["LLM *"]);
    let app = TestApp::spawn_with(move |c| {
        c.idp.push(idp);
        c.sso.timeout_secs = 1;
    })
    .await;
    let token = app.new_token("gateway", TokenScope::Sso).await;
    let started = Instant::now();
    let (status, body) = sign_in(
        &app,
        &token,
        json!({"idp": "entra", "user": "alice@contoso.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "deferred");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered at the timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while teams_of(&app.store, "alice@contoso.com").await.len() < 2 {
        assert!(Instant::now() < deadline, "the background sign-in finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- id_tokens ----

fn entra_claims(mock: &GraphMock) -> Value {
    let now = jwt::now();
    json!({
        "iss": format!("{}/{}/v2.0", mock.base_url, TENANT),
        "aud": CLIENT_ID,
        "iat": now, "nbf": now - 5, "exp": now + 600,
        "oid": "u-alice", "sub": "pairwise-subject",
        "preferred_username": "alice@contoso.com",
        "name": "Alice Ng",
        "_claim_names": {"groups": "src1"},
        "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/u-alice/getMemberObjects"}},
    })
}

async fn entra_app_with_jwks(mock: &GraphMock) -> (TestApp, String) {
    let (jwks_url, _) = jwt::serve_jwks(vec![jwt::jwk(jwt::idp_key())]).await;
    let mut idp = mock.config("entra", &["LLM *"]);
    idp.jwks_url = Some(jwks_url);
    let app = TestApp::spawn_with(move |c| c.idp.push(idp)).await;
    let token = app.new_token("gateway", TokenScope::Sso).await;
    (app, token)
}

#[tokio::test]
async fn an_id_token_with_an_entra_groups_overage_gets_the_groups_from_graph() {
    let mock = GraphMock::start().await;
    let (app, token) = entra_app_with_jwks(&mock).await;
    let id_token = jwt::sign(jwt::idp_key(), &entra_claims(&mock));
    let (status, body) = sign_in(&app, &token, json!({"idp": "entra", "id_token": id_token})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["teams"], json!(["LLM Admins", "LLM Users"]));
    assert_eq!(
        teams_of(&app.store, "alice@contoso.com").await,
        ["LLM Admins", "LLM Users"]
    );
}

#[tokio::test]
async fn id_tokens_with_a_bad_signature_a_wrong_audience_or_an_expired_lifetime_are_refused() {
    let mock = GraphMock::start().await;
    let (app, token) = entra_app_with_jwks(&mock).await;
    let good = entra_claims(&mock);
    let mut wrong_audience = good.clone();
    wrong_audience["aud"] = json!("some-other-app");
    let mut expired = good.clone();
    expired["exp"] = json!(jwt::now() - 3600);
    let mut wrong_issuer = good.clone();
    wrong_issuer["iss"] = json!("https://evil.example.com/v2.0");
    let mut not_yet = good.clone();
    not_yet["nbf"] = json!(jwt::now() + 3600);
    let cases = [
        ("bad signature", jwt::sign(jwt::rogue_key(), &good)),
        ("wrong audience", jwt::sign(jwt::idp_key(), &wrong_audience)),
        ("expired", jwt::sign(jwt::idp_key(), &expired)),
        ("wrong issuer", jwt::sign(jwt::idp_key(), &wrong_issuer)),
        ("not valid yet", jwt::sign(jwt::idp_key(), &not_yet)),
        ("alg none", jwt::unsigned(&good)),
        (
            "HS256",
            jwt::sign_hs256(b"graph-client-secret-for-tests", &good),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (case, id_token) in cases {
        let (status, body) =
            sign_in(&app, &token, json!({"idp": "entra", "id_token": id_token})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        assert!(
            !body.to_string().contains("eyJ"),
            "{case}: the token is not echoed"
        );
    }
    assert!(
        app.store.all_users().await.unwrap().is_empty(),
        "nobody was created"
    );
    assert_eq!(
        mock.faults.calls(),
        0,
        "a refused token never reaches the IdP"
    );
}

#[tokio::test]
async fn an_id_token_with_a_groups_claim_of_names_needs_no_call_to_the_idp() {
    let (jwks_url, fetches) = jwt::serve_jwks(vec![jwt::jwk(jwt::idp_key())]).await;
    let mut idp = IdpConfig::new("keycloak", IdpKind::Keycloak);
    // Nothing listens here: the claim must be enough.
    idp.server_url = Some("http://127.0.0.1:9".into());
    idp.realm = Some("corp".into());
    idp.client_id = Some("gateway".into());
    idp.client_secret = Some("unused".into());
    idp.jwks_url = Some(jwks_url);
    idp.groups = vec!["LLM *".into()];
    let app = TestApp::spawn_with(move |c| c.idp.push(idp)).await;
    let token = app.new_token("gateway", TokenScope::Sso).await;
    let now = jwt::now();
    let claims = json!({
        "iss": "http://127.0.0.1:9/realms/corp", "aud": "gateway",
        "iat": now, "exp": now + 300, "sub": "kc-user-1",
        "preferred_username": "dana@example.com", "email": "dana@example.com",
        "groups": ["/LLM Users", "/org/LLM Evals", "/Sales"],
    });
    for _ in 0..2 {
        let id_token = jwt::sign(jwt::idp_key(), &claims);
        let (status, body) = sign_in(
            &app,
            &token,
            json!({"idp": "keycloak", "id_token": id_token}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["teams"], json!(["LLM Evals", "LLM Users"]));
    }
    assert_eq!(
        teams_of(&app.store, "dana@example.com").await,
        ["LLM Evals", "LLM Users"]
    );
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the signing keys are cached"
    );
}

// ---- configuration reloads ----

/// The app as `scimsync serve` runs it, with a handle on its state so that the test
/// can reload the configuration the way SIGHUP does (`AppState::replace_config`).
struct ReloadableApp {
    base_url: String,
    state: scimsync::app::AppState,
    config: scimsync::config::Config,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn reloadable_app(idp: IdpConfig) -> ReloadableApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = scimsync::config::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("scimsync.db").display());
    config.server.state_directory = Some(dir.path().to_owned());
    config.idp.push(idp);
    let app = scimsync::app::App::build(config.clone()).await.unwrap();
    let addr = app.local_addr().unwrap();
    let state = app.state().clone();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = app
            .serve(async {
                let _ = stop.await;
            })
            .await;
    });
    ReloadableApp {
        base_url: format!("http://{addr}"),
        state,
        config,
        _dir: dir,
        _shutdown: shutdown,
    }
}

async fn sign_in_at(base_url: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base_url}/v1/sso/sign-in"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A Keycloak whose tokens carry group names, so that a sign-in needs only the JWKS.
fn keycloak_with_jwks(jwks_url: &str) -> IdpConfig {
    let mut idp = IdpConfig::new("keycloak", IdpKind::Keycloak);
    idp.server_url = Some("http://127.0.0.1:9".into());
    idp.realm = Some("corp".into());
    idp.client_id = Some("gateway".into());
    idp.client_secret = Some("unused".into());
    idp.jwks_url = Some(jwks_url.to_owned());
    idp.groups = vec!["LLM *".into()];
    idp
}

fn keycloak_token(key: &jwt::TestKey) -> String {
    let now = jwt::now();
    jwt::sign(
        key,
        &json!({
            "iss": "http://127.0.0.1:9/realms/corp", "aud": "gateway",
            "iat": now, "exp": now + 300, "sub": "kc-user-1",
            "preferred_username": "dana@example.com", "groups": ["/LLM Users"],
        }),
    )
}

#[tokio::test]
async fn after_a_key_rotation_and_a_reload_the_new_signing_key_is_fetched() {
    let jwks = jwt::serve_rotating_jwks(vec![jwt::jwk(jwt::idp_key())]).await;
    let app = reloadable_app(keycloak_with_jwks(&jwks.url)).await;
    let token = app
        .state
        .store
        .issue_token("gateway", TokenScope::Sso, "default")
        .await
        .unwrap()
        .expose()
        .to_owned();
    let sign_in = |id_token: String| {
        sign_in_at(
            &app.base_url,
            &token,
            json!({"idp": "keycloak", "id_token": id_token}),
        )
    };

    let (status, body) = sign_in(keycloak_token(jwt::idp_key())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(jwks.fetches(), 1);

    // The IdP rotates its key. Right after a fetch, an unknown key id is not worth
    // another one (forged ids must not make us hammer the IdP)...
    jwks.publish(vec![jwt::jwk(jwt::rotated_idp_key())]);
    let (status, body) = sign_in(keycloak_token(jwt::rotated_idp_key())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(jwks.fetches(), 1);

    // ...but the operator's reload (SIGHUP) drops what was cached before it.
    app.state.replace_config(app.config.clone());
    let (status, body) = sign_in(keycloak_token(jwt::rotated_idp_key())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(jwks.fetches(), 2, "the new key was fetched");

    // And the keys fetched after the reload are cached again.
    let (status, body) = sign_in(keycloak_token(jwt::rotated_idp_key())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(jwks.fetches(), 2);
    let (status, _) = sign_in(keycloak_token(jwt::idp_key())).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the retired key is no longer accepted"
    );
}

#[tokio::test]
async fn a_reload_that_moves_an_idps_jwks_stops_trusting_the_old_keys() {
    let old = jwt::serve_rotating_jwks(vec![jwt::jwk(jwt::idp_key())]).await;
    let new = jwt::serve_rotating_jwks(vec![jwt::jwk(jwt::rotated_idp_key())]).await;
    let app = reloadable_app(keycloak_with_jwks(&old.url)).await;
    let token = app
        .state
        .store
        .issue_token("gateway", TokenScope::Sso, "default")
        .await
        .unwrap()
        .expose()
        .to_owned();
    let body = |key| json!({"idp": "keycloak", "id_token": keycloak_token(key)});
    let (status, answer) = sign_in_at(&app.base_url, &token, body(jwt::idp_key())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let mut moved = app.config.clone();
    moved.idp[0].jwks_url = Some(new.url.clone());
    app.state.replace_config(moved);
    let (status, answer) = sign_in_at(&app.base_url, &token, body(jwt::idp_key())).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a key only the old JWKS published: {answer}"
    );
    let (status, answer) = sign_in_at(&app.base_url, &token, body(jwt::rotated_idp_key())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((old.fetches(), new.fetches()), (1, 1));
}

#[tokio::test]
async fn after_a_reload_sign_ins_reach_the_idp_as_the_new_configuration_says() {
    let before = GraphMock::start().await;
    let after = GraphMock::start().await;
    after.remove_member("g-users", "u-alice");
    let app = reloadable_app(before.config("entra", &["LLM *"])).await;
    let token = app
        .state
        .store
        .issue_token("gateway", TokenScope::Sso, "default")
        .await
        .unwrap()
        .expose()
        .to_owned();
    let alice = json!({"idp": "entra", "user": "alice@contoso.com"});
    let (status, body) = sign_in_at(&app.base_url, &token, alice.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["teams"], json!(["LLM Admins", "LLM Users"]));

    // The tenant moves (new API base, new credentials): the connector built before the
    // reload, with its cached access token, must not answer for it.
    let mut moved = app.config.clone();
    moved.idp[0] = after.config("entra", &["LLM *"]);
    app.state.replace_config(moved);
    let calls_before = before.faults.calls();
    let (status, body) = sign_in_at(&app.base_url, &token, alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["teams"], json!(["LLM Admins"]));
    assert_eq!(
        before.faults.calls(),
        calls_before,
        "the old tenant is not asked"
    );
    assert!(after.faults.calls() > 0);
}
