//! The admin console in a real browser: headless Chromium from Debian's packages
//! (`chromium`, `chromium-driver`, which .ci/run installs), driven over WebDriver
//! against the daemon on port 0. chromedriver is started by each test on a free port.
//! Without chromedriver on the PATH these tests say so and pass without running.
//!
//! Each test saves screenshots under target/ui-screenshots/ at 1280 px and at a phone's
//! width (390 px); README.md shows some of them (copied into docs/ui/).

use crate::common::TestApp;
use crate::ui_http::{age_sessions, database};
use fantoccini::{Client, ClientBuilder, Locator};
use scimsync::domain::TokenScope;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WIDE: (u32, u32) = (1280, 900);

/// The page's width, the window's, and the elements that reach past the window's
/// right edge without a scrolling box of their own to hold them (what widens a page).
const OVERFLOW_SCRIPT: &str = "
    const root = document.documentElement;
    const edge = root.clientWidth + 0.5;
    const held = (el) => {
        const escapes = ['absolute', 'fixed'].includes(getComputedStyle(el).position);
        for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
            const style = getComputedStyle(up);
            if (escapes && style.position === 'static') continue;
            if (style.overflowX !== 'visible') return true;
        }
        return false;
    };
    const out = [];
    for (const el of document.body.querySelectorAll('*')) {
        if (el.getBoundingClientRect().right > edge && !held(el)) {
            out.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : ''));
        }
    }
    return [root.scrollWidth, root.clientWidth, out.slice(0, 5).join(', ')];";
const PHONE: (u32, u32) = (390, 844);
/// The tallest phone screenshot: a long page is cut here.
const PHONE_MAX_HEIGHT: u32 = 2_400;

/// chromedriver and a browser session; both end when this is dropped.
struct Browser {
    client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join("chromedriver"))
        .find(|path| path.is_file())
}

impl Browser {
    /// `None` (after saying why) when chromedriver is not installed.
    async fn start() -> Option<Browser> {
        let Some(driver_path) = chromedriver() else {
            eprintln!(
                "SKIPPED: chromedriver is not installed (apt-get install chromium chromium-driver); \
                 the console's browser tests did not run"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let mut capabilities = serde_json::Map::new();
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-gpu".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={},{}", WIDE.0, WIDE.1),
        ];
        capabilities.insert("goog:chromeOptions".into(), json!({ "args": args }));
        let mut browser = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    browser = Some(client);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let client = browser.expect("chromedriver accepts a session");
        Some(Browser { client, driver })
    }

    async fn goto(&self, app: &TestApp, path: &str) {
        self.client.goto(&app.url(path)).await.expect("navigated");
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("cleared");
        field.send_keys(text).await.expect("typed");
    }

    /// Clicks a link or a button that leads to another address, and waits until the
    /// browser is there: reading the page sooner could read the one being left.
    async fn click(&self, css: &str) {
        let before = self.client.current_url().await.expect("url");
        self.find(css).await.click().await.expect("clicked");
        for _ in 0..200 {
            if self.client.current_url().await.expect("url") != before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {css} on {before} led nowhere");
    }

    /// Waits until the browser is at `expected` (a path and query).
    async fn wait_for_path(&self, expected: &str) {
        for _ in 0..200 {
            if self.path().await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(self.path().await, expected);
    }

    /// Saves the page at 1280 px and at a phone's width, and checks that at neither
    /// is the page wider than the window: what is wide (a table, a plan) scrolls
    /// inside its own box.
    async fn screenshots(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        for (suffix, (width, height)) in [("1280", WIDE), ("phone", PHONE)] {
            self.client
                .set_window_size(width, height)
                .await
                .expect("resized");
            if suffix == "phone" {
                // The whole page (up to a few screens), to see all of it as a phone
                // lays it out: the window grows to the page's height.
                let sizes = self
                    .client
                    .execute(
                        "return [document.documentElement.scrollHeight, \
                                 window.outerHeight - window.innerHeight];",
                        vec![],
                    )
                    .await
                    .expect("measured");
                let page = sizes[0].as_u64().unwrap_or(0) as u32;
                let chrome = sizes[1].as_u64().unwrap_or(0) as u32;
                self.client
                    .set_window_size(width, (page + chrome).clamp(height, PHONE_MAX_HEIGHT))
                    .await
                    .expect("resized");
            }
            let png = self.client.screenshot().await.expect("screenshot");
            std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).expect("saved");
            let measured = self
                .client
                .execute(OVERFLOW_SCRIPT, vec![])
                .await
                .expect("measured");
            let (page, window) = (measured[0].as_u64(), measured[1].as_u64());
            assert!(
                page <= window,
                "{name} at {suffix}: the page is {page:?} px wide in a {window:?} px window; \
                 sticking out: {}",
                measured[2]
            );
        }
        self.client
            .set_window_size(WIDE.0, WIDE.1)
            .await
            .expect("resized");
    }

    async fn sign_in(&self, app: &TestApp, token: &str) {
        self.goto(app, "/ui/sign-in").await;
        self.fill("#token", token).await;
        // A refusal answers at the same address, so there is no move to wait for:
        // callers wait for what the answer shows.
        self.find("form button[type=submit]")
            .await
            .click()
            .await
            .expect("clicked");
    }
}

#[tokio::test]
async fn ui_browser_signs_in_with_an_admin_token_refuses_others_and_signs_out() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let admin = app.new_token("admin", TokenScope::Admin).await;
    browser.goto(&app, "/ui").await;
    assert_eq!(
        browser.path().await,
        "/ui/sign-in",
        "no session: sign in first"
    );
    browser.screenshots("sign-in").await;

