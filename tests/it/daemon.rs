//! The binary as an operator runs it: configuration layering, first start, the token
//! and key commands, graceful shutdown, and logs that never carry a secret.

use crate::common;

use common::daemon::*;
use std::path::Path;
use std::time::Duration;

#[test]
fn serve_without_any_config_creates_its_database_and_a_first_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(serve(dir.path()));
    assert_eq!(get(&daemon.url("/healthz"), None), 200);
    assert_eq!(get(&daemon.url("/readyz"), None), 200);
    assert!(
        dir.path().join("scimsync.db").exists(),
        "database created in the working directory"
    );

    let token_file = dir.path().join("initial-scim-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("scimsync_"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the owner may read the first token");

    let log = daemon.log();
    assert!(
        log.contains("initial-scim-token"),
        "the log names the file: {log}"
    );
    assert!(
        !log.contains(&token),
        "the log must never contain the token"
    );
}

#[test]
fn a_second_start_keeps_the_existing_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start(serve(dir.path()));
    let token = std::fs::read_to_string(dir.path().join("initial-scim-token")).unwrap();
    let _ = first.terminate();
    std::fs::remove_file(dir.path().join("initial-scim-token")).unwrap();
    let second = Daemon::start(serve(dir.path()));
    assert!(
        !dir.path().join("initial-scim-token").exists(),
        "no new token on a second start"
    );
    assert_eq!(get(&second.url("/scim/v2/Users"), Some(token.trim())), 200);
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(serve(dir.path()));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(log.contains("shutting down"));
}

#[test]
fn json_logs_carry_one_object_per_line_with_the_request_span() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve(dir.path());
    cmd.arg("--log-format").arg("json");
    // Successful requests are logged at debug; refusals and failures at info and warn.
    cmd.env("SCIMSYNC_LOG_LEVEL", "info,scimsync::http=debug");
    let daemon = Daemon::start(cmd);
    assert_eq!(get(&daemon.url("/healthz"), None), 200);
    std::thread::sleep(Duration::from_millis(200));
    let log = daemon.log();
    let request_line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "request completed")
        .unwrap_or_else(|| panic!("no request line in:\n{log}"));
    assert_eq!(request_line["span"]["route"], "/healthz");
    assert_eq!(request_line["span"]["method"], "GET");
    assert_eq!(request_line["fields"]["status"], 200);
    assert!(request_line["fields"]["latency_ms"].is_number());
}

#[test]
fn flags_beat_environment_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        "[server]\nlisten = \"127.0.0.2:0\"\n",
    );

    let mut from_file = serve(dir.path());
    from_file
        .env_remove("SCIMSYNC_LISTEN")
        .arg("--config")
        .arg(&config);
    assert!(Daemon::start(from_file).addr.starts_with("127.0.0.2:"));

    let mut from_env = serve(dir.path());
    from_env
        .env("SCIMSYNC_LISTEN", "127.0.0.3:0")
        .arg("--config")
        .arg(&config);
    assert!(Daemon::start(from_env).addr.starts_with("127.0.0.3:"));

    let mut from_flag = serve(dir.path());
    from_flag
        .env("SCIMSYNC_LISTEN", "127.0.0.3:0")
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.4:0"]);
    assert!(Daemon::start(from_flag).addr.starts_with("127.0.0.4:"));
}

#[test]
fn the_config_file_can_come_from_scimsync_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", "[server]\nlisten = \"127.0.0.5:0\"\n");
    let mut cmd = serve(dir.path());
    cmd.env_remove("SCIMSYNC_LISTEN")
        .env("SCIMSYNC_CONFIG", &config);
    assert!(Daemon::start(cmd).addr.starts_with("127.0.0.5:"));
}

#[test]
fn an_unknown_config_key_names_the_file_the_line_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[database]\nulr = \"sqlite://x.db\"\n",
    );
    let out = run(serve(dir.path()).arg("--config").arg(&config));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:5:", config.display())), "{err}");
    assert!(err.contains("ulr"), "{err}");
    assert!(
        !dir.path().join("x.db").exists() && !dir.path().join("scimsync.db").exists(),
        "nothing started"
    );
}

#[test]
fn a_malformed_config_file_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", "[server]\nlisten = 127.0.0.1\n");
    let out = run(serve(dir.path()).arg("--config").arg(&config));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{}:2:", config.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(serve(dir.path()).args(["--config", "/nonexistent/scimsync.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/scimsync.toml"));
}

#[test]
fn a_bad_environment_value_is_an_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(serve(dir.path()).env("SCIMSYNC_LISTEN", "localhost"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("SCIMSYNC_LISTEN"));
}

