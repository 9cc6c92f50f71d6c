//! What operators scrape: HELP lines, build info, process metrics, every IdP's series
//! from start, and README's example alert rules naming metrics that really exist.
//! Each test runs the real binary, so the exposition is a fresh process's own.

use crate::common::daemon::{serve, write, Daemon};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

fn fetch(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        reqwest::get(url)
            .await
            .expect("request sent")
            .text()
            .await
            .expect("body")
    })
}

fn idp_config(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            // Never reached: no schedule, and the URLs point at a closed port.
            format!(
                "[[idp]]\nname = \"{name}\"\nkind = \"entra\"\ntenant_id = \"contoso\"\n\
                 client_id = \"app\"\nclient_secret = \"not-a-secret\"\n\
                 token_url = \"http://127.0.0.1:9/{{tenant}}/token\"\n\
                 api_base_url = \"http://127.0.0.1:9/v1.0\"\ngroups = [\"*\"]\n\n"
            )
        })
        .collect()
}

/// The names of the samples in an exposition (histogram series included as sent).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn has_line(exposition: &str, prefix: &str, value: &str) -> bool {
    exposition
        .lines()
        .any(|l| l.starts_with(prefix) && l.ends_with(&format!(" {value}")))
}

fn start(dir: &std::path::Path, config: &str) -> Daemon {
    let config = write(dir, "c.toml", config);
    let mut cmd = serve(dir);
    cmd.arg("--config").arg(&config);
    Daemon::start(cmd)
}

#[test]
fn a_fresh_daemon_exposes_help_build_info_process_metrics_and_each_idps_series() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let daemon = start(dir.path(), &idp_config(&["entra"]));
    let text = fetch(&daemon.url("/metrics"));
    assert!(!text.trim().is_empty());
    assert!(
        has_line(&text, "scimsync_build_info{version=\"", "1") && text.contains("commit=\""),
        "{text}"
    );
    assert!(text.contains("process_max_fds"), "{text}");
    assert!(
        has_line(
            &text,
            "scimsync_last_successful_sync_timestamp_seconds{idp=\"entra\"}",
            "0"
        ),
        "an IdP that never synced is at 0: {text}"
    );
    for outcome in ["success", "partial", "failed", "quarantined"] {
        assert!(
            text.contains(&format!(
                "scimsync_sync_runs_total{{idp=\"entra\",outcome=\"{outcome}\"}} 0"
            )),
            "{outcome}: {text}"
        );
    }
    assert!(
        has_line(&text, "scimsync_quarantined_plans{idp=\"entra\"}", "0"),
        "{text}"
    );
    for guard in ["deletions", "membership_removals"] {
        assert!(
            text.contains(&format!(
                "scimsync_guard_refusals_total{{idp=\"entra\",guard=\"{guard}\"}} 0"
            )),
            "{guard}: {text}"
        );
    }
    // Every metric named in the exposition is described.
    let helped: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let typed: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for name in &typed {
        assert!(helped.contains(name), "no HELP for {name}: {text}");
    }
    assert!(!text.contains("not-a-secret"));

    // A reload that adds an IdP brings its series in at once.
    write(dir.path(), "c.toml", &idp_config(&["entra", "okta-later"]));
    Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("kill runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fetch(&daemon.url("/metrics"));
        if has_line(
            &text,
            "scimsync_last_successful_sync_timestamp_seconds{idp=\"okta-later\"}",
            "0",
        ) && text
            .contains("scimsync_sync_runs_total{idp=\"okta-later\",outcome=\"quarantined\"} 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reloaded IdP's series never appeared: {text}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ```yaml block of README.md's Metrics section.
fn readme_alert_rules() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let block = section
        .split("```yaml\n")
        .nth(1)
        .expect("a yaml block in the Metrics section");
    block
        .split("\n```")
        .next()
        .expect("a closed block")
        .to_owned()
}

/// Metric names in a PromQL expression: identifiers of ours or of the process collector.
fn metrics_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("scimsync_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_alert_rules_parse_and_name_metrics_the_daemon_exports() {
    use yaml_rust2::YamlLoader;
    let docs = YamlLoader::load_from_str(&readme_alert_rules()).expect("README alert rules parse");
    let doc = docs.first().expect("one document");
    let rules: Vec<_> = doc["groups"]
        .as_vec()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_vec().cloned().unwrap_or_default())
        .collect();
    assert!(
        rules.len() >= 3,
        "sync age, guard refusals and 5xx at least"
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let daemon = start(dir.path(), &idp_config(&["entra"]));
    // One request, so the request series exist as they would on any running daemon.
    fetch(&daemon.url("/healthz"));
    let exported = sample_names(&fetch(&daemon.url("/metrics")));
    for rule in &rules {
        let name = rule["alert"].as_str().expect("each rule has an alert name");
        let expr = rule["expr"].as_str().expect("each rule has an expr");
        let named = metrics_in(expr);
        assert!(!named.is_empty(), "{name}: {expr} names no metric");
        for metric in named {
            assert!(
                exported.contains(&metric),
                "{name} uses {metric}, which /metrics does not export: {exported:?}"
            );
        }
    }
}