    browser.sign_in(&app, "tok_wrong").await;
    assert!(browser
        .text("#sign-in-error")
        .await
        .contains("not a scimsync token"));
    browser.sign_in(&app, &app.scim_token).await;
    let refusal = browser.text("#sign-in-error").await;
    assert!(
        refusal.contains("scope scim") && refusal.contains("scope admin"),
        "{refusal}"
    );
    browser.screenshots("sign-in-refused").await;

    browser.sign_in(&app, &admin).await;
    browser.wait_for_path("/ui").await;
    assert!(browser.text("form.sign-out").await.contains("admin"));
    assert!(browser.text("main h1").await.contains("Overview"));
    browser.screenshots("overview").await;

    browser.click("form.sign-out button").await;
    browser.wait_for_path("/ui/sign-in?reason=signed-out").await;
    assert!(browser.text("main").await.contains("You are signed out"));
    browser.goto(&app, "/ui/users").await;
    browser.wait_for_path("/ui/sign-in").await;
}

#[tokio::test]
async fn ui_browser_creates_a_scim_token_that_works_and_revokes_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let admin = app.new_token("admin", TokenScope::Admin).await;
    browser.sign_in(&app, &admin).await;
    browser.wait_for_path("/ui").await;
    browser.click("nav a[href='/ui/scim']").await;
    assert!(browser
        .find("#tenant-url")
        .await
        .prop("value")
        .await
        .expect("value")
        .unwrap_or_default()
        .ends_with("/scim/v2"));
    browser.fill("#token-name", "entra-prod").await;
    browser.click("form.stacked button[type=submit]").await;
    let field = browser.find("#new-token").await;
    let token = field
        .prop("value")
        .await
        .expect("value")
        .unwrap_or_default();
    assert!(token.starts_with(scimsync::keys::TOKEN_PREFIX), "{token}");
    let copy = browser.find("button[data-copy='new-token']").await;
    assert!(
        copy.is_displayed().await.expect("shown"),
        "the script shows the copy button"
    );
    browser.screenshots("scim-token-created").await;

    let users = |token: String| {
        let http = reqwest::Client::new();
        let url = app.url("/scim/v2/Users");
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("sent")
                .status()
        }
    };
    assert_eq!(users(token.clone()).await, reqwest::StatusCode::OK);

    browser
        .click("button[aria-label='Revoke token entra-prod']")
        .await;
    assert!(browser
        .text("p.notice")
        .await
        .contains("\"entra-prod\" is revoked"));
    browser.screenshots("scim-setup").await;
    assert_eq!(users(token).await, reqwest::StatusCode::UNAUTHORIZED);
}

/// 100,000 users, as a first pull applies them (through the engine).
pub async fn seed_users(app: &TestApp, count: usize) {
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        users.push(json!({"external_id": format!("u-{i}"),
            "user_name": format!("user{i:06}@example.com"),
            "display_name": format!("User {i}")}));
    }
    let members: Vec<String> = (0..50).map(|i| format!("u-{i}")).collect();
    let snapshot = json!({"idp": "entra", "complete": true, "users": users,
        "groups": [{"external_id": "g-1", "display_name": "LLM Research", "members": members}]});
    let desired = scimsync::reconcile::snapshot::Snapshot::parse(&snapshot.to_string())
        .expect("snapshot")
        .into_desired();
    let policy = scimsync::reconcile::Policy::default();
    let actor = crate::common::operator();
    scimsync::reconcile::Engine::new(app.store.clone())
        .apply(scimsync::reconcile::Request::new(&desired, &policy, &actor))
        .await
        .expect("seeded");
}

