//! `scimsync sso-sign-in --idp NAME --user USER [--dry-run]`: the sign-in sync from a
//! shell, through the real binary, against a mock Entra (Graph).

use crate::idp_mocks;

use idp_mocks::graph::{GraphMock, CLIENT_SECRET};
use std::path::Path;
use std::process::Output;

async fn sso_sign_in(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("--config")
        .arg(config)
        .arg("sso-sign-in")
        .args(args)
        .output()
        .await
        .expect("scimsync runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn the_sso_sign_in_command_plans_with_dry_run_then_applies_and_then_has_nothing_to_do() {
    let mock = GraphMock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = mock.write_cli_config(dir.path());
    let user = ["--idp", "entra", "--user", "alice@contoso.com"];

    let dry = sso_sign_in(&config, &[&user[..], &["--dry-run"]].concat()).await;
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let (stdout, stderr) = (text(&dry.stdout), text(&dry.stderr));
    assert!(stdout.contains("alice@contoso.com"), "{stdout}");
    assert!(
        stdout.contains("LLM Admins") && stdout.contains("LLM Users"),
        "{stdout}"
    );
    assert!(stdout.contains("to add"), "{stdout}");
    assert!(stderr.contains("LLM Admins, LLM Users"), "{stderr}");
    assert!(stderr.contains("dry run, nothing changed"), "{stderr}");

    // The dry run changed nothing: the real run has the same plan and applies it.
    let applied = sso_sign_in(&config, &user).await;
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    assert_eq!(text(&applied.stdout), stdout, "the same plan, now applied");
    assert!(text(&applied.stderr).contains("applied"));

    let again = sso_sign_in(&config, &[&user[..], &["--dry-run"]].concat()).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("No changes"),
        "{}",
        text(&again.stdout)
    );
    for output in [&dry, &applied, &again] {
        assert!(!text(&output.stderr).contains(CLIENT_SECRET));
        assert!(!text(&output.stdout).contains(CLIENT_SECRET));
    }
}

#[tokio::test]
async fn the_sso_sign_in_command_fails_for_an_unknown_idp_or_user() {
    let mock = GraphMock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = mock.write_cli_config(dir.path());

    let unknown_idp = sso_sign_in(&config, &["--idp", "okta", "--user", "alice@contoso.com"]).await;
    assert!(!unknown_idp.status.success());
    assert!(
        text(&unknown_idp.stderr).contains("okta"),
        "{}",
        text(&unknown_idp.stderr)
    );

    let unknown_user =
        sso_sign_in(&config, &["--idp", "entra", "--user", "nobody@contoso.com"]).await;
    assert!(!unknown_user.status.success());
    assert!(
        text(&unknown_user.stderr).contains("nobody@contoso.com"),
        "{}",
        text(&unknown_user.stderr)
    );
}
