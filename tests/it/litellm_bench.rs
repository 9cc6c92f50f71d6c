//! Figures for BENCHMARKS.md: the initial mirror of 10,000 users, 1,000 teams and
//! 100,000 memberships into the fake LiteLLM, and the delay from a SCIM PATCH's answer
//! to LiteLLM showing it. Measurements, not tests:
//! `cargo test --release --test it litellm_bench -- --ignored --nocapture`.

use crate::common::{operator, TestApp};
use crate::litellm_fake::{FakeLiteLlm, MASTER_KEY};
use reqwest::Method;
use scimsync::config::{TargetConfig, TargetKind};
use scimsync::reconcile::snapshot::Snapshot;
use scimsync::reconcile::{Policy, Request};
use serde_json::json;
use std::fmt::Write;
use std::time::{Duration, Instant};

const USERS: usize = 10_000;
const TEAMS: usize = 1_000;
const MEMBERS_PER_TEAM: usize = 100;

async fn spawn(fake: &FakeLiteLlm) -> TestApp {
    let url = fake.url.clone();
    TestApp::spawn_with(move |config| {
        let mut target = TargetConfig::new("bench", TargetKind::Litellm, &url);
        target.master_key = Some(MASTER_KEY.into());
        config.target.push(target);
    })
    .await
}

fn snapshot() -> Snapshot {
    let mut s = String::from(r#"{"idp": "bench", "complete": true, "users": ["#);
    for i in 0..USERS {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"external_id": "u-{i}", "user_name": "user{i:05}@example.com", "email": "user{i:05}@example.com", "active": true}}"#
        );
    }
    s.push_str(r#"], "groups": ["#);
    for g in 0..TEAMS {
        if g > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"external_id": "g-{g}", "display_name": "Team {g}", "members": ["#
        );
        for m in 0..MEMBERS_PER_TEAM {
            if m > 0 {
                s.push(',');
            }
            let _ = write!(s, r#""u-{}""#, (g * 10 + m * 100) % USERS);
        }
        s.push_str("]}");
    }
    s.push_str("]}");
    Snapshot::parse(&s).expect("valid snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement for BENCHMARKS.md; run in release with --ignored --nocapture"]
async fn litellm_bench_initial_mirror_and_patch_delay() {
    let fake = FakeLiteLlm::start().await;
    let app = spawn(&fake).await;
    let desired = snapshot().into_desired();
    let mut policy = Policy::from_config(&app.config, scimsync::store::now());
    policy.allow_deletions = true;
    let started = Instant::now();
    let applied = app
        .engine()
        .apply(Request::new(&desired, &policy, &operator()))
        .await
        .expect("applied");
    let committed = started.elapsed();
    loop {
        let (depth, _) = app.store.outbox_depth("bench").await.unwrap();
        if depth == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "mirror too slow: {depth} left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mirrored = started.elapsed();
    let members: usize = fake
        .teams_snapshot()
        .iter()
        .map(|t| {
            t["members_with_roles"]
                .as_array()
                .map_or(0, |m| m.len() - 1)
        })
        .sum();
    println!(
        "initial mirror: {} ops committed in {committed:?}; LiteLLM has {} users, {members} memberships after {mirrored:?} (concurrency 8)",
        applied.plan.ops.len(),
        fake.users().len(),
    );
    assert_eq!(members, TEAMS * MEMBERS_PER_TEAM);

    // Delay from a PATCH's answer to LiteLLM showing it, under steady SCIM writes. The
    // user is the SCIM client's own (the snapshot's belong to the "bench" IdP, whose
    // objects the SCIM token may not change).
    let (status, created) = app
        .scim_json(
            Method::POST,
            "/Users",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "patched@example.com", "emails": [{"value": "patched@example.com"}]})),
        )
        .await;
    assert!(status.is_success(), "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let answered = Instant::now();
    while fake.user("patched@example.com").is_none() {
        assert!(answered.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut delays = Vec::new();
    for i in 0..200 {
        let alias = format!("Alias {i}");
        let (status, _) = app
            .scim_json(
                Method::PATCH,
                &format!("/Users/{id}"),
                Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "displayName", "value": alias}]})),
            )
            .await;
        assert!(status.is_success());
        let answered = Instant::now();
        while fake
            .user("patched@example.com")
            .map(|u| u["user_alias"].clone())
            != Some(json!(alias))
        {
            assert!(answered.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delays.push(answered.elapsed());
    }
    delays.sort();
    println!(
        "PATCH answer → LiteLLM shows it: p50 {:?}, p99 {:?}, max {:?} (200 PATCHes)",
        delays[delays.len() / 2],
        delays[delays.len() * 99 / 100],
        delays[delays.len() - 1]
    );
}
