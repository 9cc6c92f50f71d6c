//! `scimsync plan --idp NAME` and `scimsync apply --idp NAME`: a live pull as the
//! desired state, through the real binary, against a mock Entra (Graph).

use crate::idp_mocks;

use idp_mocks::graph::{GraphMock, CLIENT_SECRET};
use std::path::Path;
use std::process::Output;

async fn scimsync(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .expect("scimsync runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn plan_and_apply_take_the_desired_state_from_a_live_pull() {
    let mock = GraphMock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = mock.write_cli_config(dir.path());

    let plan = scimsync(&config, &["plan", "--idp", "entra", "--detailed-exitcode"]).await;
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan.stderr));
    let planned = text(&plan.stdout);
    assert!(
        planned.contains("LLM Admins") && planned.contains("LLM Users"),
        "{planned}"
    );
    assert!(planned.contains("to add"), "{planned}");
    assert!(!planned.contains(CLIENT_SECRET) && !text(&plan.stderr).contains(CLIENT_SECRET));

    let apply = scimsync(&config, &["apply", "--idp", "entra"]).await;
    assert!(apply.status.success(), "{}", text(&apply.stderr));

    let again = scimsync(&config, &["plan", "--idp", "entra", "--detailed-exitcode"]).await;
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
}

#[tokio::test]
async fn plan_names_an_unknown_idp() {
    let mock = GraphMock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = mock.write_cli_config(dir.path());
    let out = scimsync(&config, &["plan", "--idp", "okta"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("okta"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn plan_needs_a_snapshot_or_an_idp() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "").unwrap();
    let out = scimsync(&config, &["plan"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--snapshot") && text(&out.stderr).contains("--idp"));
}

#[tokio::test]
async fn apply_idp_refuses_to_run_while_another_sync_of_that_idp_holds_the_lock() {
    let mock = GraphMock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = mock.write_cli_config(dir.path());
    let url = format!("sqlite://{}", dir.path().join("scimsync.db").display());
    let store = scimsync::store::Store::open(&url, 2).await.unwrap();

    // What a scheduled run of the daemon holds for as long as it runs.
    let lock = store
        .try_sync_lock("entra")
        .await
        .unwrap()
        .expect("the lock is free");
    let calls = mock.faults.calls();
    let refused = scimsync(&config, &["apply", "--idp", "entra"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("another sync of IdP \"entra\" is running"),
        "{stderr}"
    );
    assert_eq!(mock.faults.calls(), calls, "nothing was pulled");
    assert!(
        store.all_teams().await.unwrap().is_empty(),
        "nothing applied"
    );

    // Another IdP's lock is another lock.
    let other = store.try_sync_lock("okta").await.unwrap();
    assert!(other.is_some());

    lock.release().await;
    let apply = scimsync(&config, &["apply", "--idp", "entra"]).await;
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    assert!(!store.all_teams().await.unwrap().is_empty());

    // The CLI gave the lock back when it finished.
    assert!(store.try_sync_lock("entra").await.unwrap().is_some());
}
