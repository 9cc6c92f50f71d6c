//! GET /v1/whoami as an nginx `auth_request` and Envoy `ext_authz` HTTP service: the
//! identity in response headers, a bare status on refusal, any method and any path
//! under /v1/whoami (Envoy appends the original path to its path_prefix).

use crate::common::TestApp;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn whoami_answers_an_auth_subrequest_with_identity_headers() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("grace@example.com").await;
    let team = app.seed_team("Gateway Users").await;
    app.seed_member(team.id, user.id).await;
    let (key_id, secret) = app.new_api_key(user.id, Some(team.id)).await;

    let response = app
        .http
        .get(app.url("/v1/whoami"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let h = response.headers();
    assert_eq!(h["x-scimsync-user-id"], user.id.to_string().as_str());
    assert_eq!(h["x-scimsync-user-name"], "grace@example.com");
    assert_eq!(h["x-scimsync-team-id"], team.id.to_string().as_str());
    assert_eq!(h["x-scimsync-role"], "viewer");
    assert_eq!(h["x-scimsync-key-id"], key_id.to_string().as_str());
}

#[tokio::test]
async fn whoami_under_an_envoy_path_prefix_takes_the_original_method_and_path() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("zoë").await;
    let (_, secret) = app.new_api_key(user.id, None).await;
    let url = app.url("/v1/whoami/v1/chat/completions");

    let response = app
        .http
        .request(Method::POST, &url)
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-scimsync-user-name"], "zo%C3%AB");
    assert_eq!(response.headers()["x-scimsync-team-id"], "");

    let refused = app.http.request(Method::POST, &url).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get("x-scimsync-user-id").is_none());
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("sk-not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}
