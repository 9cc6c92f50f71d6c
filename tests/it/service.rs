//! Running as a systemd service: readiness notification, metrics, check-config and
//! the example configuration.

use crate::common;

use common::daemon::*;
use common::TestApp;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

#[test]
fn ready_is_sent_to_systemd_only_once_the_port_accepts_connections() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut cmd = serve(dir.path());
    cmd.env("NOTIFY_SOCKET", &socket_path);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        assert!(Instant::now() < deadline, "no READY=1 from the daemon");
        let n = socket.recv(&mut buf).expect("a notification arrives");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.lines().any(|l| l == "READY=1") {
            break message;
        }
    };
    let status = message
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("a STATUS= line with the ready message");
    let addr = status.rsplit(' ').next().unwrap();
    // At the moment READY=1 arrives, the listener is already accepting.
    std::net::TcpStream::connect(addr).expect("the port accepts connections when READY=1 arrives");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stopping = socket
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(stopping.unwrap_or_default().contains("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}

use std::process::Command;

#[test]
fn the_watchdog_is_fed_when_systemd_asks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = serve(dir.path());
    // systemd sets WATCHDOG_PID to the service's pid; without it the watchdog applies to us.
    cmd.env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000");
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pings < 2 && Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "WATCHDOG=1")
            {
                pings += 1;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(pings, 2, "the watchdog was pinged repeatedly");
}

fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_are_exposed_in_the_prometheus_text_format_and_count_requests() {
    let app = TestApp::spawn().await;
    let before = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let healthz_before = sample(
        &before,
        "scimsync_http_requests_total",
        &[("route", "/healthz"), ("status", "200")],
    );
    for _ in 0..3 {
        app.http.get(app.url("/healthz")).send().await.unwrap();
    }
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok(),
            "unparsable sample line {line:?}"
        );
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
    }
    let healthz_after = sample(
        &text,
        "scimsync_http_requests_total",
        &[("route", "/healthz"), ("status", "200")],
    );
    assert!(
        healthz_after - healthz_before >= 3.0,
        "{healthz_before} → {healthz_after}"
    );
    assert!(text.contains("scimsync_http_request_duration_seconds_bucket"));
    assert!(!text.contains(&app.scim_token));
}

#[tokio::test]
async fn invented_http_methods_are_counted_as_other_so_they_cannot_make_new_series() {
    let app = TestApp::spawn().await;
    let other = |text: &str| {
        sample(
            text,
            "scimsync_http_requests_total",
            &[("route", "/v1/whoami"), ("method", "OTHER")],
        )
    };
    let before = app.http.get(app.url("/metrics")).send().await.unwrap();
    let before = other(&before.text().await.unwrap());
    for invented in ["BREW", "PROPFIND-ZZ"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
        let response = app
            .http
            .request(method, app.url("/v1/whoami"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "no key was sent");
    }
    let text = app.http.get(app.url("/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    assert!(
        !text.contains("BREW") && !text.contains("PROPFIND"),
        "{text}"
    );
    assert!(other(&text) - before >= 2.0, "{before} → {}", other(&text));
}

#[tokio::test]
async fn metric_labels_never_carry_ids_or_user_data() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4();
    app.scim_json(reqwest::Method::GET, &format!("/Users/{id}"), None)
        .await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains(&id.to_string()),
        "ids must not become label values"
    );
}

#[test]
fn check_config_accepts_a_good_file_and_summarises_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.toml",
        "[server]\nlisten = \"127.0.0.1:9999\"\n",
    );
    let out = run(scimsync(dir.path())
        .args(["check-config", "--config"])
        .arg(&config));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("127.0.0.1:9999"));
    assert!(stdout(&out).contains("configuration OK"));
}