#[test]
fn token_create_prints_the_token_alone_once_and_list_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        run(scimsync(dir.path()).args(["token", "create", "--name", "okta", "--scope", "scim"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert_eq!(printed.lines().count(), 1, "the token alone on stdout");
    let token = printed.trim();
    assert!(token.starts_with("scimsync_"));

    let list = run(scimsync(dir.path()).args(["token", "list"]));
    assert!(list.status.success());
    assert!(stdout(&list).contains("okta"));
    assert!(!stdout(&list).contains(token));

    let again = run(scimsync(dir.path()).args(["token", "create", "--name", "okta"]));
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"));
}

#[test]
fn a_revoked_token_is_refused_by_the_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(scimsync(dir.path()).args(["token", "create", "--name", "entra"]));
    let token = stdout(&out).trim().to_owned();
    let daemon = Daemon::start(serve(dir.path()));
    assert_eq!(get(&daemon.url("/scim/v2/Users"), Some(&token)), 200);
    let revoke = run(scimsync(dir.path()).args(["token", "revoke", "entra"]));
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    assert_eq!(get(&daemon.url("/scim/v2/Users"), Some(&token)), 401);
    let list = run(scimsync(dir.path()).args(["token", "list"]));
    assert!(stdout(&list)
        .lines()
        .any(|l| l.starts_with("entra") && !l.trim_end().ends_with('-')));
    let twice = run(scimsync(dir.path()).args(["token", "revoke", "entra"]));
    assert_eq!(twice.status.code(), Some(1));
}

/// Seeds a user through the library, as a test fixture for the key commands.
fn seed_user(dir: &Path, user_name: &str) {
    let url = format!("sqlite://{}", dir.join("scimsync.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = scimsync::store::Store::open(&url, 1).await.unwrap();
        let mut desired = scimsync::reconcile::Desired::new(
            scimsync::domain::Source::Manual,
            scimsync::reconcile::Scope::Listed,
        );
        desired.users.push(scimsync::reconcile::DesiredUser {
            id: Some(uuid::Uuid::new_v4()),
            intent: scimsync::reconcile::Intent::Create,
            ..scimsync::reconcile::DesiredUser::new(
                scimsync::domain::UserName::parse(user_name).unwrap(),
            )
        });
        crate::common::apply_as_operator(&store, &desired).await;
        store.close().await;
    });
}

#[test]
fn the_key_life_cycle_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    seed_user(dir.path(), "Alice@Example.com");

    let created = run(scimsync(dir.path()).args([
        "key",
        "create",
        "--user",
        "alice@example.com",
        "--name",
        "laptop",
    ]));
    assert!(created.status.success(), "{}", stderr(&created));
    let key = stdout(&created).trim().to_owned();
    assert_eq!(
        stdout(&created).lines().count(),
        1,
        "the key alone on stdout"
    );
    assert!(key.starts_with("sk-"));

    let daemon = Daemon::start(serve(dir.path()));
    assert_eq!(get(&daemon.url("/v1/whoami"), Some(&key)), 200);

    let list = run(scimsync(dir.path()).args(["key", "list", "--user", "Alice@Example.com"]));
    let listing = stdout(&list);
    assert!(listing.contains("laptop"));
    assert!(listing.contains(&key[..10]), "the visible prefix is listed");
    assert!(!listing.contains(&key), "never the key itself");
    let id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();

    let revoked = run(scimsync(dir.path()).args(["key", "revoke", &id]));
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(get(&daemon.url("/v1/whoami"), Some(&key)), 401);

    let log = daemon.log();
    assert!(!log.contains(&key), "the key must never reach a log line");
}

#[test]
fn key_create_for_an_unknown_user_or_team_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    seed_user(dir.path(), "bob");
    let out = run(scimsync(dir.path()).args(["key", "create", "--user", "nobody"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no user \"nobody\""));
    assert!(stdout(&out).is_empty());
    let out = run(scimsync(dir.path()).args(["key", "create", "--user", "bob", "--team", "Nope"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no team \"Nope\""));
}

#[test]
fn no_token_or_key_appears_in_the_daemon_log_even_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    seed_user(dir.path(), "carol");
    let key = stdout(&run(
        scimsync(dir.path()).args(["key", "create", "--user", "carol"])
    ))
    .trim()
    .to_owned();
    let token = stdout(&run(
        scimsync(dir.path()).args(["token", "create", "--name", "t"])
    ))
    .trim()
    .to_owned();
    let mut cmd = serve(dir.path());
    cmd.env("RUST_LOG", "trace");
    let daemon = Daemon::start(cmd);
    get(&daemon.url("/scim/v2/Users"), Some(&token));
    get(&daemon.url("/v1/whoami"), Some(&key));
    get(&daemon.url("/v1/whoami"), Some(&format!("{key}x")));
    get(&daemon.url("/scim/v2/Users"), Some(&format!("{token}x")));
    let (_, log) = daemon.terminate();
    for secret in [
        &key,
        &token,
        &scimsync::keys::hash_secret(&key),
        &scimsync::keys::hash_secret(&token),
    ] {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
    assert!(log.contains("/v1/whoami"), "the requests were logged");
}
