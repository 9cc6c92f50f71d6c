//! The Entra ID (Microsoft Graph) connector's wire format, against a mock Graph:
//! `@odata.nextLink` paging, transitive members without devices or directory roles,
//! and the `pull` command.
//! Faults (throttling, token expiry, server errors, timeouts, wrong credentials,
//! partial pulls, broken pages and paging loops) are specified once for every
//! connector in `idp_faults.rs`.

use crate::idp_mocks;

use idp_mocks::graph::GraphMock;
use scimsync::idp::Idp;

fn member_names(snapshot: &scimsync::reconcile::snapshot::Snapshot, group: &str) -> Vec<String> {
    let g = snapshot
        .groups
        .iter()
        .find(|g| g.display_name.as_str() == group)
        .unwrap_or_else(|| panic!("group {group} in snapshot"));
    let mut names: Vec<String> = g
        .members
        .iter()
        .map(|id| {
            snapshot
                .users
                .iter()
                .find(|u| &u.external_id == id)
                .map(|u| u.user_name.as_str().to_owned())
                .unwrap_or_else(|| panic!("member {id} listed in users"))
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_entra_pull_follows_every_page_and_keeps_only_managed_groups_and_users() {
    let mock = GraphMock::start().await;
    let idp =
        Idp::from_config(&mock.config("entra", &["LLM *", "Production LLM Evals Group"])).unwrap();
    let pull = idp.pull().await.unwrap();
    let s = &pull.snapshot;
    assert!(s.complete, "problems: {:?}", pull.problems);
    assert_eq!(s.idp, "entra");
    let names: Vec<&str> = s.groups.iter().map(|g| g.display_name.as_str()).collect();
    assert_eq!(
        names,
        ["LLM Admins", "LLM Users", "Production LLM Evals Group"]
    );
    assert_eq!(member_names(s, "LLM Admins"), ["alice@contoso.com"]);
    // Four users across two pages; the device in the group is not a user.
    assert_eq!(
        member_names(s, "LLM Users"),
        [
            "alice@contoso.com",
            "bob@contoso.com",
            "carol@contoso.com",
            "dave@contoso.com"
        ]
    );
    assert_eq!(
        member_names(s, "Production LLM Evals Group"),
        ["carol@contoso.com", "eve@contoso.com"]
    );
    let dave = s.users.iter().find(|u| u.external_id == "u-dave").unwrap();
    assert!(!dave.active, "a disabled account is an inactive user");
    let alice = s.users.iter().find(|u| u.external_id == "u-alice").unwrap();
    assert_eq!(alice.given_name.as_deref(), Some("Alice"));
    assert_eq!(alice.family_name.as_deref(), Some("Ng"));
    assert_eq!(alice.email.as_deref(), Some("alice@contoso.com"));
    // Five groups at two per page is three pages; LLM Users' five members are three.
    assert_eq!(mock.faults.calls_to("/v1.0/groups?"), 3);
    assert_eq!(mock.faults.calls_to("/g-users/transitiveMembers"), 3);
    // Unmanaged groups are never read.
    assert_eq!(mock.faults.calls_to("g-sales"), 0);
    assert_eq!(mock.faults.calls_to("g-finance"), 0);
    assert_eq!(
        mock.faults
            .tokens_issued
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn a_users_groups_are_read_transitively_without_directory_roles() {
    let mock = GraphMock::start().await;
    let idp =
        Idp::from_config(&mock.config("entra", &["LLM *", "Production LLM Evals Group"])).unwrap();
    let (user, groups) = idp.user_with_groups("Carol@Contoso.com").await.unwrap();
    assert_eq!(user.id, "u-carol");
    let mut names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["LLM Users", "Production LLM Evals Group"]);
}

#[tokio::test]
async fn the_pull_command_writes_a_snapshot_file() {
    let mock = GraphMock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("entra-secret");
    std::fs::write(
        &secret_file,
        format!("{}\n", idp_mocks::graph::CLIENT_SECRET),
    )
    .unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(
        &config_file,
        format!(
            r#"
[database]
url = "sqlite://{db}"

[[idp]]
name = "entra"
kind = "entra"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_file = "{secret}"
login_url = "{base}"
api_base_url = "{base}/v1.0"
groups = ["LLM Admins"]
"#,
            db = dir.path().join("db.sqlite").display(),
            tenant = idp_mocks::graph::TENANT,
            client = idp_mocks::graph::CLIENT_ID,
            secret = secret_file.display(),
            base = mock.base_url,
        ),
    )
    .unwrap();
    let out = dir.path().join("snapshot.json");
    // Without --out the same snapshot goes to stdout, and only it.
    let to_stdout = tokio::process::Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("--config")
        .arg(&config_file)
        .args(["pull", "--idp", "entra"])
        .output()
        .await
        .unwrap();
    assert!(
        to_stdout.status.success(),
        "{}",
        String::from_utf8_lossy(&to_stdout.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&to_stdout.stdout).unwrap();
    assert_eq!(
        printed["groups"][0]["members"],
        serde_json::json!(["u-alice"])
    );
    assert!(to_stdout.stdout.ends_with(b"}\n"));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("--config")
        .arg(&config_file)
        .args(["pull", "--idp", "entra", "--out"])
        .arg(&out)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with("}\n"), "a final newline");
    let written: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(written, printed);
    assert_eq!(written["idp"], "entra");
    assert_eq!(written["complete"], true);
    assert_eq!(written["groups"][0]["display_name"], "LLM Admins");
    assert_eq!(
        written["groups"][0]["members"],
        serde_json::json!(["u-alice"])
    );
    assert_eq!(written["users"][0]["user_name"], "alice@contoso.com");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(idp_mocks::graph::CLIENT_SECRET));
}
