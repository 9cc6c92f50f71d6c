//! The admin console over plain HTTP: response headers, cookie flags, CSRF, sign-in
//! refusals, sessions and auditing. The browser flows are in ui_browser.rs.

use crate::common::TestApp;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use scimsync::domain::TokenScope;
use sqlx::AnyPool;

/// A client that keeps no cookies and follows no redirects: each test sends exactly
/// the cookies it means to.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The `name=value` part of the Set-Cookie for `name`, and the whole header.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            (
                v.split(';').next().unwrap_or_default().to_owned(),
                v.to_owned(),
            )
        })
}

/// The value of the first hidden `csrf` field in a page.
pub fn csrf_in(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html
        .find(marker)
        .expect("the page has a form with a CSRF token")
        + marker.len();
    html[start..].split('"').next().expect("a value").to_owned()
}

/// An open console session: its cookie header and a CSRF token for its forms.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// Posts the sign-in form with `token`; the response (a redirect on success).
pub async fn post_sign_in(app: &TestApp, token: &str) -> reqwest::Response {
    let http = client();
    let page = http
        .get(app.url("/ui/sign-in"))
        .send()
        .await
        .expect("sign-in page");
    let (nonce, _) = set_cookie(&page, "scimsync_ui_sign_in").expect("sign-in cookie");
    let csrf = csrf_in(&page.text().await.expect("page"));
    http.post(app.url("/ui/sign-in"))
        .header("cookie", nonce)
        .form(&[("token", token), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sign-in posted")
}

/// Signs in with a new admin token named `name`.
pub async fn sign_in(app: &TestApp, name: &str) -> Session {
    let token = app.new_token(name, TokenScope::Admin).await;
    let response = post_sign_in(app, &token).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (cookie, _) = set_cookie(&response, "scimsync_ui").expect("session cookie");
    let overview = client()
        .get(app.url("/ui"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("overview");
    assert_eq!(overview.status(), StatusCode::OK);
    let csrf = csrf_in(&overview.text().await.expect("page"));
    Session { cookie, csrf }
}

/// The app's database, for what a test must change behind the daemon's back.
pub async fn database(app: &TestApp) -> AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&app.config.database.url)
        .await
        .expect("database opens")
}

/// Makes every console session look idle for `minutes`.
pub async fn age_sessions(app: &TestApp, minutes: i64) {
    let then = scimsync::store::now() - chrono::Duration::minutes(minutes);
    sqlx::query("UPDATE ui_sessions SET last_seen = $1")
        .bind(scimsync::store::format_ts(then))
        .execute(&database(app).await)
        .await
        .expect("sessions aged");
}

#[tokio::test]
async fn ui_pages_carry_a_strict_csp_and_cookies_are_httponly_and_samesite_strict() {
    let app = TestApp::spawn().await;
    let page = client()
        .get(app.url("/ui/sign-in"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.expect("page");
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains("style="), "no inline style");
    assert!(
        html.contains("<main") && html.contains("<header"),
        "landmarks"
    );
    assert!(
        html.contains(r#"<label for="token">"#),
        "the field is labelled"
    );

    let token = app.new_token("admin", TokenScope::Admin).await;
    let response = post_sign_in(&app, &token).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui");
    let (_, header) = set_cookie(&response, "scimsync_ui").expect("session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(header.contains(flag), "{header} lacks {flag}");
    }
    assert!(
        !header.contains("Secure"),
        "plain http without an https public_url: {header}"
    );
    assert!(!header.contains(&token), "the token is not the session id");
}

#[tokio::test]
async fn ui_session_cookie_is_secure_when_the_public_url_is_https() {
    let app = TestApp::spawn_with(|c| {
        c.server.public_url = Some("https://scim.example.com".into());
    })
    .await;
    let token = app.new_token("admin", TokenScope::Admin).await;
    let response = post_sign_in(&app, &token).await;
    let (_, header) = set_cookie(&response, "scimsync_ui").expect("session cookie");
    assert!(header.contains("; Secure"), "{header}");
}

#[tokio::test]
async fn ui_sign_in_refuses_wrong_unknown_and_non_admin_tokens_with_a_reason() {
    let app = TestApp::spawn().await;
    let cases = [
        ("not a token".to_owned(), "not a scimsync token"),
        (
            format!(
                "{}0000000000000000000000000000000000000000",
                scimsync::keys::TOKEN_PREFIX
            ),
            "unknown or revoked",
        ),
        (app.scim_token.clone(), "scope scim"),
        (app.new_token("hook", TokenScope::Sso).await, "scope sso"),
    ];
    for (token, reason) in cases {
        let response = post_sign_in(&app, &token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{reason}");
        assert!(set_cookie(&response, "scimsync_ui").is_none());
        let html = response.text().await.expect("page");
        assert!(html.contains(reason), "{reason}: {html}");
    }
}

#[tokio::test]
async fn ui_a_sign_in_without_its_form_nonce_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.new_token("admin", TokenScope::Admin).await;
    let response = client()
        .post(app.url("/ui/sign-in"))
        .form(&[("token", token.as_str()), ("csrf", "forged")])
        .send()
        .await
        .expect("posted");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&response, "scimsync_ui").is_none());
}

#[tokio::test]
async fn ui_pages_without_a_session_go_to_the_sign_in_page() {
    let app = TestApp::spawn().await;
    for path in ["/ui", "/ui/users", "/ui/keys", "/ui/audit", "/ui/scim"] {
        let response = client().get(app.url(path)).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[LOCATION], "/ui/sign-in", "{path}");
    }
    let forged = client()
        .get(app.url("/ui"))
        .header("cookie", format!("scimsync_ui={}", "a".repeat(64)))
        .send()
        .await
        .expect("get");
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn ui_a_form_post_without_the_csrf_token_is_refused() {
    let app = TestApp::spawn().await;
    let session = sign_in(&app, "admin").await;
    for form in [
        vec![("name", "sneaky"), ("idp", "default")],
        vec![("name", "sneaky"), ("idp", "default"), ("csrf", "0123")],
    ] {
        let response = client()
            .post(app.url("/ui/scim/tokens"))
            .header("cookie", &session.cookie)
            .form(&form)
            .send()
            .await
            .expect("posted");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response
            .text()
            .await
            .expect("page")
            .contains("security token"));
    }
    let tokens = app.store.list_tokens().await.expect("tokens");
    assert!(tokens.iter().all(|t| t.name != "sneaky"), "nothing created");

    let response = client()
        .post(app.url("/ui/scim/tokens"))
        .header("cookie", &session.cookie)
        .form(&[
            ("name", "entra"),
            ("idp", "default"),
            ("csrf", session.csrf.as_str()),
        ])
        .send()
        .await
        .expect("posted");
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.expect("page");
    assert!(html.contains("It is not shown again"), "{html}");
    // Another session's CSRF token does not fit this one.
    let other = sign_in(&app, "admin2").await;
    let response = client()
        .post(app.url("/ui/sign-out"))
        .header("cookie", &session.cookie)
        .form(&[("csrf", other.csrf.as_str())])
        .send()
        .await
        .expect("posted");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ui_actions_are_audited_with_the_session_as_actor_and_the_token_never_logged() {
    let app = TestApp::spawn().await;
    let session = sign_in(&app, "ops").await;
    let created = client()
        .post(app.url("/ui/scim/tokens"))
        .header("cookie", &session.cookie)
        .form(&[
            ("name", "okta"),
            ("idp", "default"),
            ("csrf", session.csrf.as_str()),
        ])
        .send()
        .await
        .expect("posted");
    assert_eq!(created.status(), StatusCode::OK);
    let revoked = client()
        .post(app.url("/ui/scim/tokens/revoke"))
        .header("cookie", &session.cookie)
        .form(&[("name", "okta"), ("csrf", session.csrf.as_str())])
        .send()
        .await
        .expect("posted");
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let audit = app.store.audit_since(None).await.expect("audit");
    let ours: Vec<(&str, &str, &str)> = audit
        .iter()
        .filter(|e| e.trigger == "ui")
        .map(|e| (e.actor.as_str(), e.operation.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        ours,
        [
            ("ui:ops", "ui_sign_in", "token:ops"),
            ("ui:ops", "create_token", "token:okta"),
            ("ui:ops", "revoke_token", "token:okta"),
        ]
    );
    let export = client()
        .get(app.url("/ui/audit/export?trigger=ui"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .expect("export");
    assert_eq!(export.status(), StatusCode::OK);
    assert_eq!(export.headers()["content-type"], "application/json");
    let entries: serde_json::Value = export.json().await.expect("json");
    assert_eq!(entries.as_array().map(Vec::len), Some(3));
    assert_eq!(entries[0]["operation"], "revoke_token", "newest first");
}

#[tokio::test]
async fn ui_an_idle_session_expires_and_a_revoked_admin_token_ends_its_sessions() {
    let app = TestApp::spawn_with(|c| c.ui.session_idle_minutes = 5).await;
    let session = sign_in(&app, "admin").await;
    age_sessions(&app, 6).await;
    let response = client()
        .get(app.url("/ui"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/sign-in?reason=expired");

    let session = sign_in(&app, "other").await;
    assert!(app.store.revoke_token("other").await.expect("revoked"));
    let response = client()
        .get(app.url("/ui"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/sign-in");
}

#[tokio::test]
async fn ui_sign_out_ends_the_session_and_clears_the_cookie() {
    let app = TestApp::spawn().await;
    let session = sign_in(&app, "admin").await;
    let response = client()
        .post(app.url("/ui/sign-out"))
        .header("cookie", &session.cookie)
        .form(&[("csrf", session.csrf.as_str())])
        .send()
        .await
        .expect("posted");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (cleared, header) = set_cookie(&response, "scimsync_ui").expect("cleared");
    assert_eq!(cleared, "scimsync_ui=");
    assert!(header.contains("Max-Age=0"));
    let again = client()
        .get(app.url("/ui"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(
        again.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
}

#[tokio::test]
async fn ui_is_served_on_loopback_by_default_and_elsewhere_only_when_enabled() {
    let public =
        TestApp::spawn_with(|c| c.server.listen = "0.0.0.0:0".parse().expect("addr")).await;
    let response = client()
        .get(public.url("/ui/sign-in"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let enabled = TestApp::spawn_with(|c| {
        c.server.listen = "0.0.0.0:0".parse().expect("addr");
        c.ui.enabled = Some(true);
    })
    .await;
    let response = client()
        .get(enabled.url("/ui/sign-in"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);

    let disabled = TestApp::spawn_with(|c| c.ui.enabled = Some(false)).await;
    let response = client()
        .get(disabled.url("/ui/sign-in"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// The figures in BENCHMARKS.md ("Admin console"): each console page's time with
/// 100,000 users, measured over loopback (which adds well under a millisecond).
/// Not a timed test: run it with
/// `cargo test --release --test it ui_http::ui_page_times -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn ui_page_times_with_100000_users() {
    let app = TestApp::spawn().await;
    let started = std::time::Instant::now();
    crate::ui_browser::seed_users(&app, 100_000).await;
    println!("seeded 100,000 users in {:?}", started.elapsed());
    let someone = app
        .store
        .resolve_user("user054321@example.com")
        .await
        .expect("read")
        .expect("seeded");
    app.new_api_key(someone.id, None).await;
    let team = app
        .store
        .resolve_team("LLM Research")
        .await
        .expect("read")
        .expect("seeded");
    let session = sign_in(&app, "bench").await;
    if app.config.database.url.starts_with("postgres") {
        measure(
            &app,
            &session,
            &pages(&someone, &team),
            "PostgreSQL, straight after the load",
        )
        .await;
        // Index-only scans need the visibility map, which VACUUM (autovacuum, after a
        // load this size) sets; until then a deep page reads the rows it skips.
        let db = database(&app).await;
        for table in ["users", "memberships", "audit_log", "teams"] {
            sqlx::query(&format!("VACUUM ANALYZE {table}"))
                .execute(&db)
                .await
                .expect("vacuumed");
        }
        measure(
            &app,
            &session,
            &pages(&someone, &team),
            "PostgreSQL, after VACUUM ANALYZE",
        )
        .await;
    } else {
        measure(&app, &session, &pages(&someone, &team), "SQLite").await;
    }
}

fn pages(someone: &scimsync::domain::User, team: &scimsync::domain::Team) -> Vec<String> {
    vec![
        "/ui".to_owned(),
        "/ui/users".to_owned(),
        "/ui/users?offset=50000".to_owned(),
        "/ui/users?offset=99950".to_owned(),
        "/ui/users?q=user09999".to_owned(),
        "/ui/users?q=nobody".to_owned(),
        format!("/ui/users/{}", someone.id),
        "/ui/teams".to_owned(),
        format!("/ui/teams/{}", team.id),
        "/ui/keys".to_owned(),
        "/ui/keys?q=user0543".to_owned(),
        "/ui/audit".to_owned(),
        format!("/ui/audit?target=user:{}", someone.id),
        "/ui/audit?actor=nobody".to_owned(),
    ]
}

async fn measure(app: &TestApp, session: &Session, pages: &[String], what: &str) {
    println!("\n{what}\n\n| page | median ms | max ms |");
    println!("|---|---|---|");
    for page in pages {
        let mut times = Vec::new();
        for _ in 0..21 {
            // A commit first, so that no answer comes from the store's read cache
            // (kept only until the next commit): every figure is a cold read.
            app.store.touch_token("bench").await.expect("a commit");
            let at = std::time::Instant::now();
            let response = client()
                .get(app.url(page))
                .header("cookie", &session.cookie)
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), StatusCode::OK, "{page}");
            response.bytes().await.expect("body");
            times.push(at.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| `{page}` | {:.1} | {:.1} |",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

#[tokio::test]
async fn ui_overview_shows_each_targets_queue_and_how_long_its_oldest_change_has_waited() {
    // A gateway nobody listens at: what is committed waits in its queue.
    let app = TestApp::spawn_with(|config| {
        let mut target = scimsync::config::TargetConfig::new(
            "gateway-down",
            scimsync::config::TargetKind::Litellm,
            "http://127.0.0.1:1",
        );
        target.master_key = Some("sk-overview-test".into());
        target.max_retries = Some(0);
        config.target.push(target);
    })
    .await;
    let (status, body) = app
        .scim_json(
            reqwest::Method::POST,
            "/Users",
            Some(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "queued@example.com",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let session = sign_in(&app, "admin").await;
    let page = client()
        .get(app.url("/ui"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .expect("overview")
        .text()
        .await
        .expect("page");
    let row = page
        .split("<tr>")
        .find(|row| row.contains("gateway-down"))
        .unwrap_or_else(|| panic!("a row for the target: {page}"));
    assert!(row.contains("<code>http://127.0.0.1:1</code>"), "{row}");
    let waiting: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .map(|cell| cell.split("</td>").next().unwrap_or(""))
        .collect();
    assert!(
        waiting[3].parse::<u32>().is_ok_and(|depth| depth >= 1),
        "the user's creation waits: {row}"
    );
    assert_ne!(
        waiting[4], "—",
        "the oldest change has a waiting time: {row}"
    );
    assert!(
        !page.contains("sk-overview-test"),
        "the master key never reaches a page"
    );
}