#[tokio::test]
async fn ui_browser_searches_and_pages_among_100000_users() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    seed_users(&app, 100_000).await;
    let admin = app.new_token("admin", TokenScope::Admin).await;
    browser.sign_in(&app, &admin).await;
    browser.wait_for_path("/ui").await;
    browser.click("nav a[href='/ui/users']").await;
    assert!(browser
        .text("nav.pager span")
        .await
        .contains("1–50 of 100000"));
    browser.screenshots("users").await;
    browser.click("a[rel=next]").await;
    assert!(browser
        .text("nav.pager span")
        .await
        .contains("51–100 of 100000"));

    browser.fill("#q", "user09999").await;
    browser.click("form.search button").await;
    assert!(browser.text("nav.pager span").await.contains("of 10"));
    let first = browser.text("tbody tr td a").await;
    assert_eq!(first, "user099990@example.com");
    browser.goto(&app, "/ui/users?q=user00001").await;
    browser.click("a[href^='/ui/users/']").await;
    assert_eq!(browser.text("main h1").await, "user000010@example.com");
    assert!(browser.text("main").await.contains("LLM Research"));
    browser.screenshots("user").await;
    browser.click("main ul a[href^='/ui/teams/']").await;
    assert_eq!(browser.text("main h1").await, "LLM Research");
    assert!(browser.text("main").await.contains("Showing 1–50 of 50"));
    browser.screenshots("team").await;
}

#[tokio::test]
async fn ui_browser_revokes_a_key_and_the_audit_log_names_the_admin() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let alice = app.seed_user("alice@example.com").await;
    let team = app.seed_team("LLM Evals").await;
    app.seed_member(team.id, alice.id).await;
    let (key_id, secret) = app.new_api_key(alice.id, Some(team.id)).await;
    let (other_key, _) = app.new_api_key(alice.id, None).await;
    let admin = app.new_token("admin", TokenScope::Admin).await;
    browser.sign_in(&app, &admin).await;
    browser.wait_for_path("/ui").await;
    browser.click("nav a[href='/ui/keys']").await;
    assert!(browser.text("main table").await.contains("LLM Evals"));
    browser.screenshots("keys").await;

    let prefix = scimsync::keys::visible_prefix(&secret);
    browser
        .click(&format!("button[aria-label='Revoke key {prefix}']"))
        .await;
    assert!(browser.text("p.notice").await.contains("is revoked"));
    let left: Vec<_> = app
        .store
        .list_keys(Some(alice.id))
        .await
        .expect("keys")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(left, [other_key], "only {key_id} was revoked");

    browser.click("nav a[href='/ui/audit']").await;
    browser.fill("#actor", "ui:admin").await;
    browser.click("form.filters button").await;
    let log = browser.text("table.audit").await;
    assert!(
        log.contains("revoke_key") && log.contains(&format!("key:{key_id}")),
        "{log}"
    );
    browser.screenshots("audit").await;

    // From a user's page, the revocation returns to it.
    browser.goto(&app, &format!("/ui/users/{}", alice.id)).await;
    browser.click("button[aria-label^='Revoke key']").await;
    assert!(browser
        .path()
        .await
        .starts_with(&format!("/ui/users/{}?revoked=", alice.id)));
    assert!(browser.text("p.notice").await.contains("is revoked"));
    assert!(browser.text("main").await.contains("No keys."));
    assert!(app
        .store
        .list_keys(Some(alice.id))
        .await
        .expect("keys")
        .is_empty());
}

#[tokio::test]
async fn ui_browser_an_idle_session_expires() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn_with(|c| c.ui.session_idle_minutes = 30).await;
    let admin = app.new_token("admin", TokenScope::Admin).await;
    browser.sign_in(&app, &admin).await;
    browser.wait_for_path("/ui").await;
    age_sessions(&app, 31).await;
    browser.goto(&app, "/ui/keys").await;
    browser.wait_for_path("/ui/sign-in?reason=expired").await;
    assert!(browser.text("p.notice").await.contains("session expired"));
    browser.screenshots("session-expired").await;
    let left: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM ui_sessions")
            .fetch_one(&database(&app).await)
            .await
            .expect("count"),
        "n",
    );
    assert_eq!(left, 0, "the expired session is removed");
}

