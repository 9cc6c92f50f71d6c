//! The engine at scale, in-process: 100,000 users, 10,000 groups, 1,000,000 memberships.
//! Ignored by default (it wants a release build); run it with
//! `cargo test --release --test it reconcile_scale:: -- --ignored --nocapture`.
//! The end-to-end figures (CLI, SQLite) come from scripts/bench.sh with
//! benches/gen_snapshot.py.

use scimsync::reconcile::render::{render_text, write_json};
use scimsync::reconcile::snapshot::Snapshot;
use scimsync::reconcile::{plan, Actual, Policy};
use std::fmt::Write as _;
use std::time::Instant;

const USERS: usize = 100_000;
const GROUPS: usize = 10_000;
const MEMBERS_PER_GROUP: usize = 100;

/// A snapshot of the benchmark's shape (members spread over the users by a stride).
fn snapshot_json() -> String {
    let mut s = String::with_capacity(70 << 20);
    s.push_str(r#"{"idp": "bench", "complete": true, "users": ["#);
    for i in 0..USERS {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"external_id": "u-{i}", "user_name": "user{i:06}@example.com", "email": "user{i:06}@example.com", "display_name": "Bench User {i}", "active": true}}"#
        );
    }
    s.push_str(r#"], "groups": ["#);
    for g in 0..GROUPS {
        if g > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"external_id": "g-{g}", "display_name": "Group {g}", "members": ["#
        );
        for m in 0..MEMBERS_PER_GROUP {
            if m > 0 {
                s.push(',');
            }
            let _ = write!(s, r#""u-{}""#, (g * 13 + m * 1009) % USERS);
        }
        s.push_str("]}");
    }
    s.push_str("]}");
    s
}

#[test]
#[ignore = "a scale measurement; run in release with --ignored --nocapture"]
fn a_first_pull_of_a_million_memberships_plans_and_renders_in_seconds() {
    let json = snapshot_json();
    let t = Instant::now();
    let snapshot = Snapshot::parse(&json).expect("valid");
    let parsed = t.elapsed();
    let desired = snapshot.into_desired();
    let converted = t.elapsed();
    let policy = Policy::default();
    let p = plan(&desired, &Actual::default(), &policy).expect("planned");
    let planned = t.elapsed();
    let mut out = Vec::with_capacity(400 << 20);
    write_json(&p, &mut out).expect("written");
    let json_done = t.elapsed();
    let text = render_text(&p, false);
    let text_done = t.elapsed();
    println!(
        "{} ops; parse {:?}, into_desired {:?}, plan {:?}, json {:?} ({} MB), text {:?} ({} MB)",
        p.ops.len(),
        parsed,
        converted - parsed,
        planned - converted,
        json_done - planned,
        out.len() >> 20,
        text_done - json_done,
        text.len() >> 20
    );
    assert_eq!(p.counts().add, USERS + GROUPS + GROUPS * MEMBERS_PER_GROUP);
}