#[test]
fn check_config_reports_a_broken_file_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", "[safety]\nmax_deletions = \"many\"\n");
    let out = run(scimsync(dir.path())
        .args(["check-config", "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:2:", config.display())), "{err}");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn check_config_reports_values_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", "[safety]\nmax_deletion_ratio = 3.0\n");
    let out = run(scimsync(dir.path())
        .args(["check-config", "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("max_deletion_ratio"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_with_connect_reaches_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(scimsync(dir.path()).args(["check-config", "--connect"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("reachable"));
    let out = run(scimsync(dir.path()).args([
        "check-config",
        "--connect",
        "--database-url",
        "sqlite:///nonexistent-dir/x.db",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot open database"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_example_configuration_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let text = std::fs::read_to_string(&path).unwrap();
    let config =
        scimsync::config::Config::from_toml(&text, &path).expect("config.toml.example parses");
    config.validate().expect("and is valid");
}

fn hangup(daemon: &Daemon) {
    Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
}

fn wait_for_log(daemon: &Daemon, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if daemon.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn sighup_reloads_the_configuration_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    // Request lines have their own target: quiet them, keep the rest at info.
    let quiet = "[log]\nlevel = \"info,scimsync::http=warn\"\n";
    let config = write(dir.path(), "c.toml", quiet);
    let mut cmd = serve(dir.path());
    cmd.arg("--config").arg(&config);
    let daemon = Daemon::start(cmd);
    assert_eq!(get(&daemon.url("/healthz"), None), 200);

    write(dir.path(), "c.toml", &format!("{quiet}bogus = 1\n"));
    hangup(&daemon);
    assert!(
        wait_for_log(&daemon, "refusing the new configuration"),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("bogus"),
        "the refusal says what is wrong"
    );
    assert_eq!(get(&daemon.url("/healthz"), None), 200, "still serving");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !daemon.log().contains("request completed"),
        "the old level is still in force"
    );

    write(
        dir.path(),
        "c.toml",
        "[log]\nlevel = \"info,scimsync::http=debug\"\n",
    );
    hangup(&daemon);
    assert!(
        wait_for_log(&daemon, "configuration reloaded"),
        "{}",
        daemon.log()
    );
    assert_eq!(get(&daemon.url("/healthz"), None), 200);
    assert!(
        wait_for_log(&daemon, "request completed"),
        "the new level (debug for request lines) applies"
    );
}

/// A token endpoint that accepts exactly one client secret, as Entra's would.
async fn token_endpoint(
    form: axum::extract::Form<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if form.get("client_secret").map(String::as_str) == Some("right-secret") {
        axum::Json(
            serde_json::json!({"access_token": "at", "token_type": "Bearer", "expires_in": 3600}),
        )
        .into_response()
    } else {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})),
        )
            .into_response()
    }
}

fn spawn_token_endpoint() -> (String, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().to_string()).unwrap();
            let app = axum::Router::new().route(
                "/{tenant}/oauth2/v2.0/token",
                axum::routing::post(token_endpoint),
            );
            let _ = tokio::time::timeout(
                Duration::from_secs(60),
                std::future::IntoFuture::into_future(axum::serve(listener, app)),
            )
            .await;
        });
    });
    (rx.recv().unwrap(), handle)
}

fn entra_config(dir: &std::path::Path, login: &str, secret: &str) -> std::path::PathBuf {
    write(dir, "secret", secret);
    write(
        dir,
        "c.toml",
        &format!(
            "[[idp]]\nname = \"entra\"\nkind = \"entra\"\ntenant_id = \"contoso\"\nclient_id = \"app\"\n\
             client_secret_file = \"{}\"\ntoken_url = \"http://{login}/{{tenant}}/oauth2/v2.0/token\"\n\
             api_base_url = \"http://{login}/v1.0\"\ngroups = [\"*\"]\n",
            dir.join("secret").display()
        ),
    )
}

#[test]
fn check_config_with_connect_fetches_a_token_from_each_idp() {
    let (addr, _server) = spawn_token_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let config = entra_config(dir.path(), &addr, "right-secret");
    let out = run(scimsync(dir.path())
        .args(["check-config", "--connect", "--config"])
        .arg(&config));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("idp entra: token endpoint accepted the credentials"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_config_with_connect_names_the_idp_whose_credentials_fail_without_the_secret() {
    let (addr, _server) = spawn_token_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let config = entra_config(dir.path(), &addr, "wrong-secret-value");
    let out = run(scimsync(dir.path())
        .args(["check-config", "--connect", "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("idp entra:"), "{err}");
    assert!(err.contains("cannot authenticate to: entra"), "{err}");
    assert!(!err.contains("wrong-secret-value") && !stdout(&out).contains("wrong-secret-value"));
}
