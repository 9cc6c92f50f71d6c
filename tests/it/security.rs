//! Nobody let in: revocation takes effect at once, secrets are kept only as hashes,
//! token scopes are enforced, and no secret ever appears in logs, errors or metrics.
//!
//! Code review note (not testable from outside): bearer tokens and API keys are looked
//! up by their SHA-256 hash and the stored hash is then compared with
//! `keys::hashes_match`, which uses `subtle::ConstantTimeEq`.

use crate::common;

use common::daemon::{run, scimsync, serve, stderr, stdout, write, Daemon};
use common::{TestApp, SCIM_JSON};
use reqwest::{Method, StatusCode};
use scimsync::domain::TokenScope;
use serde_json::{json, Value};
use std::path::Path;

async fn status_with(app: &TestApp, method: Method, path: &str, token: &str) -> StatusCode {
    app.http
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("content-type", SCIM_JSON)
        .body("{}")
        .send()
        .await
        .expect("sent")
        .status()
}

/// Runs the CLI against the app's database from another process, as an operator
/// would, without blocking the runtime the server runs on.
async fn operator(app: &TestApp, args: &[&str]) {
    let url = app.config.database.url.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("dir");
        run(scimsync(dir.path())
            .env("SCIMSYNC_DATABASE_URL", url)
            .args(&args))
    })
    .await
    .expect("CLI ran");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    for round in 0..5 {
        let name = format!("idp-{round}");
        let token = app.new_token(&name, TokenScope::Scim).await;
        assert_eq!(
            status_with(&app, Method::GET, "/scim/v2/Users", &token).await,
            StatusCode::OK
        );
        // Revoked by the operator's CLI, another process, as in production.
        operator(&app, &["token", "revoke", &name]).await;
        let response = app
            .http
            .get(app.url("/scim/v2/Users"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "round {round}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    // The other token is unaffected.
    assert_eq!(
        status_with(&app, Method::GET, "/scim/v2/Users", &app.scim_token).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_revoked_api_key_is_refused_on_the_very_next_whoami() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("keyholder@example.com").await;
    let (key_id, secret) = app.new_api_key(user.id, None).await;
    assert_eq!(app.whoami(&secret).await.0, StatusCode::OK);
    operator(&app, &["key", "revoke", &key_id.to_string()]).await;
    assert_eq!(app.whoami(&secret).await.0, StatusCode::UNAUTHORIZED);
}

/// Every byte the database holds, as text: the SQLite file and its WAL, or on
/// PostgreSQL every column of every row.
async fn everything_stored(app: &TestApp) -> String {
    if common::postgres_server().is_none() {
        let db = app.dir.path().join("scimsync.db");
        let mut bytes = std::fs::read(&db).expect("database file");
        for suffix in ["-wal", "-shm"] {
            let mut path = db.clone().into_os_string();
            path.push(suffix);
            if let Ok(more) = std::fs::read(&path) {
                bytes.extend(more);
            }
        }
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&app.config.database.url)
        .await
        .expect("connect");
    let mut out = String::new();
    for (table, columns) in [
        ("scim_tokens", "name, scope, hash"),
        ("api_keys", "id, name, prefix, hash"),
        ("deleted_api_keys", "id, name, prefix"),
        ("audit_log", "actor, operation, target, detail"),
    ] {
        let cols: Vec<&str> = columns.split(", ").collect();
        let select = cols
            .iter()
            .map(|c| format!("COALESCE(CAST({c} AS TEXT), '')"))
            .collect::<Vec<_>>()
            .join(" || ' ' || ");
        for row in sqlx::query(&format!("SELECT {select} FROM {table}"))
            .fetch_all(&pool)
            .await
            .expect("rows")
        {
            out.push_str(&row.get::<String, _>(0));
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn tokens_and_api_keys_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let user = app.seed_user("hashed@example.com").await;
    let token = app.new_token("hashed-token", TokenScope::Scim).await;
    let (_, key) = app.new_api_key(user.id, None).await;
    let (_, purged_key) = app.new_api_key(user.id, None).await;
    // Use them, so that last_used and the audit log are written too.
    assert_eq!(
        status_with(&app, Method::GET, "/scim/v2/Users", &token).await,
        StatusCode::OK
    );
    assert_eq!(app.whoami(&key).await.0, StatusCode::OK);
    // A deleted user's keys go to deleted_api_keys: without the secret or its hash.
    let (status, _) = app
        .scim_json(Method::DELETE, &format!("/Users/{}", user.id), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let stored = everything_stored(&app).await;
    assert!(stored.contains("hashed-token"), "the dump reads the store");
    for (what, secret) in [
        ("the SCIM token", token.as_str()),
        ("the initial token", app.scim_token.as_str()),
        ("an API key", key.as_str()),
        ("a purged API key", purged_key.as_str()),
    ] {
        // The random part alone must not be there either (e.g. stored without its prefix).
        let random = &secret[secret.len() - 24..];
        assert!(!stored.contains(random), "{what} is stored in clear");
    }
    // deleted_api_keys keeps no hash: the purged key's hash appears once at most (never in
    // the audit copy) — and since its row is gone from api_keys, not at all in live rows.
    let purged_hash = scimsync::keys::hash_secret(&purged_key);
    let (status, _) = app.whoami(&purged_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    if common::postgres_server().is_some() {
        assert!(
            !stored.contains(&purged_hash),
            "deleted_api_keys kept the hash"
        );
    }
}

#[tokio::test]
async fn sso_and_admin_tokens_cannot_call_scim_and_a_scim_token_cannot_sign_in() {
    let app = TestApp::spawn().await;
    let sso = app.new_token("hook", TokenScope::Sso).await;
    let admin = app.new_token("ops", TokenScope::Admin).await;
    let user = app.seed_user("someone@example.com").await;
    let (_, api_key) = app.new_api_key(user.id, None).await;

    for token in [&sso, &admin] {
        for (method, path) in [
            (Method::GET, "/scim/v2/Users".to_owned()),
            (Method::POST, "/scim/v2/Users".to_owned()),
            (Method::GET, "/scim/v2/Groups".to_owned()),
            (Method::DELETE, format!("/scim/v2/Users/{}", user.id)),
            (Method::POST, "/scim/v2/Bulk".to_owned()),
        ] {
            let status = status_with(&app, method.clone(), &path, token).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        }
    }
    // A gateway API key is not a bearer token for anything but whoami, and the reverse.
    assert_eq!(
        status_with(&app, Method::GET, "/scim/v2/Users", &api_key).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.whoami(&app.scim_token).await.0,
        StatusCode::UNAUTHORIZED
    );

    for token in [&app.scim_token, &admin] {
        let response = app
            .http
            .post(app.url("/v1/sso/sign-in"))
            .bearer_auth(token)
            .json(&json!({"idp": "entra", "user": "someone@example.com"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // The user is still there: nothing was done by the refused requests.
    let (status, _) = app
        .scim_json(Method::GET, &format!("/Users/{}", user.id), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_oversized_header_is_refused_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let huge = "a".repeat(1024 * 1024);
    let outcome = app
        .http
        .get(app.url("/scim/v2/Users"))
        .bearer_auth(&app.scim_token)
        .header("x-padding", &huge)
        .send()
        .await;
    // A closed connection (Err) is also a refusal.
    if let Ok(response) = outcome {
        assert!(
            response.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                || response.status() == StatusCode::BAD_REQUEST,
            "{}",
            response.status()
        );
    }
    let (status, _) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{sleep, timeout, Duration, Instant};

    let app = TestApp::spawn_with(|c| c.server.header_read_timeout_secs = 1).await;
    let mut slow = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connected");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: scimsync\r\n")
        .await
        .expect("request line sent");
    let started = Instant::now();
    // One more header byte every 200 ms, never finishing the head: without the
    // timeout this holds the connection for as long as the client likes.
    let trickle = async {
        for byte in b"X-Slowloris: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            sleep(Duration::from_millis(200)).await;
            let mut buf = [0u8; 512];
            match timeout(Duration::from_millis(1), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => break, // hyper may answer 408 before closing
                Err(_) => {}
            }
        }
    };
    timeout(Duration::from_secs(15), trickle)
        .await
        .expect("the connection was closed");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(900),
        "closed after {held:?}, before the timeout"
    );

    let (status, _) = app.scim_json(Method::GET, "/Users", None).await;
    assert_eq!(status, StatusCode::OK, "others are still served");
}

// ---------------------------------------------------------------------------
// No secret in logs, error bodies or metrics

fn cli(dir: &Path, args: &[&str]) -> String {
    let out = run(scimsync(dir)
        .env("SCIMSYNC_DATABASE_URL", db_url(dir))
        .args(args));
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out).trim().to_owned()
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("scimsync.db").display())
}

/// A stand-in IdP token endpoint that refuses every client, as a wrong secret would.
async fn refusing_token_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#;
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_trace_logs_error_bodies_or_metrics() {
    let dir = tempfile::tempdir().expect("dir");
    let idp = refusing_token_endpoint().await;
    let client_secret = "cs-Zq8vR2mN5pL7xW3kT9yB4hJ6";
    write(
        dir.path(),
        "config.toml",
        &format!(
            r#"
[[idp]]
name = "entra"
kind = "entra"
tenant_id = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "{client_secret}"
token_url = "{idp}/token"
api_base_url = "{idp}/v1.0"
groups = ["LLM *"]
max_retries = 0
request_timeout_secs = 2
"#
        ),
    );
    let scim = cli(dir.path(), &["token", "create", "--name", "idp"]);
    let sso = cli(
        dir.path(),
        &["token", "create", "--name", "hook", "--scope", "sso"],
    );
    let revoked = cli(dir.path(), &["token", "create", "--name", "old"]);
    cli(dir.path(), &["token", "revoke", "old"]);
    let listing = cli(dir.path(), &["token", "list"]);

    let mut cmd = serve(dir.path());
    cmd.env("SCIMSYNC_DATABASE_URL", db_url(dir.path()))
        .env("SCIMSYNC_CONFIG", dir.path().join("config.toml"))
        .env("RUST_LOG", "trace");
    let daemon = Daemon::start(cmd);
    let http = reqwest::Client::new();
    let mut bodies = Vec::new();
    let send = |request: reqwest::RequestBuilder| {
        let request = request.header("content-type", SCIM_JSON);
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            (status, text)
        }
    };

    // Successes.
    let (status, body) = send(
        http.post(daemon.url("/scim/v2/Users"))
            .bearer_auth(&scim)
            .body(
                json!({"userName": "alice@example.com", "password": "Pa55-word-in-clear"})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let alice: Value = serde_json::from_str(&body).expect("json");
    bodies.push(body);
    let api_key = cli(
        dir.path(),
        &["key", "create", "--user", "alice@example.com"],
    );
    let whoami = http
        .get(daemon.url("/v1/whoami"))
        .bearer_auth(&api_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(whoami.status(), StatusCode::OK);
    bodies.push(whoami.text().await.unwrap_or_default());

    // Failures of every kind, several carrying a secret where it does not belong.
    let near_miss = format!("{}x", &scim[..scim.len() - 1]);
    // (request, whether its response may not quote the secret back: the credential
    // cases; a filter or body is the client's own text, which an error may quote).
    let alice_path = format!(
        "/scim/v2/Users/{}",
        alice["id"].as_str().unwrap_or_default()
    );
    let failures = vec![
        (http.get(daemon.url("/scim/v2/Users")).bearer_auth(&revoked), true),
        (http.get(daemon.url("/scim/v2/Users")).bearer_auth(&near_miss), true),
        (http.get(daemon.url("/scim/v2/Users")).bearer_auth(&api_key), true),
        (
            http.get(daemon.url("/scim/v2/Users"))
                .header("authorization", format!("Basic {scim}")),
            true,
        ),
        (http.get(daemon.url("/scim/v2/Users")).bearer_auth(&sso), true),
        (http.get(daemon.url("/v1/whoami")).bearer_auth(&scim), true),
        (
            http.get(daemon.url("/scim/v2/Users"))
                .bearer_auth(&scim)
                .query(&[("filter", format!("userName eq \"{api_key}"))]),
            false,
        ),
        (
            http.post(daemon.url("/scim/v2/Users"))
                .bearer_auth(&scim)
                .body(format!("{{\"userName\": \"{sso}\", ")),
            false,
        ),
        (
            http.post(daemon.url("/scim/v2/Users"))
                .bearer_auth(&scim)
                .body(json!({"userName": 5, "password": api_key}).to_string()),
            true,
        ),
        (
            http.patch(daemon.url(&alice_path)).bearer_auth(&scim).body(
                json!({"Operations": [{"op": "replace", "path": format!("x[{revoked}"), "value": 1}]})
                    .to_string(),
            ),
            false,
        ),
        (
            http.post(daemon.url("/v1/sso/sign-in"))
                .bearer_auth(&sso)
                .body(json!({"idp": "entra", "user": "alice@example.com"}).to_string()),
            true,
        ),
        (
            http.post(daemon.url("/v1/sso/sign-in"))
                .bearer_auth(&sso)
                .body(json!({"idp": "entra", "id_token": scim}).to_string()),
            true,
        ),
        (
            http.post(daemon.url("/v1/sso/sign-in"))
                .bearer_auth(&scim)
                .body(json!({"idp": "entra", "user": "alice@example.com"}).to_string()),
            true,
        ),
    ];
    for (request, credential) in failures {
        let (status, body) = send(request).await;
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{status} {body}"
        );
        if credential {
            bodies.push(body);
        }
    }
    let metrics = http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
    assert!(
        log.contains("Invalid client secret provided"),
        "the IdP refusal was exercised and logged"
    );
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging is on"
    );

    let check = run(scimsync(dir.path())
        .env("SCIMSYNC_CONFIG", dir.path().join("config.toml"))
        .arg("check-config"));
    let check_output = format!("{}{}", stdout(&check), stderr(&check));

    for (what, secret) in [
        ("the SCIM token", scim.as_str()),
        ("the sso token", sso.as_str()),
        ("the revoked token", revoked.as_str()),
        ("the near-miss token", near_miss.as_str()),
        ("the API key", api_key.as_str()),
        ("the IdP client secret", client_secret),
        ("the SCIM password", "Pa55-word-in-clear"),
    ] {
        let random = &secret[secret.len() - 16..];
        assert!(!log.contains(random), "{what} is in the log");
        assert!(!metrics.contains(random), "{what} is in /metrics");
        assert!(!listing.contains(random), "{what} is in `token list`");
        assert!(!check_output.contains(random), "{what} is in check-config");
        for body in &bodies {
            assert!(!body.contains(random), "{what} is in a response: {body}");
        }
    }
}