#[tokio::test]
async fn ui_browser_syncs_an_idp_now_showing_the_plan_first_and_plans_a_sign_in() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let okta = crate::idp_mocks::okta::OktaMock::start().await;
    let mut idp = okta.ssws_config("okta", &["LLM *"]);
    // Scheduled, but not to run during the test: the overview shows the next run.
    idp.schedule = Some("0 0 3 1 1 *".into());
    let app = TestApp::spawn_with(move |c| c.idp = vec![idp]).await;
    let admin = app.new_token("admin", TokenScope::Admin).await;
    browser.sign_in(&app, &admin).await;
    browser.wait_for_path("/ui").await;
    let card = browser.text("article.card").await;
    assert!(
        card.contains("pull") && card.contains("0 0 3 1 1 *"),
        "{card}"
    );

    browser.click("button[aria-label^='Sync okta now']").await;
    let plan = browser.text("pre.plan").await;
    assert!(plan.contains("alice@example.com"), "{plan}");
    assert!(
        app.store.all_users().await.expect("users").is_empty(),
        "the plan is only shown"
    );
    browser.screenshots("sync-plan").await;
    browser.click("main form button[type=submit]").await;
    assert!(browser
        .text("p.notice")
        .await
        .contains("operations applied"));
    let users = app.store.all_users().await.expect("users");
    assert_eq!(users.len(), 4, "alice, bob, carol and dave");
    let audit = app.store.audit_since(None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.operation == "create_user" && e.actor == "ui:admin" && e.trigger == "ui"),
        "applied as the console's admin"
    );

    browser.goto(&app, "/ui/users?q=alice").await;
    browser.click("tbody a[href^='/ui/users/']").await;
    browser.click("form.stacked button[type=submit]").await;
    let outcome = browser.text("main").await;
    assert!(
        outcome.contains("LLM Admins") && outcome.contains("Nothing was changed"),
        "{outcome}"
    );
    browser.screenshots("dry-run-sign-in").await;

    // A last sync on record, as the overview shows it.
    let started = chrono::Utc::now() - chrono::Duration::minutes(3);
    app.store
        .record_sync(
            "okta",
            started,
            true,
            &json!({"idp": "okta", "outcome": "success", "pull": "full", "duration_ms": 840,
                "users": 4, "groups": 2, "add": 0, "change": 1, "destroy": 0}),
            None,
        )
        .await
        .expect("recorded");
    browser.goto(&app, "/ui").await;
    assert!(browser.text("article.card").await.contains("success"));
    browser.screenshots("overview-idp").await;
}

#[tokio::test]
async fn ui_browser_approves_a_quarantined_plan_and_sees_its_removals_applied() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let q = crate::ui_plans::Quarantined::new("contoso").await;
    let app = &q.app;
    let admin = app.new_token("admin", TokenScope::Admin).await;
    browser.sign_in(app, &admin).await;
    browser.wait_for_path("/ui").await;
    let held = browser.text("section.held").await;
    assert!(
        held.contains(&format!("plan {} awaits a decision", q.plan)),
        "{held}"
    );
    browser.screenshots("overview-quarantined").await;

    browser.click("nav a[href='/ui/plans']").await;
    assert!(browser.text("nav a[href='/ui/plans']").await.contains('1'));
    let card = browser.text("article.card").await;
    assert!(
        card.contains("refusing to delete or deactivate")
            && card.contains("bob@contoso.com (deactivate)"),
        "{card}"
    );
    browser.screenshots("plans").await;

    browser
        .click(&format!("article.card h3 a[href='/ui/plans/{}']", q.plan))
        .await;
    let diff = browser.text("pre.plan").await;
    assert!(
        diff.contains("~ user bob@contoso.com (deactivate) [refused]"),
        "{diff}"
    );
    let colour = browser
        .find("pre.plan span.change")
        .await
        .css_value("color")
        .await
        .expect("colour");
    assert_ne!(colour, "rgba(27, 31, 36, 1)", "a change line is coloured");
    browser.screenshots("plan").await;

    assert!(q.active("bob@contoso.com").await);
    browser
        .click("section.decide form[action$='/approve'] button")
        .await;
    assert!(browser.text("p.notice").await.contains("is approved"));
    assert!(browser
        .text("main dl")
        .await
        .contains("approved by ui:admin"));
    assert!(
        browser
            .client
            .find_all(Locator::Css("section.decide"))
            .await
            .expect("searched")
            .is_empty(),
        "a decided plan has no buttons"
    );
    browser.screenshots("plan-approved").await;
    assert!(!q.active("bob@contoso.com").await, "the removal is applied");
    assert!(!browser.text("nav a[href='/ui/plans']").await.contains('1'));

    browser.click("main a[href='/ui/plans']").await;
    let decided = browser.text("table.plans").await;
    assert!(decided.contains("approved by ui:admin"), "{decided}");
    browser.screenshots("plans-decided").await;
}
